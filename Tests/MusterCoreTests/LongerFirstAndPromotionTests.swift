import MusterProtocol
import Testing

@testable import MusterCore

/// The limits of two routing rules (README "Backup runs" and "Priority and fairness"): a backup
/// of known speed becomes the binding only where it would give way and is expected to win by the
/// job's own length; a longer job of a batch taken ahead of its batch keeps every other owner's
/// turn and every held job's bar.
@Suite struct LongerFirstAndPromotionTests {
    static let video = JobSpec(kind: "video")
    static let image = JobSpec(kind: "image")

    /// A video bound to backend 1 and started there while the other backends' slots are busy with
    /// an image each (`count` in all), which then complete (all idle again).
    static func videoOnBackend1(_ h: inout Harness, fillers count: Int) -> JobID {
        let fillers = h.submit(Self.image, count: count)
        let job = h.submit(Self.video)[0]
        #expect(h.backend(job) == BackendID(1), "\(h.all)")
        h.send(.jobStarted(job, backend: BackendID(1), lease: h.lease(job)))
        for f in fillers {
            h.send(.jobStarted(f, backend: h.backend(f), lease: h.lease(f)))
        }
        h.clock = .seconds(1)
        for f in fillers {
            h.send(.jobCompleted(f, backend: h.backend(f), lease: h.lease(f), result: .emptyObject))
        }
        #expect(h.backend(job) == BackendID(1) && h.core.counters.backupsStarted == 0)
        return job
    }

    /// Registers a backend with a configured speed and announces it ready.
    static func readyKnown(_ h: inout Harness, _ id: Int64, speed: Double, slots: Int = 1) {
        h.send(
            .backendRegistered(
                BackendRegistration(id: BackendID(id), name: "b\(id)", incarnation: Incarnation(1), slots: slots, speed: speed)))
        h.announce(id, .ready, slots: slots, revision: 1)
    }

    /// Two backends configured equally fast, the video class measured at 10 s. A video that is
    /// itself long (its progress projects 50 s) is no straggler of a slow backend: the other one,
    /// as fast, would take as long. No backup runs, and an image that arrives takes the idle
    /// backend without revoking anything. (Priced by the class's 10 s, a copy looked like it would
    /// win; when the image came it was made the binding and the run 20% done was thrown away.)
    @Test func aJobLongInItselfGetsNoBackupOnAnEquallyFastBackend() {
        var h = Harness()
        Self.readyKnown(&h, 1, speed: 1)
        Self.readyKnown(&h, 2, speed: 1)
        let first = h.submit(Self.video)[0]
        let b0 = h.backend(first)
        h.send(.jobStarted(first, backend: b0, lease: h.lease(first)))
        h.clock = .seconds(10)
        h.send(.jobCompleted(first, backend: b0, lease: h.lease(first), result: .emptyObject))
        let long = h.submit(Self.video)[0]
        let on = h.backend(long), primary = h.lease(long)
        h.send(.jobStarted(long, backend: on, lease: primary))
        h.clock = .seconds(15)
        h.send(.jobProgress(long, backend: on, lease: primary, fraction: 0.1, timed: true))
        #expect(h.assigned.isEmpty, "\(h.assigned)")
        h.clock = .seconds(20)
        let img = h.submit(Self.image)[0]
        #expect(!h.last.contains { if case .revoke = $0 { true } else { false } })
        #expect(h.lease(long) == primary && h.backend(img) != on && h.core.counters.backupsStarted == 0)
    }

    /// Backend 2 (speed 4, two slots) runs a started backup of a video that runs on backend 1
    /// (speed 3), where its progress projects 13.3 s (too little gain to move it: see
    /// `runningToMove`). An image that fits in backend 2's other slot leaves the backup alone; a
    /// second image, which would make it give way, makes it the binding instead (the video's own
    /// 13.3 s at three quarters: 10 s from 2 s, against 13.3 s).
    @Test func aBackupBecomesTheBindingOnlyWhereItWouldGiveWay() {
        var h = Harness()
        Self.readyKnown(&h, 1, speed: 3)
        Self.readyKnown(&h, 2, speed: 4, slots: 2)
        let job = Self.videoOnBackend1(&h, fillers: 2)
        let primary = h.lease(job)
        h.clock = .seconds(2)
        h.send(.jobProgress(job, backend: BackendID(1), lease: primary, fraction: 0.15, timed: true))
        #expect(h.assigned.map(\.backend) == [BackendID(2)] && h.assigned.map(\.job) == [job])
        let backup = h.assigned[0].lease
        h.send(.jobStarted(job, backend: BackendID(2), lease: backup))
        h.clock = .seconds(3)
        let first = h.submit(Self.image)[0]
        #expect(h.backend(first) == BackendID(2))
        #expect(h.lease(job) == primary && h.core.counters.backupsWon == 0)
        #expect(!h.last.contains { if case .revoke = $0 { true } else { false } })
        h.send(.jobStarted(first, backend: BackendID(2), lease: h.lease(first)))
        let second = h.submit(Self.image)[0]
        #expect(h.last.contains(.revoke(job: job, backend: BackendID(1), lease: primary)))
        #expect(h.backend(job) == BackendID(2) && h.lease(job) == backup && h.core.counters.backupsWon == 1)
        #expect(h.core.job(job)?.state == .running)
        _ = second
    }

