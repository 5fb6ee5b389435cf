import MusterProtocol

extension Coordinator {
    /// Takes over what a job store kept (`StoreSnapshot`) when the coordinator starts again after
    /// a crash or a restart. Call it once, first, on a coordinator that has no jobs yet.
    ///
    /// - Batches come back with their keys (an idempotent retry still gets the first receipt).
    /// - Queued jobs queue again in their original order and priority: batch by batch, and within
    ///   a batch in `queueOrder` (longest expected first under expected completion).
    /// - Jobs stored as bound stay bound to their backend under their lease (`running` since
    ///   their stored start, when the store has one): the backend is kept
    ///   as `suspect` with the incarnation it had, for the suspect grace. A backend that comes back
    ///   with that incarnation (it kept running) gets its jobs back in `welcome.bindings`; one
    ///   that comes back with a new incarnation, or not within the grace, has its jobs requeued
    ///   exactly as if its link had been lost under this coordinator.
    /// - Finished jobs come back for queries and are evicted by the same retention rules.
    /// - Leases continue above `snapshot.epoch << 32` (and above every stored lease), so a binding
    ///   sent before the crash but never stored cannot be confused with a new one.
    ///
    /// Emits no job events (no client can be subscribed yet) and no `.persist` for what the store
    /// already holds; evictions that became due while the coordinator was down are persisted.
    public mutating func restore(_ snapshot: StoreSnapshot, at now: CoreInstant) -> [CoreAction] {
        precondition(jobs.count == 0 && batches.isEmpty, "restore runs before any job exists")
        begin(now)
        var maxLease = snapshot.epoch << 32
        for j in snapshot.jobs { if let l = j.lease { maxLease = max(maxLease, l.rawValue) } }
        nextLease = max(nextLease, maxLease + 1)
        claimBelow = nextLease
        // Jobs and batches both come in ascending id order, and a batch's jobs are consecutive
        // ids: one walk over the jobs instead of a lookup table of a million entries.
        var cursor = 0
        let stored = Dictionary(snapshot.backends.map { ($0.id, $0) }, uniquingKeysWith: { _, last in last })

        // Remote backends known before are expected back: the warm-up gate waits for them (its
        // window counted from now) instead of failing restored jobs that only they could run.
        // One whose link was down is listed down: the gate did not wait for it before either.
        for b in snapshot.backends where !b.id.isLocal && !backends.contains(b.id) {
            if b.down { restoreDown(b) } else { expect(b.id, name: b.name, configured: false) }
        }
        var ended: [(job: JobID, endedAt: CoreInstant)] = []
        ended.reserveCapacity(snapshot.jobs.count)
        var requeue: [JobID] = []
        for batch in snapshot.batches {
            var ids: [JobID] = []
            ids.reserveCapacity(batch.jobCount)
            var next = batch.firstJob.rawValue
            var live = 0
            // The batch's unfinished jobs, with their entry and their stored binding if any.
            var unfinished:
                [(id: JobID, entry: Int, bound: (BackendID, Lease)?, boundAt: CoreInstant?, startedAt: CoreInstant?)] = []
            let classOf = batch.entries.map { indexes(for: $0.spec) }
            for (i, entry) in batch.entries.enumerated() {
                let (c, e) = classOf[i]
                for _ in 0..<entry.count {
                    let id = JobID(next)
                    next += 1
                    // The batch's receipt lists every job it made, as before the restart (a
                    // retry under its key gets the first receipt whole).
                    ids.append(id)
                    // A job the store no longer has (evicted) is not brought back.
                    while cursor < snapshot.jobs.count, snapshot.jobs[cursor].id < id { cursor += 1 }
                    guard cursor < snapshot.jobs.count, snapshot.jobs[cursor].id == id else { continue }
                    let s = snapshot.jobs[cursor]
                    live += 1
                    var record = JobRecord(
                        id: id, batch: batch.id, spec: entry.spec, state: .queued, backend: nil, lease: nil,
                        attempt: s.attempt, progress: 0, progressMessage: nil, history: s.history, result: nil, failure: nil,
                        waitReason: nil, submittedAt: batch.submittedAt, endedAt: nil, classIndex: c, estimateIndex: e,
                        round: 0, seq: 0, enqueuedAt: now)
                    record.lostAttempts = s.lostAttempts
                    if s.state.isFinal {
                        record.state = s.state
                        record.backend = s.backend
                        record.lease = s.lease
                        record.result = s.result
                        record.failure = s.failure
                        if s.failure?.code == .attemptsExhausted { record.failure?.attempts = s.history }
                        // Ran once and completed: its attempt is made when a query asks for it.
                        if s.history.isEmpty, s.state == .completed, s.backend != nil, s.lease != nil, let b = s.boundAt {
                            record.onlyAttempt = OnlyAttempt(boundAt: b, startedAt: s.startedAt)
                        }
                        record.progress = s.state == .completed ? 1 : 0
                        record.endedAt = s.endedAt ?? now
                        jobs.insert(record)
                        ended.append((id, record.endedAt!))
                        continue
                    }
                    jobs.insert(record)
                    let bound = s.state == .bound || s.state == .running
                    unfinished.append(
                        (id, i, bound ? s.backend.flatMap { b in s.lease.map { (b, $0) } } : nil, s.boundAt, s.startedAt))
                }
            }
            // The queue order they had: the batch's rounds and sequence numbers follow
            // `queueOrder`, as when it was submitted.
            func queue(_ k: Int) {
                let (id, spec) = (unfinished[k].id, batch.entries[unfinished[k].entry].spec)
                jobs[id].round = assignRound(owner: spec.owner, priority: spec.priority)
                jobs[id].seq = takeSeq()
            }
            if let reordered = unfinished.isEmpty ? nil : queueOrder(classOf) {
                var byEntry = [[Int]](repeating: [], count: batch.entries.count)
                for (k, u) in unfinished.enumerated() { byEntry[u.entry].append(k) }
                for i in reordered { byEntry[i].forEach(queue) }
            } else {
                unfinished.indices.forEach(queue)
            }
            for u in unfinished {
                if let (backend, lease) = u.bound,
                    let incarnation = stored[backend]?.incarnation ?? backends.get(backend)?.incarnation
                {
                    adopt(
                        u.id, on: backend, lease: lease, since: u.boundAt ?? now, startedAt: u.startedAt,
                        name: stored[backend]?.name, incarnation: incarnation)
                } else {
                    requeue.append(u.id)
                }
            }
            nextJobID = max(nextJobID, next)
            nextBatchID = max(nextBatchID, batch.id.rawValue + 1)
            guard live > 0 else { continue }
            batches[batch.id] = BatchRecord(
                id: batch.id, key: batch.key, owner: batch.owner, jobs: ids, submittedAt: batch.submittedAt, live: live,
                entries: batch.key == nil ? [] : batch.entries)
            if let key = batch.key { batchKeys[key] = batch.id }
        }
        // Queued again batch by batch, each in its queue order (rounds and sequence numbers above).
        // No `queued` event: the jobs are not new, and nobody listens yet.
        for id in requeue { enqueue(id, event: nil) }
        // A queued job may be one whose binding was sent and never stored: its backend, if it was
        // up, gets the chance to claim it before anything is bound (`claim`).
        let awaited =
            policy.reclaimWindow > .zero && !requeue.isEmpty
            ? backends.records.filter { !$0.id.isLocal && ($0.link == .expected || $0.link == .suspect) }.map(\.id) : []
        if !awaited.isEmpty {
            reclaimAwaited = Set(awaited)
            reclaimUntil = now + policy.reclaimWindow
            schedule(reclaimUntil, .reclaimed)
            readinessDirty = true
        }
        ended.sort { ($0.endedAt, $0.job) < ($1.endedAt, $1.job) }
        for e in ended { finished.append(e) }
        if let first = finished.first { schedule(first.endedAt + policy.finishedJobRetention, .retention) }
        evictFinished()
        return finish()
    }

