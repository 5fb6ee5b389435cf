import MusterProtocol

/// Backup runs: an idle backend runs a copy of a job that runs elsewhere, when it would finish
/// first if it were `backupSpeedup` times as fast as assumed (its speed nothing has told the
/// coordinator yet), or at its known speed (the job's own length scaled by the two speeds). The
/// first copy to complete is the job's completion; the others are revoked. A backup is invisible
/// to routing (the backend still counts as free) and gives way to a job bound there that needs its
/// slot, unless it has started on a backend of known speed and is expected to finish first: then
/// it becomes the binding (`promoteAhead`). It measures an unknown backend at no cost in time: the
/// backend would have idled.
///
/// Why: with nothing measured, backends that look alike are placed as if they were equal, and a
/// job that lands on the slowest of them is not moved, since nothing says another one is faster
/// (moving throws work away; see `runningToMove`). A backup throws nothing away.
///
/// A backend that must load the job's model first loads it (`LoadReason.backup`) and looks again
/// once it is loaded (RoutingSuite seed 189: a `flux` video on a local backend four times slower
/// than the idle ones, which had no `flux` loaded).
struct BackupRun: Hashable, Sendable {
    var backend: BackendID
    var lease: Lease
    var boundAt: CoreInstant
    /// When the backend reported it started (`started` or `progress`).
    var startedAt: CoreInstant?
    /// The last fraction it reported done (`progress`).
    var progress: Double = 0
    /// When its last `timed` progress, from `projectionFraction` on, projects it to end (work so
    /// far ÷ fraction, fixed when the report came, as for the bound run's `projectedEnds`).
    var projectedEnd: Double?
    /// Started with no straggler to copy (`speculativeBackup`): when it gives way to a job bound
    /// on its backend (or its backend drains or is lost), it does not count toward the job's
    /// `backupRuns` (`stopBackup`).
    var speculative = false
}

extension Coordinator {
    /// How much faster than assumed an unmeasured backend must be for its backup to win.
    static let backupSpeedup = 2.0
    /// The same for a straggler known only by its overrun (no `timed` progress, as on ComfyUI):
    /// such a job is expected to run half as long again as it ran (`overrunDue`), so a copy on a
    /// backend assumed as fast would need more than three times its assumed speed to win, and
    /// at `backupSpeedup` no such straggler would ever get a backup (RoutingSuite without
    /// progress, seed 222: 2.14 to 1.47).
    static let overrunBackupSpeedup = 4.0
    /// A running job expected to take this many times what was expected when it started is a
    /// straggler; only stragglers get backups.
    static let straggler = 1.25

    /// When the earliest of the backup runs of `job` (estimate `e`) is expected to end, if it
    /// has any: its work from when it started (or was bound) at its backend's speed, or, once
    /// its `timed` progress reached `projectionFraction`, the end that progress projected (a copy
    /// on a backend slower than assumed shows it as the job's own run does); past that, as long
    /// again as it overran.
    func backupEnd(_ job: JobID, _ e: Int) -> Double? {
        guard !backups.isEmpty, let list = backups[job] else { return nil }
        let t = now.seconds
        return list.compactMap { run -> Double? in
            guard let bi = backends.index(run.backend) else { return nil }
            let end = run.projectedEnd ?? (run.startedAt ?? run.boundAt).seconds + expectedSeconds(bi, e)
            return Self.overrun(end, t)
        }.min()
    }

    /// The backup run of `id` on `backend` under `lease`, if there is one (its index).
    @inline(__always)
    func backupIndex(_ id: JobID, _ backend: BackendID, _ lease: Lease) -> Int? {
        guard !backups.isEmpty, let list = backups[id] else { return nil }
        return list.firstIndex { $0.backend == backend && $0.lease == lease }
    }

