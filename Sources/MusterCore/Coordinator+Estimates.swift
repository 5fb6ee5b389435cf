import MusterProtocol

// Estimates and expected completion times (README "Routing and the warm-up gate").
//
// A job's duration on a backend is the class estimate at speed 1.0 divided by the backend's
// speed. The class estimate is a moving average of measured durations, each multiplied by the
// speed of the backend that ran it, or before any measurement the kind's configured prior. A
// backend's speed is learned from its measured jobs against the class estimates once it has
// some, before that its configured speed, else the speed it announces, else 1.0.
extension Coordinator {
    /// The shortest measured duration (seconds) that moves a backend's learned speed. A duration
    /// is measured between the coordinator's receipt of `started` and of `completed`, so link and
    /// event-loop delays of a few milliseconds each way are part of it: below this they are a
    /// large share of the sample, and identical backends would be learned as tens of percent
    /// apart (every decision then compares with the whole class instead of taking the job at
    /// the fastest speed). Shorter jobs still feed the class's duration estimate.
    static let shortestSpeedSample = 0.05

    /// Two expected times closer than this (seconds) are equal: ties, and the tolerance of every
    /// comparison of times. Absolute, not relative to the times compared: `muster serve` gives the
    /// core wall-clock time, about 1.8e9 s, where a `Double` keeps about 0.24 µs and a sum of a
    /// few such times is off by a few of those. A margin relative to the times (1e-9 of them, as
    /// it was) was 1.8 s there: a backend expected to finish a job up to 1.8 s sooner did not
    /// count as sooner, and the daemon decided unlike the simulations, played from zero
    /// (`RoutingSuiteTests.theClockOriginDoesNotChangeADecision`).
    static let timeEpsilon = 1e-5

    /// Speeds are kept to 1% so that backends measured alike compare equal (and tie-break).
    static func quantised(_ speed: Double) -> Double {
        guard speed.isFinite, speed > 0 else { return 1 }
        return min(1000, max(0.01, (speed * 100).rounded() / 100))
    }

    /// The speed of the backend at `bi` before quantising, and where it comes from, in order of
    /// precedence: measured, configured, announced (its `speed`, else what its `job_seconds`
    /// show), projected from progress, else assumed 1.0.
    func speedSource(_ bi: Int) -> (speed: Double, source: BackendEstimates.SpeedSource) {
        let r = backends.records[bi]
        if let s = r.learnedSpeed { return (s, .measured) }
        if let s = r.configuredSpeed { return (s, .configured) }
        if let s = r.snapshot?.speed { return (s, .announced) }
        if let s = r.durationSpeed { return (s, .announced) }
        if let s = r.projectedSpeed { return (s, .projected) }
        return (1, .assumed)
    }

    /// Recomputes a backend's speed and keeps `speedCounts`/`maxSpeed` in step with it.
    mutating func recountSpeed(_ bi: Int) {
        let r = backends.records[bi]
        let speed = Self.quantised(speedSource(bi).speed)
        // The classes' indexes move it only when it leaves its band (most learned changes do not).
        let band = SpeedBand.next(speed, current: r.band)
        if band != r.band {
            for c in r.classes {
                classes[c].bySpeed.remove(r.id, band: r.band)
                classes[c].bySpeed.insert(r.id, band: band)
            }
            backends[r.id].band = band
        }
        if !r.inFleetBySpeed || speed != r.speed {
            if r.inFleetBySpeed { fleetBySpeed.remove(r.id, speed: r.speed) }
            fleetBySpeed.insert(r.id, speed: speed)
            backends[r.id].inFleetBySpeed = true
        }
        backends[r.id].speed = speed
        let counts = r.counted
        if r.speedCounted == counts && (!counts || r.countedSpeed == speed) { return }
        if r.speedCounted {
            let left = (speedCounts[r.countedSpeed] ?? 1) - 1
            speedCounts[r.countedSpeed] = left > 0 ? left : nil
        }
        if counts { speedCounts[speed, default: 0] += 1 }
        backends[r.id].speedCounted = counts
        backends[r.id].countedSpeed = speed
        maxSpeed = speedCounts.keys.max() ?? 1
    }

    /// Folds one measured duration (seconds of work, without waiting for a model) into the
    /// estimates: the class's, and the backend's learned speed when none is configured.
    mutating func learn(_ backend: BackendID, estimate e: Int, seconds x: Double) {
        guard let bi = backends.index(backend), x.isFinite, x >= 0 else { return }
        let alpha = policy.estimateSmoothing
        guard policy.routing == .expectedCompletion else {
            // The old rule averaged raw durations, whatever backend ran them.
            estimates.jobSeconds[e] = Estimates.blend(estimates.jobSeconds[e], x, alpha)
            return
        }
        var speed = backends.records[bi].speed
        // A speed is learned against what other backends measured (or a configured prior), never
        // against this backend's own earlier samples alone: a slow cold first run followed by fast
        // ones would otherwise make it look many times faster than backends not yet measured.
        let others = estimates.measuredBy[e].include(otherThan: backend)
        estimates.measuredBy[e].note(backend)
        let measured = others ? estimates.jobSeconds[e] : nil
        let reference =
            measured ?? (estimates.priorConfigured[e] ? estimates.priorSeconds[e] : nil)
            ?? estimates.announcedKind[estimates.kindOf[e]] ?? estimates.kindReference(e, excluding: backend)
        // Short durations say nothing about speed: see `shortestSpeedSample`.
        if x >= Self.shortestSpeedSample, let reference {
            let learned = Estimates.blend(backends.records[bi].learnedSpeed, reference / x, alpha)
            speed = min(1000, max(0.01, learned))
            let wasAssumed = speedSource(bi).source == .assumed
            backends[backend].learnedSpeed = speed
            let before = backends.records[bi].speed
            recountSpeed(bi)
            if wasAssumed { rescaleSoleSamples(of: backend, by: backends.records[bi].speed / before) }
            // Moved by more than a fifth: the jobs still on this backend end at other times than
            // expected, and free backends that can run them look again (one may now take a job
            // running here, or run a backup of it). (An outside check: a video on a backend
            // measured four times slower than an idle one stayed there 3 s, until a third
            // backend announced.)
            if abs(backends.records[bi].speed - before) > 0.2 * before, !backends.records[bi].jobs.isEmpty {
                routingEpoch &+= 1
                for job in backends.records[bi].jobs {
                    if let j = jobs.index(job) { wake(jobs[slot: j].classIndex) }
                }
            }
        }
        let first = estimates.jobSeconds[e] == nil
        let kindFirst = !estimates.kindMeasured[estimates.kindOf[e]]
        if first { shownAt = nextSeq }
        estimates.jobSeconds[e] = Estimates.blend(estimates.jobSeconds[e], x * speed, alpha)
        estimates.measuredKind(e, x * speed, alpha, by: backend)
        if first { rebaseGuessed(e) }
        if kindFirst { rebaseKind(of: e) }
    }

    /// A backend's speed was just learned for the first time, `ratio` times the speed it was
    /// assumed to have. What only it measured or projected so far (a class, a kind) was counted
    /// at the assumed speed: those durations at speed 1.0 are rescaled by `ratio`, so that they
    /// and the speeds learned against them later agree with the speeds learned against the
    /// reference it was just measured by. Small-fleet seed 795: backend 1 measured images at
    /// 0.5 s while assumed at speed 1.0, then learned speed 4.0 against a video another backend
    /// projected; backend 2, learning its speed against those unscaled images, came out at 0.75,
    /// slower than the backend four times slower than backend 1, which ran a video that was
    /// then not moved (4 s against 2.5 s).
    mutating func rescaleSoleSamples(of backend: BackendID, by ratio: Double) {
        guard ratio.isFinite, ratio > 0, abs(ratio - 1) > 1e-9 else { return }
        for e in estimates.jobSeconds.indices {
            if let measured = estimates.jobSeconds[e], estimates.measuredBy[e].soleSource == backend {
                estimates.jobSeconds[e] = measured * ratio
            }
            if let projected = estimates.projectedSeconds[e], estimates.projectedBy[e].soleSource == backend {
                estimates.projectedSeconds[e] = projected * ratio
            }
        }
        for k in estimates.kindSeconds.indices {
            if let kind = estimates.kindSeconds[k], estimates.kindBy[k].soleSource == backend {
                estimates.kindSeconds[k] = kind * ratio
            }
        }
    }

    /// Expected seconds of a job of estimate class `e` on the backend at record index `bi`.
    func expectedSeconds(_ bi: Int, _ e: Int) -> Double {
        estimates.seconds(e) / backends.records[bi].speed
    }

