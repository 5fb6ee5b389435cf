import MusterProtocol
import Testing

@testable import MusterCore

/// Backup runs (`Coordinator+Backups.swift`): an idle backend of unknown speed runs a copy of a
/// job bound elsewhere; the first copy to complete is the job's only completion.
@Suite struct BackupRunTests {
    static let video = JobSpec(kind: "video")

    /// Two ready backends of unknown speed and one job: it is bound to backend 1 and starts; backend
    /// 2 stays idle, as nothing says the job is slow. At 2 s its `timed` progress (a tenth done)
    /// projects 20 s, twice the 10 s expected when it started: a straggler, which backend 2 would
    /// finish first if it were twice as fast as assumed (20 s ÷ 2 from 2 s, before 20 s). Backend 2
    /// runs a copy under its own lease, announced as the next attempt.
    static func oneJobTwoBackends() -> (Harness, JobID, Lease, Lease) {
        var h = Harness()
        h.ready(1)
        h.ready(2)
        let job = h.submit(Self.video)[0]
        #expect(h.assigned.map(\.backend) == [BackendID(1)])
        let primary = h.assigned[0].lease
        h.send(.jobStarted(job, backend: BackendID(1), lease: primary))
        h.clock = .seconds(1)
        h.send(.jobProgress(job, backend: BackendID(1), lease: primary, fraction: 0.05, timed: true))
        #expect(h.assigned.isEmpty)
        h.clock = .seconds(2)
        h.send(.jobProgress(job, backend: BackendID(1), lease: primary, fraction: 0.1, timed: true))
        #expect(h.assigned.map(\.backend) == [BackendID(2)] && h.assigned.map(\.job) == [job])
        let attempts = h.last.compactMap { if case .assign(_, _, _, _, _, let a) = $0 { a } else { nil } }
        #expect(attempts == [2])
        let backup = h.assigned[0].lease
        #expect(h.backend(job) == BackendID(1) && h.lease(job) == primary)
        #expect(h.core.counters.backupsStarted == 1)
        h.send(.jobStarted(job, backend: BackendID(2), lease: backup))
        // A backup's reports are not stale, and tell clients nothing.
        #expect(h.last.isEmpty)
        h.send(.jobProgress(job, backend: BackendID(2), lease: backup, fraction: 0.5, timed: true))
        #expect(h.last.isEmpty)
        return (h, job, primary, backup)
    }

    @Test func theBackupThatCompletesFirstIsTheJobsCompletion() {
        var (h, job, primary, backup) = Self.oneJobTwoBackends()
        h.clock = .seconds(7)
        h.send(.jobCompleted(job, backend: BackendID(2), lease: backup, result: .emptyObject))
        #expect(h.last.contains(.revoke(job: job, backend: BackendID(1), lease: primary)))
        let kinds = h.events(job, in: h.last).map { "\($0)" }
        #expect(kinds.count == 4)
        #expect(kinds.first?.hasPrefix("revoked") == true && kinds.last?.hasPrefix("completed") == true)
        // As for work stealing, `revoked` says the job is queued again (Protocol 7.2).
        let states = h.last.compactMap { if case .jobEvent(let e) = $0, e.job == job { e.state } else { nil } }
        #expect(states == [.queued, .bound, .running, .completed], "\(states)")
        let j = h.core.job(job)!
        #expect(j.state == .completed && j.backend == BackendID(2) && j.lease == backup && j.attempt == 2)
        #expect(j.history.map(\.outcome) == [.revoked, .completed])
        // It worked from 2 s, not from when it won: its duration measures backend 2.
        #expect(j.history.last?.startedAt == .seconds(2) && j.history.last?.boundAt == .seconds(2))
        #expect(h.core.counters.backupsWon == 1 && h.core.counters.completed == 1)
        // The revoked copy's late report is stale and ends nothing.
        h.send(.jobCompleted(job, backend: BackendID(1), lease: primary, result: .emptyObject))
        #expect(h.last.contains(.staleLease(job: job, backend: BackendID(1), lease: primary, about: "completed")))
        #expect(h.events(job).filter { if case .completed = $0 { true } else { false } }.count == 1)
    }

    @Test func whenTheBoundCopyCompletesFirstTheBackupIsRevoked() {
        var (h, job, primary, backup) = Self.oneJobTwoBackends()
        h.clock = .seconds(7)
        h.send(.jobCompleted(job, backend: BackendID(1), lease: primary, result: .emptyObject))
        #expect(h.last.contains(.revoke(job: job, backend: BackendID(2), lease: backup)))
        #expect(h.core.job(job)?.state == .completed && h.core.job(job)?.backend == BackendID(1))
        h.send(.jobCompleted(job, backend: BackendID(2), lease: backup, result: .emptyObject))
        #expect(h.last.contains(.staleLease(job: job, backend: BackendID(2), lease: backup, about: "completed")))
        #expect(h.core.counters.completed == 1 && h.core.counters.backupsWon == 0)
    }

