import MusterProtocol

/// What a client knows about the jobs of one batch, folded from its `job` events: state, backend,
/// progress, timing, why a job waited and how it failed. Pure: feed it events with ``apply(_:)``.
public struct BatchProgress: Sendable {
    /// One job as seen through its events.
    public struct Job: Sendable, Hashable {
        public var id: JobID
        /// Nil until the first event about it.
        public var state: JobState?
        /// The backend it is bound to, runs on or ran on.
        public var backend: BackendID?
        public var attempt = 0
        /// 0...1 while running, from `progress` events.
        public var progress: Double?
        public var progressMessage: String?
        /// `at_ms` (coordinator clock) of the first event seen, of `started` (or a snapshot's
        /// `started_ms`, for a job that started before it was followed), and of the final event.
        public var firstSeenMs: UInt64?
        public var startedMs: UInt64?
        public var endedMs: UInt64?
        /// `at_ms` of the first event of the current attempt that showed it running (a snapshot or
        /// a `progress` when its `started` was missed, say across a coordinator restart).
        public var runningSeenMs: UInt64?
        /// What the warm-up gate held it for, each distinct wait once, in order.
        public var waits: [Wire.GateWait] = []
        /// Why the gate let it go (`announced`, `window_elapsed`, `idle_backend`, ...).
        public var releaseCause: String?
        /// Why it was requeued, once per requeue (e.g. `backend_lost`).
        public var requeues: [Wire.ErrorBody] = []
        /// The error of `failed` (or of `canceled`, when the coordinator sent one).
        public var error: Wire.ErrorBody?
        public var result: RawJSON?
        /// Final events seen for this job; the protocol promises exactly one.
        public var finalEvents = 0

        public var isFinal: Bool { state?.isFinal ?? false }

        /// Milliseconds from `started` to the end; nil when either was not seen.
        public var durationMs: UInt64? {
            guard let end = endedMs, let start = startedMs else { return nil }
            return end >= start ? end - start : 0
        }

        /// Milliseconds from the first event that showed the current attempt running to the end:
        /// a lower bound on the run time of a job whose `started` was not seen (it was already
        /// running when the client started following it, or it started while the client was
        /// reconnecting).
        public var followedMs: UInt64? {
            guard let end = endedMs, let start = runningSeenMs else { return nil }
            return end >= start ? end - start : 0
        }
    }

    public let batch: BatchID
    /// The batch's job ids in submission order.
    public let order: [JobID]
    public private(set) var jobs: [JobID: Job]

    public init(batch: BatchID, jobs: [JobID]) {
        self.batch = batch
        self.order = jobs
        self.jobs = Dictionary(uniqueKeysWithValues: jobs.map { ($0, Job(id: $0)) })
    }

    /// True when the job has reached a final state (and its final line was shown).
    public func isFinal(_ job: JobID) -> Bool { jobs[job]?.isFinal ?? false }

    /// Folds one event in. Returns false, changing nothing, for events of other batches or jobs.
    @discardableResult
    public mutating func apply(_ e: CoordinatorToClient.JobEvent) -> Bool {
        guard e.batch == batch, var job = jobs[e.job] else { return false }
        defer { jobs[e.job] = job }
        if job.firstSeenMs == nil { job.firstSeenMs = e.atMs }
        if job.isFinal {
            // A job is final once; a later final event (or snapshot) is counted, nothing else.
            if e.state.isFinal, e.event != .snapshot { job.finalEvents += 1 }
            return true
        }
        if e.attempt > job.attempt {
            // A new attempt: what was seen of an earlier one's start says nothing of this one
            // (its `requeued` may have been missed while the client reconnected).
            job.startedMs = nil
            job.runningSeenMs = nil
        }
        job.state = e.state
        job.attempt = max(job.attempt, e.attempt)
        if e.state == .running, job.runningSeenMs == nil { job.runningSeenMs = e.atMs }
        if let backend = e.backend { job.backend = backend }
        if let waiting = e.waiting, !job.waits.contains(waiting) { job.waits.append(waiting) }
        switch e.event {
        case .started:
            job.startedMs = e.atMs
            job.progress = 0
        case .snapshot:
            // A job that started before it was followed: its snapshot says when.
            if let started = e.startedMs { job.startedMs = started }
            if e.state == .running, let p = e.progress { job.progress = p }
        case .progress:
            job.progress = e.progress ?? job.progress
            job.progressMessage = e.message ?? job.progressMessage
        case .released:
            job.releaseCause = e.cause?.rawValue
        case .requeued:
            if let error = e.error { job.requeues.append(error) }
            job.progress = nil
            job.startedMs = nil
            job.runningSeenMs = nil
        case .revoked, .queued:
            job.progress = nil
        default:
            if e.state == .running, let p = e.progress { job.progress = p }
        }
        if e.state.isFinal {
            job.finalEvents += 1
            // A snapshot's `at_ms` is when it was taken; `finished_ms` when the job ended.
            job.endedMs = e.event == .snapshot ? (e.finishedMs ?? e.atMs) : e.atMs
            job.error = e.error
            job.result = e.result
            if e.state == .completed { job.progress = 1 }
        }
        return true
    }

    /// Every job is final.
    public var isDone: Bool { order.allSatisfy { jobs[$0]?.isFinal ?? false } }

    /// Jobs per state; jobs not heard of yet are not counted.
    public var counts: [JobState: Int] {
        var c: [JobState: Int] = [:]
        for job in jobs.values { if let s = job.state { c[s, default: 0] += 1 } }
        return c
    }

    /// The jobs in submission order.
    public var orderedJobs: [Job] { order.compactMap { jobs[$0] } }
}
