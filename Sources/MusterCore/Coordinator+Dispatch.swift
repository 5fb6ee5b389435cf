import HeapModule
import MusterProtocol

// The warm-up gate and the late-binding router.
extension Coordinator {
    /// Whether jobs of class `c` are held by the gate: it needs features (or nothing ready can run
    /// it yet) while a backend that might turn out eligible has not announced.
    func classHeld(_ c: Int) -> Bool {
        gateClosed && (!classes[c].needs.isEmpty || !classes[c].nodes.isEmpty || classes[c].capable.isEmpty)
    }

    /// Runs after every event: gate transitions, failures of jobs nothing can run, dispatch,
    /// readiness.
    mutating func settle() {
        let closed = gateClosed
        if pending.isEmpty && dirty.isEmpty && classesToCheck.isEmpty && !readinessDirty && closed == gateWasClosed {
            return  // the common report that changes no routing state
        }
        let opened = gateWasClosed && !closed
        let justClosed = closed && !gateWasClosed
        // The gate opening ends a pause after a `ready` (a gate that closes again later starts
        // none until the next first `ready`).
        if opened { settleUntil = .zero }
        if opened || justClosed || !classesToCheck.isEmpty {
            reviewGate(opened: opened, justClosed: justClosed)
        }
        for id in pending where jobs.state(id) == .queued {
            let c = jobs[id].classIndex
            if classes[c].capable.isEmpty && !closed && !policy.keepQueuedWhenNoEligible {
                failNoEligible(id)
            }
        }
        // Held before dispatch: a held job that takes an idle slot is `gated`, then `released`
        // (`idle_backend`) and `bound`, as Protocol/README.md 9.2 draws it.
        for id in pending where jobs.state(id) == .queued && classHeld(jobs[id].classIndex) {
            hold(id)
        }
        dispatch()
        pending.removeAll(keepingCapacity: true)
        classesToCheck.removeAll(keepingCapacity: true)
        if readinessDirty {
            readinessDirty = false
            let r = readiness
            if r != lastReadiness {
                lastReadiness = r
                out.append(.readinessChanged(r))
            }
        }
    }

    mutating func reviewGate(opened: Bool, justClosed: Bool) {
        let closed = gateClosed
        if !held.isEmpty {
            for id in held.sorted() where !classHeld(jobs[id].classIndex) {
                release(id, opened ? lastGateOpenCause : .announced)
            }
        }
        let targets: [Int] = (opened || justClosed) ? Array(classes.indices) : classesToCheck.sorted()
        for c in targets where classes[c].queued > 0 {
            if closed {
                guard classHeld(c) else { continue }
                for entry in classes[c].queue.unordered.sorted() where jobs.state(entry.job) == .queued {
                    hold(entry.job)
                }
            } else if classes[c].capable.isEmpty && !policy.keepQueuedWhenNoEligible {
                for entry in classes[c].queue.unordered.sorted() {
                    if let s = jobs.state(entry.job), s == .queued || s == .gated { failNoEligible(entry.job) }
                }
                classes[c].queue = Heap()
                heads[c] = .empty
                classes[c].dead = 0
            }
        }
    }

    mutating func hold(_ id: JobID) {
        let c = classes[jobs[id].classIndex]
        let reason = WaitReason(
            features: c.needs, model: c.model, backends: unknownSorted, noReadyBackend: c.capable.isEmpty)
        jobs.setState(id, .gated)
        jobs[id].waitReason = reason
        let j = jobs[id]
        held.insert(id)
        heldPerClass[j.classIndex, default: 0] += 1
        for f in c.needs { heldFeatures[f, default: 0] += 1 }
        readinessDirty = true
        emit(j, .gated(reason))
    }

    mutating func unhold(_ id: JobID) {
        guard held.remove(id) != nil else { return }
        let c = jobs[id].classIndex
        if let n = heldPerClass[c], n > 1 { heldPerClass[c] = n - 1 } else { heldPerClass[c] = nil }
        for f in classes[c].needs {
            heldFeatures[f, default: 0] -= 1
            if heldFeatures[f] == 0 { heldFeatures[f] = nil }
        }
        readinessDirty = true
    }

    mutating func release(_ id: JobID, _ cause: ReleaseCause) {
        leaveGate(id, cause, backend: cause == .announced ? announcing ?? gateOpener : nil)
        wake(jobs[id].classIndex)
    }

    /// A held job is queued again: `released` with `cause`, naming `backend` when one is the
    /// reason (the one whose announcement opened the gate, the idle one, the one that claimed it).
    mutating func leaveGate(_ id: JobID, _ cause: ReleaseCause, backend: BackendID?) {
        unhold(id)
        jobs.setState(id, .queued)
        jobs[id].waitReason = nil
        emit(jobs[id], .released(cause), backend: backend)
    }

    /// How many backends a `no_eligible_backend` failure lists in `refusals`.
    static let maxRefusals = 16

