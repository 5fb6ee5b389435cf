import MusterCore
import MusterProtocol
import Testing

/// A remote backend down for `CorePolicy.forgetDownAfter` is forgotten: gone from the listing,
/// the registry and the store, its name freed for the shell. Backends that churn names (a
/// container's random host name) then do not pile up in memory, `/v1/backends` and the store.
@Suite struct ForgetTests {
    let video = JobSpec(kind: "video", needs: ["video"])

    func forgotten(_ actions: [CoreAction]) -> [BackendID] {
        actions.compactMap { if case .forgetBackend(let id, _) = $0 { id } else { nil } }
    }

    func persisted(_ actions: [CoreAction]) -> [StoreChange] {
        actions.compactMap { if case .persist(let c) = $0 { c } else { nil } }
    }

    @Test func aBackendThatLeftIsForgottenAfterTheWindowAndItsNameIsNewAfterIt() {
        var h = Harness {
            $0.persistChanges = true
            $0.forgetDownAfter = .seconds(100)
        }
        h.ready(1, features: ["video"])
        h.ready(2, features: ["video"])
        h.clock = .seconds(10)
        h.send(.backendLeft(BackendID(1)))
        #expect(h.core.backend(BackendID(1))?.link == .down)
        h.advance(to: 109.9)
        #expect(forgotten(h.last).isEmpty && h.core.backend(BackendID(1)) != nil)
        h.advance(to: 110)
        #expect(h.last.contains(.forgetBackend(BackendID(1), name: "b1")))
        #expect(persisted(h.last) == [.backendForgotten(id: BackendID(1))])
        #expect(h.core.backend(BackendID(1)) == nil)
        #expect(h.core.backendList.map(\.id) == [BackendID(2)])
        #expect(h.core.registry.entries[BackendID(1)] == nil)
        // Routing goes on without it; the name may come back under a new id.
        let job = h.submit(video)[0]
        #expect(h.backend(job) == BackendID(2))
        h.send(
            .backendRegistered(
                BackendRegistration(id: BackendID(3), name: "b1", incarnation: Incarnation(7), slots: 1)))
        #expect(h.core.backend(BackendID(3))?.link == .up)
    }

    /// A backend up again before the window ends is not forgotten; the window counts again from
    /// its next fall, whatever timers of the earlier one are still armed.
    @Test func aBackendUpAgainBeforeTheWindowIsKeptAndTheWindowCountsFromItsNextFall() {
        var h = Harness {
            $0.forgetDownAfter = .seconds(100)
            $0.suspectGrace = .seconds(10)
        }
        h.ready(1)
        h.send(.linkLost(BackendID(1)))
        h.advance(to: 10)  // the grace ends: down
        #expect(h.core.backend(BackendID(1))?.link == .down)
        h.clock = .seconds(50)
        h.send(.backendRegistered(BackendRegistration(id: BackendID(1), name: "b1", incarnation: Incarnation(1))))
        #expect(h.core.backend(BackendID(1))?.link == .up)
        h.clock = .seconds(60)
        h.send(.backendLeft(BackendID(1)))
        h.advance(to: 110)  // the first fall's window: it came back since
        #expect(forgotten(h.last).isEmpty && h.core.backend(BackendID(1))?.link == .down)
        h.advance(to: 160)
        #expect(forgotten(h.last) == [BackendID(1)])
        // Without a store nothing is persisted, and the shell is still told.
        #expect(persisted(h.all).isEmpty)
    }

    /// A backend that flaps keeps one pending timer, which looks again when it fires: it is
    /// forgotten a window after its last fall, not after its first.
    @Test func aFlappingBackendIsForgottenAWindowAfterItsLastFall() {
        var h = Harness { $0.forgetDownAfter = .seconds(100) }
        h.ready(1)
        for i in 0..<50 {
            h.clock = .seconds(Double(i) * 4)
            h.send(.backendLeft(BackendID(1)))
            h.clock = .seconds(Double(i) * 4 + 2)
            h.send(.backendRegistered(BackendRegistration(id: BackendID(1), name: "b1", incarnation: Incarnation(1))))
        }
        h.clock = .seconds(200)
        h.send(.backendLeft(BackendID(1)))  // the last fall
        h.advance(to: 299)
        #expect(forgotten(h.all).isEmpty)
        h.advance(to: 300)
        #expect(forgotten(h.all) == [BackendID(1)])
    }