    /// Expected seconds for the backend at `bi` to load model `m` (interned id): its own measured
    /// loads, else its configured or announced load time, else the fleet's loads of that model, else
    /// the default.
    func expectedLoadSeconds(_ bi: Int, _ m: Int32) -> Double {
        backends.records[bi].loadSeconds ?? backends.records[bi].loadPrior ?? fleetLoadSeconds(m)
    }

    /// Expected seconds to load model `m` on no backend in particular: the fleet's loads of it,
    /// else the default.
    func fleetLoadSeconds(_ m: Int32) -> Double { estimates.loadSeconds[Int(m)] ?? defaultLoadSeconds }

    /// When a job of class `c` could start on the backend at `bi` as far as its model goes: now
    /// (core seconds) or later while the model is (or would be) loading; nil when it is loaded.
    /// A load running past its expected end is expected to take as long again as it overran.
    func modelReady(_ bi: Int, _ c: Int) -> Double? {
        let m = classes[c].modelID
        guard m >= 0, !backends.records[bi].loadedIDs.contains(m) else { return nil }
        let asked = backends.records[bi].loadRequested[m]?.at ?? now
        return loadEnd(bi, asked: asked.seconds, end: asked.seconds + expectedLoadSeconds(bi, m))
    }

    /// How many times a job may be moved after it ran a while (`runningToMove`): the second
    /// move corrects a first one made on a guess (a backend whose speed was assumed turned out
    /// slow too); each needs a gain over a quarter of the job, so a job never bounces for long.
    static let runningMoves: UInt8 = 2

    /// The expected end of a load asked at `asked` and first expected to end at `end`: past that,
    /// as long again as it overran. While the backend's load time is a guess (none of its loads
    /// measured, none configured or announced), a load is expected to run at least as long
    /// again as it ran so far: a guess says less the longer the load runs.
    func loadEnd(_ bi: Int, asked: Double, end: Double) -> Double {
        let t = now.seconds
        if t > asked, loadTimeGuessed(bi) {
            return max(Self.overrun(end, t), 2 * t - asked)
        }
        return Self.overrun(end, t)
    }

    /// Whether the backend's load time is a guess: none of its loads measured, none configured or
    /// announced.
    func loadTimeGuessed(_ bi: Int) -> Bool {
        backends.records[bi].loadSeconds == nil && backends.records[bi].loadPrior == nil
    }

    /// When the `k`-th job bound to the backend at `bi` can work as far as its model goes: when
    /// the load it waits for is expected to end (as long again as it overran, while it runs past
    /// that), or when the model was announced loaded.
    func jobReady(_ bi: Int, _ k: Int) -> Double {
        let r = backends.records[bi].jobReadyAt[k]
        let t = now.seconds
        // Most jobs wait for no load, and most backends load nothing.
        // A guessed load (`loadEnd`) ends no later than `2t - asked` <= `2t`: before `r/2`, `r`.
        guard r > 0, r < t || 2 * t > r && loadTimeGuessed(bi),
            !backends.records[bi].loadRequested.isEmpty,
            let j = jobs.index(backends.records[bi].jobs[k]),
            let asked = backends.records[bi].loadRequested[classes[jobs[slot: j].classIndex].modelID]?.at,
            r >= asked.seconds
        else { return r }
        return loadEnd(bi, asked: asked.seconds, end: r)
    }

    /// An expected end `end` seen at `t`: past it, as long again as it overran.
    static func overrun(_ end: Double, _ t: Double) -> Double { end < t ? t + (t - end) : end }

    /// The expected end (core seconds) of every job bound to the backend at `bi`, in the order of
    /// its `jobs`, and when a slot would be free for one more. Running jobs end after their
    /// expected duration; one already past it is expected to run as long again as it overran
    /// (estimates were too low). Bound jobs take the earliest free slot in binding order.
    /// `floors`: durations at speed 1.0 that jobs of an estimate class are known to exceed,
    /// for the jobs not started (a started job's own end follows the overrun rule instead).
    func expectedSchedule(_ bi: Int, floors: [(estimate: Int32, seconds: Double)] = []) -> (ends: [Double], available: Double) {
        let t = now.seconds
        let n = backends.records[bi].jobs.count
        let slots = backends.records[bi].slots
        let speed = backends.records[bi].speed
        func seconds(_ k: Int) -> Double {
            // Today's estimate, not the one at binding: the thief is priced with today's too.
            var p = expectedSeconds(bi, Int(backends.records[bi].jobEstimate[k]))
            for f in floors where f.estimate == backends.records[bi].jobEstimate[k] { p = max(p, f.seconds / speed) }
            return p
        }
        var slotEnds = [Double](repeating: t, count: slots)
        var ends = [Double](repeating: t, count: n)
        var used = 0
        for k in 0..<n where backends.records[bi].jobStartedAt[k] >= 0 {
            // A started job's own floor is its elapsed time: it would end now, and the jobs
            // behind it would look free to start however long it overruns. Its end follows the
            // overrun rule on today's estimate, as in `availableAt`.
            var end = startedJobEnd(bi, k) { expectedSeconds(bi, Int(backends.records[bi].jobEstimate[k])) }
            if end < t { end = t + (t - end) }
            ends[k] = end
            if used < slots {
                slotEnds[used] = end
                used += 1
            } else if let i = slotEnds.indices.min(by: { slotEnds[$0] < slotEnds[$1] }) {
                slotEnds[i] = max(slotEnds[i], end)
            }
        }
        for k in 0..<n where backends.records[bi].jobStartedAt[k] < 0 {
            let i = slotEnds.indices.min { slotEnds[$0] < slotEnds[$1] }!
            let end = max(slotEnds[i], jobReady(bi, k)) + seconds(k)
            slotEnds[i] = end
            ends[k] = end
        }
        return (ends, slotEnds.min() ?? t)
    }

    /// When the started job at position `k` of the backend at `bi` is expected to end: when its
    /// progress says (`projectFromProgress`), else `seconds` of work after it started or its
    /// model was loaded (a job that started while its model loads works once the load is over).
    @inline(__always)
    func startedJobEnd(_ bi: Int, _ k: Int, seconds: () -> Double) -> Double {
        if !backends.records[bi].projectedEnds.isEmpty,
            let end = backends.records[bi].projectedEnds[backends.records[bi].jobs[k]]
        {
            return end
        }
        return max(backends.records[bi].jobStartedAt[k], jobReady(bi, k)) + seconds()
    }

    /// When a job of class `c` (estimate `e`) would finish on the backend at `bi` if bound now.
    func expectedCompletion(_ bi: Int, _ c: Int, _ e: Int) -> Double {
        max(availableAt(bi), modelReady(bi, c) ?? 0) + expectedSeconds(bi, e)
    }

    /// `expectedSchedule(bi).available` without allocating (this runs on every binding).
    func availableAt(_ bi: Int) -> Double {
        let t = now.seconds
        let n = backends.records[bi].jobs.count
        let slots = backends.records[bi].slots
        if n < slots { return t }
        return withUnsafeTemporaryAllocation(of: Double.self, capacity: slots) { slotEnds in
            slotEnds.initialize(repeating: t)
            func earliest() -> Int {
                var i = 0
                for k in 1..<slots where slotEnds[k] < slotEnds[i] { i = k }
                return i
            }
            var used = 0
            for k in 0..<n where backends.records[bi].jobStartedAt[k] >= 0 {
                var end = startedJobEnd(bi, k) { expectedSeconds(bi, Int(backends.records[bi].jobEstimate[k])) }
                if end < t { end = t + (t - end) }
                if used < slots {
                    slotEnds[used] = end
                    used += 1
                } else {
                    let i = earliest()
                    slotEnds[i] = max(slotEnds[i], end)
                }
            }
            for k in 0..<n where backends.records[bi].jobStartedAt[k] < 0 {
                let i = earliest()
                slotEnds[i] =
                    max(slotEnds[i], jobReady(bi, k))
                    + expectedSeconds(bi, Int(backends.records[bi].jobEstimate[k]))
            }
            return slotEnds[earliest()]
        }
    }

