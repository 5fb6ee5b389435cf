import DequeModule
import Foundation
import Logging
import MusterCore
import MusterProtocol
import MusterStore
import MusterTransport

/// What waits on one client link for the store, in the order it must go out.
struct HeldQueue {
    /// `barrier`: the change that must be durable first (0: none, it only keeps its place);
    /// `batch`: the batch the message is about, if any; `job`: the job, if it is about one job.
    var items = Deque<(barrier: UInt64, batch: BatchID?, job: JobID?, bytes: [UInt8])>()
    /// The bytes of `items`.
    private(set) var bytes = 0
    /// How many held items concern each job; each batch as a whole (an `accepted`, which every
    /// event of the batch must follow); and no batch (an answer such as `subscribed`, which
    /// everything after it must follow).
    var jobs: [JobID: Int] = [:]
    var batches: [BatchID: Int] = [:]
    var unbatched = 0

    mutating func append(_ barrier: UInt64, _ batch: BatchID?, _ job: JobID?, _ bytes: [UInt8]) {
        items.append((barrier, batch, job, bytes))
        self.bytes += bytes.count
        if let job {
            jobs[job, default: 0] += 1
        } else if let batch {
            batches[batch, default: 0] += 1
        } else {
            unbatched += 1
        }
    }

    /// Whether a message about `job` of `batch` that needs no durability may go ahead of what is
    /// held: nothing held about that job, its batch as a whole, or no batch. Another job's end
    /// waiting for the disk does not hold it back (Protocol/README.md 7.2 orders each job's
    /// events, and a batch's events after its `accepted`, nothing across jobs).
    func mayBypass(_ batch: BatchID?, _ job: JobID?) -> Bool {
        guard unbatched == 0 else { return false }
        guard let batch else { return true }
        // About a batch as a whole (today every such message is durable, so this is a guard):
        // it goes after everything held.
        guard let job else { return items.isEmpty }
        return batches[batch] == nil && jobs[job] == nil
    }

    /// Removes and returns the items whose barrier is durable, from the front.
    mutating func release(durable: UInt64) -> [[UInt8]] {
        var out: [[UInt8]] = []
        while let first = items.first, first.barrier <= durable {
            items.removeFirst()
            bytes -= first.bytes.count
            if let job = first.job {
                if let n = jobs[job], n > 1 { jobs[job] = n - 1 } else { jobs[job] = nil }
            } else if let batch = first.batch {
                if let n = batches[batch], n > 1 { batches[batch] = n - 1 } else { batches[batch] = nil }
            } else {
                unbatched -= 1
            }
            out.append(first.bytes)
        }
        return out
    }
}

/// The durability barrier between the core and clients.
///
/// The core emits `.persist(change)` for every change the store keeps, in order; the daemon
/// appends each to the store, which commits them in groups (one fsync for many changes) on its own
/// thread. What a client is told of durable facts (an `accepted`, a final job event, any answer or
/// HTTP response of the client API) leaves only once every change appended before it is durable:
/// a client is never told of a batch or an end that a crash could take back. Progress on the way
/// (a binding, a start) is not held: a crash can undo it, and the job then runs again, so no final
/// event is ever repeated. Work sent to backends does not wait either (a binding lost in a crash
/// is repaired at restart: its backend is told it is stale).
extension Daemon {
    /// Opens the store and takes over what it holds. Before that succeeds the daemon serves only
    /// probes and metrics: submissions are refused and backends are not linked.
    func openStore() {
        guard let store, !storeOpened, !stopping, isLeading else { return }
        let started = ContinuousClock.now
        do {
            let snapshot = try store.open()
            storeOpened = true
            storeFailure = nil
            // Backend ids stay what they were: a reconnecting agent is known by its name. New ids
            // start past every stored backend's and every id a stored job names (its backend, its
            // attempts, the refusals of a `no_eligible_backend`), so an id a job still shows is
            // never given to another backend, even one forgotten since.
            for b in snapshot.backends where !b.id.isLocal {
                idsByName[b.name] = b.id
                namesByID[b.id] = b.name
                nextRemoteID = max(nextRemoteID, b.id.rawValue + 1)
            }
            for j in snapshot.jobs {
                if let b = j.backend { nextRemoteID = max(nextRemoteID, b.rawValue + 1) }
                for a in j.history { nextRemoteID = max(nextRemoteID, a.backend.rawValue + 1) }
                for r in j.failure?.refusals ?? [] { nextRemoteID = max(nextRemoteID, r.backend.rawValue + 1) }
            }
            if ownerQuota > 0 { countInFlight(snapshot) }
            perform(core.restore(snapshot, at: now))
            pump()
            let unfinished = snapshot.jobs.count { !$0.state.isFinal }
            logger.notice(
                "job store opened",
                metadata: [
                    "store.url": "\(configuration.settings.store.url)", "store.epoch": "\(snapshot.epoch)",
                    "jobs.stored": "\(snapshot.jobs.count)", "jobs.unfinished": "\(unfinished)",
                    "batches": "\(snapshot.batches.count)",
                    "took_ms": "\((ContinuousClock.now - started).nanosecondsClamped / 1_000_000)",
                ])
            startLocalBackends()
            dialRemoteBackends()
        } catch {
            if error.kind == .fenced {
                depose("the job store refused this coordinator's term as fenced: \(error)")
                return
            }
            if storeFailure == nil {
                logger.error(
                    "job store unavailable: accepting no work until it opens",
                    metadata: ["store.url": "\(configuration.settings.store.url)", "error": "\(error)"])
            }
            // Once per streak (and when its kind changes), as for a commit that fails: the open
            // is retried every 2 s.
            if storeFailure?.kind != error.kind {
                metrics.counter("muster_store_failures_total", ["kind": error.kind.rawValue]).increment()
            }
            storeFailure = error
            transport.assumeIsolated { t in
                _ = t.schedule(after: .seconds(2)) { [weak self] _ in self?.assumeIsolated { $0.openStore() } }
            }
        }
    }