    /// Fails a queued job that no backend can run, naming what is missing and why each backend
    /// was refused (the first `maxRefusals` of them).
    mutating func failNoEligible(_ id: JobID) {
        let j = jobs[id]
        let c = classes[j.classIndex]
        var refusals: [BackendRefusal] = []
        // Linked backends first, then those down or never connected; at most `maxRefusals`,
        // so a fleet that kept many names (a day of them) cannot make every failure huge.
        let ids = backends.ids.sorted()
        let ordered = ids.filter { backends[$0].link == .up || backends[$0].link == .suspect }
            + ids.filter { backends[$0].link != .up && backends[$0].link != .suspect }
        let considered = ordered.count
        for bid in ordered.prefix(Self.maxRefusals) {
            let b = backends[bid]
            refusals.append(
                refusalDetail(b, c)
                    ?? (b.inhibitedUntil > now
                        ? BackendRefusal(backend: bid, name: b.name, reason: "inhibited after a recent failure", reasons: ["inhibited"])
                        : BackendRefusal(backend: bid, name: b.name, reason: "eligible", reasons: [])))
        }
        var wanted: [String] = []
        if !c.needs.isEmpty { wanted.append("features \(c.needs.joined(separator: ","))") }
        if let m = c.model { wanted.append("model \(m)") }
        if !c.nodes.isEmpty { wanted.append("node classes \(c.nodes.joined(separator: ", "))") }
        let what = wanted.isEmpty ? "a ready backend" : wanted.joined(separator: " and ")
        let head = "no backend can run this job: it needs \(what); "
        var detail = refusals.isEmpty ? "no backends are registered" : ""
        // The message is protocol text (at most `ProtocolLimits.maxTextLength` characters); a
        // large fleet's refusals are named until it is full; `refusals` has the first
        // `maxRefusals`, and the message counts the backends considered beyond them.
        let budget = ProtocolLimits.maxTextLength - head.unicodeScalars.count - 64
        var used = 0
        var counted = false
        for (i, r) in refusals.enumerated() {
            let part = (i == 0 ? "" : "; ") + "\(r.backend) (\(r.name)): \(r.reason)"
            let n = part.unicodeScalars.count
            if used + n > budget {
                detail += "; and \(considered - i) more (\(refusals.count - i) in refusals)"
                counted = true
                break
            }
            detail += part
            used += n
        }
        if considered > refusals.count, !counted {
            detail += "; and \(considered - refusals.count) more backends not listed"
        }
        // What no ready backend offers, as it stands now (the details never change afterwards).
        // A backend told to drain is not ready, whatever it announces (`takesWork`).
        var readyFeatures = Set<String>()
        var readyModels = Set<String>()
        var readyNodes = Set<String>()
        for b in backends.records where b.takesWork {
            readyFeatures.formUnion(b.features)
            readyModels.formUnion(b.available)
            readyNodes.formUnion(b.nodes)
        }
        let failure = JobFailure(
            code: .noEligibleBackend, message: Self.clampText(head + detail),
            refusals: refusals, missingFeatures: c.needs.filter { !readyFeatures.contains($0) },
            missingModel: c.model.flatMap { readyModels.contains($0) ? nil : $0 },
            missingNodes: c.nodes.filter { !readyNodes.contains($0) })
        dequeued(id, popped: false)
        jobs[id].waitReason = nil
        jobs[id].failure = failure
        end(id, .failed, .failed(failure))
    }

    /// `text` cut to the protocol's text limit (`ProtocolLimits.maxTextLength` characters),
    /// ending in "…" when cut.
    static func clampText(_ text: String) -> String {
        let max = ProtocolLimits.maxTextLength
        guard text.unicodeScalars.count > max else { return text }
        var scalars = String.UnicodeScalarView()
        scalars.append(contentsOf: text.unicodeScalars.prefix(max - 1))
        return String(scalars) + "…"
    }

    // MARK: - Dispatch

    /// Binds queued jobs to backends with free slots: the least loaded backend first, each taking
    /// its best job (priority, owner round, queue order), one job at a time so load stays level.
    mutating func dispatch() {
        // Just restored: backends that were up may still claim their jobs (`reclaimUntil`).
        if reclaimUntil > now { return }
        // A backend announced `ready` a moment ago while jobs were held: nothing is bound until
        // the pause ends (the `settled` timer looks at every free backend again).
        if settleUntil > now && gateClosed { return }
        compareBudget = policy.compareLimit
        while !dirty.isEmpty {
            var heap = Heap<Candidate>()
            swap(&heap, &scratch)  // reuse the drained heap's storage
            // In candidate order, not the dirty set's: its order follows the order backends were
            // woken in (some from hashed per-class sets), and the heap's layout decides what
            // `loadedPeer` looks at. Sorted, the same candidates make the same heap.
            var woken: [Candidate] = []
            swap(&woken, &scratchCandidates)
            for id in dirty where free.contains(id) && backends[id].idleEpoch != routingEpoch {
                woken.append(candidate(id))
            }
            if woken.count > 1 { woken.sort() }
            for c in woken { heap.insert(c) }
            woken.removeAll(keepingCapacity: true)
            scratchCandidates = woken
            dirty.removeAll(keepingCapacity: true)
            // A binding emits about four actions; growing the buffer by doubling would copy it
            // (and fault in fresh pages) several times during a burst.
            if heap.count > 8 { out.reserveCapacity(out.count + 4 * heap.count * (1 + policy.overqueue)) }
            while let e = heap.popMin() {
                guard free.contains(e.id) else { continue }
                let fresh = candidate(e.id)
                if fresh != e {
                    heap.insert(fresh)
                    continue
                }
                let runningFree = e.inFlight < e.slots
                var choice: (c: Int, entry: QueueEntry, target: BackendID)?
                // Whether the choice is the job `pickJob` returned (not a backfill or another
                // job for the overqueue slot).
                var picked = false
                declinedHedges.removeAll(keepingCapacity: true)
                if let (c, entry) = pickJob(for: e.id, runningFree: runningFree) {
                    let target = loadedPeer(for: c, instead: e, in: heap) ?? e.id
                    if target == e.id, !runningFree, waitsPastSlot(e.id, c) {
                        // The job stays queued (its load starts if it would finish first here);
                        // the slot takes a job that can start when a running slot frees, or
                        // stays free.
                        loadIfFirst(e.id, c, entry)
                        choice = overqueueInstead(e.id, of: c).map { ($0.0, $0.1, e.id) }
                    } else if target == e.id, let fill = backfill(e.id, loadingFor: c, runningFree: runningFree) {
                        choice = (fill.0, fill.1, e.id)
                    } else if target == e.id, runningFree, policy.workStealing, backfillBySteal(e.id, loadingFor: c) {
                        // A job bound elsewhere fills the slot while the model loads; the job
                        // waiting for the model stays queued.
                        dirty.remove(e.id)
                        if free.contains(e.id) { heap.insert(candidate(e.id)) }
                        continue
                    } else if target == e.id, runningFree, copiesThroughLoad(e.id, c) {
                        // A copy of a running job fills the load instead; the job waiting for
                        // the model stays queued, and is bound when the model lands.
                        backends[e.id].idleEpoch = routingEpoch
                        dirty.remove(e.id)
                        continue
                    } else {
                        choice = (c, entry, target)
                        picked = true
                    }
                }
                if let (_, _, target) = choice, target == e.id, backupGivesWay(on: e.id), let victim = promoteAhead(e.id) {
                    // The backup that would give way became the binding instead: this backend
                    // and the one the job ran on look again, now.
                    dirty.remove(e.id)
                    if free.contains(e.id) { heap.insert(candidate(e.id)) }
                    if free.contains(victim) {
                        dirty.remove(victim)
                        heap.insert(candidate(victim))
                    }
                    continue
                }
                if let (c, entry, target) = choice {
                    classes[c].queue.removeMin()
                    heads[c] = classes[c].queue.min ?? .empty
                    if picked, let swap = longerFirst, swap.taken == entry {
                        takePlace(swap.c, passed: swap.passed, taken: swap.taken)
                    }
                    longerFirst = nil
                    bind(entry.job, to: target, fromQueue: true)
                    dirty.remove(target)
                } else if !(policy.workStealing && stealInto(e.id, runningFree: runningFree)) {
                    if !runningFree { prefetchUnderBar(e.id) }
                    hedgeLoad(e.id, behind: false)
                    if runningFree { startBackup(e.id) }
                    hedgeLoad(e.id, behind: true)
                    hedgeDeclinedLoad(e.id)
                    prefetchModel(e.id)
                    backends[e.id].idleEpoch = routingEpoch
                    dirty.remove(e.id)
                    continue
                }
                dirty.remove(e.id)
                if free.contains(e.id) { heap.insert(candidate(e.id)) }
            }
            scratch = heap
        }
        compareBudget = .max
    }