    /// Called for a free backend that found nothing to take, steal or load: starts a backup of
    /// the job it could most likely finish first, if any. Only a backend with a running slot free,
    /// nothing bound and no load in flight that was asked to run a job bound elsewhere (a hedge, a
    /// backup's model: `LoadRequest.forAnother`). A load for a job it would take next does not stop
    /// it: other jobs fill such a load (backfilling), and the backup gives way to that job (small
    /// fleet seed 135: the job it loaded for moved away, and the copy waited for the load); at most
    /// `CorePolicy.backupRuns` backups per job over its life and one per backend. When the job's
    /// model is not loaded here, the backend loads it instead (counted in the job's
    /// `CorePolicy.hedgeLoads`; its load time counts as nothing while it is a guess) and the
    /// backup starts when the backend, free again once the load lands, looks again. The jobs
    /// looked at are the stragglers (`stragglers`: running jobs whose progress or overrun showed
    /// them long; no scan of the fleet). A backend of assumed speed takes jobs on backends at most
    /// `backupSpeedup` times as fast; one of known speed only jobs on slower backends, that it is
    /// expected to finish first at its speed (`copySeconds`). With no straggler to copy, it may
    /// copy another running job (`speculativeBackup`), when `CorePolicy.speculativeBackups` is on.
    /// With `fitBefore` (a copy through a model load, `copiesThroughLoad`), only a copy that needs
    /// no load and, at a known speed, is expected to end by then.
    mutating func startBackup(_ id: BackendID, fitBefore: Double? = nil) {
        guard policy.routing == .expectedCompletion, policy.backupRuns > 0, policy.workStealing,
            !stragglers.isEmpty || (policy.speculativeBackups && !copyable.isEmpty), backupOn[id] == nil,
            let ti = backends.index(id),
            backends.records[ti].jobs.isEmpty, !backends.records[ti].loadRequested.values.contains(where: \.forAnother),
            backends.records[ti].link == .up
        else { return }
        // A backend whose speed is known (measured, configured, announced or projected) runs a
        // backup only where it is expected to win at that speed.
        let assumed = speedSource(ti).source == .assumed
        let t = now.seconds
        let speed = backends.records[ti].speed
        let bar = assumed ? speed * Self.backupSpeedup + 1e-9 : speed
        var pick: (end: Double, job: JobID, load: String?)?
        var gone: [JobID] = []
        for job in stragglers {
            guard let j = jobs.index(job), mayCopy(j), let v = jobs[slot: j].backend,
                let vi = backends.index(v), let k = backends.records[vi].jobs.firstIndex(of: job)
            else {
                gone.append(job)
                continue
            }
            let c = jobs[slot: j].classIndex
            // A victim whose own speed is assumed: a straggler there shows it slower than
            // thought, so a backend of known speed may copy the job whatever the assumed speed
            // says (pricing the copy by the class, below).
            let slower = backends.records[vi].speed < bar
            let victimAssumed = !assumed && !slower && speedSource(vi).source == .assumed
            guard v != id, slower || victimAssumed, classes[c].capable.contains(id) else { continue }
            let m = classes[c].modelID
            // A model this backend must load first: while its load time is a guess the load counts
            // as nothing (idle, it loses nothing by finding out, as in `hedgeLoad`).
            var load: (model: String, seconds: Double)?
            if m >= 0, !backends.records[ti].loadedIDs.contains(m) {
                // One load at a time: with another in flight, the copy waits.
                guard Int(jobs[slot: j].hedges) < policy.hedgeLoads, backends.records[ti].loadRequested.isEmpty,
                    let model = classes[c].model
                else { continue }
                load = (model, assumed && loadTimeGuessed(ti) ? 0 : expectedLoadSeconds(ti, m))
            }
            let startedAt = backends.records[vi].jobStartedAt[k]
            guard startedAt >= 0, jobs[slot: j].expectedAtStart > 0 else { continue }
            let e = jobs[slot: j].estimateIndex
            // Its expected end there (its progress, else its estimate; past that, as long again
            // as it overran), as in the backend's expected schedule.
            let end = Self.overrun(startedJobEnd(vi, k) { expectedSeconds(vi, e) }, t)
            // A straggler: expected to run well past what was expected when it started.
            let workFrom = max(startedAt, jobReady(vi, k))
            guard end - workFrom > Self.straggler * jobs[slot: j].expectedAtStart else { continue }
            // It could win only if this backend were `backupSpeedup` times as fast as assumed
            // (`overrunBackupSpeedup` when no progress projects the job's end).
            let speedup =
                !assumed ? 1 : backends.records[vi].projectedEnds[job] == nil ? Self.overrunBackupSpeedup : Self.backupSpeedup
            // A victim in only by its assumed speed, its end not projected by progress: the copy
            // takes the class's estimate here. Otherwise the job's own length scaled by the
            // speeds (`copySeconds`: a job its progress shows long is long in itself).
            let byClass = victimAssumed && backends.records[vi].projectedEnds[job] == nil
            let copy =
                assumed
                ? expectedSeconds(ti, e) / speedup
                : byClass ? expectedSeconds(ti, e) : copySeconds(vi, ti, workFrom: workFrom, end: end)
            guard t + (load?.seconds ?? 0) + copy < end - Self.timeEpsilon else { continue }
            if let fitBefore, load != nil || !assumed && t + copy > fitBefore { continue }
            if let best = pick, (end, -Int64(job.rawValue)) <= (best.end, -Int64(best.job.rawValue)) { continue }
            pick = (end, job, load?.model)
        }
        for job in gone { stragglers.remove(job) }
        var speculative = false
        if pick == nil, policy.speculativeBackups,
            let job = speculativeBackup(ti, id, bar: assumed ? bar : speed * Self.nearFastest, assumed: assumed, fitBefore: fitBefore)
        {
            pick = (0, job, nil)
            speculative = true
        }
        guard let pick else { return }
        let job = pick.job
        if let model = pick.load {
            // The backup starts once the model is loaded (the backend is free then and looks again).
            jobs[job].hedges += 1
            requestLoad(id, model, force: false, .backup)
            return
        }
        let lease = Lease(nextLease)
        nextLease += 1
        backups[job, default: []].append(BackupRun(backend: id, lease: lease, boundAt: now, speculative: speculative))
        backupOn[id] = job
        jobs[job].backupsStarted += 1
        counters.backupsStarted += 1
        // The attempt a backup would be if it won: the next one.
        out.append(
            .assign(
                job: job, batch: jobs[job].batch, spec: jobs[job].spec, backend: id, lease: lease,
                attempt: jobs[job].attempt + 1))
        out.append(.observe(.backup(job, id, .started)))
    }

