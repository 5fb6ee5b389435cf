import DequeModule
import MusterProtocol

// Storage for the records the router touches on every decision. Reads and writes go through
// `_read`/`_modify` accessors into an array, so looking at one field of a record neither copies
// the record nor retains its strings and sets (a Dictionary's getter would do both).

/// Jobs by id. Ids are allocated in increasing order, so a window of slot numbers indexed by
/// `id - base` replaces hashing; the window's front advances as the oldest jobs are evicted.
/// Records stay where they were inserted (freed slots are reused), so removing one moves nothing.
struct JobTable {
    private var base: UInt64 = 1
    private var slots = Deque<Int32>()
    private var storage = Chunks<JobRecord?>()
    private var vacant: [Int32] = []
    private(set) var count = 0
    /// How many jobs are in each state (by `JobState.slot`), kept as records come, change and go,
    /// so that counting them (`/metrics`, `status`, `/readyz`) does not walk every job.
    private(set) var stateCounts = [Int](repeating: 0, count: JobState.allCases.count)

    func index(_ id: JobID) -> Int? {
        guard id.rawValue >= base else { return nil }
        let offset = id.rawValue - base
        guard offset < UInt64(slots.count) else { return nil }
        let slot = slots[Int(offset)]
        return slot < 0 ? nil : Int(slot)
    }

    func contains(_ id: JobID) -> Bool { index(id) != nil }

    /// The record of a job that must exist.
    subscript(id: JobID) -> JobRecord {
        // A plain getter, not `_read`: yielding the force-unwrapped element (a temporary) let
        // callers read members after the coroutine ended (AddressSanitizer: heap-use-after-free
        // under Swift 6.3.1 at -Onone).
        get { storage[index(id)!]! }
        _modify { yield &storage[index(id)!]! }
    }

    /// Moves a job to `state`, keeping `stateCounts`: every change of a job's state goes through
    /// here (not through the subscript, which would have to compare states on every access of
    /// the hot path; measured, that doubled the core's decision time).
    mutating func setState(_ id: JobID, _ state: JobState) {
        let i = index(id)!
        let before = storage[i]!.state
        guard before != state else { return }
        storage[i]!.state = state
        stateCounts[before.slot] -= 1
        stateCounts[state.slot] += 1
    }

    /// The record in a slot returned by `index`, read in place.
    subscript(slot slot: Int) -> JobRecord {
        storage[slot]!
    }

    /// A copy of the record, if the job exists.
    func get(_ id: JobID) -> JobRecord? { index(id).map { storage[$0]! } }

    /// The state of a job, if it exists, without copying its record.
    func state(_ id: JobID) -> JobState? {
        guard let i = index(id) else { return nil }
        return storage[i]!.state
    }

    /// How and when a job ended, and its batch, if it exists and has ended, without copying its
    /// record.
    func ended(_ id: JobID) -> (state: JobState, at: CoreInstant, batch: BatchID)? {
        guard let i = index(id), storage[i]!.state.isFinal else { return nil }
        return (storage[i]!.state, storage[i]!.endedAt ?? .zero, storage[i]!.batch)
    }

    /// Every job id, ascending, without copying a record.
    var ids: [JobID] {
        var out: [JobID] = []
        out.reserveCapacity(count)
        for (offset, slot) in slots.enumerated() where slot >= 0 { out.append(JobID(base + UInt64(offset))) }
        return out
    }

    /// The smallest id at or above `id` that has a record.
    func firstID(atLeast id: JobID) -> JobID? {
        var offset = id.rawValue < base ? 0 : Int(clamping: id.rawValue - base)
        while offset < slots.count {
            if slots[offset] >= 0 { return JobID(base + UInt64(offset)) }
            offset += 1
        }
        return nil
    }

    /// The largest id the table has a place for (its record may be gone).
    var lastID: JobID? { slots.isEmpty ? nil : JobID(base + UInt64(slots.count - 1)) }

    /// Adds a job whose id is larger than every id added before.
    mutating func insert(_ record: JobRecord) {
        if slots.isEmpty { base = record.id.rawValue }
        precondition(record.id.rawValue >= base + UInt64(slots.count), "job ids must increase")
        while base + UInt64(slots.count) < record.id.rawValue { slots.append(-1) }
        let slot: Int32
        if let reused = vacant.popLast() {
            slot = reused
            storage[Int(slot)] = record
        } else {
            slot = Int32(storage.append(record))
        }
        slots.append(slot)
        count += 1
        stateCounts[record.state.slot] += 1
    }

