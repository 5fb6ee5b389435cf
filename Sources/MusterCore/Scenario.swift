import DequeModule
import HeapModule
import MusterProtocol

/// A deterministic fleet simulation: backends with ready times, features, models, load times and
/// job durations, and timed submissions. Played against a `Coordinator` on a manual clock by
/// `ScenarioRunner`; used by the tests and by `muster simulate`.
public struct Scenario: Sendable {
    /// One simulated backend.
    public struct Backend: Sendable {
        public var id: BackendID
        public var name: String
        public var slots: Int
        public var priority: Int
        /// Listed in the configuration from t=0 (the gate waits for it before it connects).
        public var expected: Bool
        /// When it connects and says hello (seconds).
        public var registerAt: Double
        /// When it announces `ready`, in seconds after registering; nil: it never does.
        public var announceAfter: Double?
        public var features: [String]
        public var modelsAvailable: [String]
        public var modelsLoaded: [String]
        /// Seconds per job, by job kind; `defaultJobSeconds` for other kinds.
        public var jobSeconds: [String: Double]
        public var defaultJobSeconds: Double
        /// Seconds to load a model that is available but not loaded.
        public var loadSeconds: Double
        /// The link drops at this time (seconds); the process keeps working but its reports are
        /// held until the link comes back.
        public var linkDownAt: Double?
        /// The link comes back (same incarnation) at this time; nil: never.
        public var linkUpAt: Double?
        /// The speed the coordinator is told (configured prior); nil: it must measure. The job
        /// durations above are what really happens.
        public var speed: Double?
        /// The model load time the coordinator is told (configured prior); nil: it must measure.
        public var loadPrior: Double?
        /// A running job reports `progress` (the fraction of its work done) this often, from when
        /// its work begins (after its model loaded), as `muster agent` does; nil: never.
        public var progressEvery: Double?
        /// It announces its job durations per kind (`job_seconds`) and its model load time
        /// (`model_load_seconds`), as `muster agent` does.
        public var announcesDurations = false

        public init(
            id: BackendID, name: String? = nil, slots: Int = 1, priority: Int = 0, expected: Bool = false,
            registerAt: Double = 0, announceAfter: Double? = 0, features: [String] = [],
            modelsAvailable: [String] = [], modelsLoaded: [String] = [], jobSeconds: [String: Double] = [:],
            defaultJobSeconds: Double = 10, loadSeconds: Double = 20, linkDownAt: Double? = nil,
            linkUpAt: Double? = nil, speed: Double? = nil, loadPrior: Double? = nil, progressEvery: Double? = nil,
            announcesDurations: Bool = false
        ) {
            self.id = id
            self.name = name ?? "backend\(id)"
            self.slots = slots
            self.priority = priority
            self.expected = expected
            self.registerAt = registerAt
            self.announceAfter = announceAfter
            self.features = features
            self.modelsAvailable = modelsAvailable
            self.modelsLoaded = modelsLoaded
            self.jobSeconds = jobSeconds
            self.defaultJobSeconds = defaultJobSeconds
            self.loadSeconds = loadSeconds
            self.linkDownAt = linkDownAt
            self.linkUpAt = linkUpAt
            self.speed = speed
            self.loadPrior = loadPrior
            self.progressEvery = progressEvery
            self.announcesDurations = announcesDurations
        }

        func seconds(for kind: String) -> Double { jobSeconds[kind] ?? defaultJobSeconds }
    }

    /// A batch submitted at a time (seconds).
    public struct Submission: Sendable {
        public var at: Double
        public var key: String?
        public var entries: [BatchEntry]
        public init(at: Double = 0, key: String? = nil, entries: [BatchEntry]) {
            self.at = at
            self.key = key
            self.entries = entries
        }
    }

