import MusterCore

/// A change with the sequence number `append` gave it.
struct SequencedChange: Sendable {
    var seq: UInt64
    var change: StoreChange
}

/// What the writer thread drives: the storage behind a `GroupCommit`. Used only on the writer
/// thread once the group commit has started.
protocol CommitSink: AnyObject {
    /// Writes `changes`, in order, in one transaction, durably; returns how many job rows the
    /// store gained (negative when it lost some). Throws with nothing written.
    func commit(_ changes: [SequencedChange]) throws(StoreFailure) -> Int
    /// Called once as the writer stops, after the last commit attempt: checkpoint and close.
    func finish()
}

/// The group commit shared by the stores: `append` queues under a lock, one writer thread takes
/// everything queued at once, hands it to the sink as one transaction, and reports the outcome.
///
/// Pacing: a commit starts no sooner than `commitInterval` after the one before it started, so
/// under load the changes of that interval share one transaction and one sync. A change appended
/// after an idle spell longer than the interval is committed at once. The sync is the writer's
/// largest cost (with SQLite on a virtual disk, an fdatasync every millisecond took a third of a
/// core), and a few milliseconds more before `accepted` cost less than that core.
///
/// Failure: the failed changes stay at the front, in order, before anything appended since, and
/// keep their sequence numbers; the writer retries them (together with what was appended
/// meanwhile) every `retryInterval` until a commit succeeds. `.failed` is reported once per
/// failure streak and again when the kind of failure changes (messages of one kind vary from
/// attempt to attempt); `.durable` only ever covers committed changes. `close()` makes one last
/// attempt at once; what that attempt cannot write is dropped (it was never reported durable).
///
/// The handler runs on the writer thread between commits: it should only hand the report over
/// (to the event loop), not work.
final class GroupCommit: @unchecked Sendable {
    // @unchecked Sendable: every stored `var` below is read and written with `lock` held; the
    // writer thread keeps the rest of its state (the sink, failed changes) in local variables.
    private let lock = StoreLock()
    private let thread = WriterThread()
    private let retryNanoseconds: UInt64
    private let intervalNanoseconds: UInt64

    private enum State { case idle, running, closing, closed }
    private var state = State.idle
    private var pending: [SequencedChange] = []
    private var lastSeq: UInt64 = 0
    /// True while the writer sleeps waiting for work: only then does `append` signal it.
    private var writerWaiting = false
    private var handler: (@Sendable (StoreCommit) -> Void)?
    private var stats = StoreStatistics()
    /// True while `open()` runs (between `claimOpen` and `start` or `openFailed`).
    private var opening = false

    init(retryInterval: Duration, commitInterval: Duration = .zero) {
        retryNanoseconds = nanoseconds(retryInterval)
        intervalNanoseconds = nanoseconds(commitInterval)
    }

    func append(_ change: StoreChange) -> UInt64 {
        lock.lock()
        lastSeq += 1
        let seq = lastSeq
        pending.append(SequencedChange(seq: seq, change: change))
        let wake = writerWaiting
        lock.unlock()
        if wake { lock.signalWork() }
        return seq
    }

    func onCommit(_ handler: @escaping @Sendable (StoreCommit) -> Void) {
        lock.lock()
        precondition(state == .idle, "JobStore.onCommit: set the handler once, before open()")
        self.handler = handler
        lock.unlock()
    }

    /// `JobStore.open()` on this group commit: claims the one opening, runs `opener` (which opens
    /// the storage and reads it) and starts the writer on the sink it returns. `place` names the
    /// store in the message when it was already opened or closed. After a failure the store may
    /// be opened again (say once a read-only file system is writable again), or closed.
    func open(
        _ place: String, _ opener: () throws(StoreFailure) -> (any CommitSink, StoreSnapshot)
    ) throws(StoreFailure) -> StoreSnapshot {
        guard claimOpen() else {
            throw StoreFailure(.cannotOpen, "this store object was already opened or closed (\(place))")
        }
        do throws(StoreFailure) {
            let (sink, snapshot) = try opener()
            start(sink, jobsStored: snapshot.jobs.count)
            return snapshot
        } catch {
            openFailed()
            throw error
        }
    }

