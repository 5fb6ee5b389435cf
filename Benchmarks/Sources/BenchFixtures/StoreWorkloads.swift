import Foundation
import MusterCore
import MusterProtocol
import MusterStore

/// Workloads that measure the job stores (SQLite, PostgreSQL) through their public API, for `muster-bench store` (and
/// BenchFixturesTests, which keep them working). They print nothing and assert nothing; they
/// return what they measured.
public enum StoreBenchmark {
    /// What `groupCommit` measured.
    public struct Throughput: Hashable, Sendable, CustomStringConvertible {
        public var jobs: Int
        public var batchSize: Int
        /// Jobs appended between waits for durability (0: no waits).
        public var step: Int
        public var changes: Int
        public var seconds: Double
        /// CPU time of the whole process (user and system) over the run: the appending thread and
        /// the store's writer thread.
        public var cpuSeconds: Double
        public var commits: UInt64
        public var bytesOnDisk: UInt64
        public var jobsStored: Int

        public var changesPerSecond: Double { Double(changes) / seconds }
        public var jobsPerSecond: Double { Double(jobs) / seconds }
        /// CPU microseconds per job: steadier than the rate on a shared machine.
        public var cpuMicrosecondsPerJob: Double { jobs > 0 ? cpuSeconds * 1e6 / Double(jobs) : 0 }

        public var description: String {
            """
            group commit: \(changes) changes (\(jobs) jobs in batches of \(batchSize)\(step > 0 ? ", \(step) per commit" : "")) durable in \(format(seconds)) s: \
            \(Int(changesPerSecond)) changes/s, \(Int(jobsPerSecond)) jobs/s, CPU \(String(format: "%.1f", cpuMicrosecondsPerJob)) µs \
            per job; \(commits) commits (\(commits > 0 ? changes / Int(commits) : 0) changes each); \(jobsStored) jobs stored \
            in \(bytesOnDisk / 1024) KiB
            """
        }
    }

    /// One thread appends the lives of `jobs` jobs as fast as it can: batches of `batchSize` jobs
    /// accepted; each job bound, started, completed with a short result, and evicted `retained` jobs later,
    /// its batch with its last job, as the core's retention does (so the store holds about
    /// `retained` jobs). With batches of one, 5 changes per job. Returns once every change is
    /// durable.
    ///
    /// `step` > 0: after every `step` jobs the thread waits until what it appended is durable, so
    /// each commit holds about `step` jobs' changes, as under a paced coordinator (`muster serve`
    /// commits every 4 ms: about 50 jobs at 12,500 jobs/s), instead of one commit swallowing
    /// whole job lives that supersede each other.
    public static func groupCommit(
        path: String, jobs: Int, batchSize: Int = 1, retained: Int = 10_000, step: Int = 0
    ) throws(StoreFailure) -> Throughput {
        try groupCommit(jobs: jobs, batchSize: batchSize, retained: retained, step: step) {
            SQLiteJobStore(path: path)
        }
    }

