@testable import MusterClient
import MusterProtocol
import MusterServer
import MusterTransport
import Testing

/// `MusterClient` against an in-process coordinator over real sockets on 127.0.0.1.
@Suite struct ClientTests {
    @Test func submittedJobsEachCompleteExactlyOnce() async throws {
        let coordinator = try await TestCoordinator.start()
        let client = try await coordinator.connect()
        #expect(await client.welcome?.version == 1)
        // Subscribing to everything first sees each job from its first event on.
        try await client.subscribe(batch: nil)
        let accepted = try await client.submit(
            Wire.BatchRequest(jobs: [Wire.JobRequest(kind: "video", needs: ["frameinterps", "video"], count: 4)]))
        #expect(accepted.jobs.count == 4)
        #expect(!accepted.duplicate)
        let progress = try await within(.seconds(60), "4 jobs final") { await client.follow(accepted) }
        for job in progress.orderedJobs {
            #expect(job.state == .completed, "job \(job.id)")
            #expect(job.finalEvents == 1, "job \(job.id)")
            #expect(job.backend == BackendID(-2), "only sim-video has video")
        }
        await client.close()
        await coordinator.stop()
    }

    @Test func finishedSnapshotsReturnsHowManyEndedJobsWereLeftOut() async throws {
        let coordinator = try await TestCoordinator.start()
        let client = try await coordinator.connect()
        try await client.subscribe(batch: nil)
        let accepted = try await client.submit(Wire.BatchRequest(jobs: [Wire.JobRequest(kind: "image", count: 5)]))
        _ = try await within(.seconds(60), "5 jobs final") { await client.follow(accepted) }
        let late = try await coordinator.connect()
        let omitted = try await late.subscribe(batch: nil, finishedSnapshots: 2)
        #expect(omitted == CoordinatorToClient.Subscribed.Ended(completed: 3), "\(String(describing: omitted))")
        #expect(try await late.subscribe(batch: accepted.batch) == nil, "nothing left out without a limit")
        await late.close()
        await client.close()
        await coordinator.stop()
    }

    @Test func onEventTakesTheEventsOnTheLoopThreadInsteadOfTheStream() async throws {
        let coordinator = try await TestCoordinator.start()
        let finals = AsyncStream.makeStream(of: JobID.self)
        let transport = try Transport(configuration: TransportConfiguration(), logger: TestCoordinator.quietLogger)
        var options = MusterClient.Options(coordinator: coordinator.url, name: "observer")
        options.onEvent = { event in
            #expect(transport.executor.isOnLoopThread, "onEvent runs on the client's loop thread")
            if event.state.isFinal { finals.continuation.yield(event.job) }
        }
        let client = try await MusterClient.connect(options, logger: TestCoordinator.quietLogger, transport: transport)
        try await client.subscribe(batch: nil)
        let accepted = try await client.submit(Wire.BatchRequest(jobs: [Wire.JobRequest(kind: "image", count: 3)]))
        let ended = try await within(.seconds(60), "3 final events") {
            var ended: [JobID] = []
            for await job in finals.stream {
                ended.append(job)
                if ended.count == 3 { break }
            }
            return ended
        }
        #expect(Set(ended) == Set(accepted.jobs))
        await client.close()
        // The stream got nothing and finished with the client.
        var streamed = 0
        for await _ in client.events { streamed += 1 }
        #expect(streamed == 0)
        await transport.shutdown()
        await coordinator.stop()
    }

    @Test func subscribingAfterSubmitStartsWithSnapshots() async throws {
        let coordinator = try await TestCoordinator.start()
        let client = try await coordinator.connect()
        let accepted = try await client.submit(Wire.BatchRequest(jobs: [Wire.JobRequest(kind: "image", count: 3)]))
        try await client.subscribe(batch: accepted.batch)
        let progress = try await within(.seconds(60), "3 jobs final") { await client.follow(accepted) }
        #expect(progress.counts[.completed] == 3)
        #expect(progress.orderedJobs.allSatisfy { $0.finalEvents <= 1 && $0.backend != nil })
        await client.close()
        await coordinator.stop()
    }

