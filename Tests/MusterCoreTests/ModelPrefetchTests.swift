import MusterProtocol
import Testing

@testable import MusterCore

/// Prefetching a model (`CorePolicy.prefetchModels`, README "Prefetching a model").
@Suite struct ModelPrefetchTests {
    /// Everything known (speeds, durations, load times). An `sdxl` image at 0 s runs on backend
    /// 1, which has `sdxl` loaded (2 s there; backend 2 would load for 4 s first). Backend 2,
    /// four times as fast, idle and with nothing loaded, prefetches `sdxl` at 0 s; backend 3,
    /// as fast but with `flux` loaded, does not (a load could evict `flux`). An `sdxl` video at
    /// 6 s then starts on backend 2 at once and ends at 8 s. Without the prefetch, backend 2
    /// loads `sdxl` for the video at 6 s and it ends at 12 s (small-fleet seed 593 knowing
    /// everything: 1.385 to 1.0).
    @Test func anIdleBackendWithNothingLoadedPrefetchesTheModelAQueuedJobNeeded() {
        func run(prefetch: Bool) -> ScenarioReport {
            var policy = CorePolicy()
            policy.prefetchModels = prefetch
            policy.jobDurationPriors = ["image": .seconds(2), "video": .seconds(8)]
            return ScenarioRunner.run(
                Scenario(
                    policy: policy,
                    backends: [
                        Scenario.Backend(
                            id: BackendID(1), modelsAvailable: ["sdxl"], modelsLoaded: ["sdxl"],
                            jobSeconds: ["image": 2, "video": 8], speed: 1),
                        Scenario.Backend(
                            id: BackendID(2), modelsAvailable: ["sdxl"], jobSeconds: ["image": 0.5, "video": 2],
                            loadSeconds: 4, speed: 4, loadPrior: 4),
                        Scenario.Backend(
                            id: BackendID(3), modelsAvailable: ["sdxl", "flux"], modelsLoaded: ["flux"],
                            jobSeconds: ["image": 0.5, "video": 2], loadSeconds: 4, speed: 4, loadPrior: 4),
                    ],
                    submissions: [
                        .init(entries: [BatchEntry(spec: JobSpec(kind: "image", model: "sdxl"))]),
                        .init(at: 6, entries: [BatchEntry(spec: JobSpec(kind: "video", model: "sdxl"))]),
                    ], horizon: 100))
        }
        let r = run(prefetch: true)
        let loads = r.loadRequests("sdxl")
        #expect(loads.count == 1 && loads.first?.0 == 0 && loads.first?.1 == BackendID(2) && loads.first?.2 == .prefetch, "\(loads)")
        #expect(r.ranOn[JobID(1)] == BackendID(1) && r.ranOn[JobID(2)] == BackendID(2))
        #expect(r.completions.count == 2 && r.completions.values.allSatisfy { $0 == 1 })
        #expect(r.makespan == 8)
        let without = run(prefetch: false)
        #expect(without.ranOn[JobID(2)] == BackendID(2))
        #expect(without.makespan == 12)
    }

    /// A prefetch is asked once per model and backend: after the backend reports the load failed
    /// (`load_model_result` with `ok: false`), idle again, it does not ask for it again, where an
    /// idle backend would otherwise ask at every look.
    @Test func aPrefetchThatFailedIsNotAskedAgain() {
        var h = Harness()
        h.ready(1, models: ["sdxl"], loaded: ["sdxl"])
        h.ready(2, models: ["sdxl"])
        let job = h.submit(JobSpec(kind: "image", model: "sdxl"))[0]
        #expect(h.backend(job) == BackendID(1))
        let prefetches = h.all.compactMap { a -> BackendID? in
            if case .observe(.modelLoadRequested(let b, "sdxl", .prefetch)) = a { b } else { nil }
        }
        #expect(prefetches == [BackendID(2)])
        #expect(h.all.contains { if case .loadModel(BackendID(2), "sdxl") = $0 { true } else { false } })
        h.send(.modelLoadFailed(BackendID(2), model: "sdxl"))
        // Backend 2 runs a plain image and, idle again, looks again: no second prefetch.
        h.advance(to: 1)
        let plain = h.submit(JobSpec(kind: "image"))[0]
        #expect(h.backend(plain) == BackendID(2))
        h.send(.jobStarted(plain, backend: BackendID(2), lease: h.lease(plain)))
        h.advance(to: 2)
        h.send(.jobCompleted(plain, backend: BackendID(2), lease: h.lease(plain), result: .emptyObject))
        #expect(h.state(plain) == .completed)
        h.advance(to: 3)
        let loads = h.all.filter { if case .loadModel(BackendID(2), _) = $0 { true } else { false } }
        #expect(loads.count == 1, "\(loads)")
    }
}