    /// `groupCommit` on the store `makeStore` makes (a new, empty one).
    public static func groupCommit(
        jobs: Int, batchSize: Int = 1, retained: Int = 10_000, step: Int = 0, store makeStore: () -> any JobStore
    ) throws(StoreFailure) -> Throughput {
        let store = makeStore()
        let waiter = DurableWaiter()
        store.onCommit { waiter.record($0) }
        _ = try store.open()
        defer { store.close() }
        let spec = JobSpec(kind: "image", params: RawJSON(unchecked: #"{"prompt":"a lighthouse at dusk","steps":20}"#))
        let size = UInt64(max(1, batchSize))
        let total = UInt64(max(1, jobs))
        let cpuBefore = ProcStats.cpuSeconds(getpid())
        let started = DispatchTime.now().uptimeNanoseconds
        var last: UInt64 = 0
        // Job n is in batch (n - 1) / size + 1, whose first job is that batch's (b - 1) * size + 1.
        func batchOf(_ n: UInt64) -> UInt64 { (n - 1) / size + 1 }
        for n in 1...total {
            let job = JobID(n)
            let b = batchOf(n)
            if (n - 1) % size == 0 {
                let count = min(size, total - n + 1)
                let batch = StoredBatch(
                    id: BatchID(b), key: nil, entries: [BatchEntry(spec: spec, count: Int(count))], firstJob: job,
                    submittedAt: CoreInstant(nanoseconds: n))
                _ = store.append(.batchAccepted(batch))
            }
            _ = store.append(
                .jobBound(job: job, backend: BackendID(1), lease: Lease(n), attempt: 1, at: CoreInstant(nanoseconds: n)))
            _ = store.append(.jobStarted(job: job, at: CoreInstant(nanoseconds: n)))
            // As the core writes an end: with the job's one attempt.
            let attempt = AttemptRecord(
                attempt: 1, backend: BackendID(1), lease: Lease(n), boundAt: CoreInstant(nanoseconds: n),
                startedAt: CoreInstant(nanoseconds: n), endedAt: CoreInstant(nanoseconds: n), outcome: .completed)
            last = store.append(
                .jobEnded(
                    StoredJob(
                        id: job, batch: BatchID(b), state: .completed, backend: BackendID(1), lease: Lease(n),
                        attempt: 1, result: RawJSON(unchecked: #"{"images":["out/\#(n).png"]}"#),
                        endedAt: CoreInstant(nanoseconds: n), history: [attempt])))
            if n > UInt64(retained) {
                let old = n - UInt64(retained)
                let batchGone = old % size == 0 || old == total
                last = store.append(.evicted(jobs: [JobID(old)], batches: batchGone ? [BatchID(batchOf(old))] : []))
            }
            if step > 0 && n % UInt64(step) == 0 { try waiter.wait(through: last) }
        }
        try waiter.wait(through: last)
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
        // Closed first: the sizes as the store leaves them (PostgreSQL measures them at most once
        // a second while it runs, and once more as it closes).
        store.close()
        let cpu = ProcStats.cpuSeconds(getpid()) - cpuBefore
        let stats = store.statistics
        return Throughput(
            jobs: jobs, batchSize: Int(size), step: max(0, step), changes: Int(last), seconds: seconds, cpuSeconds: cpu,
            commits: stats.commits, bytesOnDisk: stats.bytesOnDisk, jobsStored: stats.jobsStored)
    }

    /// What `openTime` measured.
    public struct OpenTime: Hashable, Sendable, CustomStringConvertible {
        public var jobs: Int
        public var unfinished: Int
        public var batches: Int
        public var bytesOnDisk: UInt64
        /// Writing the store through `append` (group commits), for scale.
        public var buildSeconds: Double
        /// `open()` of a new store object on the file: epoch commit and reading everything.
        public var openSeconds: Double

        public var description: String {
            """
            open: \(jobs) jobs (\(unfinished) unfinished) in \(batches) batches, \(bytesOnDisk / 1024) KiB \
            (\(jobs > 0 ? Int(bytesOnDisk) / jobs : 0) bytes per job): open() read them in \(format(openSeconds)) s \
            (written in \(format(buildSeconds)) s)
            """
        }
    }

    /// Writes `jobs` jobs in batches of `batchSize` through a store (all but the last `unfinished`
    /// completed with a result, one in ten of those failed instead; of the unfinished ones half
    /// bound, half of those started, half queued), closes it, then times `open()` of a new store
    /// object on the file.
    public static func openTime(
        path: String, jobs: Int, unfinished: Int, batchSize: Int = 10
    ) throws(StoreFailure) -> OpenTime {
        try openTime(jobs: jobs, unfinished: unfinished, batchSize: batchSize) { SQLiteJobStore(path: path) }
    }

    /// `openTime` on the stores `makeStore` makes (each a new object on the same, first empty, data).
    public static func openTime(
        jobs: Int, unfinished: Int, batchSize: Int = 10, store makeStore: () -> any JobStore
    ) throws(StoreFailure) -> OpenTime {
        let builder = makeStore()
        let waiter = DurableWaiter()
        builder.onCommit { waiter.record($0) }
        _ = try builder.open()
        let started = DispatchTime.now().uptimeNanoseconds
        let size = max(1, batchSize)
        let finished = UInt64(max(0, jobs - unfinished))
        var last: UInt64 = 0
        var batches = 0
        var first: UInt64 = 1
        while first <= UInt64(jobs) {
            let count = min(UInt64(size), UInt64(jobs) - first + 1)
            let spec = JobSpec(
                kind: first % 3 == 0 ? "video" : "image", needs: first % 3 == 0 ? ["video"] : [],
                params: RawJSON(unchecked: #"{"prompt":"a lighthouse at dusk","seed":\#(first),"steps":20}"#),
                owner: "owner-\(first % 7)")
            let batchID = BatchID(UInt64(batches + 1))
            last = builder.append(
                .batchAccepted(
                    StoredBatch(
                        id: batchID, key: first % 2 == 0 ? "key-\(first)" : nil,
                        entries: [BatchEntry(spec: spec, count: Int(count))], firstJob: JobID(first),
                        submittedAt: CoreInstant(nanoseconds: first))))
            batches += 1
            for n in first..<(first + count) {
                let job = JobID(n)
                let backend = BackendID(Int64(n % 4) + 1)
                if n <= finished || n % 2 == 0 {
                    last = builder.append(
                        .jobBound(job: job, backend: backend, lease: Lease(n), attempt: 1, at: CoreInstant(nanoseconds: n)))
                }
                // Every finished job started; of the bound ones, half.
                if n <= finished || n % 4 == 0 { last = builder.append(.jobStarted(job: job, at: CoreInstant(nanoseconds: n))) }
                guard n <= finished else { continue }
                let failed = n % 10 == 0
                // As the core writes an end: with the job's one attempt (a failed one with its error).
                let failure = JobFailure(code: .jobFailed, message: "CUDA out of memory")
                let attempt = AttemptRecord(
                    attempt: 1, backend: backend, lease: Lease(n), boundAt: CoreInstant(nanoseconds: n),
                    startedAt: CoreInstant(nanoseconds: n), endedAt: CoreInstant(nanoseconds: n),
                    outcome: failed ? .failed : .completed, error: failed ? failure : nil)
                last = builder.append(
                    .jobEnded(
                        StoredJob(
                            id: job, batch: batchID, state: failed ? .failed : .completed,
                            backend: BackendID(Int64(n % 4) + 1), lease: Lease(n), attempt: 1,
                            result: failed ? nil : RawJSON(unchecked: #"{"images":["out/ComfyUI_\#(n)_.png"]}"#),
                            failure: failed ? failure : nil, endedAt: CoreInstant(nanoseconds: n), history: [attempt])))
            }
            first += count
        }
        for n in 1...4 {
            last = builder.append(
                .backendRegistered(id: BackendID(Int64(n)), name: "gpu-\(n)", incarnation: Incarnation(UInt64(n))))
        }
        try waiter.wait(through: last)
        builder.close()
        let built = DispatchTime.now().uptimeNanoseconds

        let store = makeStore()
        let snapshot = try store.open()
        let opened = DispatchTime.now().uptimeNanoseconds
        let bytes = store.statistics.bytesOnDisk
        store.close()
        return OpenTime(
            jobs: snapshot.jobs.count, unfinished: snapshot.jobs.lazy.filter { !$0.state.isFinal }.count,
            batches: snapshot.batches.count, bytesOnDisk: bytes, buildSeconds: Double(built - started) / 1e9,
            openSeconds: Double(opened - built) / 1e9)
    }

    private static func format(_ seconds: Double) -> String {
        let ms = Int((seconds * 1000).rounded())
        let fraction = String(ms % 1000)
        return "\(ms / 1000).\(String(repeating: "0", count: 3 - fraction.count))\(fraction)"
    }
}

/// Waits on the bench's thread for the store's handler to report a sequence number durable.
private final class DurableWaiter: @unchecked Sendable {
    // @unchecked Sendable: `through` and `failure` are read and written with `lock` held.
    private let lock = NSCondition()
    private var through: UInt64 = 0
    private var failure: StoreFailure?

    func record(_ commit: StoreCommit) {
        lock.lock()
        switch commit {
        case .durable(let t): through = t
        case .failed(let f): failure = f
        }
        lock.broadcast()
        lock.unlock()
    }

    /// Returns once `seq` is durable; throws the store's failure instead of waiting through
    /// retries (a benchmark on a failing disk measures nothing).
    func wait(through seq: UInt64) throws(StoreFailure) {
        lock.lock()
        defer { lock.unlock() }
        while through < seq {
            if let failure { throw failure }
            lock.wait()
        }
    }
}
