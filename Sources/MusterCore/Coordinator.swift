import DequeModule
import HeapModule
import MusterProtocol

/// The coordinator's brain: capability registry, warm-up gate, router and job lifecycle as one
/// deterministic state machine. Every mutating method takes the current instant, changes state and
/// returns the actions the shell must perform. Nothing here reads a clock or does I/O.
///
/// Timer contract: after any call, arm one timer for `nextDeadline` (if any) and feed
/// `handle(.tick, at:)` when it fires. Early or spurious ticks are harmless.
///
/// ```swift
/// var core = Coordinator(policy: policy)
/// perform(core.handle(.backendRegistered(hello), at: now()))       // links, timers, clients
/// let (receipt, actions) = try core.submit(key: key, entries: entries, at: now())
/// perform(actions)
/// rearm(core.nextDeadline)
/// ```
public struct Coordinator: Sendable {
    /// The knobs this coordinator runs with.
    public let policy: CorePolicy
    /// Makes `Coordinator` address-only (an existential's size is not known to the compiler), so
    /// that a non-mutating method called from a mutating one is handed `self`'s address. A
    /// loadable struct of this size (about 1.4 KB) was copied onto the stack for every such call:
    /// dozens per routing decision. A nested function that captures `self` and calls its helpers
    /// still copies it, now in full (every buffer retained): on hot paths, prefer a mutating
    /// method that takes what it needs (`admitsCount`, `AdmitTally`).
    private let passedByAddress: any Sendable = ()
    // Policy durations converted once: Duration arithmetic divides 128-bit attoseconds.
    let retentionNanos: UInt64
    let defaultJobSeconds: Double
    let defaultLoadSeconds: Double
    /// Every announcement joined so far (the semilattice; the routing view is derived from it).
    public internal(set) var registry = CapabilityRegistry()
    /// Running totals.
    public internal(set) var counters = CoreCounters()

    var backends = BackendTable()
    var jobs = JobTable()
    var batches: [BatchID: BatchRecord] = [:]
    var batchKeys: [String: BatchID] = [:]
    var classes: [JobClass] = []
    var classIndex: [ClassKey: Int] = [:]
    /// `classes[c].queue.min` for every class, contiguous so that scanning a backend's classes
    /// touches one small array instead of every class's heap.
    var heads: [QueueEntry] = []
    var estimates = Estimates()
    /// Ready backends per speed, and the largest such speed: a backend at least that fast with
    /// the model loaded cannot be beaten by another one, so its decisions need no comparison.
    var speedCounts: [Double: Int] = [:]
    var maxSpeed = 1.0
    /// Moves on with every change a routing decision reads (an event, a job queued or bound, a
    /// job first left to faster backends): a free backend that found nothing to do is looked at
    /// again only once it moved. Backends that leave jobs to each other (a slower one to a faster
    /// one for one class, the other way round for another) wake each other; without this they
    /// would do so forever within one dispatch.
    var routingEpoch: UInt64 = 0
    var ownerRounds: [OwnerKey: UInt64] = [:]
    var ownerRoundsPruneAt = 1024
    var servedRound: [PriorityKey: UInt64] = [:]
    var queuedByPriority: [PriorityKey: Int] = [:]
    /// Jobs in the queue (all classes).
    var queuedTotal = 0
    /// Models are interned: the per-model totals below are arrays indexed by model id.
    var modelIDs: [String: Int32] = [:]
    /// The models queued jobs needed, most recent first (at most `recentModelsKept`), for
    /// `prefetchModel`.
    var recentModels: [(id: Int32, name: String)] = []
    var queuedByModel: [Int] = []
    var modelLoad: [ModelLoad] = []
    var pinnedModels: Set<String> = []

    var nextJobID: UInt64 = 1
    var nextBatchID: UInt64 = 1
    var nextLease: UInt64 = 1
    /// Leases below this were issued before the last restore: a backend may claim a queued job
    /// it holds under one (`claim`). 0 until a restore: nothing to claim.
    var claimBelow: UInt64 = 0
    var nextSeq: UInt64 = 1
    /// `nextSeq` when a class's duration was last shown for the first time (measured, announced
    /// for its kind, or projected): queue entries with a lower `seq` were ordered before that
    /// (`longestOfBatch` looks at them again; later ones were ordered knowing it).
    var shownAt: UInt64 = 0
    /// The head `passed` of class `c` that `longestOfBatch` passed over for `taken`, a longer job
    /// of its batch, until that one is bound (`takePlace`) or another pick is made.
    var longerFirst: (c: Int, passed: QueueEntry, taken: QueueEntry)?