    @Test func aConfiguredBackendIsNeverForgottenNorOneWhenTheWindowIsZero() {
        var h = Harness { $0.forgetDownAfter = .seconds(100) }
        h.send(.backendExpected(BackendID(1), name: "b1"))
        h.ready(1)
        h.ready(2)
        h.send(.backendLeft(BackendID(1)))
        h.send(.backendLeft(BackendID(2)))
        h.advance(to: 1_000)
        #expect(forgotten(h.all) == [BackendID(2)])
        #expect(h.core.backend(BackendID(1))?.link == .down)

        var never = Harness { $0.forgetDownAfter = .zero }
        never.ready(1)
        never.send(.backendLeft(BackendID(1)))
        never.advance(to: 10_000_000)
        #expect(forgotten(never.all).isEmpty && never.core.backend(BackendID(1))?.link == .down)
    }

    /// A backend stored down longer ago than the window is forgotten at once after a restart; one
    /// stored down by a store that did not keep when it fell, a window after the restart.
    @Test func aRestartForgetsFromTheStoredFallAndFromItselfWhenTheFallIsUnknown() {
        var h = Harness {
            $0.persistChanges = true
            $0.forgetDownAfter = .seconds(100)
        }
        h.clock = .seconds(1000)
        let snapshot = StoreSnapshot(
            backends: [
                StoredBackend(id: BackendID(1), name: "long-gone", incarnation: Incarnation(1), down: true, downAt: .seconds(800)),
                StoredBackend(id: BackendID(2), name: "fell-unknown", incarnation: Incarnation(1), down: true),
            ], epoch: 2)
        h.record(h.core.restore(snapshot, at: h.clock))
        #expect(h.core.backend(BackendID(1))?.link == .down && h.core.backend(BackendID(2))?.link == .down)
        h.advance(to: 1000)
        #expect(forgotten(h.last) == [BackendID(1)])
        h.advance(to: 1099)
        #expect(forgotten(h.all) == [BackendID(1)])
        h.advance(to: 1100)
        #expect(forgotten(h.last) == [BackendID(2)])
    }

    /// After a restart: one stored down is forgotten a window after it fell (the store keeps
    /// when), one stored up that never comes back a window after the restart; one the store
    /// lists holding jobs is suspect, then down, then forgotten a window after that; none of them
    /// holds the gate once gone.
    @Test func storedBackendsThatDoNotComeBackAreForgottenAWindowAfterTheirFall() {
        var d = DurabilityTests.Durable { $0.forgetDownAfter = .seconds(100) }
        d.h.ready(1, features: ["video"])
        d.h.ready(2, features: ["video"])
        d.h.ready(3, features: ["video"], slots: 1)
        d.h.send(.backendLeft(BackendID(1)))
        d.h.send(.backendLeft(BackendID(2)))
        d.h.ready(2, features: ["video"], incarnation: 2)  // back: stored up
        let job = d.h.submit(video)[0]
        let holder = d.h.backend(job)
        d.commit()
        let fell = d.h.clock.seconds  // backend 1 said goodbye
        // The coordinator restarts 60 s later.
        var n = d.restarted(epoch: 2, after: 60) {
            $0.forgetDownAfter = .seconds(100)
            $0.suspectGrace = .seconds(10)
            $0.keepQueuedWhenNoEligible = true
        }
        let other = holder == BackendID(2) ? BackendID(3) : BackendID(2)
        #expect(n.core.backend(BackendID(1))?.link == .down)
        #expect(n.core.backend(other)?.link == .expected)
        #expect(n.core.backend(holder)?.link == .suspect)
        let start = n.clock.seconds
        n.advance(to: start + 10)  // the grace ends: the holder is down, its job requeued
        #expect(n.core.backend(holder)?.link == .down && n.core.job(job)?.backend == nil)
        n.advance(to: fell + 99.9)
        #expect(forgotten(n.all).isEmpty)
        n.advance(to: fell + 100)
        #expect(forgotten(n.last) == [BackendID(1)], "a window after it fell, 40 s after the restart")
        n.advance(to: start + 99)
        #expect(forgotten(n.all) == [BackendID(1)])
        n.advance(to: start + 100)
        #expect(forgotten(n.last) == [other])
        #expect(persisted(n.last) == [.backendForgotten(id: other)])
        #expect(!n.core.readiness.waitingBackends.contains(other))
        // The holder went down at the grace, so it is forgotten a window after that.
        #expect(n.core.backend(holder)?.link == .down)
        n.advance(to: start + 110)
        #expect(forgotten(n.last) == [BackendID(holder.rawValue)])
        #expect(n.core.backendList.isEmpty)
    }
}
