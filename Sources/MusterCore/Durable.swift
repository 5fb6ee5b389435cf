import MusterProtocol

/// One change to the durable state of batches, jobs and backends. The core emits every change as
/// a `.persist` action, in the order the changes happen; a store that applies them in that order
/// holds exactly what `Coordinator.restore` needs after a crash or a restart.
///
/// What is kept is what a restarted coordinator must know to lose nothing and run nothing twice:
/// each batch with its entries and key, each job's state, binding (backend, lease, attempt, bound
/// time), its ended attempts, its result or failure, and every backend's name, incarnation and
/// whether its link was down, and when a job still running started. Not kept: `progress`,
/// capability snapshots (backends announce again), and estimates.
public enum StoreChange: Hashable, Sendable {
    /// A new batch: its jobs are `batch.firstJob ..< batch.firstJob + batch.jobCount`, entry by
    /// entry (each entry `count` jobs), all queued with attempt 0.
    case batchAccepted(StoredBatch)
    /// A job bound to a backend: attempt `attempt` under `lease`, since `at`.
    case jobBound(job: JobID, backend: BackendID, lease: Lease, attempt: Int, at: CoreInstant)
    /// A bound job started (its backend said `started`, or `progress`), at `at`: after a restart
    /// it is running, its start known. Overwritten by the job's next binding, requeue or end.
    case jobStarted(job: JobID, at: CoreInstant)
    /// A job back in the queue (requeued or revoked); `lostAttempts` counts the attempts that
    /// ended without the job's fault (bounded by the policy's `maxAttempts`); `history` is every
    /// attempt so far, all ended.
    case jobRequeued(job: JobID, attempt: Int, lostAttempts: Int, history: [AttemptRecord])
    /// A job reached its final state (`completed` with `result`, `failed` with `failure`,
    /// `canceled`). Written before the final event is published.
    case jobEnded(StoredJob)
    /// Finished jobs dropped by retention, and the batches left with no job.
    case evicted(jobs: [JobID], batches: [BatchID])
    /// A backend registered with a new incarnation (or for the first time): keeps the name to id
    /// map stable across restarts and tells a reconnecting backend from a restarted one.
    case backendRegistered(id: BackendID, name: String, incarnation: Incarnation)
    /// The backend's link went down: it said `goodbye`, or its link stayed lost for longer than
    /// the suspect grace (its bound jobs were requeued just before). After a restart it is listed
    /// `down` and the warm-up gate does not wait for it, as before the restart; its next
    /// `backendRegistered` (or a reconnect under the stored incarnation) brings it back up. `at`:
    /// when it fell, so the window after which it is forgotten (`CorePolicy.forgetDownAfter`)
    /// keeps counting from the fall across restarts.
    case backendDown(id: BackendID, at: CoreInstant)
    /// The backend stayed down for `CorePolicy.forgetDownAfter`: the store deletes it, and a
    /// restart neither lists it nor waits for it.
    case backendForgotten(id: BackendID)
}

/// A batch as stored.
public struct StoredBatch: Hashable, Sendable {
    public var id: BatchID
    public var key: String?
    /// Who the batch belongs to (`BatchRecord.owner`).
    public var owner: String
    public var entries: [BatchEntry]
    public var firstJob: JobID
    public var submittedAt: CoreInstant

    /// `owner` nil: the first entry's owner (what a store written before batches had owners holds).
    public init(
        id: BatchID, key: String?, owner: String? = nil, entries: [BatchEntry], firstJob: JobID, submittedAt: CoreInstant
    ) {
        self.id = id
        self.key = key
        self.owner = owner ?? entries.first?.spec.owner ?? ""
        self.entries = entries
        self.firstJob = firstJob
        self.submittedAt = submittedAt
    }

    /// The number of jobs the batch created.
    public var jobCount: Int { entries.reduce(0) { $0 + $1.count } }
}

/// A job's stored state (its spec is its batch's entry).
public struct StoredJob: Hashable, Sendable {
    public var id: JobID
    public var batch: BatchID
    /// `queued` (never bound, or back in the queue), `bound` (bound or running when stored),
    /// or a final state.
    public var state: JobState
    public var backend: BackendID?
    public var lease: Lease?
    public var attempt: Int
    public var lostAttempts: Int
    public var result: RawJSON?
    /// With `failed`: the code, message and details, but no `attempts` (they are `history`).
    public var failure: JobFailure?
    public var endedAt: CoreInstant?
    /// Its attempts: every ended one, and for a final job its last one too (as `job_info.history`
    /// shows them); `attempts` reads them whole. A bound job's current attempt is not in it:
    /// `boundAt` says when it began. A job that ran once and completed keeps that attempt as
    /// `boundAt` and `startedAt` alone (its backend, lease, attempt and end are the job's own):
    /// most finished jobs, so a store of a million of them writes and reads no attempt records.
    public var history: [AttemptRecord]
    /// When a bound job's current binding was made; for a job that ran once and completed, when
    /// its binding was made (`history` then empty).
    public var boundAt: CoreInstant?
    /// For a bound job: when its current attempt started, if the store heard of it (`jobStarted`).
    /// For a job that ran once and completed (`history` empty): when it started, if known.
    public var startedAt: CoreInstant?