    func candidate(_ id: BackendID) -> Candidate {
        let i = backends.index(id)!
        return Candidate(
            inFlight: backends.records[i].jobs.count, slots: backends.records[i].slots,
            speed: policy.routing == .expectedCompletion ? backends.records[i].speed : 1, isLocal: id.isLocal,
            priority: backends.records[i].priority, id: id)
    }

    /// The job a free backend takes now, if any: its best job (priority, owner round, queue order) of a
    /// class whose waiting jobs are not all expected to finish sooner elsewhere.
    mutating func pickJob(for id: BackendID, runningFree: Bool) -> (Int, QueueEntry)? {
        guard policy.routing == .expectedCompletion else { return bestJob(for: id, runningFree: runningFree) }
        let bi = backends.index(id)!
        // No backend is faster (by more than `nearFastest` allows): with the model loaded (or none
        // needed) nothing finishes sooner than here (the candidate order already gave less loaded
        // backends their turn). A model it must load is decided by the aggregate model rule in
        // `bestJob`, except that it compares like any other backend (the loaded ones at their own
        // speeds) for a job that a slower backend already left to faster ones (so the two rules
        // never each leave it to the other), and for a model no capable backend has loaded while
        // its own load time is known (another may load it sooner). This keeps a uniform fleet's
        // decisions free of comparisons.
        let fastest = backends.records[bi].speed >= maxSpeed * Self.nearFastest
        let knowsItsLoads = backends.records[bi].loadSeconds != nil || backends.records[bi].loadPrior != nil
        declined = nil
        guard let (c, entry) = bestJob(for: id, runningFree: runningFree, affinity: fastest) else { return nil }
        if takes(bi, id, c, entry, fastest: fastest, knowsItsLoads: knowsItsLoads, runningFree: runningFree) {
            return (c, entry)
        }
        // Left to others: the backend's other classes in the same order (best head first).
        // Leaving a class changes no other class's head or eligibility.
        for (other, head) in otherHeads(bi, except: c, runningFree: runningFree, affinity: fastest)
        where takes(bi, id, other, head, fastest: fastest, knowsItsLoads: knowsItsLoads, runningFree: runningFree) {
            return (other, head)
        }
        return nil
    }

    /// Whether backend `id` (index `bi`) takes job `entry` of class `c` (`pickJob`): a method, not
    /// a nested function, as one that captures `self` copies the whole coordinator per call.
    mutating func takes(
        _ bi: Int, _ id: BackendID, _ c: Int, _ entry: QueueEntry, fastest: Bool, knowsItsLoads: Bool, runningFree: Bool
    ) -> Bool {
        if fastest {
            let m = classes[c].modelID
            let compare =
                m >= 0 && !backends.records[bi].loadedIDs.contains(m)
                && (classes[c].loadedCapable == 0 ? knowsItsLoads : jobs[entry.job].declinedSince != nil)
            // A backend holding back what other queued jobs need (a model they name, or it
            // alone can run them) compares too while other backends are free (at most
            // `tieScanLimit`): an equally fast one may take this job and leave it to them
            // (`admits`).
            // Only its overqueue slot free, it is not the soonest by speed alone: another free
            // backend whose running slot frees sooner may finish the job first (looked for
            // among the free backends while they are few, as for ties), and then it leaves
            // the job to that one.
            if !compare && !(reserves(bi, for: c) && freeTiePeer(bi, for: c)) {
                guard !runningFree, let peer = freeSoonerPeer(bi, for: c, entry) else { return true }
                return !leaveToFreePeer(id, c, entry, peer)
            }
        }
        return admits(bi, id, c, entry)
    }

    /// The eligible heads of the backend's classes other than `c`, gathered once, best first
    /// (priority, owner round, queue order), without those a held job outranks (`heldBar`).
    mutating func otherHeads(_ bi: Int, except c: Int, runningFree: Bool, affinity: Bool) -> [(c: Int, head: QueueEntry)] {
        var heads: [(c: Int, head: QueueEntry)] = []
        let bar = heldBar(bi, runningFree: runningFree)
        for other in backends.records[bi].classes where other != c {
            if let head = eligibleHead(other, bi, runningFree: runningFree, affinity: affinity), head < bar {
                heads.append((other, head))
            }
        }
        heads.sort { $0.head < $1.head }
        return heads
    }

    /// How far past the model's readiness a backfill may run, as a fraction of the idle time it
    /// fills (`backfill`): a quarter moves no scenario of the routing suite; a half or the whole
    /// moved some up and some down.
    static let backfillOverrun = 0.25