    mutating func remove(_ id: JobID) -> JobRecord? {
        guard let i = index(id) else { return nil }
        var removed: JobRecord? = nil
        swap(&removed, &storage[i])  // moved out, not copied
        vacant.append(Int32(i))
        count -= 1
        stateCounts[removed!.state.slot] -= 1
        slots[Int(id.rawValue - base)] = -1
        while let first = slots.first, first < 0 {
            slots.removeFirst()
            base += 1
        }
        return removed
    }
}

/// An array that grows by whole chunks: appending never moves what it holds. A plain array
/// doubles and copies everything when it is full; the job table keeps up to
/// `jobs.retain_finished` records (100,000 by default) of about 500 bytes, and copying 16-32 MB
/// of them (with the page faults of the new block) held the loop thread for tens of milliseconds
/// while the coordinator filled up, which was the tail of `muster-bench e2e --scenarios latency`.
struct Chunks<Element> {
    private static var shift: Int { 10 }
    private static var mask: Int { (1 << shift) - 1 }
    private var chunks: [[Element]] = []
    private(set) var count = 0

    subscript(i: Int) -> Element {
        get { chunks[i &>> Self.shift][i & Self.mask] }
        _modify { yield &chunks[i &>> Self.shift][i & Self.mask] }
    }

    /// Adds an element at the end and returns its index.
    mutating func append(_ element: Element) -> Int {
        if count & Self.mask == 0 {
            var chunk: [Element] = []
            chunk.reserveCapacity(1 << Self.shift)
            chunks.append(chunk)
        }
        chunks[chunks.count - 1].append(element)
        count += 1
        return count - 1
    }
}

extension JobState {
    /// Its position in `allCases`, for per-state arrays.
    @inline(__always)
    var slot: Int {
        switch self {
        case .queued: 0
        case .gated: 1
        case .bound: 2
        case .running: 3
        case .completed: 4
        case .failed: 5
        case .canceled: 6
        }
    }
}

/// A backend id with a cheap hash: the slot map is looked up several times per decision and
/// SipHash dominated it. Ids are assigned by the coordinator, not chosen by clients, so a
/// seeded multiplicative mix is enough.
struct BackendKey: Hashable {
    var raw: Int64
    init(_ id: BackendID) { raw = id.rawValue }
    func hash(into hasher: inout Hasher) { hasher.combine(raw) }
    func _rawHashValue(seed: Int) -> Int { mix64(raw, seed) }
}

/// A job priority with the same cheap hash (per-priority totals change on every binding).
struct PriorityKey: Hashable {
    var raw: Int
    init(_ priority: Int) { raw = priority }
    func hash(into hasher: inout Hasher) { hasher.combine(raw) }
    func _rawHashValue(seed: Int) -> Int { mix64(Int64(raw), seed) }
}

/// SplitMix64's finaliser over a value and the table's seed.
@inline(__always)
func mix64(_ raw: Int64, _ seed: Int) -> Int {
    var z = UInt64(bitPattern: raw) &+ UInt64(bitPattern: Int64(seed)) &* 0x9E37_79B9_7F4A_7C15
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return Int(bitPattern: UInt(z ^ (z >> 31)))
}

/// Backends by id: a dictionary of slots into an array of records.
struct BackendTable {
    private var slots: [BackendKey: Int] = [:]
    private(set) var records: [Backend] = []

    var ids: [BackendID] { records.map(\.id) }

    func index(_ id: BackendID) -> Int? { slots[BackendKey(id)] }

    func contains(_ id: BackendID) -> Bool { index(id) != nil }

    /// The record of a backend that must exist.
    subscript(id: BackendID) -> Backend {
        _read { yield records[index(id)!] }
        _modify { yield &records[index(id)!] }
    }

    /// A copy of the record, if the backend exists.
    func get(_ id: BackendID) -> Backend? { index(id).map { records[$0] } }

    /// Adds or replaces a record.
    mutating func put(_ record: Backend) {
        if let i = index(record.id) {
            records[i] = record
        } else {
            slots[BackendKey(record.id)] = records.count
            records.append(record)
        }
    }

    mutating func remove(_ id: BackendID) {
        guard let i = slots.removeValue(forKey: BackendKey(id)) else { return }
        let last = records.count - 1
        if i != last {
            records.withUnsafeMutableBufferPointer { $0.swapAt(i, last) }
            slots[BackendKey(records[i].id)] = i
        }
        records.removeLast()
    }
}

