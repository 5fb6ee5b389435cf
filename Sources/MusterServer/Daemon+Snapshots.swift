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

    /// Whether the snapshot of `job` (of `batch`, whose owner `owner` gives) is still owed.
    func owes(_ job: JobID, batch jobBatch: BatchID, owner jobOwner: () -> String?) -> Bool {
        job >= next && job <= last && !sentEarly.contains(job) && covers(jobBatch, owner: jobOwner)
    }

    /// Whether a job of `jobBatch` (whose owner `jobOwner` gives) is in the subscription's scope.
    func covers(_ jobBatch: BatchID, owner jobOwner: () -> String?) -> Bool {
        if let batch, batch != jobBatch { return false }
        if let owner, owner != jobOwner() { return false }
        return true
    }
}

extension Daemon {
    /// Most jobs walked (snapshots encoded) in one turn of the loop before other links get theirs.
    static let snapshotChunk = 1024

    /// Starts sending the snapshots of a new subscription (`scope`: one batch, one owner, or every
    /// job) and sends the first chunk at once (all of them, for a small scope).
    func startSnapshots(_ id: ConnectionID, batch: BatchRecord?, owner: String?) {
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
            SnapshotStream(next: first, last: last, batch: batch?.id, owner: batch == nil ? owner : nil))
        pumpSnapshots(id)
    }

    /// Sends owed snapshots to the link while it has room, a chunk per turn; asks to be called
    /// again (`drained`, or a release of held messages) for the rest.
    func pumpSnapshots(_ id: ConnectionID) {
        guard var streams = snapshotStreams[id] else { return }
        var budget = Self.snapshotChunk
        var room = snapshotLowWater - outboundBytes(id)
        while !streams.isEmpty, budget > 0, room > 0 {
            var stream = streams[0]
            guard let job = core.firstJobID(atLeast: stream.next), job <= stream.last else {
                streams.removeFirst()
                continue
            }
            stream.next = JobID(job.rawValue + 1)
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
        if queued > 0 || budget == 0 {
            // The socket drains what is queued (or, at the end of a chunk, lets other links go
            // first): go on from there.
            let mark = budget == 0 ? snapshotLowWater : snapshotLowWater / 2
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
            backend: holds ? e.backend : nil)
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