    /// Backfilling a model load: the backend must load the model of class `c` before it can run
    /// the job it should take. The load starts now, and meanwhile the free slot takes another job
    /// that needs no load there, if the expected-completion rule admits it here (no backend
    /// finishes it sooner, so it would otherwise wait for this one) and it is expected to run
    /// past the model's readiness by no more than `backfillOverrun` of the idle time it fills: the
    /// job waiting for the model then starts at most that much later, and the slot did not sit
    /// through the load.
    /// (Ending strictly before the model was ready left a slot idle through a 0.64 s load to spare
    /// its job 0.085 s: an outside scheduling check on the real daemon.) The job waiting for the
    /// model is bound once nothing more fits. Best job first (priority, owner round, queue order).
    mutating func backfill(_ id: BackendID, loadingFor c: Int, runningFree: Bool) -> (Int, QueueEntry)? {
        // Most jobs need no model or have it loaded: decided before anything is looked up.
        guard policy.routing == .expectedCompletion, classes[c].modelID >= 0, let bi = backends.index(id),
            modelReady(bi, c) != nil, let model = classes[c].model
        else { return nil }
        requestLoad(id, model, force: false, .job)
        guard let ready = modelReady(bi, c) else { return nil }
        let from = availableAt(bi)
        // A job whose length is only a guess fits a running slot free now while the model loads:
        // idle time for sure. Not an overqueue slot, which frees when a running job ends: a guess
        // there may fill nothing and only delay the job waiting for the model (a plain video in
        // the overqueue slot of a backend whose running job outlasted the load held three `sdxl`
        // jobs back 4 s: an outside check, cold seed 71).
        let idle = runningFree && ready > from + Self.timeEpsilon
        // How late a filler may end: past the model's readiness by `backfillOverrun` of the idle
        // time it fills.
        let limit = ready + Self.backfillOverrun * (ready - from) + Self.timeEpsilon
        // A job already on the backend ends as the model lands or a little after, as a filler
        // may (one bound a moment ago, on a backend with more than one slot): its slot is the one
        // the job waiting for the model takes, without idling, so this free slot is no idle time
        // of the load and takes the best other job, as any free slot would. Else a later short
        // job passes an earlier long one (an outside check on the real daemon, warm seed 29: two
        // images of a later batch filled both slots of a backend loading `flux` for 1 s, and the
        // videos of the earlier batch, which only it ran, waited). A job ending sooner leaves its
        // slot idle until the model lands: that time is still to fill.
        let covered = runningFree && jobEnds(bi, from: max(ready, from + Self.timeEpsilon), by: limit)
        for (other, head) in otherHeads(bi, except: c, runningFree: runningFree, affinity: false)
        where modelReady(bi, other) == nil
            && (covered || (idle && !estimates.shown(Int(head.estimate)) && !freeRunningPeer(bi, for: other))
                || from + expectedSeconds(bi, Int(head.estimate)) <= limit)
            && admits(bi, id, other, head, backfilling: true)
        {
            return (other, head)
        }
        return nil
    }

    /// Whether a job bound to the backend at `bi` (started or not) is expected to end from
    /// `start` to `limit`.
    func jobEnds(_ bi: Int, from start: Double, by limit: Double) -> Bool {
        !backends.records[bi].jobs.isEmpty && expectedSchedule(bi).ends.contains { $0 >= start - Self.timeEpsilon && $0 <= limit }
    }

    /// Whether another free backend with a running slot free can run class `c` now: a guessed
    /// filler leaves the job to it (looked for while 2 to `tieScanLimit` backends are free; with
    /// more, one is assumed to exist). With nothing known the two look alike, and the filler
    /// would keep the job from an idle backend for as long as it runs (an outside check, cold
    /// seed 59: a plain image filled a slow backend's `sdxl` load while a fast one idled, and the
    /// `sdxl` image waited 5 s on a third; 1.0 to 1.43). A peer known to be slower (both speeds
    /// known, its under `nearFastest` of this one's) does not count: the job would end later
    /// there (small-family seed 223 knowing speeds: an `sdxl` image waited behind a `flux` load on
    /// the fast backend that had `sdxl` loaded while a 2.7x slower one idled, 1.4 to 1.2).
    func freeRunningPeer(_ bi: Int, for c: Int) -> Bool {
        guard free.count > 1 else { return false }
        guard fewFree else { return true }
        let id = backends.records[bi].id
        let known = speedSource(bi).source != .assumed
        let speed = backends.records[bi].speed
        for t in free where t != id && classes[c].capable.contains(t) {
            if let ti = backends.index(t), backends.records[ti].routable(now),
                backends.records[ti].jobs.count < backends.records[ti].slots,
                !(known && speedSource(ti).source != .assumed && backends.records[ti].speed < speed * Self.nearFastest)
            {
                return true
            }
        }
        return false
    }

    /// The most backends holding jobs bound and not started that `backfillBySteal` looks through
    /// (it compares each of their jobs): beyond it, a decision would grow with the fleet, and a
    /// large fleet's queue usually has a job to fill the slot.
    static let backfillStealScan = 16

    /// Backfilling a load with a job bound elsewhere: `backfill` found no queued job to run in the
    /// free running slot while the model of class `c` loads (the load is under way), so the slot
    /// takes a job bound to another backend and not started there, that needs no load here, fits
    /// the load's idle time as a backfill does (`backfillOverrun`), and is expected to end here
    /// sooner than there (by more than 5% of its duration here): it moves (`moveStolen`), and the
    /// job waiting for the model stays queued and is bound when a slot frees. Of such jobs, the
    /// one that gains most (then the lowest backend id, then the lowest job id). Otherwise false:
    /// the job waiting for the model is bound and holds the slot through the load, and work
    /// stealing could later put a job behind it (an outside check on the real daemon: a plain
    /// image moved from an overqueue slot to wait 5 s behind a job loading its model, where it
    /// could have run during the load, 1.43).
    mutating func backfillBySteal(_ id: BackendID, loadingFor c: Int) -> Bool {
        guard policy.routing == .expectedCompletion, !stealable.isEmpty, stealable.count <= Self.backfillStealScan,
            classes[c].modelID >= 0,
            let bi = backends.index(id), let ready = modelReady(bi, c)
        else { return false }
        let from = availableAt(bi)
        guard ready > from + Self.timeEpsilon else { return false }
        let limit = ready + Self.backfillOverrun * (ready - from) + Self.timeEpsilon
        var pick: (gain: Double, victim: BackendID, job: JobID)?
        for v in stealable where v != id {
            guard let vi = backends.index(v) else { continue }
            var ends: [Double]?
            for (k, job) in backends.records[vi].jobs.enumerated() where backends.records[vi].jobStartedAt[k] < 0 {
                guard let j = jobs.index(job), jobs[slot: j].state == .bound, jobs[slot: j].cancelRequestedAt == nil,
                    jobs[slot: j].movedAt != now
                else { continue }
                let jc = jobs[slot: j].classIndex
                guard classes[jc].capable.contains(id), modelReady(bi, jc) == nil else { continue }
                let p = expectedSeconds(bi, jobs[slot: j].estimateIndex)
                // A length that is only a guess fits, as for a queued filler (`backfill`).
                guard from + p <= limit || !estimates.shown(jobs[slot: j].estimateIndex) else { continue }
                if ends == nil { ends = expectedSchedule(vi).ends }
                let gain = ends![k] - (from + p)
                guard gain > 0.05 * p + Self.timeEpsilon else { continue }
                if let best = pick,
                    (gain, -v.rawValue, -Int64(job.rawValue)) <= (best.gain, -best.victim.rawValue, -Int64(best.job.rawValue))
                {
                    continue
                }
                pick = (gain, v, job)
            }
        }
        guard let pick else { return false }
        moveStolen(pick.job, from: pick.victim, to: id)
        return true
    }