    /// The expected-completion rule, for a free backend and the best job it may take (the head of
    /// class `c`): take it, unless the class's waiting jobs are all expected to finish sooner on
    /// other backends (counting how many each of those finishes before this one would). Declining
    /// is bounded: a job queued for `maxWaitForBetterBackend` is taken by the next free backend.
    /// `backfilling`: the job would fill this backend's slot while it loads a model for another
    /// job (`backfill`); a backend that finishes it as soon wins the tie when both speeds are
    /// known (not assumed), since a filler that overruns its estimate delays the job waiting for
    /// the model, and elsewhere it delays nothing. (Between assumed speeds a tie says nothing:
    /// yielding then made cold fleets of the routing suite worse.)
    mutating func admits(_ bi: Int, _ id: BackendID, _ c: Int, _ entry: QueueEntry, backfilling: Bool = false) -> Bool {
        let backfilling = backfilling && speedSource(bi).source != .assumed
        let e = Int(entry.estimate)
        let since = jobs[entry.job].declinedSince ?? now
        let deadline = since + policy.maxWaitForBetterBackend
        if deadline <= now { return true }
        // The decision compared with as many backends as it may (`compareLimit`): taken.
        if compareBudget <= 0 {
            runnerUp = nil
            return true
        }
        let mine = expectedCompletion(bi, c, e)
        // When this backend must load the model, a backend that has it loaded wins a tie.
        let mustLoad = modelReady(bi, c) != nil
        // When this backend holds back what other queued jobs need and this job does not (a
        // loaded model they name, or it alone can run them), a backend that holds back nothing
        // wins a tie: this one stays free for the jobs that need it.
        let holds = reserves(bi, for: c)
        // When this backend alone can run other queued jobs, taking this one delays them by its
        // length here: a backend that is not the only one for anything and finishes this job no
        // later than that counts as sooner. Whether it is (a look through its classes) is found
        // out only for a backend that finishes within that slack and no sooner.
        let slack = expectedSeconds(bi, e)
        let need = classes[c].queued
        let latestStart = deadline.seconds
        // A job with a model while the queue holds no more jobs than there are free backends (no
        // backlog competes with it for the backend it is left to): the soonest of the backends
        // that finish it sooner starts the load if it must (`loadForDeclined`), and counting goes
        // on past the waiting jobs to find that backend whatever the set's order (the bound was
        // charged for it).
        let loadsAhead = classes[c].modelID >= 0 && queuedTotal <= free.count
        // Whether a backend finishes the job sooner than this one, within the wait bound, and how
        // many of the class's jobs it finishes before this one would (`admitsSooner`); the free
        // backends this one would leave the job to, woken if it does (they may have passed over
        // the job before this one declined it: see `pickJob`).
        var tally = AdmitTally(
            bi: bi, id: id, c: c, e: e, mine: mine, slack: slack, latestStart: latestStart, need: need,
            mustLoad: mustLoad, holds: holds, backfilling: backfilling, loadsAhead: loadsAhead)
        // With a slot open now and no model to load, only a faster backend can finish the job
        // sooner: look at those alone (the class's speed index), so the decision does not grow
        // with the fleet. A busy backend (the overqueue slot) or one that must load the model
        // compares with every capable backend: availability, load times and loads under way
        // differ per backend. Counting stops once the class's waiting jobs are covered.
        let fasterOnly = !mustLoad && backends.records[bi].jobs.count < backends.records[bi].slots
        let speed = backends.records[bi].speed
        // Ties for a backend that holds something back: only free backends as fast can tie here,
        // looked up among the free ones while they are few (a saturated fleet frees one slot at a
        // time).
        let ties = (holds || backfilling) && fasterOnly && freeTiePeer(bi, for: c, any: backfilling)
        // The bound on comparisons is charged what the loops below may look at, not what they
        // did: counting stops at a point that depends on the set's order, and what a later
        // decision may still compare must not (decisions stay deterministic).
        if fasterOnly {
            // The faster backends, counted exactly (in the bands around this speed, by their
            // speeds): the charge is the set the loop compares with.
            for b in classes[c].bySpeed.bands(mayExceed: speed) {
                let members = classes[c].bySpeed.members(of: b)
                if SpeedBand.allExceed(b, speed) {
                    compareBudget -= members.count
                } else {
                    for t in members where backends.index(t).map({ backends.records[$0].speed > speed }) == true {
                        compareBudget -= 1
                    }
                }
            }
        } else {
            compareBudget -= classes[c].capable.count
        }
        let until = loadsAhead ? Int.max : need
        if fasterOnly {
            for t in classes[c].bySpeed.candidates(fasterThan: speed) {
                if tally.capacity >= until { break }
                admitsCount(&tally, t, fasterThan: speed)
            }
            if ties {
                for t in free where tally.capacity < until && classes[c].capable.contains(t) {
                    if let ti = backends.index(t), backends.records[ti].speed == speed { admitsCount(&tally, t) }
                }
            }
        } else {
            for t in classes[c].capable {
                if tally.capacity >= until { break }
                admitsCount(&tally, t)
            }
        }
        if tally.capacity < need {
            // Every backend that could finish sooner was counted.
            runnerUp = tally.second.map { (entry.job, id, $0.backend, $0.at, now) }
            return true
        }
        // Left to others: every free backend of the compared set that finishes sooner looks
        // again, whether or not counting reached it (so the wakes do not depend on the set's
        // order), found from the free backends when they are fewer.
        // The free candidates are gathered first and compared after: a nested function calling
        // `expectedCompletion`, called from these loops, copied the whole coordinator (every
        // buffer retained) on each call.
        var looked: [Int] = []
        func look(_ t: BackendID) {
            guard t != id, let ti = backends.index(t), backends.records[ti].inFree, backends.records[ti].routable(now),
                !fasterOnly || backends.records[ti].speed > speed || (ties && backends.records[ti].speed == speed)
            else { return }
            looked.append(ti)
        }
        if free.count <= classes[c].capable.count {
            for t in free where classes[c].capable.contains(t) { look(t) }
        } else if fasterOnly {
            for t in classes[c].bySpeed.candidates(fasterThan: speed) { look(t) }
            if ties { for t in free where classes[c].capable.contains(t) { look(t) } }
        } else {
            for t in classes[c].capable { look(t) }
        }
        compareBudget -= looked.count
        for ti in looked {
            let t = backends.records[ti].id
            guard !tally.wake.contains(t), admitsSooner(&tally, ti, expectedCompletion(ti, c, e)) != nil else {
                continue
            }
            tally.wake.append(t)
        }
        for t in tally.wake { dirty.insert(t) }
        if let s = tally.soonest { loadForDeclined(s.backend, c) }
        if mustLoad { noteDeclinedHedge(bi, c, entry) }
        decline(id, c, entry, deadline: deadline, runnerUp: tally.second)
        return false
    }

    /// Whether backend `ti`, expected to finish the job at `theirs`, finishes it sooner than the
    /// backend `admits` decides for, within the wait bound (a backend not expected to start it by
    /// then does not count), and if so how many of the class's jobs it finishes before that one
    /// would.
    mutating func admitsSooner(_ tally: inout AdmitTally, _ ti: Int, _ theirs: Double) -> Int? {
        let margin = Self.timeEpsilon
        guard
            theirs < tally.mine - margin
                || (theirs < tally.mine + tally.slack - margin && admitsSoleHere(&tally)
                    && !soleFor(ti, besides: tally.c))
                || (theirs <= tally.mine + margin
                    && ((tally.mustLoad && modelReady(ti, tally.c) == nil)
                        || (tally.holds && !reserves(ti, for: tally.c))
                        || (tally.backfilling && speedSource(ti).source != .assumed)))
        else {
            return nil
        }
        let p = max(expectedSeconds(ti, tally.e), 1e-3)
        guard theirs - p <= tally.latestStart else { return nil }
        return 1 + Int(min(Double(tally.need), max(0, ((tally.mine - theirs + Self.timeEpsilon) / p).rounded(.down))))
    }

    /// Whether the deciding backend alone can run other queued jobs (`soleFor`), found out once.
    mutating func admitsSoleHere(_ tally: inout AdmitTally) -> Bool {
        if let sole = tally.soleHere { return sole }
        let sole = soleFor(tally.bi, besides: tally.c)
        tally.soleHere = sole
        return sole
    }

    /// Counts backend `t` (faster than `floor`) if it finishes the job sooner (`admitsSooner`),
    /// noting the runner-up, the soonest of them and the free ones to wake.
    mutating func admitsCount(_ tally: inout AdmitTally, _ t: BackendID, fasterThan floor: Double = 0) {
        guard t != tally.id, let ti = backends.index(t), backends.records[ti].speed > floor,
            backends.records[ti].routable(now)
        else { return }
        let theirs = expectedCompletion(ti, tally.c, tally.e)
        if tally.second.map({ ($0.at, $0.backend.rawValue) <= (theirs, t.rawValue) }) != true {
            tally.second = (t, theirs)
        }
        guard let jobs = admitsSooner(&tally, ti, theirs) else { return }
        if tally.loadsAhead, tally.soonest.map({ (theirs, t.rawValue) < ($0.at, $0.backend.rawValue) }) ?? true {
            tally.soonest = (theirs, t)
        }
        if backends.records[ti].inFree { tally.wake.append(t) }
        tally.capacity += jobs
    }

