import MusterCore
import MusterProtocol
import Testing

/// The changes the core persists, and what a coordinator restored from them does.
@Suite struct DurabilityTests {
    let image = JobSpec(kind: "image")

    /// A harness whose core persists, with the store image of everything persisted so far.
    struct Durable {
        var h: Harness
        var image = StoreImage()
        var applied = 0

        init(_ configure: (inout CorePolicy) -> Void = { _ in }) {
            h = Harness { p in
                p.persistChanges = true
                configure(&p)
            }
        }

        /// Applies the persisted changes not applied yet, in order (as a store commits them).
        mutating func commit() {
            for action in h.all[applied...] { if case .persist(let c) = action { image.apply(c) } }
            applied = h.all.count
        }

        /// A new coordinator restored from what was committed, `after` seconds later.
        func restarted(epoch: UInt64, after seconds: Double = 1, _ configure: (inout CorePolicy) -> Void = { _ in })
            -> Harness
        {
            var n = Harness { p in
                p.persistChanges = true
                configure(&p)
            }
            n.clock = .seconds(h.clock.seconds + seconds)
            n.record(n.core.restore(image.snapshot(epoch: epoch), at: n.clock))
            return n
        }
    }

    func persisted(_ actions: [CoreAction]) -> [StoreChange] {
        actions.compactMap { if case .persist(let c) = $0 { c } else { nil } }
    }