    /// A backup gives way to any job bound on its backend: it is revoked before the assign.
    @Test func aBackupGivesWayToAJobBoundOnItsBackend() {
        var (h, job, primary, backup) = Self.oneJobTwoBackends()
        h.clock = .seconds(3)
        let second = h.submit(Self.video)[0]
        let revoke = h.last.firstIndex(of: .revoke(job: job, backend: BackendID(2), lease: backup))
        let assign = h.last.firstIndex {
            if case .assign(second, _, _, BackendID(2), _, _) = $0 { true } else { false }
        }
        #expect(revoke != nil && assign != nil && revoke! < assign!)
        #expect(h.backend(job) == BackendID(1) && h.lease(job) == primary)
        h.send(.jobCompleted(second, backend: BackendID(2), lease: h.lease(second), result: .emptyObject))
        // Idle again, backend 2 runs the first job's second (and last) copy.
        #expect(h.assigned.map(\.job) == [job] && h.assigned.map(\.backend) == [BackendID(2)])
        let again = h.assigned[0].lease
        h.send(.jobCompleted(job, backend: BackendID(1), lease: primary, result: .emptyObject))
        #expect(h.last.contains(.revoke(job: job, backend: BackendID(2), lease: again)))
        #expect(h.core.counters.completed == 2 && h.core.counters.backupsStarted == 2)
    }

    /// A backup that fails ends alone: the job still runs where it is bound, and its backend is
    /// not given another copy of it (the cap counts every backup the job had).
    @Test func aFailedBackupEndsAlone() {
        var (h, job, primary, backup) = Self.oneJobTwoBackends()
        h.clock = .seconds(3)
        h.send(
            .jobFailed(job, backend: BackendID(2), lease: backup, code: .jobFailed, message: "oom", retryable: false))
        #expect(h.events(job, in: h.last).isEmpty)
        #expect(h.state(job) == .running && h.lease(job) == primary)
        #expect(h.core.counters.failed == 0)
        // Its second copy (the cap is 2 per job); after that none.
        #expect(h.assigned.map(\.backend) == [BackendID(2)])
        h.send(
            .jobFailed(
                job, backend: BackendID(2), lease: h.assigned[0].lease, code: .jobFailed, message: "oom",
                retryable: false))
        #expect(h.assigned.isEmpty)
        #expect(h.core.counters.backupsStarted == 2 && h.state(job) == .running)
    }

    @Test func cancelingTheJobRevokesItsBackups() {
        var (h, job, primary, backup) = Self.oneJobTwoBackends()
        h.record(try! h.core.cancelJob(job, at: .seconds(3)))
        #expect(h.last.contains(.cancel(job: job, backend: BackendID(1), lease: primary)))
        #expect(h.last.contains(.revoke(job: job, backend: BackendID(2), lease: backup)))
    }

    /// The job's own backend is lost (link down past the grace) while its backup runs: the job is
    /// requeued as always, then bound at once to the backup's backend under the backup's lease,
    /// started when the backup started. Nothing is revoked or assigned again: the copy's work
    /// goes on, and its completion is the job's only one.
    @Test func aBackupTakesOverWhenTheJobsBackendIsLost() {
        var (h, job, _, backup) = Self.oneJobTwoBackends()
        h.send(.linkLost(BackendID(1)))
        h.advance(to: 13)
        #expect(h.state(job) == .running && h.backend(job) == BackendID(2) && h.lease(job) == backup)
        let kinds = h.events(job, in: h.last)
        #expect(kinds.count == 3)
        if kinds.count == 3 {
            #expect(kinds[1] == .bound && kinds[2] == .started)
            if case .requeued(.linkLost, let error) = kinds[0] { #expect(error.code == .backendLost) } else {
                Issue.record("first event \(kinds[0])")
            }
        }
        #expect(h.assigned.isEmpty && !h.last.contains { if case .revoke = $0 { true } else { false } })
        #expect(h.core.job(job)?.attempt == 2)
        h.send(.jobCompleted(job, backend: BackendID(2), lease: backup, result: .emptyObject))
        #expect(h.core.counters.completed == 1 && h.state(job) == .completed)
        let history = h.core.job(job)!.history
        #expect(history.map(\.backend) == [BackendID(1), BackendID(2)])
        #expect(history.map(\.outcome) == [.requeued, .completed])
        #expect(history[0].error?.code == .backendLost && history[1].lease == backup)
    }

    /// A backup's backend whose link stays down past the grace loses it without a message (its
    /// leases died); the job runs on.
    @Test func aBackupDiesWithItsBackendsLink() {
        var (h, job, primary, _) = Self.oneJobTwoBackends()
        h.send(.linkLost(BackendID(2)))
        h.advance(to: 13)
        #expect(!h.last.contains { if case .revoke = $0 { true } else { false } })
        #expect(h.lease(job) == primary)
        h.send(.jobCompleted(job, backend: BackendID(1), lease: primary, result: .emptyObject))
        #expect(h.core.counters.completed == 1)
    }

    /// A backend that registers again is sent `welcome.bindings` without its backup, and stops
    /// it as stale: the coordinator forgets the backup too, and the backend may take another.
    @Test func aBackupIsForgottenWhenItsBackendRegistersAgain() {
        var (h, job, primary, _) = Self.oneJobTwoBackends()
        h.send(.linkLost(BackendID(2)))
        h.send(
            .backendRegistered(BackendRegistration(id: BackendID(2), name: "b2", incarnation: Incarnation(1), slots: 1))
        )
        #expect(h.core.bindings(of: BackendID(2)).isEmpty)
        #expect(!h.all.contains { if case .revoke = $0 { true } else { false } })
        // Free of its backup, backend 2 runs the job's second copy.
        #expect(h.assigned.map(\.job) == [job] && h.assigned.map(\.backend) == [BackendID(2)])
        #expect(h.lease(job) == primary && h.core.counters.backupsStarted == 2)
    }