    /// Noting a queued job this idle backend leaves to others (`admits`), or passes over for a
    /// backend that has its model loaded (`eligibleHead`), while it would have to load the model
    /// and its load time is a guess (none of its loads measured, configured or announced): if the
    /// backend then finds nothing to take, steal or copy, it may hedge the load
    /// (`hedgeDeclinedLoad`). A few per look, the first ones (best heads first).
    mutating func noteDeclinedHedge(_ bi: Int, _ c: Int, _ entry: QueueEntry) {
        guard policy.hedgeLoads > 0, policy.workStealing, policy.routing == .expectedCompletion,
            declinedHedges.count < Self.declinedHedgeNotes, classes[c].modelID >= 0,
            backends.records[bi].jobs.isEmpty, loadTimeGuessed(bi),
            backends.records[bi].loadRequested[classes[c].modelID] == nil
        else { return }
        declinedHedges.append((c, entry))
    }

    static let declinedHedgeNotes = 4

    /// Hedging the load of a queued job this backend left to others (`noteDeclinedHedge`), now
    /// that it found nothing to take, steal or copy: counting its own load as nothing (idle, it
    /// loses nothing by finding out, as in `hedgeLoad`), it would finish the job before any other
    /// backend is expected to (`soonestElsewhere`). The load starts (`hedge`, toward the job's
    /// `hedgeLoads`; it does not keep the backend from copying, as the job may be bound elsewhere
    /// first); the job stays queued and goes wherever it finishes first, here once the model has
    /// landed. Of the noted jobs, the one that gains most. Small-fleet cold seed 639: a held
    /// `flux` video waited 4 s for a backend three times slower than two idle ones that offered
    /// `flux` (2 s loads, guessed at 20 s), and ran there to 8 s.
    mutating func hedgeDeclinedLoad(_ id: BackendID) {
        guard !declinedHedges.isEmpty else { return }
        let notes = declinedHedges
        declinedHedges.removeAll(keepingCapacity: true)
        guard backupOn[id] == nil, let bi = backends.index(id), backends.records[bi].jobs.isEmpty else { return }
        let t = now.seconds
        var pick: (gain: Double, job: JobID, c: Int)?
        for (c, entry) in notes {
            let m = classes[c].modelID
            let e = Int(entry.estimate)
            guard backends.records[bi].loadRequested[m] == nil,
                let j = jobs.index(entry.job), jobs[slot: j].state == .queued || jobs[slot: j].state == .gated,
                Int(jobs[slot: j].hedges) < policy.hedgeLoads, let theirs = soonestElsewhere(c, e, besides: id)
            else { continue }
            let gain = theirs - (t + expectedSeconds(bi, e))
            guard gain > Self.timeEpsilon, pick.map({ gain > $0.gain }) ?? true else { continue }
            pick = (gain, entry.job, c)
        }
        guard let pick, let model = classes[pick.c].model else { return }
        jobs[pick.job].hedges += 1
        requestLoad(id, model, force: false, .hedge, behind: true)
    }

    /// A job left to backend `id` (the soonest of those expected to finish it sooner than
    /// the backend that declined it) that must load the job's model there, and would have it
    /// later than a slot, or is held by the gate (a held job never waits in an overqueue slot,
    /// where its binding would start the load; small-fleet seed 499: an `sdxl` video held for
    /// a backend yet to announce had its 1 s load asked when it was bound, a second after it
    /// was left to the backend, 1.5; now 1.0): the load starts now. The completion time that
    /// won was reckoned with the load asked now; unasked, it would start only when that backend
    /// has a slot free and looks itself, and the job would finish later than reckoned (an
    /// outside check on the real daemon, cold seed 58: a `sdxl` image left to a fast backend
    /// with both slots taken had its 4 s load asked a second later, when the slower backend had
    /// become the sooner and took it).
    /// (`requestLoad` sends nothing when the model is loaded or a load of it was asked.)
    mutating func loadForDeclined(_ id: BackendID, _ c: Int) {
        guard let model = classes[c].model, waitsPastSlot(id, c) || classHeld(c) else { return }
        requestLoad(id, model, force: false, .job)
    }

    /// Backend `id` leaves the head of class `c` to backends expected to finish it sooner: the
    /// job's wait is bounded from the first time a free backend left it (`deadline`), the class
    /// is looked at again when one of its jobs is bound elsewhere or the bound passes.
    mutating func decline(
        _ id: BackendID, _ c: Int, _ entry: QueueEntry, deadline: CoreInstant, runnerUp: (backend: BackendID, at: Double)?
    ) {
        if declined == nil, let s = runnerUp { declined = (id, entry.job, s.backend, s.at) }
        if jobs[entry.job].declinedSince == nil {
            jobs[entry.job].declinedSince = now
            routingEpoch &+= 1
        }
        classes[c].decliners.append(id)
        if classes[c].waitTimerAt.map({ $0 > deadline }) ?? true {
            classes[c].waitTimerAt = deadline
            schedule(deadline, .routeWait(c))
        }
    }

    /// The fastest backend with only its overqueue slot free leaves the head of class `c` to a
    /// free peer that finishes it sooner (`freeSoonerPeer`), which is told to look again; no
    /// comparison with the rest of the fleet (that backend is as fast as any: only a running slot
    /// that frees sooner beats it, and those are the free peers). Within the wait bound only.
    mutating func leaveToFreePeer(_ id: BackendID, _ c: Int, _ entry: QueueEntry, _ peer: (backend: BackendID, at: Double)) -> Bool {
        let deadline = (jobs[entry.job].declinedSince ?? now) + policy.maxWaitForBetterBackend
        if deadline <= now { return false }
        dirty.insert(peer.backend)
        decline(id, c, entry, deadline: deadline, runnerUp: peer)
        return true
    }

    /// How many free backends a backend that holds something back (`reserves`) looks through for
    /// an equally fast one that does not (`admits`): beyond it, ties go by the usual order.
    static let tieScanLimit = 8

    /// Whether a free backend could tie with another one and be looked for: 2 to `tieScanLimit`
    /// backends are free.
    var fewFree: Bool { free.count > 1 && free.count <= Self.tieScanLimit }

    /// Whether another free backend as fast as `bi` can run class `c` and holds nothing back (so
    /// it may win a tie with `bi`, which does: `reserves`): looked for among the free backends
    /// while there are at most `tieScanLimit`, without computing a completion time. `any`: one
    /// that holds something back counts too (a backfill yields to any peer as fast).
    func freeTiePeer(_ bi: Int, for c: Int, any: Bool = false) -> Bool {
        guard fewFree else { return false }
        let id = backends.records[bi].id, speed = backends.records[bi].speed
        for t in free where t != id && classes[c].capable.contains(t) {
            if let ti = backends.index(t), backends.records[ti].speed == speed, any || !reserves(ti, for: c) { return true }
        }
        return false
    }

    /// Whether another free backend that may take the head of class `c` now would finish it
    /// sooner than `bi`, whose running slots are all busy: looked for among the free backends
    /// while 2 to `tieScanLimit` are free (a saturated fleet frees one slot at a time and pays
    /// nothing). A peer with only its overqueue slot free may not take a job a held one
    /// outranks (`heldBar`), so it does not count then.
    mutating func freeSoonerPeer(_ bi: Int, for c: Int, _ entry: QueueEntry) -> (backend: BackendID, at: Double)? {
        guard fewFree else { return nil }
        let id = backends.records[bi].id, e = Int(entry.estimate)
        var peers: [Int] = []
        for t in free where t != id && classes[c].capable.contains(t) {
            guard let ti = backends.index(t), backends.records[ti].routable(now) else { continue }
            let runningFree = backends.records[ti].jobs.count < backends.records[ti].slots
            if runningFree || entry < heldBar(ti, runningFree: false) { peers.append(ti) }
        }
        guard !peers.isEmpty else { return nil }
        let mine = expectedCompletion(bi, c, e)
        let margin = Self.timeEpsilon
        // The soonest, ties to the lower id: the order of the free set does not decide.
        var best: (backend: BackendID, at: Double)?
        for ti in peers {
            let theirs = expectedCompletion(ti, c, e), t = backends.records[ti].id
            guard theirs < mine - margin else { continue }
            if let b = best, (b.at, b.backend.rawValue) <= (theirs, t.rawValue) { continue }
            best = (t, theirs)
        }
        return best
    }

    /// Whether backend `bi` holds back something that other queued jobs need and jobs of class
    /// `c` do not, so that an equally fast backend holding nothing back should win a tie for
    /// them: a loaded model they name (`keepsModel`), or, while 2 to `tieScanLimit` backends are
    /// free (only then can a free peer tie), being the only backend able to run a class that
    /// has queued jobs (the backend's own classes, not the queue, are looked through).
    func reserves(_ bi: Int, for c: Int) -> Bool {
        if keepsModel(bi, for: c) { return true }
        return fewFree && soleFor(bi, besides: c)
    }

    /// Whether backend `bi` is the only backend able to run a class other than `c` that has
    /// queued jobs.
    func soleFor(_ bi: Int, besides c: Int) -> Bool {
        for other in backends.records[bi].classes
        where other != c && classes[other].queued > 0 && classes[other].capable.count == 1 {
            return true
        }
        return false
    }

