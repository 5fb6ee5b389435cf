import MusterProtocol

/// The state of the coordinator's link to a backend.
/// Not `Wire.LinkState`: the gate must tell a configured backend that never connected
/// (`expected`, "not_connected") from one that left (`down`); the wire shows both as `down`.
public enum LinkState: String, Hashable, Sendable, CaseIterable {
    /// Listed in the configuration but never connected.
    case expected
    /// Connected.
    case up
    /// The link dropped less than the suspect grace ago: capabilities kept, no new work.
    case suspect
    /// The grace ended (or the backend was told to go); its jobs were requeued.
    case down

    /// As `GET /v1/backends` and `status_report` show it.
    public var wire: Wire.LinkState {
        switch self {
        case .up: .up
        case .suspect: .suspect
        case .down, .expected: .down
        }
    }
}

/// What a backend says when it registers (its hello), plus configuration the server knows.
public struct BackendRegistration: Hashable, Sendable {
    public var id: BackendID
    public var name: String
    public var incarnation: Incarnation
    /// Running slots until the first announcement says otherwise.
    public var slots: Int
    /// Configured priority: higher wins among equally loaded backends.
    public var priority: Int
    /// Configured speed relative to 1.0 (2.0: jobs take half as long), the prior for this
    /// backend's estimates until it announces a speed or its jobs are measured.
    public var speed: Double?
    /// Configured seconds this backend needs to load a model, the prior for its load estimates
    /// until it has loaded one (before that the fleet's measured loads of the model, else
    /// `CorePolicy.defaultModelLoadTime`, are used).
    public var modelLoadSeconds: Double?
    /// The jobs the backend process says it holds (`hello.jobs`): after a restart, one whose
    /// binding the store never got is bound to it again under its lease (`Coordinator.claim`).
    public var holding: [Wire.HeldJob]

    public init(
        id: BackendID, name: String, incarnation: Incarnation, slots: Int = 1, priority: Int = 0, speed: Double? = nil,
        modelLoadSeconds: Double? = nil, holding: [Wire.HeldJob] = []
    ) {
        self.id = id
        self.name = name
        self.incarnation = incarnation
        self.slots = slots
        self.priority = priority
        self.speed = speed
        self.modelLoadSeconds = modelLoadSeconds
        self.holding = holding
    }
}

/// One entry of a submission: `count` jobs with the same spec.
public struct BatchEntry: Hashable, Sendable {
    public var spec: JobSpec
    public var count: Int
    public init(spec: JobSpec, count: Int = 1) {
        self.spec = spec
        self.count = count
    }
}

/// The answer to a submission.
public struct SubmitReceipt: Hashable, Sendable {
    public var batch: BatchID
    public var jobs: [JobID]
    /// True when the batch key was seen before and nothing new was created.
    public var duplicate: Bool
}

/// A refused command: a code from the shared vocabulary and a message a person can act on.
public struct CoreError: Error, Hashable, Sendable, CustomStringConvertible {
    public var code: ErrorCode
    public var message: String
    /// Code-specific structured data, e.g. `{"batch": 12}` for `batch_key_conflict`.
    public var details: RawJSON?
    public init(_ code: ErrorCode, _ message: String, details: RawJSON? = nil) {
        self.code = code
        self.message = message
        self.details = details
    }
    public var description: String { "\(code): \(message)" }
}

/// Why one backend could not take a job; part of a `no_eligible_backend` failure.
public struct BackendRefusal: Hashable, Sendable {
    public var backend: BackendID
    public var name: String
    /// Why, for people: "missing features frameinterps", "announced loading", ...
    public var reason: String
    /// Why, as the wire's reason tokens (Protocol/README.md section 5): `not_connected`,
    /// `link_down`, `link_suspect`, `not_announced`, `starting`, `loading`, `draining`,
    /// `missing_features`, `missing_model`, `inhibited`.
    public var reasons: [String]
    /// With `missing_features`: which of the job's features this backend lacks.
    public var missingFeatures: [String]
    /// With `missing_nodes`: which of the job's workflow node classes this backend lacks.
    public var missingNodes: [String]

    public init(
        backend: BackendID, name: String, reason: String, reasons: [String] = [], missingFeatures: [String] = [],
        missingNodes: [String] = []
    ) {
        self.backend = backend
        self.name = name
        self.reason = reason
        self.reasons = reasons
        self.missingFeatures = missingFeatures
        self.missingNodes = missingNodes
    }
}

