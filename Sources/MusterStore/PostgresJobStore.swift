import MusterCore

/// The job store on PostgreSQL (libpq), with the SQLite store's contract: one writer thread, one
/// transaction per group commit, `synchronous_commit = on` (a commit returns once the server has
/// flushed its write-ahead log).
///
/// - `open()` connects, creates or migrates the schema (under an advisory lock, see
///   `PostgresSchema`), refuses a schema of a newer Muster, increments the epoch and reads
///   everything, in one transaction.
/// - A group commit is one pipeline of prepared statements ending in one Sync: one implicit
///   transaction, one round trip. Changes a later change of the group overwrites are not written.
/// - Failures are classified by SQLSTATE and connection status: a lost or refused connection is
///   `io` (the writer drops the connection and connects again at the next retry), `25006`
///   `readOnly` (a hot standby, say), `53100` `diskFull`, `XX001`/`XX002` `corrupt`; at `open()`
///   a refused login or a missing database is `cannotOpen`.
/// - **Fencing**: built with a token (the leader's term, `PostgresLeaderElection`), every commit
///   first checks that the lease row still holds that token, holding the row shared until the
///   commit ends, so a new leader's takeover waits for it and no commit under the old token lands
///   after. A commit that finds another token is rolled back, reported `.failed(.fenced)` once, and
///   the store refuses every later commit without asking the server. `open()` checks it too.
/// - Retention: evicted jobs are deleted; PostgreSQL's autovacuum gives the space back to new
///   rows. `statistics.bytesOnDisk` is the tables' `pg_total_relation_size` (indexes and TOAST
///   included), measured at most once a second after a commit.
public final class PostgresJobStore: JobStore {
    /// The URL with the password redacted (it goes into messages and logs).
    public let target: String
    private let url: String
    private let fencingToken: Int64?
    private let group: GroupCommit
    private let sizes = SharedCounter()

    /// - Parameters:
    ///   - url: `postgres://USER:PASSWORD@HOST:PORT/DATABASE` (or any libpq connection string).
    ///   - retryInterval: The pause between attempts after a failed commit.
    ///   - fencingToken: The token of the leader's term this store writes under; nil: no fencing.
    ///   - commitInterval: The least time from one commit's start to the next (`GroupCommit`).
    public init(
        url: String, retryInterval: Duration = .seconds(1), fencingToken: Int64? = nil, commitInterval: Duration = .zero
    ) {
        self.url = url
        self.target = PostgresURL.redacted(url)
        self.fencingToken = fencingToken
        self.group = GroupCommit(retryInterval: retryInterval, commitInterval: commitInterval)
    }

    deinit { group.close() }

    public func open() throws(StoreFailure) -> StoreSnapshot {
        try group.open(target) { () throws(StoreFailure) in
            try PostgresWriter.open(url: url, target: target, fencingToken: fencingToken, sizes: sizes)
        }
    }

    public func append(_ change: StoreChange) -> UInt64 { group.append(change) }

    public func onCommit(_ handler: @escaping @Sendable (StoreCommit) -> Void) { group.onCommit(handler) }

    public func close() { group.close() }

    public var counters: StoreStatistics { group.statistics }

    public var statistics: StoreStatistics {
        var s = group.statistics
        s.bytesOnDisk = sizes.value
        return s
    }
}

/// A number one thread writes and any reads.
final class SharedCounter: @unchecked Sendable {
    // @unchecked Sendable: `stored` is read and written with `lock` held.
    private let lock = StoreLock()
    private var stored: UInt64 = 0

    var value: UInt64 {
        get {
            lock.lock()
            defer { lock.unlock() }
            return stored
        }
        set {
            lock.lock()
            stored = newValue
            lock.unlock()
        }
    }
}