    /// Whether backend `bi` has loaded a model that queued jobs name and jobs of class `c` do not
    /// (`queuedByModel`: a count per model, no scan of the queue).
    func keepsModel(_ bi: Int, for c: Int) -> Bool {
        let m = classes[c].modelID
        for loaded in backends.records[bi].loadedIDs where loaded != m && queuedByModel[Int(loaded)] > 0 {
            return true
        }
        return false
    }

    /// A job started: when it reaches its expected end and still runs, it overran (`overrunDue`).
    /// Watched when that end is a guess: its class was never measured (the prior may be too
    /// low), or its backend's speed is assumed (nothing configured, announced, measured or
    /// projected it: the backend may be slower than thought). Jobs shorter than
    /// `shortestSpeedSample` are not watched (their timing is noise).
    mutating func watchOverrun(_ id: JobID, _ backend: BackendID, _ k: Int) {
        guard policy.routing == .expectedCompletion, let bi = backends.index(backend), let lease = jobs[id].lease else {
            return
        }
        let e = jobs[id].estimateIndex
        if estimates.jobSeconds[e] == nil {
            var guessed = guessedRunning.removeValue(forKey: e) ?? GuessedRunning()
            // Pruned of ended jobs when it doubled since the last pruning (amortised: a class never
            // measured may run many jobs that fail or are canceled).
            if guessed.jobs.count >= guessed.pruneAt {
                guessed.jobs.removeAll { jobs.index($0).map { jobs[slot: $0].state != .running } ?? true }
                guessed.pruneAt = max(64, 2 * guessed.jobs.count)
            }
            guessed.jobs.append(id)
            guessedRunning[e] = guessed
        } else if policy.backupRuns == 0 || speedSource(bi).source != .assumed
            || expectedSeconds(bi, e) < Self.shortestSpeedSample
        {
            return
        }
        scheduleOverrun(id, lease, bi, e, workFrom: max(now.seconds, jobReady(bi, k)))
    }

    /// Class `e` was just measured for the first time: its jobs that started under a guess expect
    /// what it is now known to take on their backends (their straggler test, `expectedAtStart`,
    /// re-based), and are watched for an overrun of that. A job that started under a prior of 10 s
    /// on a backend four times slower than the one that just measured the class at 1.5 s runs
    /// 6 s: it is a straggler, which an idle backend may run a backup of.
    /// Jobs shorter than `shortestSpeedSample` are re-based but not watched (their timing is noise).
    /// With `keep`, the jobs stay listed as running under a guess (`rebaseKind`).
    mutating func rebaseGuessed(_ e: Int, keep: Bool = false) {
        guard !guessedRunning.isEmpty, let guessed = keep ? guessedRunning[e] : guessedRunning.removeValue(forKey: e)
        else { return }
        for id in guessed.jobs {
            guard let j = jobs.index(id), jobs[slot: j].state == .running, jobs[slot: j].estimateIndex == e,
                let lease = jobs[slot: j].lease, let backend = jobs[slot: j].backend, let bi = backends.index(backend),
                let k = backends.records[bi].jobs.firstIndex(of: id)
            else { continue }
            let expected = expectedSeconds(bi, e)
            jobs[id].expectedAtStart = expected
            if expected < Self.shortestSpeedSample {
                jobs[id].overrunWatch = 0
                continue
            }
            scheduleOverrun(id, lease, bi, e, workFrom: max(backends.records[bi].jobStartedAt[k], jobReady(bi, k)))
        }
    }

    /// The kind of class `e` was just measured for the first time: the running jobs of its other
    /// classes that nothing measured, projected or configured now expect what the kind measured
    /// (`Estimates.seconds`), not the default, and are re-based and watched for an overrun of
    /// that, as in `rebaseGuessed` (they stay guessed: their own class is still unmeasured).
    /// Small-fleet seed 207 without progress: a `flux` video started at 0 s under the 10 s default
    /// on a backend three times slower than one left idle; a plain video measured the kind at
    /// 2.67 s at 3.33 s, but the `flux` video's watch stayed at 11 s, and it ran to 8 s uncopied.
    /// Not a workflow's class: a graph that runs other nodes says nothing of this one's length
    /// (as for `Estimates.kindReference`). With it, `Scripts/test-comfyui` failed once: 0.3 s
    /// core graphs measured the `workflow` kind while a 300 s graph ran on ComfyUI A, and a core
    /// job bound behind that graph on A was not moved to idle B (of the changes then, only this
    /// rule touched that run; the exact path was not traced).
    mutating func rebaseKind(of e: Int) {
        guard !guessedRunning.isEmpty else { return }
        let k = estimates.kindOf[e]
        var siblings: [Int] = []
        for other in guessedRunning.keys
        where other != e && estimates.kindOf[other] == k && estimates.jobSeconds[other] == nil
            && estimates.projectedSeconds[other] == nil && !estimates.priorConfigured[other]
            && estimates.classKeys[other].nodes.isEmpty
        {
            siblings.append(other)
        }
        // In class order, not the dictionary's: the watches' timers are then armed alike each run.
        for other in siblings.sorted() { rebaseGuessed(other, keep: true) }
    }

    /// Watches a running job at a tenth past its expected end (a job ending on time is not an
    /// overrun), strictly later than now (a timer due now would fire again within this tick).
    mutating func scheduleOverrun(_ id: JobID, _ lease: Lease, _ bi: Int, _ e: Int, workFrom: Double) {
        armOverrun(id, lease, at: workFrom + 1.1 * expectedSeconds(bi, e))
    }

    /// The job's one overrun watch, due at `at` (strictly later than now): an earlier timer for it
    /// is superseded (`overrunDue` ignores a timer that fires before the watch is due).
    mutating func armOverrun(_ id: JobID, _ lease: Lease, at: Double) {
        let due = max(at, now.seconds + 0.001)
        jobs[id].overrunWatch = due
        schedule(.seconds(due), .overrun(id, lease))
    }

    /// A running job of a class never measured ran past its expected duration: the class takes
    /// at least that long, so its prior becomes half as long again as the work seen so far (the
    /// same estimate for every backend, scaled by speed), and the job is watched again at its new
    /// expected end. Free backends that can run the class look again (a job placed on the
    /// strength of the old prior may now be moved).
    mutating func overrunDue(_ id: JobID, _ lease: Lease) {
        guard let j = jobs.index(id), jobs[slot: j].lease == lease, jobs[slot: j].state == .running,
            jobs[slot: j].overrunWatch > 0, now.seconds >= jobs[slot: j].overrunWatch - Self.timeEpsilon,
            let backend = jobs[slot: j].backend, let bi = backends.index(backend),
            let k = backends.records[bi].jobs.firstIndex(of: id)
        else { return }
        let e = jobs[slot: j].estimateIndex
        let from = max(backends.records[bi].jobStartedAt[k], jobReady(bi, k))
        let worked = now.seconds - from
        guard worked > 0 else {
            // Its model load runs past its expected end: look again once the work could have run.
            scheduleOverrun(id, lease, bi, e, workFrom: from)
            return
        }
        guard estimates.jobSeconds[e] == nil else {
            // A measured class: this backend is slower than thought (or the job long in itself).
            // A straggler once it runs past what was expected of it; idle backends that can run
            // it look again now and as it runs on (half as long again each time), since a backup
            // pays once the job has overrun by more than the copy would take.
            let expected = expectedSeconds(bi, e)
            guard expected >= Self.shortestSpeedSample else {
                jobs[id].overrunWatch = 0
                return
            }
            guard worked > expected else {
                scheduleOverrun(id, lease, bi, e, workFrom: from)
                return
            }
            _ = noteStraggler(id)
            routingEpoch &+= 1
            wake(jobs[slot: j].classIndex)
            wakeBehind(bi)
            armOverrun(id, lease, at: from + 1.5 * worked)
            return
        }
        let floor = worked * backends.records[bi].speed * 1.5
        // Running past its expected end: a straggler, which idle backends may run a backup of.
        let newStraggler = noteStraggler(id)
        let raise = floor > estimates.seconds(e)
        if raise {
            if estimates.projectedSeconds[e] == nil { shownAt = nextSeq }
            estimates.project(e, floor, by: backend, 1)
        }
        if raise || newStraggler {
            routingEpoch &+= 1
            wake(jobs[slot: j].classIndex)
            wakeBehind(bi)
        }
        scheduleOverrun(id, lease, bi, e, workFrom: from)
    }

