import MusterProtocol

// Job lifecycle: queueing, binding under a lease, reports from backends, requeue, cancel, the end
// of a job (exactly once) and the bounded store of finished jobs.
extension Coordinator {
    func validate(_ entries: [BatchEntry]) throws(CoreError) {
        guard !entries.isEmpty else {
            throw CoreError(.invalidMessage, "submission has no entries; add at least one job")
        }
        var total = 0
        for (i, entry) in entries.enumerated() {
            guard entry.count >= 1 else {
                throw CoreError(.invalidMessage, "entry \(i): count is \(entry.count); it must be at least 1")
            }
            guard !entry.spec.kind.isEmpty else { throw CoreError(.invalidMessage, "entry \(i): kind is empty") }
            guard !entry.spec.owner.isEmpty else { throw CoreError(.invalidMessage, "entry \(i): owner is empty") }
            if let model = entry.spec.model, model.isEmpty {
                throw CoreError(.invalidMessage, "entry \(i): model is empty; leave it out instead")
            }
            if classes.count >= policy.maxJobClasses,
                classIndex[ClassKey(needs: entry.spec.needs, model: entry.spec.model, nodes: entry.spec.nodes)] == nil
            {
                throw CoreError(
                    .limitExceeded,
                    "entry \(i): too many distinct combinations of needs and model (\(policy.maxJobClasses)); "
                        + "reuse existing ones")
            }
            total += entry.count
            guard total <= policy.maxJobsPerSubmission else {
                throw CoreError(
                    .limitExceeded,
                    "submission creates more than \(policy.maxJobsPerSubmission) jobs; split it into several batches")
            }
        }
    }

    mutating func classFor(_ spec: JobSpec) -> Int {
        let key = ClassKey(needs: spec.needs, model: spec.model, nodes: spec.nodes)
        if let c = classIndex[key] { return c }
        let c = classes.count
        var jobClass = JobClass(needs: spec.needs, model: spec.model, nodes: spec.nodes)
        if let m = spec.model { jobClass.modelID = modelID(m) }
        // Through pointers to the records, field by field: a record as an argument, or its
        // computed `capable`, was copied (every array and set of it retained and released) for
        // each backend of the fleet, and so was the class captured by the loop.
        let (needs, model, nodes, m) = (jobClass.needs, jobClass.model, jobClass.nodes, jobClass.modelID)
        var found: [(id: BackendID, band: Int, loaded: Bool)] = []
        backends.records.withUnsafeBufferPointer { records in
            guard let base = records.baseAddress else { return }
            for i in records.indices {
                let r = base + i
                guard Backend.capable(r.pointee.announcedReady, r.pointee.link, r.pointee.drainRequested),
                    Self.matches(
                        features: r.pointee.features, available: r.pointee.available, nodes: r.pointee.nodes,
                        needs: needs, model: model, nodeClasses: nodes)
                else { continue }
                found.append((r.pointee.id, r.pointee.band, m >= 0 && r.pointee.loadedIDs.contains(m)))
            }
        }
        for f in found {
            jobClass.capable.insert(f.id)
            jobClass.bySpeed.insert(f.id, band: f.band)
            if f.loaded { jobClass.loadedCapable += 1 }
        }
        for id in jobClass.capable {
            backends[id].classes.append(c)
            if jobClass.modelID >= 0 && backends[id].loadedIDs.contains(jobClass.modelID) {
                backends[id].loadedClasses.append(c)
            }
        }
        classes.append(jobClass)
        heads.append(.empty)
        classIndex[key] = c
        return c
    }

    /// Round-robin between owners within a priority: an owner's k-th waiting job goes to round
    /// k after the round being served when it arrived, so a newcomer's first job competes with
    /// the next job of every other owner instead of queueing behind all of them.
    mutating func assignRound(owner: String, priority: Int) -> UInt64 {
        let key = OwnerKey(owner: owner, priority: priority)
        let round = max(ownerRounds[key] ?? 0, servedRound[PriorityKey(priority)] ?? 0)
        ownerRounds[key] = round + 1
        if ownerRounds.count > ownerRoundsPruneAt {
            // An owner whose next round is not ahead of the round being served gets the same
            // round without an entry: drop those, so one-off owners do not accumulate.
            ownerRounds = ownerRounds.filter { $0.value > servedRound[PriorityKey($0.key.priority)] ?? 0 }
            ownerRoundsPruneAt = max(1024, 2 * ownerRounds.count)
        }
        return round
    }

