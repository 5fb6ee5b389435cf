import MusterCore

/// The job store on one SQLite file: WAL journal, `synchronous=FULL` (a commit fsyncs the log),
/// one writer thread that owns the connection and commits everything queued at once.
///
/// - `open()` creates the file and its directories when missing, refuses a file of another
///   application or of a newer schema, increments the epoch and reads everything, in one durable
///   transaction.
/// - `append` queues under a lock; the writer takes the whole queue, applies it in one
///   BEGIN IMMEDIATE ... COMMIT with prepared statements, and reports `.durable(through:)`.
/// - A failed commit (disk full, read-only, I/O, corruption) is rolled back and retried every
///   `retryInterval` with the same changes in front (`StoreCommit.failed`). Until the retry the
///   database is closed: no error state sticks to the connection, and the file system can be
///   remounted meanwhile.
/// - Commits that evict rows also give free pages back to the file system once more than
///   `compactionThresholdPages` are free (`PRAGMA incremental_vacuum`, the database is created
///   with `auto_vacuum=INCREMENTAL`); `close()` checkpoints and truncates the log.
public final class SQLiteJobStore: JobStore {
    /// The database file; the log and the index are `path-wal` and `path-shm` beside it.
    public let path: String
    private let group: GroupCommit
    private let busyTimeout: Duration
    private let compactionThresholdPages: Int

    /// - Parameters:
    ///   - path: The database file. Missing parent directories are created on `open()`.
    ///   - retryInterval: The pause between attempts after a failed commit.
    ///   - busyTimeout: How long a statement waits for a lock another process holds on the file.
    ///   - compactionThresholdPages: Free pages (4 KiB each) tolerated before commits that evict
    ///     rows compact the file.
    ///   - commitInterval: The least time from one commit's start to the next (`GroupCommit`).
    public init(
        path: String, retryInterval: Duration = .seconds(1), busyTimeout: Duration = .seconds(5),
        compactionThresholdPages: Int = 2048, commitInterval: Duration = .zero
    ) {
        self.path = path
        self.group = GroupCommit(retryInterval: retryInterval, commitInterval: commitInterval)
        self.busyTimeout = busyTimeout
        self.compactionThresholdPages = compactionThresholdPages
    }

    deinit { group.close() }

    public func open() throws(StoreFailure) -> StoreSnapshot {
        try group.open(path) { () throws(StoreFailure) in
            try SQLiteWriter.open(
                path: path, busyTimeout: busyTimeout, compactionThresholdPages: compactionThresholdPages)
        }
    }

    public func append(_ change: StoreChange) -> UInt64 { group.append(change) }

    public func onCommit(_ handler: @escaping @Sendable (StoreCommit) -> Void) { group.onCommit(handler) }

    public func close() { group.close() }

    public var counters: StoreStatistics { group.statistics }

    public var statistics: StoreStatistics {
        var s = group.statistics
        s.bytesOnDisk = fileSize(path) + fileSize(path + "-wal") + fileSize(path + "-shm")
        return s
    }
}
