@testable import MusterCore
import MusterProtocol
import PropertyBased
import Testing

/// Random event storms against the coordinator: whatever the order of reports, restarts, link
/// drops, cancels and timer ticks, every job ends exactly once and the bookkeeping stays sound.
@Suite struct LifecyclePropertyTests {
    @Test func jobsEndExactlyOnceAndLoadsStayWithinSlots() async {
        await propertyCheck(count: 60, input: Gen.int(in: 0...Int(Int32.max)).array(of: 1...120)) { script in
            Self.storm(script, stragglers: false)
        }
    }

    /// The same storm where every backend is ready from the start, a first job turns out a
    /// straggler at once (two idle backends run backups of it), and every progress report is
    /// `timed`, small (a tenth to a fifth done) and 3 s after the previous event: reports,
    /// cancels, link losses and restarts come under the backups' leases and on their backends too.
    @Test func backupRunsKeepEveryJobEndingOnce() async {
        var started = 0
        await propertyCheck(count: 60, input: Gen.int(in: 0...Int(Int32.max)).array(of: 1...120)) { script in
            started += Self.storm(script, stragglers: true)
        }
        #expect(started > 0, "the storms started backup runs")
    }

    /// A storm the random inputs found: a backup wins and its backend is measured 20 times as fast
    /// as assumed, so the two idle backends leave the next batch's head to it (`admits`: the
    /// head's wait for a better backend starts); that head is canceled while queued. The job after
    /// it was never looked at, so it waited with two backends idle and no wait bound started
    /// until the class's timer fired. Now canceling a declined job makes the free backends decide
    /// on the next one at once.
    @Test func aCanceledDeclinedJobLeavesTheNextOneDecidedOn() {
        Self.storm([436325842, 1042431225, 1199387933, 1454939198, 2011171463, 1854345270], stragglers: true)
    }