    /// Whether the job at slot `j` may get one more backup: it runs, no cancel is under way, and it
    /// has backups left (`CorePolicy.backupRuns`).
    func mayCopy(_ j: Int) -> Bool {
        jobs[slot: j].state == .running && jobs[slot: j].cancelRequestedAt == nil
            && Int(jobs[slot: j].backupsStarted) < policy.backupRuns
    }

    /// How much faster than assumed an idle backend must be for a speculative backup to win.
    static let speculativeSpeedup = 4.0

    /// A backend of assumed speed that found nothing to run, steal, load or back up: it copies
    /// the running job (no straggler needed) that it would finish first if it were
    /// `speculativeSpeedup` times as fast as assumed, the one with the most time left to its
    /// expected end: time left that the job's own progress projects counts whole, time left only
    /// an estimate gives is divided by `straggler` (the class's estimate on a backend that ran
    /// none of it is another backend's, of a speed that may differ; small-fleet seed 207: a video
    /// estimated to end at 8.67 s on a backend measured fast was copied instead of one whose
    /// progress showed it ending at 8 s on a slow one). A backend of
    /// known speed (`assumed` false; `bar` 0.95 of its speed) copies one it is expected to finish
    /// first at that speed: the job's own length there at the ratio of the speeds
    /// (`copySeconds`), as for a straggler (small-fleet seed 99: the fastest backend, measured on
    /// an image, idled while a video its progress showed to need 8 s ran on one never measured). As MapReduce
    /// does at the end of a phase: the backend would idle otherwise, and nothing but measuring
    /// tells how fast it is (cold fleet seed 8: a 4x backend measured only on videos idled while
    /// an image ran on one four times slower, measured only on images). Only jobs it can start
    /// now (no model to load), with no backup yet, expected to take at least
    /// `shortestSpeedSample` (`copyable`), on backends slower than `bar`. The pick
    /// is by a total order, so the set's order does not matter. From then on it is an ordinary
    /// backup (counted toward the job's `backupRuns`): one that wins measures its backend, and
    /// the run it outran teaches too (`learnOutrun`). `fitBefore` as for `startBackup`.
    func speculativeBackup(_ ti: Int, _ id: BackendID, bar: Double, assumed: Bool, fitBefore: Double? = nil) -> JobID? {
        let t = now.seconds
        var pick: (left: Double, job: JobID)?
        for job in copyable where backups[job] == nil {
            guard let j = jobs.index(job), mayCopy(j), let v = jobs[slot: j].backend, v != id,
                let vi = backends.index(v), backends.records[vi].speed < bar,
                let k = backends.records[vi].jobs.firstIndex(of: job),
                backends.records[vi].jobStartedAt[k] >= 0
            else { continue }
            let c = jobs[slot: j].classIndex
            let m = classes[c].modelID
            guard classes[c].capable.contains(id), m < 0 || backends.records[ti].loadedIDs.contains(m) else { continue }
            let e = jobs[slot: j].estimateIndex
            let there = expectedSeconds(vi, e)
            guard there >= Self.shortestSpeedSample else { continue }
            let end = Self.overrun(startedJobEnd(vi, k) { there }, t)
            let copy: Double
            if assumed {
                copy = expectedSeconds(ti, e) / Self.speculativeSpeedup
            } else {
                let workFrom = max(backends.records[vi].jobStartedAt[k], jobReady(vi, k))
                copy = copySeconds(vi, ti, workFrom: workFrom, end: end)
            }
            guard t + copy < end - Self.timeEpsilon else { continue }
            if let fitBefore, !assumed && t + copy > fitBefore { continue }
            let left = backends.records[vi].projectedEnds[job] != nil ? end - t : (end - t) / Self.straggler
            if let best = pick, (left, -Int64(job.rawValue)) <= (best.left, -Int64(best.job.rawValue)) { continue }
            pick = (left, job)
        }
        return pick?.job
    }