    /// Nothing known: the video lands on backend 1 (the lower id of two that look alike), which
    /// takes 40 s; at 4 s its progress (a tenth done) shows it a straggler, and backend 2 runs a
    /// copy that ends at 4 + 13.3 s. Without progress (as from ComfyUI) the job is known slow only
    /// by running past its expected 10 s, and is then expected to run half as long again as it
    /// ran: a copy on backend 2, assumed as fast, would need over three times that speed to win,
    /// so at the usual bar (twice) it never got one and the job took 40 s. At four times it gets
    /// one when it first overruns (11 s), ending at 11 + 13.3 s (`overrunBackupSpeedup`). With
    /// backups off it takes 40 s. Backends whose speeds are configured get no backups: the video
    /// goes to the fast one at once. Stragglers only: with speculative backups (the default),
    /// idle backend 2 copies the job as it starts (`anIdleBackendOfAssumedSpeedCopiesARunningJob`).
    @Test(
        arguments: [
            (2, false, 1.0, 4 + 40.0 / 3), (2, false, nil, 11 + 40.0 / 3), (2, true, 1.0, 40.0 / 3), (0, false, 1.0, 40),
        ] as [(Int, Bool, Double?, Double)])
    func anUnknownFastBackendWinsItsBackup(runs: Int, speedsKnown: Bool, progressEvery: Double?, makespan: Double) {
        var s = Scenario(
            backends: [
                Scenario.Backend(
                    id: BackendID(1), defaultJobSeconds: 40, speed: speedsKnown ? 1 : nil, progressEvery: progressEvery),
                Scenario.Backend(
                    id: BackendID(2), defaultJobSeconds: 40.0 / 3, speed: speedsKnown ? 3 : nil,
                    progressEvery: progressEvery),
            ],
            submissions: [.init(entries: [BatchEntry(spec: Self.video)])])
        s.policy.backupRuns = runs
        s.policy.speculativeBackups = false
        let r = ScenarioRunner.run(s)
        #expect(r.completions == [JobID(1): 1])
        #expect(abs(r.makespan - makespan) < 1e-9)
        #expect(r.ranOn[JobID(1)] == (makespan < 40 ? BackendID(2) : BackendID(1)))
        #expect(r.coordinator.counters.backupsWon == (makespan > 14 && makespan < 40 ? 1 : 0))
        // Backend 2's duration was measured from when its copy started.
        if r.coordinator.counters.backupsWon == 1 {
            #expect(r.coordinator.estimates(for: BackendID(2))?.speedSource == .measured)
        }
    }

    /// RoutingSuite seed 210 (nothing known): a plain image runs on a slow backend (5), with
    /// backups on backends 6 and 2; the one on 2 started at 5 and, at backend 2's speed, ends at
    /// 10. When backend 4 frees at 8.75 (the image would take 3.75 s there, to 12.5), moving the
    /// job would throw the backup away: the backup is where the job is expected to end, so it
    /// stays, and completes at 10 on backend 2.
    @Test func aBackupExpectedToFinishFirstKeepsTheJobFromMovingElsewhere() {
        let s = RoutingSuite.scenario(seed: 210, rule: .expectedCompletion)
        let r = ScenarioRunner.run(s)
        let job = JobID(2)
        #expect(r.ranOn[job] == BackendID(2), "the backup on backend 2 completed it")
        #expect(r.completions[job] == 1)
        let bindingsTo4 = r.trace.filter { if case .assign(job, _, _, BackendID(4), _, _) = $0.action { true } else { false } }
        #expect(bindingsTo4.isEmpty, "not moved to backend 4 at 8.75")
        #expect(r.makespan == 10)
    }

    /// A `flux` video runs on local backend -1, which has `flux` loaded and needs 40 s for it;
    /// nothing is measured, so 10 s was expected. Backend 1 announces at 10 s, idle, `flux`
    /// available but not loaded (it loads in 5 s and runs the video in 20 s). At 10 s the
    /// video's progress shows it a straggler (ending at 40 s), so backend 1 loads `flux` for a
    /// backup (reason `backup`), starts the backup when the load lands at 15 s, and that copy
    /// completes the job at 35 s. Before, a backup needed the model loaded: the job ended at 40 s
    /// (RoutingSuite seed 189 knowing nothing: 1.33 to 1.17).
    @Test func aBackupLoadsTheStragglersModelFirst() {
        func run(hedges: Int) -> ScenarioReport {
            ScenarioRunner.oneJob(
                JobSpec(kind: "video", model: "flux"),
                on: [
                    Scenario.Backend(
                        id: BackendID(-1), modelsAvailable: ["flux"], modelsLoaded: ["flux"], defaultJobSeconds: 40, progressEvery: 1),
                    Scenario.Backend(
                        id: BackendID(1), registerAt: 10, modelsAvailable: ["flux"], defaultJobSeconds: 20, loadSeconds: 5,
                        progressEvery: 1),
                ], hedgeLoads: hedges)
        }
        let r = run(hedges: 2)
        let loads = r.loadRequests("flux")
        #expect(loads.count == 1 && loads.first?.0 == 10 && loads.first?.1 == BackendID(1) && loads.first?.2 == .backup, "\(loads)")
        let backups = r.trace.compactMap { step -> Double? in
            if case .observe(.backup(JobID(1), BackendID(1), .started)) = step.action { step.at } else { nil }
        }
        #expect(backups == [15])
        #expect(r.ranOn[JobID(1)] == BackendID(1))
        #expect(r.completions[JobID(1)] == 1)
        #expect(r.makespan == 35)
        // The load counts toward the job's hedged loads: with none allowed, no load and no backup.
        let none = run(hedges: 0)
        #expect(none.ranOn[JobID(1)] == BackendID(-1))
        #expect(none.makespan == 40)
    }