/// Why a job ended in `failed`, or why one attempt ended (a backend's own failure code, or
/// `backend_lost`). Decided once, when it happens: the details never change afterwards.
public struct JobFailure: Hashable, Sendable {
    public var code: ErrorCode
    public var message: String
    /// For `no_eligible_backend`: every backend considered and why it was refused.
    public var refusals: [BackendRefusal]
    /// For `no_eligible_backend`: needed features no ready backend announced at that moment.
    public var missingFeatures: [String]
    /// For `no_eligible_backend`: the job's model, when no ready backend offered it.
    public var missingModel: String?
    /// For `no_eligible_backend`: workflow node classes no ready backend announced at that moment.
    public var missingNodes: [String]
    /// For `attempts_exhausted`: the job's attempts, every one of them ended.
    public var attempts: [AttemptRecord]
    public init(
        code: ErrorCode, message: String, refusals: [BackendRefusal] = [], missingFeatures: [String] = [],
        missingModel: String? = nil, missingNodes: [String] = [], attempts: [AttemptRecord] = []
    ) {
        self.code = code
        self.message = message
        self.refusals = refusals
        self.missingFeatures = missingFeatures
        self.missingModel = missingModel
        self.missingNodes = missingNodes
        self.attempts = attempts
    }
}

/// Why a job is held by the warm-up gate.
public struct WaitReason: Hashable, Sendable {
    /// The features the job needs.
    public var features: [String]
    /// The model the job needs, if any.
    public var model: String?
    /// The backends that have not announced yet and might turn out eligible.
    public var backends: [BackendID]
    /// True when no ready backend can run the job at all yet (rather than none being free).
    public var noReadyBackend: Bool

    public init(features: [String], model: String?, backends: [BackendID], noReadyBackend: Bool) {
        self.features = features
        self.model = model
        self.backends = backends
        self.noReadyBackend = noReadyBackend
    }
}

/// Why a job went back to the queue; the raw values label metrics.
public enum RequeueCause: String, Hashable, Sendable {
    /// The link stayed down longer than the suspect grace.
    case linkLost = "link_lost"
    /// The backend came back with a new incarnation: its old leases died.
    case backendRestarted = "backend_restarted"
    /// The backend was removed.
    case backendRemoved = "backend_removed"
    /// The backend reported a retryable failure.
    case backendFailed = "backend_failed"
}

/// A job event for clients and metrics.
/// Not the wire's `CoordinatorToClient.JobEvent`: it carries the `owner` and `lease`, which the wire
/// does not show, and the failure and wait reason as the core decided them, before the shell adds
/// backend names and milliseconds.
public struct JobEvent: Hashable, Sendable {
    /// What happened; every state transition has one.
    public enum Kind: Hashable, Sendable {
        /// A new job entered the queue (its first event).
        case queued
        case gated(WaitReason)
        /// `backend`: the backend whose announcement opened the gate (`announced`) or the idle
        /// backend that takes the job (`idle_backend`).
        case released(ReleaseCause)
        /// `attempt` is the new attempt number.
        case bound
        case started
        /// The fraction (0...1) and the backend's text, if it sent one.
        case progress(Double, message: String?)
        /// Back in the queue: `backend` is where it was lost, `attempt` the attempt that ended,
        /// `error` the backend's own failure or `backend_lost` / `backend_restarted`.
        case requeued(RequeueCause, error: JobFailure)
        /// Taken back from `backend` by work stealing; `attempt` is the attempt that ended.
        case revoked
        case completed(RawJSON)
        case failed(JobFailure)
        /// A client canceled the job while its backend holds it: the backend was told to stop,
        /// keeps the slot until it confirms, and `canceled` follows (the state stays `bound` or
        /// `running` until then).
        case canceling
        case canceled
    }
    public var job: JobID
    public var batch: BatchID
    public var owner: String
    public var kind: Kind
    /// The job's state after the event.
    public var state: JobState
    /// The backend the event concerns (see `Kind`); the job's backend otherwise.
    public var backend: BackendID?
    public var lease: Lease?
    /// 0 before the first binding; the attempt the event concerns after it.
    public var attempt: Int
    public var at: CoreInstant
    /// With `bound`: why this backend (expected completion times).
    public var placement: Placement? = nil
}

