import MusterCore
import MusterProtocol
import MusterTransport

/// The `snapshot` events a subscription still owes its link, sent in chunks as the link drains
/// (Protocol/README.md 7.2). A subscription to every job can cover the whole retention
/// (`jobs.retain_finished`, 100,000 by default): sent at once, its snapshots (about 20 MB)
/// passed the link's high-water mark and the link was closed as a slow peer before a single
/// one arrived, the work of encoding them all spent on the loop thread in one go.
///
/// The jobs are walked in id order from `next` through `last` (the last job that existed when
/// the subscription came; later jobs are followed from their `queued` on). A job whose snapshot
/// is still owed and that has an event for the link gets its snapshot then, made from that
/// event, in place of it (`sentEarly`), so each job's snapshot still comes before its other
/// events on the link.
struct SnapshotStream {
    var next: JobID
    let last: JobID
    /// The subscription's scope: one batch, one owner's jobs, or (both nil) every job.
    let batch: BatchID?
    let owner: String?
    /// Jobs past `next` whose snapshot went out early, with an event.
    var sentEarly: Set<JobID> = []
    /// With `subscribe.finished_snapshots`: which of the jobs that had ended get a snapshot.
    var finished: FinishedSelection?

    /// Whether the snapshot of `job` (of `batch`, whose owner `owner` gives) is still owed.
    func owes(_ job: JobID, batch jobBatch: BatchID, owner jobOwner: () -> String?) -> Bool {
        job >= next && job <= last && !sentEarly.contains(job) && covers(jobBatch, owner: jobOwner)
    }

    /// Whether the walk passes `job` by: it had ended when the subscription came and is not one
    /// of the most recently ended that `finished_snapshots` keeps.
    func passes(_ job: JobID, ended: CoreInstant?) -> Bool {
        guard let finished, let ended, ended <= finished.before else { return false }
        return !finished.kept.contains(job)
    }

    /// Whether a job of `jobBatch` (whose owner `jobOwner` gives) is in the subscription's scope.
    func covers(_ jobBatch: BatchID, owner jobOwner: () -> String?) -> Bool {
        if let batch, batch != jobBatch { return false }
        if let owner, owner != jobOwner() { return false }
        return true
    }
}

/// The jobs in a subscription's scope that had ended when it came and still get a snapshot (the
/// `finished_snapshots` most recently ended), and how the others ended (`subscribed.omitted`).
struct FinishedSelection {
    /// When the subscription came: a job that ended later gets its snapshot (or its end) anyway.
    let before: CoreInstant
    var kept: Set<JobID> = []
    var omitted = CoordinatorToClient.Subscribed.Ended()

    init(before: CoreInstant) { self.before = before }

    /// Counts a job that ended `state` among the omitted (`by` -1: takes it back out).
    mutating func omit(_ state: JobState, by n: Int = 1) {
        switch state {
        case .completed: omitted.completed += n
        case .failed: omitted.failed += n
        case .canceled: omitted.canceled += n
        default: break
        }
    }
}

extension Daemon {
    /// Most snapshots encoded in one turn of the loop before other links get theirs.
    static let snapshotChunk = 1024
    /// Most jobs walked in one turn, counting those passed by (`finished_snapshots`).
    static let snapshotWalk = 16 * snapshotChunk

    /// Picks the `limit` most recently ended jobs of a new subscription's scope (one batch, one
    /// owner, or every job) to get a snapshot, and counts the others by how they ended.
    func selectFinished(limit: Int, batch: BatchRecord?, owner: String?) -> FinishedSelection {
        var selection = FinishedSelection(before: now)
        if let batch {
            // At most a batch's size: sort its ended jobs.
            let ended = core.endedJobs(of: batch).sorted { ($0.at, $0.job) > ($1.at, $1.job) }
            for (k, e) in ended.enumerated() {
                if k < limit { selection.kept.insert(e.job) } else { selection.omit(e.state) }
            }
        } else if let owner {
            var owners: [BatchID: Bool] = [:]
            core.forEachEndedJob { job, state, _, batch in
                let mine = owners[batch] ?? { let m = core.batch(batch)?.owner == owner; owners[batch] = m; return m }()
                guard mine else { return true }
                if selection.kept.count < limit { selection.kept.insert(job) } else { selection.omit(state) }
                return true
            }
        } else {
            // Every job: the newest `limit`, and the rest counted from the per-state totals.
            let totals = core.jobsByState
            selection.omitted = .init(completed: totals[.completed] ?? 0, failed: totals[.failed] ?? 0, canceled: totals[.canceled] ?? 0)
            core.forEachEndedJob { job, state, _, _ in
                guard selection.kept.count < limit else { return false }
                selection.kept.insert(job)
                selection.omit(state, by: -1)
                return true
            }
        }
        return selection
    }