    /// A backup that has not said it started is not made the binding: nothing shows it runs.
    @Test func aBackupNotYetStartedGivesWay() {
        var h = Harness()
        Self.readyKnown(&h, 1, speed: 3)
        Self.readyKnown(&h, 2, speed: 4)
        Self.readyKnown(&h, 3, speed: 4)
        let job = Self.videoOnBackend1(&h, fillers: 2)
        let primary = h.lease(job)
        h.clock = .seconds(2)
        h.send(.jobProgress(job, backend: BackendID(1), lease: primary, fraction: 0.15, timed: true))
        let backup = h.assigned[0].lease
        h.clock = .seconds(3)
        let img = h.submit(Self.image)[0]
        #expect(h.last.contains(.revoke(job: job, backend: BackendID(2), lease: backup)))
        #expect(h.lease(job) == primary && h.backend(img) == BackendID(2) && h.core.counters.backupsWon == 0)
    }

    /// Backend 1 (two slots, `feature`, `sdxl` loaded) runs owner `o`'s video `v` and job `w`,
    /// with `x` bound in its overqueue slot; then owner `a` submits an `sdxl` image and a video
    /// (`ra`: in that order, guessed alike, the image first since it names a model).
    static func busyBackendAndBatchOfA(
        _ h: inout Harness, feature: String
    ) -> (v: JobID, w: JobID, x: JobID, ra: SubmitReceipt) {
        h.ready(1, features: [feature], models: ["sdxl"], loaded: ["sdxl"], slots: 2)
        var fill: [JobID] = []
        for kind in ["video", "other", "other2"] {
            var spec = JobSpec(kind: kind)
            spec.owner = "o"
            fill.append(h.submit(spec)[0])
        }
        h.send(.jobStarted(fill[0], backend: BackendID(1), lease: h.lease(fill[0])))
        h.send(.jobStarted(fill[1], backend: BackendID(1), lease: h.lease(fill[1])))
        h.clock = .seconds(0.5)
        var ai = JobSpec(kind: "image", model: "sdxl")
        ai.owner = "a"
        var av = JobSpec(kind: "video")
        av.owner = "a"
        let (ra, actions) = try! h.core.submit(key: nil, entries: [BatchEntry(spec: ai), BatchEntry(spec: av)], at: h.clock)
        h.record(actions)
        return (fill[0], fill[1], fill[2], ra)
    }

    /// `busyBackendAndBatchOfA`, then `otherOwner` submits an image needing `feature`; at 2 s the
    /// running video's progress shows videos take 20 s, and at 3 s `w` completes (a slot frees).
    static func videosShownLonger(
        _ h: inout Harness, feature: String, otherOwner: String
    ) -> (x: JobID, ra: SubmitReceipt, other: JobID) {
        let (v, w, x, ra) = busyBackendAndBatchOfA(&h, feature: feature)
        var spec = JobSpec(kind: "image", needs: [feature])
        spec.owner = otherOwner
        let other = h.submit(spec)[0]
        h.clock = .seconds(2)
        h.send(.jobProgress(v, backend: BackendID(1), lease: h.lease(v), fraction: 0.1, timed: true))
        h.clock = .seconds(3)
        h.send(.jobCompleted(w, backend: BackendID(1), lease: h.lease(w), result: .emptyObject))
        return (x, ra, other)
    }

    /// Owner `a`'s batch queues an `sdxl` image (configured 10 s) ahead of a video (guessed 10 s);
    /// owner `b`'s job comes after. Progress then shows videos take 20 s. When a slot frees, `a`'s
    /// video goes first in its image's place; the next slot goes to `b`, whose turn came before
    /// `a`'s second job, and only then to `a`'s image.
    @Test func aLongerJobTakenAheadOfItsBatchKeepsTheOtherOwnersTurn() {
        var h = Harness { $0.jobDurationPriors = ["image": .seconds(10)] }
        let (x, ra, b) = Self.videosShownLonger(&h, feature: "x", otherOwner: "b")
        #expect(h.assigned.map(\.job) == [ra.jobs[1]], "a's video first: \(h.assigned)")
        h.send(.jobStarted(x, backend: BackendID(1), lease: h.lease(x)))
        h.clock = .seconds(4)
        h.send(.jobCompleted(x, backend: BackendID(1), lease: h.lease(x), result: .emptyObject))
        #expect(h.assigned.map(\.job) == [b], "then b's job: \(h.assigned)")
    }

    /// The gate is closed (backend 3 registered, not announced); backend 1's running slots are
    /// busy and its overqueue slot frees. A held job of owner `g` sits between `a`'s image and
    /// `a`'s video (shown longer): the video may not pass the held job's bar, so the image takes
    /// the overqueue slot as before.
    @Test func aLongerJobTakenAheadOfItsBatchRespectsTheHeldBar() {
        var h = Harness {
            $0.jobDurationPriors = ["image": .seconds(10)]
            $0.gateSettle = .zero
        }
        h.send(.backendRegistered(BackendRegistration(id: BackendID(3), name: "b3", incarnation: Incarnation(1), slots: 1)))
        let (x, ra, gj) = Self.videosShownLonger(&h, feature: "f", otherOwner: "g")
        #expect(h.assigned.map(\.job) == [ra.jobs[0]], "a's image, not its video: \(h.assigned)")
        h.send(.jobStarted(x, backend: BackendID(1), lease: h.lease(x)))
        #expect(h.state(ra.jobs[1]) == .queued && h.state(gj) == .gated)
    }
}