    /// No progress, nothing announced (`muster agent --exec`). Backend -1 measures the image at
    /// 1 s; backend 2 (four times slower, nothing says so) announces later and takes the second
    /// of two images at 2 s, expected there to take 1 s as well. Its run is watched, since its
    /// backend's speed is assumed: at 3.1 s it overran, a straggler; at 3.65 s it has overrun by
    /// more than a copy on -1 would take (if -1 were four times as fast as assumed), and -1, idle
    /// since 3 s, runs a backup, which wins at 4.65 s. The run it outran measures backend 2.
    /// Unwatched (backups off), the image ran on 2 until 6 s.
    @Test(arguments: [2, 0])
    func aJobOnABackendOfAssumedSpeedIsWatchedForAnOverrun(backupRuns: Int) {
        var policy = CorePolicy()
        policy.routing = .expectedCompletion
        policy.backupRuns = backupRuns
        let r = ScenarioRunner.run(
            Scenario(
                policy: policy,
                backends: [
                    Scenario.Backend(id: BackendID(-1), jobSeconds: ["image": 1]),
                    Scenario.Backend(id: BackendID(2), registerAt: 1.5, jobSeconds: ["image": 4]),
                ],
                submissions: [
                    .init(entries: [BatchEntry(spec: JobSpec(kind: "image"))]),
                    .init(at: 2, entries: [BatchEntry(spec: JobSpec(kind: "image"), count: 2)]),
                ]))
        #expect(r.completions.count == 3 && r.completions.values.allSatisfy { $0 == 1 })
        guard backupRuns > 0 else {
            #expect(r.ranOn[JobID(3)] == BackendID(2) && r.makespan == 6)
            return
        }
        let started = r.trace.compactMap { step -> Double? in
            if case .observe(.backup(JobID(3), BackendID(-1), .started)) = step.action { step.at } else { nil }
        }
        #expect(started.count == 1 && abs(started[0] - 3.65) < 1e-9, "\(started)")
        #expect(r.ranOn[JobID(3)] == BackendID(-1))
        #expect(abs(r.makespan - 4.65) < 1e-9, "makespan \(r.makespan)")
        let two = r.coordinator.estimates(for: BackendID(2))
        #expect(two?.speedSource == .measured && abs((two?.speed ?? 0) - 0.38) < 0.01, "\(String(describing: two))")
    }

    /// Nothing announced, no progress: backend 2 (four times slower than 1, nothing says so)
    /// runs an image from 0 s and, from 0.8 s, a video. Backend 1 announces at 0.96 s and runs
    /// two images, 0.75 s each; with backend 4's image those measure 1's speed at 2.05 s. The
    /// image on 2 is a straggler by then (it started under the default 10 s; the class's first
    /// measurement re-based it to 0.75 s). Its backend's speed is assumed, so 1, of known speed,
    /// copies it, priced by the class (0.75 s), though 2 is assumed as fast as 1: the backup wins
    /// at 2.8 s. The run it outran measures 2 at least 3.7 times slower, and the video moves to
    /// 1 at once: 4.55 s. Before, the image ran on 2 to 3 s and the video moved then: 4.75 s.
    @Test func aBackendOfKnownSpeedCopiesAStragglerOnABackendOfAssumedSpeed() {
        var policy = CorePolicy()
        policy.routing = .expectedCompletion
        let image = JobSpec(kind: "image")
        let r = ScenarioRunner.run(
            Scenario(
                policy: policy,
                backends: [
                    Scenario.Backend(
                        id: BackendID(1), slots: 2, announceAfter: 0.96, features: ["video"],
                        jobSeconds: ["image": 0.75, "video": 1.75]),
                    Scenario.Backend(id: BackendID(2), slots: 2, features: ["video"], jobSeconds: ["image": 3, "video": 7]),
                    Scenario.Backend(id: BackendID(4), jobSeconds: ["image": 2, "video": 4.67]),
                    Scenario.Backend(id: BackendID(5), jobSeconds: ["image": 1.5, "video": 3.5]),
                ],
                submissions: [
                    .init(entries: [BatchEntry(spec: image, count: 2)]),
                    .init(at: 0.8, entries: [BatchEntry(spec: JobSpec(kind: "video", needs: ["video"])), BatchEntry(spec: image)]),
                    .init(at: 1.1, entries: [BatchEntry(spec: image)]),
                    .init(at: 1.3, entries: [BatchEntry(spec: image)]),
                ]))
        #expect(r.completions.count == 6 && r.completions.values.allSatisfy { $0 == 1 })
        let first = r.trace.first { step in
            if case .observe(.backup(JobID(1), BackendID(1), .started)) = step.action { true } else { false }
        }
        #expect(first.map { abs($0.at - 2.05) < 1e-9 } == true, "\(String(describing: first?.at))")
        let moves = r.trace.compactMap { step -> Double? in
            if case .observe(.stolen(JobID(3), BackendID(2), BackendID(1))) = step.action { step.at } else { nil }
        }
        #expect(moves.count == 1 && abs(moves[0] - 2.8) < 1e-9, "\(moves)")
        #expect(r.ranOn[JobID(1)] == BackendID(1) && r.ranOn[JobID(3)] == BackendID(1))
        #expect(abs(r.makespan - 4.55) < 1e-9, "makespan \(r.makespan)")
    }

