import MusterCore
import MusterProtocol
import Testing

/// The exact optimum on hand-solved fleets, and the seeded randomized routing suite.
@Suite struct RoutingSuiteTests {
    static let video = JobSpec(kind: "video", needs: ["video"])

    @Test func exactOptimumPutsBothJobsOnTheFastBackend() {
        // Two slow idle backends (30 s per job) and a fast one (10 s): both jobs on the fast one.
        let s = Scenario(
            backends: [
                Scenario.Backend(id: BackendID(-1), features: ["video"], defaultJobSeconds: 30),
                Scenario.Backend(id: BackendID(-2), features: ["video"], defaultJobSeconds: 30),
                Scenario.Backend(id: BackendID(1), features: ["video"], defaultJobSeconds: 10),
            ],
            submissions: [.init(entries: [BatchEntry(spec: Self.video, count: 2)])])
        let r = ExactOptimum.solve(s)
        #expect(r.exact)
        #expect(r.end == 20)
    }

    @Test func exactOptimumCountsReadyTimesLoadsAndArrivals() {
        // Backend 1 is ready at 40 and runs a job in 10 s; backend -1 is ready now, needs 15 s to
        // load sdxl, then 30 s per job. Three sdxl jobs at 0 and one more at 50.
        let s = Scenario(
            backends: [
                Scenario.Backend(
                    id: BackendID(-1), modelsAvailable: ["sdxl"], defaultJobSeconds: 30, loadSeconds: 15),
                Scenario.Backend(
                    id: BackendID(1), announceAfter: 40, modelsLoaded: ["sdxl"], defaultJobSeconds: 10),
            ],
            submissions: [
                .init(at: 0, entries: [BatchEntry(spec: JobSpec(kind: "image", model: "sdxl"), count: 3)]),
                .init(at: 50, entries: [BatchEntry(spec: JobSpec(kind: "image", model: "sdxl"))]),
            ])
        let r = ExactOptimum.solve(s)
        #expect(r.exact)
        // -1 loads until 15 and runs one job until 45; 1 runs the other two 40-60 and the late one
        // 60-70. Any other split ends later (two on -1 end at 75).
        #expect(r.end == 70)
    }

    @Test func exactOptimumNeverBeatsItsOwnFeasibilityRules() {
        // Slots: a two-slot backend runs two jobs at once; features exclude the other backend.
        let s = Scenario(
            backends: [
                Scenario.Backend(id: BackendID(1), slots: 2, features: ["video"], defaultJobSeconds: 20),
                Scenario.Backend(id: BackendID(2), defaultJobSeconds: 1),
            ],
            submissions: [.init(entries: [BatchEntry(spec: Self.video, count: 3)])])
        let r = ExactOptimum.solve(s)
        #expect(r.exact)
        #expect(r.end == 40)
    }

    static let seeds: Range<UInt64> = 0..<240

    /// The suite's scenarios played with the core's clock starting where `muster serve` starts
    /// it (wall-clock nanoseconds since 1970: about 1.8e9 s) decide exactly as from zero. With
    /// a tie margin of 1e-9 of the times compared, 1.8 s there, a backend up to 1.8 s sooner did
    /// not count as sooner on the daemon: 23 of these 720 runs decided otherwise, and the worst
    /// case announcing durations went from 1.25 to 2.0 (an outside check on the real daemon, cold
    /// seed 58: a `sdxl` image taken by a backend expected to finish it 0.5 s later than the
    /// runner-up).
    @Test func theClockOriginDoesNotChangeADecision() {
        let wallClock: UInt64 = 1_800_000_000 * 1_000_000_000
        var optima: [UInt64: ExactOptimum.Result] = [:]
        for seed in Self.seeds { optima[seed] = ExactOptimum.solve(RoutingSuite.scenario(seed: seed)) }
        for (progress, announced) in [(true, false), (false, false), (true, true)] {
            let zero = RoutingSuite.run(
                seeds: Self.seeds, rule: .expectedCompletion, progress: progress, announced: announced, optima: optima)
            let late = RoutingSuite.run(
                seeds: Self.seeds, rule: .expectedCompletion, progress: progress, announced: announced, optima: optima,
                clockOrigin: wallClock)
            for (a, b) in zip(zero.cases, late.cases) {
                #expect(abs(a.makespan - b.makespan) < 1e-6, "seed \(a.seed), progress \(progress), announced \(announced): \(a.makespan) from zero, \(b.makespan) from 1.8e9 s")
            }
        }
    }