    public var policy: CorePolicy
    public var backends: [Backend]
    public var submissions: [Submission]
    /// The simulation stops here even if jobs remain (seconds).
    public var horizon: Double
    /// Where the core's clock starts: the simulation's second 0 is this many nanoseconds after
    /// the clock's origin. `muster serve` gives the core wall-clock time (nanoseconds since
    /// 1970), so its times are about 1.8e9 s, where a `Double` keeps about 0.24 µs: a scenario
    /// played there must decide as it does from zero.
    public var clockOrigin: UInt64 = 0

    public init(
        policy: CorePolicy = CorePolicy(), backends: [Backend], submissions: [Submission], horizon: Double = 86_400
    ) {
        self.policy = policy
        self.backends = backends
        self.submissions = submissions
        self.horizon = horizon
    }
}

/// What a scenario run produced.
public struct ScenarioReport: Sendable {
    /// Completed jobs per backend (every backend listed, zero included).
    public var jobsPerBackend: [BackendID: Int]
    /// From the first submission to the last completion, in seconds.
    public var makespan: Double
    /// Busy time / (makespan x slots), per backend.
    public var utilisation: [BackendID: Double]
    /// The earliest-completion-time list schedule of the same jobs with full knowledge of the
    /// future (exact when the jobs are identical); the yardstick for `ratio`.
    public var optimum: Double
    /// makespan / optimum.
    public var ratio: Double { optimum > 0 ? makespan / optimum : 1 }
    /// Completion events seen per job (each must be exactly 1).
    public var completions: [JobID: Int]
    /// The backend each completed job ran on.
    public var ranOn: [JobID: BackendID]
    /// When each job started (its final binding), in seconds.
    public var startedAt: [JobID: Double]
    /// Every action with the time it was produced.
    public var trace: [(at: Double, action: CoreAction)]
    /// The coordinator at the end, for queries.
    public var coordinator: Coordinator

    /// Job events of one kind, in order.
    public func events(_ matching: (JobEvent) -> Bool) -> [JobEvent] {
        trace.compactMap { if case .jobEvent(let e) = $0.action, matching(e) { e } else { nil } }
    }
}

/// Plays a `Scenario` against a `Coordinator` with a manual clock.
public struct ScenarioRunner {
    public static func run(_ scenario: Scenario) -> ScenarioReport {
        var sim = Simulation(scenario)
        sim.run()
        return sim.report()
    }
}

struct Simulation {
    enum Kind {
        case register(Int)
        case announce(Int)
        case submit(Int)
        case linkDown(Int)
        case linkUp(Int)
        case finish(Int, JobID, Lease)
        case progress(Int, JobID, Lease)
        case loaded(Int, String)
    }
    struct Event: Comparable {
        var at: Double
        var seq: Int
        var kind: Kind
        static func < (a: Event, b: Event) -> Bool { (a.at, a.seq) < (b.at, b.seq) }
        static func == (a: Event, b: Event) -> Bool { a.at == b.at && a.seq == b.seq }
    }
    struct Task {
        var job: JobID
        var lease: Lease
        var spec: JobSpec
    }
    struct Sim {
        var config: Scenario.Backend
        var registered = false
        var linkUp = false
        var revision: UInt64 = 0
        var state: BackendState = .starting
        var loaded: Set<String>
        var loading: [String: Double] = [:]
        var waiting: [Task] = []
        /// Running jobs: when each started (its slot), and when its work begins and ends.
        var running: [JobID: (lease: Lease, started: Double, begin: Double, end: Double)] = [:]
        var held: [CoreEvent] = []
        var busy = 0.0
        var completed = 0
    }

    let scenario: Scenario
    var core: Coordinator
    var backends: [Scenario.Backend]
    var state: [Sim]
    var index: [BackendID: Int] = [:]
    var events = Heap<Event>()
    var seq = 0
    var now = 0.0
    var trace: [(at: Double, action: CoreAction)] = []
    /// Actions emitted but not yet performed, and whether `perform` is running.
    var pending: Deque<CoreAction> = []
    var performing = false
    var completions: [JobID: Int] = [:]
    var ranOn: [JobID: BackendID] = [:]
    var startedAt: [JobID: Double] = [:]
    var jobs: [JobID: JobSpec] = [:]
    var submittedAt: [JobID: Double] = [:]
    var open = 0
    var lastCompletion = 0.0