    /// A class first measured at 20 ms re-bases the job of it that started meanwhile on backend
    /// 2, but does not watch it: timing under 50 ms is noise, and no backup is run of it.
    @Test func aJobOfAClassMeasuredUnderFiftyMillisecondsIsNotWatched() {
        var policy = CorePolicy()
        policy.routing = .expectedCompletion
        let r = ScenarioRunner.run(
            Scenario(
                policy: policy,
                backends: [
                    Scenario.Backend(id: BackendID(-1), jobSeconds: ["image": 0.02]),
                    Scenario.Backend(id: BackendID(2), jobSeconds: ["image": 1]),
                ],
                submissions: [.init(entries: [BatchEntry(spec: JobSpec(kind: "image"), count: 2)])]))
        #expect(r.completions.count == 2 && r.completions.values.allSatisfy { $0 == 1 })
        #expect(r.ranOn[JobID(1)] == BackendID(-1) && r.ranOn[JobID(2)] == BackendID(2))
        let backups = r.trace.filter { if case .observe(.backup) = $0.action { true } else { false } }
        #expect(backups.isEmpty)
        #expect(r.coordinator.job(JobID(2))?.history.count == 1)
    }

    /// The default policy, with speculative backups on or off.
    static func policy(speculative: Bool) -> CorePolicy {
        var policy = CorePolicy()
        policy.speculativeBackups = speculative
        return policy
    }

    /// When the backup runs of `job` on `backend` started, won or stopped, in order.
    static func backupSteps(_ r: ScenarioReport, _ job: JobID, on backend: BackendID) -> [(Double, BackupOutcome)] {
        r.trace.compactMap { step -> (Double, BackupOutcome)? in
            if case .observe(.backup(job, backend, let outcome)) = step.action { (step.at, outcome) } else { nil }
        }
    }

    /// Nothing announced or measured. The video can run only on backend 2 and the image goes to
    /// backend 1, idle; both are expected to take the 10 s default. Backend 2 ends the video at
    /// 2 s and, with nothing else to do and its speed still assumed, copies the image: at four
    /// times its assumed speed it would finish it first (2 + 10 ÷ 4 before 10), though the image
    /// is no straggler (it ran 2 s of an expected 10). The copy takes 1 s and wins at 3 s; the
    /// image on backend 1 would have ended at 4 s. With `speculativeBackups` off, backend 2 idles.
    @Test(arguments: [true, false])
    func anIdleBackendOfAssumedSpeedCopiesARunningJob(speculative: Bool) {
        let r = ScenarioRunner.run(
            Scenario(
                policy: Self.policy(speculative: speculative),
                backends: [
                    Scenario.Backend(id: BackendID(1), jobSeconds: ["image": 4]),
                    Scenario.Backend(id: BackendID(2), features: ["video"], jobSeconds: ["image": 1, "video": 2]),
                ],
                submissions: [
                    .init(entries: [BatchEntry(spec: JobSpec(kind: "video", needs: ["video"])), BatchEntry(spec: JobSpec(kind: "image"))])
                ]))
        #expect(r.completions == [JobID(1): 1, JobID(2): 1])
        let backups = Self.backupSteps(r, JobID(2), on: BackendID(2))
        if speculative {
            #expect(backups.map(\.0) == [2, 3] && backups.map(\.1) == [.started, .won], "\(backups)")
            #expect(r.ranOn[JobID(2)] == BackendID(2) && r.makespan == 3)
        } else {
            #expect(backups.isEmpty && r.ranOn[JobID(2)] == BackendID(1) && r.makespan == 4)
        }
    }

    /// Cold, progress every second. Backend 2 (video 8 s) runs video 1 from 0 s; backend 3 (video
    /// 8/3 s) runs the image, which measures it, then video 3 from 0.67 s. Backend 1 (as fast as 3)
    /// registers at 1.25 s with nothing to do. Video 1's progress shows it ending at 8 s; video 3's
    /// end, 8.67 s, is only the video class's estimate (backend 2's projection) at backend 3. The
    /// copy goes to video 1: time left that its progress projects (6.75 s) counts whole, time left
    /// that only an estimate gives (7.42 s) is divided by `straggler`. It wins at 3.92 s. (Copying
    /// video 3 by its later end, as before, gained nothing: it ended at 3.33 s on backend 3, and
    /// video 1 moved there and ended at 6 s. Small-fleet cold seed 207: 1.64 to 1.0.)
    @Test func aCopyGoesToTheJobItsProgressShowsLongOverOneOnlyEstimatedSo() {
        let fast = ["image": 2.0 / 3, "video": 8.0 / 3]
        let r = ScenarioRunner.run(
            Scenario(
                policy: Self.policy(speculative: true),
                backends: [
                    Scenario.Backend(id: BackendID(1), registerAt: 1.25, features: ["video"], jobSeconds: fast, progressEvery: 1),
                    Scenario.Backend(
                        id: BackendID(2), features: ["video"], jobSeconds: ["image": 2, "video": 8], progressEvery: 1),
                    Scenario.Backend(id: BackendID(3), features: ["video"], jobSeconds: fast, progressEvery: 1),
                ],
                submissions: [
                    .init(entries: [
                        BatchEntry(spec: JobSpec(kind: "video", needs: ["video"])), BatchEntry(spec: JobSpec(kind: "image")),
                        BatchEntry(spec: JobSpec(kind: "video", needs: ["video"])),
                    ])
                ]))
        #expect(r.completions == [JobID(1): 1, JobID(2): 1, JobID(3): 1])
        #expect(r.startedAt[JobID(3)].map { abs($0 - 2.0 / 3) < 1e-9 } == true && r.ranOn[JobID(3)] == BackendID(3))
        let backups = Self.backupSteps(r, JobID(1), on: BackendID(1))
        #expect(backups.map(\.1) == [.started, .won] && abs(backups[0].0 - 1.25) < 1e-9, "\(backups)")
        #expect(Self.backupSteps(r, JobID(3), on: BackendID(1)).isEmpty)
        #expect(r.ranOn[JobID(1)] == BackendID(1) && abs(r.makespan - (1.25 + 8.0 / 3)) < 1e-9, "makespan \(r.makespan)")
    }