    /// Both rules on the same 240 scenarios: the optimum is a lower bound for every run, every
    /// job completes exactly once, and the expected-completion rule beats the old one and stays
    /// at today's figures.
    @Test func randomizedSuiteAgainstTheExactOptimum() {
        var optima: [RoutingSuite.Family: [UInt64: ExactOptimum.Result]] = [:]
        for family in RoutingSuite.Family.allCases {
            for seed in Self.seeds {
                optima[family, default: [:]][seed] = ExactOptimum.solve(RoutingSuite.scenario(seed: seed, family: family))
            }
            #expect(optima[family]!.values.allSatisfy { $0.exact })
        }
        var lines: [String] = []
        var summaries: [String: RoutingSuite.Summary] = [:]
        let runs = [
            ("leastLoaded", RoutingRule.leastLoaded, true, false, true, RoutingSuite.Family.standard),
            ("expectedCompletion", .expectedCompletion, true, false, true, .standard),
            ("expectedCompletion without progress", .expectedCompletion, false, false, true, .standard),
            ("expectedCompletion, backends announce durations", .expectedCompletion, true, true, true, .standard),
            ("expectedCompletion, speculative backups off", .expectedCompletion, true, false, false, .standard),
            ("expectedCompletion without progress, speculative backups off", .expectedCompletion, false, false, false, .standard),
            ("small: leastLoaded", .leastLoaded, true, false, true, .small),
            ("small: expectedCompletion", .expectedCompletion, true, false, true, .small),
            ("small: expectedCompletion without progress", .expectedCompletion, false, false, true, .small),
            ("small: expectedCompletion, backends announce durations", .expectedCompletion, true, true, true, .small),
            ("small: expectedCompletion, speculative backups off", .expectedCompletion, true, false, false, .small),
            ("small: expectedCompletion without progress, speculative backups off", .expectedCompletion, false, false, false, .small),
        ]
        for (name, rule, progress, announced, speculative, family) in runs {
            let summary = RoutingSuite.run(
                seeds: Self.seeds, rule: rule, progress: progress, announced: announced, speculative: speculative,
                family: family, optima: optima[family])
            summaries[name] = summary
            #expect(summary.allCompleted, "\(name): incomplete seeds \(summary.incomplete)")
            for c in summary.cases {
                #expect(c.makespan >= c.optimum - 1e-6, "seed \(c.seed): \(c.makespan) beats the optimum \(c.optimum)")
            }
            let run = name
            var parts = [("all", summary.cases)]
            for k in RoutingSuite.Knowledge.allCases {
                parts.append(("knows \(k.rawValue)", summary.cases.filter { $0.knowledge == k }))
            }
            for (name, cases) in parts {
                let part = RoutingSuite.Summary(cases: cases)
                let worst = part.worst!
                lines.append(
                    "\(run) \(name): \(cases.count) scenarios, mean \(fmt(part.mean)), worst \(fmt(worst.ratio)) "
                        + "(seed \(worst.seed): \(fmt(worst.makespan)) s vs \(fmt(worst.optimum)) s)")
            }
        }
        print("routing suite, makespan / optimum:\n" + lines.joined(separator: "\n"))
        // The worst cases, placement by placement.
        for k in RoutingSuite.Knowledge.allCases {
            let cases = summaries["expectedCompletion"]!.cases.filter { $0.knowledge == k }
            for c in cases.sorted(by: { $0.ratio > $1.ratio }).prefix(3) {
                print(RoutingSuite.describe(seed: c.seed, rule: .expectedCompletion))
            }
        }
        let ect = summaries["expectedCompletion"]!
        let old = summaries["leastLoaded"]!
        #expect(ect.mean <= old.mean)
        // What running jobs' progress tells the coordinator pays off on average.
        #expect(ect.mean <= summaries["expectedCompletion without progress"]!.mean)
        // Backends that say how long their jobs take (`job_seconds`, as `muster agent` does) are
        // placed better than ones the coordinator must measure.
        let announced = summaries["expectedCompletion, backends announce durations"]!
        #expect(announced.mean <= ect.mean)
        // The target for the mean (1.05), met by what `muster agent` announces.
        #expect(announced.mean <= 1.035, "backends announce durations: mean \(announced.mean)")
        // The worst-case target (1.25), met announcing durations (README's table).
        #expect((announced.worst?.ratio ?? 1) <= 1.25, "backends announce durations: worst \(String(describing: announced.worst))")
        // Guards against regressions: today's figures with a little room (README's table).
        let warm = RoutingSuite.Summary(cases: ect.cases.filter { $0.knowledge == .full })
        #expect(warm.mean <= 1.03, "expected completion knowing everything: mean \(warm.mean)")
        // The worst-case target (1.25), met knowing everything.
        #expect((warm.worst?.ratio ?? 1) <= 1.25, "expected completion knowing everything: worst \(String(describing: warm.worst))")
        // The target for the mean (1.05), over every row of knowledge.
        #expect(ect.mean <= 1.05, "expected completion: mean \(ect.mean)")
        // The worst-case target (1.25), over every row of knowledge: cold, knowing the
        // hardware only, and warm.
        #expect((ect.worst?.ratio ?? 1) <= 1.25 + 1e-9, "expected completion: worst \(String(describing: ect.worst))")
        // Speculative backups (on by default) pay off on average where backends must be measured
        // (README "Backup runs"), with progress reports and without, in both families.
        for prefix in ["", "small: "] {
            let on = summaries[prefix + "expectedCompletion"]!.mean
            #expect(on < summaries[prefix + "expectedCompletion, speculative backups off"]!.mean, "\(prefix)with progress")
            let blind = summaries[prefix + "expectedCompletion without progress"]!.mean
            #expect(blind < summaries[prefix + "expectedCompletion without progress, speculative backups off"]!.mean, "\(prefix)without progress")
        }
        // Small fleets with short jobs: expected completion ahead of the old rule, warm within
        // the targets, and today's figures with a little room as a guard (README's table).
        let small = summaries["small: expectedCompletion"]!
        #expect(small.mean < summaries["small: leastLoaded"]!.mean)
        let smallWarm = RoutingSuite.Summary(cases: small.cases.filter { $0.knowledge == .full })
        #expect(smallWarm.mean <= 1.05 && (smallWarm.worst?.ratio ?? 1) <= 1.25 + 1e-9, "small, warm: \(smallWarm.mean), \(String(describing: smallWarm.worst))")
        #expect(small.mean <= 1.06, "small: mean \(small.mean)")
    }

