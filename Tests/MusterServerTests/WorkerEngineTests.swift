@testable import MusterBackends
import MusterCore
import MusterProtocol
import MusterServer
import Testing

/// The backend side of the protocol, event by event on a manual clock.
@Suite struct WorkerEngineTests {
    let inc = Incarnation(1_763_712_000_000)

    func welcome(_ engine: WorkerEngine, bindings: [Wire.Binding] = [], known: CapabilityVersion? = nil) -> CoordinatorToBackend {
        .welcome(.init(backend: BackendID(7), coordinator: "test", heartbeatMs: 5000, syncMs: 15000, known: known, bindings: bindings))
    }

    func assign(_ job: UInt64, lease: UInt64, kind: String = "video", model: String? = nil) -> CoordinatorToBackend {
        .assign(.init(job: JobID(job), lease: Lease(lease), batch: BatchID(1), attempt: 1, kind: kind, model: model))
    }

    func sent(_ actions: [WorkerEngine.Action]) -> [BackendToCoordinator] {
        actions.compactMap { if case .send(let m) = $0 { m } else { nil } }
    }

    @Test func announcesLoadingThenReadyAfterTheStartupDelay() {
        let spec = WorkerSpec(name: "gpu", features: ["video", "frameinterps"], startupDelay: .seconds(40))
        var e = WorkerEngine(spec: spec, incarnation: inc, epochMs: 0, at: .zero)
        let first = sent(e.receive(welcome(e), at: .zero))
        guard case .capabilities(let loading)? = first.first else {
            Issue.record("expected a snapshot after welcome, got \(first)")
            return
        }
        #expect(loading.state == .loading)
        #expect(loading.version.revision == 1)
        #expect(e.nextDeadline == .seconds(40))
        let later = sent(e.tick(at: .seconds(40)))
        guard case .capabilities(let ready)? = later.first else {
            Issue.record("expected the ready snapshot, got \(later)")
            return
        }
        #expect(ready.state == .ready)
        #expect(ready.version.revision == 2)
        #expect(ready.features == ["frameinterps", "video"])
    }

    @Test func finishLoadingEndsTheStartupDelayOnce() {
        let spec = WorkerSpec(name: "gpu", features: ["video"], startupDelay: .seconds(3600))
        var e = WorkerEngine(spec: spec, incarnation: inc, epochMs: 0, at: .zero)
        _ = e.receive(welcome(e), at: .zero)
        let now = sent(e.finishLoading(at: .seconds(2)))
        guard case .capabilities(let ready)? = now.first, now.count == 1 else {
            Issue.record("expected one ready snapshot, got \(now)")
            return
        }
        #expect(ready.state == .ready && ready.version.revision == 2)
        #expect(e.nextDeadline != .seconds(3600), "the delay's deadline is gone")
        #expect(sent(e.finishLoading(at: .seconds(3))).isEmpty, "a second request changes nothing")
        #expect(sent(e.tick(at: .seconds(3600))).isEmpty, "nor does the old deadline")
    }

    @Test func runsAtMostSlotsJobsFIFOAndReportsUnderTheLease() {
        var e = WorkerEngine(spec: WorkerSpec(name: "gpu", slots: 1, jobDurations: ["video": .seconds(60)]), incarnation: inc, epochMs: 0, at: .zero)
        _ = e.receive(welcome(e), at: .zero)
        let a = sent(e.receive(assign(1, lease: 10), at: .zero))
        #expect(a == [.started(.init(job: JobID(1), lease: Lease(10)))])
        let b = sent(e.receive(assign(2, lease: 11), at: .zero))
        #expect(b.isEmpty, "the second job waits for the slot")
        let progress = sent(e.tick(at: .seconds(30)))
        guard case .progress(let p)? = progress.first else {
            Issue.record("expected progress, got \(progress)")
            return
        }
        #expect(p.lease == Lease(10))
        #expect(p.fraction > 0 && p.fraction < 1)
        #expect(p.timed == true, "simulated work advances evenly")
        let done = sent(e.tick(at: .seconds(60)))
        guard case .completed(let c)? = done.first else {
            Issue.record("expected completion, got \(done)")
            return
        }
        #expect(c.job == JobID(1) && c.lease == Lease(10))
        #expect(done.dropFirst().first == .started(.init(job: JobID(2), lease: Lease(11))))
    }