    /// Late binding across a model load: only an overqueue slot of the backend is free, and the
    /// job of class `c` it would take needs a model the backend is not expected to have loaded
    /// when its next running slot frees. Bound now, the job would hold that running slot while
    /// the load runs; left queued, the slot may run other work meanwhile (a job the gate releases
    /// onto it, or one that needs no load) and the job is bound when its model lands, here or
    /// wherever it would finish sooner by then (`dispatch` starts the load now if the job is
    /// expected to finish first here: `loadIfFirst`).
    func waitsPastSlot(_ id: BackendID, _ c: Int) -> Bool {
        guard policy.routing == .expectedCompletion, classes[c].modelID >= 0, let bi = backends.index(id),
            let ready = modelReady(bi, c)
        else { return false }
        return ready > availableAt(bi) + Self.timeEpsilon
    }

    /// Starts the load of class `c`'s model on the backend if its head `entry` is expected to
    /// finish first there (`admits`, which leaves the job to the others otherwise).
    mutating func loadIfFirst(_ id: BackendID, _ c: Int, _ entry: QueueEntry) {
        guard let model = classes[c].model, let bi = backends.index(id),
            backends.records[bi].loadRequested[classes[c].modelID] == nil, admits(bi, id, c, entry)
        else { return }
        requestLoad(id, model, force: false, .job)
    }

    /// What an overqueue slot takes instead of a job that waits past it for a load
    /// (`waitsPastSlot`): the best other job that can start when the running slot frees (no
    /// model to load, or one loaded by then) and that the expected-completion rule admits here.
    /// Jobs passed over that wait past the slot for a load have it started (`loadIfFirst`).
    mutating func overqueueInstead(_ id: BackendID, of c: Int) -> (Int, QueueEntry)? {
        guard let bi = backends.index(id) else { return nil }
        let from = availableAt(bi)
        for (other, head) in otherHeads(bi, except: c, runningFree: false, affinity: true) {
            if let ready = modelReady(bi, other), ready > from + Self.timeEpsilon {
                loadIfFirst(id, other, head)
            } else if admits(bi, id, other, head) {
                return (other, head)
            }
        }
        return nil
    }

    /// Loading ahead of a job the held bar keeps out: while a held job keeps the backend's
    /// overqueue slot from the jobs it outranks (`heldBar`), the best of those jobs that needs a
    /// model this backend must load, and that no capable backend is expected to finish sooner,
    /// has the load started now (`load_model`), so that when a running slot frees the model is
    /// loaded or on its way. The job itself stays queued.
    mutating func prefetchUnderBar(_ id: BackendID) {
        guard policy.routing == .expectedCompletion, gateClosed, let bi = backends.index(id) else { return }
        let bar = heldBar(bi, runningFree: false)
        if bar.isEmpty { return }
        var best: (c: Int, head: QueueEntry)?
        for c in backends.records[bi].classes where classes[c].modelID >= 0 && !heads[c].isEmpty && !classHeld(c) {
            let m = classes[c].modelID
            guard !backends.records[bi].loadedIDs.contains(m), backends.records[bi].loadRequested[m] == nil,
                let head = cleanHead(c), !(head < bar)
            else { continue }
            if let b = best, !(head < b.head) { continue }
            best = (c, head)
        }
        guard let (c, head) = best, let model = classes[c].model else { return }
        let e = Int(head.estimate)
        let mine = expectedCompletion(bi, c, e)
        let margin = Self.timeEpsilon
        for t in classes[c].capable where t != id {
            guard let ti = backends.index(t), backends.records[ti].routable(now) else { continue }
            if expectedCompletion(ti, c, e) < mine - margin { return }
        }
        requestLoad(id, model, force: false, .ahead)
    }

    /// Hedging a model load: a backend left idle (nothing to take or steal) starts loading the
    /// model that a job bound elsewhere waits for, when it offers the model and could run the job
    /// no later by the estimates, counting its own load as nothing while its load time is a
    /// guess (idle, it loses nothing by finding out; RoutingSuite seed 66). Load times are
    /// guesses until measured (the default, or a load running past its expected end); if this
    /// load lands first, the job moves here (work stealing: a job waiting for a load is moved
    /// like a running one). Each job is hedged at most `hedgeLoads` times; the best gain first,
    /// then the lowest job id.
    ///
    /// `behind: false` hedges jobs waiting for a load elsewhere, before the backend looks for a
    /// backup run; `behind: true`, after it found none, jobs waiting behind others on a backend
    /// whose slots are all running (at most `backfillStealScan` such backends looked at).
    /// Small-fleet cold seed 612: two `sdxl` images queued behind each other on the one backend
    /// with `sdxl` loaded, three times slower than two idle backends that offered `sdxl` with a
    /// guessed load time (2.25 to 1.25). Such a hedge does not keep the backend from copying
    /// (`LoadRequest.forAnother`): the job may start where it is before the load lands.
    mutating func hedgeLoad(_ id: BackendID, behind: Bool) {
        guard policy.routing == .expectedCompletion, policy.hedgeLoads > 0, policy.workStealing,
            behind ? !stealable.isEmpty && backupOn[id] == nil : !loadingModels.isEmpty,
            let ti = backends.index(id), backends.records[ti].jobs.isEmpty
        else { return }
        let t = now.seconds
        var pick: (gain: Double, job: JobID, model: String)?
        // The job at `k` of the backend at `vi`, expected to end `theirs` there, worth a load here?
        func consider(_ vi: Int, _ k: Int, theirs: () -> Double) {
            let job = backends.records[vi].jobs[k]
            guard let j = jobs.index(job), Int(jobs[slot: j].hedges) < policy.hedgeLoads,
                jobs[slot: j].cancelRequestedAt == nil
            else { return }
            let c = jobs[slot: j].classIndex
            let m = classes[c].modelID
            guard m >= 0, let model = classes[c].model, classes[c].capable.contains(id),
                !backends.records[ti].loadedIDs.contains(m), backends.records[ti].loadRequested[m] == nil
            else { return }
            let e = Int(backends.records[vi].jobEstimate[k])
            // Its own load time a guess: idle, it has nothing to lose by finding out.
            let mine = (loadTimeGuessed(ti) ? t : (modelReady(ti, c) ?? t)) + expectedSeconds(ti, e)
            let gain = theirs() - mine
            guard gain >= -Self.timeEpsilon else { return }
            if let best = pick, (gain, -Int(job.rawValue)) <= (best.gain, -Int(best.job.rawValue)) { return }
            pick = (gain, job, model)
        }
        for v in loadingModels where v != id && !behind {
            guard let vi = backends.index(v) else { continue }
            for k in backends.records[vi].jobs.indices {
                let readyAt = jobReady(vi, k)
                guard readyAt > t else { continue }
                consider(vi, k) { readyAt + expectedSeconds(vi, Int(backends.records[vi].jobEstimate[k])) }
            }
        }
        // A job waiting behind others, on a backend whose slots are all running: bounded like a
        // backfill's look at them (`backfillStealScan`).
        if behind, stealable.count <= Self.backfillStealScan {
            for v in stealable where v != id && !loadingModels.contains(v) {
                guard let vi = backends.index(v) else { continue }
                var ends: [Double]?
                for k in backends.records[vi].jobs.indices where backends.records[vi].jobStartedAt[k] < 0 {
                    consider(vi, k) {
                        if ends == nil { ends = expectedSchedule(vi).ends }
                        return ends![k]
                    }
                }
            }
        }
        guard let pick else { return }
        jobs[pick.job].hedges += 1
        requestLoad(id, pick.model, force: false, .hedge, behind: behind)
    }

