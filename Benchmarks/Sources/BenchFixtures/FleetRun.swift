import HeapModule
import MusterCore
import MusterProtocol

/// The fleet of `muster-bench core --job-seconds`, run on the core's clock. Each backend runs the
/// jobs bound to it in the order they were bound, as many at once as it has slots; a job takes
/// `jobSeconds / speed`, after a load of its model when the backend does not have it (a load takes
/// `loadSeconds`, and a backend keeps its two newest models loaded, announcing each load as it
/// lands). A `load_model` loads ahead of any job; a revoked job leaves its slot or its place in line.
public struct FleetRun {
    public struct Run: Comparable, Sendable {
        public var at: CoreInstant
        public var job: JobID
        public var backend: BackendID
        public var lease: Lease
        public static func < (a: Run, b: Run) -> Bool {
            (a.at, a.job.rawValue, a.lease.rawValue) < (b.at, b.job.rawValue, b.lease.rawValue)
        }
    }
    struct Load: Comparable {
        var at: CoreInstant
        var backend: BackendID
        var model: String
        static func < (a: Load, b: Load) -> Bool {
            (a.at, a.backend.rawValue, a.model) < (b.at, b.backend.rawValue, b.model)
        }
    }
    struct Backend {
        var slots: Int
        var seconds: Double
        var running: [JobID: Lease] = [:]
        var waiting: [(job: JobID, lease: Lease, model: String?)] = []
        /// Loads under way: when each lands.
        var loading: [String: CoreInstant] = [:]
        var snapshot: CapabilitySnapshot
    }
    var backends: [BackendID: Backend] = [:]
    let loadSeconds: Double
    /// Starts not reported yet, loads under way and the ends of the runs under way, by time.
    var starts = Heap<Run>()
    var loads = Heap<Load>()
    var ends = Heap<Run>()
    /// The run each job has now (a revoked or replaced lease is stale).
    var current: [JobID: (BackendID, Lease)] = [:]
    /// Model loads started: all of them, and those the core asked for (`load_model`) rather than
    /// a job that started without its model.
    public private(set) var loadsStarted = 0
    public private(set) var loadsAsked = 0
    /// Jobs running now, and the fleet's slots.
    public private(set) var running = 0
    public let slots: Int
    /// Every action the core returned, with the time, when not nil (the determinism test).
    public var record: [String]?

    /// Each backend runs at the speed the fleet configured for it (1.0 in a uniform fleet).
    public init(fleet: CoreFleet, jobSeconds: Double, loadSeconds: Double = 5) {
        slots = fleet.slots
        self.loadSeconds = loadSeconds
        for (id, snapshot) in fleet.announced {
            backends[id] = Backend(slots: snapshot.slots, seconds: jobSeconds / (fleet.speed(of: id) ?? 1), snapshot: snapshot)
        }
    }

    /// Every job bound and not ended, for the burst that follows.
    public var bound: [(JobID, BackendID, Lease)] {
        current.map { ($0.key, $0.value.0, $0.value.1) }.sorted { $0.0.rawValue < $1.0.rawValue }
    }

    public mutating func assigned(_ job: JobID, _ backend: BackendID, _ lease: Lease, model: String?, at now: CoreInstant) {
        current[job] = (backend, lease)
        backends[backend]!.waiting.append((job, lease, model))
        startWaiting(backend, at: now)
    }

    /// When `model` is loaded on the backend: now, when its load under way lands, or after a new load.
    mutating func modelReady(_ id: BackendID, _ model: String?, at now: CoreInstant) -> CoreInstant {
        guard let model, !backends[id]!.snapshot.modelsLoaded.contains(model) else { return now }
        if let at = backends[id]!.loading[model] { return at }
        let at = now + .seconds(loadSeconds)
        backends[id]!.loading[model] = at
        loadsStarted += 1
        loads.insert(Load(at: at, backend: id, model: model))
        return at
    }

    mutating func startWaiting(_ id: BackendID, at now: CoreInstant) {
        while backends[id]!.running.count < backends[id]!.slots, !backends[id]!.waiting.isEmpty {
            let next = backends[id]!.waiting.removeFirst()
            backends[id]!.running[next.job] = next.lease
            running += 1
            let ready = modelReady(id, next.model, at: now)
            starts.insert(Run(at: now, job: next.job, backend: id, lease: next.lease))
            ends.insert(Run(at: ready + .seconds(backends[id]!.seconds), job: next.job, backend: id, lease: next.lease))
        }
    }

    func live(_ r: Run) -> Bool { backends[r.backend]!.running[r.job] == r.lease }

    enum Due {
        case start(Run)
        case loaded(Load)
        /// The core's timer (`nextDeadline`).
        case tick(CoreInstant)
        case end(Run)
    }

