import MusterCore
import MusterProtocol
import Testing

/// The warm-up gate, readiness, anti-entropy and model commands, event by event.
@Suite struct GateTests {
    let video = JobSpec(kind: "video", needs: ["video", "frameinterps"])

    func readinessChanges(_ actions: [CoreAction]) -> [Readiness] {
        actions.compactMap { if case .readinessChanged(let r) = $0 { r } else { nil } }
    }

    func acks(_ actions: [CoreAction]) -> [CoreAction] {
        actions.filter { if case .ackCapabilities = $0 { true } else { false } }
    }

    @Test func heldJobsMakeReadinessFalseWithReasons() {
        var h = Harness()
        h.ready(-1, features: ["video", "frameinterps"])
        #expect(h.core.readiness.ready)
        h.send(.backendRegistered(BackendRegistration(id: BackendID(5), name: "remote", incarnation: Incarnation(1))))
        let jobs = h.submit(video, count: 3)
        // One starts at once on the idle local backend; the others are not parked behind it.
        #expect(jobs.map { h.state($0) } == [.bound, .gated, .gated])
        #expect(h.core.backend(BackendID(-1))?.inFlight == 1)
        let r = h.core.readiness
        #expect(!r.ready && r.heldJobs == 2)
        #expect(r.waitingFeatures == ["frameinterps", "video"])
        #expect(r.waitingBackends == [BackendID(5)])
        #expect(readinessChanges(h.last).last == r)
        #expect(h.core.heldJobs == [jobs[1], jobs[2]])
        #expect(
            h.core.heldByNeed == [
                HeldNeed(features: ["frameinterps", "video"], model: nil, backends: [BackendID(5)], jobs: 2)
            ])
        #expect(h.core.job(jobs[1])?.waitReason?.backends == [BackendID(5)])
        #expect(h.core.job(jobs[1])?.waitReason?.noReadyBackend == false)
        // Another model is another need; the same features and model add up. The counts are kept
        // as jobs are held and released, so the probe does not walk the held jobs.
        let wan = h.submit(JobSpec(kind: "video", needs: ["video", "frameinterps"], model: "wan"), count: 2)
        #expect(
            h.core.heldByNeed == [
                HeldNeed(features: ["frameinterps", "video"], model: nil, backends: [BackendID(5)], jobs: 2),
                HeldNeed(features: ["frameinterps", "video"], model: "wan", backends: [BackendID(5)], jobs: 2),
            ])
        for job in wan { h.record(try! h.core.cancelJob(job, at: h.clock)) }
        #expect(
            h.core.heldByNeed == [
                HeldNeed(features: ["frameinterps", "video"], model: nil, backends: [BackendID(5)], jobs: 2)
            ])

        // The local backend finishing its job takes the next held one at once (idle running slot).
        h.send(.jobCompleted(jobs[0], backend: BackendID(-1), lease: h.lease(jobs[0]), result: .null))
        #expect(h.events(jobs[1], in: h.last) == [.released(.idleBackend), .bound])
        #expect(h.state(jobs[2]) == .gated)

        h.clock = .seconds(40)
        h.announce(5, .ready, features: ["video", "frameinterps"], revision: 2)
        #expect(h.events(jobs[2], in: h.last) == [.released(.announced), .bound])
        #expect(h.backend(jobs[2]) == BackendID(5))
        #expect(h.core.readiness.ready)
        #expect(h.core.heldByNeed.isEmpty)
        #expect(readinessChanges(h.last).last?.ready == true)
    }

    /// The pause after a `ready` announcement while jobs are held (`gateSettle`): the held job is
    /// bound when the pause ends, not at the announcement. Only a backend's first `ready` pauses:
    /// one that goes `loading` and `ready` again binds at once. An announcement that opens the
    /// gate binds at once too.
    @Test func aReadyAnnouncementPausesBindingOnceWhileJobsAreHeld() {
        var h = Harness { $0.gateSettle = .milliseconds(100) }
        for id: Int64 in [1, 2] {
            h.send(.backendRegistered(BackendRegistration(id: BackendID(id), name: "b\(id)", incarnation: Incarnation(1))))
        }
        let jobs = h.submit(video, count: 3)
        #expect(jobs.allSatisfy { h.state($0) == .gated })
        h.clock = .seconds(10)
        h.announce(1, .ready, features: ["video", "frameinterps"], revision: 1)
        #expect(h.assigned.isEmpty)
        h.advance(to: 10.05)
        #expect(h.assigned.isEmpty)
        h.advance(to: 10.1)
        #expect(h.assigned.map(\.job) == [jobs[0]])
        #expect(h.events(jobs[0], in: h.last) == [.released(.idleBackend), .bound])

        // Backend 1 goes `loading` and `ready` again once its job is done: no second pause.
        h.clock = .seconds(20)
        h.announce(1, .loading, features: ["video", "frameinterps"], revision: 2)
        h.send(.jobCompleted(jobs[0], backend: BackendID(1), lease: h.lease(jobs[0]), result: .null))
        h.announce(1, .ready, features: ["video", "frameinterps"], revision: 3)
        #expect(h.assigned.map(\.job) == [jobs[1]])

        // Backend 2's first `ready` opens the gate: no pause.
        h.clock = .seconds(30)
        h.announce(2, .ready, features: ["video", "frameinterps"], revision: 1)
        #expect(h.assigned.map(\.job) == [jobs[2]])
        #expect(h.events(jobs[2], in: h.last) == [.released(.announced), .bound])
    }

    /// A first `ready` during a pause does not extend it; and the announcement that opens the gate
    /// leaves no pause behind, so a gate that closes again a moment later (a new backend
    /// registers) binds a held job to an idle slot at once.
    @Test func aPauseIsNotExtendedAndTheGateOpeningEndsIt() {
        let features = ["video", "frameinterps"]
        var h = Harness { $0.gateSettle = .milliseconds(100) }
        for id: Int64 in [1, 2, 3] {
            h.send(.backendRegistered(BackendRegistration(id: BackendID(id), name: "b\(id)", incarnation: Incarnation(1))))
        }
        let first = h.submit(video, count: 3)
        h.clock = .seconds(10)
        h.announce(1, .ready, features: features, revision: 1)  // pauses until 10.1
        h.clock = .seconds(10.05)
        h.announce(2, .ready, features: features, revision: 1)  // does not extend it
        #expect(h.assigned.isEmpty)
        h.advance(to: 10.1)
        #expect(Set(h.assigned.map(\.backend)) == [BackendID(1), BackendID(2)])

        // Backend 3's first `ready` opens the gate while the third job is held, and leaves no pause
        // behind.
        h.clock = .seconds(20)
        h.announce(3, .ready, features: features, revision: 1)
        #expect(h.assigned.map(\.job) == [first[2]])
        h.clock = .seconds(20.01)
        h.send(.backendRegistered(BackendRegistration(id: BackendID(4), name: "b4", incarnation: Incarnation(1))))
        h.send(.jobCompleted(first[0], backend: h.backend(first[0]), lease: h.lease(first[0]), result: .null))
        h.clock = .seconds(20.02)
        let next = h.submit(video)
        // Held (backend 4 is unknown), and at once on the idle slot the completed job left.
        let kinds = h.events(next[0], in: h.last)
        #expect(kinds.count == 4 && kinds.suffix(2) == [.released(.idleBackend), .bound])
        #expect(kinds.contains { if case .gated = $0 { true } else { false } })
        #expect(first.dropFirst().allSatisfy { h.state($0) == .bound })
    }

    /// A held video keeps the overqueue slot from an image submitted after it (expected
    /// completion): the image would run first there. The video takes the running slot when it
    /// frees, then the image the overqueue slot. Under least loaded the image parks at once.
    @Test(arguments: [RoutingRule.expectedCompletion, .leastLoaded])
    func aHeldJobKeepsTheOverqueueSlotFromLaterJobs(rule: RoutingRule) {
        var h = Harness { $0.routing = rule }
        h.ready(-1, features: ["video", "frameinterps"])
        h.send(.backendRegistered(BackendRegistration(id: BackendID(5), name: "remote", incarnation: Incarnation(1))))
        let first = h.submit(JobSpec(kind: "image"))[0]
        let held = h.submit(video)[0]
        let later = h.submit(JobSpec(kind: "image"))[0]
        #expect(h.state(first) == .bound && h.state(held) == .gated)
        if rule == .expectedCompletion {
            #expect(h.state(later) == .queued)
            h.send(.jobCompleted(first, backend: BackendID(-1), lease: h.lease(first), result: .null))
            let order = h.last.compactMap { if case .assign(let j, _, _, _, _, _) = $0 { j } else { nil } }
            #expect(order == [held, later])
            #expect(h.events(held, in: h.last).first == .released(.idleBackend))
        } else {
            #expect(h.state(later) == .bound)
        }
        // A held job that leaves the queue (here canceled) gives the slot back at once.
        var c = Harness()
        c.ready(-1, features: ["video", "frameinterps"])
        c.send(.backendRegistered(BackendRegistration(id: BackendID(5), name: "remote", incarnation: Incarnation(1))))
        _ = c.submit(JobSpec(kind: "image"))
        let canceled = c.submit(video)[0]
        let image = c.submit(JobSpec(kind: "image"))[0]
        c.record(try! c.core.cancelJob(canceled, at: c.clock))
        #expect(c.state(image) == .bound)
    }

    @Test func loadingAnnouncementKeepsTheBackendUnknown() {
        var h = Harness()
        h.ready(-1, features: ["video", "frameinterps"])
        h.send(.backendRegistered(BackendRegistration(id: BackendID(5), name: "remote", incarnation: Incarnation(1))))
        h.announce(5, .loading, revision: 1)
        h.announce(5, .starting, revision: 2)
        _ = h.submit(video, count: 2)
        #expect(h.core.readiness.waitingBackends == [BackendID(5)])
        h.announce(5, .ready, features: ["image"], revision: 3)
        // It announced, without the features: the gate opens and the held job goes to the local backend.
        #expect(h.core.readiness.ready)
        #expect(h.core.backend(BackendID(-1))?.inFlight == 2)
    }

    @Test func heldJobsTrackTheBackendsTheyWaitFor() {
        var h = Harness()
        h.ready(-1, features: ["video"])
        h.send(.backendRegistered(BackendRegistration(id: BackendID(5), name: "a", incarnation: Incarnation(1))))
        let jobs = h.submit(JobSpec(kind: "video", needs: ["video"]), count: 2)
        #expect(h.core.job(jobs[1])?.waitReason?.backends == [BackendID(5)])
        h.send(.backendRegistered(BackendRegistration(id: BackendID(6), name: "b", incarnation: Incarnation(1))))
        #expect(h.core.job(jobs[1])?.waitReason?.backends == [BackendID(5), BackendID(6)])
        h.announce(5, .ready, revision: 1)
        #expect(h.core.job(jobs[1])?.waitReason?.backends == [BackendID(6)])
        #expect(h.core.readiness.waitingBackends == [BackendID(6)])
    }

    @Test func gateWindowCountsFromRegistration() {
        var h = Harness { $0.gateWindow = .seconds(60) }
        h.ready(-1, features: ["video", "frameinterps"])
        h.clock = .seconds(30)
        h.send(.backendRegistered(BackendRegistration(id: BackendID(5), name: "remote", incarnation: Incarnation(1))))
        let jobs = h.submit(video, count: 3)
        #expect(h.state(jobs[1]) == .gated)
        h.advance(to: 89)
        #expect(h.state(jobs[1]) == .gated)
        h.advance(to: 90)
        #expect(h.events(jobs[1], in: h.last) == [.released(.windowElapsed), .bound])
        #expect(h.state(jobs[2]) == .queued)  // the local backend has one running, one waiting now
    }

    /// A backend whose link is lost while it loads may be restarting: the gate waits for it until
    /// its window ends, and the held job runs there when it comes back; not back by then, the job
    /// is released (`window_elapsed`) and fails. One that said goodbye is not waited for
    /// (`backend_left`).
    @Test func aBackendLostWhileLoadingIsWaitedForUntilItsWindowEnds() {
        func loadingThenLost() -> (Harness, JobID) {
            var h = Harness { $0.gateWindow = .seconds(60) }
            h.ready(-1, features: ["image"])
            h.send(.backendRegistered(BackendRegistration(id: BackendID(5), name: "gpu", incarnation: Incarnation(1))))
            h.announce(5, .loading, features: ["video"], revision: 1)
            let job = h.submit(JobSpec(kind: "video", needs: ["video"]), count: 1)[0]
            #expect(h.state(job) == .gated)
            h.send(.linkLost(BackendID(5)))
            h.advance(to: 20)  // past the suspect grace
            #expect(h.core.backend(BackendID(5))?.link == .down)
            #expect(h.state(job) == .gated, "still waited for")
            #expect(h.core.readiness.waitingBackends == [BackendID(5)])
            return (h, job)
        }
        var (back, job) = loadingThenLost()
        back.send(.backendRegistered(BackendRegistration(id: BackendID(5), name: "gpu", incarnation: Incarnation(2))))
        back.announce(5, .ready, features: ["video"], incarnation: 2, revision: 1)
        #expect(back.core.job(job)?.backend == BackendID(5))

        var (gone, lost) = loadingThenLost()
        gone.advance(to: 59)
        #expect(gone.state(lost) == .gated)
        gone.advance(to: 60)
        #expect(gone.events(lost, in: gone.last).first == .released(.windowElapsed))
        #expect(gone.core.job(lost)?.failure?.code == .noEligibleBackend)

        var h = Harness { $0.gateWindow = .seconds(60) }
        h.ready(-1, features: ["image"])
        h.send(.backendRegistered(BackendRegistration(id: BackendID(5), name: "gpu", incarnation: Incarnation(1))))
        let held = h.submit(JobSpec(kind: "video", needs: ["video"]), count: 1)[0]
        h.send(.backendLeft(BackendID(5)))
        #expect(h.events(held, in: h.last).first == .released(.backendLeft))
        #expect(h.core.job(held)?.failure?.code == .noEligibleBackend)
    }

    @Test func expectedBackendsCountAsUnknown() {
        var h = Harness()
        h.send(.backendExpected(BackendID(8), name: "gpu-box"))
        h.ready(-1, features: ["video"])
        let jobs = h.submit(JobSpec(kind: "video", needs: ["video"]), count: 2)
        #expect(h.state(jobs[1]) == .gated)
        #expect(h.core.readiness.waitingBackends == [BackendID(8)])
        #expect(h.core.backend(BackendID(8))?.link == .expected)
        h.advance(to: 60)
        #expect(h.state(jobs[1]) == .bound)
        #expect(h.core.readiness.ready)
    }

    @Test func gateOffFailsAtOnceWhenNothingCanRunTheJob() {
        var h = Harness { $0.gateWindow = .zero }
        h.ready(-1, features: ["video"])
        h.send(.backendRegistered(BackendRegistration(id: BackendID(5), name: "remote", incarnation: Incarnation(1))))
        let job = h.submit(video)[0]
        #expect(h.state(job) == .failed)
        let failure = h.core.job(job)!.failure!
        #expect(failure.code == .noEligibleBackend)
        #expect(
            failure.refusals == [
                BackendRefusal(
                    backend: BackendID(-1), name: "b-1", reason: "missing features frameinterps",
                    reasons: ["missing_features"], missingFeatures: ["frameinterps"]),
                BackendRefusal(backend: BackendID(5), name: "remote", reason: "has not announced", reasons: ["not_announced"]),
            ])
    }

    /// A coordinator that kept many names (down backends are kept a day) lists at most 16
    /// refusals, linked backends first, and counts the rest in the message.
    @Test func aFailureListsAtMostSixteenRefusalsLinkedBackendsFirst() {
        var h = Harness { $0.gateWindow = .zero }
        for id in 1...20 {
            h.send(.backendRegistered(BackendRegistration(id: BackendID(Int64(id)), name: "gone-\(id)", incarnation: Incarnation(1))))
            h.send(.backendLeft(BackendID(Int64(id))))
        }
        h.ready(30, features: ["image"])
        let job = h.submit(video)[0]
        let failure = h.core.job(job)!.failure!
        #expect(failure.code == .noEligibleBackend)
        #expect(failure.refusals.count == 16)
        #expect(failure.refusals.first?.backend == BackendID(30), "the linked backend first")
        #expect(failure.message.hasSuffix("; and 5 more backends not listed") || failure.message.contains("and 5 more"), "\(failure.message)")
    }

    @Test func imageJobsAreNotHeldWhileSomeBackendLoads() {
        var h = Harness()
        h.ready(1)
        h.send(.backendRegistered(BackendRegistration(id: BackendID(2), name: "loading", incarnation: Incarnation(1))))
        let jobs = h.submit(JobSpec(kind: "image"), count: 3)
        #expect(jobs.map { h.state($0) } == [.bound, .bound, .queued])
        #expect(h.core.heldJobs.isEmpty)
    }

    @Test func periodicAndGapSync() {
        var h = Harness { $0.syncInterval = .seconds(15) }
        h.ready(1, revision: 1)
        #expect(h.core.nextDeadline == .seconds(15))
        h.advance(to: 15)
        #expect(
            h.last.contains(
                .sync(backend: BackendID(1), held: CapabilityVersion(incarnation: Incarnation(1), revision: 1))))
        #expect(h.core.nextDeadline == .seconds(30))
        // Revision 2 was lost: revision 3 is applied and an immediate sync asks for the rest.
        h.announce(1, .ready, revision: 3)
        let v3 = CapabilityVersion(incarnation: Incarnation(1), revision: 3)
        #expect(h.last.contains(.sync(backend: BackendID(1), held: v3)))
        #expect(acks(h.last) == [.ackCapabilities(backend: BackendID(1), version: v3, applied: true)])
        // The late revision 2 is stale: one ack with what is held, counted, nothing else.
        h.announce(1, .draining, revision: 2)
        #expect(acks(h.last) == [.ackCapabilities(backend: BackendID(1), version: v3, applied: false)])
        #expect(
            h.last.contains(
                .observe(.staleAnnouncement(BackendID(1), CapabilityVersion(incarnation: Incarnation(1), revision: 2))))
        )
        #expect(h.core.backend(BackendID(1))?.announced == .ready)
        #expect(h.core.counters.announcementsStale == 1)
    }

    @Test func periodicSyncsOfAFleetGoOutTogether() {
        var h = Harness { $0.syncInterval = .seconds(15) }
        // Three backends ready at 0.1 s, 0.4 s and 0.9 s: one wakeup at 16 s syncs all three.
        for (id, at) in [(Int64(1), 0.1), (2, 0.4), (3, 0.9)] {
            h.clock = .seconds(at)
            h.ready(id, revision: 1)
        }
        #expect(h.core.nextDeadline == .seconds(16))
        h.advance(to: 16)
        let synced = h.last.compactMap { if case .sync(let b, _) = $0 { b } else { nil } }
        #expect(Set(synced) == [BackendID(1), BackendID(2), BackendID(3)])
        #expect(h.core.nextDeadline == .seconds(31))
    }

    @Test func propagationTimeIsObservedOncePerIncarnation() {
        var h = Harness()
        h.send(.backendRegistered(BackendRegistration(id: BackendID(5), name: "remote", incarnation: Incarnation(1))))
        h.clock = .seconds(1)
        h.announce(5, .loading, revision: 1)
        #expect(h.core.backend(BackendID(5))?.firstAnnouncedAt == .seconds(1))
        h.clock = .seconds(40)
        h.announce(5, .ready, revision: 2)
        #expect(h.last.contains(.observe(.propagation(BackendID(5), .seconds(40)))))
        h.announce(5, .ready, features: ["x"], revision: 3)
        #expect(!h.last.contains { if case .observe(.propagation) = $0 { true } else { false } })
        // A restart measures again, from the new hello.
        h.clock = .seconds(100)
        h.send(.backendRegistered(BackendRegistration(id: BackendID(5), name: "remote", incarnation: Incarnation(2))))
        h.clock = .seconds(130)
        h.announce(5, .ready, incarnation: 2, revision: 1)
        #expect(h.last.contains(.observe(.propagation(BackendID(5), .seconds(30)))))
    }

    @Test func loadModelNowAskesEveryEligibleBackendAndRemembersTheModel() throws {
        var h = Harness()
        h.ready(1, models: ["flux"])
        h.ready(2, models: ["flux"], loaded: ["flux"])
        h.ready(3, models: ["sdxl"])
        let actions = try h.core.loadModelNow("flux", at: h.clock)
        #expect(
            actions == [
                .loadModel(backend: BackendID(1), model: "flux"),
                .observe(.modelLoadRequested(BackendID(1), model: "flux", .client)),
            ])
        #expect(h.core.rememberedModels == ["flux"])
        // A backend that joins later with the model available loads it too.
        h.ready(4, models: ["flux"])
        #expect(h.last.contains(.loadModel(backend: BackendID(4), model: "flux")))
        // One backend: asked even if a load was requested before; unknown ones are errors.
        let one = try h.core.loadModelNow("flux", backend: BackendID(1), at: h.clock)
        #expect(
            one == [
                .loadModel(backend: BackendID(1), model: "flux"),
                .observe(.modelLoadRequested(BackendID(1), model: "flux", .client)),
            ])
        #expect(throws: CoreError.self) { _ = try h.core.loadModelNow("flux", backend: BackendID(3), at: h.clock) }
        #expect(throws: CoreError.self) { _ = try h.core.loadModelNow("flux", backend: BackendID(99), at: h.clock) }
    }

    @Test func aFailedLoadMayBeRequestedAgain() throws {
        var h = Harness()
        h.ready(1, models: ["flux"])
        let first = try h.core.loadModelNow("flux", at: h.clock)
        #expect(first.contains(.loadModel(backend: BackendID(1), model: "flux")))
        // Still loading: asking again for every backend sends nothing.
        #expect(!(try h.core.loadModelNow("flux", at: h.clock)).contains(.loadModel(backend: BackendID(1), model: "flux")))
        h.send(.modelLoadFailed(BackendID(1), model: "flux"))
        #expect(try h.core.loadModelNow("flux", at: h.clock).contains(.loadModel(backend: BackendID(1), model: "flux")))
        // A failure for a load never asked, or of an unknown model, changes nothing.
        h.send(.modelLoadFailed(BackendID(1), model: "sdxl"))
        h.send(.modelLoadFailed(BackendID(9), model: "flux"))
        #expect(h.last.isEmpty)
    }

    /// A backend whose new incarnation comes on its open link (a ComfyUI that restarted or went
    /// away) is waited for again, and only for a window: when it announces nothing more, a job
    /// only it can run is held, then fails when that window ends, instead of being held forever.
    @Test func aNewIncarnationOnAnOpenLinkIsWaitedForOneWindow() {
        var h = Harness()
        h.ready(1, features: ["x"])
        h.advance(to: 100)
        h.announce(1, .loading, features: [], incarnation: 2, revision: 1)
        let job = h.submit(JobSpec(kind: "image", needs: ["x"]))[0]
        #expect(h.state(job) == .gated)
        h.advance(to: 159)
        #expect(h.state(job) == .gated)
        h.advance(to: 160)
        #expect(h.state(job) == .failed)
        #expect(h.core.job(job)?.failure?.code == .noEligibleBackend)
    }

    /// Asking for one model sends that model only: a backend whose load of an earlier remembered
    /// model failed is not sent that one again in its place (an outside check saw `models_loading`
    /// for m2 name a backend that does not offer m2, sent m1).
    @Test func loadModelNowSendsTheModelAskedForOnly() throws {
        var h = Harness()
        h.ready(1, models: ["m1", "m2"])
        h.ready(2, models: ["m1"])
        let first = try h.core.loadModelNow("m1", at: h.clock)
        #expect(first.filter { if case .loadModel = $0 { true } else { false } }.count == 2)
        h.send(.modelLoadFailed(BackendID(2), model: "m1"))
        let second = try h.core.loadModelNow("m2", at: h.clock)
        #expect(
            second == [
                .loadModel(backend: BackendID(1), model: "m2"),
                .observe(.modelLoadRequested(BackendID(1), model: "m2", .client)),
            ])
        // Asked again for m1 itself, the backend whose load failed is asked again.
        #expect(try h.core.loadModelNow("m1", at: h.clock).contains(.loadModel(backend: BackendID(2), model: "m1")))
    }

    @Test func modelTieBreakPrefersTheBackendWithTheModelLoaded() {
        var h = Harness()
        h.ready(1, models: ["m"])
        h.ready(2, models: ["m"], loaded: ["m"])
        let job = h.submit(JobSpec(kind: "image", model: "m"))[0]
        #expect(h.backend(job) == BackendID(2))
    }

    @Test func leastLoadedThenLocalThenPriorityThenLowestID() {
        var h = Harness()
        h.send(
            .backendRegistered(
                BackendRegistration(id: BackendID(3), name: "hi", incarnation: Incarnation(1), priority: 5)))
        h.announce(3, .ready, revision: 1)
        h.ready(2)
        h.ready(-1)
        h.ready(-2)
        let jobs = h.submit(JobSpec(kind: "image"), count: 5)
        #expect(
            jobs.map { h.backend($0) } == [BackendID(-2), BackendID(-1), BackendID(3), BackendID(2), BackendID(-2)])
    }
}

