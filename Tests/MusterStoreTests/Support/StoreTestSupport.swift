import Foundation
import MusterCore
import MusterProtocol
import MusterStore
import Testing

/// A fresh directory under the system's temporary directory.
struct TempDir {
    let path: String

    init() throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("muster-store-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    func file(_ name: String) -> String { "\(path)/\(name)" }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// Collects reports made on other threads (a store's commits, an election's changes), each with
/// the monotonic instant it came, and lets a test wait for them.
class ReportLog<Event: Sendable>: @unchecked Sendable {
    // @unchecked Sendable: `events` is read and written with `condition` locked.
    private let condition = NSCondition()
    private var events: [(event: Event, at: UInt64)] = []

    func record(_ event: Event) {
        condition.lock()
        events.append((event, DispatchTime.now().uptimeNanoseconds))
        condition.broadcast()
        condition.unlock()
    }

    var all: [Event] {
        condition.lock()
        defer { condition.unlock() }
        return events.map(\.event)
    }

    var count: Int {
        condition.lock()
        defer { condition.unlock() }
        return events.count
    }

    /// When the first report matching `predicate` came (monotonic nanoseconds).
    func instant(of predicate: (Event) -> Bool) -> UInt64? {
        condition.lock()
        defer { condition.unlock() }
        return events.first { predicate($0.event) }?.at
    }

    /// Waits until `predicate` holds for the reports so far (checked on every report, and every
    /// 10 ms for predicates that look elsewhere, e.g. at statistics); records an issue after
    /// `timeout`.
    @discardableResult
    func wait(
        _ what: String, timeout: TimeInterval = 30, sourceLocation: SourceLocation = #_sourceLocation,
        until predicate: ([Event]) -> Bool
    ) -> Bool {
        let deadline = Date(timeIntervalSinceNow: timeout)
        condition.lock()
        defer { condition.unlock() }
        while !predicate(events.map(\.event)) {
            guard Date() < deadline else {
                Issue.record(
                    "timed out after \(timeout) s waiting for \(what); reports: \(events.map(\.event))",
                    sourceLocation: sourceLocation)
                return false
            }
            _ = condition.wait(until: min(deadline, Date(timeIntervalSinceNow: 0.01)))
        }
        return true
    }

    /// `wait` for async tests: polls every 10 ms with `Task.sleep`, so a long wait does not hold
    /// one of the few threads of the cooperative pool that the other tests' tasks run on.
    @discardableResult
    func wait(
        _ what: String, timeout: TimeInterval = 30, sourceLocation: SourceLocation = #_sourceLocation,
        until predicate: ([Event]) -> Bool
    ) async -> Bool {
        let deadline = Date(timeIntervalSinceNow: timeout)
        while !predicate(all) {
            guard Date() < deadline else {
                Issue.record(
                    "timed out after \(timeout) s waiting for \(what); reports: \(all)", sourceLocation: sourceLocation)
                return false
            }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return true
    }
}

/// A store's commit reports.
final class CommitLog: ReportLog<StoreCommit>, @unchecked Sendable {
    var durable: [UInt64] { all.compactMap { if case .durable(let t) = $0 { t } else { nil } } }
    var failures: [StoreFailure] { all.compactMap { if case .failed(let f) = $0 { f } else { nil } } }

    static func isDurable(through seq: UInt64) -> ([StoreCommit]) -> Bool {
        { events in events.contains { if case .durable(let t) = $0 { t >= seq } else { false } } }
    }

    static func hasFailed(_ kind: StoreFailure.Kind) -> ([StoreCommit]) -> Bool {
        { events in events.contains { if case .failed(let f) = $0 { f.kind == kind } else { false } } }
    }

    @discardableResult
    func waitDurable(through seq: UInt64, sourceLocation: SourceLocation = #_sourceLocation) -> Bool {
        wait("durable through \(seq)", sourceLocation: sourceLocation, until: Self.isDurable(through: seq))
    }

    @discardableResult
    func waitDurable(through seq: UInt64, sourceLocation: SourceLocation = #_sourceLocation) async -> Bool {
        await wait("durable through \(seq)", sourceLocation: sourceLocation, until: Self.isDurable(through: seq))
    }

    @discardableResult
    func waitFailure(_ kind: StoreFailure.Kind, sourceLocation: SourceLocation = #_sourceLocation) -> Bool {
        wait("a \(kind) failure", sourceLocation: sourceLocation, until: Self.hasFailed(kind))
    }

    @discardableResult
    func waitFailure(_ kind: StoreFailure.Kind, sourceLocation: SourceLocation = #_sourceLocation) async -> Bool {
        await wait("a \(kind) failure", sourceLocation: sourceLocation, until: Self.hasFailed(kind))
    }
}

extension StoreSnapshot {
    /// What a store must hold after `change`, written without SQL: the reference the stores are
    /// checked against. Jobs of a batch are inserted with it; updates of a missing job change
    /// nothing; a backend name that moves to another id leaves its old id.
    mutating func apply(_ change: StoreChange) {
        switch change {
        case .batchAccepted(let batch):
            batches.removeAll { $0.id == batch.id || (batch.key != nil && $0.key == batch.key) }
            batches.append(batch)
            batches.sort { $0.id < $1.id }
            let ids = (0..<UInt64(batch.jobCount)).map { JobID(batch.firstJob.rawValue + $0) }
            jobs.removeAll { ids.contains($0.id) }
            jobs += ids.map { StoredJob(id: $0, batch: batch.id, state: .queued) }
            jobs.sort { $0.id < $1.id }
        case .jobBound(let job, let backend, let lease, let attempt, let at):
            update(job) {
                $0.state = .bound
                $0.backend = backend
                $0.lease = lease
                $0.attempt = attempt
                $0.boundAt = at
                $0.startedAt = nil
            }
        case .jobStarted(let job, let at):
            update(job) { if $0.state == .bound { $0.startedAt = at } }
        case .jobRequeued(let job, let attempt, let lostAttempts, let history):
            update(job) {
                $0.state = .queued
                $0.backend = nil
                $0.lease = nil
                $0.attempt = attempt
                $0.lostAttempts = lostAttempts
                $0.boundAt = nil
                $0.startedAt = nil
                $0.history = history
            }
        case .jobEnded(let ended):
            update(ended.id) {
                let batch = $0.batch
                $0 = ended
                $0.batch = batch
                $0.state =
                    switch ended.state {
                    case .gated: .queued
                    case .running: .bound
                    default: ended.state
                    }
                // An `attempts_exhausted` failure's attempts are the job's history, not stored twice.
                $0.failure?.attempts = []
            }
        case .evicted(let gone, let goneBatches):
            let goneJobs = Set(gone)
            let goneBatchSet = Set(goneBatches)
            jobs.removeAll { goneJobs.contains($0.id) }
            batches.removeAll { goneBatchSet.contains($0.id) }
        case .backendRegistered(let id, let name, let incarnation):
            backends.removeAll { $0.id == id || $0.name == name }
            backends.append(StoredBackend(id: id, name: name, incarnation: incarnation))
            backends.sort { $0.id < $1.id }
        case .backendDown(let id, let at):
            if let i = backends.firstIndex(where: { $0.id == id }) {
                backends[i].down = true
                backends[i].downAt = at
            }
        case .backendForgotten(let id):
            backends.removeAll { $0.id == id }
        }
    }

    private mutating func update(_ job: JobID, _ body: (inout StoredJob) -> Void) {
        guard let i = jobs.firstIndex(where: { $0.id == job }) else { return }
        body(&jobs[i])
    }
}

/// Runs a command; returns its exit status and what it printed (stdout and stderr).
@discardableResult
func run(_ arguments: [String]) -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    do {
        try process.run()
    } catch {
        return (-1, "cannot run \(arguments.joined(separator: " ")): \(error)")
    }
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// A small tmpfs mounted for one test (root only: the tests run as root here and in CI).
struct Tmpfs {
    let path: String

    /// Mounts a tmpfs of `kibibytes` at a new directory; records an issue (a failure, never a
    /// skip) and returns nil when that is not possible.
    static func mount(kibibytes: Int, sourceLocation: SourceLocation = #_sourceLocation) -> Tmpfs? {
        guard getuid() == 0 else {
            Issue.record(
                "this test mounts a tmpfs and needs root (CI runs the tests as root); run the suite as root",
                sourceLocation: sourceLocation)
            return nil
        }
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("muster-tmpfs-\(UUID().uuidString)")
            .path
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            Issue.record("cannot create \(path): \(error)", sourceLocation: sourceLocation)
            return nil
        }
        let result = run(["mount", "-t", "tmpfs", "-o", "size=\(kibibytes)k", "tmpfs", path])
        guard result.status == 0 else {
            Issue.record(
                "mount -t tmpfs failed (\(result.status)): \(result.output); the test needs root with CAP_SYS_ADMIN",
                sourceLocation: sourceLocation)
            try? FileManager.default.removeItem(atPath: path)
            return nil
        }
        return Tmpfs(path: path)
    }

    func file(_ name: String) -> String { "\(path)/\(name)" }

    func remount(readOnly: Bool) -> (status: Int32, output: String) {
        run(["mount", "-o", readOnly ? "remount,ro" : "remount,rw", path])
    }

    func unmount() {
        if run(["umount", path]).status != 0 { run(["umount", "-l", path]) }
        try? FileManager.default.removeItem(atPath: path)
    }

    /// Writes a file until the file system is full; returns the bytes written.
    @discardableResult
    func fill(_ name: String) -> Int {
        let fd = open(file(name), O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { return 0 }
        defer { close(fd) }
        let chunk = [UInt8](repeating: 0x5A, count: 4096)
        var total = 0
        while true {
            let n = chunk.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            total += n
        }
        // tmpfs may take a last partial page: fill it byte by byte.
        var byte: UInt8 = 0x5A
        while write(fd, &byte, 1) == 1 { total += 1 }
        return total
    }
}

/// Test data: a batch with two entries whose params need escaping and hold non-ASCII text.
enum Samples {
    static let tricky =
        #"{"prompt":"caf\u00e9 \"quoted\" \\ back\/slash\n\t","emoji":"🎞️ 日本語","nested":[1,-2.5e3,true,null,{"a":[]}]}"#

    static func batch(id: UInt64, firstJob: UInt64, key: String? = nil, counts: (Int, Int) = (2, 1)) -> StoredBatch {
        StoredBatch(
            id: BatchID(id), key: key,
            entries: [
                BatchEntry(
                    spec: JobSpec(
                        kind: "video", needs: ["video", "frameinterps"], model: "wan-2.2 \"14B\"",
                        params: RawJSON(unchecked: tricky), priority: 3, owner: "ana\u{0001}\tö",
                        nodes: ["KSampler", "RIFE VFI"]),
                    count: counts.0),
                BatchEntry(
                    spec: JobSpec(kind: "image", params: RawJSON(unchecked: " [1, 2]\n"), priority: -1), count: counts.1
                ),
            ],
            firstJob: JobID(firstJob), submittedAt: CoreInstant(nanoseconds: 1_234_567_890_123))
    }
}

/// A store under test beside the reference of what it must hold: every change goes to both.
final class StoreUnderTest {
    let store: any JobStore
    let log = CommitLog()
    private(set) var expected = StoreSnapshot()

    /// Sets the commit handler and opens the store.
    init(_ store: any JobStore) throws {
        self.store = store
        store.onCommit { [log] in log.record($0) }
        _ = try store.open()
    }

    @discardableResult
    func append(_ change: StoreChange) -> UInt64 {
        expected.apply(change)
        return store.append(change)
    }

    /// Closes the store, opens `reopened` (a new object on the same data) and checks it holds
    /// exactly the reference, under `epoch`.
    func closeAndCheck(_ reopened: any JobStore, epoch: UInt64, sourceLocation: SourceLocation = #_sourceLocation)
        throws
    {
        store.close()
        let snapshot = try reopened.open()
        reopened.close()
        var want = expected
        want.epoch = epoch
        #expect(snapshot == want, sourceLocation: sourceLocation)
    }
}