    /// A report under a backup's lease: `started` and `progress` note when it started; `failed`
    /// ends the backup alone (the job still runs where it is bound); `completed` makes the backup
    /// the job's binding (`promoteBackup`), after which the report is handled as the job's own.
    /// Returns whether the report is done with.
    mutating func backupReport(_ id: JobID, _ backend: BackendID, _ lease: Lease, _ kind: BackupReport) -> Bool {
        guard let k = backupIndex(id, backend, lease) else { return false }
        backends[backend].lastSeen = now
        switch kind {
        case .started(let fraction, let timed):
            if backups[id]![k].startedAt == nil { backups[id]![k].startedAt = now }
            if let fraction {
                let done = min(1, max(0, fraction))
                backups[id]![k].progress = done
                // Projected as the bound run's `timed` progress is (`projectFromProgress`); an
                // untimed report (steps, not work) leaves the last projection as it was.
                let began = backups[id]![k].startedAt!.seconds, worked = now.seconds - began
                if timed, done >= Self.projectionFraction, done < 1, worked > 0 {
                    backups[id]![k].projectedEnd = began + worked / done
                }
            }
            return true
        case .failed:
            removeBackup(id, at: k)
            out.append(.observe(.backup(id, backend, .stopped)))
            return true
        case .completed:
            outran = outranSample(id)
            promoteBackup(id, at: k)
            return false
        }
    }