    /// Puts a job (new or requeued) into its class queue and wakes the free backends that could
    /// take it. `from`: the backend a requeued job was lost on.
    mutating func enqueue(_ id: JobID, event: JobEvent.Kind?, from: BackendID? = nil) {
        // Field by field: the record is modified in place, never copied.
        jobs.setState(id, .queued)
        jobs[id].backend = nil
        jobs[id].lease = nil
        jobs[id].progress = 0
        jobs[id].progressMessage = nil
        jobs[id].enqueuedAt = now
        jobs[id].declinedSince = nil
        routingEpoch &+= 1
        let c = jobs[id].classIndex
        let priority = jobs[id].spec.priority
        let entry = QueueEntry(
            negPriority: -priority, round: jobs[id].round, seq: jobs[id].seq, job: id,
            estimate: Int32(jobs[id].estimateIndex))
        classes[c].queue.insert(entry)
        if entry < heads[c] { heads[c] = entry }
        classes[c].queued += 1
        queuedByPriority[PriorityKey(priority), default: 0] += 1
        queuedTotal += 1
        if classes[c].modelID >= 0 {
            queuedByModel[Int(classes[c].modelID)] += 1
            if policy.prefetchModels { noteNeeded(c) }
        }
        if let event { emit(jobs[id], event, backend: from) }
        pending.append(id)
        wake(c)
    }

    /// Marks the free backends capable of class `c` for the next dispatch round. `toCopy`: only
    /// those a speculative backup could run on (speed assumed, no backup running), and they look
    /// even when nothing changed since they last found nothing (`idleEpoch`).
    mutating func wake(_ c: Int, toCopy: Bool = false) {
        func look(_ b: BackendID) {
            if toCopy {
                guard backupOn[b] == nil, let bi = backends.index(b), speedSource(bi).source == .assumed else { return }
                backends[b].idleEpoch = .max
            }
            dirty.insert(b)
        }
        if free.count <= classes[c].capable.count {
            for b in free where classes[c].capable.contains(b) { look(b) }
        } else {
            for b in classes[c].capable where free.contains(b) { look(b) }
        }
    }

    /// Bookkeeping for a job leaving its class queue. An entry not `popped` stays in the heap
    /// and is dropped when it reaches the top; `dead` counts those so clean heads need no lookup.
    mutating func dequeued(_ id: JobID, popped: Bool) {
        let c = jobs[id].classIndex
        classes[c].queued -= 1
        if !popped { classes[c].dead += 1 }
        queuedByPriority[PriorityKey(jobs[id].spec.priority), default: 0] -= 1
        queuedTotal -= 1
        if classes[c].modelID >= 0 { queuedByModel[Int(classes[c].modelID)] -= 1 }
        if jobs[id].state == .gated {  // gated exactly when held
            unhold(id)
            if !popped {
                // A held job kept the overqueue slots of its class's backends from the jobs it
                // outranks (`heldBar`): they may take them now.
                routingEpoch &+= 1
                wake(c)
            }
        } else if !popped, jobs[id].declinedSince != nil {
            // The free backends left this job to faster ones (`admits`); the job after it has not
            // been looked at: they decide on it now, so that it is taken or declined (its wait for
            // a better backend bounded from now) instead of waiting unmarked for the class's timer.
            routingEpoch &+= 1
            wake(c)
        }
    }