/// The worked example of README's "Routing and the warm-up gate" section, step by step.
@Suite struct ReadmeExampleTests {
    @Test func workedExample() {
        var h = Harness()
        func hello(_ id: Int64, slots: Int, priority: Int = 0) -> CoreEvent {
            .backendRegistered(
                BackendRegistration(
                    id: BackendID(id), name: "b\(id)", incarnation: Incarnation(1), slots: slots, priority: priority))
        }
        let all = ["upscale"]
        h.send(hello(-1, slots: 1))
        h.announce(-1, .ready, features: all, models: ["sdxl"], loaded: ["sdxl"], slots: 1, revision: 1)
        h.send(hello(2, slots: 2, priority: 5))
        h.announce(2, .ready, features: all, models: ["sdxl"], slots: 2, revision: 1)
        h.send(hello(3, slots: 2))
        h.announce(3, .ready, features: all, models: ["sdxl"], loaded: ["sdxl"], slots: 2, revision: 1)
        h.send(hello(4, slots: 1))
        h.announce(4, .ready, features: [], models: ["sdxl"], loaded: ["sdxl"], slots: 1, revision: 1)
        // Earlier work: one image job each on -1, 2 and 3.
        let earlier = h.submit(JobSpec(kind: "image"), count: 4)
        #expect(earlier.map { h.backend($0) } == [BackendID(-1), BackendID(2), BackendID(3), BackendID(4)])
        h.send(.jobCompleted(earlier[3], backend: BackendID(4), lease: h.lease(earlier[3]), result: .null))
        // Backend 5 connects and is still loading: the gate is closed for jobs that need features.
        h.send(hello(5, slots: 1))
        h.announce(5, .loading, revision: 1)

        let job = h.submit(JobSpec(kind: "image", needs: ["upscale"], model: "sdxl"))[0]
        // -1: load 1/1, no free running slot. 4: missing upscale. 5: unknown.
        // 2 and 3: load 1/2 each, both remote; 3 has sdxl loaded, which beats 2's priority.
        #expect(h.backend(job) == BackendID(3))
        // The next one finds only 2 with a free running slot, but sdxl is not loaded there and
        // loading (20 s default) does not beat waiting for 3 (10 s default): it is held.
        let next = h.submit(JobSpec(kind: "image", needs: ["upscale"], model: "sdxl"))[0]
        #expect(h.state(next) == .gated)
        #expect(h.core.readiness.waitingBackends == [BackendID(5)])
    }
}