    init(_ scenario: Scenario) {
        self.scenario = scenario
        core = Coordinator(policy: scenario.policy)
        backends = scenario.backends
        state = scenario.backends.map { Sim(config: $0, loaded: Set($0.modelsLoaded)) }
        for (i, b) in backends.enumerated() {
            index[b.id] = i
            if b.expected { feed(.backendExpected(b.id, name: b.name)) }
            push(b.registerAt, .register(i))
            if let down = b.linkDownAt { push(down, .linkDown(i)) }
            if let up = b.linkUpAt { push(up, .linkUp(i)) }
        }
        for (i, s) in scenario.submissions.enumerated() { push(s.at, .submit(i)) }
    }

    mutating func push(_ at: Double, _ kind: Kind) {
        seq += 1
        events.insert(Event(at: at, seq: seq, kind: kind))
    }

    var pendingSubmissions: Bool { events.unordered.contains { if case .submit = $0.kind { true } else { false } } }

    mutating func run() {
        while now <= scenario.horizon {
            let nextEvent = events.min?.at
            let deadline = core.nextDeadline.map { Double(Int64(bitPattern: $0.nanoseconds &- scenario.clockOrigin)) / 1e9 }
            let busy = open > 0 || pendingSubmissions
            guard busy else { break }
            if let deadline, deadline <= (nextEvent ?? .infinity) {
                now = max(now, deadline)
                feed(.tick)
                continue
            }
            guard let e = events.popMin() else { break }
            now = max(now, e.at)
            step(e.kind)
        }
    }

    /// The core's instant for the simulation's `now`.
    var instant: CoreInstant { CoreInstant(nanoseconds: scenario.clockOrigin &+ UInt64((now * 1e9).rounded())) }

    mutating func feed(_ event: CoreEvent) {
        perform(core.handle(event, at: instant))
    }

    mutating func step(_ kind: Kind) {
        switch kind {
        case .register(let i):
            state[i].registered = true
            state[i].linkUp = true
            let c = backends[i]
            feed(
                .backendRegistered(
                    BackendRegistration(
                        id: c.id, name: c.name, incarnation: Incarnation(1), slots: c.slots, priority: c.priority,
                        speed: c.speed, modelLoadSeconds: c.loadPrior)))
            if c.announceAfter == 0 {
                state[i].state = .ready
                announce(i)
            } else {
                state[i].state = .loading
                announce(i)
                if let after = c.announceAfter { push(now + after, .announce(i)) }
            }
        case .announce(let i):
            state[i].state = .ready
            announce(i)
        case .submit(let i):
            let s = scenario.submissions[i]
            if let (receipt, actions) = try? core.submit(key: s.key, entries: s.entries, at: instant) {
                var n = 0
                for entry in s.entries {
                    for _ in 0..<entry.count where !receipt.duplicate {
                        jobs[receipt.jobs[n]] = entry.spec
                        submittedAt[receipt.jobs[n]] = now
                        n += 1
                    }
                }
                if !receipt.duplicate { open += receipt.jobs.count }
                perform(actions)
            }
        case .linkDown(let i):
            state[i].linkUp = false
            feed(.linkLost(backends[i].id))
        case .linkUp(let i):
            state[i].linkUp = true
            feed(
                .backendRegistered(
                    BackendRegistration(
                        id: backends[i].id, name: backends[i].name, incarnation: Incarnation(1),
                        slots: backends[i].slots,
                        priority: backends[i].priority, speed: backends[i].speed,
                        modelLoadSeconds: backends[i].loadPrior)))
            let held = state[i].held
            state[i].held = []
            for e in held { feed(e) }
        case .finish(let i, let job, let lease):
            guard let r = state[i].running[job], r.lease == lease else { return }
            state[i].running[job] = nil
            state[i].busy += now - r.started
            report(i, .jobCompleted(job, backend: backends[i].id, lease: lease, result: .emptyObject))
            startNext(i)
        case .progress(let i, let job, let lease):
            guard let r = state[i].running[job], r.lease == lease, r.end > r.begin else { return }
            let fraction = min(0.99, (now - r.begin) / (r.end - r.begin))
            report(i, .jobProgress(job, backend: backends[i].id, lease: lease, fraction: fraction, timed: true))
            if let every = backends[i].progressEvery, now + every < r.end { push(now + every, .progress(i, job, lease)) }
        case .loaded(let i, let model):
            state[i].loading[model] = nil
            state[i].loaded.insert(model)
            announce(i)
        }
    }