    /// How many of the models queued jobs needed most recently `prefetchModel` chooses from.
    static let recentModelsKept = 8

    /// A job of class `c`, which needs a model, was queued: its model is now the most recently
    /// needed.
    mutating func noteNeeded(_ c: Int) {
        let m = classes[c].modelID
        guard recentModels.first?.id != m, let name = classes[c].model else { return }
        if let i = recentModels.firstIndex(where: { $0.id == m }) {
            recentModels.remove(at: i)
        } else if recentModels.count == Self.recentModelsKept {
            recentModels.removeLast()
        }
        recentModels.insert((m, name), at: 0)
    }

    /// Prefetching a model: a backend left idle (nothing to take, steal, copy or hedge) with no
    /// model loaded and none loading loads the model that queued jobs needed most recently (of
    /// the last `recentModelsKept`) among those it offers, each model at most once. The optimum
    /// loads a model once a job that needs it was submitted, wherever that job runs; a backend
    /// that has nothing loaded loses nothing by it (no model is evicted for it), and the next
    /// job that needs the model there does not wait for its load (small-fleet seed 593 knowing
    /// everything: an idle backend two and a half times faster than the others, with a 4 s
    /// `sdxl` load, loaded `sdxl` only when an `sdxl` video came at 6 s, long after an `sdxl`
    /// image at 0 s, and the video ended at 12 s; loaded at 1 s, it ends at 8.67 s, the
    /// optimum). The load is no hedge for a job (`forAnother` is false): the backend copies and
    /// takes jobs meanwhile.
    mutating func prefetchModel(_ id: BackendID) {
        guard policy.prefetchModels, policy.routing == .expectedCompletion, !recentModels.isEmpty, backupOn[id] == nil,
            let bi = backends.index(id), backends.records[bi].jobs.isEmpty, backends.records[bi].loaded.isEmpty,
            backends.records[bi].loadRequested.isEmpty
        else { return }
        for (m, name) in recentModels
        where backends.records[bi].available.contains(name) && !backends.records[bi].prefetched.contains(m) {
            backends[id].prefetched.append(m)
            requestLoad(id, name, force: false, .prefetch)
            return
        }
    }

    /// Backfilling a load with a backup run: the job of class `c` that a one-slot backend should
    /// take must wait for its model, and neither a queued job (`backfill`) nor one bound elsewhere
    /// (`backfillBySteal`) fills the slot meanwhile. Bound now, it would hold the slot idle until
    /// the model lands. Instead the backend runs a backup of a running job (`startBackup`), one
    /// that fits the load's idle time as a backfill does (`backfillOverrun`; a copy whose length
    /// is a guess, on a backend of assumed speed, fits whatever it is guessed at; none that needs
    /// a model loaded), and the job stays queued: another backend may take it meanwhile, and here
    /// it is bound once the model is loaded, when the backup gives way or, expected to finish
    /// first, becomes the binding (`promoteAhead`). True while such a backup runs and the model
    /// is still loading. Small-fleet cold seed 135: the local backend held its slot idle 1.5 s to
    /// 3 s for a `flux` image that then moved to a backend with `flux` loaded, while a video it
    /// could copy ran on a backend twice as slow (1.56 to 1.22). Only one slot: with more, the
    /// job takes one and the others stay free for what comes.
    mutating func copiesThroughLoad(_ id: BackendID, _ c: Int) -> Bool {
        // Most jobs need no model load, and most of the time nothing could be copied.
        guard classes[c].modelID >= 0, policy.routing == .expectedCompletion, policy.backupRuns > 0,
            !stragglers.isEmpty || (policy.speculativeBackups && !copyable.isEmpty) || !backupOn.isEmpty,
            let bi = backends.index(id), backends.records[bi].jobs.isEmpty, backends.records[bi].slots == 1,
            let ready = modelReady(bi, c), ready > now.seconds + Self.timeEpsilon
        else { return false }
        if backupOn[id] != nil { return true }
        let t = now.seconds
        startBackup(id, fitBefore: ready + Self.backfillOverrun * (ready - t) + Self.timeEpsilon)
        return backupOn[id] != nil
    }

    /// A backend this close to the fastest ready speed (as a fraction of it) counts as the fastest
    /// in `pickJob`: measured speeds of identical GPUs differ by a percent or two (the timing of
    /// each job varies), and without the margin every backend but one would compare each job with
    /// the whole class. A job so taken finishes at most about 5% later than on the fastest.
    static let nearFastest = 0.95

    /// Work stealing under the routing rule in force.
    mutating func stealInto(_ id: BackendID, runningFree: Bool) -> Bool {
        switch policy.routing {
        case .leastLoaded: runningFree && steal(into: id)
        case .expectedCompletion: stealSooner(into: id)
        }
    }