    /// Binds a job to a backend under a fresh lease and sends it there; or, with `backup`, makes
    /// a backup run that completed first the binding (under its lease, already there); or, with
    /// `claimed`, binds it under the lease its backend already runs it with (`claim`).
    mutating func bind(_ id: JobID, to backend: BackendID, fromQueue: Bool, backup: BackupRun? = nil, claimed: Lease? = nil) {
        routingEpoch &+= 1
        if backends[backend].relookDelay != 0 { backends[backend].relookDelay = 0 }
        if backupGivesWay(on: backend) {
            // A backup gives way to a job bound where it runs.
            stopBackup(on: backend, revoke: true)
        }
        if fromQueue {
            if jobs[id].state == .gated { leaveGate(id, .idleBackend, backend: backend) }
            dequeued(id, popped: true)
        }
        let lease: Lease
        if let backup {
            lease = backup.lease
        } else if let claimed {
            lease = claimed
        } else {
            lease = Lease(nextLease)
            nextLease += 1
        }
        jobs.setState(id, .bound)
        jobs[id].backend = backend
        jobs[id].lease = lease
        jobs[id].waitReason = nil
        jobs[id].attempt += 1
        let attempt = jobs[id].attempt
        let boundAt = backup?.boundAt ?? now
        jobs[id].history.append(AttemptRecord(attempt: attempt, backend: backend, lease: lease, boundAt: boundAt, outcome: .bound))
        let priority = jobs[id].spec.priority
        let round = jobs[id].round
        if let i = servedRound.index(forKey: PriorityKey(priority)) {
            if servedRound.values[i] < round { servedRound.values[i] = round }
        } else {
            servedRound[PriorityKey(priority)] = round
        }
        let c = jobs[id].classIndex
        let e = jobs[id].estimateIndex
        let bi = backends.index(backend)!
        let readyAt = modelReady(bi, c) ?? 0
        var placement: Placement?
        // A binding already there (a backup that won, a claim) was not a placement decision.
        let placed = backup == nil && claimed == nil
        if policy.routing == .expectedCompletion, placed {
            // `e` read before the call: reading the job table among the arguments made the
            // compiler copy the whole coordinator (every buffer retained) for each binding.
            let ect = expectedCompletion(bi, c, e) - now.seconds
            placement = Placement(expectedSeconds: ect)
            if let r = runnerUp, r.job == id, r.by == backend, r.decidedAt == now, r.backend != backend {
                placement?.runnerUp = r.backend
                placement?.runnerUpSeconds = r.at - now.seconds
            }
            runnerUp = nil
        }
        backends[backend].jobs.append(id)
        backends[backend].jobEstimate.append(Int32(jobs[id].estimateIndex))
        backends[backend].jobReadyAt.append(readyAt)
        backends[backend].jobStartedAt.append(-1)
        if readyAt > now.seconds { loadingModels.insert(backend) }
        adjustModelInFlight(backend, 1)
        if fromQueue { wakeDecliners(c) }
        if placed, let m = classes[c].model, !backends[backend].loadedIDs.contains(classes[c].modelID) {
            // Tell the backend to start loading now; the affinity rule decided it pays off.
            requestLoad(backend, m, force: false, .job)
        }
        counters.bound += 1
        if policy.persistChanges {
            out.append(
                .persist(
                    .jobBound(
                        job: id, backend: backend, lease: lease, attempt: attempt, at: boundAt)))
        }
        if placed {
            out.append(
                .assign(job: id, batch: jobs[id].batch, spec: jobs[id].spec, backend: backend, lease: lease, attempt: attempt))
        }
        emit(jobs[id], .bound, placement: placement)
        if placed { out.append(.observe(.bindLatency(id, now - jobs[id].enqueuedAt))) }
        refreshLoad(backend)
    }

    /// Detaches a bound or running job from its backend, closing its current attempt.
    mutating func unbind(_ id: JobID, outcome: AttemptOutcome, error: JobFailure? = nil) {
        guard let ji = jobs.index(id), let backend = jobs[slot: ji].backend else { return }
        let wasRunning = jobs[slot: ji].state == .running
        if let bi = backends.index(backend), let i = backends.records[bi].jobs.firstIndex(of: id) {
            backends[backend].jobs.remove(at: i)
            backends[backend].jobEstimate.remove(at: i)
            backends[backend].jobReadyAt.remove(at: i)
            backends[backend].jobStartedAt.remove(at: i)
            if !backends.records[bi].projectedEnds.isEmpty { backends[backend].projectedEnds[id] = nil }
            if wasRunning { backends[backend].running -= 1 }
            adjustModelInFlight(backend, -1)
            refreshLoad(backend)
        }
        let last = jobs[id].history.count - 1
        if last >= 0 {
            jobs[id].history[last].endedAt = now
            jobs[id].history[last].outcome = outcome
            jobs[id].history[last].error = error
        }
        if !backups.isEmpty { revokeBackups(of: id) }
        if !stragglers.isEmpty { stragglers.remove(id) }
        if !copyable.isEmpty { copyable.remove(id) }
    }