    /// Small-fleet cold seed 135: backend -1 (fast) takes the two plain images, then the `flux`
    /// image, loading `flux` for it (4 s); the video runs on backend 2, twice as slow, its
    /// progress showing 8 s; backend 1 announces at 3 s with `flux` loaded.
    static func loadLeftFleet(slots: Int) -> ScenarioReport {
        ScenarioRunner.run(
            Scenario(
                policy: Self.policy(speculative: true),
                backends: [
                    Scenario.Backend(
                        id: BackendID(-1), slots: slots, features: ["video"], modelsAvailable: ["flux"],
                        jobSeconds: ["image": 0.75, "video": 4], loadSeconds: 4, progressEvery: 1),
                    Scenario.Backend(
                        id: BackendID(1), registerAt: 3, modelsAvailable: ["flux"], modelsLoaded: ["flux"],
                        jobSeconds: ["image": 1.5, "video": 8], progressEvery: 1),
                    Scenario.Backend(
                        id: BackendID(2), features: ["video"], jobSeconds: ["image": 1.5, "video": 8], progressEvery: 1),
                ],
                submissions: [
                    .init(entries: [
                        BatchEntry(spec: JobSpec(kind: "image", model: "flux")), BatchEntry(spec: JobSpec(kind: "image")),
                        BatchEntry(spec: JobSpec(kind: "video", needs: ["video"])), BatchEntry(spec: JobSpec(kind: "image")),
                    ])
                ]))
    }

    /// `loadLeftFleet` with two slots on backend -1 (so that a one-slot backend's copy through a
    /// load, below, does not apply): the `flux` image is bound there at 1.5 s to wait for its
    /// load, and moves to backend 1 at 3 s. Backend -1 is free, its load still in flight for a job
    /// no longer bound to it: it copies the video at once (ends at 7 s, against 8 s on backend 2),
    /// as other jobs fill a load (backfilling). Before, a backend with any load in flight copied
    /// nothing, and the copy started only when `flux` landed at 4 s and tied at 8 s (seed 135:
    /// 1.78 to 1.56). A load asked to run a job bound elsewhere (a hedge, a backup's model) still
    /// keeps copies off: that backend is to take that job once loaded.
    @Test func aBackendLoadingAModelForAJobThatLeftItCopiesMeanwhile() {
        let r = Self.loadLeftFleet(slots: 2)
        #expect(r.completions == [JobID(1): 1, JobID(2): 1, JobID(3): 1, JobID(4): 1])
        #expect(r.ranOn[JobID(1)] == BackendID(1))
        let backups = Self.backupSteps(r, JobID(3), on: BackendID(-1))
        #expect(backups.map(\.1) == [.started, .won] && backups.first?.0 == 3, "\(backups)")
        #expect(r.ranOn[JobID(3)] == BackendID(-1) && r.makespan == 7, "makespan \(r.makespan)")
    }