    /// The run a winning backup outran: its backend, class and how long it worked (from when it
    /// started or its model landed) without finishing. `completed` hands it to `learnOutrun`
    /// once the winner's own duration is learned, so the winner is its reference.
    func outranSample(_ id: JobID) -> (backend: BackendID, estimate: Int, seconds: Double)? {
        guard policy.routing == .expectedCompletion, let v = jobs[id].backend, let vi = backends.index(v),
            let k = backends.records[vi].jobs.firstIndex(of: id), backends.records[vi].jobStartedAt[k] >= 0
        else { return nil }
        return (v, jobs[id].estimateIndex, now.seconds - max(backends.records[vi].jobStartedAt[k], jobReady(vi, k)))
    }

    /// A running job leaves backend `v` (a backup outran it, or it moves to a faster backend)
    /// after working there `worked` seconds without finishing, longer than was expected of it
    /// there: `v` takes at least that long for the class. On a backend whose speed nothing
    /// configured, announced or measured (assumed, or projected from progress), and when
    /// another backend measured the class (the reference), that time is learned as a measured
    /// duration (`learn`): `v` is then measured at least that slow, never slower than it is.
    /// Work shorter than expected says nothing (the job may have been about to finish). Without
    /// it, a backend whose job left it stayed unmeasured, and a video running there stayed
    /// although the backend was four times slower than an idle one
    /// (`aSpeedMeasuredMuchSlowerMakesIdleBackendsLookAgain`).
    mutating func learnOutrun(_ v: BackendID, _ e: Int, worked: Double) {
        guard policy.routing == .expectedCompletion, let vi = backends.index(v), worked >= Self.shortestSpeedSample,
            estimates.jobSeconds[e] != nil, estimates.measuredBy[e].include(otherThan: v),
            worked > expectedSeconds(vi, e)
        else { return }
        let source = speedSource(vi).source
        guard source == .assumed || source == .projected else { return }
        learn(v, estimate: e, seconds: worked)
    }

    /// `started` for `progress` too, with its fraction and whether it is `timed`.
    enum BackupReport { case started(Double?, timed: Bool), failed, completed }

    /// The backup at `k` finished first: the job's lease where it is bound is revoked (a `revoked`
    /// event naming that backend) and the backup becomes the job's binding, started when it did,
    /// so that its duration measures its backend. Its other backups are revoked with the old
    /// binding (`unbind`).
    mutating func promoteBackup(_ id: JobID, at k: Int) {
        let run = backups[id]![k]
        removeBackup(id, at: k)
        counters.backupsWon += 1
        out.append(.observe(.backup(id, run.backend, .won)))
        let victim = jobs[id].backend
        if let victim, let lease = jobs[id].lease {
            out.append(.revoke(job: id, backend: victim, lease: lease))
            unbind(id, outcome: .revoked)
        }
        jobs.setState(id, .queued)
        jobs[id].backend = nil
        jobs[id].lease = nil
        if victim != nil { persistRequeued(id) }
        // As for work stealing: `revoked` says `queued` (Protocol 7.2), then `bound` follows.
        if let victim { emit(jobs[id], .revoked, backend: victim) }
        bindBackup(id, run, startedAt: run.startedAt ?? run.boundAt)
    }

    /// Binds job `id` (queued, its old binding closed) to the backend of backup `run` under the
    /// backup's lease, started at `startedAt` (nil: not yet), with what the copy reported (its
    /// progress and projected end), not what the old run did.
    mutating func bindBackup(_ id: JobID, _ run: BackupRun, startedAt: CoreInstant?) {
        bind(id, to: run.backend, fromQueue: false, backup: run)
        if let startedAt { markStarted(id, run.backend, at: startedAt) }
        jobs[id].progress = run.progress
        jobs[id].progressMessage = nil
        if let end = run.projectedEnd { backends[run.backend].projectedEnds[id] = end }
    }

