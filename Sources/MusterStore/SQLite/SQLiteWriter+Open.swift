import CSQLite
import MusterCore
import MusterProtocol

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

extension SQLiteWriter {
    /// Opens (creating the directories and the schema when new, migrating when old), increments
    /// the epoch and reads everything, in one durable transaction.
    static func open(
        path: String, busyTimeout: Duration, compactionThresholdPages: Int
    ) throws(StoreFailure) -> (SQLiteWriter, StoreSnapshot) {
        // The side files an attempt that fails may leave behind (see `removeLeftovers`).
        let hadSideFiles = (shm: exists(path + "-shm"), wal: exists(path + "-wal"))
        do throws(StoreFailure) {
            try prepareLocation(path)
            let connection = try SQLiteConnection(path: path)
            sqlite3_busy_timeout(connection.handle, milliseconds(busyTimeout))

            // The header is read here: a file that is not a database fails with SQLITE_NOTADB.
            let version = try connection.integer("PRAGMA user_version")
            let applicationID = try connection.integer("PRAGMA application_id")
            if applicationID != 0 && applicationID != SQLiteSchema.applicationID {
                throw StoreFailure(
                    .cannotOpen,
                    "not a Muster store: an SQLite database of another application (application_id \(applicationID)) (\(path))"
                )
            }
            if version > SQLiteSchema.version {
                throw StoreFailure(
                    .cannotOpen,
                    "written by a newer Muster (schema version \(version); this build reads up to \(SQLiteSchema.version)): run the newer build or move the file away (\(path))"
                )
            }
            if version == 0 {
                let tables = try connection.integer("SELECT count(*) FROM sqlite_master")
                if tables > 0 {
                    throw StoreFailure(
                        .cannotOpen, "not a Muster store: an SQLite database with \(tables) other objects (\(path))")
                }
                // Only possible before the first table exists.
                try connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
            }
            let mode = try connection.text("PRAGMA journal_mode = WAL")
            guard mode?.lowercased() == "wal" else {
                throw StoreFailure(
                    .cannotOpen, "cannot switch to WAL journal mode (got \(mode ?? "nothing")) (\(path))")
            }
            try configure(connection, busyTimeout: busyTimeout)

            if version < SQLiteSchema.version {
                try transaction(connection) { () throws(StoreFailure) in
                    if version == 0 { try connection.execute(SQLiteSchema.create) }
                    // Migrations from older schema versions, one step per version.
                    if version == 1 { try connection.execute(SQLiteSchema.migrateToVersion2) }
                    if version >= 1, version <= 2 { try connection.execute(SQLiteSchema.migrateToVersion3) }
                    if version >= 1, version <= 3 { try connection.execute(SQLiteSchema.migrateToVersion4) }
                }
            }
            var snapshot = StoreSnapshot()
            try transaction(connection) { () throws(StoreFailure) in
                try connection.execute("UPDATE meta SET epoch = epoch + 1 WHERE id = 1")
                guard connection.changes == 1 else {
                    throw StoreFailure(.corrupt, "the meta row holding the epoch is missing (\(path))")
                }
                snapshot = try read(connection, path: path, busyTimeout: busyTimeout)
                snapshot.epoch = UInt64(bitPattern: try connection.integer("SELECT epoch FROM meta WHERE id = 1"))
            }
            try lockExclusively(connection, path: path)
            connection.opening = false
            let writer = SQLiteWriter(
                try SQLiteDatabase(connection), busyTimeout: busyTimeout,
                compactionThresholdPages: compactionThresholdPages)
            return (writer, snapshot)
        } catch {
            if error.kind == .readOnly { removeLeftovers(path, hadSideFiles) }
            throw explainCannotCreate(explainReadOnly(error, path: path), path: path)
        }
    }

