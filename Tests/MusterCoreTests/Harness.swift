import MusterCore
import MusterProtocol

/// Drives a `Coordinator` event by event on a manual clock and keeps the actions of each step.
struct Harness {
    var core: Coordinator
    var clock = CoreInstant.zero
    var last: [CoreAction] = []
    var all: [CoreAction] = []

    /// The default policy, except that speculative backups (on by default) are off unless
    /// `configure` turns them on: most tests drive one mechanism at a time, and an idle backend
    /// copying whatever runs would add its actions to every step.
    init(_ configure: (inout CorePolicy) -> Void = { _ in }) {
        var policy = CorePolicy()
        policy.speculativeBackups = false
        configure(&policy)
        core = Coordinator(policy: policy)
    }

    mutating func advance(to seconds: Double) {
        clock = .seconds(seconds)
        send(.tick)
    }

    @discardableResult
    mutating func send(_ event: CoreEvent) -> [CoreAction] {
        record(core.handle(event, at: clock))
    }

    @discardableResult
    mutating func record(_ actions: [CoreAction]) -> [CoreAction] {
        last = actions
        all += actions
        return actions
    }

    /// Registers a backend and announces it ready.
    mutating func ready(
        _ id: Int64, features: [String] = [], models: [String] = [], loaded: [String] = [], slots: Int = 1,
        incarnation: UInt64 = 1, revision: UInt64 = 1
    ) {
        send(
            .backendRegistered(
                BackendRegistration(
                    id: BackendID(id), name: "b\(id)", incarnation: Incarnation(incarnation), slots: slots)))
        announce(
            id, .ready, features: features, models: models, loaded: loaded, slots: slots,
            incarnation: incarnation, revision: revision)
    }

    mutating func announce(
        _ id: Int64, _ state: BackendState, features: [String] = [], models: [String] = [], loaded: [String] = [],
        slots: Int = 1, incarnation: UInt64 = 1, revision: UInt64
    ) {
        send(
            .capabilities(
                BackendID(id),
                CapabilitySnapshot(
                    version: CapabilityVersion(incarnation: Incarnation(incarnation), revision: revision), state: state,
                    features: features, modelsAvailable: models, modelsLoaded: loaded, slots: slots)))
    }

    @discardableResult
    mutating func submit(_ spec: JobSpec, count: Int = 1, key: String? = nil) -> [JobID] {
        let (receipt, actions) = try! core.submit(key: key, entries: [BatchEntry(spec: spec, count: count)], at: clock)
        record(actions)
        return receipt.jobs
    }

    /// The assignments of the last step, as (job, backend, lease).
    var assigned: [(job: JobID, backend: BackendID, lease: Lease)] {
        last.compactMap { if case .assign(let j, _, _, let b, let l, _) = $0 { (j, b, l) } else { nil } }
    }

    func lease(_ job: JobID) -> Lease { core.job(job)!.lease! }
    func backend(_ job: JobID) -> BackendID { core.job(job)!.backend! }
    func state(_ job: JobID) -> JobState { core.job(job)!.state }

    func events(_ job: JobID, in actions: [CoreAction]? = nil) -> [JobEvent.Kind] {
        (actions ?? all).compactMap { if case .jobEvent(let e) = $0, e.job == job { e.kind } else { nil } }
    }
}

extension ScenarioRunner {
    /// One job of `spec` on `backends` with `CorePolicy.hedgeLoads` set: the tests of hedged loads
    /// and of backups that load their model.
    static func oneJob(_ spec: JobSpec, on backends: [Scenario.Backend], hedgeLoads: Int) -> ScenarioReport {
        var policy = CorePolicy()
        policy.speculativeBackups = false
        // One job: a prefetch would be a hedge by another name.
        policy.prefetchModels = false
        policy.hedgeLoads = hedgeLoads
        return run(Scenario(policy: policy, backends: backends, submissions: [.init(entries: [BatchEntry(spec: spec)])]))
    }
}

extension ScenarioReport {
    /// The loads of `model` the core asked for during the run, in order: when, where and why.
    func loadRequests(_ model: String) -> [(at: Double, backend: BackendID, reason: LoadReason)] {
        trace.compactMap { step in
            if case .observe(.modelLoadRequested(let b, let m, let reason)) = step.action, m == model {
                (step.at, b, reason)
            } else {
                nil
            }
        }
    }
}