    @Test func revokeDropsSilentlyAndCancelIsConfirmedOnceStopped() {
        var e = WorkerEngine(spec: WorkerSpec(name: "gpu", slots: 1), incarnation: inc, epochMs: 0, at: .zero)
        _ = e.receive(welcome(e), at: .zero)
        _ = e.receive(assign(1, lease: 10), at: .zero)
        _ = e.receive(assign(2, lease: 11), at: .zero)
        #expect(sent(e.receive(.revoke(.init(job: JobID(2), lease: Lease(11))), at: .seconds(1))).isEmpty)
        // A cancel under a stale lease changes nothing.
        #expect(sent(e.receive(.cancel(.init(job: JobID(1), lease: Lease(9))), at: .seconds(1))).isEmpty)
        // A simulated job stops at once: the cancel is confirmed at once, under its lease.
        let cancel = sent(e.receive(.cancel(.init(job: JobID(1), lease: Lease(10))), at: .seconds(1)))
        #expect(cancel == [.failed(.init(job: JobID(1), lease: Lease(10), code: .canceled,
            message: "gpu stopped the job: canceled by the coordinator", retryable: false))])
        #expect(sent(e.receive(.cancel(.init(job: JobID(1), lease: Lease(10))), at: .seconds(1))).isEmpty, "once")
        #expect(e.nextDeadline == nil, "nothing left to run")
    }

    @Test func anExecJobKeepsItsSlotUntilItsProcessExited() {
        let spec = WorkerSpec(name: "gpu", slots: 1, runner: .exec(command: ["true"], timeout: .seconds(60)))
        var e = WorkerEngine(spec: spec, incarnation: inc, epochMs: 0, at: .zero)
        _ = e.receive(welcome(e), at: .zero)
        let a = e.receive(assign(1, lease: 10), at: .zero)
        #expect(a.contains { if case .startExec(JobID(1), Lease(10), _) = $0 { true } else { false } })
        let cancel = e.receive(.cancel(.init(job: JobID(1), lease: Lease(10))), at: .seconds(1))
        #expect(cancel == [.killExec(job: JobID(1), lease: Lease(10))], "no confirmation before the process is gone")
        // A job assigned meanwhile waits: the slot is still taken by the dying process.
        let b = e.receive(assign(2, lease: 11), at: .seconds(1))
        #expect(!b.contains { if case .startExec = $0 { true } else { false } })
        let exited = e.execFinished(
            job: JobID(1), lease: Lease(10), result: .failed(code: .canceled, message: "killed", retryable: false), at: .seconds(2))
        guard case .send(.failed(let f))? = exited.first else {
            Issue.record("expected the cancel's confirmation, got \(exited)")
            return
        }
        #expect(f.job == JobID(1) && f.code == .canceled && !f.retryable)
        #expect(exited.contains { if case .startExec(JobID(2), Lease(11), _) = $0 { true } else { false } })
    }

    @Test func finalMessagesSurviveALostLinkAndAreReconciledAfterWelcome() {
        var e = WorkerEngine(spec: WorkerSpec(name: "gpu", slots: 2, jobDurations: ["default": .seconds(5)]), incarnation: inc, epochMs: 0, at: .zero)
        _ = e.receive(welcome(e), at: .zero)
        _ = e.receive(assign(1, lease: 10), at: .zero)
        _ = e.receive(assign(2, lease: 11), at: .zero)
        e.linkDown()
        #expect(sent(e.tick(at: .seconds(5))).isEmpty, "nothing is sent while the link is down")
        // The coordinator still binds job 1 under lease 10, job 2 was requeued elsewhere, and
        // job 3 was assigned but the assign was lost.
        let after = sent(e.receive(welcome(e, bindings: [.init(job: JobID(1), lease: Lease(10)), .init(job: JobID(3), lease: Lease(12))], known: e.version), at: .seconds(6)))
        #expect(after.count == 2, "\(after)")
        guard case .completed(let c)? = after.first else {
            Issue.record("expected the buffered completion, got \(after)")
            return
        }
        #expect(c.job == JobID(1))
        guard case .failed(let f)? = after.last else {
            Issue.record("expected a failure for the lost assign, got \(after)")
            return
        }
        #expect(f.job == JobID(3) && f.code == .unknownJob && f.retryable)
    }

    /// An end sent on a live link that the coordinator did not keep (it restarted before storing
    /// it): the next hello still lists the job, and a welcome that binds it again gets the same
    /// final message, not `unknown_job` (which would run the job again). After that welcome the
    /// engine forgets what it sent.
    @Test func aSentEndGoesAgainWhenTheNextWelcomeStillBindsTheJob() {
        var e = WorkerEngine(spec: WorkerSpec(name: "gpu", slots: 2, jobDurations: ["default": .seconds(5)]), incarnation: inc, epochMs: 0, at: .zero)
        _ = e.receive(welcome(e), at: .zero)
        _ = e.receive(assign(1, lease: 10), at: .zero)
        _ = e.receive(assign(2, lease: 11), at: .zero)
        let ended = sent(e.tick(at: .seconds(5)))
        #expect(ended.filter { if case .completed = $0 { true } else { false } }.count == 2, "\(ended)")
        e.linkDown()
        guard case .hello(let hello) = e.hello(token: "", software: "test") else {
            Issue.record("no hello")
            return
        }
        #expect(hello.jobs == [Wire.HeldJob(job: JobID(1), lease: Lease(10), attempt: 1), Wire.HeldJob(job: JobID(2), lease: Lease(11), attempt: 1)])
        // The restarted coordinator still binds job 1 (its end was not stored); job 2's was.
        let after = sent(e.receive(welcome(e, bindings: [.init(job: JobID(1), lease: Lease(10))], known: e.version), at: .seconds(6)))
        #expect(after.count == 1, "\(after)")
        guard case .completed(let c)? = after.first else {
            Issue.record("expected the completion again, got \(after)")
            return
        }
        #expect(c.job == JobID(1) && c.lease == Lease(10))
        guard case .hello(let next) = e.hello(token: "", software: "test") else { return }
        #expect(next.jobs.isEmpty, "forgotten after the welcome")
        // A binding it neither holds nor kept an end of: unknown_job.
        let other = sent(e.receive(welcome(e, bindings: [.init(job: JobID(2), lease: Lease(99))], known: e.version), at: .seconds(7)))
        guard case .failed(let f)? = other.first else {
            Issue.record("expected unknown_job, got \(other)")
            return
        }
        #expect(f.code == .unknownJob)
    }

    @Test func syncIsAnsweredOnlyWhenVersionsDiffer() {
        var e = WorkerEngine(spec: WorkerSpec(name: "gpu"), incarnation: inc, epochMs: 0, at: .zero)
        _ = e.receive(welcome(e), at: .zero)
        #expect(sent(e.receive(.sync(.init(known: e.version)), at: .seconds(1))).isEmpty)
        #expect(sent(e.receive(.sync(.init(known: nil)), at: .seconds(1))) == [.capabilities(e.snapshot)])
    }

    @Test func aNewerKnownVersionForcesANewIncarnation() {
        var e = WorkerEngine(spec: WorkerSpec(name: "gpu"), incarnation: Incarnation(100), epochMs: 50, at: .zero)
        let out = sent(e.receive(welcome(e, known: CapabilityVersion(incarnation: Incarnation(500), revision: 3)), at: .zero))
        #expect(e.incarnation == Incarnation(501))
        #expect(e.revision == 1)
        #expect(out == [.capabilities(e.snapshot)])
    }

    @Test func loadModelAnswersAfterTheLoadTimeAndAnnouncesIt() {
        var e = WorkerEngine(spec: WorkerSpec(name: "gpu", models: ["sdxl"], modelLoadTime: .seconds(8)), incarnation: inc, epochMs: 0, at: .zero)
        _ = e.receive(welcome(e), at: .zero)
        #expect(sent(e.receive(.loadModel(.init(id: "lm1", model: "sdxl")), at: .zero)).isEmpty)
        let unknown = sent(e.receive(.loadModel(.init(id: "lm2", model: "flux")), at: .zero))
        guard case .loadModelResult(let r)? = unknown.first else {
            Issue.record("expected a refusal, got \(unknown)")
            return
        }
        #expect(!r.ok)
        let loaded = sent(e.tick(at: .seconds(8)))
        #expect(loaded.contains { if case .capabilities(let s) = $0 { s.modelsLoaded == ["sdxl"] } else { false } })
        #expect(loaded.contains(.loadModelResult(.init(id: "lm1", model: "sdxl", ok: true, durationMs: 8000))))
    }

    /// The coordinator asks for a load ahead of the job that needs it (backfilling, README
    /// "Placement by expected completion time") and meanwhile runs another job in the slot: the
    /// job that needs the model waits for the rest of that load (8 s in, at 8 s), not a load of
    /// its own from when it starts (at 13 s).
    @Test func aJobWaitsForTheLoadAlreadyUnderWayNotANewOne() {
        let spec = WorkerSpec(name: "gpu", models: ["sdxl"], slots: 1, jobDurations: ["image": .seconds(5)], modelLoadTime: .seconds(8))
        var e = WorkerEngine(spec: spec, incarnation: inc, epochMs: 0, at: .zero)
        _ = e.receive(welcome(e), at: .zero)
        _ = e.receive(.loadModel(.init(id: "lm1", model: "sdxl")), at: .zero)
        _ = e.receive(assign(1, lease: 10, kind: "image"), at: .zero)
        _ = e.receive(assign(2, lease: 11, kind: "image", model: "sdxl"), at: .zero)
        let five = sent(e.tick(at: .seconds(5)))
        #expect(five.contains(.started(.init(job: JobID(2), lease: Lease(11)))))
        #expect(e.nextDeadline == .seconds(8), "the load under way ends at 8 s")
        _ = e.tick(at: .seconds(8))
        let done = sent(e.tick(at: .seconds(13)))
        #expect(done.contains { if case .completed(let c) = $0 { c.job == JobID(2) } else { false } })
    }

    /// Simulated work announces how long it takes per kind (at its speed, not `default`) and
    /// how long it loads a model; an exec runner does not know how long its command takes, but
    /// its models load as the agent simulates them, so it announces the load time.
    @Test func simulatedWorkAnnouncesItsDurations() {
        let spec = WorkerSpec(
            name: "gpu", jobDurations: ["video": .seconds(40), "image": .seconds(6), "default": .seconds(4)],
            modelLoadTime: .seconds(15), speed: 2)
        let e = WorkerEngine(spec: spec, incarnation: inc, epochMs: 0, at: .zero)
        #expect(e.snapshot.jobSeconds == [KindSeconds(kind: "image", seconds: 3), KindSeconds(kind: "video", seconds: 20)])
        #expect(e.snapshot.modelLoadSeconds == 15)
        let exec = WorkerEngine(
            spec: WorkerSpec(
                name: "x", runner: .exec(command: ["true"], timeout: .seconds(5)), modelLoadTime: .seconds(3),
                simulatesModelLoads: true),
            incarnation: inc, epochMs: 0, at: .zero)
        #expect(exec.snapshot.jobSeconds.isEmpty && exec.snapshot.modelLoadSeconds == 3)
        // A coordinator's own exec backend simulates no load and announces none.
        let local = WorkerEngine(
            spec: WorkerSpec(name: "y", runner: .exec(command: ["true"], timeout: .seconds(5))), incarnation: inc, epochMs: 0, at: .zero)
        #expect(local.snapshot.modelLoadSeconds == nil)
    }

    /// `muster agent --cold`: the same simulated work, announced as nothing (no speed, no
    /// durations, no load time), so the coordinator must learn them as from a real backend.
    @Test func aColdWorkerAnnouncesNoEstimatesAndWorksAsLong() {
        var spec = WorkerSpec(
            name: "gpu", models: ["sdxl"], jobDurations: ["image": .seconds(6), "default": .seconds(4)],
            modelLoadTime: .seconds(15), speed: 2)
        spec.announcesEstimates = false
        var e = WorkerEngine(spec: spec, incarnation: inc, epochMs: 0, at: .zero)
        #expect(e.snapshot.speed == nil && e.snapshot.jobSeconds.isEmpty && e.snapshot.modelLoadSeconds == nil)
        _ = e.receive(welcome(e), at: .zero)
        let started = sent(e.receive(assign(1, lease: 10, kind: "image"), at: .zero))
        #expect(started.contains(.started(.init(job: JobID(1), lease: Lease(10)))))
        var completedAt: CoreInstant?
        while completedAt == nil, let next = e.nextDeadline, next <= .seconds(10) {
            if sent(e.tick(at: next)).contains(where: { if case .completed = $0 { true } else { false } }) { completedAt = next }
        }
        #expect(completedAt == .seconds(3), "the image takes 6 s at speed 2, announced or not")
    }

    /// Protocol 6.4: a job needing a model still loading waits for that load; with `muster agent
    /// --exec` too, the command runs once the (simulated) load is over, and the model is then
    /// announced loaded.
    @Test func anExecJobWaitsForItsModelToLoadBeforeTheCommandRuns() {
        let spec = WorkerSpec(
            name: "x", models: ["wan"], runner: .exec(command: ["cat"], timeout: .seconds(60)), modelLoadTime: .seconds(3),
            simulatesModelLoads: true)
        var e = WorkerEngine(spec: spec, incarnation: inc, epochMs: 0, at: .zero)
        _ = e.receive(welcome(e), at: .zero)
        let bound = e.receive(assign(1, lease: 10, kind: "image", model: "wan"), at: .zero)
        #expect(!bound.contains { if case .startExec = $0 { true } else { false } }, "not before the load: \(bound)")
        #expect(e.nextDeadline == .seconds(3))
        let loaded = e.tick(at: .seconds(3))
        #expect(loaded.contains { if case .startExec(JobID(1), Lease(10), _) = $0 { true } else { false } }, "\(loaded)")
        #expect(e.snapshot.modelsLoaded.contains("wan"))
    }

    @Test func execJobsHandTheAssignToTheRunnerAndValidateItsOutput() {
        var e = WorkerEngine(spec: WorkerSpec(name: "x", runner: .exec(command: ["cat"], timeout: .seconds(5))), incarnation: inc, epochMs: 0, at: .zero)
        _ = e.receive(welcome(e), at: .zero)
        let actions = e.receive(assign(1, lease: 10), at: .zero)
        #expect(actions.contains { if case .startExec(let job, _, let input) = $0 { job == JobID(1) && input.contains(#""type":"assign""#) } else { false } })
        let bad = sent(e.execFinished(job: JobID(1), lease: Lease(10), result: .output("not json"), at: .seconds(1)))
        guard case .failed(let f)? = bad.first else {
            Issue.record("expected a failure, got \(bad)")
            return
        }
        #expect(f.code == .invalidResult && !f.retryable)
        _ = e.receive(assign(2, lease: 11), at: .seconds(1))
        let good = sent(e.execFinished(job: JobID(2), lease: Lease(11), result: .output(#" {"image":"a.png"} "#), at: .seconds(2)))
        #expect(good == [.completed(.init(job: JobID(2), lease: Lease(11), result: RawJSON(unchecked: #"{"image":"a.png"}"#)))])
    }

    @Test func drainingFinishesTheJobsThenReportsDrained() {
        var e = WorkerEngine(spec: WorkerSpec(name: "gpu", jobDurations: ["default": .seconds(3)]), incarnation: inc, epochMs: 0, at: .zero)
        _ = e.receive(welcome(e), at: .zero)
        _ = e.receive(assign(1, lease: 10), at: .zero)
        let drain = e.drain()
        #expect(sent(drain).contains { if case .capabilities(let s) = $0 { s.state == .draining } else { false } })
        #expect(!drain.contains(.drained))
        #expect(e.tick(at: .seconds(3)).contains(.drained))
    }

    @Test func simulatedFailuresAreRetryableAndFollowTheRate() {
        var e = WorkerEngine(spec: WorkerSpec(name: "flaky", slots: 1, jobDurations: ["default": .seconds(1)], failureRate: 1), incarnation: inc, epochMs: 0, at: .zero)
        _ = e.receive(welcome(e), at: .zero)
        _ = e.receive(assign(1, lease: 10), at: .zero)
        let out = sent(e.tick(at: .seconds(1)))
        guard case .failed(let f)? = out.first else {
            Issue.record("expected a failure, got \(out)")
            return
        }
        #expect(f.retryable)
    }
}