    /// Starts sending the snapshots of a new subscription (`scope`: one batch, one owner, or every
    /// job) and sends the first chunk at once (all of them, for a small scope).
    func startSnapshots(_ id: ConnectionID, batch: BatchRecord?, owner: String?, finished: FinishedSelection?) {
        let first: JobID
        let last: JobID
        if let batch {
            guard let lo = batch.jobs.min(), let hi = batch.jobs.max() else { return }
            (first, last) = (lo, hi)
        } else {
            guard let hi = core.lastJobID else { return }
            (first, last) = (JobID(0), hi)
        }
        snapshotStreams[id, default: []].append(
            SnapshotStream(next: first, last: last, batch: batch?.id, owner: batch == nil ? owner : nil, finished: finished))
        pumpSnapshots(id)
    }

    /// Sends owed snapshots to the link while it has room, a chunk per turn; asks to be called
    /// again (`drained`, or a release of held messages) for the rest.
    func pumpSnapshots(_ id: ConnectionID) {
        guard var streams = snapshotStreams[id] else { return }
        var budget = Self.snapshotChunk
        var walk = Self.snapshotWalk
        var room = snapshotLowWater - outboundBytes(id)
        while !streams.isEmpty, budget > 0, walk > 0, room > 0 {
            var stream = streams[0]
            var next = stream.next
            let found = core.nextJobID(from: &next, through: stream.last, steps: &walk) { stream.passes($0, ended: $1) }
            stream.next = next
            guard let job = found else {
                // Done, or walked as far as this turn goes (on from `next` next time).
                if next > stream.last || next.rawValue == 0 { streams.removeFirst() } else { streams[0] = stream }
                continue
            }
            budget -= 1
            if stream.sentEarly.remove(job) == nil, let record = core.job(job),
                stream.covers(record.batch, owner: { core.batch(record.batch)?.owner })
            {
                let bytes = CoordinatorToClient.job(snapshotEvent(record)).encode()
                room -= bytes.count
                sendToClient(bytes, to: id, batch: record.batch, job: job)
            }
            streams[0] = stream
        }
        // Sending may have closed the link (its streams are gone with it).
        guard snapshotStreams[id] != nil else { return }
        snapshotStreams[id] = streams.isEmpty ? nil : streams
        guard !streams.isEmpty else { return }
        let queued = transport.assumeIsolated { $0.queuedBytes(for: id) } ?? 0
        if queued > 0 || budget == 0 || walk == 0 {
            // The socket drains what is queued (or, at the end of a chunk, lets other links go
            // first): go on from there.
            let mark = budget == 0 || walk == 0 ? snapshotLowWater : snapshotLowWater / 2
            transport.assumeIsolated { $0.notifyWhenDrained(id, atOrBelow: mark) }
        }
        // Else the room went to messages held for the store: `releaseHeld` goes on.
    }

    /// Bytes waiting to reach the link: queued in the transport, and held for the store.
    private func outboundBytes(_ id: ConnectionID) -> Int {
        (transport.assumeIsolated { $0.queuedBytes(for: id) } ?? 0) + (heldOutput[id]?.bytes ?? 0)
    }

    /// For `publish`: when the link still owes `event`'s job a snapshot, sends the snapshot (the
    /// job's state after the event) instead of the event and returns true.
    func sendOwedSnapshot(_ event: JobEvent, to id: ConnectionID) -> Bool {
        guard var streams = snapshotStreams[id] else { return false }
        var owed = false
        for i in streams.indices
        where streams[i].owes(event.job, batch: event.batch, owner: { core.batch(event.batch)?.owner }) {
            streams[i].sentEarly.insert(event.job)
            owed = true
        }
        guard owed else { return false }
        snapshotStreams[id] = streams
        let bytes = CoordinatorToClient.job(snapshotEvent(of: event)).encode()
        sendToClient(bytes, to: id, durable: event.state.isFinal, batch: event.batch, job: event.job)
        return true
    }

    /// A `snapshot` event made from a job event: the job's state right after it.
    func snapshotEvent(of e: JobEvent) -> CoordinatorToClient.JobEvent {
        let holds = e.state == .bound || e.state == .running || e.state.isFinal
        var w = CoordinatorToClient.JobEvent(
            job: e.job, batch: e.batch, event: .snapshot, state: e.state, attempt: e.attempt, atMs: ms(e.at),
            backend: holds ? e.backend : nil, startedMs: startedMs(core.job(e.job), attempt: e.attempt, state: e.state),
            finishedMs: e.state.isFinal ? ms(e.at) : nil)
        switch e.kind {
        case .gated(let reason): w.waiting = wireWait(reason)
        case .progress(let fraction, let message):
            w.progress = fraction
            w.message = message
        case .completed(let result): w.result = result
        case .failed(let failure): w.error = wireError(failure)
        default: break
        }
        return w
    }
}