/// Why a job was bound where it was: expected completion times, in seconds from the binding.
public struct Placement: Hashable, Sendable {
    public var expectedSeconds: Double
    /// The backend expected to finish it soonest after the chosen one, if any was compared.
    public var runnerUp: BackendID?
    public var runnerUpSeconds: Double?

    public init(expectedSeconds: Double, runnerUp: BackendID? = nil, runnerUpSeconds: Double? = nil) {
        self.expectedSeconds = expectedSeconds
        self.runnerUp = runnerUp
        self.runnerUpSeconds = runnerUpSeconds
    }
}

/// Whether the coordinator is ready, and if not what it waits for.
/// Not `Wire.Readiness`: the wire adds the shell's own reasons (`shutting_down`, `store_unavailable`)
/// and wall-clock deadlines; this is the gate's part, compared to announce `readinessChanged`.
public struct Readiness: Hashable, Sendable {
    /// At least one backend is ready, no job is held by the gate, and no pause after a restore
    /// keeps the queue back.
    public var ready: Bool
    public var readyBackends: Int
    public var heldJobs: Int
    /// Features the held jobs need.
    public var waitingFeatures: [String]
    /// Backends the gate waits for (registered or expected, not announced, window open).
    public var waitingBackends: [BackendID]
    /// While the pause after a restore binds nothing (`CorePolicy.reclaimWindow`): when it ends
    /// at the latest, and the backends it still waits for, by id.
    public var reclaim: Reclaim?

    public struct Reclaim: Hashable, Sendable {
        public var until: CoreInstant
        public var backends: [BackendID]
    }
}

/// Jobs the gate holds for one need (the same features and model); `Wire.GateWait` shows it with
/// backend names.
public struct HeldNeed: Hashable, Sendable {
    public var features: [String]
    /// The model these jobs need, if any.
    public var model: String?
    /// Every backend the gate waits for on behalf of these jobs, by id.
    public var backends: [BackendID]
    public var jobs: Int

    public init(features: [String], model: String?, backends: [BackendID], jobs: Int) {
        self.features = features
        self.model = model
        self.backends = backends
        self.jobs = jobs
    }
}

/// Facts for metrics and logs.
public enum Observation: Hashable, Sendable {
    /// Time from a job entering the queue to its binding.
    case bindLatency(JobID, Duration)
    /// Time from a backend's registration to its first `ready` announcement.
    case propagation(BackendID, Duration)
    case announcementApplied(BackendID, CapabilityVersion)
    case staleAnnouncement(BackendID, CapabilityVersion)
    /// Different content under a version already held: a protocol violation, not applied.
    case announcementConflict(BackendID, CapabilityVersion)
    /// A report naming a lease that is not the job's current one: ignored (and answered with
    /// `staleLease`).
    case staleReport(JobID, BackendID, Lease)
    case stolen(JobID, from: BackendID, to: BackendID)
    /// After a restart, a backend claimed a queued job it still runs (`hello.jobs`).
    case claimed(JobID, BackendID)
    /// A backup run of a job on a backend started, won (it completed first and became the job's
    /// binding) or stopped (revoked, failed or its backend lost).
    case backup(JobID, BackendID, BackupOutcome)
    case requeued(JobID, RequeueCause)
    /// Time from start to completion on a backend.
    case jobDuration(JobID, BackendID, Duration)
    /// A job canceled on its backend ended `canceled`: how the backend's slot was given back.
    case cancelSettled(JobID, BackendID, CancelSettlement)
    /// The coordinator sent `load_model` to a backend, and why.
    case modelLoadRequested(BackendID, model: String, LoadReason)
}

/// Why the coordinator asked a backend to load a model; the raw values label metrics.
public enum LoadReason: String, Hashable, Sendable, CaseIterable {
    /// The job the backend takes next needs it: the load starts before the job is bound, and
    /// other jobs may fill the slot while it loads (backfilling). Or a job another backend left
    /// to it, expected to finish there first, needs it (`loadForDeclined`).
    case job
    /// An idle backend loads what a job bound elsewhere, or queued, waits for (`routing.hedge_loads`).
    case hedge
    /// An idle backend whose speed is assumed loads the model of a straggler running elsewhere,
    /// to run a backup of it once loaded (`routing.backup_runs`; counts toward `hedge_loads`).
    case backup
    /// An idle backend with no model loaded loads the model queued jobs needed most recently
    /// (`routing.prefetch_models`).
    case prefetch
    /// Ahead of a queued job that a held job keeps out of the backend's overqueue slot.
    case ahead
    /// A client's `load_model`, or a model it pinned that a backend announced later.
    case client
}

