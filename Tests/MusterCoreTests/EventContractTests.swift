@testable import MusterCore
import MusterProtocol
import Testing

/// The facts the wire carries are decided here, event by event: acks, job events (backend,
/// attempt, cause, error), attempt histories, stale-lease answers, batch keys. The shell only maps
/// them (Protocol/README.md 6.3, 7.2, 8, 9).
@Suite struct EventContractTests {
    let image = JobSpec(kind: "image")
    let video = JobSpec(kind: "video", needs: ["frameinterps", "video"])

    func jobEvents(_ h: Harness, _ job: JobID, in actions: [CoreAction]? = nil) -> [JobEvent] {
        (actions ?? h.all).compactMap { if case .jobEvent(let e) = $0, e.job == job { e } else { nil } }
    }

    func acks(_ actions: [CoreAction]) -> [CoreAction] {
        actions.filter { if case .ackCapabilities = $0 { true } else { false } }
    }

    @Test func heldJobTakingAnIdleSlotIsGatedThenReleasedThenBound() {
        var h = Harness()
        h.ready(-1, features: ["video", "frameinterps"])
        h.send(.backendRegistered(BackendRegistration(id: BackendID(2), name: "b2", incarnation: Incarnation(1))))
        let jobs = h.submit(video, count: 2)
        let first = jobEvents(h, jobs[0], in: h.last)
        #expect(first.map(\.kind.name) == ["queued", "gated", "released", "bound"])
        #expect(first.map(\.attempt) == [0, 0, 0, 1])
        #expect(first[2].kind == .released(.idleBackend) && first[2].backend == BackendID(-1))
        #expect(first[3].backend == BackendID(-1))
        let second = jobEvents(h, jobs[1], in: h.last)
        #expect(second.map(\.kind.name) == ["queued", "gated"])
        #expect(second.allSatisfy { $0.attempt == 0 && $0.backend == nil })
        // Backend 2's announcement opens the gate: `released` names it.
        h.clock = .seconds(40)
        h.announce(2, .ready, features: ["video", "frameinterps"], revision: 1)
        let released = jobEvents(h, jobs[1], in: h.last)
        #expect(released.first?.kind == .released(.announced))
        #expect(released.first?.backend == BackendID(2))
        #expect(released.first?.attempt == 0)
    }

    @Test func everyAnnouncementGetsExactlyOneAckWithTheVerdict() {
        var h = Harness()
        h.send(.backendRegistered(BackendRegistration(id: BackendID(1), name: "b1", incarnation: Incarnation(5))))
        let v1 = CapabilityVersion(incarnation: Incarnation(5), revision: 1)
        let v2 = CapabilityVersion(incarnation: Incarnation(5), revision: 2)
        h.announce(1, .loading, incarnation: 5, revision: 1)
        #expect(acks(h.last) == [.ackCapabilities(backend: BackendID(1), version: v1, applied: true)])
        h.announce(1, .ready, incarnation: 5, revision: 2)
        #expect(acks(h.last) == [.ackCapabilities(backend: BackendID(1), version: v2, applied: true)])
        // Duplicate, older, and the same revision with other content: one ack each, not applied.
        h.announce(1, .ready, incarnation: 5, revision: 2)
        #expect(acks(h.last) == [.ackCapabilities(backend: BackendID(1), version: v2, applied: false)])
        h.announce(1, .loading, incarnation: 5, revision: 1)
        #expect(acks(h.last) == [.ackCapabilities(backend: BackendID(1), version: v2, applied: false)])
        h.announce(1, .draining, features: ["other"], incarnation: 5, revision: 2)
        #expect(acks(h.last) == [.ackCapabilities(backend: BackendID(1), version: v2, applied: false)])
        #expect(h.core.backend(BackendID(1))?.announced == .ready)
        // An older incarnation than the registered one is never applied.
        h.announce(1, .ready, incarnation: 4, revision: 9)
        #expect(acks(h.last) == [.ackCapabilities(backend: BackendID(1), version: v2, applied: false)])
    }