    /// A read-only database file: SQLite created the `-shm` index (and maybe an empty `-wal`)
    /// with the file's read-only mode before the write failed, and once the file is made writable
    /// the next open would fail on that index. What this attempt created is removed (the
    /// connection is closed by then); side files that were there before are never touched.
    private static func removeLeftovers(_ path: String, _ had: (shm: Bool, wal: Bool)) {
        // Only a side file no one can write: one another process opened meanwhile and uses is
        // writable (a read-only one is of use to no one, and makes every later open fail).
        var st = stat()
        if !had.shm, stat(path + "-shm", &st) == 0, st.st_mode & 0o222 == 0 { unlink(path + "-shm") }
        if !had.wal, stat(path + "-wal", &st) == 0, st.st_size == 0, st.st_mode & 0o222 == 0 { unlink(path + "-wal") }
    }

    /// A file that could not be created says so, instead of SQLite's last errno (the read-only
    /// retry's "No such file or directory").
    private static func explainCannotCreate(_ failure: StoreFailure, path: String) -> StoreFailure {
        let directory = parentDirectory(path)
        guard failure.kind == .cannotOpen, !exists(path), isDirectory(directory) else { return failure }
        // Create a probe of our own beside it (never the store's own name, which another
        // coordinator starting now could open): access(2) would answer for the real user id.
        var template = Array("\(directory)/.muster-probe-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        let code = errno
        if fd >= 0 {
            close(fd)
            template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
            return failure
        }
        guard code == EACCES || code == EPERM else { return failure }
        return StoreFailure(
            .cannotOpen,
            "cannot create \(path): the directory \(directory) is not writable by this process (\(failure.message))")
    }

    /// Takes the file for this store alone, for as long as its connection is open: a second
    /// coordinator pointed at the same file (several coordinators must not share one SQLite
    /// store) fails to open it with `cannot_open` "database is locked" instead of interleaving
    /// its writes with this one's. Done after the read, which may use a second connection.
    static func lockExclusively(_ connection: SQLiteConnection, path: String) throws(StoreFailure) {
        try connection.execute("PRAGMA locking_mode = EXCLUSIVE")
        // The lock is taken by the first write in this mode and kept from then on.
        try transaction(connection) { () throws(StoreFailure) in
            try connection.execute("UPDATE meta SET epoch = epoch WHERE id = 1")
        }
    }

    /// The per-connection settings (the journal mode and auto-vacuum are stored in the file).
    static func configure(_ connection: SQLiteConnection, busyTimeout: Duration) throws(StoreFailure) {
        sqlite3_busy_timeout(connection.handle, milliseconds(busyTimeout))
        // FULL: every commit fsyncs the log; that is the durability contract of `.durable`.
        // The log is cut back to 16 MiB after a checkpoint that followed a large commit.
        try connection.execute(
            """
            PRAGMA synchronous = FULL;
            PRAGMA journal_size_limit = \(16 << 20);
            PRAGMA cache_size = -8192;
            """)
    }

    private static func milliseconds(_ d: Duration) -> Int32 {
        let (s, attos) = d.components
        return Int32(clamping: s * 1000 + attos / 1_000_000_000_000_000)
    }

    /// Runs `body` in BEGIN IMMEDIATE ... COMMIT; rolls back on failure.
    static func transaction(
        _ connection: SQLiteConnection, _ body: () throws(StoreFailure) -> Void
    ) throws(StoreFailure) {
        do throws(StoreFailure) {
            try connection.execute("BEGIN IMMEDIATE")
            try body()
            try connection.execute("COMMIT")
        } catch {
            if connection.inTransaction { try? connection.execute("ROLLBACK") }
            throw error
        }
    }

    /// Reads batches, jobs and backends. Decodes each batch's entries once; allocates per job
    /// only what the job holds (its result and failure texts).
    ///
    /// A large store is read by two threads: a helper, on a read-only connection of its own,
    /// reads the batches and the upper part of the jobs while this thread reads the lower part
    /// (the daemon has its cores to itself while it starts). Both read the same committed state:
    /// this connection's transaction has changed nothing but the epoch.
    private static func read(
        _ connection: SQLiteConnection, path: String, busyTimeout: Duration
    ) throws(StoreFailure) -> StoreSnapshot {
        var snapshot = StoreSnapshot()
        let count = Int(try connection.integer("SELECT count(*) FROM jobs"))
        let low = try connection.integer("SELECT min(id) FROM jobs")
        let high = try connection.integer("SELECT max(id) FROM jobs")
        if count < parallelReadThreshold || high <= low {
            snapshot.batches = try readBatches(connection, path: path)
            snapshot.jobs = try readJobs(connection, path: path, from: nil, below: nil, capacity: count)
        } else {
            // The batches are the helper's too: give this thread the larger share of the jobs.
            // Any split reads every job once; wrapping arithmetic only moves it.
            let split = low &+ (high &- low) / 20 &* 11
            let helper = HelperThread { () throws(StoreFailure) -> ([StoredBatch], [StoredJob]) in
                let own = try SQLiteConnection(path: path, create: false, readOnly: true)
                own.opening = false
                sqlite3_busy_timeout(own.handle, milliseconds(busyTimeout))
                try own.execute("BEGIN")
                defer { try? own.execute("COMMIT") }
                let batches = try readBatches(own, path: path)
                return (batches, try readJobs(own, path: path, from: split, below: nil, capacity: count))
            }
            let lower: [StoredJob]
            do throws(StoreFailure) {
                lower = try readJobs(connection, path: path, from: nil, below: split, capacity: count)
            } catch {
                _ = helper.join()
                throw error
            }
            let (batches, upper) = try helper.join().get()
            snapshot.batches = batches
            snapshot.jobs = lower
            snapshot.jobs.append(contentsOf: upper)
        }
        let backends = try Statement(connection, SQLiteSchema.selectBackends, persistent: false)
        while try backends.step() {
            let (down, downAt) = StoreRows.down(backends.int64(3))
            snapshot.backends.append(
                StoredBackend(
                    id: BackendID(backends.int64(0)), name: backends.string(1) ?? "",
                    incarnation: Incarnation(backends.uint64(2)), down: down, downAt: downAt))
        }
        return snapshot
    }

    /// Below this many jobs one thread reads everything.
    static let parallelReadThreshold = 50_000

    private static func readBatches(_ connection: SQLiteConnection, path: String) throws(StoreFailure) -> [StoredBatch]
    {
        var out: [StoredBatch] = []
        let batches = try Statement(connection, SQLiteSchema.selectBatches, persistent: false)
        while try batches.step() {
            let id = batches.uint64(0)
            let entries = try StoreRows.entries(batches.bytes(5), batch: id, where: path)
            out.append(
                StoredBatch(
                    id: BatchID(id), key: batches.string(1), owner: batches.string(6), entries: entries,
                    firstJob: JobID(batches.uint64(2)),
                    submittedAt: CoreInstant(nanoseconds: batches.uint64(4))))
        }
        return out
    }

    /// The jobs with `from <= id < below` (either bound optional), by id. `capacity` is reserved
    /// up front: untouched capacity costs address space, not memory.
    private static func readJobs(
        _ connection: SQLiteConnection, path: String, from: Int64?, below: Int64?, capacity: Int
    ) throws(StoreFailure) -> [StoredJob] {
        var out: [StoredJob] = []
        out.reserveCapacity(capacity)
        let sql =
            switch (from, below) {
            case (nil, nil): SQLiteSchema.selectJobs
            case (_, nil): SQLiteSchema.selectJobsFrom
            case (nil, _): SQLiteSchema.selectJobsBelow
            default: preconditionFailure("one bound at most")
            }
        let jobs = try Statement(connection, sql, persistent: false)
        if let bound = from ?? below { jobs.bind(1, bound) }
        while try jobs.step() {
            out.append(
                try StoreRows.job(
                    id: jobs.uint64(0), batch: jobs.uint64(1), stateCode: jobs.int64(2), backend: jobs.optionalInt64(3),
                    lease: jobs.optionalInt64(4), attempt: jobs.int64(5), lost: jobs.int64(6),
                    endedAt: jobs.optionalInt64(7), result: jobs.string(8), errorCode: jobs.string(9),
                    errorMessage: jobs.string(10), boundAt: jobs.optionalInt64(11), startedAt: jobs.optionalInt64(12),
                    history: jobs.bytes(13), details: jobs.bytes(14), where: path))
        }
        return out
    }

    /// Refuses a directory where the file should be; creates missing parent directories.
    private static func prepareLocation(_ path: String) throws(StoreFailure) {
        if isDirectory(path) {
            throw StoreFailure(
                .cannotOpen, "\(path) is a directory; the store needs a file path, e.g. \(path)/muster.sqlite")
        }
        try makeDirectories(parentDirectory(path), for: path)
    }

    private static func makeDirectories(_ directory: String, for path: String) throws(StoreFailure) {
        guard !directory.isEmpty, directory != "/", directory != "." else { return }
        var st = stat()
        if stat(directory, &st) == 0 {
            if st.st_mode & S_IFMT == S_IFDIR { return }
            throw StoreFailure(.cannotOpen, "\(directory) is not a directory (\(path))")
        }
        try makeDirectories(parentDirectory(directory), for: path)
        if mkdir(directory, 0o755) != 0 && errno != EEXIST {
            let code = errno
            throw StoreFailure(
                code == EROFS ? .readOnly : .cannotOpen,
                "cannot create directory \(directory): \(String(cString: strerror(code))) (\(path))")
        }
    }

    /// A failure to open on a read-only file system shows as SQLITE_CANTOPEN, SQLITE_READONLY or
    /// an I/O error depending on which file SQLite touched first; say what it is.
    private static func explainReadOnly(_ failure: StoreFailure, path: String) -> StoreFailure {
        guard failure.kind != .corrupt, isReadOnlyFileSystem(parentDirectory(path)) else { return failure }
        return StoreFailure(
            .readOnly,
            "the file system holding \(path) is read-only: remount it read-write or point the store elsewhere (\(failure.message))"
        )
    }
}

func parentDirectory(_ path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return "." }
    let parent = String(path[..<slash])
    return parent.isEmpty ? "/" : parent
}