    /// Backends the gate waits for: not announced for their incarnation, window still open.
    var unknown = BackendSet()
    /// `unknown` in id order, kept with it: what every held job waits for (`job(_:)`, `readiness`).
    var unknownSorted: [BackendID] = []
    var lastGateOpenCause: ReleaseCause = .announced
    /// The last backend whose announcement took it out of `unknown` (named by `released` events).
    var gateOpener: BackendID?
    /// The backend whose announcement is being handled, if any.
    var announcing: BackendID?
    var gateWasClosed = false
    var held: Set<JobID> = []
    /// No job is bound before this instant while the gate is closed (`CorePolicy.gateSettle`).
    var settleUntil = CoreInstant.zero
    /// After a restore, nothing is bound before this instant unless every backend in
    /// `reclaimAwaited` (remote, up when the coordinator stopped) registered again first
    /// (`CorePolicy.reclaimWindow`).
    var reclaimUntil = CoreInstant.zero
    var reclaimAwaited: Set<BackendID> = []
    var heldFeatures: [String: Int] = [:]
    /// Held jobs per job class (`heldByNeed` reads them without walking the held jobs).
    var heldPerClass: [Int: Int] = [:]
    /// Routable backends with a free in-flight slot.
    var free = BackendSet()
    /// Backends whose running slots are busy and that hold bound jobs they have not started.
    var stealable = BackendSet()
    /// Backup runs per job (`Coordinator+Backups.swift`), and the job each backend runs a backup of.
    var backups: [JobID: [BackupRun]] = [:]
    var backupOn: [BackendID: JobID] = [:]
    /// Running jobs whose progress or overrun showed them longer than expected when they started:
    /// the jobs backup runs look at (pruned when looked at).
    var stragglers = Set<JobID>()
    /// Running jobs a speculative backup may copy (`speculativeBackup`): those expected, when they
    /// started, to take at least `shortestSpeedSample` (dropped when unbound). A free backend looks
    /// at these, not at the fleet: with short jobs there are none.
    var copyable = Set<JobID>()
    /// Per estimate class never measured: its jobs that started meanwhile (their overrun watched
    /// against a guess), so that the class's first measurement re-bases what is expected of them
    /// (`rebaseGuessed`). Dropped at that measurement; ended jobs are pruned as the list grows.
    var guessedRunning: [Int: GuessedRunning] = [:]
    /// Set by a backup's `completed` for `completed` to learn after the winner (`outranSample`).
    var outran: (backend: BackendID, estimate: Int, seconds: Double)?
    /// Backends holding a job bound while its model loads (pruned when looked at).
    var loadingModels = BackendSet()
    /// Every announced backend by speed: the victims a free backend may move a running job from.
    var fleetBySpeed = SpeedIndex()
    var readyCount = 0
    var timers = Heap<Timer>()
    /// Finished jobs in the order they ended, with when (so eviction reads no cold record).
    var finished = Deque<(job: JobID, endedAt: CoreInstant)>()
    var lastReadiness: Readiness

    // Scratch state of the event being handled.
    var now = CoreInstant.zero
    var out: [CoreAction] = []
    var dirty = BackendSet()
    var pending: [JobID] = []
    var classesToCheck: Set<Int> = []
    var readinessDirty = false
    /// Reused between dispatch rounds to avoid an allocation per event.
    var scratch = Heap<Candidate>()
    /// The woken backends' candidates of a dispatch round, sorted before they enter the heap.
    var scratchCandidates: [Candidate] = []
    /// The runner-up of the last comparison (`admits`), for the explanation of the binding it
    /// decided: used only when that job is bound to the backend that decided (`by`) at the same
    /// instant. An admission that bound nothing (the load started for a job that waits past the
    /// slot, `loadIfFirst`) left it behind, and a later binding of the job by another path
    /// reported it, stale: a runner-up "sooner" than the choice (an outside scheduling check).
    var runnerUp: (job: JobID, by: BackendID, backend: BackendID, at: Double, decidedAt: CoreInstant)?
    /// Comparisons with other backends the decisions of this `dispatch` may still make (`admits`,
    /// `stealSooner`): `CorePolicy.compareLimit` when it starts, unbounded outside it.
    var compareBudget = Int.max
    /// The first job a free backend left to others in its current turn (`admits`), and the
    /// backend where that job is expected to finish first: `displace` may make room for it there.
    var declined: (by: BackendID, job: JobID, toward: BackendID, at: Double)?
    /// Queued jobs the backend being looked at left to others, whose model it may load as a
    /// hedge if it finds nothing else to do (`noteDeclinedHedge`).
    var declinedHedges: [(c: Int, entry: QueueEntry)] = []

    /// A coordinator with no backends and no jobs.
    public init(policy: CorePolicy = CorePolicy()) {
        self.policy = policy
        retentionNanos = UInt64(max(0, policy.finishedJobRetention.nanoseconds))
        defaultJobSeconds = policy.defaultJobDuration.secondsValue
        defaultLoadSeconds = policy.defaultModelLoadTime.secondsValue
        lastReadiness = Readiness(ready: false, readyBackends: 0, heldJobs: 0, waitingFeatures: [], waitingBackends: [])
    }

    // MARK: - Entry points