    func fmt(_ x: Double) -> String {
        let r = (x * 1000).rounded() / 1000
        return String(r)
    }
}

/// The suite's former worst cases knowing the hardware (speeds and load times) but not how long
/// a kind takes, each reaching its optimum or close by the rule named.
@Suite struct RoutingSuiteWorstCaseTests {
    static func observations(_ r: ScenarioReport) -> [(at: Double, Observation)] {
        r.trace.compactMap { if case .observe(let o) = $0.action { ($0.at, o) } else { nil } }
    }

    /// Seed 223: a plain video and a `flux` video, two video backends equally fast (-2 and 2) and
    /// neither with `flux` loaded (-2 loads it in 5 s, 2 in 30 s). The `flux` video takes -2 and
    /// its load starts; the plain video, guessed shorter than the load, would have filled -2's
    /// slot meanwhile (a backfill), ran 10 s and held the `flux` video back 5 s. A backfill now
    /// yields a tie to a backend of known speed that finishes the job as soon: backend 2 runs it.
    @Test func aBackfillYieldsATieToABackendThatFinishesAsSoon() {
        let s = RoutingSuite.scenario(seed: 223)
        let r = ScenarioRunner.run(s)
        #expect(r.ranOn[JobID(1)] == BackendID(2) && r.ranOn[JobID(2)] == BackendID(-2))
        #expect(abs(r.makespan - ExactOptimum.solve(s).end) < 1e-6, "makespan \(r.makespan)")
    }

    /// Seed 49: the video is released onto backend 2 (speed 3) while backend 3 (speed 4) runs an
    /// image; at 2 s its progress shows it takes 13.3 s there. Backend 3, idle and of known speed,
    /// runs a backup expected to end at 12 s. When an image arrives at 5 s, the backup would have
    /// given way to it; expected to win, it becomes the binding instead (`won` at 5 s), and the
    /// image runs on backend 2.
    @Test func aBackupOfKnownSpeedExpectedToWinBecomesTheBinding() {
        let r = ScenarioRunner.run(RoutingSuite.scenario(seed: 49))
        let backups = Self.observations(r).compactMap { (at, o) -> (Double, BackendID, BackupOutcome)? in
            if case .backup(JobID(2), let b, let outcome) = o { (at, b, outcome) } else { nil }
        }
        #expect(backups.map(\.1) == [BackendID(3), BackendID(3)] && backups.map(\.2) == [.started, .won])
        #expect(backups.last.map { abs($0.0 - 5) < 1e-9 } == true)
        #expect(r.ranOn[JobID(2)] == BackendID(3) && r.ranOn[JobID(3)] == BackendID(2))
        #expect(abs(r.makespan - 12) < 1e-6, "makespan \(r.makespan)")
    }