    /// What is due next: starts, loads and the core's timer before any end at the same time or
    /// later. With nothing running, the core's timer or a load may still lead to a binding.
    mutating func next(deadline: CoreInstant?) -> Due? {
        while let s = starts.min, !live(s) { _ = starts.popMin() }
        while let e = ends.min, !live(e) { _ = ends.popMin() }
        let horizon = ends.min?.at
        if let s = starts.min, s.at <= horizon ?? s.at, s.at <= loads.min?.at ?? s.at { return .start(starts.popMin()!) }
        if let l = loads.min, l.at <= horizon ?? l.at, l.at <= deadline ?? l.at { return .loaded(loads.popMin()!) }
        if let d = deadline, d <= horizon ?? d { return .tick(d) }
        return ends.popMin().map { .end($0) }
    }

    /// Reports to the core the starts and loads due before the next end, each at its own time,
    /// then that end: `measure` runs the core's handling of it (the decision) and returns its
    /// actions. Returns the run that ended and the jobs the decision bound; nil when nothing runs.
    public mutating func endNext(
        in fleet: inout CoreFleet, measure: (() -> [CoreAction]) -> [CoreAction]
    ) -> (run: Run, bindings: Int)? {
        // With nothing running, the core's timers alone are followed for an hour at most.
        let giveUp = fleet.clock + .seconds(3600)
        var due = next(deadline: fleet.core.nextDeadline)
        while true {
            switch due {
            case .start(let run):
                fleet.clock = max(fleet.clock, run.at)
                let event = CoreEvent.jobStarted(run.job, backend: run.backend, lease: run.lease)
                perform(fleet.core.handle(event, at: fleet.clock), at: fleet.clock)
            case .loaded(let load):
                fleet.clock = max(fleet.clock, load.at)
                backends[load.backend]!.loading[load.model] = nil
                var s = backends[load.backend]!.snapshot
                s.version.revision += 1
                s.modelsLoaded = [load.model] + s.modelsLoaded.filter { $0 != load.model }.prefix(1)
                backends[load.backend]!.snapshot = s
                perform(fleet.core.handle(.capabilities(load.backend, s), at: fleet.clock), at: fleet.clock)
            case .tick(let at):
                if at > giveUp { return nil }
                fleet.clock = max(fleet.clock, at)
                perform(fleet.core.handle(.tick, at: fleet.clock), at: fleet.clock)
            case .end(let end):
                fleet.clock = max(fleet.clock, end.at)
                let now = fleet.clock
                let actions = measure {
                    fleet.core.handle(.jobCompleted(end.job, backend: end.backend, lease: end.lease, result: .null), at: now)
                }
                ended(end)
                return (end, perform(actions, at: now))
            case nil:
                return nil
            }
            due = next(deadline: fleet.core.nextDeadline)
        }
    }

    mutating func ended(_ r: Run) {
        backends[r.backend]!.running[r.job] = nil
        running -= 1
        if let (b, l) = current[r.job], b == r.backend, l == r.lease { current[r.job] = nil }
        // Its next bound job starts on the freed slot.
        startWaiting(r.backend, at: r.at)
    }

    /// Submits `entries` to the core now; the jobs it bound.
    public mutating func submit(_ entries: [BatchEntry], in fleet: inout CoreFleet) -> Int {
        perform(try! fleet.core.submit(key: nil, entries: entries, at: fleet.clock).actions, at: fleet.clock)
    }

    /// Applies the core's assigns, revokes and loads; the number of assigns.
    @discardableResult
    public mutating func perform(_ actions: [CoreAction], at now: CoreInstant) -> Int {
        var assigned = 0
        var touched: [BackendID] = []
        if record != nil { record!.append(contentsOf: actions.map { "\(now.nanoseconds) \($0)" }) }
        for action in actions {
            switch action {
            case .assign(let job, _, let spec, let backend, let lease, _):
                self.assigned(job, backend, lease, model: spec.model, at: now)
                assigned += 1
            case .revoke(let job, let backend, let lease), .cancel(let job, let backend, let lease):
                if backends[backend]!.running[job] == lease {
                    backends[backend]!.running[job] = nil
                    running -= 1
                    touched.append(backend)
                }
                backends[backend]!.waiting.removeAll { $0.job == job && $0.lease == lease }
                if let (b, l) = current[job], b == backend, l == lease { current[job] = nil }
            case .loadModel(let backend, let model):
                let before = loadsStarted
                _ = modelReady(backend, model, at: now)
                loadsAsked += loadsStarted - before
            default:
                break
            }
        }
        for b in touched { startWaiting(b, at: now) }
        return assigned
    }
}