    /// Binds a restored job to the backend it was bound to when the store last wrote it. The
    /// backend is created `suspect` with its stored incarnation when the core does not know it.
    private mutating func adopt(
        _ id: JobID, on backend: BackendID, lease: Lease, since boundAt: CoreInstant, startedAt: CoreInstant?,
        name: String?, incarnation: Incarnation
    ) {
        if backends.get(backend)?.link == .down {
            // Not from changes stored in order (a backend's jobs are requeued before it is
            // stored down, and it is stored up again before anything else is bound to it): a
            // binding its backend has dropped by now, so the job queues again.
            enqueue(id, event: nil)
            return
        }
        if backends.get(backend)?.link == .expected {
            // Known from the store and not linked yet: it holds jobs, so it is suspect, not expected.
            backends[backend].incarnation = incarnation
            backends[backend].link = .suspect
            backends[backend].suspectUntil = now + policy.suspectGrace
            backends[backend].downSince = nil
            schedule(now + policy.suspectGrace, .suspect(backend))
            refresh(backend, reindex: true)
        }
        if !backends.contains(backend) {
            var b = Backend(
                id: backend, name: name ?? "backend-\(backend)", priority: 0, link: .suspect, incarnation: incarnation,
                helloSlots: 1, registeredAt: now)
            b.suspectUntil = now + policy.suspectGrace
            backends.put(b)
            schedule(b.suspectUntil!, .suspect(backend))
            scheduleGateWindow(backend)
            refresh(backend, reindex: true)
        } else if backends[backend].incarnation != incarnation {
            // Registered again with another incarnation before the restore: its leases died.
            enqueue(id, event: nil)
            return
        }
        jobs.setState(id, .bound)
        jobs[id].backend = backend
        jobs[id].lease = lease
        // The attempts that ended before, and the current one as it was bound.
        jobs[id].history.append(
            AttemptRecord(attempt: jobs[id].attempt, backend: backend, lease: lease, boundAt: boundAt, outcome: .bound))
        backends[backend].jobs.append(id)
        backends[backend].jobEstimate.append(Int32(jobs[id].estimateIndex))
        backends[backend].jobReadyAt.append(0)
        backends[backend].jobStartedAt.append(-1)
        adjustModelInFlight(backend, 1)
        refreshLoad(backend)
        // Stored as started: running again, since then (its backend need not say `started` again).
        if let startedAt { markStarted(id, backend, at: startedAt, restored: true) }
    }
}