    /// Appends one change to the store.
    func persist(_ change: StoreChange) {
        guard let store else { return }
        storeAppended = store.append(change)
    }

    /// True when a change appended to the store is not durable yet.
    var behindStore: Bool { storeDurable < storeAppended }

    /// Sends to a client. `durable`: the message tells of something a crash must not take back
    /// (an `accepted`, a final job event, an answer that reads job state), so it waits until
    /// every change appended so far is durable. Other messages (a job `bound`, `started`,
    /// `progress`...) go at once, unless something about their `job` (or their `batch` as a
    /// whole) is held for this link: a job's events keep their order, and a submitter gets
    /// `accepted` before any event of its batch (Protocol/README.md 7.2), while one job's end
    /// waiting for the disk does not hold back another job's binding, even in the same batch.
    func sendToClient(
        _ bytes: [UInt8], to connection: ConnectionID, durable: Bool = true, batch: BatchID? = nil, job: JobID? = nil
    ) {
        if heldOutput.isEmpty && !(durable && behindStore) {
            // The common case, and the only one without a store: nothing held anywhere.
            send(bytes, to: connection)
        } else if let i = heldOutput.index(forKey: connection) {
            if !durable, heldOutput.values[i].mayBypass(batch, job) {
                send(bytes, to: connection)
            } else {
                heldOutput.values[i].append(durable ? storeAppended : 0, batch, job, bytes)
            }
        } else if durable && behindStore {
            var queue = HeldQueue()
            queue.append(storeAppended, batch, job, bytes)
            heldOutput[connection] = queue
        } else {
            send(bytes, to: connection)
        }
    }

    /// An HTTP response of the client API about jobs: a submission, a cancel, a drain, and the
    /// reads of a batch or a job. It is answered once everything appended so far is durable, so a
    /// read never shows a batch or a job's end that a crash could take back. Errors (a refusal
    /// asserts nothing) are answered at once. While the store cannot write, a read that would
    /// wait is answered `store_unavailable` (503) instead of hanging until the store recovers.
    func respondToClient(_ request: HTTPRequest, _ response: HTTPResponse) -> HTTPOutcome {
        let read = request.method == .get || request.method == .head
        // The live views (`/v1/backends`) show no job's state: never held.
        let aboutJobs = request.path.hasPrefix("/v1/batches/") || request.path.hasPrefix("/v1/jobs/")
        guard behindStore, response.status < 400, !read || aboutJobs else { return .respond(response) }
        if read, storeFailure != nil { return .respond(unwrittenRead()) }
        heldResponses.append((storeAppended, request.id, response, read))
        return .deferred
    }