    /// A job's snapshot carries when its attempt started (`started_ms`): the `started` event a
    /// late subscriber missed. A second link that followed from the start saw that event.
    @Test func aSnapshotOfAStartedJobSaysWhenItStarted() async throws {
        let coordinator = try await TestCoordinator.start()
        let early = try await coordinator.connect()
        try await early.subscribe(batch: nil)
        let accepted = try await early.submit(Wire.BatchRequest(jobs: [Wire.JobRequest(kind: "image", count: 2)]))
        let seen = try await within(.seconds(60), "2 jobs final") { await early.follow(accepted) }
        let late = try await coordinator.connect()
        try await late.subscribe(batch: accepted.batch)
        let after = try await within(.seconds(60), "2 snapshots") { await late.follow(accepted) }
        for job in seen.orderedJobs {
            let started = try #require(job.startedMs, "job \(job.id): its started event was seen")
            #expect(after.jobs[job.id]?.startedMs == started, "job \(job.id)")
            #expect(after.jobs[job.id]?.durationMs == job.durationMs, "job \(job.id)")
        }
        await early.close()
        await late.close()
        await coordinator.stop()
    }

    @Test func cancelEndsTheJobsOfABatch() async throws {
        let slow = #"[{"name": "slow", "kind": "simulated", "features": ["image"], "job_seconds": {"default": 600}}]"#
        let coordinator = try await TestCoordinator.start(backends: slow)
        let client = try await coordinator.connect()
        let accepted = try await client.submit(Wire.BatchRequest(jobs: [Wire.JobRequest(kind: "image", count: 2)]))
        try await client.subscribe(batch: accepted.batch)
        let canceled = try await client.cancel(.batch(accepted.batch))
        #expect(Set(canceled) == Set(accepted.jobs))
        let progress = try await within(.seconds(60), "2 jobs canceled") { await client.follow(accepted) }
        #expect(progress.counts[.canceled] == 2)
        // Canceling again cancels nothing; an unknown job is an error with its code.
        #expect(try await client.cancel(.batch(accepted.batch)).isEmpty)
        let error = await #expect(throws: MusterClientError.self) { try await client.cancel(.job(JobID(999_999))) }
        #expect(error?.code == .unknownJob)
        await client.close()
        await coordinator.stop()
    }

    @Test func statusReportsBackendsAndQueue() async throws {
        let coordinator = try await TestCoordinator.start()
        let client = try await coordinator.connect()
        let report = try await client.status()
        #expect(Set(report.backends.map(\.name)) == ["sim-image", "sim-video"])
        #expect(report.backends.allSatisfy { $0.local && $0.id.isLocal })
        #expect(report.queue.queued + report.queue.gated + report.queue.bound + report.queue.running == 0)
        await client.close()
        await coordinator.stop()
    }

    /// The routing priors in the configuration reach the core: a backend's configured speed and
    /// load time, and the kinds' durations, are what `/v1/backends` shows as its estimates; what
    /// a backend announces (`model_load_seconds`) comes after them.
    @Test func configuredRoutingPriorsShowInTheBackendsEstimates() async throws {
        let coordinator = try await TestCoordinator.start(
            backends: """
                [{"name": "fast", "kind": "simulated", "features": ["image"], "speed": 4, "expected_load_seconds": 7},
                 {"name": "plain", "kind": "simulated", "features": ["image"]}]
                """,
            settings: [("routing.job_seconds", "image=12")])
        let list = try await HTTP.get("http://127.0.0.1:\(coordinator.port)/v1/backends")
        let backends = list.json["backends"] as? [[String: Any]] ?? []
        func estimates(_ name: String) -> [String: Any]? {
            backends.first { $0["name"] as? String == name }?["estimates"] as? [String: Any]
        }
        let fast = try #require(estimates("fast"), "\(String(decoding: list.body, as: UTF8.self))")
        #expect(fast["speed"] as? Double == 4)
        #expect(fast["speed_source"] as? String == "configured")
        #expect(fast["model_load_seconds"] as? Double == 7)
        let plain = try #require(estimates("plain"))
        #expect(plain["speed_source"] as? String == "assumed")
        // Nothing configured: its simulated load time (5 s by default), which it announces.
        #expect(plain["model_load_seconds"] as? Double == 5)
        await coordinator.stop()
    }