    /// The best queued job this backend may take now, or nil. `affinity`: skip classes whose model
    /// this backend would have to load when that does not pay off (aggregate rule).
    mutating func bestJob(for id: BackendID, runningFree: Bool, affinity: Bool = true) -> (Int, QueueEntry)? {
        let bi = backends.index(id)!
        longerFirst = nil
        var best: (Int, QueueEntry)?
        for c in backends.records[bi].classes {
            if let current = best, !(heads[c] < current.1) { continue }
            guard let head = eligibleHead(c, bi, runningFree: runningFree, affinity: affinity) else { continue }
            if let current = best, !(head < current.1) { continue }
            best = (c, head)
        }
        guard let current = best else { return nil }
        let bar = heldBar(bi, runningFree: runningFree)
        if !(current.1 < bar) { return nil }
        if current.1.seq < shownAt, policy.routing == .expectedCompletion, backends.records[bi].classes.count > 1 {
            return longestOfBatch(current, bi, runningFree: runningFree, affinity: affinity, bar: bar)
        }
        return best
    }

    /// A batch's jobs join the queue longest first by what was expected when it was accepted
    /// (`queueOrder`). Of the backend's other heads, those of the same batch and priority shown
    /// since to take over `longerBy` times as long as `best` (at speed 1.0; both durations shown,
    /// `Estimates.shown`: measured, configured, announced, or shown by progress or an overrun, as
    /// a guess says nothing about which is longer) that the backend may take (eligible, not
    /// outranked by a held job: `bar`): the longest of them is taken instead (ties: the first in
    /// queue order), in `best`'s place. `longerFirst` notes the exchange, made when the job is
    /// bound (`takePlace`): it takes `best`'s round and sequence, `best` its own, so the owner
    /// takes one turn as before and no other owner's job is passed. Only for a `best` queued
    /// before a class's duration was last shown for the first time (`shownAt`): one queued after
    /// was ordered knowing it. (RoutingSuite seed 214: a video queued behind an image of its
    /// batch, both guessed alike, took the fast backend's slot after the image and ended 3.75 s
    /// later than it could have.)
    mutating func longestOfBatch(
        _ best: (Int, QueueEntry), _ bi: Int, runningFree: Bool, affinity: Bool, bar: QueueEntry
    ) -> (Int, QueueEntry) {
        guard estimates.shown(Int(best.1.estimate)) else { return best }
        let batch = jobs[best.1.job].batch
        let floor = Self.longerBy * estimates.seconds(Int(best.1.estimate))
        var pick: (c: Int, head: QueueEntry, seconds: Double)?
        for c in backends.records[bi].classes where c != best.0 {
            let h = heads[c]
            guard h.negPriority == best.1.negPriority, h.estimate != best.1.estimate, !h.isEmpty, h < bar else { continue }
            let seconds = estimates.seconds(Int(h.estimate))
            guard seconds > floor, estimates.shown(Int(h.estimate)) else { continue }
            if let p = pick, seconds < p.seconds || (seconds == p.seconds && !(h < p.head)) { continue }
            guard jobs.state(h.job) != nil, jobs[h.job].batch == batch,
                let head = eligibleHead(c, bi, runningFree: runningFree, affinity: affinity), head == h
            else { continue }
            pick = (c, head, seconds)
        }
        guard let pick else { return best }
        longerFirst = (best.0, best.1, pick.head)
        return (pick.c, pick.head)
    }

    /// A job taken ahead of its batch's `passed` (`longestOfBatch`) is bound: it takes `passed`'s
    /// round and sequence, and `passed` (still the head of its class) takes its own.
    mutating func takePlace(_ c: Int, passed: QueueEntry, taken: QueueEntry) {
        guard classes[c].queue.min == passed else { return }
        classes[c].queue.removeMin()
        var moved = passed
        moved.round = taken.round
        moved.seq = taken.seq
        classes[c].queue.insert(moved)
        heads[c] = classes[c].queue.min ?? .empty
        jobs[passed.job].round = taken.round
        jobs[passed.job].seq = taken.seq
        jobs[taken.job].round = passed.round
        jobs[taken.job].seq = passed.seq
    }

    /// How much longer a job of a batch must be shown to take than the one ahead of it to go
    /// first (`longestOfBatch`).
    static let longerBy = 1.25

    /// When only an overqueue slot of the backend at `bi` is free (expected completion, gate
    /// closed): the best head of its held classes. A held job never waits in an overqueue slot,
    /// and no job it outranks takes the slot from it: it takes the next running slot instead.
    /// `.empty` (outranking nothing) otherwise.
    mutating func heldBar(_ bi: Int, runningFree: Bool) -> QueueEntry {
        guard !runningFree, policy.routing == .expectedCompletion, gateClosed else { return .empty }
        var bar = QueueEntry.empty
        for c in backends.records[bi].classes where heads[c] < bar && classHeld(c) {
            if let head = cleanHead(c), head < bar { bar = head }
        }
        return bar
    }

    /// The head of class `c` if the backend at `bi` may take it now: none while the class is
    /// held and only an overqueue slot is free; none when it would have to load the class's
    /// model and that does not pay off (`affinity`, the aggregate rule).
    mutating func eligibleHead(_ c: Int, _ bi: Int, runningFree: Bool, affinity: Bool) -> QueueEntry? {
        var head = heads[c]
        if head.isEmpty { return nil }
        if !runningFree && classHeld(c) { return nil }  // held jobs never wait in an overqueue slot
        if classes[c].dead > 0 {
            guard let clean = cleanHead(c) else { return nil }
            head = clean
        }
        let m = classes[c].modelID
        if affinity, m >= 0, classes[c].loadedCapable > 0, !backends.records[bi].loadedIDs.contains(m),
            !loadPaysOff(bi, estimate: Int(head.estimate), model: m),
            // A job a backend with the model left to faster ones is not left again here.
            jobs[head.job].declinedSince == nil
        {
            if runningFree { noteDeclinedHedge(bi, c, head) }
            return nil
        }
        return head
    }

    /// The head of a class queue, dropping entries of jobs that left the queue without being popped.
    mutating func cleanHead(_ c: Int) -> QueueEntry? {
        guard classes[c].dead > 0 else { return classes[c].queue.min }
        while let head = classes[c].queue.min {
            if let s = jobs.state(head.job), s == .queued || s == .gated { return head }
            classes[c].queue.removeMin()
            classes[c].dead -= 1
            heads[c] = classes[c].queue.min ?? .empty
        }
        return nil
    }