/// How a job canceled on its backend ended; the raw values label metrics.
public enum CancelSettlement: String, Hashable, Sendable, CaseIterable {
    /// The backend reported the attempt ended as canceled (`failed` with code `canceled`).
    case confirmed
    /// The backend reported `completed` or another `failed` before it saw the cancel: the work
    /// stopped, the job still ends `canceled`.
    case raced
    /// The link dropped, or the backend restarted or was removed: nothing more will come.
    case linkLost = "link_lost"
    /// The backend said nothing within the cancel grace (it may not know the confirmation).
    case graceExpired = "grace_expired"
}

/// What the shell must do after an event.
public enum CoreAction: Hashable, Sendable {
    /// Send the job to the backend under this lease.
    case assign(job: JobID, batch: BatchID, spec: JobSpec, backend: BackendID, lease: Lease, attempt: Int)
    /// Tell the backend to stop the job (client cancel).
    case cancel(job: JobID, backend: BackendID, lease: Lease)
    /// Take back a job stolen before it started: its lease is dead from now on.
    case revoke(job: JobID, backend: BackendID, lease: Lease)
    /// Answer a report under a lease that is not the job's current one: it changed nothing.
    /// `about` is the report's wire type (`started`, `progress`, `completed`, `failed`).
    case staleLease(job: JobID, backend: BackendID, lease: Lease, about: String)
    /// Ask the backend to load a model now.
    case loadModel(backend: BackendID, model: String)
    /// Ask the backend for its capabilities; `held` is the version the coordinator has.
    case sync(backend: BackendID, held: CapabilityVersion?)
    /// Acknowledge an announcement, once: `applied` when it replaced the held snapshot (then
    /// `version` is the received one), otherwise `version` is the one still held.
    case ackCapabilities(backend: BackendID, version: CapabilityVersion, applied: Bool)
    case jobEvent(JobEvent)
    /// Keep this change in the job store (only with `CorePolicy.persistChanges`). The shell
    /// publishes no job event and sends no answer that follows a `.persist` to clients before the
    /// store says the change is durable; work sent to backends need not wait.
    case persist(StoreChange)
    /// The backend was down for `CorePolicy.forgetDownAfter` and is gone from the core: the shell
    /// frees its name (a later `hello` of that name is a new backend, with a new id) and drops
    /// what it keeps per backend (metrics series).
    case forgetBackend(BackendID, name: String)
    case readinessChanged(Readiness)
    case observe(Observation)
}

/// Events from backends, links and the timer.
public enum CoreEvent: Hashable, Sendable {
    /// A backend named in the configuration, not connected yet: the gate waits for it.
    case backendExpected(BackendID, name: String)
    /// A backend linked and said hello (first time, reconnect or restart).
    case backendRegistered(BackendRegistration)
    /// An announcement from a registered backend (feed the hello first).
    case capabilities(BackendID, CapabilitySnapshot)
    /// The link dropped: the backend becomes suspect for the grace period.
    case linkLost(BackendID)
    /// The link closed after the backend's own `goodbye`: it is not coming back on this
    /// incarnation, so it is down at once (no grace) and its bound jobs are requeued now.
    case backendLeft(BackendID)
    /// The link came back with the same incarnation.
    case linkRestored(BackendID)
    // Reports from the backend a job is bound to. Any other backend or lease: stale, ignored.
    case jobStarted(JobID, backend: BackendID, lease: Lease)
    /// `fraction` in 0...1; `message` the backend's text, if any.
    /// `timed`: the fraction grows in proportion to the job's work time (it projects the job's end).
    case jobProgress(JobID, backend: BackendID, lease: Lease, fraction: Double, message: String? = nil, timed: Bool = false)
    case jobCompleted(JobID, backend: BackendID, lease: Lease, result: RawJSON)
    /// `retryable`: the job may succeed elsewhere (requeued while attempts remain).
    case jobFailed(JobID, backend: BackendID, lease: Lease, code: ErrorCode, message: String, retryable: Bool)
    /// The backend could not load a model it was asked to (`load_model_result` with `ok: false`):
    /// no load of it is under way there any more, and it may be asked again.
    case modelLoadFailed(BackendID, model: String)
    /// Finish what it has, take nothing new.
    case drain(BackendID)
    case backendRemoved(BackendID)
    /// The timer armed for `nextDeadline` fired (spurious ticks are harmless).
    case tick
}

