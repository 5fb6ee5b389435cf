import MusterProtocol

/// The seeded randomized routing suite: small heterogeneous fleets played by `ScenarioRunner` on
/// its manual clock, each makespan divided by the exact optimum (`ExactOptimum`).
///
/// A scenario has 2-8 backends (some local), speeds 1-4x, one or two slots, ready delays of up to
/// 45 s, the `video` feature on some, models `sdxl`/`flux` available or loaded with load times of
/// 5-45 s, and 3-8 image and video jobs (some with a model) submitted in one to three batches over
/// the first minute. What the coordinator knows beforehand cycles with the seed (`Knowledge`).
/// Both routing rules can be played on the same scenarios.
public enum RoutingSuite {
    /// What the coordinator is told before anything was measured.
    public enum Knowledge: String, Sendable, CaseIterable {
        /// Nothing: it must measure (cold estimates).
        case none
        /// Each backend's hardware: its speed and model load time (configured or announced), not
        /// how long a kind takes.
        case speeds
        /// The hardware and each kind's duration at speed 1.0 (warm).
        case full

        init(seed: UInt64) { self = [.none, .speeds, .full][Int(seed % 3)] }
    }

    /// Which scenarios: the suite's own, or small fleets with short jobs and loads.
    public enum Family: String, Sendable, CaseIterable {
        /// 2-8 backends, loads of 5-45 s, images of 3-15 s and videos of 20-60 s at speed 1.
        case standard
        /// What a check on the real daemon plays in seconds of wall clock: 2-5 backends, loads
        /// of 1-4 s, ready delays of up to 6 s, images of 1.5-3 s and videos of 4-8 s at speed 1
        /// (0.375-8 s at speeds 1-4x), batches over the first 6 s. A progress report every second
        /// is a large part of such a job, and a load is as long as one.
        case small
    }

    /// One scenario's outcome.
    public struct Case: Sendable {
        public var seed: UInt64
        public var knowledge: Knowledge
        public var makespan: Double
        public var optimum: Double
        public var exact: Bool
        public var ratio: Double { optimum > 0 ? makespan / optimum : 1 }
    }

    /// Mean and worst of `makespan / optimum` over a run.
    public struct Summary: Sendable {
        public var cases: [Case]
        public var mean: Double { cases.isEmpty ? 1 : cases.map(\.ratio).reduce(0, +) / Double(cases.count) }
        public var worst: Case? { cases.max { $0.ratio < $1.ratio } }
        /// Cases whose optimum was proven (the node budget never ran out).
        public var exactCount: Int { cases.filter(\.exact).count }
        /// Every job completed exactly once in every case.
        public var allCompleted = true
        /// Seeds where some job did not complete exactly once.
        public var incomplete: [UInt64] = []

        public init(cases: [Case]) { self.cases = cases }
    }

    /// The scenario of one seed, routed with `rule`. Running jobs report `progress` every second
    /// (as `muster agent` does) unless `progress` is false; `speculative` is
    /// `CorePolicy.speculativeBackups` (the default policy's unless given).
    public static func scenario(
        seed: UInt64, rule: RoutingRule = .expectedCompletion, progress: Bool = true, announced: Bool = false,
        speculative: Bool = CorePolicy().speculativeBackups, family: Family = .standard
    ) -> Scenario {
        let small = family == .small
        var rng = SplitMix64(seed: seed &* 0x9E37_79B9 &+ 17)
        func pick<T>(_ xs: [T]) -> T { xs[Int(rng.next() % UInt64(xs.count))] }
        func chance(_ p: Double) -> Bool { Double(rng.next() % 1_000_000) / 1_000_000 < p }
        let knowledge = Knowledge(seed: seed)
        let imageBase = small ? pick([1.5, 2, 3]) : pick([3.0, 6, 10, 15])
        let videoBase = small ? pick([4.0, 6, 8]) : pick([20.0, 40, 60])
        let count = small ? 2 + Int(rng.next() % 4) : 2 + Int(rng.next() % 7)
        let locals = Int(rng.next() % 3)
        var backends: [Scenario.Backend] = []
        var loadSum = 0.0
        for i in 0..<count {
            let local = i < locals
            let id = local ? BackendID(Int64(-(i + 1))) : BackendID(Int64(i + 1 - locals))
            let speed = pick([1.0, 1.5, 2, 3, 4])
            var features: [String] = []
            if chance(0.6) { features.append("video") }
            var available: [String] = []
            var loaded: [String] = []
            for m in ["flux", "sdxl"] where chance(0.7) {
                available.append(m)
                if chance(0.4) { loaded.append(m) }
            }
            let load = small ? pick([1.0, 2, 3, 4]) : pick([5.0, 15, 30, 45])
            loadSum += load
            backends.append(
                Scenario.Backend(
                    id: id, slots: chance(0.2) ? 2 : 1,
                    announceAfter: local ? 0 : small ? pick([0.0, 0, 0, 1, 3, 6]) : pick([0.0, 0, 0, 10, 30, 45]),
                    features: features, modelsAvailable: available, modelsLoaded: loaded,
                    jobSeconds: ["image": imageBase / speed, "video": videoBase / speed],
                    defaultJobSeconds: imageBase / speed, loadSeconds: load, speed: knowledge == .none ? nil : speed,
                    loadPrior: knowledge == .none ? nil : load, progressEvery: progress ? 1 : nil,
                    announcesDurations: announced))
        }
        if !backends.contains(where: { $0.features.contains("video") }) {
            backends[Int(rng.next() % UInt64(count))].features.append("video")
        }
        var jobsLeft = 3 + Int(rng.next() % 6)
        var submissions: [Scenario.Submission] = []
        var at = 0.0
        while jobsLeft > 0 {
            let n = submissions.isEmpty && chance(0.3) ? jobsLeft : min(jobsLeft, 1 + Int(rng.next() % 4))
            var entries: [BatchEntry] = []
            for _ in 0..<n {
                let video = chance(0.35)
                var model: String? = chance(0.4) ? pick(["flux", "sdxl"]) : nil
                let needs = video ? ["video"] : []
                // Every job must be runnable somewhere, or the suite measures failures.
                if let m = model,
                    !backends.contains(where: {
                        Set(needs).isSubset(of: $0.features) && ($0.modelsAvailable.contains(m))
                    })
                {
                    model = nil
                }
                entries.append(BatchEntry(spec: JobSpec(kind: video ? "video" : "image", needs: needs, model: model)))
            }
            submissions.append(Scenario.Submission(at: at, entries: entries))
            jobsLeft -= n
            at += small ? pick([0.0, 1, 3, 6]) : pick([0.0, 5, 15, 30])
        }
        var policy = CorePolicy()
        policy.routing = rule
        policy.speculativeBackups = speculative
        if knowledge == .full {
            policy.jobDurationPriors = ["image": .seconds(imageBase), "video": .seconds(videoBase)]
            policy.defaultModelLoadTime = .milliseconds(Int64(loadSum / Double(count) * 1000))
        }
        return Scenario(policy: policy, backends: backends, submissions: submissions, horizon: 10_000)
    }