    @Test func aBatchKeepsItsOwnerThroughARestartAndAKeyIsNotReusedByAnotherOwner() throws {
        var d = Durable()
        d.h.ready(1)
        let entries = [BatchEntry(spec: image, count: 2)]
        let mine = try d.h.core.submit(key: "k1", entries: entries, owner: "alice", at: d.h.clock)
        d.h.record(mine.actions)
        #expect(d.h.core.batch(mine.receipt.batch)?.owner == "alice")
        // Without an owner the batch is its first entry's owner's.
        let theirs = try d.h.core.submit(key: nil, entries: [BatchEntry(spec: JobSpec(kind: "image", owner: "bob"))], at: d.h.clock)
        d.h.record(theirs.actions)
        #expect(d.h.core.batch(theirs.receipt.batch)?.owner == "bob")
        // The same key and entries from another owner is not a retry: it would hand out alice's batch.
        let conflict = #expect(throws: CoreError.self) {
            _ = try d.h.core.submit(key: "k1", entries: entries, owner: "mallory", at: d.h.clock)
        }
        #expect(conflict?.code == .batchKeyConflict)
        #expect(try d.h.core.submit(key: "k1", entries: entries, owner: "alice", at: d.h.clock).receipt.duplicate)
        d.commit()
        let n = d.restarted(epoch: 2)
        #expect(n.core.batch(mine.receipt.batch)?.owner == "alice")
        #expect(n.core.batch(theirs.receipt.batch)?.owner == "bob")
    }

    @Test func nothingIsPersistedWithoutAStore() {
        var h = Harness()
        h.ready(1)
        _ = h.submit(image, count: 3)
        #expect(persisted(h.all).isEmpty)
    }

    @Test func theBatchIsPersistedBeforeItsBindingsAndTheEndBeforeTheFinalEvent() throws {
        var d = Durable()
        d.h.ready(1)
        let jobs = d.h.submit(image, count: 2, key: "k1")
        let kinds = d.h.last.compactMap { a -> String? in
            switch a {
            case .persist(.batchAccepted): "batch"
            case .persist(.jobBound): "bound"
            case .assign: "assign"
            default: nil
            }
        }
        #expect(kinds.first == "batch")
        #expect(kinds.filter { $0 == "bound" }.count == 2)
        let lease = d.h.lease(jobs[0])
        let done = d.h.send(.jobCompleted(jobs[0], backend: BackendID(1), lease: lease, result: RawJSON(unchecked: "[1]")))
        let endIndex = try #require(done.firstIndex { if case .persist(.jobEnded) = $0 { true } else { false } })
        let eventIndex = try #require(
            done.firstIndex { if case .jobEvent(let e) = $0, case .completed = e.kind { true } else { false } })
        #expect(endIndex < eventIndex)
        guard case .persist(.jobEnded(let stored)) = done[endIndex] else { return }
        #expect(stored.state == .completed && stored.result?.text == "[1]" && stored.attempt == 1)
    }

    @Test func queuedJobsComeBackInOrderWithTheirBatchKey() throws {
        var d = Durable()
        // A backend that has not announced: the gate holds the jobs, nothing runs before the crash.
        d.h.send(.backendRegistered(BackendRegistration(id: BackendID(1), name: "b1", incarnation: Incarnation(1))))
        let low = d.h.submit(JobSpec(kind: "image", priority: 0), count: 2, key: "low")
        let high = d.h.submit(JobSpec(kind: "image", priority: 5), count: 1, key: "high")
        d.commit()
        var n = d.restarted(epoch: 2)
        // Backend 1 is expected back: the gate holds them again.
        #expect(n.core.job(low[0])?.state == .gated)
        #expect(n.core.jobsByState == [.gated: 3])
        #expect(n.core.backend(BackendID(1))?.link == .expected)
        #expect(n.core.batch(BatchID(1))?.jobs == low)
        // The same key and entries: the first receipt, nothing new.
        let (receipt, _) = try n.core.submit(
            key: "low", entries: [BatchEntry(spec: JobSpec(kind: "image", priority: 0), count: 2)], at: n.clock)
        #expect(receipt.duplicate && receipt.jobs == low)
        // New jobs and batches get new ids.
        let fresh = n.submit(image)
        #expect(fresh[0] > high[0])
        // A backend takes them by priority, then in their original order.
        n.ready(1, slots: 1)
        n.send(.jobCompleted(high[0], backend: BackendID(1), lease: n.lease(high[0]), result: .null))
        n.send(.jobCompleted(low[0], backend: BackendID(1), lease: n.lease(low[0]), result: .null))
        let order = n.all.compactMap { if case .assign(let j, _, _, _, _, _) = $0 { j } else { nil } }
        #expect(order == [high[0], low[0], low[1], fresh[0]])
    }

    /// A batch queued longest first (a video listed after two images) comes back in that order.
    @Test func aBatchComesBackLongestFirst() throws {
        let priors: (inout CorePolicy) -> Void = { $0.jobDurationPriors = ["image": .seconds(5), "video": .seconds(30)] }
        var d = Durable(priors)
        d.h.send(.backendRegistered(BackendRegistration(id: BackendID(1), name: "b1", incarnation: Incarnation(1))))
        let (receipt, actions) = try! d.h.core.submit(
            key: nil, entries: [BatchEntry(spec: image, count: 2), BatchEntry(spec: JobSpec(kind: "video"))], at: d.h.clock)
        d.h.record(actions)
        d.commit()
        var n = d.restarted(epoch: 2, priors)
        n.ready(1, slots: 1)
        try #require(n.core.job(receipt.jobs[2])?.state == .bound)
        for job in [receipt.jobs[2], receipt.jobs[0]] {
            n.send(.jobCompleted(job, backend: BackendID(1), lease: n.lease(job), result: .null))
        }
        let order = n.all.compactMap { if case .assign(let j, _, _, _, _, _) = $0 { j } else { nil } }
        #expect(order == [receipt.jobs[2], receipt.jobs[0], receipt.jobs[1]])
    }

    @Test func aBackendThatKeptRunningGetsItsJobsBackUnderTheSameLease() throws {
        var d = Durable()
        d.h.ready(1, incarnation: 7)
        let job = d.h.submit(image)[0]
        let lease = d.h.lease(job)
        d.h.send(.jobStarted(job, backend: BackendID(1), lease: lease))
        d.commit()
        var n = d.restarted(epoch: 2)
        #expect(n.core.job(job)?.state == .running)  // it had started
        #expect(n.core.bindings(of: BackendID(1)).map(\.job) == [job])
        #expect(n.core.backend(BackendID(1))?.link == .suspect)
        // The same process registers again: it keeps the job, its report under the old lease counts.
        n.send(.backendRegistered(BackendRegistration(id: BackendID(1), name: "b1", incarnation: Incarnation(7))))
        #expect(n.core.bindings(of: BackendID(1)).map(\.lease) == [lease])
        n.send(.jobStarted(job, backend: BackendID(1), lease: lease))
        n.send(.jobCompleted(job, backend: BackendID(1), lease: lease, result: .null))
        #expect(n.state(job) == .completed)
        #expect(n.core.counters.completed == 1 && n.core.counters.requeued == 0)
        // Leases issued now are above every lease of earlier openings.
        n.announce(1, .ready, incarnation: 7, revision: 1)
        let next = n.submit(image)[0]
        #expect(n.lease(next).rawValue > 2 << 32)
    }

    /// `job_info.history` and `attempts_exhausted`'s attempts read the same after a restart: every
    /// attempt with its backend, outcome, error and times, and a job still bound keeps the time
    /// its binding was made.
    @Test func attemptHistoriesAndBindingTimesSurviveARestart() throws {
        var d = Durable { $0.maxAttempts = 2 }
        for b in 1...4 { d.h.ready(Int64(b)) }
        let jobs = d.h.submit(image, count: 4)
        // Job 3: ran once and completed (the store keeps that attempt as two instants).
        d.h.clock = .seconds(0.5)
        d.h.send(.jobStarted(jobs[3], backend: d.h.backend(jobs[3]), lease: d.h.lease(jobs[3])))
        d.h.clock = .seconds(0.75)
        d.h.send(.jobCompleted(jobs[3], backend: d.h.backend(jobs[3]), lease: d.h.lease(jobs[3]), result: .null))
        // Job 0: requeued once (backend 1 failed it, retryable), then completed on its second try.
        d.h.clock = .seconds(1)
        d.h.send(.jobStarted(jobs[0], backend: d.h.backend(jobs[0]), lease: d.h.lease(jobs[0])))
        d.h.clock = .seconds(2)
        d.h.send(
            .jobFailed(
                jobs[0], backend: d.h.backend(jobs[0]), lease: d.h.lease(jobs[0]), code: ErrorCode("oom"),
                message: "out of \"memory\"", retryable: true))
        d.h.clock = .seconds(3)
        d.h.send(.jobStarted(jobs[0], backend: d.h.backend(jobs[0]), lease: d.h.lease(jobs[0])))
        d.h.clock = .seconds(4)
        d.h.send(.jobCompleted(jobs[0], backend: d.h.backend(jobs[0]), lease: d.h.lease(jobs[0]), result: .null))
        // Job 1: fails retryably until its attempts run out.
        while d.h.core.job(jobs[1])?.state.isFinal == false, d.h.core.job(jobs[1])?.backend != nil {
            d.h.clock = .seconds(d.h.clock.seconds + 1)
            d.h.send(
                .jobFailed(
                    jobs[1], backend: d.h.backend(jobs[1]), lease: d.h.lease(jobs[1]), code: ErrorCode("oom"),
                    message: "again", retryable: true))
        }
        #expect(d.h.core.job(jobs[1])?.failure?.code == .attemptsExhausted)
        // Job 2: still bound when the coordinator stops.
        let boundAt = try #require(d.h.core.job(jobs[2])?.history.last?.boundAt)
        d.commit()
        let before = jobs.map { d.h.core.job($0)! }
        #expect(before[0].history.count == 2 && before[0].history.last?.outcome == .completed)
        let n = d.restarted(epoch: 2, after: 30)
        for (k, job) in jobs.enumerated() {
            let after = try #require(n.core.job(job))
            #expect(after.history.map(\.attempt) == before[k].history.map(\.attempt), "job \(job)")
            #expect(after.history.map(\.backend) == before[k].history.map(\.backend), "job \(job)")
            #expect(after.history.map(\.outcome) == before[k].history.map(\.outcome), "job \(job)")
            #expect(after.history.map(\.boundAt) == before[k].history.map(\.boundAt), "job \(job)")
            #expect(after.history.map(\.endedAt) == before[k].history.map(\.endedAt), "job \(job)")
            #expect(after.history.map(\.error?.code) == before[k].history.map(\.error?.code), "job \(job)")
            #expect(after.history.map(\.error?.message) == before[k].history.map(\.error?.message), "job \(job)")
        }
        // Finished attempts keep when they started (job_info.started_ms).
        #expect(n.core.job(jobs[0])?.history.last?.startedAt == .seconds(3))
        #expect(n.core.job(jobs[3])?.history.map(\.startedAt) == [.seconds(0.5)])
        #expect(n.core.job(jobs[3])?.history.map(\.lease) == before[3].history.map(\.lease))
        #expect(d.image.jobs[jobs[3]]?.history == [] && d.image.jobs[jobs[3]]?.attempts.count == 1)
        #expect(n.core.job(jobs[0])?.history.first?.error?.message == "out of \"memory\"")
        // attempts_exhausted lists them again.
        #expect(n.core.job(jobs[1])?.failure?.attempts.map(\.attempt) == before[1].history.map(\.attempt))
        #expect(n.core.job(jobs[1])?.failure?.attempts.isEmpty == false)
        // The bound job's attempt began when it was bound, not at the restart.
        #expect(n.core.job(jobs[2])?.history.map(\.boundAt) == [boundAt])
        #expect(n.core.job(jobs[2])?.state == .bound)
    }

    /// A job that moved (work stealing) keeps its revoked attempt across a restart: the move
    /// stores it before the new binding. Before, the store got only the new binding, and a job
    /// that then completed after a crash listed attempt 2 alone (a fault test on the real daemon).
    @Test func aMovedJobKeepsItsRevokedAttemptAcrossARestart() throws {
        var d = Durable()
        d.h.ready(1)
        let jobs = d.h.submit(image, count: 2)
        #expect(jobs.map { d.h.backend($0) } == [BackendID(1), BackendID(1)])
        d.h.send(.jobStarted(jobs[0], backend: BackendID(1), lease: d.h.lease(jobs[0])))
        d.h.clock = .seconds(1)
        d.h.ready(2)
        #expect(d.h.backend(jobs[1]) == BackendID(2))
        let before = try #require(d.h.core.job(jobs[1]))
        #expect(before.history.map(\.outcome) == [.revoked, .bound] && before.attempt == 2)
        d.commit()
        let n = d.restarted(epoch: 2)
        let after = try #require(n.core.job(jobs[1]))
        #expect(after.attempt == 2 && after.state == .bound)
        #expect(after.history.map(\.attempt) == [1, 2] && after.history.first?.outcome == .revoked, "\(after.history)")
        #expect(after.history.map(\.backend) == [BackendID(1), BackendID(2)])
    }

    /// A job running when the coordinator stops comes back running, since when it started: its
    /// backend need not say `started` again, and when it completes its attempt and duration count
    /// from that start.
    @Test func aRunningJobComesBackRunningSinceItsStart() throws {
        var d = Durable()
        d.h.ready(1, incarnation: 7)
        let job = d.h.submit(image)[0]
        let lease = d.h.lease(job)
        d.h.clock = .seconds(2)
        d.h.send(.jobStarted(job, backend: BackendID(1), lease: lease))
        #expect(persisted(d.h.last) == [.jobStarted(job: job, at: .seconds(2))])
        // Said again (or implied by progress): stored once.
        d.h.send(.jobProgress(job, backend: BackendID(1), lease: lease, fraction: 0.5, message: nil))
        #expect(persisted(d.h.last).isEmpty)
        d.commit()
        var n = d.restarted(epoch: 2, after: 8)
        #expect(n.state(job) == .running)
        #expect(n.core.job(job)?.history.last?.startedAt == .seconds(2))
        #expect(n.core.backend(BackendID(1))?.running == 1)
        // Restoring persisted nothing and told no one.
        #expect(persisted(n.all).isEmpty && n.events(job, in: n.all).isEmpty)
        n.send(.backendRegistered(BackendRegistration(id: BackendID(1), name: "b1", incarnation: Incarnation(7))))
        n.clock = .seconds(20)
        n.send(.jobCompleted(job, backend: BackendID(1), lease: lease, result: .null))
        #expect(n.state(job) == .completed)
        #expect(n.core.job(job)?.history.map(\.startedAt) == [.seconds(2)])
        #expect(n.core.backend(BackendID(1))?.running == 0)
    }

    /// A backend whose link was down when the coordinator stopped (it said `goodbye`, or was lost
    /// for longer than the grace) is listed down after the restart and the gate does not wait for
    /// it, as before; one that is up is expected. A down backend that reconnects under its
    /// incarnation is stored up again before anything is bound to it.
    @Test func aBackendThatWasDownComesBackDownAndTheGateDoesNotWaitForIt() throws {
        let video = JobSpec(kind: "video", needs: ["video"])
        var d = Durable { $0.suspectGrace = .seconds(10) }
        d.h.ready(1, features: ["video"])
        d.h.ready(2, features: ["video"])
        d.h.ready(3, features: ["video"])
        let job = d.h.submit(image)[0]
        let holder = d.h.backend(job).rawValue
        let others = [1, 2, 3].filter { $0 != holder }
        // The holder is lost for longer than the grace: its job is requeued first, then it is stored down.
        let lost = d.h.send(.linkLost(BackendID(holder)))
        #expect(persisted(lost).isEmpty)
        d.h.advance(to: d.h.clock.seconds + 11)
        let changes = persisted(d.h.last)
        let requeued = changes.firstIndex { if case .jobRequeued(job, _, _, _) = $0 { true } else { false } }
        let down = changes.firstIndex(of: .backendDown(id: BackendID(holder), at: d.h.clock))
        #expect(requeued != nil && down != nil && requeued! < down!)
        // Bound again elsewhere at once; it completes there.
        let second = d.h.backend(job)
        d.h.send(.jobCompleted(job, backend: second, lease: d.h.lease(job), result: .null))
        // Another says goodbye: down at once.
        d.h.send(.backendLeft(BackendID(others[0])))
        #expect(persisted(d.h.last).last == .backendDown(id: BackendID(others[0]), at: d.h.clock))
        d.commit()
        #expect(d.image.snapshot(epoch: 1).backends.map(\.down) == [1, 2, 3].map { $0 != others[1] })

        var n = d.restarted(epoch: 2) { $0.suspectGrace = .seconds(10) }
        #expect(n.core.backend(BackendID(holder))?.link == .down)
        #expect(n.core.backend(BackendID(others[0]))?.link == .down)
        #expect(n.core.backend(BackendID(others[1]))?.link == .expected)
        #expect(n.core.readiness.waitingBackends == [BackendID(others[1])])
        // Once the up one announces, nothing is held back for the two that were down.
        n.ready(Int64(others[1]), features: ["video"])
        #expect(n.core.readiness.waitingBackends == [])
        let later = n.submit(video)[0]
        #expect(n.state(later) == .bound && n.backend(later) == BackendID(others[1]))

        // A down one reconnecting under its stored incarnation is up, and stored up first.
        n.send(.backendRegistered(BackendRegistration(id: BackendID(holder), name: "b\(holder)", incarnation: Incarnation(1))))
        #expect(n.core.backend(BackendID(holder))?.link == .up)
        #expect(
            persisted(n.last).first
                == .backendRegistered(id: BackendID(holder), name: "b\(holder)", incarnation: Incarnation(1)))
    }

    /// A `no_eligible_backend` failure reads the same after a restart: refusals and what was
    /// missing are stored with its code and message.
    @Test func aFailuresDetailsSurviveARestart() throws {
        var d = Durable()
        d.h.ready(1, features: ["image"])
        let job = d.h.submit(JobSpec(kind: "video", needs: ["video"], model: "wan"))[0]
        let failure = try #require(d.h.core.job(job)?.failure)
        #expect(failure.code == .noEligibleBackend && failure.refusals.count == 1 && failure.missingModel == "wan")
        d.commit()
        let n = d.restarted(epoch: 2)
        #expect(n.core.job(job)?.failure == failure)
    }

    /// A backend stored as down that the configuration names (the coordinator dials it at start)
    /// is expected like every configured backend: the gate waits for it, and it registers as new.
    @Test func aConfiguredBackendStoredDownIsExpectedWhenDialled() {
        var d = Durable()
        d.h.ready(1, features: ["video"], incarnation: 4)
        d.h.send(.backendLeft(BackendID(1)))
        d.commit()
        var n = d.restarted(epoch: 2)
        #expect(n.core.backend(BackendID(1))?.link == .down && n.core.readiness.waitingBackends.isEmpty)
        n.send(.backendExpected(BackendID(1), name: "b1"))
        #expect(n.core.backend(BackendID(1))?.link == .expected)
        #expect(n.core.readiness.waitingBackends == [BackendID(1)])
        // It comes back under the incarnation it had: up, stored up.
        n.ready(1, features: ["video"], incarnation: 4)
        #expect(n.core.backend(BackendID(1))?.link == .up)
        #expect(n.core.readiness.waitingBackends.isEmpty)
        #expect(
            persisted(n.all).contains(.backendRegistered(id: BackendID(1), name: "b1", incarnation: Incarnation(4))))
    }

    /// A crash between sending an `assign` and storing the binding: after the restart the job is
    /// queued, and the backend that still runs it claims it in its `hello` (Protocol 6.5). The
    /// claim holds for exactly that job, lease and attempt, and only for a queued job.
    @Test func aBindingTheStoreNeverGotIsClaimedBackByTheBackendThatRunsIt() throws {
        var d = Durable()
        d.h.ready(1, features: ["video"], slots: 3, incarnation: 7)
        let video = JobSpec(kind: "video", needs: ["video"])
        let jobs = d.h.submit(video, count: 3)
        let leases = jobs.map { d.h.lease($0) }
        // The store got the batch and the backend, not the bindings.
        for action in d.h.all {
            guard case .persist(let change) = action else { continue }
            if case .jobBound = change { continue }
            d.image.apply(change)
        }
        var n = d.restarted(epoch: 2)
        // Queued again, and held by the gate for backend 1, expected back.
        #expect(jobs.allSatisfy { n.state($0) == .gated })
        let claims = [
            Wire.HeldJob(job: jobs[0], lease: leases[0], attempt: 1),
            // The wrong attempt: not the one after the stored attempt 0.
            Wire.HeldJob(job: jobs[1], lease: leases[1], attempt: 2),
            // A lease this life would issue (at or above epoch 2 << 32): never one of its own.
            Wire.HeldJob(job: jobs[2], lease: Lease(2 << 32 | 5), attempt: 1),
        ]
        let actions = n.send(
            .backendRegistered(BackendRegistration(id: BackendID(1), name: "b1", incarnation: Incarnation(7), holding: claims)))
        #expect(n.state(jobs[0]) == .bound && n.backend(jobs[0]) == BackendID(1) && n.lease(jobs[0]) == leases[0])
        #expect(n.core.job(jobs[0])?.attempt == 1)
        #expect(n.events(jobs[0], in: actions) == [.released(.claimed), .bound])
        #expect(persisted(actions).contains(.jobBound(job: jobs[0], backend: BackendID(1), lease: leases[0], attempt: 1, at: n.clock)))
        #expect(!actions.contains { if case .assign(jobs[0], _, _, _, _, _) = $0 { true } else { false } }, "it runs there already")
        #expect(n.core.bindings(of: BackendID(1)).map(\.job) == [jobs[0]])
        #expect(n.core.counters.claimed == 1)
        #expect(n.state(jobs[1]) == .gated && n.state(jobs[2]) == .gated)
        // Its report under the claimed lease counts; the others run again under new leases.
        n.send(.jobCompleted(jobs[0], backend: BackendID(1), lease: leases[0], result: .null))
        #expect(n.state(jobs[0]) == .completed)
        n.announce(1, .ready, features: ["video"], slots: 3, incarnation: 7, revision: 2)
        #expect(n.state(jobs[1]) == .bound && n.lease(jobs[1]).rawValue > 2 << 32)
        // A claim once the job is bound elsewhere (or again) is ignored.
        n.send(
            .backendRegistered(
                BackendRegistration(
                    id: BackendID(1), name: "b1", incarnation: Incarnation(7),
                    holding: [Wire.HeldJob(job: jobs[1], lease: leases[1], attempt: 1)])))
        #expect(n.lease(jobs[1]).rawValue > 2 << 32 && n.core.counters.claimed == 1)
    }

    /// The same with a backend the store has a binding for (restored suspect under its
    /// incarnation): its stored job comes back as it was, the unstored one is claimed.
    @Test func aBackendWithStoredBindingsClaimsTheOneTheStoreNeverGot() throws {
        var d = Durable()
        d.h.ready(1, slots: 2, incarnation: 7)
        let stored = d.h.submit(image)[0]
        d.commit()
        let unstored = d.h.submit(image)[0]
        let leases = (d.h.lease(stored), d.h.lease(unstored))
        #expect(d.h.backend(unstored) == BackendID(1))
        // Its batch reached the store, its binding did not.
        for action in d.h.all[d.applied...] {
            guard case .persist(let change) = action else { continue }
            if case .jobBound = change { continue }
            d.image.apply(change)
        }
        var n = d.restarted(epoch: 2)
        // The gate holds the unstored one while its backend has not announced.
        #expect(n.state(stored) == .bound && n.state(unstored) == .gated)
        #expect(n.core.backend(BackendID(1))?.link == .suspect)
        n.send(
            .backendRegistered(
                BackendRegistration(
                    id: BackendID(1), name: "b1", incarnation: Incarnation(7), slots: 2,
                    holding: [
                        Wire.HeldJob(job: stored, lease: leases.0, attempt: 1),
                        Wire.HeldJob(job: unstored, lease: leases.1, attempt: 1),
                    ])))
        #expect(n.core.bindings(of: BackendID(1)).map(\.lease) == [leases.0, leases.1])
        #expect(n.events(unstored, in: n.last) == [.released(.claimed), .bound])
        #expect(n.core.counters.claimed == 1)
    }

    /// After a restart that brought back queued jobs, nothing is bound while backends that were
    /// up may still claim theirs: until each registered again (or went down), at most the window.
    @Test func afterARestartNothingIsBoundUntilTheBackendsThatWereUpCameBack() throws {
        var d = Durable()
        d.h.ready(1, incarnation: 7)
        d.h.ready(2, incarnation: 3)
        let jobs = d.h.submit(image, count: 2)
        let holders = jobs.map { d.h.backend($0) }
        let leases = jobs.map { d.h.lease($0) }
        for action in d.h.all {
            guard case .persist(let change) = action else { continue }
            if case .jobBound = change { continue }
            d.image.apply(change)
        }
        var n = d.restarted(epoch: 2) { $0.reclaimWindow = .seconds(5) }
        let start = n.clock.seconds
        let restartedAt = n.clock
        func waiting(_ job: JobID) -> Bool { n.state(job) == .queued || n.state(job) == .gated }
        #expect(jobs.allSatisfy(waiting))
        // A new backend, idle: it takes nothing yet, and readiness says why.
        n.ready(9, slots: 2)
        #expect(jobs.allSatisfy(waiting))
        let paused = n.core.readiness
        #expect(!paused.ready && paused.readyBackends == 1)
        #expect(paused.reclaim?.backends == holders.sorted() && paused.reclaim?.until == restartedAt + .seconds(5))
        // The first holder comes back and claims its job; the other job still waits.
        n.send(
            .backendRegistered(
                BackendRegistration(
                    id: holders[0], name: "b\(holders[0])", incarnation: Incarnation(holders[0] == BackendID(1) ? 7 : 3),
                    holding: [Wire.HeldJob(job: jobs[0], lease: leases[0], attempt: 1)])))
        #expect(n.state(jobs[0]) == .bound && n.lease(jobs[0]) == leases[0])
        #expect(waiting(jobs[1]))
        #expect(n.core.readiness.reclaim?.backends == [holders[1]])
        n.advance(to: start + 4.9)
        #expect(waiting(jobs[1]))
        // The other never comes back: the window ends, and the job is bound elsewhere.
        n.all.removeAll()
        n.advance(to: start + 5)
        #expect(n.state(jobs[1]) == .bound && n.backend(jobs[1]) != holders[1])
        #expect(n.core.readiness.reclaim == nil && n.core.readiness.ready)
        #expect(n.all.contains { if case .readinessChanged(let r) = $0 { r.ready && r.reclaim == nil } else { false } })
    }

    @Test func thePauseAfterARestartEndsOnceEveryBackendThatWasUpCameBack() throws {
        var d = Durable()
        d.h.ready(1, incarnation: 7)
        let job = d.h.submit(image, count: 3)[2]  // one runs, one waits on the backend, this one queued
        #expect(d.h.state(job) == .queued)
        d.commit()
        var n = d.restarted(epoch: 2) { $0.reclaimWindow = .seconds(5) }
        n.ready(9)
        #expect(n.core.job(job)?.backend == nil, "queued again, and nothing is bound yet")
        // Backend 1 registers again with nothing to claim: the pause ends at once.
        n.send(.backendRegistered(BackendRegistration(id: BackendID(1), name: "b1", incarnation: Incarnation(7))))
        // (after the gate's short pause that follows backend 9's first `ready`, not after 5 s)
        n.advance(to: n.clock.seconds + 0.2)
        #expect(n.core.job(job)?.backend == BackendID(9), "bound right away, not after the window")
    }

    @Test func withoutARestartNothingIsClaimed() {
        var h = Harness()
        h.ready(2)
        // One runs, one waits in the overqueue slot, the third in the queue.
        let job = h.submit(image, count: 3)[2]
        #expect(h.state(job) == .queued)
        h.send(
            .backendRegistered(
                BackendRegistration(
                    id: BackendID(1), name: "b1", incarnation: Incarnation(1),
                    holding: [Wire.HeldJob(job: job, lease: Lease(1), attempt: 1)])))
        #expect(h.state(job) == .queued && h.core.counters.claimed == 0)
    }

    @Test func aBackendThatRestartedLosesItsLeasesAtOnce() {
        var d = Durable()
        d.h.ready(1, incarnation: 7)
        let job = d.h.submit(image)[0]
        let old = d.h.lease(job)
        d.commit()
        var n = d.restarted(epoch: 2)
        n.ready(1, incarnation: 8)
        #expect(n.events(job).contains(.requeued(.backendRestarted, error: JobFailure(code: .backendRestarted, message: "backend 1 (b1) restarted with a new incarnation: its leases died"))))
        // Bound again at once on the new incarnation, under a lease above the old one.
        #expect(n.state(job) == .bound)
        #expect(n.lease(job) > old)
        #expect(n.core.job(job)?.attempt == 2)
        // The old lease is stale now.
        n.send(.jobCompleted(job, backend: BackendID(1), lease: old, result: .null))
        #expect(n.state(job) == .bound)
    }

    @Test func aBackendThatDoesNotComeBackLosesItsJobsAfterTheGrace() {
        var d = Durable { $0.suspectGrace = .seconds(10) }
        d.h.ready(1)
        d.h.ready(2)
        let job = d.h.submit(image)[0]
        let first = d.h.backend(job)
        d.commit()
        var n = d.restarted(epoch: 2) { $0.suspectGrace = .seconds(10) }
        let other: Int64 = first == BackendID(1) ? 2 : 1
        n.ready(other)
        #expect(n.state(job) == .bound && n.backend(job) == first)  // still waiting for its backend
        n.advance(to: n.clock.seconds + 11)
        #expect(n.state(job) == .bound && n.backend(job) == BackendID(other))
        #expect(n.core.job(job)?.attempt == 2)
    }

    @Test func aCancelIsStoredWhenItBeginsSoARestartWhileCancelingEndsTheJobOnce() throws {
        var d = Durable()
        d.h.ready(1, incarnation: 7)
        let job = d.h.submit(image)[0]
        let lease = d.h.lease(job)
        d.h.send(.jobStarted(job, backend: BackendID(1), lease: lease))
        let c = d.h.record(try d.h.core.cancelJob(job, at: d.h.clock))
        // The end is decided and stored at once, before the `canceling` event.
        let stored = persisted(c)
        #expect(stored.count == 1)
        guard case .jobEnded(let end)? = stored.first else { return }
        #expect(end.state == .canceled && end.lease == lease && end.backend == BackendID(1))
        #expect(d.h.state(job) == .running)
        d.commit()
        // Crash before the backend confirmed: the job comes back canceled, not bound.
        var n = d.restarted(epoch: 2)
        #expect(n.core.job(job)?.state == .canceled)
        // Its attempt is closed as canceled, when the cancel began (not left running).
        let attempt = try #require(n.core.job(job)?.history.last)
        #expect(attempt.outcome == .canceled && attempt.endedAt == end.endedAt, "\(attempt)")
        // The backend kept running and registers again: the job is not among its bindings, so it
        // stops it as stale; its confirmation is answered stale and ends nothing.
        n.send(.backendRegistered(BackendRegistration(id: BackendID(1), name: "b1", incarnation: Incarnation(7))))
        #expect(n.core.bindings(of: BackendID(1)).isEmpty)
        n.send(.jobFailed(job, backend: BackendID(1), lease: lease, code: .canceled, message: "", retryable: false))
        #expect(n.last.contains(.staleLease(job: job, backend: BackendID(1), lease: lease, about: "failed")))
        #expect(n.events(job).isEmpty && n.core.counters.canceled == 0)

        // Without a crash, the confirmation ends it with no second write.
        let done = d.h.send(.jobFailed(job, backend: BackendID(1), lease: lease, code: .canceled, message: "", retryable: false))
        #expect(persisted(done).isEmpty)
        #expect(d.h.events(job, in: done) == [.canceled])
    }

    @Test func finishedJobsAnswerQueriesAndRetentionStillApplies() throws {
        var d = Durable { $0.finishedJobRetention = .seconds(100) }
        d.h.ready(1)
        let jobs = d.h.submit(image, count: 2)
        d.h.send(.jobCompleted(jobs[0], backend: BackendID(1), lease: d.h.lease(jobs[0]), result: RawJSON(unchecked: #"{"x":"é"}"#)))
        d.h.record(try d.h.core.cancelJob(jobs[1], at: d.h.clock))
        d.commit()
        var n = d.restarted(epoch: 2, after: 50) { $0.finishedJobRetention = .seconds(100) }
        #expect(n.core.job(jobs[0])?.result?.text == #"{"x":"é"}"#)
        #expect(n.core.job(jobs[1])?.state == .canceled)
        // Retention counts from when they ended, not from the restart.
        n.advance(to: n.clock.seconds + 60)
        #expect(n.core.job(jobs[0]) == nil && n.core.batch(BatchID(1)) == nil)
        #expect(persisted(n.all).contains(.evicted(jobs: jobs, batches: [BatchID(1)])))
    }

    /// A retry under a batch's key after a restart gets the first receipt whole, even once
    /// retention dropped some of the batch's jobs (their ids are still the batch's).
    @Test func aKeyedRetryAfterARestartGetsTheWholeReceiptWhenSomeJobsWereEvicted() throws {
        var d = Durable { $0.finishedJobLimit = 2 }
        d.h.ready(1, slots: 4)
        let jobs = d.h.submit(image, count: 4, key: "k")
        for job in jobs.prefix(3) {
            d.h.send(.jobCompleted(job, backend: BackendID(1), lease: d.h.lease(job), result: RawJSON(unchecked: "{}")))
        }
        #expect(d.h.core.job(jobs[0]) == nil, "evicted")
        d.commit()
        var n = d.restarted(epoch: 2) { $0.finishedJobLimit = 2 }
        #expect(n.core.job(jobs[0]) == nil && n.core.job(jobs[3]) != nil)
        let (receipt, _) = try n.core.submit(key: "k", entries: [BatchEntry(spec: image, count: 4)], at: n.clock)
        #expect(receipt.duplicate && receipt.jobs == jobs, "\(receipt.jobs)")
    }

    /// A crash at any point: the jobs of every stored batch end exactly once over both lives,
    /// counting only final events whose end was stored before the crash.
    @Test(arguments: 0..<40) func aCrashAnywhereLosesNoStoredJobAndEndsNoneTwice(seed: Int) throws {
        var rng = SplitMix64(seed: UInt64(seed) &+ 11)
        var d = Durable()
        d.h.ready(1, incarnation: 1)
        d.h.ready(2, incarnation: 1)
        var ended: [JobID: Int] = [:]
        let steps = 30 + Int(rng.next() % 30)
        for _ in 0..<steps {
            switch rng.next() % 6 {
            case 0, 1:
                d.h.submit(image, count: 1 + Int(rng.next() % 3))
            case 2:
                // A client cancels a job on a backend; the backend confirms now or never.
                let b = BackendID(Int64(1 + rng.next() % 2))
                guard let (job, lease) = d.h.core.bindings(of: b).last else { continue }
                d.h.record(try d.h.core.cancelJob(job, at: d.h.clock))
                if rng.next() % 2 == 0 {
                    d.h.send(.jobFailed(job, backend: b, lease: lease, code: .canceled, message: "", retryable: false))
                }
            default:
                // A backend finishes or fails one of its jobs.
                let b = BackendID(Int64(1 + rng.next() % 2))
                guard let (job, lease) = d.h.core.bindings(of: b).first else { continue }
                if rng.next() % 4 == 0 {
                    d.h.send(.jobFailed(job, backend: b, lease: lease, code: .jobFailed, message: "oom", retryable: true))
                } else {
                    d.h.send(.jobCompleted(job, backend: b, lease: lease, result: .null))
                }
            }
            if rng.next() % 3 == 0 { d.commit() }  // group commits land now and then
        }
        // Final events published before the crash: only those whose end was durable.
        let durableEnds = Set(d.image.jobs.values.filter { $0.state.isFinal }.map(\.id))
        for job in durableEnds { ended[job, default: 0] += 1 }
        let stored = Set(d.image.jobs.keys)
        // What backend 1 runs when the coordinator dies: it lists them in its next hello.
        let held = d.h.core.bindings(of: BackendID(1)).map { b in
            Wire.HeldJob(job: b.job, lease: b.lease, attempt: d.h.core.job(b.job)!.attempt)
        }
        // Restart; backend 1 kept running (same incarnation), backend 2 restarted.
        var n = d.restarted(epoch: 2)
        n.send(
            .backendRegistered(BackendRegistration(id: BackendID(1), name: "b1", incarnation: Incarnation(1), holding: held)))
        // It keeps each job the store has bound to it under that lease, and claims each one the
        // store has queued with the attempt before: nothing else.
        for h in held {
            guard let s = d.image.jobs[h.job], !s.state.isFinal else { continue }
            let storedThere = (s.state == .bound || s.state == .running) && s.backend == BackendID(1) && s.lease == h.lease
            let claimable = s.state == .queued && s.attempt + 1 == h.attempt
            let kept = n.core.job(h.job).map { $0.backend == BackendID(1) && $0.lease == h.lease } ?? false
            #expect(kept == (storedThere || claimable), "job \(h.job): stored \(s.state) attempt \(s.attempt), held \(h)")
        }
        n.announce(1, .ready, incarnation: 1, revision: 2)
        n.ready(2, incarnation: 2)
        for _ in 0..<200 {
            var progressed = false
            for b in [BackendID(1), BackendID(2)] {
                for (job, lease) in n.core.bindings(of: b) {
                    let actions = n.send(.jobCompleted(job, backend: b, lease: lease, result: .null))
                    for case .jobEvent(let e) in actions {
                        if e.state.isFinal { ended[e.job, default: 0] += 1 }
                    }
                    progressed = true
                }
            }
            if !progressed { break }
        }
        for job in stored { #expect(ended[job] == 1, "job \(job) ended \(ended[job] ?? 0) times") }
        #expect(ended.values.allSatisfy { $0 == 1 })
    }
}

