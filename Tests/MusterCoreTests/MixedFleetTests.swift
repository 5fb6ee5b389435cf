import MusterCore
import MusterProtocol
import Testing

/// A fleet of mixed speeds with many job classes (feature sets times models): slower backends
/// leave jobs to faster ones, class by class, and wake them when they do.
@Suite struct MixedFleetTests {
    /// Sixty backends at speeds 1 and 3, eight features, fifty models (eight available and two
    /// loaded per backend), six hundred jobs over a thousand classes, completed one at a time in
    /// a seeded random order while new jobs arrive, then drained with the clock running. Every job
    /// ends exactly once. Before backends remembered that they had looked at an unchanged state,
    /// two free backends that each left a class to the other woke each other forever inside one
    /// dispatch: this test never returned.
    @Test func everyJobEndsWhenBackendsLeaveJobsToEachOther() throws {
        var policy = CorePolicy()
        policy.routing = .expectedCompletion
        var core = Coordinator(policy: policy)
        var rng = SplitMix64(seed: 7)
        var clock = CoreInstant.zero
        func tick() -> CoreInstant {
            clock.nanoseconds += 1000
            return clock
        }
        let features = ["video", "frameinterps", "upscale", "controlnet", "ipadapter", "lora", "inpaint", "audio"]
        let models = (0..<50).map { "model-\($0)" }
        var featureSets: [[String]] = [[]] + features.map { [$0] }
        for i in features.indices {
            for j in features.indices where j > i && featureSets.count < 20 { featureSets.append([features[i], features[j]]) }
        }
        var bound: [JobID: (BackendID, Lease)] = [:]
        var ends: [JobID: Int] = [:]
        func take(_ actions: [CoreAction]) {
            for action in actions {
                switch action {
                case .assign(let job, _, _, let backend, let lease, _): bound[job] = (backend, lease)
                case .jobEvent(let e):
                    switch e.kind {
                    case .completed, .failed, .canceled:
                        ends[e.job, default: 0] += 1
                        bound[e.job] = nil
                    default: break
                    }
                case .revoke(let job, _, _): bound[job] = nil
                default: break
                }
            }
        }
        for i in 1...60 {
            let id = BackendID(Int64(i))
            let slots = 1 + Int(rng.next() % 2)
            take(
                core.handle(
                    .backendRegistered(
                        BackendRegistration(
                            id: id, name: "gpu\(i)", incarnation: Incarnation(1), slots: slots,
                            speed: i % 2 == 0 ? 3 : 1)), at: tick()))
            var available: [String] = []
            while available.count < 8 {
                let m = models[Int(rng.next() % 50)]
                if !available.contains(m) { available.append(m) }
            }
            let snapshot = CapabilitySnapshot(
                version: CapabilityVersion(incarnation: Incarnation(1), revision: 1), state: .ready,
                features: features.filter { _ in rng.next() % 10 < 7 }, modelsAvailable: available,
                modelsLoaded: Array(available.prefix(2)), slots: slots)
            take(core.handle(.capabilities(id, snapshot), at: tick()))
        }
        func randomSpec() -> JobSpec {
            let k = Int(rng.next() % 1000)
            return JobSpec(
                kind: k % 3 == 0 ? "video" : "image", needs: featureSets[k % 20], model: models[(k / 20) % 50],
                owner: "owner\(k % 7)")
        }
        var submitted = 0
        func submit(_ n: Int) throws {
            let (receipt, actions) = try core.submit(
                key: nil, entries: (0..<n).map { _ in BatchEntry(spec: randomSpec()) }, at: tick())
            submitted += receipt.jobs.count
            take(actions)
        }
        for _ in 0..<6 { try submit(100) }
        func completeOne() {
            let jobs = bound.keys.sorted()
            let job = jobs[Int(rng.next() % UInt64(jobs.count))]
            let (backend, lease) = bound[job]!
            take(core.handle(.jobStarted(job, backend: backend, lease: lease), at: tick()))
            take(core.handle(.jobCompleted(job, backend: backend, lease: lease, result: .null), at: tick()))
        }
        for _ in 0..<600 where !bound.isEmpty {
            completeOne()
            try submit(1)
        }
        // Drain: complete what is bound; let the wait bounds pass when nothing is.
        var idleTicks = 0
        while ends.count < submitted && idleTicks < 1000 {
            if bound.isEmpty {
                clock = clock + .seconds(1)
                take(core.handle(.tick, at: clock))
                idleTicks += 1
            } else {
                completeOne()
            }
        }
        #expect(ends.count == submitted, "\(submitted - ends.count) jobs never ended")
        #expect(ends.values.allSatisfy { $0 == 1 })
    }
}