    /// Reports go to the core only while the link is up; otherwise they wait for it.
    mutating func report(_ i: Int, _ event: CoreEvent) {
        if state[i].linkUp { feed(event) } else { state[i].held.append(event) }
    }

    mutating func announce(_ i: Int) {
        state[i].revision += 1
        let c = backends[i]
        let s = state[i]
        let ready = s.state == .ready
        let snapshot = CapabilitySnapshot(
            version: CapabilityVersion(incarnation: Incarnation(1), revision: s.revision), state: s.state,
            features: ready ? c.features : [], modelsAvailable: ready ? c.modelsAvailable : [],
            modelsLoaded: ready ? Array(s.loaded) : [], slots: c.slots,
            jobSeconds: c.announcesDurations ? c.jobSeconds.map { KindSeconds(kind: $0.key, seconds: $0.value) } : [],
            modelLoadSeconds: c.announcesDurations ? c.loadSeconds : nil)
        report(i, .capabilities(c.id, snapshot))
    }

    /// Performs the core's actions in the order it emitted them. A report a backend makes while
    /// an action is performed (say `started` on an `assign`) is fed at once, but the actions it
    /// yields wait until the earlier ones were performed, as on a real link, where a backend
    /// receives the messages for it in order.
    mutating func perform(_ actions: [CoreAction]) {
        pending.append(contentsOf: actions)
        guard !performing else { return }
        performing = true
        defer { performing = false }
        while let action = pending.popFirst() {
            trace.append((now, action))
            switch action {
            case .assign(let job, _, let spec, let backend, let lease, _):
                guard let i = index[backend] else { continue }
                state[i].waiting.append(Task(job: job, lease: lease, spec: spec))
                startNext(i)
            case .revoke(let job, let backend, let lease), .cancel(let job, let backend, let lease),
                .staleLease(let job, let backend, let lease, _):
                // Only the named lease stops: the same job may be bound here again under a newer one.
                guard let i = index[backend] else { continue }
                state[i].waiting.removeAll { $0.job == job && $0.lease == lease }
                if let r = state[i].running[job], r.lease == lease {
                    state[i].running[job] = nil
                    state[i].busy += now - r.started
                }
                if case .cancel = action {
                    // A backend confirms a cancel once the job stopped (Protocol/README.md 6.4).
                    report(
                        i, .jobFailed(job, backend: backend, lease: lease, code: .canceled, message: "canceled", retryable: false))
                }
                startNext(i)
            case .loadModel(let backend, let model):
                guard let i = index[backend] else { continue }
                startLoad(i, model)
            case .sync(let backend, _):
                guard let i = index[backend], state[i].registered else { continue }
                state[i].revision -= 1  // re-announce the same revision: a duplicate the core must ignore
                announce(i)
            case .jobEvent(let e):
                switch e.kind {
                case .completed:
                    completions[e.job, default: 0] += 1
                    ranOn[e.job] = e.backend
                    open -= 1
                    lastCompletion = now
                case .failed, .canceled:
                    open -= 1
                default: break
                }
            case .ackCapabilities, .readinessChanged, .observe, .persist, .forgetBackend:
                break
            }
        }
    }

