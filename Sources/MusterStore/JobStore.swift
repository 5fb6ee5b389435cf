import MusterCore

/// Keeps the core's durable changes (`StoreChange`) and gives them back after a restart
/// (`StoreSnapshot`). The SQLite store implements it; a PostgreSQL store will implement the same
/// protocol.
///
/// The daemon calls `onCommit`, then `open()` before it serves, then `append` for every change on
/// its event-loop thread, and `close()` when it stops. Writes happen on the store's own thread in
/// group commits: `append` never waits for I/O, and the handler learns which changes are on disk.
public protocol JobStore: AnyObject, Sendable {
    /// Opens (creating and migrating when new), increments the store's epoch durably, reads
    /// everything and returns it. Blocking; the daemon calls it before it serves. Once per object.
    func open() throws(StoreFailure) -> StoreSnapshot
    /// Queues one change for the next group commit; returns its sequence number (1, 2, 3... over
    /// the life of this object). Cheap: a lock and an append; never waits for I/O. Changes appended
    /// before `open()` are written after it; changes appended after `close()` are never written.
    func append(_ change: StoreChange) -> UInt64
    /// Called on the store's own thread after every commit attempt. Set once, before open().
    /// The next commit waits for it: it should hand the report over, not work.
    func onCommit(_ handler: @escaping @Sendable (StoreCommit) -> Void)
    /// Writes what is queued, stops the writer thread. Idempotent. During a failure streak it
    /// makes one last attempt; what that cannot write is lost (it was never reported durable).
    func close()
    /// Counters and sizes; readable from any thread.
    var statistics: StoreStatistics { get }
    /// The counters without `bytesOnDisk` (0 here): no file-system call, for the daemon's
    /// per-commit path. Readable from any thread.
    var counters: StoreStatistics { get }
}

/// Why a store could not open or write: a kind to act on and a message for people that names the
/// file, e.g. `sqlite: database or disk is full (/var/lib/muster/muster.sqlite)`.
public struct StoreFailure: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Kind: String, Hashable, Sendable {
        /// The file or its directory cannot be opened or created, is not a Muster store, or was
        /// written by a newer Muster.
        case cannotOpen = "cannot_open"
        /// The file or the file system is read-only.
        case readOnly = "read_only"
        /// No space left (or quota exceeded) on the file system.
        case diskFull = "disk_full"
        /// The file is not a database, or the database or a stored value is damaged.
        case corrupt
        /// Any other I/O error (or a lock held by another process for longer than the busy timeout).
        case io
        /// Another coordinator leads now: the store refuses commits under this coordinator's
        /// fencing token (see `LeaderElection`). Final for this store object: it never recovers.
        case fenced
    }

    public var kind: Kind
    public var message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { "\(kind.rawValue): \(message)" }
}

/// The outcome of one commit attempt, as the store's handler sees it.
public enum StoreCommit: Hashable, Sendable {
    /// Every change up to and including sequence number `through` is on disk (fsync'd).
    case durable(through: UInt64)
    /// A commit failed; nothing after the last `durable` is on disk; the store retries on its own.
    /// Reported once per failure streak, and again when the kind of failure changes (say disk
    /// full, then read-only); `StoreStatistics.failedCommits` counts every failed attempt and
    /// `lastFailure` holds the latest.
    case failed(StoreFailure)
}

/// A store's counters and sizes at one moment.
public struct StoreStatistics: Hashable, Sendable {
    /// The sequence number of the last change appended (0: none yet).
    public var appended: UInt64
    /// Every change up to and including this sequence number is on disk.
    public var durable: UInt64
    /// Successful commits. In the SQLite store each is one fsync of the write-ahead log (plus the
    /// database file's fsyncs when a commit ends with a checkpoint, every ~1,000 pages of log).
    public var commits: UInt64
    /// Failed commit attempts (each one rolled back and retried).
    public var failedCommits: UInt64
    /// Changes written by successful commits.
    public var changesWritten: UInt64
    /// Changes written by the last successful commit.
    public var lastCommitChanges: Int
    /// How long the last successful commit took, fsync included, in seconds.
    public var lastCommitSeconds: Double
    /// Bytes of the store's files (SQLite: database, write-ahead log and shared-memory index).
    public var bytesOnDisk: UInt64
    /// Job rows stored (finished ones included, until evicted).
    public var jobsStored: Int
    /// The failure of the current failure streak; nil when the last commit attempt succeeded.
    public var lastFailure: StoreFailure?

    public init(
        appended: UInt64 = 0, durable: UInt64 = 0, commits: UInt64 = 0, failedCommits: UInt64 = 0,
        changesWritten: UInt64 = 0, lastCommitChanges: Int = 0, lastCommitSeconds: Double = 0,
        bytesOnDisk: UInt64 = 0, jobsStored: Int = 0, lastFailure: StoreFailure? = nil
    ) {
        self.appended = appended
        self.durable = durable
        self.commits = commits
        self.failedCommits = failedCommits
        self.changesWritten = changesWritten
        self.lastCommitChanges = lastCommitChanges
        self.lastCommitSeconds = lastCommitSeconds
        self.bytesOnDisk = bytesOnDisk
        self.jobsStored = jobsStored
        self.lastFailure = lastFailure
    }

    /// Changes appended and not on disk yet: queued, being written, or waiting for a retry.
    public var pending: UInt64 { appended - durable }

    /// Bytes on disk per stored job (nil with no jobs).
    public var bytesPerJob: Double? { jobsStored > 0 ? Double(bytesOnDisk) / Double(jobsStored) : nil }
}