    public init(
        id: JobID, batch: BatchID, state: JobState, backend: BackendID? = nil, lease: Lease? = nil, attempt: Int = 0,
        lostAttempts: Int = 0, result: RawJSON? = nil, failure: JobFailure? = nil, endedAt: CoreInstant? = nil,
        history: [AttemptRecord] = [], boundAt: CoreInstant? = nil, startedAt: CoreInstant? = nil
    ) {
        self.history = history
        self.boundAt = boundAt
        self.startedAt = startedAt
        if state == .completed, history.count == 1, let a = history.first, a.outcome == .completed, a.error == nil,
            a.attempt == attempt, a.backend == backend, a.lease == lease, a.endedAt == endedAt
        {
            self.history = []
            self.boundAt = a.boundAt
            self.startedAt = a.startedAt
        }
        self.id = id
        self.batch = batch
        self.state = state
        self.backend = backend
        self.lease = lease
        self.attempt = attempt
        self.lostAttempts = lostAttempts
        self.result = result
        self.failure = failure
        self.endedAt = endedAt
    }

    /// Every attempt, the one kept as `boundAt` and `startedAt` included.
    public var attempts: [AttemptRecord] {
        guard history.isEmpty, state == .completed, let boundAt, let backend, let lease else { return history }
        return [
            AttemptRecord(
                attempt: attempt, backend: backend, lease: lease, boundAt: boundAt, startedAt: startedAt, endedAt: endedAt,
                outcome: .completed)
        ]
    }
}

/// A backend as stored: its id, name, the incarnation of its last registration, and whether its
/// link was down when the store last heard of it.
public struct StoredBackend: Hashable, Sendable {
    public var id: BackendID
    public var name: String
    public var incarnation: Incarnation
    public var down: Bool
    /// When its link went down, when the store knows it (a store written before it kept the time
    /// has none: the window then counts from the restart).
    public var downAt: CoreInstant?

    public init(id: BackendID, name: String, incarnation: Incarnation, down: Bool = false, downAt: CoreInstant? = nil) {
        self.id = id
        self.name = name
        self.incarnation = incarnation
        self.down = down
        self.downAt = down ? downAt : nil
    }
}

/// Everything a store holds, read at startup and fed to `Coordinator.restore`.
public struct StoreSnapshot: Hashable, Sendable {
    /// By id, ascending.
    public var batches: [StoredBatch]
    /// Every job of every stored batch, by id, ascending.
    public var jobs: [StoredJob]
    public var backends: [StoredBackend]
    /// How many times the store was opened, this opening included (1 for a new store). Leases
    /// issued after this opening are larger than any issued before it (`epoch << 32`), so a
    /// binding made before a crash and never stored cannot be confused with a new one.
    public var epoch: UInt64

    public init(batches: [StoredBatch] = [], jobs: [StoredJob] = [], backends: [StoredBackend] = [], epoch: UInt64 = 0) {
        self.batches = batches
        self.jobs = jobs
        self.backends = backends
        self.epoch = epoch
    }
}

/// What a store holds after a sequence of changes, kept in memory: the reference semantics every
/// store implements (its tests compare against it), and what the tests restore from.
public struct StoreImage: Hashable, Sendable {
    public private(set) var batches: [BatchID: StoredBatch] = [:]
    public private(set) var jobs: [JobID: StoredJob] = [:]
    public private(set) var backends: [BackendID: StoredBackend] = [:]

    public init() {}

    public mutating func apply(_ change: StoreChange) {
        switch change {
        case .batchAccepted(let b):
            batches[b.id] = b
            var id = b.firstJob.rawValue
            for _ in 0..<b.jobCount {
                jobs[JobID(id)] = StoredJob(id: JobID(id), batch: b.id, state: .queued)
                id += 1
            }
        case .jobBound(let job, let backend, let lease, let attempt, let at):
            jobs[job]?.state = .bound
            jobs[job]?.backend = backend
            jobs[job]?.lease = lease
            jobs[job]?.attempt = attempt
            jobs[job]?.boundAt = at
            jobs[job]?.startedAt = nil
        case .jobStarted(let job, let at):
            if jobs[job]?.state == .bound { jobs[job]?.startedAt = at }
        case .jobRequeued(let job, let attempt, let lost, let history):
            jobs[job]?.state = .queued
            jobs[job]?.backend = nil
            jobs[job]?.lease = nil
            jobs[job]?.attempt = attempt
            jobs[job]?.lostAttempts = lost
            jobs[job]?.history = history
            jobs[job]?.boundAt = nil
            jobs[job]?.startedAt = nil
        case .jobEnded(let j):
            if jobs[j.id] != nil { jobs[j.id] = j }
        case .evicted(let gone, let goneBatches):
            for j in gone { jobs[j] = nil }
            for b in goneBatches { batches[b] = nil }
        case .backendRegistered(let id, let name, let incarnation):
            for (other, b) in backends where b.name == name && other != id { backends[other] = nil }
            backends[id] = StoredBackend(id: id, name: name, incarnation: incarnation)
        case .backendDown(let id, let at):
            backends[id]?.down = true
            backends[id]?.downAt = at
        case .backendForgotten(let id):
            backends[id] = nil
        }
    }

    /// The snapshot a store would return, in its order.
    public func snapshot(epoch: UInt64) -> StoreSnapshot {
        StoreSnapshot(
            batches: batches.values.sorted { $0.id < $1.id }, jobs: jobs.values.sorted { $0.id < $1.id },
            backends: backends.values.sorted { $0.id < $1.id }, epoch: epoch)
    }
}