    /// The answer to a read of a batch or a job while the store cannot write.
    func unwrittenRead() -> HTTPResponse {
        errorResponse(RequestError(
            .storeUnavailable,
            "the job store cannot write (\(storeFailure?.kind.rawValue ?? "failed")), so what this would show may not be durable yet; retry later"))
    }

    /// The store just failed: reads held for it are answered `store_unavailable` now rather than
    /// when it recovers (a cancel or a drain still waits: what it did is not written yet).
    func answerHeldReads() {
        guard heldResponses.contains(where: \.read) else { return }
        var kept = Deque<(barrier: UInt64, request: HTTPRequestID, response: HTTPResponse, read: Bool)>()
        for held in heldResponses {
            if held.read {
                let answer = unwrittenRead()
                _ = transport.assumeIsolated { $0.respond(to: held.request, with: answer) }
            } else {
                kept.append(held)
            }
        }
        heldResponses = kept
    }

    /// The store's thread reports a commit; the daemon reads the store's own figures (so reports
    /// that arrive out of order cannot mislead it).
    nonisolated func storeReported(_ commit: StoreCommit) {
        Task { await self.storeCommitted() }
    }

    func storeCommitted() {
        guard let store else { return }
        let stats = store.counters
        if stats.durable > storeDurable { storeDurable = stats.durable }
        if let failure = stats.lastFailure {
            if failure.kind == .fenced {
                // A newer term leads: nothing of this one may be acknowledged or routed.
                depose("the job store refused a commit as fenced: \(failure)")
                return
            }
            if storeFailure == nil {
                logger.error(
                    "job store cannot write: accepting no new work until it can; nothing unwritten is acknowledged",
                    metadata: ["error": "\(failure)", "store.pending": "\(stats.appended - stats.durable)"])
            }
            if storeFailure?.kind != failure.kind {
                metrics.counter("muster_store_failures_total", ["kind": failure.kind.rawValue]).increment()
            }
            storeFailure = failure
            answerHeldReads()
        } else if let failure = storeFailure, storeOpened {
            logger.notice("job store writes again", metadata: ["error.was": "\(failure)"])
            storeFailure = nil
        }
        releaseHeld()
    }

    /// Sends what waited for changes that are durable now, in order.
    func releaseHeld() {
        if !heldOutput.isEmpty {
            var emptied: [ConnectionID] = []
            var streaming: [ConnectionID] = []
            for connection in Array(heldOutput.keys) {
                let ready = heldOutput[connection]!.release(durable: storeDurable)
                for bytes in ready { send(bytes, to: connection) }
                if heldOutput[connection]!.items.isEmpty { emptied.append(connection) }
                if !ready.isEmpty, snapshotStreams[connection] != nil { streaming.append(connection) }
            }
            for c in emptied { heldOutput[c] = nil }
            // Their held snapshots made room: the rest of what they owe follows.
            for c in streaming { pumpSnapshots(c) }
        }
        while let first = heldResponses.first, first.barrier <= storeDurable {
            heldResponses.removeFirst()
            _ = transport.assumeIsolated { $0.respond(to: first.request, with: first.response) }
        }
    }

    /// Forgets what was held for a link that closed.
    func dropHeld(for connection: ConnectionID) {
        heldOutput[connection] = nil
    }

    /// Why no new work can be accepted now, if the store is the reason.
    var storeRefusal: RequestError? {
        guard store != nil else { return nil }
        if !storeOpened {
            return RequestError(
                .storeUnavailable, "the job store is not open (\(storeFailure.map { "\($0)" } ?? "opening")); retry later")
        }
        if let f = storeFailure {
            return RequestError(.storeUnavailable, "the job store cannot write (\(f)); retry later")
        }
        if storeAppended - storeDurable > Self.maxUnwrittenChanges {
            return RequestError(
                .storeUnavailable,
                "the job store is \(storeAppended - storeDurable) changes behind; retry later")
        }
        return nil
    }

    /// A lookup that found no such batch or job, as the client should hear it: until the store
    /// has opened (after a restart it may be retrying), the coordinator does not know what it
    /// holds yet, so `store_unavailable` (retry later), not `unknown_batch` or `unknown_job`.
    func notFound(_ code: ErrorCode, _ message: String) -> RequestError {
        if store != nil, !storeOpened, let refusal = storeRefusal { return refusal }
        return RequestError(code, message)
    }

    /// Changes appended but not yet written beyond which new submissions wait (bounded memory).
    static let maxUnwrittenChanges: UInt64 = 1_000_000
}