/// One binding of a job, kept in its history.
/// Not `Wire.AttemptRecord`: the core keeps the `lease` (never shown to clients), the start time
/// and the full `JobFailure`, where the wire shows milliseconds and the error body.
public struct AttemptRecord: Hashable, Sendable {
    public var attempt: Int
    public var backend: BackendID
    public var lease: Lease
    public var boundAt: CoreInstant
    public var startedAt: CoreInstant?
    public var endedAt: CoreInstant?
    public var outcome: AttemptOutcome
    /// Why it ended, when it ended with an error (`failed`, `requeued`).
    public var error: JobFailure?

    public init(
        attempt: Int, backend: BackendID, lease: Lease, boundAt: CoreInstant, startedAt: CoreInstant? = nil,
        endedAt: CoreInstant? = nil, outcome: AttemptOutcome, error: JobFailure? = nil
    ) {
        self.attempt = attempt
        self.backend = backend
        self.lease = lease
        self.boundAt = boundAt
        self.startedAt = startedAt
        self.endedAt = endedAt
        self.outcome = outcome
        self.error = error
    }
}

/// The one attempt of a restored job that ran once and completed (`JobRecord.onlyAttempt`).
struct OnlyAttempt: Hashable, Sendable {
    var boundAt: CoreInstant
    var startedAt: CoreInstant?
}

/// What became of a backup run (`Observation.backup`).
public enum BackupOutcome: String, Hashable, Sendable {
    case started, won, stopped
}

/// A job as the core sees it.
public struct JobRecord: Hashable, Sendable {
    public internal(set) var id: JobID
    public internal(set) var batch: BatchID
    public internal(set) var spec: JobSpec
    public internal(set) var state: JobState
    public internal(set) var backend: BackendID?
    public internal(set) var lease: Lease?
    /// 0 before the first binding, then the number of the current (or last) attempt: every
    /// binding adds one.
    public internal(set) var attempt: Int
    public internal(set) var progress: Double
    /// The text of the last `progress` report of the current attempt.
    public internal(set) var progressMessage: String?
    public internal(set) var history: [AttemptRecord]
    public internal(set) var result: RawJSON?
    public internal(set) var failure: JobFailure?
    /// Set while the job is gated.
    public internal(set) var waitReason: WaitReason?
    public internal(set) var submittedAt: CoreInstant
    public internal(set) var endedAt: CoreInstant?
    /// Set while the job is `canceling`: a client canceled it while bound or running, its backend
    /// was told to stop, and the job ends `canceled` when the backend confirms (or the link is
    /// lost, or the cancel grace passes). Its state stays `bound` or `running` meanwhile.
    public internal(set) var cancelRequestedAt: CoreInstant? = nil

    /// Attempts that ended without the job's fault (requeued): bounded by `maxAttempts`.
    var lostAttempts = 0
    /// A restored job that ran once and completed: its attempt, which `Coordinator.job(_:)`
    /// makes into `history` when asked (the store keeps it as two instants; see `StoredJob`).
    var onlyAttempt: OnlyAttempt? = nil

