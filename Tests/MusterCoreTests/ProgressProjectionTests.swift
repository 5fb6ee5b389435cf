import MusterCore
import MusterProtocol
import Testing

/// A running job's `timed` `progress` says when it ends, long before it does (README "Placement
/// by expected completion time", `Coordinator.projectFromProgress`). The simulated backends of
/// `Scenario` report it as `muster agent` does.
@Suite struct ProgressProjectionTests {
    static let image = JobSpec(kind: "image")
    static let sdxlImage = JobSpec(kind: "image", model: "sdxl")

    /// One backend, nothing known (image jobs priced at the 10 s default), jobs that take 2 s and
    /// report progress every half second. The first report (a quarter done at 0.5 s) projects
    /// the running job's end at 2 s, and its class at 2 s: the second job, submitted at 1.5 s
    /// into the backend's waiting slot, is expected to complete 2.5 s later (2 s + 2 s), not
    /// 18.5 s (10 s + 10 s). Its class (`image` with `sdxl`) was never measured nor projected,
    /// so it is priced as what its kind projected. With the kind's duration configured (10 s at
    /// speed 1.0), the same report shows the backend's speed instead (5), and the second job is
    /// expected the same 2.5 s later.
    @Test(arguments: [(0.5, nil, 2.5, 1), (nil, nil, 18.5, 1), (0.5, 10, 2.5, 5)] as [(Double?, Double?, Double, Double)])
    func progressProjectsTheRunningJobAndItsClass(
        progressEvery: Double?, imagePrior: Double?, expected: Double, speed: Double
    ) {
        var policy = CorePolicy()
        if let imagePrior { policy.jobDurationPriors = ["image": .seconds(imagePrior)] }
        let s = Scenario(
            policy: policy,
            backends: [
                Scenario.Backend(
                    id: BackendID(1), modelsAvailable: ["sdxl"], modelsLoaded: ["sdxl"], defaultJobSeconds: 2,
                    progressEvery: progressEvery)
            ],
            submissions: [
                .init(at: 0, entries: [BatchEntry(spec: Self.image)]),
                .init(at: 1.5, entries: [BatchEntry(spec: Self.sdxlImage)]),
            ])
        let r = ScenarioRunner.run(s)
        #expect(r.completions == [JobID(1): 1, JobID(2): 1])
        let bound = r.events { $0.job == JobID(2) && $0.kind == .bound }
        #expect(bound.first?.placement == Placement(expectedSeconds: expected))
        let estimates = r.coordinator.estimates(for: BackendID(1))
        #expect(estimates?.speed == speed)
        // Both jobs ended: a speed shown first by progress is measured by now.
        #expect(estimates?.speedSource == (speed == 1 ? .assumed : .measured))
    }

    /// Two backends of unknown speed, one three times slower (6 s a job against 2 s). The slow
    /// one runs a job and holds a second one in its waiting slot. With progress, the slow one's
    /// first report (a sixth done at 1 s) says its job ends at 6 s, while the fast one's (a
    /// quarter done at 0.5 s) says its own ends at 2 s: the fast backend takes the waiting job
    /// into its waiting slot at once (revoked on the slow one at 1 s). Without progress, when the
    /// fast one finishes at 2 s the class is measured at 2 s, so the slow one's running job is
    /// expected to end right then and nothing moves; the idle fast backend looks again a tenth of
    /// a job later (`relook`), when that job has overrun, and takes the waiting job at 2.2 s
    /// (before, nothing made it look again and the last job ended at 12 s). Both end at 6 s.
    @Test(arguments: [(1.0, 1.0), (nil, 2.2)] as [(Double?, Double)])
    func aProjectedEndLetsAFasterBackendTakeTheWaitingJob(progressEvery: Double?, revokedAt: Double) {
        let s = Scenario(
            backends: [
                Scenario.Backend(id: BackendID(1), defaultJobSeconds: 6, progressEvery: progressEvery),
                Scenario.Backend(id: BackendID(2), defaultJobSeconds: 2, progressEvery: progressEvery),
            ],
            submissions: [.init(at: 0, entries: [BatchEntry(spec: Self.image, count: 3)])])
        let r = ScenarioRunner.run(s)
        #expect(r.completions.count == 3 && r.completions.values.allSatisfy { $0 == 1 })
        #expect(r.makespan == 6)
        let revoked = r.events { $0.kind == .revoked }
        #expect(revoked.map(\.job) == [JobID(3)])
        #expect(revoked.map(\.backend) == [BackendID(1)])
        #expect(revoked.first?.at == .seconds(revokedAt))
        #expect(r.ranOn[JobID(3)] == BackendID(2))
    }