    @Test func retryableFailureKeepsTheBackendsCodeAndNumbersAttempts() {
        var h = Harness()
        h.ready(1)
        h.ready(2)
        let job = h.submit(image)[0]
        #expect(h.backend(job) == BackendID(1))
        h.send(.jobStarted(job, backend: BackendID(1), lease: h.lease(job)))
        h.send(
            .jobFailed(
                job, backend: BackendID(1), lease: h.lease(job), code: ErrorCode("out_of_memory"),
                message: "CUDA out of memory", retryable: true))
        let events = jobEvents(h, job, in: h.last)
        #expect(events.map(\.kind.name) == ["requeued", "bound"])
        guard case .requeued(.backendFailed, let error) = events[0].kind else {
            Issue.record("expected requeued, got \(events)")
            return
        }
        #expect(error.code == ErrorCode("out_of_memory") && error.message == "CUDA out of memory")
        #expect(events[0].backend == BackendID(1) && events[0].attempt == 1 && events[0].state == .queued)
        #expect(events[1].backend == BackendID(2) && events[1].attempt == 2)
        h.send(.jobCompleted(job, backend: BackendID(2), lease: h.lease(job), result: .null))
        let history = h.core.job(job)!.history
        #expect(history.map(\.outcome) == [.requeued, .completed])
        #expect(history[0].error?.code == ErrorCode("out_of_memory"))
        #expect(history[1].error == nil)
        #expect(history.map(\.attempt) == [1, 2])
    }

    @Test func openAttemptOutcomeFollowsTheJob() {
        var h = Harness()
        h.ready(1)
        let job = h.submit(image)[0]
        #expect(h.core.job(job)?.history.last?.outcome == .bound)
        h.send(.jobProgress(job, backend: BackendID(1), lease: h.lease(job), fraction: 0.25, message: "step 5/20"))
        // Progress implies started; the event carries the backend's text at once.
        let events = jobEvents(h, job, in: h.last)
        #expect(events.map(\.kind) == [.started, .progress(0.25, message: "step 5/20")])
        #expect(h.core.job(job)?.history.last?.outcome == .running)
        #expect(h.core.job(job)?.progressMessage == "step 5/20")
        _ = h.record(try! h.core.cancelJob(job, at: h.clock))
        #expect(h.core.job(job)?.history.last?.outcome == .running, "open until the backend confirms")
        h.send(.jobFailed(job, backend: BackendID(1), lease: h.lease(job), code: .canceled, message: "", retryable: false))
        #expect(h.core.job(job)?.history.last?.outcome == .canceled)
    }

    @Test func stolenJobGetsRevokedEventAndANewAttempt() {
        var h = Harness()
        h.ready(1)
        let jobs = h.submit(image, count: 2)
        #expect(jobs.map { h.backend($0) } == [BackendID(1), BackendID(1)])
        h.send(.jobStarted(jobs[0], backend: BackendID(1), lease: h.lease(jobs[0])))
        let oldLease = h.lease(jobs[1])
        h.ready(2)
        #expect(h.last.contains(.revoke(job: jobs[1], backend: BackendID(1), lease: oldLease)))
        let events = jobEvents(h, jobs[1], in: h.last)
        #expect(events.map(\.kind.name) == ["revoked", "bound"])
        #expect(events[0].backend == BackendID(1) && events[0].attempt == 1 && events[0].state == .queued)
        #expect(events[1].backend == BackendID(2) && events[1].attempt == 2)
        #expect(h.core.job(jobs[1])?.history.map(\.outcome) == [.revoked, .bound])
        // The old lease's late report is answered stale_lease, once.
        let late = h.send(.jobStarted(jobs[1], backend: BackendID(1), lease: oldLease))
        #expect(late.contains(.staleLease(job: jobs[1], backend: BackendID(1), lease: oldLease, about: "started")))
        #expect(!late.contains { if case .revoke = $0 { true } else { false } })
    }

    @Test func failureBeforeAnyBindingHasAttemptZeroAndFixedDetails() {
        var h = Harness()
        h.ready(1, features: ["image"])
        let job = h.submit(JobSpec(kind: "video", needs: ["video"], model: "wan"))[0]
        let events = jobEvents(h, job, in: h.last)
        #expect(events.map(\.kind.name) == ["queued", "failed"])
        #expect(events.allSatisfy { $0.attempt == 0 })
        guard case .failed(let failure) = events[1].kind else { return }
        #expect(failure.code == .noEligibleBackend)
        #expect(failure.missingFeatures == ["video"] && failure.missingModel == "wan")
        // A backend that announces video later does not rewrite what the failure said.
        h.ready(2, features: ["video"], models: ["wan"])
        #expect(h.core.job(job)?.failure == failure)
    }