    @discardableResult
    mutating func startLoad(_ i: Int, _ model: String) -> Double {
        if state[i].loaded.contains(model) { return now }
        if let done = state[i].loading[model] { return done }
        let done = now + backends[i].loadSeconds
        state[i].loading[model] = done
        push(done, .loaded(i, model))
        return done
    }

    /// Starts waiting tasks while running slots are free; a task whose model is missing loads it first.
    mutating func startNext(_ i: Int) {
        while state[i].running.count < backends[i].slots, !state[i].waiting.isEmpty {
            let task = state[i].waiting.removeFirst()
            var begin = now
            if let m = task.spec.model { begin = startLoad(i, m) }
            let end = begin + backends[i].seconds(for: task.spec.kind)
            state[i].running[task.job] = (task.lease, now, begin, end)
            startedAt[task.job] = now
            report(i, .jobStarted(task.job, backend: backends[i].id, lease: task.lease))
            push(end, .finish(i, task.job, task.lease))
            if let every = backends[i].progressEvery, begin + every < end {
                push(begin + every, .progress(i, task.job, task.lease))
            }
        }
    }

    func report() -> ScenarioReport {
        let first = scenario.submissions.map(\.at).min() ?? 0
        let makespan = lastCompletion - first
        var perBackend: [BackendID: Int] = [:]
        var utilisation: [BackendID: Double] = [:]
        for b in backends { perBackend[b.id] = 0 }
        for (_, b) in ranOn { perBackend[b, default: 0] += 1 }
        for (i, b) in backends.enumerated() {
            utilisation[b.id] = makespan > 0 ? state[i].busy / (makespan * Double(b.slots)) : 0
        }
        return ScenarioReport(
            jobsPerBackend: perBackend, makespan: makespan, utilisation: utilisation,
            optimum: Self.optimum(scenario) - first, completions: completions, ranOn: ranOn,
            startedAt: startedAt, trace: trace, coordinator: core)
    }

    /// Earliest-completion-time list schedule with hindsight: every job, in submission order,
    /// goes to the capable backend slot where it would finish first, counting ready times and
    /// one load per backend and model.
    static func optimum(_ s: Scenario) -> Double {
        struct Slotted {
            var free: [Double]
            var loadedAt: [String: Double]
        }
        var fleet: [Slotted] = s.backends.map { b in
            let ready = b.registerAt + (b.announceAfter ?? .infinity)
            return Slotted(
                free: Array(repeating: ready, count: max(1, b.slots)),
                loadedAt: Dictionary(uniqueKeysWithValues: b.modelsLoaded.map { ($0, ready) }))
        }
        var makespan = 0.0
        for sub in s.submissions.sorted(by: { $0.at < $1.at }) {
            for entry in sub.entries {
                for _ in 0..<entry.count {
                    var best: (end: Double, b: Int, slot: Int, loadEnd: Double?)?
                    for (i, b) in s.backends.enumerated() where b.announceAfter != nil {
                        guard Set(entry.spec.needs).isSubset(of: b.features) else { continue }
                        if let m = entry.spec.model, !b.modelsAvailable.contains(m), !b.modelsLoaded.contains(m) {
                            continue
                        }
                        let slot = fleet[i].free.indices.min { fleet[i].free[$0] < fleet[i].free[$1] }!
                        var begin = max(sub.at, fleet[i].free[slot])
                        var loadEnd: Double?
                        if let m = entry.spec.model {
                            if let at = fleet[i].loadedAt[m] {
                                begin = max(begin, at)
                            } else {
                                loadEnd = max(sub.at, fleet[i].free[slot]) + b.loadSeconds
                                begin = loadEnd!
                            }
                        }
                        let end = begin + b.seconds(for: entry.spec.kind)
                        if best == nil || end < best!.end { best = (end, i, slot, loadEnd) }
                    }
                    guard let best else { continue }
                    fleet[best.b].free[best.slot] = best.end
                    if let m = entry.spec.model, let l = best.loadEnd { fleet[best.b].loadedAt[m] = l }
                    makespan = max(makespan, best.end)
                }
            }
        }
        return makespan
    }
}