    /// True when the report names the job's current binding; otherwise it is counted as stale and
    /// answered `stale_lease` (`about`: the report's wire type).
    mutating func current(_ id: JobID, _ backend: BackendID, _ lease: Lease, about: String) -> Bool {
        if let i = jobs.index(id), jobs[slot: i].lease == lease, jobs[slot: i].backend == backend,
            jobs[slot: i].state == .bound || jobs[slot: i].state == .running
        {
            backends[backend].lastSeen = now
            return true
        }
        counters.staleReports += 1
        out.append(.observe(.staleReport(id, backend, lease)))
        out.append(.staleLease(job: id, backend: backend, lease: lease, about: about))
        return false
    }

    mutating func started(_ id: JobID, _ backend: BackendID, _ lease: Lease) {
        if !backups.isEmpty, backupReport(id, backend, lease, .started(nil, timed: false)) { return }
        guard current(id, backend, lease, about: "started") else { return }
        guard jobs[id].cancelRequestedAt == nil else { return }  // stopping: nothing new to tell
        markStarted(id, backend)
    }

    /// `at`: when it started, if before now (a backup run that won started when it did, a job
    /// restored as started). `restored`: the store holds the start already and no client listens.
    mutating func markStarted(_ id: JobID, _ backend: BackendID, at start: CoreInstant? = nil, restored: Bool = false) {
        guard jobs[id].state == .bound else { return }
        let start = start ?? now
        jobs.setState(id, .running)
        let last = jobs[id].history.count - 1
        jobs[id].history[last].startedAt = start
        jobs[id].history[last].outcome = .running
        backends[backend].running += 1
        var worthCopying = false
        if let bi = backends.index(backend), let k = backends.records[bi].jobs.firstIndex(of: id) {
            backends[backend].jobStartedAt[k] = start.seconds
            let expected = expectedSeconds(bi, Int(backends.records[bi].jobEstimate[k]))
            jobs[id].expectedAtStart = expected
            watchOverrun(id, backend, k)
            worthCopying = expected >= Self.shortestSpeedSample
        }
        if worthCopying { copyable.insert(id) }
        if !restored {
            if policy.persistChanges { out.append(.persist(.jobStarted(job: id, at: start))) }
            emit(jobs[id], .started)
        }
        refreshLoad(backend)
        // A running job is what a speculative backup copies: the free backends that could copy it
        // look again (one idle since before it started found nothing to copy then). Only those: a
        // wider wake would have every free backend weigh stealing and moving again at each start,
        // which changed placements in fleets of known speeds (routing suite seed 26 knowing
        // everything: 1.25 to 1.26). And only for a job long enough to copy: woken at every start
        // of a short job, each free backend of a fleet went through a dispatch of its own (100
        // backends of jobs lasting milliseconds: the coordinator's CPU 61% -> 90% at 12,500 jobs/s).
        if worthCopying, policy.speculativeBackups, policy.backupRuns > 0, !free.isEmpty {
            wake(jobs[id].classIndex, toCopy: true)
        }
    }

    mutating func progress(
        _ id: JobID, _ backend: BackendID, _ lease: Lease, _ fraction: Double, _ message: String?, timed: Bool
    ) {
        if !backups.isEmpty, backupReport(id, backend, lease, .started(fraction, timed: timed)) { return }
        guard current(id, backend, lease, about: "progress") else { return }
        guard jobs[id].cancelRequestedAt == nil else { return }
        markStarted(id, backend)  // progress implies started
        jobs[id].progress = min(1, max(0, fraction))
        jobs[id].progressMessage = message
        if timed { projectFromProgress(id, backend, jobs[id].progress) }
        emit(jobs[id], .progress(jobs[id].progress, message: message))
    }