func exists(_ path: String) -> Bool {
    var st = stat()
    return stat(path, &st) == 0
}

func isDirectory(_ path: String) -> Bool {
    var st = stat()
    return stat(path, &st) == 0 && st.st_mode & S_IFMT == S_IFDIR
}

func isReadOnlyFileSystem(_ directory: String) -> Bool {
    var fs = statvfs()
    return statvfs(directory, &fs) == 0 && fs.f_flag & UInt(ST_RDONLY) != 0
}

/// The size of a file in bytes (0 when it does not exist).
func fileSize(_ path: String) -> UInt64 {
    var st = stat()
    guard stat(path, &st) == 0 else { return 0 }
    return UInt64(max(0, st.st_size))
}

/// Runs one piece of work on a thread of its own; `join` waits for its result.
private final class HelperThread<Value: Sendable>: @unchecked Sendable {
    // @unchecked Sendable: `result` is written by the helper thread before it exits and read only
    // after `join`, which pthread_join orders after that write.
    private let thread = WriterThread()
    private var result: Result<Value, StoreFailure>?

    init(_ work: @escaping @Sendable () throws(StoreFailure) -> Value) {
        thread.start { [self] in
            do throws(StoreFailure) {
                result = .success(try work())
            } catch {
                result = .failure(error)
            }
        }
    }

    func join() -> Result<Value, StoreFailure> {
        thread.join()
        return result!
    }
}
