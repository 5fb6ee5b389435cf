import MusterCore
import MusterProtocol
import Testing

/// Job lifecycle, leases, links and incarnations, event by event.
@Suite struct LifecycleTests {
    let image = JobSpec(kind: "image")

    @Test func jobRunsThroughItsStatesAndEndsOnce() {
        var h = Harness()
        h.ready(1)
        let job = h.submit(image)[0]
        #expect(h.assigned.map(\.job) == [job])
        #expect(h.events(job) == [.queued, .bound])
        let lease = h.lease(job)
        h.send(.jobStarted(job, backend: BackendID(1), lease: lease))
        h.send(.jobProgress(job, backend: BackendID(1), lease: lease, fraction: 0.5))
        #expect(h.core.job(job)?.progress == 0.5)
        h.send(.jobCompleted(job, backend: BackendID(1), lease: lease, result: RawJSON(unchecked: #"{"ok":1}"#)))
        #expect(h.state(job) == .completed)
        #expect(h.core.job(job)?.result?.text == #"{"ok":1}"#)
        h.send(.jobCompleted(job, backend: BackendID(1), lease: lease, result: .null))
        #expect(h.core.job(job)?.result?.text == #"{"ok":1}"#)
        #expect(h.core.counters.completed == 1)
        #expect(h.core.counters.staleReports == 1)
    }

    @Test func staleLeaseReportsChangeNothing() {
        var h = Harness()
        h.ready(1)
        h.ready(2)
        let job = h.submit(image)[0]
        let old = h.lease(job)
        let before = h.core.job(job)
        let wrongLease = Lease(old.rawValue + 100)
        for event: CoreEvent in [
            .jobStarted(job, backend: BackendID(1), lease: wrongLease),
            .jobProgress(job, backend: BackendID(1), lease: wrongLease, fraction: 0.9),
            .jobCompleted(job, backend: BackendID(1), lease: wrongLease, result: .null),
            .jobFailed(job, backend: BackendID(1), lease: wrongLease, code: .jobFailed, message: "x", retryable: false),
            .jobCompleted(job, backend: BackendID(2), lease: old, result: .null),  // right lease, wrong backend
        ] {
            let actions = h.send(event)
            guard case .observe(.staleReport) = actions.first else {
                Issue.record("expected a stale report, got \(actions)")
                continue
            }
            // Answered `stale_lease` naming the report, once; nothing else.
            let about: String
            let backend: BackendID, lease: Lease
            switch event {
            case .jobStarted(_, let b, let l): (about, backend, lease) = ("started", b, l)
            case .jobProgress(_, let b, let l, _, _, _): (about, backend, lease) = ("progress", b, l)
            case .jobCompleted(_, let b, let l, _): (about, backend, lease) = ("completed", b, l)
            case .jobFailed(_, let b, let l, _, _, _): (about, backend, lease) = ("failed", b, l)
            default: continue
            }
            #expect(Array(actions.dropFirst()) == [.staleLease(job: job, backend: backend, lease: lease, about: about)])
        }
        #expect(h.core.job(job) == before)
        #expect(h.core.counters.staleReports == 5)
    }

    @Test func cancelWorksInEveryState() {
        var h = Harness()
        // gated: a video job while the only video backend is still loading
        h.send(.backendRegistered(BackendRegistration(id: BackendID(9), name: "v", incarnation: Incarnation(1))))
        let gated = h.submit(JobSpec(kind: "video", needs: ["video"]))[0]
        #expect(h.state(gated) == .gated)
        _ = try! h.core.cancelJob(gated, at: h.clock)
        #expect(h.state(gated) == .canceled)
        #expect(h.core.heldJobs.isEmpty)

        h.ready(1)
        let jobs = h.submit(image, count: 3)  // bound (running soon), bound (overqueue), queued
        let running = jobs[0], bound = jobs[1], queued = jobs[2]
        h.send(.jobStarted(running, backend: BackendID(1), lease: h.lease(running)))
        #expect([h.state(running), h.state(bound), h.state(queued)] == [.running, .bound, .queued])

        let q = try! h.core.cancelJob(queued, at: h.clock)
        #expect(!q.contains { if case .cancel = $0 { true } else { false } })
        #expect(h.state(queued) == .canceled)

        // Bound or running: the backend is told to stop, and the job ends when it confirms.
        let boundLease = h.lease(bound)
        let b = h.record(try! h.core.cancelJob(bound, at: h.clock))
        #expect(b.contains(.cancel(job: bound, backend: BackendID(1), lease: boundLease)))
        #expect(h.state(bound) == .bound && h.core.job(bound)?.cancelRequestedAt == h.clock)
        #expect(h.events(bound, in: b) == [.canceling])
        h.send(.jobFailed(bound, backend: BackendID(1), lease: boundLease, code: .canceled, message: "stopped", retryable: false))
        #expect(h.state(bound) == .canceled)

        let runLease = h.lease(running)
        let r = h.record(try! h.core.cancelJob(running, at: h.clock))
        #expect(r.contains(.cancel(job: running, backend: BackendID(1), lease: runLease)))
        #expect(h.state(running) == .running)
        // A completion that raced the cancel ends it too, canceled.
        h.send(.jobCompleted(running, backend: BackendID(1), lease: runLease, result: .null))
        #expect(h.state(running) == .canceled)
        // Anything later under that lease is stale.
        h.send(.jobFailed(running, backend: BackendID(1), lease: runLease, code: .canceled, message: "stopped", retryable: false))
        #expect(h.last.contains(.staleLease(job: running, backend: BackendID(1), lease: runLease, about: "failed")))
        // Canceling a finished job changes nothing; an unknown job is an error.
        #expect(try! h.core.cancelJob(running, at: h.clock).isEmpty)
        #expect(throws: CoreError.self) { _ = try h.core.cancelJob(JobID(999), at: h.clock) }
        #expect(h.core.counters.canceled == 4)
    }

    @Test func cancelBatchCancelsWhatIsLeft() throws {
        var h = Harness()
        h.ready(1)
        let (receipt, actions) = try h.core.submit(key: nil, entries: [BatchEntry(spec: image, count: 3)], at: h.clock)
        h.record(actions)
        let first = receipt.jobs[0]
        h.send(.jobCompleted(first, backend: BackendID(1), lease: h.lease(first), result: .null))
        h.record(try h.core.cancelBatch(receipt.batch, at: h.clock))
        // Both were on the backend: canceling until it confirms.
        #expect(receipt.jobs.map { h.state($0) } == [.completed, .bound, .bound])
        for job in receipt.jobs.dropFirst() {
            h.send(.jobFailed(job, backend: BackendID(1), lease: h.lease(job), code: .canceled, message: "", retryable: false))
        }
        #expect(receipt.jobs.map { h.state($0) } == [.completed, .canceled, .canceled])
        #expect(throws: CoreError.self) { _ = try h.core.cancelBatch(BatchID(77), at: h.clock) }
    }

    @Test func maxAttemptsThenFailedWithHistory() {
        var h = Harness { $0.maxAttempts = 3 }
        h.ready(1)
        let job = h.submit(image)[0]
        for attempt in 1...3 {
            #expect(h.core.job(job)?.attempt == attempt)
            h.send(
                .jobFailed(
                    job, backend: BackendID(1), lease: h.lease(job), code: .jobFailed, message: "oom", retryable: true))
            h.advance(to: h.clock.seconds + 5)  // inhibit ends, the job is bound again
        }
        let record = h.core.job(job)!
        #expect(record.state == .failed)
        #expect(record.failure?.code == .attemptsExhausted)
        #expect(record.history.count == 3)
        #expect(record.history.map(\.attempt) == [1, 2, 3])
        #expect(record.history.map(\.outcome) == [.requeued, .requeued, .failed])
        #expect(record.history.allSatisfy { $0.error?.code == .jobFailed && $0.error?.message == "oom" })
        #expect(record.failure?.attempts == record.history)
        #expect(record.failure!.message.contains("attempt 2 on backend 1"))
    }

    /// `unknown_job` says an assign was lost with a link (Protocol 6.6): the job is requeued, the
    /// backend is not held back.
    @Test func anUnknownJobAnswerRequeuesWithoutInhibitingTheBackend() {
        var h = Harness()
        h.ready(1)
        let job = h.submit(image)[0]
        h.send(
            .jobFailed(
                job, backend: BackendID(1), lease: h.lease(job), code: .unknownJob, message: "does not hold this job",
                retryable: true))
        #expect(h.core.backend(BackendID(1))?.inhibitedUntil == nil)
        #expect(h.state(job) == .bound && h.backend(job) == BackendID(1) && h.core.job(job)?.attempt == 2, "bound again at once")
    }

    @Test func nonRetryableFailureEndsTheJobAndInhibitsTheBackend() {
        var h = Harness()
        h.ready(1)
        h.ready(2)
        let job = h.submit(image)[0]
        #expect(h.backend(job) == BackendID(1))
        h.send(
            .jobFailed(
                job, backend: BackendID(1), lease: h.lease(job), code: .jobFailed, message: "bad params",
                retryable: false))
        #expect(h.state(job) == .failed)
        #expect(h.core.backend(BackendID(1))?.inhibitedUntil == .seconds(5))
        // Backend 1 gets nothing new until the inhibit ends, even though it is the lower id.
        let next = h.submit(image)[0]
        #expect(h.backend(next) == BackendID(2))
        #expect(h.core.nextDeadline != nil)
        h.advance(to: 5)
        let third = h.submit(image)[0]
        #expect(h.backend(third) == BackendID(1))
    }

    @Test func newIncarnationKillsOldLeases() {
        var h = Harness()
        h.ready(1, incarnation: 100)
        let job = h.submit(image)[0]
        let oldLease = h.lease(job)
        h.send(.jobStarted(job, backend: BackendID(1), lease: oldLease))
        h.clock = .seconds(3)
        h.send(.backendRegistered(BackendRegistration(id: BackendID(1), name: "b1", incarnation: Incarnation(200))))
        // Nothing else can run it and the restarted backend has not announced: held by the gate.
        let why = WaitReason(features: [], model: nil, backends: [BackendID(1)], noReadyBackend: true)
        let restarted = JobFailure(
            code: .backendRestarted, message: "backend 1 (b1) restarted with a new incarnation: its leases died")
        #expect(h.events(job, in: h.last) == [.requeued(.backendRestarted, error: restarted), .gated(why)])
        #expect(h.state(job) == .gated)
        #expect(h.core.job(job)?.attempt == 1)  // the attempt that ended; the next binding is 2
        // The old process's report is stale.
        h.send(.jobCompleted(job, backend: BackendID(1), lease: oldLease, result: .null))
        #expect(h.state(job) == .gated)
        // The new process announces and takes the job under a new lease.
        h.announce(1, .ready, incarnation: 200, revision: 1)
        #expect(h.assigned.first?.job == job)
        #expect(h.lease(job) > oldLease)
        // An announcement of the old incarnation changes nothing.
        h.announce(1, .draining, incarnation: 100, revision: 9)
        #expect(h.core.backend(BackendID(1))?.announced == .ready)
    }

    /// Backends 1 and 2, a job bound to each, and the clock at 1 s.
    func oneJobOnEachOfTwoBackends() -> (Harness, [JobID]) {
        var h = Harness()
        h.ready(1)
        h.ready(2)
        let jobs = h.submit(image, count: 2)
        #expect(jobs.map { h.backend($0) } == [BackendID(1), BackendID(2)])
        h.clock = .seconds(1)
        return (h, jobs)
    }

    @Test func suspectGraceThenRequeue() {
        var (h, jobs) = oneJobOnEachOfTwoBackends()
        h.send(.linkLost(BackendID(1)))
        #expect(h.core.backend(BackendID(1))?.link == .suspect)
        // Suspect: keeps its job, gets nothing new.
        let more = h.submit(image)[0]
        #expect(h.backend(more) == BackendID(2))
        #expect(h.core.nextDeadline == .seconds(11))
        h.advance(to: 10.5)
        #expect(h.state(jobs[0]) == .bound)
        h.advance(to: 11)
        #expect(h.core.backend(BackendID(1))?.link == .down)
        guard case .requeued(.linkLost, let error)? = h.events(jobs[0], in: h.last).first else {
            Issue.record("expected requeued, got \(h.events(jobs[0], in: h.last))")
            return
        }
        #expect(error.code == .backendLost && error.message.contains("grace"), "\(error.message)")
        // Backend 2 is full (slots 1 + overqueue 1): the job waits, attempt 1 ended.
        #expect(h.core.job(jobs[0])?.attempt == 1)
    }

    /// A backend that said `goodbye` before its link closed is not coming back on this
    /// incarnation: no grace, it is down at once and its jobs move now.
    @Test func aBackendThatLeftIsDownAtOnceAndItsJobsMove() {
        var (h, jobs) = oneJobOnEachOfTwoBackends()
        h.send(.backendLeft(BackendID(1)))
        #expect(h.core.backend(BackendID(1))?.link == .down)
        guard case .requeued(.linkLost, let error)? = h.events(jobs[0], in: h.last).first else {
            Issue.record("expected requeued, got \(h.events(jobs[0], in: h.last))")
            return
        }
        // The message says what happened: no grace applied.
        #expect(error.code == .backendLost && error.message.contains("said goodbye"), "\(error.message)")
        // Requeued at once and bound again (backend 2's overqueue slot), with a new attempt.
        #expect(h.backend(jobs[0]) == BackendID(2) && h.core.job(jobs[0])?.attempt == 2)
        // No suspect timer is left behind, and a later lost link changes nothing.
        h.send(.linkLost(BackendID(1)))
        #expect(h.core.backend(BackendID(1))?.link == .down)
        // It may still come back (a new link, here the same incarnation): up again.
        h.send(.backendRegistered(BackendRegistration(id: BackendID(1), name: "b1", incarnation: Incarnation(1))))
        #expect(h.core.backend(BackendID(1))?.link == .up)
    }

    @Test func linkRestoredWithinGraceResumes() {
        var h = Harness()
        h.ready(1)
        let job = h.submit(image)[0]
        let lease = h.lease(job)
        h.clock = .seconds(1)
        h.send(.linkLost(BackendID(1)))
        h.clock = .seconds(4)
        let restored = h.send(
            .backendRegistered(BackendRegistration(id: BackendID(1), name: "b1", incarnation: Incarnation(1))))
        #expect(
            restored.contains(
                .sync(backend: BackendID(1), held: CapabilityVersion(incarnation: Incarnation(1), revision: 1))))
        #expect(h.core.backend(BackendID(1))?.link == .up)
        h.advance(to: 20)
        #expect(h.state(job) == .bound && h.lease(job) == lease)
        h.send(.jobCompleted(job, backend: BackendID(1), lease: lease, result: .null))
        #expect(h.state(job) == .completed)
    }

    /// A new link of the same process that replaces one still up (4005 on the old one) gets a
    /// `sync` after its welcome too, and keeps its job.
    @Test func aReplacingLinkOfTheSameIncarnationIsSynced() {
        var h = Harness()
        h.ready(1)
        let job = h.submit(image)[0]
        let lease = h.lease(job)
        let replaced = h.send(
            .backendRegistered(BackendRegistration(id: BackendID(1), name: "b1", incarnation: Incarnation(1))))
        #expect(
            replaced.contains(
                .sync(backend: BackendID(1), held: CapabilityVersion(incarnation: Incarnation(1), revision: 1))))
        #expect(h.state(job) == .bound && h.lease(job) == lease)
    }

    @Test func removedBackendRequeuesItsJobs() {
        var h = Harness()
        h.ready(1)
        h.ready(2)
        let jobs = h.submit(image, count: 2)
        h.send(.backendRemoved(BackendID(1)))
        #expect(h.core.backend(BackendID(1)) == nil)
        #expect(h.backend(jobs[0]) == BackendID(2))
        #expect(h.core.job(jobs[0])?.attempt == 2)
    }

    @Test func drainingBackendFinishesButTakesNothingNew() {
        var h = Harness()
        h.ready(1)
        h.ready(2)
        let first = h.submit(image)[0]
        #expect(h.backend(first) == BackendID(1))
        h.send(.drain(BackendID(1)))
        let second = h.submit(image, count: 2)
        #expect(second.allSatisfy { h.backend($0) == BackendID(2) })
        h.send(.jobCompleted(first, backend: BackendID(1), lease: h.lease(first), result: .null))
        #expect(h.state(first) == .completed)
        #expect(h.core.backend(BackendID(1))?.draining == true)
    }

    /// A drained backend that says goodbye and starts again (a new incarnation, under its name:
    /// `muster agent` stopped with Ctrl-C and run again) takes work again (Protocol 7.3: it comes
    /// back by linking again). The same process linking again stays drained.
    @Test func aDrainedBackendStartedAgainTakesWork() {
        var h = Harness()
        h.ready(1)
        h.send(.drain(BackendID(1)))
        h.send(.linkLost(BackendID(1)))
        h.ready(1)
        #expect(h.core.backend(BackendID(1))?.draining == true)
        h.send(.backendLeft(BackendID(1)))
        h.ready(1, incarnation: 2)
        #expect(h.core.backend(BackendID(1))?.draining == false)
        let next = h.submit(image)[0]
        #expect(h.backend(next) == BackendID(1))
    }

    /// A drained backend is not ready, whatever it announces: a job only it could run fails
    /// naming the features no ready backend offers (Protocol 5, `missing_features`).
    @Test func aJobOnlyADrainedBackendCouldRunFailsNamingWhatNoReadyBackendOffers() {
        var h = Harness()
        h.ready(1, features: ["video"])
        h.send(.drain(BackendID(1)))
        let job = h.submit(JobSpec(kind: "video", needs: ["video"]))[0]
        #expect(h.state(job) == .failed)
        #expect(h.core.job(job)?.failure?.missingFeatures == ["video"])
    }

    @Test func submitIsIdempotentPerKeyAndValidated() throws {
        var h = Harness()
        h.ready(1)
        let a = try h.core.submit(key: "k1", entries: [BatchEntry(spec: image, count: 2)], at: h.clock)
        let b = try h.core.submit(key: "k1", entries: [BatchEntry(spec: image, count: 2)], at: h.clock)
        #expect(a.receipt.batch == b.receipt.batch && a.receipt.jobs == b.receipt.jobs)
        #expect(b.receipt.duplicate && b.actions.isEmpty)
        #expect(h.core.counters.submitted == 2)
        #expect(h.core.batch(a.receipt.batch)?.jobs == a.receipt.jobs)
        #expect(throws: CoreError.self) { _ = try h.core.submit(key: nil, entries: [], at: h.clock) }
        do {
            _ = try h.core.submit(key: nil, entries: [BatchEntry(spec: image, count: 0)], at: h.clock)
            Issue.record("count 0 accepted")
        } catch {
            #expect(error.code == .invalidMessage)
            #expect(error.message.contains("entry 0"))
        }
        var small = Harness { $0.maxJobsPerSubmission = 5 }
        #expect(throws: CoreError(.limitExceeded, "submission creates more than 5 jobs; split it into several batches"))
        {
            _ = try small.core.submit(key: nil, entries: [BatchEntry(spec: image, count: 6)], at: .zero)
        }
    }

    @Test func finishedJobsAreKeptWithinBounds() {
        var h = Harness {
            $0.finishedJobLimit = 2
            $0.finishedJobRetention = .seconds(100)
        }
        h.ready(1, slots: 4)
        let jobs = h.submit(image, count: 3)
        for job in jobs { h.send(.jobCompleted(job, backend: BackendID(1), lease: h.lease(job), result: .null)) }
        #expect(h.core.job(jobs[0]) == nil)  // over the count limit
        #expect(h.core.job(jobs[1])?.state == .completed)
        h.advance(to: 100)
        #expect(h.core.job(jobs[1]) == nil && h.core.job(jobs[2]) == nil)  // over the age limit
        #expect(h.core.batch(h.core.counters.submitted > 0 ? BatchID(1) : BatchID(0)) == nil)
    }

    @Test func higherPriorityFirstThenOwnersRoundRobinThenFIFO() {
        var h = Harness()
        h.ready(1)
        let blocker = h.submit(JobSpec(kind: "image", owner: "x"), count: 2)  // running + overqueue
        let a = h.submit(JobSpec(kind: "image", owner: "alice"), count: 3)
        let b = h.submit(JobSpec(kind: "image", owner: "bob"), count: 2)
        let urgent = h.submit(JobSpec(kind: "image", priority: 5, owner: "carol"))
        var order: [JobID] = []
        var running = blocker
        while !running.isEmpty {
            let job = running.removeFirst()
            h.send(.jobCompleted(job, backend: BackendID(1), lease: h.lease(job), result: .null))
            for (j, _, _) in h.assigned {
                order.append(j)
                running.append(j)
            }
        }
        #expect(order == [urgent[0], a[0], b[0], a[1], b[1], a[2]])
    }
}

@Suite struct LimitTests {
    @Test func distinctJobClassesAreBounded() throws {
        var h = Harness { $0.maxJobClasses = 2 }
        h.ready(1, features: ["a", "b", "c"])
        _ = h.submit(JobSpec(kind: "image", needs: ["a"]))
        _ = h.submit(JobSpec(kind: "image", needs: ["b"]))
        _ = h.submit(JobSpec(kind: "image", needs: ["a"]))  // known combination: fine
        #expect(throws: CoreError.self) {
            _ = try h.core.submit(
                key: nil, entries: [BatchEntry(spec: JobSpec(kind: "image", needs: ["c"]))], at: h.clock)
        }
    }

    /// `status_report` and `GET /v1/backends` list local backends first, -1, -2, ..., then remote
    /// ones by ascending id, as `muster status` shows them.
    @Test func backendsAreListedLocalOnesFirst() {
        var h = Harness()
        for id: Int64 in [3, -2, 1, -1, -3] { h.ready(id) }
        #expect(h.core.backendList.map(\.id.rawValue) == [-1, -2, -3, 1, 3])
    }
}