    /// The failure's `message` is protocol text (at most 4,096 characters): of a fleet of 300
    /// backends, `refusals` lists and the message names the first 16, and the message counts
    /// the others.
    @Test func aLargeFleetsRefusalsFitTheMessageLimit() {
        var h = Harness()
        for id in 1...300 { h.ready(Int64(id), features: ["image"]) }
        let job = h.submit(JobSpec(kind: "video", needs: ["video"]))[0]
        guard case .failed(let failure) = jobEvents(h, job, in: h.last).last?.kind else {
            Issue.record("not failed")
            return
        }
        #expect(failure.code == .noEligibleBackend)
        #expect(failure.message.unicodeScalars.count <= ProtocolLimits.maxTextLength)
        #expect(failure.message.hasPrefix("no backend can run this job: it needs features video; 1 (b1): "))
        #expect(failure.message.hasSuffix("16 (b16): missing features video; and 284 more backends not listed"))
        #expect(failure.refusals.count == 16)
        #expect(Coordinator.clampText(String(repeating: "é", count: 5000)).unicodeScalars.count == ProtocolLimits.maxTextLength)
    }

    @Test func batchKeyConflictAndRetentionAreTheCores() throws {
        var h = Harness {
            $0.finishedJobLimit = 1
        }
        h.ready(1)
        let entries = [BatchEntry(spec: image)]
        let (first, a1) = try h.core.submit(key: "k", entries: entries, at: h.clock)
        h.record(a1)
        let (again, a2) = try h.core.submit(key: "k", entries: entries, at: h.clock)
        #expect(again.batch == first.batch && again.jobs == first.jobs && again.duplicate && a2.isEmpty)
        #expect {
            _ = try h.core.submit(key: "k", entries: [BatchEntry(spec: image, count: 2)], at: h.clock)
        } throws: { error in
            guard let e = error as? CoreError else { return false }
            return e.code == .batchKeyConflict && e.details?.text == #"{"batch":\#(first.batch.rawValue)}"#
        }
        // The batch ends and is evicted (limit 1 finished job): its key is free again.
        h.send(.jobCompleted(first.jobs[0], backend: BackendID(1), lease: h.lease(first.jobs[0]), result: .null))
        let other = h.submit(image)[0]
        h.send(.jobCompleted(other, backend: BackendID(1), lease: h.lease(other), result: .null))
        #expect(h.core.batch(first.batch) == nil)
        let (reused, _) = try h.core.submit(key: "k", entries: [BatchEntry(spec: image, count: 2)], at: h.clock)
        #expect(!reused.duplicate && reused.batch != first.batch)
    }

    @Test func newIncarnationHidesTheOldSnapshotUntilItAnnounces() {
        var h = Harness()
        h.ready(1, features: ["video"], incarnation: 100, revision: 3)
        #expect(h.core.backend(BackendID(1))?.version == CapabilityVersion(incarnation: Incarnation(100), revision: 3))
        h.send(.backendRegistered(BackendRegistration(id: BackendID(1), name: "b1", incarnation: Incarnation(200))))
        let info = h.core.backend(BackendID(1))
        #expect(info?.version == nil && info?.announced == nil && info?.features == [])
        let job = h.submit(JobSpec(kind: "video", needs: ["video"]))[0]
        #expect(h.state(job) == .gated)
        #expect(h.core.job(job)?.waitReason?.backends == [BackendID(1)])
        h.announce(1, .ready, features: ["video"], incarnation: 200, revision: 1)
        #expect(h.core.backend(BackendID(1))?.version == CapabilityVersion(incarnation: Incarnation(200), revision: 1))
        #expect(h.state(job) == .bound)
    }

    @Test func completionObservesTheJobDuration() {
        var h = Harness()
        h.ready(1)
        let job = h.submit(image)[0]
        h.clock = .seconds(2)
        h.send(.jobStarted(job, backend: BackendID(1), lease: h.lease(job)))
        h.clock = .seconds(9)
        h.send(.jobCompleted(job, backend: BackendID(1), lease: h.lease(job), result: .null))
        #expect(h.last.contains(.observe(.jobDuration(job, BackendID(1), .seconds(7)))))
    }
}

extension JobEvent.Kind {
    /// The wire `event` name, for comparing sequences.
    var name: String {
        switch self {
        case .queued: "queued"
        case .gated: "gated"
        case .released: "released"
        case .bound: "bound"
        case .started: "started"
        case .progress: "progress"
        case .requeued: "requeued"
        case .revoked: "revoked"
        case .completed: "completed"
        case .failed: "failed"
        case .canceling: "canceling"
        case .canceled: "canceled"
        }
    }
}