    /// A running job's `timed` progress (the simulated engine's) reaches the core through the
    /// daemon: a backend whose speed nothing configured learns it before its first job ends.
    /// Its job takes 60 s against the kind's configured 600 s: a tenth done (6 s in), it
    /// shows speed 10 (to the link's timing), `projected`. (With a 20 s job, a loaded machine
    /// polled late enough to see the job ended and its speed `measured`.)
    @Test func progressProjectsASpeedThatShowsInTheBackendsEstimates() async throws {
        let coordinator = try await TestCoordinator.start(
            backends: #"[{"name": "gpu", "kind": "simulated", "features": ["image"], "job_seconds": {"default": 60}}]"#,
            settings: [("routing.job_seconds", "image=600")])
        let client = try await coordinator.connect()
        let accepted = try await client.submit(Wire.BatchRequest(jobs: [Wire.JobRequest(kind: "image")]))
        let shown = try await within(.seconds(60), "a projected speed") { () async throws -> (String, Double?) in
            while true {
                if let list = try? await HTTP.get("http://127.0.0.1:\(coordinator.port)/v1/backends"),
                    let backends = list.json["backends"] as? [[String: Any]],
                    let e = backends.first(where: { $0["name"] as? String == "gpu" })?["estimates"] as? [String: Any],
                    let source = e["speed_source"] as? String, source != "assumed"
                {
                    return (source, e["speed"] as? Double)
                }
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        #expect(shown.0 == "projected")
        // The coordinator times the work from its receipt of `started`: a few milliseconds apart.
        #expect(shown.1.map { abs($0 - 10) < 0.5 } == true, "speed \(String(describing: shown.1))")
        _ = try await client.cancel(.batch(accepted.batch))
        await client.close()
        await coordinator.stop()
    }

    @Test func loadModelNamesTheBackendsToldAndRefusesUnknownOnes() async throws {
        let coordinator = try await TestCoordinator.start()
        let client = try await coordinator.connect()
        let loading = try await client.loadModel("m1")
        #expect(loading.model == "m1")
        #expect(loading.backends == [BackendID(-2)])
        let onOne = try await client.loadModel("m1", backend: BackendID(-2))
        #expect(onOne.backends == [BackendID(-2)])
        let unknownModel = await #expect(throws: MusterClientError.self) { try await client.loadModel("no-such-model") }
        #expect(unknownModel?.code == .unknownModel)
        // A model other backends offer, on a backend that does not: unknown_model too (not a job failure).
        let notOnThatOne = await #expect(throws: MusterClientError.self) {
            try await client.loadModel("m1", backend: BackendID(-1))
        }
        #expect(notOnThatOne?.code == .unknownModel)
        let unknownBackend = await #expect(throws: MusterClientError.self) {
            try await client.loadModel("m1", backend: BackendID(42))
        }
        #expect(unknownBackend?.code == .unknownBackend)
        // Both loads the coordinator sent are counted as a client's.
        let metrics = try await MetricsText.fetch(port: coordinator.port)
        #expect(metrics[MetricsText.series("muster_model_loads_requested_total", "reason", "client")] == 2)
        await client.close()
        await coordinator.stop()
    }

    @Test func manyRequestsInFlightAreMatchedToTheirAnswers() async throws {
        let coordinator = try await TestCoordinator.start()
        let client = try await coordinator.connect()
        let batches = try await withThrowingTaskGroup(of: Wire.Accepted.self) { group in
            for i in 1...40 {
                group.addTask {
                    try await client.submit(Wire.BatchRequest(jobs: [Wire.JobRequest(kind: "image", count: 1 + i % 3)]))
                }
                group.addTask {
                    _ = try await client.status(); return Wire.Accepted(batch: BatchID(0), jobs: [])
                }
            }
            var all: [Wire.Accepted] = []
            for try await a in group where a.batch != BatchID(0) { all.append(a) }
            return all
        }
        #expect(batches.count == 40)
        #expect(Set(batches.map(\.batch)).count == 40)
        #expect(Set(batches.flatMap(\.jobs)).count == batches.map(\.jobs.count).reduce(0, +))
        await client.close()
        await coordinator.stop()
    }

    @Test func aBadTokenIsRefusedWithItsCodeAndCloseCode() async throws {
        let coordinator = try await TestCoordinator.start(settings: [("auth.token", "s3cret-token")])
        let error = await #expect(throws: MusterClientError.self) { _ = try await coordinator.connect(token: "wrong") }
        #expect(error?.code == .badCredentials)
        #expect(error?.closeCode == 4001)
        #expect(error?.description.contains("4001") == true)
        #expect(error?.description.contains("wrong") == false)
        let missing = await #expect(throws: MusterClientError.self) { _ = try await coordinator.connect() }
        #expect(missing?.code == .badCredentials)
        let client = try await coordinator.connect(token: "s3cret-token")
        #expect(try await client.status().backends.count == 2)
        await client.close()
        await coordinator.stop()
    }