    /// Among backends as loaded as `e` (same locality), one that already has the class's model.
    /// Looks at the top of the candidate heap only (where the least loaded candidates sit): in a
    /// burst with thousands of equal candidates a full scan per binding would cost more than the
    /// tie-break is worth.
    func loadedPeer(for c: Int, instead e: Candidate, in heap: Heap<Candidate>) -> BackendID? {
        let m = classes[c].modelID
        guard m >= 0, !backends[e.id].loadedIDs.contains(m), heap.count > 0 else { return nil }
        let held = classHeld(c)
        var best: Candidate?
        for other in heap.unordered.prefix(4) where other.id != e.id && other.sameTier(e) && other.speed == e.speed {
            guard let i = backends.index(other.id), backends.records[i].loadedIDs.contains(m),
                backends.records[i].inFree, classes[c].capable.contains(other.id), candidate(other.id) == other,
                !held || other.inFlight < other.slots
            else { continue }
            if best == nil || other < best! { best = other }
        }
        return best?.id
    }

    /// The aggregate model-affinity rule: send a job to the backend at `bi`, which must load its
    /// model first, when the load and the job take less than the backends that have the model
    /// need for the jobs waiting for it (at the fastest speed under expected completion; the
    /// load is this backend's own estimate there, the fleet's under the least-loaded rule).
    func loadPaysOff(_ bi: Int, estimate: Int, model: Int32) -> Bool {
        guard policy.modelAffinity else { return true }
        let load = modelLoad[Int(model)]
        guard load.slots > 0 else { return true }
        let leastLoaded = policy.routing == .leastLoaded
        let jobSeconds =
            leastLoaded
            ? estimates.jobSeconds[estimate] ?? defaultJobSeconds
            : estimates.seconds(estimate) / maxSpeed
        let loadSeconds =
            leastLoaded ? fleetLoadSeconds(model) : expectedLoadSeconds(bi, model)
        let backlog = load.inFlight + queuedByModel[Int(model)]
        let rounds = (backlog + load.slots - 1) / load.slots
        return loadSeconds * policy.affinityMargin + jobSeconds < Double(rounds) * jobSeconds
    }

    /// Work stealing: an idle backend takes the most recently bound job that a saturated backend
    /// has not started, revoking the old lease.
    mutating func steal(into thief: BackendID) -> Bool {
        let t = backends[thief]
        var pick: (victim: BackendID, job: JobID, inFlight: Int, slots: Int)?
        for v in stealable where v != thief {
            let vb = backends[v]
            guard vb.running >= vb.slots else { continue }
            if let p = pick {
                let mine = vb.jobs.count * p.slots, theirs = p.inFlight * vb.slots
                if mine < theirs || (mine == theirs && v > p.victim) { continue }
            }
            for job in vb.jobs.reversed()
            where jobs[job].state == .bound && jobs[job].cancelRequestedAt == nil && jobs[job].movedAt != now {
                let j = jobs[job]
                guard classes[j.classIndex].capable.contains(thief) else { continue }
                let m = classes[j.classIndex].modelID
                if m >= 0, !t.loadedIDs.contains(m), policy.modelAffinity {
                    // Stolen work waits at least one job on the victim; loading must beat that.
                    let jobSeconds = estimates.jobSeconds[j.estimateIndex] ?? defaultJobSeconds
                    let loadSeconds = fleetLoadSeconds(m)
                    guard loadSeconds * policy.affinityMargin < jobSeconds else { continue }
                }
                pick = (v, job, vb.jobs.count, vb.slots)
                break
            }
        }
        guard let pick else { return false }
        moveStolen(pick.job, from: pick.victim, to: thief)
        return true
    }

    /// A job back in the queue, its ended attempts with it: requeued, or revoked and about to be
    /// bound again at once (moved, or a backup won), so that a crash before the job ends keeps the
    /// revoked attempt (`/v1/jobs/{id}` lists every attempt in either life).
    mutating func persistRequeued(_ id: JobID) {
        guard policy.persistChanges else { return }
        out.append(
            .persist(
                .jobRequeued(job: id, attempt: jobs[id].attempt, lostAttempts: jobs[id].lostAttempts, history: jobs[id].history)))
    }

    /// Work stealing's one move: revoke the job's lease on `victim` (a `revoked` event naming it),
    /// then bind it to `thief` under a new lease.
    mutating func moveStolen(_ job: JobID, from victim: BackendID, to thief: BackendID) {
        let lease = jobs[job].lease!
        jobs[job].movesAtThatInstant = jobs[job].movedAt == now ? jobs[job].movesAtThatInstant + 1 : 1
        jobs[job].movedAt = now
        if jobs[job].state == .running, let started = jobs[job].history.last?.startedAt, started < now {
            jobs[job].movedWhileRunning += 1
            // The run it leaves may show its backend slower than thought.
            if let left = outranSample(job) { learnOutrun(left.backend, left.estimate, worked: left.seconds) }
        }
        out.append(.revoke(job: job, backend: victim, lease: lease))
        unbind(job, outcome: .revoked)
        counters.stolen += 1
        jobs.setState(job, .queued)
        jobs[job].backend = nil
        jobs[job].lease = nil
        persistRequeued(job)
        emit(jobs[job], .revoked, backend: victim)
        out.append(.observe(.stolen(job, from: victim, to: thief)))
        bind(job, to: thief, fromQueue: false)
    }
}

/// A backend with a free slot, ordered as the router offers it jobs: least loaded (in flight /
/// slots), faster (expected-completion rule only), local before remote, higher configured
/// priority, lower id.
struct Candidate: Comparable {
    var inFlight: Int
    var slots: Int
    var speed: Double
    var isLocal: Bool
    var priority: Int
    var id: BackendID

    static func < (a: Candidate, b: Candidate) -> Bool {
        let l = a.inFlight * b.slots, r = b.inFlight * a.slots
        if l != r { return l < r }
        if a.speed != b.speed { return a.speed > b.speed }
        if a.isLocal != b.isLocal { return a.isLocal }
        if a.priority != b.priority { return a.priority > b.priority }
        return a.id < b.id
    }

    /// Equally loaded and equally local: the model tie-break may choose between them.
    func sameTier(_ o: Candidate) -> Bool {
        inFlight * o.slots == o.inFlight * slots && isLocal == o.isLocal
    }
}