    /// Seed 214: two batches of a video and images; backend 1 (speed 4, two slots) runs the first
    /// video and an image, with another image bound behind them. At 1 s the video's progress shows
    /// videos take 10 s there: the second video would end at 17.5 s behind the bound image. The
    /// image moves to backend 2 (`displace`, now that the video's length was shown by progress),
    /// and the second video goes ahead of its batch's image, shown much shorter
    /// (`longestOfBatch`): both videos end by 13.75 s, the optimum.
    @Test func aLongJobShownByProgressDisplacesAndGoesFirst() {
        let s = RoutingSuite.scenario(seed: 214)
        let r = ScenarioRunner.run(s)
        let stolen = Self.observations(r).compactMap { (at, o) -> JobID? in
            if case .stolen(let job, BackendID(1), BackendID(2)) = o, abs(at - 1) < 1e-9 { job } else { nil }
        }
        #expect(stolen == [JobID(1)])
        #expect(r.ranOn[JobID(5)] == BackendID(1) && r.startedAt[JobID(5)].map { abs($0 - 3.75) < 1e-9 } == true)
        #expect(abs(r.makespan - ExactOptimum.solve(s).end) < 1e-6, "makespan \(r.makespan)")
    }
}

/// Cases an outside check found on the real daemon with `muster agent` processes.
@Suite struct OutsideRoutingCaseTests {
    /// Backend 1 (speed 1, `video`) runs a video (7 s) with a plain image (3 s) bound behind it;
    /// backend 2 (speed 1.5, `video`, `flux` available, loads in 3 s) announces at 0.7 s and takes
    /// the `flux` image held for it. Nothing queued can fill its slot while `flux` loads, so the
    /// plain image moves there and runs during the load (0.7 to 2.7 s), and the `flux` image is
    /// bound after it: both end by 5.7 s, the video at 7 s. (It was bound at once and held the slot
    /// through the load; work stealing then put the plain image behind it, ending at 7.7 s, and a
    /// later image behind the video: 1.43 on the real daemon.)
    @Test func aJobBoundElsewhereFillsTheSlotWhileAModelLoads() {
        var policy = CorePolicy()
        policy.routing = .expectedCompletion
        let b1 = Scenario.Backend(
            id: BackendID(1), features: ["video"], jobSeconds: ["image": 3, "video": 7], defaultJobSeconds: 3,
            speed: 1, announcesDurations: true)
        let b2 = Scenario.Backend(
            id: BackendID(2), announceAfter: 0.7, features: ["video"], modelsAvailable: ["flux"],
            jobSeconds: ["image": 2, "video": 7 / 1.5], defaultJobSeconds: 2, loadSeconds: 3, speed: 1.5, loadPrior: 3,
            announcesDurations: true)
        let batch = [
            BatchEntry(spec: JobSpec(kind: "image", model: "flux")), BatchEntry(spec: JobSpec(kind: "video", needs: ["video"])),
            BatchEntry(spec: JobSpec(kind: "image")),
        ]
        let r = ScenarioRunner.run(
            Scenario(policy: policy, backends: [b1, b2], submissions: [.init(at: 0, entries: batch)], horizon: 100))
        #expect(r.completions.count == 3 && r.completions.values.allSatisfy { $0 == 1 })
        #expect(r.ranOn[JobID(3)] == BackendID(2) && r.startedAt[JobID(3)].map { abs($0 - 0.7) < 1e-6 } == true)
        #expect(r.ranOn[JobID(1)] == BackendID(2) && r.ranOn[JobID(2)] == BackendID(1))
        #expect(abs(r.makespan - 7) < 1e-6, "makespan \(r.makespan)")
    }

