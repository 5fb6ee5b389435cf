import MusterCore
import MusterProtocol
import Testing

/// A job canceled on its backend is `canceling`: the backend keeps its slot until it confirms the
/// job stopped, the link is lost, or the cancel grace passes; the job then ends `canceled`, once.
@Suite struct CancelTests {
    let image = JobSpec(kind: "image")

    /// One backend with one slot and no overqueue, running `job`.
    func running(_ configure: @escaping (inout CorePolicy) -> Void = { _ in }) -> (Harness, JobID, Lease) {
        var h = Harness { p in
            p.overqueue = 0
            configure(&p)
        }
        h.ready(1)
        let job = h.submit(image)[0]
        let lease = h.lease(job)
        h.send(.jobStarted(job, backend: BackendID(1), lease: lease))
        return (h, job, lease)
    }

    func finals(_ h: Harness, _ job: JobID) -> [JobEvent.Kind] {
        h.events(job).filter { if case .canceled = $0 { true } else if case .completed = $0 { true } else if case .failed = $0 { true } else { false } }
    }

    @Test func theSlotStaysTakenUntilTheBackendConfirms() {
        var (h, job, lease) = running()
        let next = h.submit(image)[0]
        #expect(h.state(next) == .queued)
        let c = h.record(try! h.core.cancelJob(job, at: h.clock))
        #expect(c.contains(.cancel(job: job, backend: BackendID(1), lease: lease)))
        #expect(h.events(job, in: c) == [.canceling])
        // Nothing new goes to a backend still stopping the job.
        #expect(h.state(next) == .queued && h.assigned.isEmpty)
        #expect(h.core.backend(BackendID(1))?.inFlight == 1)
        // Reports of the job being stopped change nothing and are not stale.
        h.send(.jobProgress(job, backend: BackendID(1), lease: lease, fraction: 0.9))
        #expect(h.events(job, in: h.last).isEmpty && !h.last.contains { if case .staleLease = $0 { true } else { false } })
        // A second cancel changes nothing.
        #expect(try! h.core.cancelJob(job, at: h.clock).isEmpty)
        h.clock = .seconds(3)
        h.send(.jobFailed(job, backend: BackendID(1), lease: lease, code: .canceled, message: "interrupted", retryable: false))
        #expect(h.state(job) == .canceled)
        #expect(h.last.contains(.observe(.cancelSettled(job, BackendID(1), .confirmed))))
        #expect(h.core.job(job)?.history.last?.outcome == .canceled)
        // The slot is free now: the next job goes there.
        #expect(h.state(next) == .bound && h.backend(next) == BackendID(1))
        #expect(finals(h, job) == [.canceled])
        #expect(h.core.counters.canceled == 1)
    }

    @Test func aCompletionOrFailureThatRacedTheCancelStillEndsItCanceled() {
        var (h, job, lease) = running()
        _ = h.record(try! h.core.cancelJob(job, at: h.clock))
        h.send(.jobCompleted(job, backend: BackendID(1), lease: lease, result: RawJSON(unchecked: "[1]")))
        #expect(h.state(job) == .canceled && h.core.job(job)?.result == nil)
        #expect(h.last.contains(.observe(.cancelSettled(job, BackendID(1), .raced))))
        #expect(h.core.counters.completed == 0)

        // A retryable failure while canceling is not requeued: a canceled job never runs again.
        var (g, other, otherLease) = running()
        _ = g.record(try! g.core.cancelJob(other, at: g.clock))
        g.send(.jobFailed(other, backend: BackendID(1), lease: otherLease, code: ErrorCode("out_of_memory"), message: "oom", retryable: true))
        #expect(g.state(other) == .canceled && g.core.counters.requeued == 0)
        #expect(g.core.backend(BackendID(1))?.inhibitedUntil == nil, "not the backend's fault")
        #expect(finals(g, other) == [.canceled])
    }

    @Test func aLostLinkEndsItAtOnceAndALateConfirmationIsStale() {
        var (h, job, lease) = running { $0.suspectGrace = .seconds(10) }
        _ = h.record(try! h.core.cancelJob(job, at: h.clock))
        h.send(.linkLost(BackendID(1)))
        #expect(h.state(job) == .canceled)
        #expect(h.last.contains(.observe(.cancelSettled(job, BackendID(1), .linkLost))))
        // It comes back with the same incarnation: the job is not among its bindings.
        h.send(.backendRegistered(BackendRegistration(id: BackendID(1), name: "b1", incarnation: Incarnation(1))))
        #expect(h.core.bindings(of: BackendID(1)).isEmpty)
        h.send(.jobFailed(job, backend: BackendID(1), lease: lease, code: .canceled, message: "", retryable: false))
        #expect(h.last.contains(.staleLease(job: job, backend: BackendID(1), lease: lease, about: "failed")))
        #expect(finals(h, job) == [.canceled])
    }