@Suite struct QueryTests {
    @Test func queriesDescribeBackendsJobsAndQueues() {
        var h = Harness()
        h.clock = .seconds(2)
        h.ready(-1, features: ["video"], models: ["m"], loaded: ["m"], slots: 1)
        let jobs = h.submit(JobSpec(kind: "video", needs: ["video"], priority: 2), count: 3)
        let info = h.core.backend(BackendID(-1))!
        #expect(info.isLocal && info.link == .up && info.announced == .ready)
        #expect(info.features == ["video"] && info.modelsLoaded == ["m"] && info.slots == 1)
        #expect(info.inFlight == 2 && info.running == 0)
        #expect(
            info.registeredAt == .seconds(2) && info.firstAnnouncedAt == .seconds(2) && info.lastSeen == .seconds(2))
        #expect(info.version == CapabilityVersion(incarnation: Incarnation(1), revision: 1))
        #expect(h.core.queueDepthByPriority == [2: 1])
        #expect(h.core.jobsByState == [.bound: 2, .queued: 1])
        #expect(h.core.job(jobs[2])?.waitReason == nil)
        #expect(h.core.backendList.map(\.id) == [BackendID(-1)])
        #expect(h.core.counters.submitted == 3 && h.core.counters.bound == 2)
        #expect(h.core.registry.entries[BackendID(-1)]?.state == .ready)
    }
}

@Suite struct AffinityTests {
    /// The model is loaded only on a backend that cannot run the job: loading it on the one that
    /// can is the only way, whatever the estimates say.
    @Test func loadsWhenNoCapableBackendHasTheModel() {
        var h = Harness { $0.defaultModelLoadTime = .seconds(600) }
        h.ready(1, features: [], models: ["m"], loaded: ["m"])
        h.ready(2, features: ["video"], models: ["m"])
        let job = h.submit(JobSpec(kind: "video", needs: ["video"], model: "m"))[0]
        #expect(h.state(job) == .bound)
        #expect(h.backend(job) == BackendID(2))
        #expect(h.last.contains(.loadModel(backend: BackendID(2), model: "m")))
    }
}