/// A set of backend ids hashed with `BackendKey` (the router updates several per decision), kept
/// as a dense array with each member's place in it: iteration follows the array, so it depends only
/// on the operations made, never on hash seeds or addresses. For the fleet-wide sets the router
/// walks (free, dirty, stealable): a core fed the same events makes the same decisions in every
/// process. (A `Set`'s order changes from run to run and from instance to instance; the order
/// the dirty set handed free backends to the dispatch heap once decided which of two equally
/// loaded backends took a job.)
struct BackendSet: Sequence {
    private var members: [BackendID] = []
    private var places: [BackendKey: Int] = [:]

    var isEmpty: Bool { members.isEmpty }
    var count: Int { members.count }
    func contains(_ id: BackendID) -> Bool { places[BackendKey(id)] != nil }
    @discardableResult
    mutating func insert(_ id: BackendID) -> (inserted: Bool, memberAfterInsert: BackendID) {
        let key = BackendKey(id)
        guard places[key] == nil else { return (false, id) }
        places[key] = members.count
        members.append(id)
        return (true, id)
    }
    /// Removes `id`; the last member takes its place.
    @discardableResult
    mutating func remove(_ id: BackendID) -> BackendID? {
        guard let i = places.removeValue(forKey: BackendKey(id)) else { return nil }
        let last = members.count - 1
        if i != last {
            members[i] = members[last]
            places[BackendKey(members[i])] = i
        }
        members.removeLast()
        return id
    }
    mutating func removeAll(keepingCapacity: Bool) {
        members.removeAll(keepingCapacity: keepingCapacity)
        places.removeAll(keepingCapacity: keepingCapacity)
    }
    func sorted() -> [BackendID] { members.sorted() }

    func makeIterator() -> IndexingIterator<[BackendID]> { members.makeIterator() }
}

/// A set of backend ids in a hashed `Set` (8 bytes a member): for the per-class sets, one per
/// job class and feature set, where the dense `BackendSet` would cost about twice the memory
/// (10,000 backends, 1,000 classes). Its order varies between processes and instances: a loop
/// over it may only compute what no order changes (sums, any/all, minima with ties broken by id),
/// which the determinism tests check.
struct BackendMembership: Sequence {
    private var keys = Set<BackendKey>()

    var isEmpty: Bool { keys.isEmpty }
    var count: Int { keys.count }
    func contains(_ id: BackendID) -> Bool { keys.contains(BackendKey(id)) }
    @discardableResult
    mutating func insert(_ id: BackendID) -> Bool { keys.insert(BackendKey(id)).inserted }
    @discardableResult
    mutating func remove(_ id: BackendID) -> BackendID? { keys.remove(BackendKey(id)).map { _ in id } }
    func sorted() -> [BackendID] { keys.map { BackendID($0.raw) }.sorted() }

    func makeIterator() -> some IteratorProtocol<BackendID> {
        keys.lazy.map { BackendID($0.raw) }.makeIterator()
    }
}

/// Backends grouped under ordered keys (a speed, a speed band), the greatest key first; each
/// group a hashed `BackendMembership`.
struct GroupedMembers<Key: Hashable & Comparable> {
    /// The keys that have members, descending.
    private(set) var keys: [Key] = []
    private var groups: [Key: BackendMembership] = [:]

    mutating func insert(_ id: BackendID, under key: Key) {
        if groups[key] == nil {
            let i = keys.firstIndex { $0 < key } ?? keys.endIndex
            keys.insert(key, at: i)
        }
        groups[key, default: BackendMembership()].insert(id)
    }

    mutating func remove(_ id: BackendID, under key: Key) {
        // In place: a copy taken out of the dictionary would copy the whole set to change it.
        guard groups[key]?.remove(id) != nil else { return }
        if groups[key]?.isEmpty == true {
            groups[key] = nil
            keys.removeAll { $0 == key }
        }
    }

    /// The members filed under `key`.
    func members(of key: Key) -> BackendMembership { groups[key] ?? BackendMembership() }

    /// The members under the greatest keys, as long as `take` holds for the key: greatest first.
    func leading(while take: @escaping (Key) -> Bool) -> some Sequence<BackendID> {
        keys.lazy.prefix(while: take).flatMap { self.groups[$0]! }
    }

    /// The members under the least keys, as long as `take` holds for the key: least first.
    func trailing(while take: @escaping (Key) -> Bool) -> some Sequence<BackendID> {
        keys.reversed().lazy.prefix(while: take).flatMap { self.groups[$0]! }
    }
}