    @Test func aJobOnASuspectBackendEndsCanceledAtOnce() {
        var (h, job, lease) = running { $0.suspectGrace = .seconds(10) }
        h.send(.linkLost(BackendID(1)))
        let c = h.record(try! h.core.cancelJob(job, at: h.clock))
        #expect(h.state(job) == .canceled && h.events(job, in: c) == [.canceled])
        #expect(c.contains(.observe(.cancelSettled(job, BackendID(1), .linkLost))))
        // Back with the same incarnation: not among its bindings, its late report is stale.
        h.send(.backendRegistered(BackendRegistration(id: BackendID(1), name: "b1", incarnation: Incarnation(1))))
        #expect(h.core.bindings(of: BackendID(1)).isEmpty)
        h.send(.jobCompleted(job, backend: BackendID(1), lease: lease, result: .null))
        #expect(h.last.contains(.staleLease(job: job, backend: BackendID(1), lease: lease, about: "completed")))
    }

    @Test func aRestartedOrRemovedBackendEndsItCanceledNotRequeued() {
        var (h, job, _) = running()
        _ = h.record(try! h.core.cancelJob(job, at: h.clock))
        h.ready(1, incarnation: 2)
        #expect(h.state(job) == .canceled && h.core.counters.requeued == 0)
        #expect(h.core.job(job)?.attempt == 1)

        var (g, other, _) = running()
        _ = g.record(try! g.core.cancelJob(other, at: g.clock))
        g.send(.backendRemoved(BackendID(1)))
        #expect(g.state(other) == .canceled && g.core.counters.requeued == 0)
    }

    @Test func theGraceEndsAnUnconfirmedCancelAndFreesTheSlot() {
        // A backend written before confirmations existed never sends one.
        var (h, job, lease) = running { $0.cancelGrace = .seconds(30) }
        let next = h.submit(image)[0]
        _ = h.record(try! h.core.cancelJob(job, at: h.clock))
        h.advance(to: 29.9)
        #expect(h.state(job) == .running && h.state(next) == .queued)
        h.advance(to: 30)
        #expect(h.state(job) == .canceled)
        #expect(h.last.contains(.observe(.cancelSettled(job, BackendID(1), .graceExpired))))
        #expect(h.core.counters.cancelGraceExpired == 1)
        #expect(h.state(next) == .bound)
        // Its confirmation, if it comes after all, is stale.
        h.send(.jobFailed(job, backend: BackendID(1), lease: lease, code: .canceled, message: "", retryable: false))
        #expect(h.last.contains(.staleLease(job: job, backend: BackendID(1), lease: lease, about: "failed")))
        #expect(finals(h, job) == [.canceled])
    }

    @Test func aConfirmedCancelLeavesNoTimerThatEndsAnythingLater() {
        var (h, job, lease) = running { $0.cancelGrace = .seconds(30) }
        _ = h.record(try! h.core.cancelJob(job, at: h.clock))
        h.send(.jobFailed(job, backend: BackendID(1), lease: lease, code: .canceled, message: "", retryable: false))
        h.advance(to: 31)
        #expect(h.core.counters.cancelGraceExpired == 0 && finals(h, job) == [.canceled])
    }

    @Test func aZeroGraceEndsItAtOnceAsBefore() {
        var (h, job, lease) = running { $0.cancelGrace = .zero }
        let c = h.record(try! h.core.cancelJob(job, at: h.clock))
        #expect(c.contains(.cancel(job: job, backend: BackendID(1), lease: lease)))
        #expect(h.state(job) == .canceled && h.events(job, in: c) == [.canceled])
    }

    @Test func aCancelingJobIsNeverStolen() {
        var h = Harness()  // overqueue 1: a second job waits on backend 1
        h.ready(1)
        let jobs = h.submit(image, count: 2)
        h.send(.jobStarted(jobs[0], backend: BackendID(1), lease: h.lease(jobs[0])))
        #expect(h.state(jobs[1]) == .bound)
        _ = h.record(try! h.core.cancelJob(jobs[1], at: h.clock))
        // An idle backend comes up: it would steal an unstarted job, but not one being canceled.
        h.ready(2)
        #expect(h.backend(jobs[1]) == BackendID(1) && h.state(jobs[1]) == .bound)
        #expect(h.core.counters.stolen == 0)
        h.send(.jobFailed(jobs[1], backend: BackendID(1), lease: h.lease(jobs[1]), code: .canceled, message: "", retryable: false))
        #expect(h.state(jobs[1]) == .canceled)
    }
}