    /// A backend that alone can run queued jobs leaves a job that another finishes not much
    /// later. Backend 1 (image 0.5 s, no `video`, loads `flux` in 3 s) and backend 2 (image 2 s,
    /// video 6 s, the only `video` backend, loads `flux` in 1 s), durations announced. A `flux`
    /// image, then a video: backend 2 would end the image first (1 + 2 = 3 s against 3.5 s), but
    /// the video it alone can run would wait those 3 s behind it (9 s). The image is left to
    /// backend 1 (3.5 s) and the video starts at once (6 s, the optimum). (Small-fleet seed 195
    /// announcing durations: 1.5 to 1.0.)
    @Test func aBackendThatAloneCanRunQueuedJobsLeavesAJobAnotherFinishesSoonEnough() {
        var policy = CorePolicy()
        policy.routing = .expectedCompletion
        let b1 = Scenario.Backend(
            id: BackendID(1), modelsAvailable: ["flux"], jobSeconds: ["image": 0.5, "video": 1.5],
            defaultJobSeconds: 0.5, loadSeconds: 3, loadPrior: 3, announcesDurations: true)
        let b2 = Scenario.Backend(
            id: BackendID(2), features: ["video"], modelsAvailable: ["flux"], jobSeconds: ["image": 2, "video": 6],
            defaultJobSeconds: 2, loadSeconds: 1, loadPrior: 1, announcesDurations: true)
        let batch = [
            BatchEntry(spec: JobSpec(kind: "image", model: "flux")), BatchEntry(spec: JobSpec(kind: "video", needs: ["video"])),
        ]
        let r = ScenarioRunner.run(
            Scenario(policy: policy, backends: [b1, b2], submissions: [.init(at: 0, entries: batch)], horizon: 100))
        #expect(r.completions.count == 2 && r.completions.values.allSatisfy { $0 == 1 })
        #expect(r.ranOn[JobID(1)] == BackendID(1) && r.ranOn[JobID(2)] == BackendID(2))
        #expect(r.startedAt[JobID(2)] == 0)
        #expect(abs(r.makespan - 6) < 1e-6, "makespan \(r.makespan)")
    }

    /// A job left to a busy backend that must load its model has the load started when it is
    /// left there. Cold (nothing announced but load times; progress every second): backend 1
    /// (3 s per image, `sdxl` loads in 1.5 s) is ready at once, backend 2 (1 s per image, loads
    /// `sdxl` in 4 s) at 0.96 s. At 3.5 s three images arrive; backend 2 takes the two plain ones
    /// (both its slots), and backend 1, free to queue one behind its running `sdxl` image (ends
    /// at 6 s, so 9 s), leaves the `sdxl` image to backend 2 (its load from 3.5 s ends at 7.5 s:
    /// 8.5 s). Its `load_model` goes out at 3.5 s. (It went out only when backend 2 looked
    /// itself, a slot freed at 4.5 s: then 9.5 s there, backend 1 the sooner, 9 s; 1.29 against
    /// the optimum on the real daemon, cold seed 58 of an outside check.)
    @Test func aJobLeftToABusyBackendHasItsModelLoadStartedThere() {
        var policy = CorePolicy()
        policy.routing = .expectedCompletion
        // Backend 2 would prefetch `sdxl` when it announces, idle with nothing loaded.
        policy.prefetchModels = false
        let sdxl = JobSpec(kind: "image", model: "sdxl")
        let image = JobSpec(kind: "image")
        let r = ScenarioRunner.run(
            Scenario(
                policy: policy,
                backends: [
                    Scenario.Backend(
                        id: BackendID(1), modelsAvailable: ["sdxl"], defaultJobSeconds: 3, loadSeconds: 1.5, loadPrior: 1.5,
                        progressEvery: 1),
                    Scenario.Backend(
                        id: BackendID(2), announceAfter: 0.96, modelsAvailable: ["sdxl"], defaultJobSeconds: 1, loadSeconds: 4,
                        loadPrior: 4, progressEvery: 1),
                ],
                submissions: [
                    .init(entries: [BatchEntry(spec: sdxl), BatchEntry(spec: image), BatchEntry(spec: image)]),
                    .init(at: 3.5, entries: [BatchEntry(spec: image), BatchEntry(spec: sdxl), BatchEntry(spec: image)]),
                ], horizon: 100))
        #expect(r.completions.count == 6 && r.completions.values.allSatisfy { $0 == 1 })
        let loads = r.trace.compactMap { t, a -> Double? in
            if case .loadModel(let b, "sdxl") = a, b == BackendID(2) { return t }
            return nil
        }
        #expect(loads == [3.5], "\(loads)")
        #expect(r.ranOn[JobID(5)] == BackendID(2))
        #expect(abs(r.makespan - 8.5) < 1e-6, "makespan \(r.makespan)")
    }