    mutating func completed(_ id: JobID, _ backend: BackendID, _ lease: Lease, _ result: RawJSON) {
        if !backups.isEmpty, backupReport(id, backend, lease, .completed) { return }
        // A backup that won: the run it outran may teach its backend's speed (`learnOutrun`).
        let loser = outran
        outran = nil
        guard current(id, backend, lease, about: "completed") else { return }
        if jobs[id].cancelRequestedAt != nil {
            // It finished before it saw the cancel: the client's cancel still decides the end.
            settleCancel(id, .raced)
            return
        }
        if let startedAt = jobs[id].history.last?.startedAt {
            let took = now - startedAt
            // A job that started while its model was loading worked only since the load ended.
            var from = startedAt
            if policy.routing == .expectedCompletion, let m = jobs[id].spec.model,
                let loadedAt = backends[backend].modelReadyAt[m], loadedAt > from
            {
                from = loadedAt
            }
            learn(backend, estimate: jobs[id].estimateIndex, seconds: (now - from).secondsValue)
            if let loser { learnOutrun(loser.backend, loser.estimate, worked: loser.seconds) }
            out.append(.observe(.jobDuration(id, backend, took)))
        }
        unbind(id, outcome: .completed)
        jobs[id].progress = 1
        jobs[id].result = result
        end(id, .completed, .completed(result))
    }

    mutating func failedOnBackend(
        _ id: JobID, _ backend: BackendID, _ lease: Lease, _ failure: JobFailure, retryable: Bool
    ) {
        if !backups.isEmpty, backupReport(id, backend, lease, .failed) { return }
        guard current(id, backend, lease, about: "failed") else { return }
        if jobs[id].cancelRequestedAt != nil {
            settleCancel(id, failure.code == .canceled ? .confirmed : .raced)
            return
        }
        unbind(id, outcome: retryable ? .requeued : .failed, error: failure)
        // `unknown_job`: the assign was lost with a link (Protocol 6.6), no sign of a bad backend.
        if policy.inhibitAfterFailure > .zero, failure.code != .unknownJob {
            let until = now + policy.inhibitAfterFailure
            backends[backend].inhibitedUntil = until
            schedule(until, .inhibit(backend))
            refreshLoad(backend)
        }
        if retryable {
            requeueOrFail(id, .backendFailed, error: failure, from: backend)
        } else {
            jobs[id].failure = failure
            end(id, .failed, .failed(failure))
        }
    }

    /// A job lost its binding through no fault of its own (its attempt is closed `requeued` with
    /// `error`): another attempt, or failed when `maxAttempts` attempts ended that way.
    mutating func requeueOrFail(_ id: JobID, _ cause: RequeueCause, error: JobFailure, from backend: BackendID) {
        jobs[id].lostAttempts += 1
        guard jobs[id].lostAttempts < policy.maxAttempts else {
            let last = jobs[id].history.count - 1
            if last >= 0 { jobs[id].history[last].outcome = .failed }
            let j = jobs[id]
            let tried = j.history.map { a in
                "attempt \(a.attempt) on backend \(a.backend): \(a.outcome.rawValue)"
                    + (a.error.map { " (\($0.code))" } ?? "")
            }
            let failure = JobFailure(
                code: .attemptsExhausted,
                message: Self.clampText(
                    "gave up after \(j.lostAttempts) attempts (max \(policy.maxAttempts)); " + tried.joined(separator: "; ")),
                attempts: j.history)
            jobs[id].failure = failure
            end(id, .failed, .failed(failure))
            return
        }
        counters.requeued += 1
        persistRequeued(id)
        out.append(.observe(.requeued(id, cause)))
        enqueue(id, event: .requeued(cause, error: error), from: backend)
    }

    mutating func cancel(_ id: JobID) {
        guard let j = jobs.get(id) else { return }
        switch j.state {
        case .completed, .failed, .canceled:
            return
        case .queued, .gated:
            dequeued(id, popped: false)
            jobs[id].waitReason = nil
        case .bound, .running:
            guard j.cancelRequestedAt == nil else { return }  // already canceling
            out.append(.cancel(job: id, backend: j.backend!, lease: j.lease!))
            guard policy.cancelGrace > .zero, backends.get(j.backend!)?.link == .up else {
                // No grace, or no link to confirm over (suspect: a backend that comes back finds
                // the binding gone and stops the job as stale): it ends now, as after a lost link.
                unbind(id, outcome: .canceled)
                if policy.cancelGrace > .zero { out.append(.observe(.cancelSettled(id, j.backend!, .linkLost))) }
                break
            }
            beginCanceling(id)
            return
        }
        end(id, .canceled, .canceled)
    }