    /// Plays one storm; returns how many backup runs it started.
    @discardableResult
    static func storm(_ script: [Int], stragglers: Bool) -> Int {
        do {
            var h = Harness {
                $0.suspectGrace = .seconds(3)
                $0.inhibitAfterFailure = .seconds(1)
                $0.gateWindow = .seconds(20)
                // Lost backends are forgotten within a storm (a later hello brings one back as new).
                $0.forgetDownAfter = .seconds(8)
            }
            var incarnations: [Int64: UInt64] = [1: 1, 2: 1, 3: 1]
            var revisions: [Int64: UInt64] = [1: 0, 2: 0, 3: 0]
            var leases: [(JobID, BackendID, Lease)] = []
            var submitted: [JobID] = []
            var t = 0.0
            func announce(_ h: inout Harness, _ b: Int64, _ state: BackendState) {
                revisions[b]! += 1
                h.announce(
                    b, state, features: b == 3 ? ["video"] : [], slots: Int(b), incarnation: incarnations[b]!,
                    revision: revisions[b]!)
            }
            for id in Int64(1)...3 {
                h.send(
                    .backendRegistered(
                        BackendRegistration(
                            id: BackendID(id), name: "b\(id)", incarnation: Incarnation(1), slots: Int(id))))
                if stragglers { announce(&h, id, .ready) }
            }
            if stragglers {
                // A job that turns out a straggler at 2 s (a tenth done, 10 s expected): the
                // idle backends run backups of it, so the storm finds their leases.
                submitted += h.submit(JobSpec(kind: "image", owner: "o0"))
                for case .assign(let job, _, _, let backend, let lease, _) in h.last {
                    leases.append((job, backend, lease))
                    h.send(.jobStarted(job, backend: backend, lease: lease))
                    t = 2
                    h.clock = .seconds(t)
                    h.send(.jobProgress(job, backend: backend, lease: lease, fraction: 0.1, timed: true))
                }
                for case .assign(let job, _, _, let backend, let lease, _) in h.last {
                    leases.append((job, backend, lease))
                }
            }
            for n in script {
                let b = Int64(n % 3 + 1)
                let pick = (n / 3) % 15
                switch pick {
                case 0: announce(&h, b, .ready)
                case 1: announce(&h, b, n % 2 == 0 ? .loading : .draining)
                case 2, 3:
                    submitted += h.submit(
                        JobSpec(kind: "image", needs: n % 5 == 0 ? ["video"] : [], owner: "o\(n % 2)"),
                        count: 1 + n % 3)
                case 4, 5, 6:
                    // Report on a random lease ever handed out: current ones progress, old ones are stale.
                    guard !leases.isEmpty else { continue }
                    let (job, backend, lease) = leases[(n / 39) % leases.count]
                    switch n % 4 {
                    case 0: h.send(.jobStarted(job, backend: backend, lease: lease))
                    case 1: h.send(.jobCompleted(job, backend: backend, lease: lease, result: .null))
                    case 2:
                        h.send(
                            .jobFailed(
                                job, backend: backend, lease: lease, code: .jobFailed, message: "x",
                                retryable: n % 8 < 4))
                    default:
                        // Timed progress projects ends, class durations and speeds along the way.
                        let fraction = stragglers ? 0.1 + Double(n % 3) / 20 : Double(n % 10 + 1) / 10
                        if stragglers {
                            // Some work time first, so that a tenth done shows a long job.
                            t += 3
                            h.advance(to: t)
                        }
                        let timed = stragglers || n % 8 < 4
                        h.send(.jobProgress(job, backend: backend, lease: lease, fraction: fraction, timed: timed))
                    }
                case 7: h.send(.linkLost(BackendID(b)))
                case 8:
                    h.send(
                        .backendRegistered(
                            BackendRegistration(
                                id: BackendID(b), name: "b\(b)", incarnation: Incarnation(incarnations[b]!),
                                slots: Int(b))))
                case 9:
                    incarnations[b]! += 1
                    revisions[b] = 0
                    h.send(
                        .backendRegistered(
                            BackendRegistration(
                                id: BackendID(b), name: "b\(b)", incarnation: Incarnation(incarnations[b]!),
                                slots: Int(b))))
                case 10:
                    guard !submitted.isEmpty else { continue }
                    h.record(try! h.core.cancelJob(submitted[(n / 39) % submitted.count], at: h.clock))
                case 13:
                    // Removal (a later hello brings the backend back as new), or a drain request.
                    if n % 2 == 0 {
                        h.send(.backendRemoved(BackendID(b)))
                    } else {
                        h.send(.drain(BackendID(b)))
                    }
                default:
                    t += Double(n % 7)
                    h.advance(to: t)
                }
                for case .assign(let job, _, _, let backend, let lease, _) in h.last {
                    leases.append((job, backend, lease))
                }
                // Late binding never leaves a usable slot idle while a job it could take waits,
                // except the jobs of a class that the expected-completion rule left to backends
                // expected to finish them sooner (its head declined, the others counted with it),
                // and only until `maxWaitForBetterBackend` has passed since; and nothing is bound
                // during the pause after a backend announced `ready` while jobs were held.
                let settling = h.core.settleUntil > h.clock && h.core.gateClosed
                let queued = submitted.compactMap { h.core.job($0) }.filter { $0.state == .queued || $0.state == .gated }
                let leftToFaster = Set(
                    queued.filter { j in
                        j.declinedSince.map { h.clock < $0 + h.core.policy.maxWaitForBetterBackend } ?? false
                    }.map(\.classIndex))
                let waiting = queued.filter { !leftToFaster.contains($0.classIndex) }
                for info in h.core.backendList
                where !settling && info.link == .up && info.announced == .ready && !info.draining && info.inhibitedUntil == nil {
                    let runningFree = info.inFlight < info.slots
                    let anyFree = info.inFlight < info.slots + h.core.policy.overqueue
                    // A held job takes only a running slot, and keeps an overqueue slot empty of
                    // the jobs it outranks (priority, owner round, queue order) until one frees.
                    let heldHere = waiting.filter { $0.state == .gated && Set($0.spec.needs).isSubset(of: info.features) }
                    func outranked(_ j: JobRecord) -> Bool {
                        heldHere.contains { ($0.spec.priority, -Int($0.round), -Int($0.seq)) > (j.spec.priority, -Int(j.round), -Int(j.seq)) }
                    }
                    let idleWith = waiting.filter { j in
                        Set(j.spec.needs).isSubset(of: info.features)
                            && (j.state == .gated ? runningFree : runningFree || (anyFree && !outranked(j)))
                    }
                    #expect(idleWith.isEmpty, "backend \(info.id) has room while \(idleWith.map(\.id)) wait")
                }
            }
            // Every job reached at most one final event.
            var finals: [JobID: Int] = [:]
            for case .jobEvent(let e) in h.all {
                if e.state.isFinal { finals[e.job, default: 0] += 1 }
            }
            #expect(finals.values.allSatisfy { $0 == 1 })
            for job in submitted {
                guard let record = h.core.job(job) else { continue }
                #expect(record.state.isFinal == (finals[job] == 1))
            }
            // Loads match the jobs bound and never exceed slots + overqueue.
            for info in h.core.backendList {
                let here = submitted.filter {
                    let s = h.core.job($0)?.state
                    return (s == .bound || s == .running) && h.core.job($0)?.backend == info.id
                }
                #expect(info.inFlight == here.count)
                // A backup run counts on its backend too (the router does not see it).
                let backup = h.core.backupOn[info.id] != nil ? 1 : 0
                #expect(info.inFlight + backup <= info.slots + h.core.policy.overqueue)
                #expect(info.running <= info.inFlight)
            }
            // Backups are of live bindings elsewhere, one per backend, and the two tables agree.
            for (backend, job) in h.core.backupOn {
                let record = h.core.job(job)
                #expect(record?.state == .bound || record?.state == .running)
                #expect(record?.backend != backend && record?.cancelRequestedAt == nil)
                #expect(h.core.backups[job]?.filter { $0.backend == backend }.count == 1)
            }
            #expect(h.core.backups.values.reduce(0) { $0 + $1.count } == h.core.backupOn.count)
            // Held jobs are exactly the gated ones.
            #expect(h.core.heldJobs == submitted.filter { h.core.job($0)?.state == .gated })
            // The per-state counts kept as jobs change agree with a walk over every job.
            var walked: [JobState: Int] = [:]
            for job in h.core.jobIDs { walked[h.core.job(job)!.state, default: 0] += 1 }
            #expect(h.core.jobsByState == walked)
            // So do the held jobs per need.
            var needs: [HeldNeed: Int] = [:]
            for job in h.core.heldJobs {
                let w = h.core.job(job)!.waitReason!
                needs[HeldNeed(features: w.features, model: w.model, backends: h.core.readiness.waitingBackends, jobs: 0), default: 0] += 1
            }
            #expect(
                Set(h.core.heldByNeed) == Set(needs.map { var n = $0.key; n.jobs = $0.value; return n }))
            return h.core.counters.backupsStarted
        }
    }
}