    /// Nothing announced (no speeds, no durations, no progress: `muster agent --exec`). A video
    /// is released onto backend 2, four times slower than backend 1, which announces a moment
    /// later and then runs two images. Those measure the image at 0.75 s, so backend 2's first
    /// image, running since 0, is a straggler: backend 1, idle, runs a backup of it, which wins at
    /// 2.6 s. The run it outran measures backend 2 at least 3.5 times slower than backend 1: the
    /// video there is now expected to take 35 s or more, and backend 1 takes it at once (4.35 s).
    /// (Nothing made the idle backend look again: the video stayed until a third backend
    /// announced at 5.97 s and took it, 9.47 s; 3.16 against the optimum on the real daemon. Then,
    /// with the backup but without the sample of the run it outran, backend 2 was never measured
    /// and the video ran there to 7.8 s.) That is with backups of stragglers only (the default);
    /// with speculative backups backend 1 copies the video as soon as it is idle, at
    /// 0.97 s, gives way to the images at 1.1 s, copies it again at 1.85 s and wins at 3.6 s
    /// (`anIdleBackendOfAssumedSpeedCopiesARunningJob`).
    @Test(arguments: [false, true])
    func aSpeedMeasuredMuchSlowerMakesIdleBackendsLookAgain(speculative: Bool) {
        var policy = CorePolicy()
        policy.routing = .expectedCompletion
        policy.speculativeBackups = speculative
        func backend(
            _ id: Int64, _ speed: Double, slots: Int, after: Double, features: [String], models: [String], loaded: [String],
            load: Double
        ) -> Scenario.Backend {
            Scenario.Backend(
                id: BackendID(id), slots: slots, announceAfter: after, features: features, modelsAvailable: models,
                modelsLoaded: loaded, jobSeconds: ["image": 3 / speed, "video": 7 / speed], defaultJobSeconds: 3 / speed,
                loadSeconds: load, loadPrior: load)
        }
        let backends = [
            backend(1, 4, slots: 2, after: 0.97, features: ["video"], models: ["flux", "sdxl"], loaded: [], load: 3),
            backend(2, 1, slots: 2, after: 0, features: ["video"], models: ["sdxl"], loaded: ["sdxl"], load: 4),
            backend(3, 2, slots: 1, after: 5.97, features: ["video"], models: ["flux"], loaded: [], load: 4),
            backend(4, 1.5, slots: 1, after: 0, features: [], models: ["sdxl"], loaded: ["sdxl"], load: 1),
            backend(5, 2, slots: 1, after: 0, features: [], models: ["flux", "sdxl"], loaded: ["flux"], load: 2),
        ]
        let image = BatchEntry(spec: JobSpec(kind: "image"))
        let submissions: [Scenario.Submission] = [
            .init(at: 0, entries: [image, image]),
            .init(
                at: 0.8,
                entries: [BatchEntry(spec: JobSpec(kind: "video", needs: ["video"])), BatchEntry(spec: JobSpec(kind: "image", model: "flux"))]),
            .init(at: 1.1, entries: [image, image]),
        ]
        let r = ScenarioRunner.run(Scenario(policy: policy, backends: backends, submissions: submissions, horizon: 100))
        #expect(r.completions.count == 6 && r.completions.values.allSatisfy { $0 == 1 })
        let moves = r.trace.compactMap { (at, a) -> (Double, BackendID, BackendID)? in
            if case .observe(.stolen(JobID(3), let from, let to)) = a { (at, from, to) } else { nil }
        }
        if speculative {
            let won = r.trace.compactMap { (at, a) -> Double? in
                if case .observe(.backup(JobID(3), BackendID(1), .won)) = a { at } else { nil }
            }
            #expect(moves.isEmpty && won.count == 1 && abs(won[0] - 3.6) < 1e-6, "\(moves) \(won)")
            #expect(abs(r.makespan - 3.6) < 1e-6, "makespan \(r.makespan)")
            return
        }
        #expect(moves.count == 1 && moves.first.map { abs($0.0 - 2.601) < 1e-6 && $0.1 == BackendID(2) && $0.2 == BackendID(1) } == true)
        #expect(abs(r.makespan - 4.351) < 1e-6, "makespan \(r.makespan)")
    }
}