    /// `loadLeftFleet` as seed 135 has it, backend -1 with one slot: at 1.5 s, when it would take
    /// the `flux` image and hold its slot idle until `flux` lands at 4 s, it copies the video
    /// instead (a guess at its assumed speed, which fits a load's idle time as a backfill does)
    /// and the `flux` image stays queued. Backend 1 takes the image at 3 s; the copy wins at 5.5 s
    /// (seed 135: 1.56 to 1.22).
    @Test func aOneSlotBackendCopiesThroughTheLoadOfTheJobItWouldTake() {
        let r = Self.loadLeftFleet(slots: 1)
        #expect(r.completions == [JobID(1): 1, JobID(2): 1, JobID(3): 1, JobID(4): 1])
        #expect(r.ranOn[JobID(1)] == BackendID(1) && r.startedAt[JobID(1)] == 3)
        let backups = Self.backupSteps(r, JobID(3), on: BackendID(-1))
        #expect(backups.map(\.0) == [1.5, 5.5] && backups.map(\.1) == [.started, .won], "\(backups)")
        #expect(r.ranOn[JobID(3)] == BackendID(-1) && r.makespan == 5.5, "makespan \(r.makespan)")
        // The image was never bound to backend -1.
        #expect(
            !r.trace.contains { step in
                if case .assign(JobID(1), _, _, BackendID(-1), _, _) = step.action { true } else { false }
            })
    }

    /// A copy through a load must fit it as a backfill does when the backend's speed is known.
    /// Speeds configured: backend -1 runs the plain video at half speed (5.33 s); backend 1,
    /// announcing at 1 s, must load `flux` (1 s) for the `flux` video. A copy of the plain video
    /// there would take 2.67 s, well past the load: the `flux` video is bound and ends at 4.67 s,
    /// and the plain one on -1 at 5.33 s. (Copying through the load, the copy would have been
    /// promoted when `flux` landed and the `flux` video would have ended at 6.33 s: seed 73 of
    /// 960 small-fleet scenarios, 1.0 to 1.28, before the fit.)
    @Test func aCopyThatOutlastsTheLoadDoesNotKeepTheJobWaiting() {
        let r = ScenarioRunner.run(
            Scenario(
                policy: Self.policy(speculative: true),
                backends: [
                    Scenario.Backend(id: BackendID(-1), features: ["video"], jobSeconds: ["video": 16.0 / 3], speed: 0.5),
                    Scenario.Backend(
                        id: BackendID(1), expected: true, registerAt: 1, features: ["video"], modelsAvailable: ["flux"],
                        jobSeconds: ["video": 8.0 / 3], loadSeconds: 1, speed: 1, loadPrior: 1),
                ],
                submissions: [
                    .init(entries: [
                        BatchEntry(spec: JobSpec(kind: "video", needs: ["video"])),
                        BatchEntry(spec: JobSpec(kind: "video", needs: ["video"], model: "flux")),
                    ])
                ]))
        #expect(r.completions == [JobID(1): 1, JobID(2): 1])
        #expect(Self.backupSteps(r, JobID(1), on: BackendID(1)).isEmpty)
        #expect(r.ranOn[JobID(2)] == BackendID(1) && r.startedAt[JobID(2)] == 1)
        #expect(abs(r.makespan - 16.0 / 3) < 1e-9, "makespan \(r.makespan)")
    }

    /// Speculative backups off, no progress. The `flux` video starts at 0 s on backend 2, the only
    /// ready one with `flux`, under the 10 s default; the plain video runs on backend 3. At
    /// 2.67 s the plain video measures the `video` kind, which the `flux` class, still unmeasured,
    /// now expects too: its job is re-based and watched at 1.1 x 2.67 s (`rebaseKind`). Then it
    /// has overrun, and backend 1, idle since 1 s, copies it and wins at 5.6 s. Before, its watch
    /// stayed at 11 s and it ran to 8 s on backend 2 (small-fleet seed 207 without progress:
    /// 2.18 to 1.64).
    @Test func measuringAKindRebasesTheRunningJobsOfItsOtherClasses() {
        let fast = ["video": 8.0 / 3]
        let r = ScenarioRunner.run(
            Scenario(
                policy: Self.policy(speculative: false),
                backends: [
                    Scenario.Backend(
                        id: BackendID(1), expected: true, registerAt: 1, features: ["video"], modelsAvailable: ["flux"],
                        modelsLoaded: ["flux"], jobSeconds: fast),
                    Scenario.Backend(
                        id: BackendID(2), features: ["video"], modelsAvailable: ["flux"], modelsLoaded: ["flux"],
                        jobSeconds: ["video": 8]),
                    Scenario.Backend(id: BackendID(3), features: ["video"], jobSeconds: fast),
                ],
                submissions: [
                    .init(entries: [
                        BatchEntry(spec: JobSpec(kind: "video", needs: ["video"], model: "flux")),
                        BatchEntry(spec: JobSpec(kind: "video", needs: ["video"])),
                    ])
                ]))
        #expect(r.completions == [JobID(1): 1, JobID(2): 1])
        #expect(r.ranOn[JobID(2)] == BackendID(3))
        let backups = Self.backupSteps(r, JobID(1), on: BackendID(1))
        #expect(backups.map(\.1) == [.started, .won] && backups.first.map { abs($0.0 - 1.1 * 8 / 3) < 1e-3 } == true, "\(backups)")
        #expect(r.ranOn[JobID(1)] == BackendID(1) && abs(r.makespan - (1.1 + 1) * 8 / 3) < 1e-3, "makespan \(r.makespan)")
    }

    /// A load asked as a hedge keeps copies off its backend. Backend 2 runs the plain video and
    /// loads `sdxl` (4 s) for the `sdxl` video bound beside it. Backend 1 (4 times as fast)
    /// announces at 3 s and hedges that load (1 s); it copies the `sdxl` video once `sdxl` lands
    /// at 4 s and wins at 6 s, when the plain video ends too. Had it copied the plain video at
    /// 3 s, during its load (small-fleet cold seed 12, tried: 1.0 to 1.17), that copy would have
    /// won at 5 s, the `sdxl` video would have moved to it only then, and ended at 7 s.
    @Test func aBackendHedgingALoadCopiesNothingElseMeanwhile() {
        let r = ScenarioRunner.run(
            Scenario(
                policy: Self.policy(speculative: true),
                backends: [
                    Scenario.Backend(
                        id: BackendID(1), slots: 2, registerAt: 3, features: ["video"], modelsAvailable: ["sdxl"],
                        jobSeconds: ["video": 2], loadSeconds: 1, progressEvery: 1),
                    Scenario.Backend(
                        id: BackendID(2), slots: 2, features: ["video"], modelsAvailable: ["sdxl"], jobSeconds: ["video": 6],
                        loadSeconds: 4, progressEvery: 1),
                ],
                submissions: [
                    .init(entries: [
                        BatchEntry(spec: JobSpec(kind: "video", needs: ["video"], model: "sdxl")),
                        BatchEntry(spec: JobSpec(kind: "video", needs: ["video"])),
                    ])
                ]))
        #expect(r.completions == [JobID(1): 1, JobID(2): 1])
        #expect(Self.backupSteps(r, JobID(2), on: BackendID(1)).isEmpty)
        let backups = Self.backupSteps(r, JobID(1), on: BackendID(1))
        #expect(backups.map(\.0) == [4, 6] && backups.map(\.1) == [.started, .won], "\(backups)")
        #expect(r.makespan == 6, "makespan \(r.makespan)")
    }

    /// Speculative backups on, one image, two idle backends that announce nothing. The image is
    /// bound to backend 1 while backend 2 looks too, before the image started: nothing runs to
    /// copy yet. Its start makes backend 2 look again, and it copies the image at once (1 s
    /// there against 4 s on backend 1). Without that look, backend 2 idled and the image ended at
    /// 4 s.
    @Test func aBackendIdleBeforeAJobStartedCopiesItOnceItStarts() {
        let r = ScenarioRunner.run(
            Scenario(
                policy: Self.policy(speculative: true),
                backends: [
                    Scenario.Backend(id: BackendID(1), jobSeconds: ["image": 4]),
                    Scenario.Backend(id: BackendID(2), jobSeconds: ["image": 1]),
                ],
                submissions: [.init(entries: [BatchEntry(spec: JobSpec(kind: "image"))])]))
        #expect(r.completions == [JobID(1): 1])
        let backups = Self.backupSteps(r, JobID(1), on: BackendID(2))
        #expect(backups.map(\.0) == [0, 1] && backups.map(\.1) == [.started, .won], "\(backups)")
        #expect(r.ranOn[JobID(1)] == BackendID(2) && r.makespan == 1)
    }

    /// What a speculative backup may copy is kept as jobs start: a job expected to take
    /// `shortestSpeedSample` or more (`video`, never measured: the 10 s default), not one measured
    /// shorter (`thumb`, 20 ms), which no backup would copy. A free backend looks through those
    /// jobs, not through the fleet, and only the start of a job worth copying has the free
    /// backends look again: woken at every start of a job lasting milliseconds, each free backend
    /// of a 100-backend fleet went through a dispatch of its own (`muster-bench e2e`, latency at
    /// 12,500 jobs/s: coordinator CPU 61% -> 90%, submit->assign p99 2 -> 14 ms). An unbound job
    /// leaves the set.
    @Test func onlyJobsLongEnoughToCopyAreLookedAtByASpeculativeBackup() {
        var h = Harness { $0.speculativeBackups = true }
        for id in 1...3 { h.ready(Int64(id), features: ["video"]) }
        let thumb = JobSpec(kind: "thumb")
        let first = h.submit(thumb)[0]
        h.send(.jobStarted(first, backend: h.backend(first), lease: h.lease(first)))
        h.clock = .seconds(0.02)
        h.send(.jobCompleted(first, backend: h.backend(first), lease: h.lease(first), result: .emptyObject))
        let second = h.submit(thumb)[0]
        h.send(.jobStarted(second, backend: h.backend(second), lease: h.lease(second)))
        #expect(h.state(second) == .running && h.core.copyable.isEmpty)
        let video = h.submit(JobSpec(kind: "video", needs: ["video"]))[0]
        h.send(.jobStarted(video, backend: h.backend(video), lease: h.lease(video)))
        #expect(h.core.copyable == [video])
        // The one free backend copies the video (at four times its assumed speed it would end first).
        let copies = h.last.compactMap { if case .observe(.backup(video, let b, .started)) = $0 { b } else { nil } }
        #expect(copies.count == 1 && copies[0] != h.backend(video) && copies[0] != h.backend(second), "\(h.last)")
        h.send(.jobCompleted(video, backend: h.backend(video), lease: h.lease(video), result: .emptyObject))
        #expect(h.core.copyable.isEmpty)
    }

    /// Routing suite seed 210 without progress, with speculative backups: at 0 s local -1 (three
    /// times slower than backend 2) takes an image, and backends 2 and 5 copy it as they idle;
    /// backend 2's copy gives way at once to an image of the second batch. Backend 2 measures
    /// images at 5 s, and at 8.25 s copies the image again (a straggler now), winning at 13.25 s.
    /// Had the copy that gave way counted toward the job's two `backupRuns`, none would be left:
    /// the image ran on -1 until backend 4 took it at 12.38 s, 16.13 s.
    @Test func aSpeculativeBackupThatGivesWayLeavesTheJobItsBackups() {
        let r = ScenarioRunner.run(RoutingSuite.scenario(seed: 210, progress: false, speculative: true))
        #expect(r.completions.count == 3 && r.completions.values.allSatisfy { $0 == 1 })
        let gaveWay = r.trace.contains { step in
            if case .observe(.backup(JobID(2), BackendID(2), .stopped)) = step.action { step.at == 0 } else { false }
        }
        #expect(gaveWay)
        #expect(abs(r.makespan - 13.25) < 1e-9, "makespan \(r.makespan)")
    }

    /// Two images on three backends that announce nothing, with `timed` progress, and speculative
    /// backups on. Backend 3, idle, copies the image on backend 1. Backend 2 ends its image at 4 s,
    /// which measures the class at 4 s: backend 3's copy, at its assumed speed, would then end at 4 s
    /// too, but its progress (a third done at 4 s) projects 12 s, as backend 1's does; so the
    /// image moves to backend 2, idle, and ends at 8 s. Priced at its assumed speed, the copy
    /// looked about to finish, nothing moved, and the image ran on backend 1 to 12 s.
    @Test func aBackupsProgressShowsWhenItEnds() {
        let image = JobSpec(kind: "image")
        let r = ScenarioRunner.run(
            Scenario(
                policy: Self.policy(speculative: true),
                backends: [
                    Scenario.Backend(id: BackendID(1), jobSeconds: ["image": 12], progressEvery: 0.5),
                    Scenario.Backend(id: BackendID(2), jobSeconds: ["image": 4], progressEvery: 0.5),
                    Scenario.Backend(id: BackendID(3), jobSeconds: ["image": 12], progressEvery: 0.5),
                ],
                submissions: [.init(entries: [BatchEntry(spec: image, count: 2)])]))
        #expect(r.completions == [JobID(1): 1, JobID(2): 1])
        let started = r.trace.contains { if case .observe(.backup(JobID(1), BackendID(3), .started)) = $0.action { true } else { false } }
        let moves = r.trace.compactMap { step -> Double? in
            if case .observe(.stolen(JobID(1), BackendID(1), BackendID(2))) = step.action { step.at } else { nil }
        }
        #expect(started && moves == [4], "\(moves)")
        #expect(r.ranOn[JobID(1)] == BackendID(2) && r.makespan == 8)
    }
}