extension GroupedMembers: Sendable where Key: Sendable {}

/// The fleet's backends grouped by speed, fastest first (work stealing looks at the slower ones,
/// and backups at those slower than a bar).
struct SpeedIndex {
    private var groups = GroupedMembers<Double>()

    /// The distinct speeds of the members, descending.
    var speeds: [Double] { groups.keys }

    mutating func insert(_ id: BackendID, speed: Double) { groups.insert(id, under: speed) }
    mutating func remove(_ id: BackendID, speed: Double) { groups.remove(id, under: speed) }

    /// Whether any member is strictly slower than `speed`.
    func hasSlower(than speed: Double) -> Bool { groups.keys.last.map { $0 < speed } ?? false }

    /// The members strictly slower than `speed`, slowest first (in no set order within a speed).
    func slower(than speed: Double) -> some Sequence<BackendID> { groups.trailing { $0 < speed } }
}

/// A class's capable backends grouped by speed band (10% wide, on a log scale), fastest band
/// first, for the comparisons of a slower backend with the faster ones (`admits`): the decision
/// costs the faster backends of the class, not the fleet. A learned speed moves by a little
/// after most measured jobs; an index keyed by the exact speed moved the backend in every class
/// it serves each time (a third of a 60-backend fleet's CPU). A backend keeps its band until its
/// speed leaves it by more than `margin` (`SpeedBand.next`), so the members of band `b` have speeds
/// in `[lower(b) / margin, upper(b) * margin)`, and `candidates(fasterThan:)` is a superset that the
/// caller narrows by the exact speed.
struct BandIndex {
    private var groups = GroupedMembers<Int>()

    /// The bands that have members, descending.
    var bands: [Int] { groups.keys }

    mutating func insert(_ id: BackendID, band: Int) { groups.insert(id, under: band) }
    mutating func remove(_ id: BackendID, band: Int) { groups.remove(id, under: band) }

    /// The bands whose members may be faster than `speed`, fastest first.
    func bands(mayExceed speed: Double) -> some Sequence<Int> { groups.keys.lazy.prefix { SpeedBand.mayExceed($0, speed) } }

    /// The members filed under band `b`.
    func members(of b: Int) -> BackendMembership { groups.members(of: b) }

    /// Every member whose speed may exceed `speed` (all those that do, and some that do not, in
    /// the bands around it): fastest band first, in no set order within a band.
    func candidates(fasterThan speed: Double) -> some Sequence<BackendID> {
        groups.leading { SpeedBand.mayExceed($0, speed) }
    }
}

/// Speed bands of `BandIndex`: band `b` holds speeds from 1.1^b up to 1.1^(b+1), widened by
/// `margin` either way for a backend already in it. Speeds are kept within 0.01-1000 (`learn`,
/// the configuration), bands -49 to 72; the bounds are a table (repeated products, no libm).
enum SpeedBand {
    static let margin = 1.02
    static let first = -50
    /// `bounds[i]` = 1.1^(first + i).
    static let bounds: [Double] = {
        // From 1.0 outward, so that 1.0 (the assumed speed) is a bound exactly.
        var below: [Double] = []
        var v = 1.0
        for _ in 0 ..< -first {
            v /= 1.1
            below.append(v)
        }
        var above: [Double] = [1.0]
        v = 1.0
        for _ in 0..<75 {
            v *= 1.1
            above.append(v)
        }
        return below.reversed() + above
    }()

    static func lower(_ b: Int) -> Double { bounds[min(max(b - first, 0), bounds.count - 1)] }

    /// Whether a member of band `b` may be faster than `speed`.
    static func mayExceed(_ b: Int, _ speed: Double) -> Bool { lower(b + 1) * margin > speed }

    /// Whether every member of band `b` is faster than `speed`.
    static func allExceed(_ b: Int, _ speed: Double) -> Bool { lower(b) / margin > speed }

    /// The band of `speed`: the last whose lower bound is at most it.
    static func of(_ speed: Double) -> Int {
        var lo = 0, hi = bounds.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if bounds[mid] <= speed { lo = mid + 1 } else { hi = mid }
        }
        return max(lo - 1, 0) + first
    }

    /// The band for `speed`, keeping `current` while the speed is within it (widened by `margin`).
    static func next(_ speed: Double, current: Int?) -> Int {
        if let b = current, speed >= lower(b) / margin, speed < lower(b + 1) * margin { return b }
        return of(speed)
    }
}

extension Chunks: Sendable where Element: Sendable {}