    // Routing bookkeeping.
    var classIndex: Int
    var estimateIndex: Int
    var round: UInt64
    var seq: UInt64
    var enqueuedAt: CoreInstant
    /// Since when free backends leave this job to one expected to finish it sooner (bounded).
    var declinedSince: CoreInstant?
    /// When work stealing last moved it, and how many times at that instant: an unstarted job
    /// moves at most once per instant and a job waiting for a model or running at most three
    /// times, so estimates that disagree can never bounce it between backends forever within one
    /// event.
    var movedAt: CoreInstant?
    var movesAtThatInstant: UInt8 = 0
    /// Idle backends asked to load its model while it waited for a load elsewhere
    /// (`hedgeLoad`), at most `CorePolicy.hedgeLoads`.
    var hedges: UInt8 = 0
    /// Backup runs started for it (`Coordinator+Backups.swift`), at most `CorePolicy.backupRuns`
    /// over its life, whatever became of them (failed, revoked, lost with their backend).
    var backupsStarted: UInt8 = 0
    /// Its expected duration on its backend when it started there (seconds; 0 before): a job
    /// expected to run well past it is a straggler, which backup runs look for.
    var expectedAtStart = 0.0
    /// When its overrun watch is due (core seconds; 0: none): a timer for it that fires earlier
    /// was superseded (`scheduleOverrun`) and does nothing.
    var overrunWatch = 0.0
    /// Moves after it had run for a while: at most `Coordinator.runningMoves` (the work each
    /// loses is paid for by an expected gain over a quarter of the job).
    var movedWhileRunning: UInt8 = 0
    /// Its progress already told the coordinator how long it takes (`projectFromProgress`).
    var projected = false

    /// Whether work stealing may move it again at `now`.
    func movable(at now: CoreInstant) -> Bool { movedAt != now || movesAtThatInstant < 3 }
}

/// A batch as the core sees it.
public struct BatchRecord: Hashable, Sendable {
    public internal(set) var id: BatchID
    public internal(set) var key: String?
    /// Who the batch belongs to: the name access control checks (a `client` credential sees and
    /// cancels only its own batches). Given at submit; by default the first entry's owner.
    public internal(set) var owner: String
    public internal(set) var jobs: [JobID]
    public internal(set) var submittedAt: CoreInstant
    /// Jobs not yet evicted from the finished-job store.
    var live: Int
    /// What was submitted under `key`, to tell an idempotent retry from a conflicting reuse
    /// (kept only for keyed batches, and dropped with the batch).
    var entries: [BatchEntry] = []
}

/// A backend as the core sees it.
/// Not `Wire.BackendInfo`: the core's carries what routing uses (`priority`, the `expected` link,
/// `draining`, slots before any announcement); the wire adds the capacity with overqueue and the
/// estimates, and shows the snapshot only once announced.
public struct BackendInfo: Hashable, Sendable {
    public var id: BackendID
    public var name: String
    public var isLocal: Bool
    public var link: LinkState
    public var incarnation: Incarnation?
    /// The announced state of the current incarnation; nil before the first announcement.
    public var announced: BackendState?
    public var version: CapabilityVersion?
    public var features: [String]
    public var modelsAvailable: [String]
    public var modelsLoaded: [String]
    public var slots: Int
    public var priority: Int
    public var inFlight: Int
    public var running: Int
    public var draining: Bool
    public var inhibitedUntil: CoreInstant?
    public var lastSeen: CoreInstant?
    public var registeredAt: CoreInstant
    public var firstAnnouncedAt: CoreInstant?
    /// Node classes of the current snapshot (backends that run node graphs).
    public var nodes: [String] = []
    /// Device telemetry of the current snapshot.
    public var devices: [DeviceTelemetry] = []
    /// The current snapshot's `message`.
    public var message: String?
    /// The `speed` of its snapshot, if it announced one.
    public var announcedSpeed: Double? = nil
    /// The `job_seconds` and `model_load_seconds` of its snapshot, if it announced them.
    public var announcedJobSeconds: [KindSeconds] = []
    public var announcedModelLoadSeconds: Double? = nil
}

/// Running totals for metrics.
public struct CoreCounters: Hashable, Sendable {
    public var submitted = 0
    public var bound = 0
    public var completed = 0
    public var failed = 0
    public var canceled = 0
    /// Jobs canceled on their backend that ended when the cancel grace passed, unconfirmed.
    public var cancelGraceExpired = 0
    public var requeued = 0
    public var stolen = 0
    public var announcementsApplied = 0
    public var announcementsStale = 0
    /// Announcements that reused a held version with other content (protocol violations).
    public var announcementConflicts = 0
    public var staleReports = 0
    public var modelLoadsRequested = 0
    /// Backup runs started, and those that completed before the job's own binding.
    public var backupsStarted = 0
    public var backupsWon = 0
    /// Jobs a backend claimed back at `hello` after a restart (`Coordinator.claim`).
    public var claimed = 0
}