    /// Job `id` lost its binding on `backend` through no fault of its own (`requeueAll`: link down
    /// past the grace, a restart, removal) while a backup of it runs on a backend whose link is
    /// up. Rather than revoke that copy and queue the job again, throwing its work away, the job
    /// is requeued as always (its lost attempt closed with `error`, a `requeued` event, counted
    /// toward `CorePolicy.maxAttempts`) and at once bound to the backup's backend under the
    /// backup's lease (`bound`, then `started` when the backup had started): the copy that
    /// started first, else the first one. Its other backups are revoked. False, and nothing done,
    /// when there is no such backup or the lost attempts are used up (`requeueOrFail` fails the
    /// job then). (With speculative backups on, a backend that registers while a job runs
    /// elsewhere often runs a copy of it; the protocol conformance suite's "backend lost" case
    /// then saw the copy revoked and the job assigned there again under a new lease.)
    mutating func adoptBackup(_ id: JobID, _ cause: RequeueCause, error: JobFailure, from backend: BackendID) -> Bool {
        guard !backups.isEmpty, let list = backups[id], let j = jobs.index(id),
            jobs[slot: j].lostAttempts + 1 < policy.maxAttempts
        else { return false }
        var best: (k: Int, started: Double, bound: Double)?
        for (k, run) in list.enumerated() where backends.get(run.backend)?.link == .up {
            let key = (run.startedAt?.seconds ?? .infinity, run.boundAt.seconds)
            if let b = best, (b.started, b.bound) <= key { continue }
            best = (k, key.0, key.1)
        }
        guard let k = best?.k else { return false }
        let run = list[k]
        removeBackup(id, at: k)
        unbind(id, outcome: .requeued, error: error)
        jobs[id].lostAttempts += 1
        counters.requeued += 1
        jobs.setState(id, .queued)
        jobs[id].backend = nil
        jobs[id].lease = nil
        jobs[id].progress = 0
        jobs[id].progressMessage = nil
        persistRequeued(id)
        out.append(.observe(.requeued(id, cause)))
        emit(jobs[id], .requeued(cause, error: error), backend: backend)
        counters.backupsWon += 1
        out.append(.observe(.backup(id, run.backend, .won)))
        bindBackup(id, run, startedAt: run.startedAt)
        return true
    }

    /// Whether a backup runs on `backend` and one more job bound there would leave it no running
    /// slot (on a one-slot backend, any job): it gives way then (`bind`), unless it becomes the
    /// binding first (`promoteAhead`, from `dispatch`).
    func backupGivesWay(on backend: BackendID) -> Bool {
        !backupOn.isEmpty && backupOn[backend] != nil && backends[backend].jobs.count + 2 > backends[backend].slots
    }

    /// How long a copy on the backend at `ti` (speed known) is expected to take of a job that
    /// works on the backend at `vi` from `workFrom` and is expected to end at `end` there: the
    /// job's own length there at the ratio of the two speeds. Not the class's estimate: a job
    /// shown long by its progress is more often a long job than one on a slow backend.
    func copySeconds(_ vi: Int, _ ti: Int, workFrom: Double, end: Double) -> Double {
        max(0, end - workFrom) * backends.records[vi].speed / backends.records[ti].speed
    }