    /// Claims the right to open; false when the store was already opened or closed.
    private func claimOpen() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        guard state == .idle, !opening else { return false }
        opening = true
        return true
    }

    /// Gives up an open that failed.
    private func openFailed() {
        lock.lock()
        opening = false
        lock.unlock()
    }

    /// Starts the writer with the opened sink. The sink now belongs to the writer thread.
    private func start(_ sink: any CommitSink, jobsStored: Int) {
        let owned = SinkHandover(sink)
        lock.lock()
        opening = false
        stats.jobsStored = jobsStored
        if state == .idle {
            state = .running
            // Started with the lock held, so that a close() from another thread, which joins the
            // thread once it sees `.running`, never joins a thread not created yet. The writer's
            // first step takes the lock, so it waits for this unlock.
            thread.start { [self] in run(owned.sink) }
            lock.unlock()
        } else {
            // close() came first (from another thread, while open() ran): nothing to write.
            lock.unlock()
            sink.finish()
        }
    }

    /// Stops the writer after a final commit of what is queued; returns once it has exited.
    func close() {
        lock.lock()
        switch state {
        case .idle:
            state = .closed
            lock.unlock()
            return
        case .running:
            state = .closing
            lock.unlock()
            lock.signalWork()
            thread.join()
            lock.lock()
            state = .closed
            lock.broadcastExit()
            lock.unlock()
        case .closing:
            while state != .closed { lock.waitForExit() }
            lock.unlock()
        case .closed:
            lock.unlock()
        }
    }

    var statistics: StoreStatistics {
        lock.lock()
        defer { lock.unlock() }
        var s = stats
        s.appended = lastSeq
        return s
    }

    // MARK: - The writer thread

    private func run(_ sink: any CommitSink) {
        lock.lock()
        let handler = self.handler
        lock.unlock()

        // Changes of failed attempts, in order, retried before anything appended since.
        var carried: [SequencedChange] = []
        var spare: [SequencedChange] = []
        var streak: StoreFailure.Kind?
        // When the last commit attempt started (0: none yet).
        var lastStart: UInt64 = 0
        while true {
            lock.lock()
            if carried.isEmpty {
                while pending.isEmpty && state == .running {
                    writerWaiting = true
                    lock.waitForWork()
                    writerWaiting = false
                }
                // Pacing: what is appended meanwhile joins this commit. Appends do not wake the
                // writer here (`writerWaiting` stays false); close() does.
                let next = lastStart &+ intervalNanoseconds
                while lastStart != 0 && state == .running && monotonicNanoseconds() < next {
                    lock.waitForWork(until: next)
                }
            } else if state == .running {
                let deadline = monotonicNanoseconds() + retryNanoseconds
                while state == .running && monotonicNanoseconds() < deadline {
                    writerWaiting = true
                    lock.waitForWork(until: deadline)
                    writerWaiting = false
                    // Appends wake the writer too; only close() or the deadline end the wait.
                }
            }
            let closing = state != .running
            spare.removeAll(keepingCapacity: true)
            swap(&spare, &pending)
            lock.unlock()

            let batch: [SequencedChange]
            if carried.isEmpty {
                batch = spare
            } else {
                carried.append(contentsOf: spare)
                batch = carried
            }
            if batch.isEmpty {
                if closing { break }
                continue
            }

            let started = monotonicNanoseconds()
            lastStart = started
            do throws(StoreFailure) {
                let jobsDelta = try sink.commit(batch)
                let through = batch[batch.count - 1].seq
                let seconds = Double(monotonicNanoseconds() - started) / 1e9
                lock.lock()
                stats.durable = through
                stats.commits += 1
                stats.changesWritten += UInt64(batch.count)
                stats.lastCommitChanges = batch.count
                stats.lastCommitSeconds = seconds
                stats.jobsStored += jobsDelta
                stats.lastFailure = nil
                lock.unlock()
                carried.removeAll(keepingCapacity: true)
                streak = nil
                handler?(.durable(through: through))
            } catch {
                lock.lock()
                stats.failedCommits += 1
                stats.lastFailure = error
                lock.unlock()
                if carried.isEmpty { carried = batch }
                if streak != error.kind { handler?(.failed(error)) }
                streak = error.kind
                if closing { break }
            }
        }
        sink.finish()
    }
}

/// Hands the sink from the opening thread to the writer thread.
private struct SinkHandover: @unchecked Sendable {
    // @unchecked Sendable: the opener gives up the sink when it calls `start`; from then on only
    // the writer thread uses it (pthread_create orders the hand-over).
    let sink: any CommitSink
    init(_ sink: any CommitSink) { self.sink = sink }
}