    /// Progress below a tenth of the work projects nothing (startup work says little about the
    /// rest), nor does progress not `timed`, nor progress while the job's model is still
    /// loading as far as the coordinator knows.
    @Test func earlyProgressAndProgressDuringALoadProjectNothing() {
        var h = Harness()
        h.ready(1, models: ["sdxl"])
        let a = h.submit(Self.image)[0]
        h.send(.jobStarted(a, backend: BackendID(1), lease: h.lease(a)))
        h.advance(to: 0.5)
        h.send(.jobProgress(a, backend: BackendID(1), lease: h.lease(a), fraction: 0.09, timed: true))
        #expect(h.core.jobClassEstimates.first { $0.kind == "image" }?.seconds == 10)
        h.advance(to: 1)
        // Not `timed`: the fraction is shown to clients, nothing is projected from it.
        h.send(.jobProgress(a, backend: BackendID(1), lease: h.lease(a), fraction: 0.5))
        #expect(h.core.jobClassEstimates.first { $0.kind == "image" }?.seconds == 10)
        h.send(.jobProgress(a, backend: BackendID(1), lease: h.lease(a), fraction: 0.5, timed: true))
        #expect(h.core.jobClassEstimates.first { $0.kind == "image" }?.seconds == 2)
        #expect(h.core.jobClassEstimates.first { $0.kind == "image" }?.measured == false)
        h.send(.jobCompleted(a, backend: BackendID(1), lease: h.lease(a), result: .emptyObject))

        // A job whose model is loading: its progress says nothing about its own duration yet.
        let b = h.submit(JobSpec(kind: "video", model: "sdxl"))[0]
        #expect(h.backend(b) == BackendID(1))
        h.send(.jobStarted(b, backend: BackendID(1), lease: h.lease(b)))
        h.advance(to: 3)
        h.send(.jobProgress(b, backend: BackendID(1), lease: h.lease(b), fraction: 0.5, timed: true))
        // The kind `video` was never seen: the 10 s default, not 4 s (2 s ÷ 0.5).
        #expect(h.core.jobClassEstimates.first { $0.kind == "video" }?.seconds == 10)
    }

    /// Speeds from progress, and the evidence a running job's move needs. Three backends of
    /// unknown speed: 1 and 2 run an image each, 3 a video. Backend 1's image projects the
    /// class at 6 s; backend 2's at 3 s, against backend 1's, shows it twice as fast (`projected`
    /// speed 2). Backend 3's video projects the video class at 20 s at speed 1, but its speed is
    /// only assumed and only it ran videos: when backend 2 (speed 2: 10 s) frees at 3 s, the
    /// video's move would rest on nothing measured between the two, and it stays. With backend
    /// 3's speed configured (1.0), the same comparison is evidence, and the video moves.
    @Test(arguments: [false, true])
    func projectedSpeedsAndTheEvidenceToMoveARunningJob(configured: Bool) {
        var h = Harness()
        h.ready(1)
        h.ready(2, features: ["video"])
        h.send(.backendRegistered(BackendRegistration(
            id: BackendID(3), name: "b3", incarnation: Incarnation(1), slots: 1, speed: configured ? 1 : nil)))
        h.announce(3, .ready, features: ["video"], revision: 1)
        let a = h.submit(Self.image)[0]
        let b = h.submit(Self.image)[0]
        let v = h.submit(JobSpec(kind: "video", needs: ["video"]))[0]
        #expect([h.backend(a), h.backend(b), h.backend(v)] == [BackendID(1), BackendID(2), BackendID(3)])
        for j in [a, b, v] { h.send(.jobStarted(j, backend: h.backend(j), lease: h.lease(j))) }
        h.advance(to: 1)
        h.send(.jobProgress(a, backend: BackendID(1), lease: h.lease(a), fraction: 1.0 / 6, timed: true))
        h.send(.jobProgress(b, backend: BackendID(2), lease: h.lease(b), fraction: 1.0 / 3, timed: true))
        #expect(h.core.estimates(for: BackendID(2))?.speed == 2)
        #expect(h.core.estimates(for: BackendID(2))?.speedSource == .projected)
        #expect(h.core.estimates(for: BackendID(1))?.speedSource == .assumed)
        h.advance(to: 2)
        h.send(.jobProgress(v, backend: BackendID(3), lease: h.lease(v), fraction: 0.1, timed: true))
        h.advance(to: 3)
        let actions = h.send(.jobCompleted(b, backend: BackendID(2), lease: h.lease(b), result: .emptyObject))
        let revoked = actions.contains { if case .revoke(v, BackendID(3), _) = $0 { true } else { false } }
        #expect(revoked == configured)
        #expect(h.backend(v) == (configured ? BackendID(2) : BackendID(3)))
    }

    /// A class nothing else ran is compared through its kind. Backend 1 measured a plain image
    /// (2 s); backend 2, the only one with sdxl, then runs the first sdxl image, 6 s. Its first
    /// report (a sixth done) teaches its speed against what backend 1 showed for images (a
    /// third) instead of pricing sdxl images at 6 s for everyone; the job's end then measures the
    /// same speed. With progress off, the measurement alone teaches it.
    @Test(arguments: [1.0, nil] as [Double?])
    func aClassNoOtherBackendRanIsComparedThroughItsKind(progressEvery: Double?) {
        let s = Scenario(
            backends: [
                Scenario.Backend(id: BackendID(1), defaultJobSeconds: 2, progressEvery: progressEvery),
                Scenario.Backend(
                    id: BackendID(2), modelsAvailable: ["sdxl"], modelsLoaded: ["sdxl"], defaultJobSeconds: 6,
                    progressEvery: progressEvery),
            ],
            submissions: [
                .init(at: 0, entries: [BatchEntry(spec: Self.image)]),
                .init(at: 3, entries: [BatchEntry(spec: Self.sdxlImage)]),
            ])
        let r = ScenarioRunner.run(s)
        #expect(r.ranOn == [JobID(1): BackendID(1), JobID(2): BackendID(2)])
        let slow = r.coordinator.estimates(for: BackendID(2))
        #expect(slow?.speedSource == .measured)
        #expect(abs((slow?.speed ?? 0) - 1.0 / 3) < 0.01)
        #expect(abs((r.coordinator.jobClassEstimates.first { $0.model == "sdxl" }?.seconds ?? 0) - 2) < 0.05)
    }
}