    /// A bound or running job a client canceled: its backend was told to stop. The job keeps its
    /// slot (so nothing new is routed to a backend still busy with it) until `settleCancel`.
    ///
    /// The outcome is decided now: the job will end `canceled`, whatever the backend reports,
    /// so that end is written to the store at once. A coordinator restarted before the backend
    /// confirmed restores the job `canceled`, and the backend, finding the binding gone from
    /// `welcome.bindings`, stops it as stale: the job ends exactly once.
    mutating func beginCanceling(_ id: JobID) {
        jobs[id].cancelRequestedAt = now
        if !backups.isEmpty { revokeBackups(of: id) }
        if policy.persistChanges { out.append(.persist(.jobEnded(storedEnd(id, .canceled)))) }
        emit(jobs[id], .canceling)
        schedule(now + policy.cancelGrace, .cancelGrace(id))
    }

    /// Ends a canceling job `canceled` and frees its backend slot.
    mutating func settleCancel(_ id: JobID, _ how: CancelSettlement) {
        guard let backend = jobs[id].backend else { return }
        unbind(id, outcome: .canceled)
        out.append(.observe(.cancelSettled(id, backend, how)))
        end(id, .canceled, .canceled)
    }

    mutating func cancelGraceDue(_ id: JobID) {
        guard let j = jobs.get(id), !j.state.isFinal, let at = j.cancelRequestedAt, at + policy.cancelGrace <= now
        else { return }
        counters.cancelGraceExpired += 1
        settleCancel(id, .graceExpired)
    }

    /// A job's end as the store keeps it. An `attempts_exhausted` failure's attempts are the
    /// job's history, kept once. A job canceled while its backend still runs it (written when
    /// the cancel begins) has its open attempt closed as `canceled` now: a coordinator restarted
    /// before the backend confirms shows the attempt ended, as it would have been.
    func storedEnd(_ id: JobID, _ state: JobState) -> StoredJob {
        let j = jobs[id]
        var failure = j.failure
        failure?.attempts = []
        var history = j.history
        if state == .canceled, j.cancelRequestedAt != nil, let last = history.indices.last, history[last].endedAt == nil {
            history[last].endedAt = now
            history[last].outcome = .canceled
        }
        return StoredJob(
            id: id, batch: j.batch, state: state, backend: j.backend, lease: j.lease, attempt: j.attempt,
            lostAttempts: j.lostAttempts, result: j.result, failure: failure, endedAt: now, history: history)
    }

    /// The single place where a job reaches a final state.
    mutating func end(_ id: JobID, _ state: JobState, _ kind: JobEvent.Kind) {
        precondition(state.isFinal && !jobs[id].state.isFinal, "job \(id) would end twice")
        jobs.setState(id, state)
        jobs[id].endedAt = now
        switch state {
        case .completed: counters.completed += 1
        case .failed: counters.failed += 1
        default: counters.canceled += 1
        }
        // Durable before the final event goes out: a crash never yields a second one. A canceled
        // job that was canceling was written when the cancel began (`beginCanceling`).
        if policy.persistChanges && jobs[id].cancelRequestedAt == nil {
            out.append(.persist(.jobEnded(storedEnd(id, state))))
        }
        emit(jobs[id], kind)
        if finished.isEmpty { schedule(now + policy.finishedJobRetention, .retention) }
        finished.append((id, now))
        evictFinished()
    }

    /// Drops finished jobs beyond the count limit or older than the retention.
    mutating func evictFinished() {
        var evictedJobs: [JobID] = []
        var evictedBatches: [BatchID] = []
        while let (first, endedAt) = finished.first {
            guard finished.count > policy.finishedJobLimit || endedAt.nanoseconds &+ retentionNanos <= now.nanoseconds
            else {
                break
            }
            finished.removeFirst()
            if policy.persistChanges { evictedJobs.append(first) }
            guard let batch = jobs.remove(first)?.batch, let i = batches.index(forKey: batch) else { continue }
            batches.values[i].live -= 1
            if batches.values[i].live <= 0 {
                if let key = batches.values[i].key { batchKeys[key] = nil }
                batches.remove(at: i)
                if policy.persistChanges { evictedBatches.append(batch) }
            }
        }
        if !evictedJobs.isEmpty { out.append(.persist(.evicted(jobs: evictedJobs, batches: evictedBatches))) }
    }

    mutating func retentionDue() {
        evictFinished()
        if let first = finished.first {
            schedule(first.endedAt + policy.finishedJobRetention, .retention)
        }
    }
}