    /// Runs seeds `seeds` under `rule`; optima are computed once per seed and may be passed in.
    public static func run(
        seeds: Range<UInt64>, rule: RoutingRule, progress: Bool = true, announced: Bool = false,
        speculative: Bool = CorePolicy().speculativeBackups, family: Family = .standard,
        optima: [UInt64: ExactOptimum.Result]? = nil, clockOrigin: UInt64 = 0
    ) -> Summary {
        var summary = Summary(cases: [])
        for seed in seeds {
            var s = scenario(
                seed: seed, rule: rule, progress: progress, announced: announced, speculative: speculative, family: family)
            s.clockOrigin = clockOrigin
            let optimum = optima?[seed] ?? ExactOptimum.solve(s)
            let r = ScenarioRunner.run(s)
            let jobs = s.submissions.reduce(0) { $0 + $1.entries.reduce(0) { $0 + $1.count } }
            if r.completions.count != jobs || !r.completions.values.allSatisfy({ $0 == 1 }) {
                summary.allCompleted = false
                summary.incomplete.append(seed)
            }
            let first = s.submissions.map(\.at).min() ?? 0
            summary.cases.append(
                Case(
                    seed: seed, knowledge: Knowledge(seed: seed), makespan: r.makespan, optimum: optimum.end - first,
                    exact: optimum.exact))
        }
        return summary
    }

    /// One seed's fleet, jobs and placements under `rule`, for explaining a case.
    public static func describe(
        seed: UInt64, rule: RoutingRule, progress: Bool = true, announced: Bool = false, family: Family = .standard
    ) -> String {
        let s = scenario(seed: seed, rule: rule, progress: progress, announced: announced, family: family)
        let r = ScenarioRunner.run(s)
        let optimum = ExactOptimum.solve(s)
        var lines = ["seed \(seed) (knows \(Knowledge(seed: seed).rawValue)), \(rule.rawValue): makespan \(r.makespan) s, optimum \(optimum.end) s"]
        for b in s.backends {
            let ready = b.announceAfter.map { "ready at \(b.registerAt + $0)" } ?? "never ready"
            lines.append(
                "  backend \(b.id): \(b.slots) slot(s), \(ready), image \(b.seconds(for: "image")) s, "
                    + "video \(b.seconds(for: "video")) s, features \(b.features), models \(b.modelsAvailable) "
                    + "loaded \(b.modelsLoaded), load \(b.loadSeconds) s")
        }
        var ends: [JobID: Double] = [:]
        for (at, action) in r.trace {
            if case .jobEvent(let e) = action, case .completed = e.kind { ends[e.job] = at }
        }
        var n = 0
        for sub in s.submissions {
            lines.append("  batch at \(sub.at)")
            for entry in sub.entries {
                for _ in 0..<entry.count {
                    n += 1
                    let job = JobID(UInt64(n))
                    lines.append(
                        "  job \(n) at \(sub.at): \(entry.spec.kind) model \(entry.spec.model ?? "-") -> backend "
                            + "\(r.ranOn[job].map { "\($0)" } ?? "?") started \(r.startedAt[job] ?? -1) ended \(ends[job] ?? -1)")
                }
            }
        }
        return lines.joined(separator: "\n")
    }
}