    /// A job overran on the backend at `bi`: free backends that could take a job bound there and
    /// not started look again (`stealSooner`), not only those that can run the overrunning one.
    /// A backend that cannot run it would otherwise never learn that the jobs behind it now start
    /// later (a job shorter than `relookMinimum` arms no `relook`).
    mutating func wakeBehind(_ bi: Int) {
        for (k, job) in backends.records[bi].jobs.enumerated() where backends.records[bi].jobStartedAt[k] < 0 {
            if let j = jobs.index(job) { wake(jobs[slot: j].classIndex) }
        }
    }

    /// The least fraction of a job's work whose progress report is projected to its whole
    /// duration (`projectFromProgress`): below it, startup work says little about the rest.
    static let projectionFraction = 0.1

    /// A running job reported (`timed`) that `fraction` of its work is done. From
    /// `projectionFraction` on, its progress projects when it ends (work so far ÷ fraction, from
    /// when it started or its model was announced loaded): the backend's expected schedule uses
    /// that end instead of the class's estimate, so a job running slower or faster than
    /// estimated (an unmeasured speed, a class longer than its prior) shows before it ends.
    /// Each job's first projection also teaches: a backend whose speed nothing configured,
    /// announced or measured learns it (`projectedSpeed`) against what other backends showed for
    /// the class (`Estimates.reference`); otherwise, for a class never measured, the projection
    /// at speed 1.0 is averaged into the class's projected duration. When an end or an estimate
    /// moved by more than a fifth, free backends that can run the class look again (work
    /// stealing may move a job placed on the strength of the old estimate). While the model is
    /// still loading as far as the coordinator knows, nothing is projected. The completed job's
    /// measured duration replaces all of this.
    mutating func projectFromProgress(_ id: JobID, _ backend: BackendID, _ fraction: Double) {
        guard policy.routing == .expectedCompletion, fraction >= Self.projectionFraction, fraction < 1,
            let j = jobs.index(id), let bi = backends.index(backend),
            let k = backends.records[bi].jobs.firstIndex(of: id)
        else { return }
        let t = now.seconds
        let readyAt = jobReady(bi, k)
        guard readyAt <= t else { return }
        let workFrom = max(backends.records[bi].jobStartedAt[k], readyAt)
        let worked = t - workFrom
        guard worked > 0 else { return }
        let total = worked / fraction
        let previous =
            backends.records[bi].projectedEnds[id].map { $0 - workFrom } ?? expectedSeconds(bi, jobs[slot: j].estimateIndex)
        backends[backend].projectedEnds[id] = workFrom + total
        var changed = abs(total - previous) > 0.2 * previous
        // A new straggler: idle backends look again (they may run a backup of it).
        if total > Self.straggler * jobs[slot: j].expectedAtStart, noteStraggler(id) { changed = true }
        let e = jobs[slot: j].estimateIndex
        if !jobs[slot: j].projected {
            jobs[id].projected = true
            let r = backends.records[bi]
            let source = speedSource(bi).source
            if source == .projected || source == .assumed, let reference = estimates.reference(e, excluding: backend) {
                // Its first jobs show this backend's speed against the others'.
                let before = r.speed
                backends[backend].projectedSpeed = Estimates.blend(
                    r.projectedSpeed, reference / total, policy.estimateSmoothing)
                recountSpeed(bi)
                if backends.records[bi].speed != before { changed = true }
            } else if estimates.jobSeconds[e] == nil {
                let expected = estimates.seconds(e)
                if estimates.projectedSeconds[e] == nil { shownAt = nextSeq }
                estimates.project(e, total * r.speed, by: backend, policy.estimateSmoothing)
                if abs(estimates.seconds(e) - expected) > 0.2 * expected { changed = true }
            }
        }
        guard changed else { return }
        routingEpoch &+= 1
        wake(jobs[slot: j].classIndex)
    }

    /// The wait bound of a class passed: every free backend that can run it looks again.
    mutating func routeWaitDue(_ c: Int, _ at: CoreInstant) {
        guard c < classes.count else { return }
        if classes[c].waitTimerAt == at { classes[c].waitTimerAt = nil }
        wake(c)
    }

    /// A job of class `c` was bound: the backends that left it to others look again.
    mutating func wakeDecliners(_ c: Int) {
        guard !classes[c].decliners.isEmpty else { return }
        for d in classes[c].decliners where free.contains(d) { dirty.insert(d) }
        classes[c].decliners.removeAll(keepingCapacity: true)
    }

    /// Work stealing by expected completion: a backend with a free slot and nothing it should take
    /// from the queue revokes the bound, unstarted job that it would finish soonest before the
    /// backend holding it (by more than 5% of the job), if any.
    mutating func stealSooner(into thief: BackendID) -> Bool {
        guard let ti = backends.index(thief) else { return false }
        // Computed once a bound job could move here: with every victim's jobs started or out of
        // reach (a saturated fleet of short jobs), a free backend pays nothing for looking.
        var availableMemo: Double?
        var pick: (gain: Double, victim: BackendID, job: JobID)?
        // When to look again: a bound job not worth taking now, behind a running job that is
        // expected to end then (and that will have overrun if it still runs).
        var relook = Double.infinity
        // Past the bound on comparisons, no bound job is looked at; within it, all of them (a
        // loop cut short would depend on the set's order).
        let victims = compareBudget > 0 ? stealable : BackendSet()
        compareBudget -= victims.count
        for v in victims where v != thief {
            guard let vi = backends.index(v), backends.records[vi].running >= backends.records[vi].slots else {
                continue
            }
            // A running job past its expected duration shows that its class takes at least that
            // long (the estimate may be a prior): both sides of the comparison count with it.
            var floors: [(estimate: Int32, seconds: Double)] = []
            let t = now.seconds
            for k in backends.records[vi].jobs.indices where backends.records[vi].jobStartedAt[k] >= 0 {
                // Work time: a job waiting for its model to load has not overrun.
                let elapsed = t - max(backends.records[vi].jobStartedAt[k], jobReady(vi, k))
                if elapsed > expectedSeconds(vi, Int(backends.records[vi].jobEstimate[k])) {
                    floors.append((backends.records[vi].jobEstimate[k], elapsed * backends.records[vi].speed))
                }
            }
            let ends = expectedSchedule(vi, floors: floors).ends
            for (k, job) in backends.records[vi].jobs.enumerated() where backends.records[vi].jobStartedAt[k] < 0 {
                guard let j = jobs.index(job), jobs[slot: j].state == .bound, jobs[slot: j].cancelRequestedAt == nil,
                    jobs[slot: j].movedAt != now
                else { continue }
                let c = jobs[slot: j].classIndex
                guard classes[c].capable.contains(thief) else { continue }
                let e = jobs[slot: j].estimateIndex
                var p = expectedSeconds(ti, e)
                // Unmeasured, the overrun says the class is longer than its prior, for the thief
                // too; measured, it says the victim is slower than thought.
                if estimates.jobSeconds[e] == nil {
                    for f in floors where f.estimate == backends.records[vi].jobEstimate[k] {
                        p = max(p, f.seconds / backends.records[ti].speed)
                    }
                }
                let available = availableMemo ?? availableAt(ti)
                availableMemo = available
                let mine = max(available, modelReady(ti, c) ?? 0) + p
                let gain = ends[k] - mine
                guard gain > 0.05 * p + Self.timeEpsilon else {
                    // Jobs shorter than timing noise are not worth a timer (a fleet of them
                    // would look again every few milliseconds).
                    if p >= Self.relookMinimum {
                        for r in backends.records[vi].jobs.indices where backends.records[vi].jobStartedAt[r] >= 0 {
                            relook = min(relook, ends[r] + 0.1 * p)
                        }
                    }
                    continue
                }
                if let best = pick, (gain, v.rawValue, job.rawValue) <= (best.gain, best.victim.rawValue, best.job.rawValue) {
                    continue
                }
                pick = (gain, v, job)
            }
        }
        if pick == nil, backends.records[ti].jobs.count < backends.records[ti].slots {
            pick = runningToMove(into: ti, thief) ?? displace(into: ti, thief) ?? makeRoom(into: ti, thief)
        }
        guard let pick else {
            if relook.isFinite { scheduleRelook(thief, at: relook) }
            return false
        }
        moveStolen(pick.job, from: pick.victim, to: thief)
        return true
    }

    /// The shortest job worth a `relook`, and the least time before one: durations under it are
    /// timing noise (as for speeds, `Estimates`).
    static let relookMinimum = 0.05

    /// Arms the backend's `relook` timer for `seconds` (core time), unless one is due sooner.
    /// Nothing else would make an idle backend look again while a job merely overruns on a
    /// backend that sends no progress: an exec or ComfyUI backend slower than assumed.
    /// A backend that keeps finding nothing waits twice as long each time (a job that overruns
    /// for an hour costs a dozen looks, not one every few seconds); binding a job resets it.
    mutating func scheduleRelook(_ id: BackendID, at seconds: Double) {
        let delay = max(seconds - now.seconds, Self.relookMinimum, 2 * backends[id].relookDelay)
        let at = CoreInstant.seconds(now.seconds + delay)
        if let pending = backends[id].relookAt, pending <= at { return }
        backends[id].relookAt = at
        backends[id].relookArmed = delay
        schedule(at, .relook(id))
    }

