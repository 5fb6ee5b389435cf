/// Every knob of the core, with the defaults the issue asks for.
public struct CorePolicy: Sendable, Hashable {
    /// How long the warm-up gate waits for a backend that registered but has not announced
    /// (counted from its registration). `.zero` turns the gate off.
    public var gateWindow: Duration = .seconds(60)
    /// Under expected completion, while the gate is closed and jobs are held: after a backend
    /// announces `ready` for the first time in its incarnation, no job is bound for this long, so
    /// that backends announcing at nearly the same moment are all known when the held jobs are
    /// placed (else the first to announce takes them). `.zero`: no pause.
    public var gateSettle: Duration = .milliseconds(100)
    /// Jobs a backend may hold beyond its running slots (queued on the backend).
    public var overqueue: Int = 1
    /// How long a backend whose link dropped keeps its jobs before they are requeued.
    public var suspectGrace: Duration = .seconds(10)
    /// After a restore that brought back queued jobs: at most this long, nothing is bound while
    /// the remote backends that were up come back, so one still running a job whose binding the
    /// store never got claims it (`Coordinator.claim`) before another backend takes the job. Ends
    /// once every one of them has registered again or is down. `.zero`: no pause.
    public var reclaimWindow: Duration = .seconds(5)
    /// A remote backend whose link has been down this long is forgotten: gone from the listing,
    /// the indexes and the store, its name free to map to a new id. Never one the configuration
    /// names (`backendExpected`) nor a local one. `.zero`: never.
    public var forgetDownAfter: Duration = .seconds(86_400)
    /// Anti-entropy: how often each backend is asked for its current capabilities.
    public var syncInterval: Duration = .seconds(15)
    /// A job canceled while bound or running keeps its backend slot until the backend confirms it
    /// stopped, at most this long; then it ends `canceled` and the slot is free. `.zero`: at once.
    public var cancelGrace: Duration = .seconds(30)
    /// A backend that failed a job gets no new work for this long.
    public var inhibitAfterFailure: Duration = .seconds(5)
    /// Bindings per job before it fails with `attempts_exhausted`.
    public var maxAttempts: Int = 3
    /// When no backend can ever run a job (gate open), keep it queued instead of failing it
    /// with `no_eligible_backend`.
    public var keepQueuedWhenNoEligible: Bool = false
    /// Send jobs to backends that must load the model first only when that pays off.
    public var modelAffinity: Bool = true
    /// Loading pays off when `loadTime * affinityMargin + jobTime` is below the time the backends
    /// that have the model need for the jobs waiting for it. Larger values favour loaded backends.
    public var affinityMargin: Double = 1.0
    /// Estimate for a model load before any load was measured.
    public var defaultModelLoadTime: Duration = .seconds(20)
    /// Estimate for a job before any job of its kind and model was measured.
    public var defaultJobDuration: Duration = .seconds(10)
    /// Weight of the newest sample in the moving averages of load and job times.
    public var estimateSmoothing: Double = 0.3
    /// Let a free backend take a job bound to another that it would finish sooner: one not started,
    /// or a running one (at most `Coordinator.runningMoves` times), for a gain over a quarter of
    /// the job.
    public var workStealing: Bool = true
    /// Under expected completion: how many idle backends may be asked to load the model of a job
    /// bound to another backend while it waits there (for its model, or behind other jobs), when
    /// they could run it no later by the estimates (a load time is a guess until measured). The job moves to whichever is ready first
    /// (`workStealing`). A load for a backup run of a job (`backupRuns`) counts toward it too.
    /// `0`: never.
    public var hedgeLoads: Int = 2
    /// Under expected completion: how many idle backends may run a copy of a job that runs
    /// elsewhere, when they would finish it first if they were twice as fast as assumed (speed not
    /// known yet) or at their known speed (`Coordinator+Backups.swift`). The first copy to
    /// complete is the job's completion; the others are revoked, and a copy gives way to a job
    /// bound on its backend that needs its slot, unless it started on a faster backend of known
    /// speed and is expected to finish first (then it becomes the binding). `0`: never.
    public var backupRuns: Int = 2
    /// With `backupRuns` above 0: an idle backend with nothing else to do may also copy a running
    /// job that is no straggler, when four times its assumed speed would finish it first, or, its
    /// speed known, when that speed would (`Coordinator.speculativeBackup`). On by default
    /// (README "Backup runs"); off: stragglers only.
    public var speculativeBackups = true
    /// Under expected completion: an idle backend with no model loaded and none loading loads the
    /// model that queued jobs needed most recently among those it offers, once per model
    /// (`Coordinator.prefetchModel`): with nothing loaded it evicts nothing, and the next job
    /// needing that model there does not wait for the load (README "Prefetching a model").
    public var prefetchModels = true
    /// How a job's backend is chosen (README "Routing and the warm-up gate").
    public var routing: RoutingRule = .expectedCompletion
    /// Longest a queued job may be left waiting for a faster backend while a slower one could take
    /// it now (counted from when it was queued), so that wrong estimates cannot starve it.
    public var maxWaitForBetterBackend: Duration = .seconds(30)
    /// How many comparisons with other backends the decisions after one event (one `dispatch`)
    /// may make in all, under expected completion (`admits`: a backend that would finish a job
    /// sooner; `stealSooner`: a bound job to take). A fleet of tens of backends never reaches it.
    /// In a fleet of hundreds where each backend serves a hundred classes, a backend that leaves
    /// classes to others compares each with all of its capable backends in turn, and each backend
    /// it leaves one to looks again and compares too (README, Performance, "Jobs that take
    /// time"). Past it, a backend takes the best job it can run without comparing (as under the
    /// rule before expected completion) and looks at no more bound jobs to take. `Int.max`: no
    /// bound.
    public var compareLimit = 2048
    /// Expected seconds of a job of each kind on a backend of speed 1.0, before any job of that
    /// kind (and model) was measured; other kinds use `defaultJobDuration`.
    public var jobDurationPriors: [String: Duration] = [:]
    /// Finished jobs kept for queries: at most this many ...
    public var finishedJobLimit: Int = 10_000
    /// ... and for at most this long after they finished.
    public var finishedJobRetention: Duration = .seconds(3600)
    /// Largest number of jobs one submission may create.
    public var maxJobsPerSubmission: Int = 10_000
    /// Largest number of distinct (needs, model) combinations; each is an index the router keeps
    /// per backend, so clients may not create them without bound.
    public var maxJobClasses: Int = 10_000
    /// Emit a `.persist` action for every change a job store keeps (`StoreChange`). Off for a
    /// coordinator without a store (`store.url = memory:`), so that it pays nothing for them.
    public var persistChanges: Bool = false

    public init() {}
}

/// How the router chooses a backend for a job.
public enum RoutingRule: String, Sendable, Hashable, CaseIterable {
    /// The backend where the job is expected to finish first: work already ahead of it there, a
    /// model load if needed, and its duration there (estimated per backend speed and job class).
    case expectedCompletion
    /// The rule before expected completion times (least loaded, local first, model affinity by
    /// aggregate backlog), kept so the routing suite can compare the two.
    case leastLoaded
}