    /// A job is about to be bound to a backend where a backup runs, and the backup would give way
    /// (`bind`). When the backup started (the backend said so) on a backend of known speed, faster
    /// than the one the job is bound to, and is expected to finish first there (the job's own
    /// length at the ratio of the speeds: `copySeconds`), the backup becomes the binding instead
    /// (`promoteBackup`: the other run is revoked; counted as a move of a running job) and the
    /// backend the job ran on is returned, to look for work (the queued job among it). Otherwise
    /// nil, and the backup gives way. (RoutingSuite seed 49: a video released onto a backend a
    /// third slower than the one that freed 1.5 s later; the backup there was expected to win by
    /// 1.3 s, then an image arrived and took its slot.)
    mutating func promoteAhead(_ id: BackendID) -> BackendID? {
        guard let job = backupOn[id], let ti = backends.index(id), speedSource(ti).source != .assumed,
            let k = backups[job]?.firstIndex(where: { $0.backend == id }), let startedAt = backups[job]![k].startedAt,
            let j = jobs.index(job), jobs[slot: j].state == .running, jobs[slot: j].cancelRequestedAt == nil,
            jobs[slot: j].movedWhileRunning < Self.runningMoves, let v = jobs[slot: j].backend,
            let vi = backends.index(v), backends.records[vi].speed < backends.records[ti].speed,
            let vk = backends.records[vi].jobs.firstIndex(of: job), backends.records[vi].jobStartedAt[vk] >= 0
        else { return nil }
        let e = jobs[slot: j].estimateIndex
        let t = now.seconds
        let workFrom = max(backends.records[vi].jobStartedAt[vk], jobReady(vi, vk))
        let theirs = Self.overrun(startedJobEnd(vi, vk) { expectedSeconds(vi, e) }, t)
        let mine = Self.overrun(startedAt.seconds + copySeconds(vi, ti, workFrom: workFrom, end: theirs), t)
        guard mine < theirs - Self.timeEpsilon else { return nil }
        jobs[job].movedWhileRunning += 1
        // The run it replaces may show its backend slower than thought, as for a move.
        learnOutrun(v, e, worked: t - workFrom)
        promoteBackup(job, at: k)
        return v
    }

    /// Notes a running job shown to take longer than expected when it started; true when it is
    /// new (idle backends should look again). Nothing is kept with backup runs off.
    mutating func noteStraggler(_ id: JobID) -> Bool {
        policy.backupRuns > 0 && stragglers.insert(id).inserted
    }

    /// Forgets the backup at `k` of job `id` (no message: the caller decides) and lets its backend
    /// look for work again.
    mutating func removeBackup(_ id: JobID, at k: Int) {
        let run = backups[id]!.remove(at: k)
        if backups[id]!.isEmpty { backups[id] = nil }
        backupOn[run.backend] = nil
        if backends.contains(run.backend) {
            backends[run.backend].idleEpoch = .max
            if free.contains(run.backend) { dirty.insert(run.backend) }
        }
    }

    /// Revokes every backup of job `id` (it ended, moved or lost its binding).
    mutating func revokeBackups(of id: JobID) {
        guard let list = backups[id] else { return }
        for run in list.reversed() {
            out.append(.revoke(job: id, backend: run.backend, lease: run.lease))
            out.append(.observe(.backup(id, run.backend, .stopped)))
            removeBackup(id, at: backups[id]!.count - 1)
        }
    }

    /// The backup running on `backend` stops: revoked when `revoke` (a job is bound there, or it
    /// drains), else dropped silently (its leases died with its link or incarnation). A
    /// speculative one stopped so is not counted toward the job's `backupRuns`: copies made
    /// whenever a backend idled a moment left none for the straggler the job later proved to be
    /// (routing suite seed 210 without progress: 1.51 to 1.84 before this).
    mutating func stopBackup(on backend: BackendID, revoke: Bool) {
        guard let job = backupOn[backend], let k = backups[job]?.firstIndex(where: { $0.backend == backend }) else {
            return
        }
        if backups[job]![k].speculative, jobs.contains(job), jobs[job].backupsStarted > 0 { jobs[job].backupsStarted -= 1 }
        if revoke { out.append(.revoke(job: job, backend: backend, lease: backups[job]![k].lease)) }
        out.append(.observe(.backup(job, backend, .stopped)))
        removeBackup(job, at: k)
    }
}