    @Test func nothingListeningIsAConnectionFailure() async throws {
        let coordinator = try await TestCoordinator.start(backends: "[]")
        await coordinator.stop()
        let error = await #expect(throws: MusterClientError.self) { _ = try await coordinator.connect() }
        #expect(error?.code == MusterClientError.connectionFailed)
        #expect(error?.message.contains("127.0.0.1:\(coordinator.port)") == true)
    }

    @Test func aCoordinatorShutdownEndsTheClient() async throws {
        let coordinator = try await TestCoordinator.start()
        let client = try await coordinator.connect()
        try await client.subscribe(batch: nil)
        await coordinator.stop()
        // The event stream finishes when the link goes.
        try await within(.seconds(60), "events to finish") { for await _ in client.events {} }
        let closed = try #require(await client.closeError)
        #expect(closed.code == MusterClientError.linkClosed)
        #expect(closed.closeCode == 1001)
        let error = await #expect(throws: MusterClientError.self) { _ = try await client.status() }
        #expect(error?.code == MusterClientError.linkClosed)
        await client.close()
    }

    @Test func coordinatorURLsAreMappedToWebSocketURLs() throws {
        func mapped(_ s: String) throws -> String { try MusterClient.Options(coordinator: s).webSocketURL() }
        #expect(try mapped("ws://127.0.0.1:7460") == "ws://127.0.0.1:7460")
        #expect(try mapped("wss://gpu.example:443/") == "wss://gpu.example:443/")
        #expect(try mapped("http://127.0.0.1:7460") == "ws://127.0.0.1:7460")
        #expect(try mapped("https://muster.example") == "wss://muster.example")
        #expect(try mapped("127.0.0.1:7460") == "ws://127.0.0.1:7460")
        // A bare host means the coordinator's port, as `listen` does, not the URL's 80.
        #expect(try mapped("127.0.0.1") == "ws://127.0.0.1:7460")
        #expect(try mapped("muster.example/") == "ws://muster.example:7460/")
        #expect(try mapped("[::1]") == "ws://[::1]:7460")
        #expect(try mapped("[::1]:9000") == "ws://[::1]:9000")
        for bad in ["ftp://host:1", "http://", ""] {
            let error = #expect(throws: MusterClientError.self) { try mapped(bad) }
            #expect(error?.code == MusterClientError.invalidURL, "\(bad)")
        }
    }
}

/// `BatchProgress` folds events event by event.
@Suite struct BatchProgressTests {
    func event(
        _ job: UInt64, _ kind: JobEventKind, _ state: JobState, at: UInt64, backend: Int64? = nil, batch: UInt64 = 7
    ) -> CoordinatorToClient.JobEvent {
        CoordinatorToClient.JobEvent(
            job: JobID(job), batch: BatchID(batch), event: kind, state: state, attempt: backend == nil ? 0 : 1,
            atMs: at, backend: backend.map { BackendID($0) })
    }

    @Test func foldsWaitsRunsAndEnds() {
        var p = BatchProgress(batch: BatchID(7), jobs: [JobID(1), JobID(2)])
        let wait = Wire.GateWait(
            features: ["video"], backends: [Wire.WaitingBackend(id: BackendID(3), name: "gpu", reason: "loading")])
        var gated = event(1, .gated, .gated, at: 1000)
        gated.waiting = wait
        let applied = p.apply(gated)
        #expect(applied)
        var released = event(1, .released, .queued, at: 3000)
        released.cause = .announced
        p.apply(released)
        p.apply(event(1, .bound, .bound, at: 3000, backend: 3))
        p.apply(event(1, .started, .running, at: 3500, backend: 3))
        var progress = event(1, .progress, .running, at: 4000, backend: 3)
        progress.progress = 0.5
        p.apply(progress)
        #expect(p.jobs[JobID(1)]?.progress == 0.5)
        p.apply(event(1, .completed, .completed, at: 5500, backend: 3))
        #expect(!p.isDone)
        var failed = event(2, .failed, .failed, at: 6000)
        failed.error = Wire.ErrorBody(code: .noEligibleBackend, message: "nobody has video")
        p.apply(failed)
        #expect(p.isDone)
        let one = p.jobs[JobID(1)]!
        #expect(one.waits == [wait])
        #expect(one.releaseCause == "announced")
        #expect(one.backend == BackendID(3))
        #expect(one.durationMs == 2000)
        #expect(p.jobs[JobID(2)]?.error?.code == .noEligibleBackend)
        #expect(p.counts == [.completed: 1, .failed: 1])
    }