    /// Making room for a job this free backend left to another: the thief declined queued job J
    /// this turn because J finishes first on backend B (`declined`), behind a job K bound there
    /// and not started. When the thief finishes K before J would finish on B, K moves to the
    /// thief and J may take its place on B: J, the longer of the two on B, ends about K's
    /// duration sooner, K no later than J would have, so the later of the two ends sooner. K
    /// moves only for a job of its own owner at its priority or above, or for one of a higher
    /// priority, so another owner's turn is never given away, and only when both durations are
    /// known (measured, configured or announced: guessed ones would trade a sure start for a
    /// guess). This is what lets a long job of a batch accepted later overtake a short one of an
    /// earlier batch that another backend runs almost as soon (longest first across batches).
    mutating func displace(into ti: Int, _ thief: BackendID) -> (gain: Double, victim: BackendID, job: JobID)? {
        guard let d = declined, d.by == thief, let jj = jobs.index(d.job), jobs[slot: jj].state == .queued,
            let vi = backends.index(d.toward), backends.records[vi].routable(now),
            estimates.shown(jobs[slot: jj].estimateIndex)
        else { return nil }
        let owner = jobs[slot: jj].spec.owner, priority = jobs[slot: jj].spec.priority
        let pj = expectedSeconds(vi, jobs[slot: jj].estimateIndex)
        let available = availableAt(ti)
        var pick: (gain: Double, victim: BackendID, job: JobID)?
        for (k, job) in backends.records[vi].jobs.enumerated() where backends.records[vi].jobStartedAt[k] < 0 {
            guard let (c, e) = displaceable(job, to: thief, owner: owner, priority: priority) else { continue }
            let room = expectedSeconds(vi, e)
            let mine = max(available, modelReady(ti, c) ?? 0) + expectedSeconds(ti, e)
            // J, the longer, gains K's duration on B; K must end on the thief before J would
            // have on B.
            guard room > 0.05 * pj + Self.timeEpsilon, pj > 1.05 * room + Self.timeEpsilon,
                mine < d.at - 0.05 * pj - Self.timeEpsilon
            else { continue }
            let gain = d.at - max(mine, d.at - room)
            if let best = pick, (gain, job.rawValue) <= (best.gain, best.job.rawValue) { continue }
            pick = (gain, d.toward, job)
        }
        if pick != nil { declined = nil }
        return pick
    }

    /// Making room for a job this free backend cannot run: a queued job J that only other
    /// backends can run waits to finish first on backend B, behind a job K bound there and not
    /// started. When the thief finishes K before J would finish on B, K moves to the thief and
    /// J may take its place on B, as in `displace` (J the longer of the two on B, K of J's owner
    /// at its priority or of a lower priority, both durations shown, and no other backend
    /// expected to finish J as soon as B would without K, nor K sooner than the thief). Looked
    /// for while at most `backfillStealScan` backends hold bound jobs not started, on victims
    /// with at most `makeRoomClasses` classes. Small-fleet seed 161 knowing everything: a video
    /// waited on the only video backend behind an image bound there before the video arrived,
    /// while a backend that runs images only announced (13.5 s against 12 s; standard seed 610,
    /// 1.27 to 1.09).
    mutating func makeRoom(into ti: Int, _ thief: BackendID) -> (gain: Double, victim: BackendID, job: JobID)? {
        guard policy.routing == .expectedCompletion, queuedTotal > 0, !stealable.isEmpty,
            stealable.count <= Self.backfillStealScan
        else { return nil }
        var available: Double?
        var pick: (gain: Double, victim: BackendID, job: JobID)?
        for v in stealable where v != thief {
            guard let vi = backends.index(v), backends.records[vi].routable(now),
                backends.records[vi].classes.count <= Self.makeRoomClasses
            else { continue }
            // J: the first in queue order of the heads the thief cannot run.
            var waiting: (c: Int, entry: QueueEntry)?
            for c in backends.records[vi].classes where !classes[c].capable.contains(thief) && !heads[c].isEmpty {
                guard let head = cleanHead(c) else { continue }
                if let w = waiting, !(head < w.entry) { continue }
                waiting = (c, head)
            }
            guard let (cj, entry) = waiting, let jj = jobs.index(entry.job),
                estimates.shown(jobs[slot: jj].estimateIndex)
            else { continue }
            let ej = jobs[slot: jj].estimateIndex
            let owner = jobs[slot: jj].spec.owner, priority = jobs[slot: jj].spec.priority
            let pj = expectedSeconds(vi, ej)
            let schedule = expectedSchedule(vi)
            let jEnd = max(schedule.available, modelReady(vi, cj) ?? 0) + pj
            for (k, job) in backends.records[vi].jobs.enumerated() where backends.records[vi].jobStartedAt[k] < 0 {
                guard let (c, e) = displaceable(job, to: thief, owner: owner, priority: priority) else { continue }
                let room = expectedSeconds(vi, e)
                if available == nil { available = availableAt(ti) }
                let mine = max(available!, modelReady(ti, c) ?? 0) + expectedSeconds(ti, e)
                guard room > 0.05 * pj + Self.timeEpsilon, pj > 1.05 * room + Self.timeEpsilon,
                    mine < jEnd - 0.05 * pj - Self.timeEpsilon
                else { continue }
                let gain = jEnd - max(mine, jEnd - room)
                if let best = pick, (gain, -v.rawValue, job.rawValue) <= (best.gain, -best.victim.rawValue, best.job.rawValue) {
                    continue
                }
                // No other backend finishes J as soon as B would once K has left, nor K sooner
                // than the thief (that one takes it, if it will).
                guard !finishesSooner(cj, ej, than: jEnd - room, besides: v) else { break }
                guard !finishesSooner(c, e, than: mine, besides: v) else { continue }
                pick = (gain, v, job)
            }
        }
        return pick
    }

    static let makeRoomClasses = 64

    /// A bound, unstarted job that may move to `thief` to make room for a longer job of `owner` at
    /// `priority` (`displace`, `makeRoom`): not canceled nor moved this instant, of that owner at
    /// that priority or above it, or of a lower priority (another owner's turn is never given
    /// away), its class runnable on the thief and its duration shown, not guessed. Its class and
    /// estimate.
    func displaceable(_ job: JobID, to thief: BackendID, owner: String, priority: Int) -> (c: Int, e: Int)? {
        guard let j = jobs.index(job), jobs[slot: j].state == .bound, jobs[slot: j].cancelRequestedAt == nil,
            jobs[slot: j].movedAt != now,
            jobs[slot: j].spec.priority < priority
                || (jobs[slot: j].spec.priority == priority && jobs[slot: j].spec.owner == owner)
        else { return nil }
        let c = jobs[slot: j].classIndex
        let e = jobs[slot: j].estimateIndex
        guard classes[c].capable.contains(thief), estimates.shown(e) else { return nil }
        return (c, e)
    }

    /// Whether a routable backend other than `besides` that can run class `c` is expected to finish
    /// a job of estimate `e` before `at` (true when that is not looked for: `soonestElsewhere`).
    func finishesSooner(_ c: Int, _ e: Int, than at: Double, besides: BackendID) -> Bool {
        guard let soonest = soonestElsewhere(c, e, besides: besides) else { return true }
        return soonest < at - Self.timeEpsilon
    }

    /// The soonest a routable backend other than `besides` that can run class `c` is expected to
    /// finish a job of estimate `e` (infinity: none). Looked for while the class has at most
    /// `capableScan` capable backends; with more, nil (the idle looks that ask, `makeRoom` and
    /// `hedgeDeclinedLoad`, then do nothing).
    func soonestElsewhere(_ c: Int, _ e: Int, besides: BackendID) -> Double? {
        guard classes[c].capable.count <= Self.capableScan else { return nil }
        var soonest = Double.infinity
        for b in classes[c].capable where b != besides {
            guard let bi = backends.index(b), backends.records[bi].routable(now) else { continue }
            soonest = min(soonest, expectedCompletion(bi, c, e))
        }
        return soonest
    }

    static let capableScan = 64