    /// Feeds one event; returns what to do.
    public mutating func handle(_ event: CoreEvent, at now: CoreInstant) -> [CoreAction] {
        begin(now)
        switch event {
        case .backendExpected(let id, let name): expect(id, name: name, configured: true)
        case .backendRegistered(let registration): register(registration)
        case .capabilities(let id, let snapshot): announce(id, snapshot)
        case .linkLost(let id): linkLost(id)
        case .backendLeft(let id): backendLeft(id)
        case .linkRestored(let id): linkRestored(id)
        case .jobStarted(let job, let backend, let lease): started(job, backend, lease)
        case .jobProgress(let job, let backend, let lease, let fraction, let message, let timed):
            progress(job, backend, lease, fraction, message, timed: timed)
        case .jobCompleted(let job, let backend, let lease, let result): completed(job, backend, lease, result)
        case .jobFailed(let job, let backend, let lease, let code, let message, let retryable):
            failedOnBackend(job, backend, lease, JobFailure(code: code, message: message), retryable: retryable)
        case .modelLoadFailed(let id, let model): loadFailed(id, model)
        case .drain(let id): drain(id)
        case .backendRemoved(let id): remove(id)
        case .tick: fireTimers()
        }
        return finish()
    }

    /// Submits a batch. The same `key` with the same entries again returns the first receipt and
    /// creates nothing; the same `key` with other entries is `batch_key_conflict`. A key is
    /// remembered as long as its batch is (until every job of it is evicted from the finished-job
    /// store); after that the key is free and makes a new batch.
    /// `owner` is who the batch belongs to (nil: the first entry's owner); a retry under the same
    /// key by another owner is a conflict, like one with other entries.
    public mutating func submit(
        key: String?, entries: [BatchEntry], owner: String? = nil, at now: CoreInstant
    ) throws(CoreError) -> (receipt: SubmitReceipt, actions: [CoreAction]) {
        let owner = owner ?? entries.first?.spec.owner ?? ""
        if let key, let batch = batchKeys[key], let record = batches[batch] {
            guard record.entries == entries, record.owner == owner else {
                throw CoreError(
                    .batchKeyConflict,
                    "batch_key '\(key)' was used for a different batch (\(batch)); use a new key for new work",
                    details: RawJSON(unchecked: #"{"batch":\#(batch.rawValue)}"#))
            }
            return (SubmitReceipt(batch: batch, jobs: record.jobs, duplicate: true), [])
        }
        try validate(entries)
        begin(now)
        let batch = BatchID(nextBatchID)
        nextBatchID += 1
        if policy.persistChanges {
            // First: the bindings that follow in this event refer to these jobs.
            out.append(
                .persist(
                    .batchAccepted(
                        StoredBatch(
                            id: batch, key: key, owner: owner, entries: entries, firstJob: JobID(nextJobID),
                            submittedAt: now))))
        }
        var ids: [JobID] = []
        ids.reserveCapacity(entries.reduce(0) { $0 + $1.count })
        let classOf = entries.map { indexes(for: $0.spec) }
        // Job ids follow the entries; rounds and sequence numbers follow `queueOrder` (the
        // longest expected jobs of the batch first), taken here when it is not the list order.
        var order: [(round: UInt64, seq: UInt64)] = []
        if let reordered = queueOrder(classOf) {
            var first = [Int](repeating: 0, count: entries.count)
            var total = 0
            for (i, entry) in entries.enumerated() {
                first[i] = total
                total += entry.count
            }
            order = Array(repeating: (0, 0), count: total)
            for i in reordered {
                let spec = entries[i].spec
                for k in 0..<entries[i].count {
                    order[first[i] + k] = (assignRound(owner: spec.owner, priority: spec.priority), takeSeq())
                }
            }
        }
        for (i, entry) in entries.enumerated() {
            let (c, e) = classOf[i]
            for _ in 0..<entry.count {
                let id = JobID(nextJobID)
                let (round, seq) =
                    order.isEmpty
                    ? (assignRound(owner: entry.spec.owner, priority: entry.spec.priority), takeSeq())
                    : order[ids.count]
                nextJobID += 1
                ids.append(id)
                jobs.insert(
                    JobRecord(
                        id: id, batch: batch, spec: entry.spec, state: .queued, backend: nil, lease: nil,
                        attempt: 0, progress: 0, progressMessage: nil, history: [], result: nil, failure: nil, waitReason: nil,
                        submittedAt: now, endedAt: nil, classIndex: c, estimateIndex: e, round: round, seq: seq,
                        enqueuedAt: now))
                counters.submitted += 1
                enqueue(id, event: .queued)
            }
        }
        batches[batch] = BatchRecord(
            id: batch, key: key, owner: owner, jobs: ids, submittedAt: now, live: ids.count, entries: key == nil ? [] : entries)
        if let key { batchKeys[key] = batch }
        return (SubmitReceipt(batch: batch, jobs: ids, duplicate: false), finish())
    }

    /// Cancels a job in any state. A queued or gated job ends `canceled` at once; a bound or
    /// running one is told to stop on its backend (`.cancel`) and is `canceling`: it keeps its
    /// slot and ends `canceled` when the backend reports the attempt ended, the link is lost, or
    /// `cancelGrace` passes. Canceling a finished or canceling job changes nothing.
    public mutating func cancelJob(_ id: JobID, at now: CoreInstant) throws(CoreError) -> [CoreAction] {
        guard jobs.contains(id) else {
            throw CoreError(.unknownJob, "no job \(id) (finished jobs are kept only for a while)")
        }
        begin(now)
        cancel(id)
        return finish()
    }

    /// Cancels every job of a batch that has not finished.
    public mutating func cancelBatch(_ id: BatchID, at now: CoreInstant) throws(CoreError) -> [CoreAction] {
        guard let batch = batches[id] else { throw CoreError(.unknownBatch, "no batch \(id)") }
        begin(now)
        for job in batch.jobs { cancel(job) }
        return finish()
    }

    /// Load-model-now: every eligible backend (ready, link up, model available, not loaded) loads
    /// `model` at once; without `backend` the model is remembered so backends that announce later
    /// load it too. With `backend`, only that backend is asked.
    public mutating func loadModelNow(
        _ model: String, backend: BackendID? = nil, at now: CoreInstant
    ) throws(CoreError) -> [CoreAction] {
        if let backend {
            guard let b = backends.get(backend) else { throw CoreError(.unknownBackend, "no backend \(backend)") }
            guard b.available.contains(model) || b.loaded.contains(model) else {
                throw CoreError(.noEligibleBackend, "backend \(backend) (\(b.name)) does not have model \(model)")
            }
            begin(now)
            requestLoad(backend, model, force: true, .client)
            return finish()
        }
        begin(now)
        pinnedModels.insert(model)
        // This model only: a request for one model is not the moment to ask again for another
        // remembered one (a backend whose load of it failed would be sent that one instead).
        for id in backends.ids.sorted() { requestPinned(id, only: model) }
        return finish()
    }

    /// The earliest instant at which `tick` has something to do, if any.
    public var nextDeadline: CoreInstant? { timers.min?.at }

    // MARK: - Event plumbing

    mutating func begin(_ now: CoreInstant) {
        precondition(out.isEmpty, "actions of the previous event were not taken")
        // The clock never goes backwards for the core, whatever the shell does.
        self.now = max(self.now, now)
        gateWasClosed = gateClosed
        announcing = nil
        routingEpoch &+= 1
        // A completion that binds the next job emits about six actions: one allocation instead
        // of a buffer regrown (and copied) three times.
        out.reserveCapacity(6)
    }

    mutating func finish() -> [CoreAction] {
        settle()
        // Hand the buffer over; the next event starts a fresh one.
        let actions = out
        out = []
        return actions
    }

    var gateClosed: Bool { !unknown.isEmpty }

    mutating func takeSeq() -> UInt64 {
        defer { nextSeq += 1 }
        return nextSeq
    }

    /// Emits a job event; `backend` names another backend than the job's own (the one it was
    /// lost on, taken from, or released by).
    mutating func emit(_ job: JobRecord, _ kind: JobEvent.Kind, backend: BackendID? = nil, placement: Placement? = nil) {
        out.append(
            .jobEvent(
                JobEvent(
                    job: job.id, batch: job.batch, owner: job.spec.owner, kind: kind, state: job.state,
                    backend: backend ?? job.backend, lease: job.lease, attempt: job.attempt, at: now, placement: placement)))
    }

    /// The job class (routing queue) and the duration estimate slot of jobs with this spec.
    mutating func indexes(for spec: JobSpec) -> (jobClass: Int, estimate: Int) {
        let c = classFor(spec)
        let e = estimates.index(
            kind: spec.kind, model: spec.model, nodes: spec.nodes, prior: policy.jobDurationPriors[spec.kind]?.secondsValue,
            fallback: defaultJobSeconds)
        return (c, e)
    }

    /// The order in which a batch's entries join the queue (their rounds and sequence numbers; job
    /// ids keep the list order), or nil for list order. Under expected completion: the jobs
    /// expected to take longest first (their duration at speed 1.0, plus the model load when no
    /// capable backend has the model loaded), then those fewer ready backends can run without
    /// loading a model first, then those fewer ready backends can run at all (small-fleet seed 15:
    /// a `flux` image went before a video on the only backend with `video`, which alone had `flux`
    /// loaded, though others could load it), then those that name a model before those that name
    /// none, then list order. Longest first shortens the batch's makespan (a long job started last ends last),
    /// and the most constrained first keeps the backends only it can use for it. Under least
    /// loaded: list order. `indexes`: each entry's class and estimate (`indexes(for:)`).
    func queueOrder(_ indexes: [(jobClass: Int, estimate: Int)]) -> [Int]? {
        guard policy.routing == .expectedCompletion, indexes.count > 1 else { return nil }
        let seconds = indexes.map { (c, e) in
            let m = classes[c].modelID
            return estimates.seconds(e) + (m >= 0 && classes[c].loadedCapable == 0 ? fleetLoadSeconds(m) : 0)
        }
        // How many ready backends can run a class without loading anything first: those with
        // its model loaded, when any has it; else every capable one.
        let options = indexes.map { (c, _) in
            classes[c].modelID >= 0 && classes[c].loadedCapable > 0 ? classes[c].loadedCapable : classes[c].capable.count
        }
        let capable = indexes.map { (c, _) in classes[c].capable.count }
        let namesModel = indexes.map { (c, _) in classes[c].modelID >= 0 }
        // The comparison reads only these arrays: one that reads `self` copies the whole
        // coordinator (every buffer retained) at each comparison.
        let order = indexes.indices.sorted {
            if seconds[$0] != seconds[$1] { return seconds[$0] > seconds[$1] }
            let a = options[$0], b = options[$1]
            if a != b { return a < b }
            if capable[$0] != capable[$1] { return capable[$0] < capable[$1] }
            // A job naming no model runs on every backend with its features, whatever is loaded
            // there, now and on backends not yet announced: it has at least the options.
            let ma = namesModel[$0], mb = namesModel[$1]
            return ma != mb ? ma : $0 < $1
        }
        return order.elementsEqual(indexes.indices) ? nil : order
    }

    mutating func modelID(_ name: String) -> Int32 {
        if let id = modelIDs[name] { return id }
        let id = Int32(modelLoad.count)
        modelIDs[name] = id
        modelLoad.append(ModelLoad())
        queuedByModel.append(0)
        estimates.loadSeconds.append(nil)
        return id
    }

    mutating func schedule(_ at: CoreInstant, _ kind: Timer.Kind) {
        timers.insert(Timer(at: at, seq: takeSeq(), kind: kind))
    }
}

// MARK: - Internal records

struct ClassKey: Hashable {
    var needs: [String]
    var model: String?
    /// Node classes of the jobs' workflow (empty for jobs without one).
    var nodes: [String] = []
}

/// Jobs with the same needs and model: one queue, one set of capable backends.
struct JobClass {
    var needs: [String]
    var model: String?
    /// Node classes every capable backend must have (a workflow's `class_type`s).
    var nodes: [String] = []
    /// Interned `model`, or -1.
    var modelID: Int32 = -1
    var queue = Heap<QueueEntry>()
    /// Valid entries in `queue` (canceled jobs are removed lazily).
    var queued = 0
    /// Entries in `queue` whose job already left it.
    var dead = 0
    /// Capable backends with `model` loaded.
    var loadedCapable = 0
    /// Free backends that left this class's head job to a backend expected to finish it sooner;
    /// they look again when a job of the class is bound or the wait bound passes.
    var decliners: [BackendID] = []
    /// The wait-bound timer already armed for this class, if any.
    var waitTimerAt: CoreInstant?
    /// Backends announced ready with these features and the model, link not down, not draining.
    var capable = BackendMembership()
    /// `capable` by speed (each member under its current `speed`).
    var bySpeed = BandIndex()
}

struct QueueEntry: Comparable {
    var negPriority: Int
    var round: UInt64
    var seq: UInt64
    var job: JobID
    /// The job's duration estimate slot, so the affinity rule needs no job lookup.
    var estimate: Int32
    static func < (a: QueueEntry, b: QueueEntry) -> Bool {
        (a.negPriority, a.round, a.seq) < (b.negPriority, b.round, b.seq)
    }
    static func == (a: QueueEntry, b: QueueEntry) -> Bool { a.seq == b.seq && a.job == b.job }
    /// Stands for an empty queue; orders after every real entry.
    static let empty = QueueEntry(negPriority: .max, round: .max, seq: .max, job: JobID(0), estimate: 0)
    var isEmpty: Bool { seq == .max }
}

struct OwnerKey: Hashable {
    var owner: String
    var priority: Int
}

struct ModelLoad {
    var slots = 0
    var inFlight = 0
}

struct Timer: Comparable {
    enum Kind {
        case gateWindow(BackendID)
        case suspect(BackendID)
        /// A down backend reaches `CorePolicy.forgetDownAfter` (if it stayed down since).
        case forget(BackendID)
        case sync(BackendID)
        case inhibit(BackendID)
        case retention
        /// A job of this class was left waiting for a faster backend: let slower ones reconsider.
        case routeWait(Int)
        /// The cancel grace of a canceling job.
        case cancelGrace(JobID)
        /// A running job of a class never measured reaches its expected end.
        case overrun(JobID, Lease)
        /// A free backend found a bound job it would not yet finish sooner than the backend
        /// holding it, behind a running job there: it looks again once that job is expected to
        /// end (if it still runs then, it overran, and the job may be worth taking).
        case relook(BackendID)
        /// The pause after a backend announced `ready` while jobs were held ended
        /// (`CorePolicy.gateSettle`).
        case settled
        /// The pause after a restore for backends to claim their jobs ended
        /// (`CorePolicy.reclaimWindow`).
        case reclaimed
    }
    var at: CoreInstant
    var seq: UInt64
    var kind: Kind
    static func < (a: Timer, b: Timer) -> Bool { (a.at, a.seq) < (b.at, b.seq) }
    static func == (a: Timer, b: Timer) -> Bool { a.at == b.at && a.seq == b.seq }
}

/// A model load a backend was asked for: when (its load time is measured from then) and why.
struct LoadRequest: Sendable {
    var at: CoreInstant
    var reason: LoadReason
    /// A hedge for a job waiting behind others or in the queue (`hedgeLoad(_:behind:)`,
    /// `hedgeDeclinedLoad`), not for a load another backend waits on.
    var behind = false

    /// Asked for a job that runs or waits for its model on another backend (a hedge for a load,
    /// or a backup's model): the backend is to take that job once loaded. A hedge for a job
    /// behind others may never pay (the job may start first), and copies do not wait for it.
    var forAnother: Bool { (reason == .hedge && !behind) || reason == .backup }
}

struct Backend {
    var id: BackendID
    var name: String
    var priority: Int
    var link: LinkState
    var incarnation: Incarnation?
    var helloSlots: Int
    var registeredAt: CoreInstant
    var firstAnnouncedAt: CoreInstant?
    /// Whether this incarnation's first `ready` announcement was observed (propagation time).
    var propagated = false
    var lastSeen: CoreInstant?
    /// The newest announcement of the current incarnation.
    var snapshot: CapabilitySnapshot?
    var features: Set<String> = []
    var available: Set<String> = []
    var loaded: Set<String> = []
    /// Node classes of the current snapshot.
    var nodes: Set<String> = []
    /// Jobs bound here, in binding order.
    var jobs: [JobID] = []
    /// Per entry of `jobs`: its estimate class, the earliest it can start (its model loaded; core
    /// seconds) and when it started (-1: not yet), for expected completion times.
    var jobEstimate: [Int32] = []
    var jobReadyAt: [Double] = []
    var jobStartedAt: [Double] = []
    /// When its running jobs' progress says they end (`projectFromProgress`); empty unless its
    /// jobs report `timed` progress, so the hot paths pay one test.
    var projectedEnds: [JobID: Double] = [:]
    /// Speed relative to 1.0 from the configuration, and as learned from this backend's measured
    /// jobs against the fleet's estimates (nil until one was measured); the announced one is in
    /// `snapshot`.
    var configuredSpeed: Double?
    var learnedSpeed: Double?
    /// Before any of its jobs was measured and when nothing configured or announced its speed:
    /// the speed its jobs' progress showed against what other backends did (`projectFromProgress`).
    var projectedSpeed: Double?
    /// The speed its estimates use (quantised to 1%, so equal backends compare equal).
    var speed = 1.0
    /// The band it is filed under in its classes' `bySpeed` (`SpeedBand.next`; 1.0's band).
    var band = 0
    /// The speed counted in `speedCounts` while `counted`.
    var countedSpeed = 1.0
    /// When each model this backend was asked to load became loaded (to measure durations
    /// without the wait for the model).
    var modelReadyAt: [String: CoreInstant] = [:]
    /// Moving average of this backend's measured model loads, in seconds.
    var loadSeconds: Double?
    /// Configured model load time (seconds), used until `loadSeconds` is measured.
    var configuredLoadSeconds: Double?
    /// The speed its announced `job_seconds` show against the kinds' announced durations, when
    /// it has no configured or announced speed.
    var durationSpeed: Double?
    /// Its load time before it measured one: configured, else announced (`model_load_seconds`,
    /// kept with each snapshot so that routing does not reach into the snapshot).
    var loadPrior: Double?
    var running = 0
    var drainRequested = false
    var inhibitedUntil = CoreInstant.zero
    var suspectUntil: CoreInstant?
    /// Since when its link is down (or expected after a restart without connecting), for
    /// `CorePolicy.forgetDownAfter`; nil while up or suspect.
    var downSince: CoreInstant?
    /// The pending `relook` timer's instant, if any (one at a time), the delay it was armed
    /// with, and the delay of the last one that fired: each look again that finds nothing
    /// doubles the next one, until the backend gets a job.
    var relookAt: CoreInstant?
    var relookArmed = 0.0
    var relookDelay = 0.0
    /// Its link was lost (no `goodbye`) before it announced: it may be restarting, so the gate
    /// still waits for it until its window ends. Cleared when it links again.
    var lostWhileUnannounced = false
    /// Named by the configuration (`backendExpected`): never forgotten.
    var configured = false
    /// A `.forget` timer is pending for it: one at a time, however often it falls.
    var forgetArmed = false
    var classes: [Int] = []
    /// Whether `classes` was last computed for a backend that could take work (`capable`): with
    /// that, `features`, `available` and `nodes` it decides the membership, so an announcement
    /// that changes none of them (a model loaded, slots, state between loading and ready while
    /// not capable) keeps it without looking at every class.
    var indexedCapable = false
    /// The subset of `classes` whose model this backend has loaded.
    var loadedClasses: [Int] = []
    /// Models this backend was asked to prefetch (interned ids): each at most once.
    var prefetched: [Int32] = []
    /// Models this backend was asked to load (interned ids), when (to measure load times) and why.
    var loadRequested: [Int32: LoadRequest] = [:]
    var nextSync: CoreInstant?
    /// Whether this backend currently counts as ready (for readiness and model load totals).
    var counted = false
    var countedModels: [Int32] = []
    /// Ids of the loaded models (a few; a linear search beats hashing).
    var loadedIDs: [Int32] = []
    /// `max(1, slots)` of the current snapshot or hello; kept stored for the hot path.
    var cachedSlots = 1
    /// Link up, announced ready, not draining (inhibition is checked against the clock).
    var takesWork = false
    /// Membership in `free` and `stealable`, kept in step with those sets.
    var inFree = false
    /// The `routingEpoch` at which this free backend last found nothing to take or steal.
    var idleEpoch: UInt64 = .max
    var inStealable = false
    /// Member of `Coordinator.fleetBySpeed` (under `speed`).
    var inFleetBySpeed = false
    var countedSlots = 0
    /// Whether `countedSpeed` is in `speedCounts`.
    var speedCounted = false

    var isLocal: Bool { id.isLocal }
    var slots: Int { cachedSlots }
    var announcedReady: Bool { snapshot?.state == .ready }
    var capable: Bool { Self.capable(announcedReady, link, drainRequested) }

    /// `capable` from its three fields (read one by one where copying the record would cost).
    static func capable(_ announcedReady: Bool, _ link: LinkState, _ drainRequested: Bool) -> Bool {
        announcedReady && (link == .up || link == .suspect) && !drainRequested
    }
    func routable(_ now: CoreInstant) -> Bool { takesWork && inhibitedUntil <= now }
    /// Unknown for capability purposes: no final announcement for this incarnation yet.
    var unannounced: Bool {
        guard let snapshot else { return true }
        return snapshot.state == .starting || snapshot.state == .loading
    }
}

/// Moving averages of job durations per (kind, model) and load times per model, in seconds.
struct Estimates {
    var keys: [ClassEstimateKey: Int] = [:]
    /// Measured seconds at speed 1.0 (each sample times the speed of the backend that ran it).
    var jobSeconds: [Double?] = []
    /// What to expect before any measurement: the kind's configured prior or the default.
    var priorSeconds: [Double] = []
    /// Whether `priorSeconds` was configured (then it is a reference for learning speeds).
    var priorConfigured: [Bool] = []
    /// Which backends the class's measurements come from: a backend's samples against its own
    /// earlier ones (a cold first run, say) say nothing about its speed relative to others.
    var measuredBy: [Sources] = []
    /// Before the class is measured: how long its running jobs showed it takes (their progress,
    /// or an overrun of the estimate), at speed 1.0. Beats the prior.
    var projectedSeconds: [Double?] = []
    /// Like `measuredBy`, for the projections.
    var projectedBy: [Sources] = []
    /// The kind of each class (an index into `kindSeconds`).
    var kindOf: [Int] = []
    var kinds: [String: Int] = [:]
    /// Per kind: what its classes measured (a moving average over every model), else what
    /// their jobs projected. A class never measured nor projected whose kind has no configured
    /// prior expects this (a model changes a kind's duration less than not knowing the kind).
    var kindSeconds: [Double?] = []
    var kindMeasured: [Bool] = []
    /// Per kind: what the first backend announcing it said a job takes (`job_seconds`), at
    /// speed 1.0 (`Coordinator.announceKindSeconds`).
    var announcedKind: [Double?] = []
    /// Like `measuredBy`, for what `kindSeconds` was made of.
    var kindBy: [Sources] = []
    var classKeys: [ClassEstimateKey] = []
    /// By model id.
    var loadSeconds: [Double?] = []

    /// A duration class: the kind, the model and, for a workflow, its node classes (sorted). Two
    /// workflows of one kind that run different nodes take different times: in one class, a
    /// backend that ran only a slow graph was measured 25 times slower than one that ran only a
    /// fast one, and was left idle (`Scripts/test-comfyui`: `slow.json` and `core.json`).
    struct ClassEstimateKey: Hashable {
        var kind: String
        var model: String?
        var nodes: [String] = []
    }

    mutating func index(kind: String, model: String?, nodes: [String] = [], prior: Double?, fallback: Double) -> Int {
        let key = ClassEstimateKey(kind: kind, model: model, nodes: nodes)
        if let i = keys[key] { return i }
        jobSeconds.append(nil)
        priorSeconds.append(prior ?? fallback)
        priorConfigured.append(prior != nil)
        measuredBy.append(Sources())
        projectedSeconds.append(nil)
        projectedBy.append(Sources())
        let k = kindIndex(kind)
        kindOf.append(k)
        classKeys.append(key)
        keys[key] = jobSeconds.count - 1
        return jobSeconds.count - 1
    }

    /// The index of a kind in `kindSeconds`, `announcedKind` and the rest, added when new.
    mutating func kindIndex(_ kind: String) -> Int {
        if let known = kinds[kind] { return known }
        let k = kindSeconds.count
        kinds[kind] = k
        kindSeconds.append(nil)
        kindMeasured.append(false)
        kindBy.append(Sources())
        announcedKind.append(nil)
        return k
    }

    /// Expected seconds of a job of class `e` at speed 1.0: measured, else projected by its
    /// running jobs, else the kind's configured prior, else what other classes of the kind
    /// measured, else what backends announced for the kind, else what other classes of the kind
    /// projected, else the default.
    func seconds(_ e: Int) -> Double {
        if let measured = jobSeconds[e] { return measured }
        if let projected = projectedSeconds[e] { return projected }
        if priorConfigured[e] { return priorSeconds[e] }
        let k = kindOf[e]
        if kindMeasured[k], let kind = kindSeconds[k] { return kind }
        if let announced = announcedKind[k] { return announced }
        return kindSeconds[k] ?? priorSeconds[e]
    }

    /// Whether the class's duration is known rather than guessed: measured, configured, or
    /// measured or announced for its kind.
    func known(_ e: Int) -> Bool {
        let k = kindOf[e]
        return jobSeconds[e] != nil || priorConfigured[e] || kindMeasured[k] || announcedKind[k] != nil
    }

    /// Whether the class's duration is known (`known`) or was shown by progress or an overrun
    /// of its running jobs (`projectedSeconds`): not a guess.
    func shown(_ e: Int) -> Bool { projectedSeconds[e] != nil || known(e) }

    /// A measured duration (at speed 1.0) of a class: the kind's estimate follows.
    mutating func measuredKind(_ e: Int, _ seconds: Double, _ alpha: Double, by backend: BackendID) {
        let k = kindOf[e]
        kindBy[k].note(backend)
        kindSeconds[k] = kindMeasured[k] ? Self.blend(kindSeconds[k], seconds, alpha) : seconds
        kindMeasured[k] = true
    }

    /// What other backends than `backend` showed a job of class `e` takes at speed 1.0: their
    /// measurements, else the configured prior, else their projections, else what they showed
    /// for the kind (`kindReference`). A backend's speed is learned against this, never against
    /// its own samples alone.
    func reference(_ e: Int, excluding backend: BackendID) -> Double? {
        if let measured = jobSeconds[e] {
            return measuredBy[e].include(otherThan: backend) ? measured : nil
        }
        if priorConfigured[e] { return priorSeconds[e] }
        if let announced = announcedKind[kindOf[e]] { return announced }
        if let projected = projectedSeconds[e], projectedBy[e].include(otherThan: backend) {
            return projected
        }
        return kindReference(e, excluding: backend)
    }

    /// What other backends than `backend` showed the kind of class `e` takes at speed 1.0 (its
    /// other models): the reference of a class nothing else says anything about. None for a
    /// workflow's class: a graph that runs other nodes says nothing of this one's length (a
    /// backend that ran only `slow.json` was measured against `core.json` and taken for 25 times
    /// slower).
    func kindReference(_ e: Int, excluding backend: BackendID) -> Double? {
        guard classKeys[e].nodes.isEmpty else { return nil }
        let k = kindOf[e]
        guard let kind = kindSeconds[k], kindBy[k].include(otherThan: backend) else { return nil }
        return kind
    }

    /// The backends some samples came from: one (`sole`) until a second one adds some, then many.
    struct Sources {
        var sole: BackendID?
        var many = false

        mutating func note(_ backend: BackendID) {
            if sole == nil, !many {
                sole = backend
            } else if sole != backend {
                many = true
                sole = nil
            }
        }

        /// The one backend that contributed, if only one did.
        var soleSource: BackendID? { many ? nil : sole }

        /// Whether a backend other than `backend` contributed.
        func include(otherThan backend: BackendID) -> Bool { many || (sole.map { $0 != backend } ?? false) }
    }

    /// A job of class `e` on `backend` is projected to take `seconds` at speed 1.0: the first
    /// projection replaces the class's estimate, later ones are averaged in (`alpha` 1: the
    /// newest replaces it, as an overrun's floor does).
    mutating func project(_ e: Int, _ seconds: Double, by backend: BackendID, _ alpha: Double) {
        projectedBy[e].note(backend)
        let projected = Self.blend(projectedSeconds[e], seconds, alpha)
        projectedSeconds[e] = projected
        // Until the kind is measured, its other classes expect what this one projects.
        if !kindMeasured[kindOf[e]] {
            kindSeconds[kindOf[e]] = projected
            kindBy[kindOf[e]].note(backend)
        }
    }

    static func blend(_ old: Double?, _ sample: Double, _ alpha: Double) -> Double {
        guard let old else { return sample }
        return old + alpha * (sample - old)
    }
}
