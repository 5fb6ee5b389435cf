import MusterCore
import MusterProtocol
import Testing

/// Jobs that carry a ComfyUI workflow need its node classes: they go only to backends whose
/// snapshot lists every one, and fail naming the missing classes per backend when none has them.
@Suite struct NodeClassTests {
    static let core = ["EmptyImage", "ImageBlur", "ImageScale", "SaveImage"]
    static let slow = ["EmptyImage", "ImageInvert", "MusterSlowPassthrough", "SaveImage"]

    /// A ComfyUI-like backend: ready with these node classes.
    func comfy(_ h: inout Harness, _ id: Int64, nodes: [String], revision: UInt64 = 1, slots: Int = 1) {
        h.send(.backendRegistered(BackendRegistration(id: BackendID(id), name: "c\(id)", incarnation: Incarnation(1), slots: slots)))
        h.send(.capabilities(BackendID(id), CapabilitySnapshot(
            version: CapabilityVersion(incarnation: Incarnation(1), revision: revision), state: .ready, features: [],
            modelsAvailable: [], modelsLoaded: [], slots: slots, nodes: nodes)))
    }

    @Test func workflowJobsGoOnlyWhereEveryNodeClassIs() {
        var h = Harness { $0.overqueue = 0 }
        comfy(&h, 1, nodes: Self.core + Self.slow + ["RIFE VFI"])
        comfy(&h, 2, nodes: Self.core + ["ImageInvert"])
        let slow = h.submit(JobSpec(kind: "workflow", nodes: Self.slow), count: 3)
        #expect(h.backend(slow[0]) == BackendID(1))
        #expect(h.state(slow[1]) == .queued && h.state(slow[2]) == .queued)  // backend 2 lacks the test node
        let core = h.submit(JobSpec(kind: "workflow", nodes: Self.core), count: 1)
        #expect(h.backend(core[0]) == BackendID(2))
    }

    /// A workflow's node classes are part of its duration class: backend 1 ran only the slow
    /// graph (1 s), backend 2 only the core one (4 ms). Each class has its own estimate, neither
    /// backend's speed is learned from the other's graph, and two core jobs go one to each.
    /// In one class per kind, backend 1 was measured 100 times slower than backend 2 (the floor
    /// of 0.01) and was left idle while backend 2 ran every core job (`Scripts/test-comfyui`, "a
    /// batch of core.json jobs spreads over both", failed in about one run of four: speed 0.04).
    @Test func theGraphIsPartOfTheDurationClass() {
        var h = Harness { $0.overqueue = 0 }
        comfy(&h, 1, nodes: Self.core + Self.slow)
        comfy(&h, 2, nodes: Self.core)
        let slow = h.submit(JobSpec(kind: "workflow", nodes: Self.slow))[0]
        let core = h.submit(JobSpec(kind: "workflow", nodes: Self.core))[0]
        #expect(h.backend(slow) == BackendID(1) && h.backend(core) == BackendID(2))
        h.send(.jobStarted(slow, backend: BackendID(1), lease: h.lease(slow)))
        h.send(.jobStarted(core, backend: BackendID(2), lease: h.lease(core)))
        h.clock = .seconds(0.004)
        h.send(.jobCompleted(core, backend: BackendID(2), lease: h.lease(core), result: .emptyObject))
        h.clock = .seconds(1)
        h.send(.jobCompleted(slow, backend: BackendID(1), lease: h.lease(slow), result: .emptyObject))
        let one = h.core.estimates(for: BackendID(1))!
        #expect(one.speedSource == .assumed && one.speed == 1, "\(one)")
        let classes = h.core.jobClassEstimates.map { ($0.nodes, $0.seconds) }
        #expect(classes.count == 2 && classes.contains { $0.0 == Self.core && abs($0.1 - 0.004) < 1e-9 }
            && classes.contains { $0.0 == Self.slow && abs($0.1 - 1) < 1e-9 }, "\(classes)")
        let next = h.submit(JobSpec(kind: "workflow", nodes: Self.core), count: 2)
        #expect(Set(next.map { h.backend($0) }) == [BackendID(1), BackendID(2)])
    }

    @Test func noBackendWithTheClassFailsNamingItPerBackend() {
        var h = Harness()
        comfy(&h, 1, nodes: Self.core)
        comfy(&h, 2, nodes: Self.core + ["ImageInvert"])
        let job = h.submit(JobSpec(kind: "workflow", nodes: ["ImageInvert", "NoSuchNode", "SaveImage"]))[0]
        #expect(h.state(job) == .failed)
        let failure = h.core.job(job)!.failure!
        #expect(failure.code == .noEligibleBackend)
        #expect(failure.message.contains("NoSuchNode"))
        #expect(failure.refusals.map(\.missingNodes) == [["ImageInvert", "NoSuchNode"], ["NoSuchNode"]])
        #expect(failure.refusals.allSatisfy { $0.reasons == ["missing_nodes"] })
    }

    @Test func workflowJobsWaitForALoadingBackendLikeFeatureJobs() {
        var h = Harness { $0.overqueue = 1 }
        comfy(&h, 1, nodes: Self.core)
        h.send(.backendRegistered(BackendRegistration(id: BackendID(2), name: "c2", incarnation: Incarnation(1))))
        h.announce(2, .loading, revision: 1)
        let jobs = h.submit(JobSpec(kind: "workflow", nodes: Self.core), count: 4)
        // One takes the idle slot of backend 1; the rest are held, not parked behind it.
        #expect(jobs.map { h.state($0) } == [.bound, .gated, .gated, .gated])
        h.send(.capabilities(BackendID(2), CapabilitySnapshot(
            version: CapabilityVersion(incarnation: Incarnation(1), revision: 2), state: .ready, features: [],
            modelsAvailable: [], modelsLoaded: [], slots: 1, nodes: Self.core)))
        let on2 = jobs.filter { h.core.job($0)?.backend == BackendID(2) }
        let on1 = jobs.filter { h.core.job($0)?.backend == BackendID(1) }
        #expect(on1.count == 2 && on2.count == 2)
    }

    @Test func anAnnouncementThatDropsAClassMovesQueuedJobsAway() {
        var h = Harness { $0.overqueue = 0 }
        comfy(&h, 1, nodes: Self.slow)
        let jobs = h.submit(JobSpec(kind: "workflow", nodes: Self.slow), count: 2)
        #expect(h.state(jobs[1]) == .queued)
        // Restarted without custom nodes: the queued job has nowhere to go.
        h.send(.capabilities(BackendID(1), CapabilitySnapshot(
            version: CapabilityVersion(incarnation: Incarnation(1), revision: 2), state: .ready, features: [],
            modelsAvailable: [], modelsLoaded: [], slots: 1, nodes: ["EmptyImage", "SaveImage"])))
        #expect(h.state(jobs[1]) == .failed)
        #expect(h.core.job(jobs[1])!.failure!.refusals.first!.missingNodes == ["ImageInvert", "MusterSlowPassthrough"])
    }
}