    /// A running job that the backend at `ti`, with a running slot free, would finish from scratch
    /// sooner than the backend running it is expected to finish it, by more than a quarter of the
    /// job's duration on the backend at `ti` (the work done so far is lost): a job placed on a slow backend, or one waiting
    /// for a long model load, before a faster or loaded backend was known. Only backends slower
    /// than the thief (the fleet's speed index: no scan of faster ones) and backends with a job
    /// waiting for a model load are looked at; a job moves this way at most `runningMoves` times.
    /// While the job's class is a guess, the move must also pay off if the job takes twice what
    /// it ran (the guess's scale alone would otherwise decide): only to a backend more than 2.5
    /// times as fast.
    mutating func runningToMove(into ti: Int, _ thief: BackendID) -> (gain: Double, victim: BackendID, job: JobID)? {
        let speed = backends.records[ti].speed
        // Most free backends have no one to look at: no load under way, none slower.
        if loadingModels.isEmpty && !fleetBySpeed.hasSlower(than: speed) { return nil }
        let t = now.seconds
        let thiefAssumed = speedSource(ti).source == .assumed
        // Membership only: the hashed set, not the ordered one (a dictionary and an array to grow
        // on every free backend's look).
        var seen = BackendMembership()
        var pick: (gain: Double, victim: BackendID, job: JobID)?
        func consider(_ v: BackendID) {
            guard v != thief, !seen.contains(v), let vi = backends.index(v) else { return }
            seen.insert(v)
            let victimAssumed = speedSource(vi).source == .assumed
            var loading = false
            // Unstarted jobs on a backend with a running slot free start there now: one waiting
            // for a model load is looked at like a running one (no work lost: the usual 5%).
            let startsNow = backends.records[vi].running < backends.records[vi].slots
            for (k, job) in backends.records[vi].jobs.enumerated() {
                let startedAt = backends.records[vi].jobStartedAt[k]
                let readyAt = jobReady(vi, k)
                if readyAt > t { loading = true }
                guard startedAt >= 0 || (startsNow && readyAt > t), let j = jobs.index(job), jobs[slot: j].cancelRequestedAt == nil,
                    jobs[slot: j].movable(at: now)
                else { continue }
                let running = jobs[slot: j].state == .running
                // A job moved after running a while moves so again at most `runningMoves` times in all.
                guard running ? jobs[slot: j].movedWhileRunning < Self.runningMoves || startedAt >= t : jobs[slot: j].state == .bound
                else { continue }
                let c = jobs[slot: j].classIndex
                guard classes[c].capable.contains(thief) else { continue }
                let e = jobs[slot: j].estimateIndex
                // Work is thrown away only on evidence: when nothing says how fast the backend
                // running it is (its speed assumed, the class and kind known only from its own jobs), a
                // thief whose speed was measured against other backends is not comparable to it.
                if running, victimAssumed, !thiefAssumed, estimates.reference(e, excluding: v) == nil { continue }
                let workFrom = max(running ? startedAt : t, readyAt)
                var end = running ? startedJobEnd(vi, k) { expectedSeconds(vi, e) } : workFrom + expectedSeconds(vi, e)
                var p = expectedSeconds(ti, e)
                if end < t {
                    end = t + (t - end)
                    // Unmeasured, the overrun says the class takes at least that long, here too.
                    if estimates.jobSeconds[e] == nil {
                        p = max(p, (t - workFrom) * backends.records[vi].speed / speed)
                    }
                }
                // A backup that is expected to finish the job sooner is where it ends.
                if running, let backup = backupEnd(job, e) { end = min(end, backup) }
                let gain = end - (max(t, modelReady(ti, c) ?? 0) + p)
                guard gain > (running ? 0.25 : 0.05) * p + Self.timeEpsilon else { continue }
                // How long the class takes is a guess (nothing measured, configured, announced or
                // projected for it, nor for its kind by another backend than the victim), and its
                // scale alone would decide whether the work done so far is worth throwing away.
                // The move must also pay off if the job takes twice what it ran (as likely to end
                // before that as after): counting the work alone, t + elapsed against
                // t + 2 * elapsed * victim / thief, with the quarter's margin, that is a backend
                // more than 2.5 times as fast. (The model load it would wait for is priced above,
                // with the guess: a job that just started has run too little to weigh a load
                // against.) Standard seed 513 of 960: a plain video ran on a backend projected
                // twice as slow as the one whose `sdxl` video had shown the kind's length, and
                // stayed there to 30 s (2.0); it now moves at 3 s (1.2).
                if running, !estimates.shown(e), estimates.kindReference(e, excluding: v) == nil, t > workFrom,
                    !(backends.records[vi].speed * 2.5 < speed)
                {
                    continue
                }
                if let best = pick, (gain, v.rawValue, job.rawValue) <= (best.gain, best.victim.rawValue, best.job.rawValue) {
                    continue
                }
                pick = (gain, v, job)
            }
            if !loading { loadingModels.remove(v) }
        }
        for v in loadingModels { consider(v) }
        for v in fleetBySpeed.slower(than: speed) { consider(v) }
        return pick
    }
}

/// What the coordinator expects of one backend (`Coordinator.estimates(for:)`).
public struct BackendEstimates: Hashable, Sendable {
    /// Where the speed comes from.
    public enum SpeedSource: String, Hashable, Sendable {
        /// Configured for this backend.
        case configured
        /// Announced by the backend (`speed` in its capabilities).
        case announced
        /// Learned from its measured jobs against the fleet's estimates.
        case measured
        /// Before any of its jobs ended: from their progress against what other backends did.
        case projected
        /// Nothing known yet: 1.0.
        case assumed
    }
    /// Relative to 1.0: a job of a class expected to take 10 s at 1.0 is expected to take 5 s at 2.0.
    public var speed: Double
    public var speedSource: SpeedSource
    /// Its own measured model load time (moving average) once it loaded one, else its configured
    /// load time, else nil (the fleet's measured loads of the model or the default apply).
    public var modelLoadSeconds: Double?
    /// Expected seconds per job class (kind and model) on this backend.
    public var jobs: [JobClassEstimate]
}

/// The expected duration of one job class on one backend.
public struct JobClassEstimate: Hashable, Sendable {
    public var kind: String
    public var model: String?
    /// A workflow's node classes, sorted (empty for jobs without one): part of the class.
    public var nodes: [String]
    public var seconds: Double
    /// Whether jobs of this class were measured (on any backend); otherwise a prior.
    public var measured: Bool
}

extension Coordinator {
    /// The estimates routing uses for one backend; nil for an unknown backend.
    public func estimates(for backend: BackendID) -> BackendEstimates? {
        guard let bi = backends.index(backend) else { return nil }
        let r = backends.records[bi]
        let source = speedSource(bi).source
        var list: [JobClassEstimate] = []
        for (e, key) in estimates.classKeys.enumerated() {
            list.append(
                JobClassEstimate(
                    kind: key.kind, model: key.model, nodes: key.nodes, seconds: expectedSeconds(bi, e),
                    measured: estimates.jobSeconds[e] != nil))
        }
        list.sort(by: JobClassEstimate.inOrder)
        return BackendEstimates(
            speed: r.speed, speedSource: source, modelLoadSeconds: r.loadSeconds ?? r.loadPrior, jobs: list)
    }
}

extension Coordinator {
    /// Expected seconds of one job of each class (kind and model) on a backend of speed 1.0.
    public var jobClassEstimates: [JobClassEstimate] {
        estimates.classKeys.enumerated().map { e, key in
            JobClassEstimate(
                kind: key.kind, model: key.model, nodes: key.nodes, seconds: estimates.seconds(e),
                measured: estimates.jobSeconds[e] != nil)
        }.sorted(by: JobClassEstimate.inOrder)
    }
}

extension JobClassEstimate {
    /// By kind, then model, then node classes.
    static func inOrder(_ a: Self, _ b: Self) -> Bool {
        if a.kind != b.kind { return a.kind < b.kind }
        if a.model != b.model { return (a.model ?? "") < (b.model ?? "") }
        return a.nodes.lexicographicallyPrecedes(b.nodes)
    }
}

/// The jobs of one estimate class never measured that started meanwhile
/// (`Coordinator.guessedRunning`); ended ones are pruned when the list doubled since the last
/// pruning.
struct GuessedRunning {
    var jobs: [JobID] = []
    var pruneAt = 64
}

/// What `admits` keeps while it counts the backends that would finish a job sooner: methods
/// (`admitsCount`, `admitsSooner`) take it, rather than nested functions capturing `self`, which
/// copy the whole coordinator to call its helpers.
struct AdmitTally {
    let bi: Int
    let id: BackendID
    let c: Int
    let e: Int
    /// When the deciding backend is expected to finish the job.
    let mine: Double
    /// The job's length there: how much later another backend may finish it and still count
    /// as sooner when the deciding backend alone can run other queued jobs.
    let slack: Double
    let latestStart: Double
    let need: Int
    let mustLoad: Bool
    let holds: Bool
    let backfilling: Bool
    let loadsAhead: Bool
    var soleHere: Bool? = nil
    var capacity = 0
    var second: (backend: BackendID, at: Double)? = nil
    var soonest: (at: Double, backend: BackendID)? = nil
    var wake: [BackendID] = []
}