    @Test func ignoresOtherBatchesAndCountsRepeatedEnds() {
        var p = BatchProgress(batch: BatchID(7), jobs: [JobID(1)])
        let otherBatch = p.apply(event(1, .completed, .completed, at: 1, batch: 8))
        let otherJob = p.apply(event(9, .completed, .completed, at: 1))
        #expect(!otherBatch && !otherJob)
        p.apply(event(1, .completed, .completed, at: 1, backend: -1))
        p.apply(event(1, .snapshot, .completed, at: 2, backend: -1))
        #expect(p.jobs[JobID(1)]?.finalEvents == 1)
        p.apply(event(1, .failed, .failed, at: 3))
        #expect(p.jobs[JobID(1)]?.finalEvents == 2)
        #expect(p.jobs[JobID(1)]?.state == .completed)
    }

    /// A snapshot that says when the job started (`started_ms`, Protocol 7.2) gives the whole run
    /// time of a job whose `started` was missed, running or already ended.
    @Test func aSnapshotsStartGivesTheRunTimeOfAJobFollowedLate() {
        var p = BatchProgress(batch: BatchID(7), jobs: [JobID(1), JobID(2)])
        var running = event(1, .snapshot, .running, at: 100, backend: -1)
        running.startedMs = 40
        p.apply(running)
        p.apply(event(1, .completed, .completed, at: 400, backend: -1))
        #expect(p.jobs[JobID(1)]?.durationMs == 360)
        // A final job's snapshot is taken after it ended: `finished_ms` says when it did.
        var ended = event(2, .snapshot, .completed, at: 900, backend: -1)
        ended.startedMs = 700
        ended.finishedMs = 850
        p.apply(ended)
        #expect(p.jobs[JobID(2)]?.durationMs == 150)
    }

    @Test func aJobFollowedFromARunningSnapshotHasOnlyALowerBoundOnItsRunTime() {
        var p = BatchProgress(batch: BatchID(7), jobs: [JobID(1)])
        p.apply(event(1, .snapshot, .running, at: 100, backend: -1))
        p.apply(event(1, .completed, .completed, at: 400, backend: -1))
        #expect(p.jobs[JobID(1)]?.durationMs == nil)
        #expect(p.jobs[JobID(1)]?.followedMs == 300)
    }

    /// Across a coordinator restart the client may miss a job's `requeued`: it saw attempt 1 start
    /// at 1000 and then, after redialling, a snapshot of attempt 2 running at 5000. Attempt 1's
    /// start said the job ran 6 s (an outside check saw "ran 4.06 s" for a 2 s job); attempt 2
    /// ran at least 2 s, from the snapshot. A job seen queued first and never seen running gives
    /// no lower bound either (it was counted from the first event, queue wait included).
    @Test func aNewAttemptForgetsTheStartOfTheOneBefore() {
        var p = BatchProgress(batch: BatchID(7), jobs: [JobID(1), JobID(2)])
        p.apply(event(1, .bound, .bound, at: 900, backend: 3))
        p.apply(event(1, .started, .running, at: 1000, backend: 3))
        var snapshot = event(1, .snapshot, .running, at: 5000, backend: 4)
        snapshot.attempt = 2
        p.apply(snapshot)
        var completed = event(1, .completed, .completed, at: 7000, backend: 4)
        completed.attempt = 2
        p.apply(completed)
        #expect(p.jobs[JobID(1)]?.durationMs == nil)
        #expect(p.jobs[JobID(1)]?.followedMs == 2000)
        p.apply(event(2, .queued, .queued, at: 100))
        p.apply(event(2, .completed, .completed, at: 9000, backend: 3))
        #expect(p.jobs[JobID(2)]?.durationMs == nil && p.jobs[JobID(2)]?.followedMs == nil)
    }
}
