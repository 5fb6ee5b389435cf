import CSQLite

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// One SQLite connection, opened without SQLite's own mutex (SQLITE_OPEN_NOMUTEX): exactly one
/// thread uses it at a time (the opener during `open()`, then the store's writer thread).
final class SQLiteConnection {
    let handle: OpaquePointer
    let path: String
    /// While true, SQLITE_CANTOPEN means the store cannot be opened (`cannotOpen`); afterwards it
    /// is an I/O failure of a running store (`io`).
    var opening = true

    /// Configures the library once per process, before its first connection: no memory
    /// statistics (`csqlite_disable_memory_statistics`). Nothing else in the process uses SQLite;
    /// if something initialized it first, the call changes nothing and the store works the same.
    private static let libraryConfigured: Void = { _ = csqlite_disable_memory_statistics() }()

    /// Opens the file read-write (creating it when `create` and it is missing) or read-only.
    init(path: String, create: Bool = true, readOnly: Bool = false) throws(StoreFailure) {
        Self.libraryConfigured
        var db: OpaquePointer?
        let flags =
            SQLITE_OPEN_NOMUTEX
            | (readOnly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0))
        let rc = sqlite3_open_v2(path, &db, flags, nil)
        guard rc == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? String(cString: sqlite3_errstr(rc))
            let errno = db.map { sqlite3_system_errno($0) } ?? 0
            sqlite3_close_v2(db)
            throw StoreFailure.sqlite(rc, message, errno: errno, path: path, opening: true)
        }
        handle = db
        self.path = path
        sqlite3_extended_result_codes(db, 1)
    }

    deinit {
        // close_v2: statements still alive keep the connection as a zombie until they finalize.
        sqlite3_close_v2(handle)
    }

    /// The failure `rc` stands for, with the connection's message (call before anything else
    /// runs on the connection, which would overwrite it).
    func failure(_ rc: Int32) -> StoreFailure {
        StoreFailure.sqlite(
            rc, String(cString: sqlite3_errmsg(handle)), errno: sqlite3_system_errno(handle), path: path,
            opening: opening)
    }

    /// Runs SQL that returns no rows (several statements allowed).
    func execute(_ sql: String) throws(StoreFailure) {
        let rc = sqlite3_exec(handle, sql, nil, nil, nil)
        guard rc == SQLITE_OK else { throw failure(rc) }
    }

    /// The first column of the first row of a query (a pragma), as an integer.
    func integer(_ sql: String) throws(StoreFailure) -> Int64 {
        let statement = try Statement(self, sql, persistent: false)
        guard try statement.step() else { return 0 }
        return statement.int64(0)
    }

    /// The first column of the first row of a query (a pragma), as text.
    func text(_ sql: String) throws(StoreFailure) -> String? {
        let statement = try Statement(self, sql, persistent: false)
        guard try statement.step() else { return nil }
        return statement.string(0)
    }

    /// True inside a transaction (after BEGIN, before COMMIT or ROLLBACK, or a failure that did
    /// not end it).
    var inTransaction: Bool { sqlite3_get_autocommit(handle) == 0 }

    /// Rows changed by the last INSERT, UPDATE or DELETE.
    var changes: Int { Int(sqlite3_changes(handle)) }
}

/// A prepared statement: prepared once, then bound, stepped and reset per row.
final class Statement {
    let handle: OpaquePointer
    let connection: SQLiteConnection

    init(_ connection: SQLiteConnection, _ sql: String, persistent: Bool = true) throws(StoreFailure) {
        var stmt: OpaquePointer?
        let flags = persistent ? UInt32(SQLITE_PREPARE_PERSISTENT) : 0
        let rc = sqlite3_prepare_v3(connection.handle, sql, -1, flags, &stmt, nil)
        guard rc == SQLITE_OK, let stmt else { throw connection.failure(rc == SQLITE_OK ? SQLITE_MISUSE : rc) }
        handle = stmt
        self.connection = connection
    }

    deinit { sqlite3_finalize(handle) }

    /// Steps once: true with a row to read, false when done.
    @inline(__always)
    func step() throws(StoreFailure) -> Bool {
        let rc = sqlite3_step(handle)
        if rc == SQLITE_ROW { return true }
        if rc == SQLITE_DONE { return false }
        throw connection.failure(rc)
    }

    /// Runs a statement that returns no rows, then resets it for the next use.
    @inline(__always)
    func run() throws(StoreFailure) {
        let rc = sqlite3_step(handle)
        if rc != SQLITE_DONE && rc != SQLITE_ROW {
            let failure = connection.failure(rc)
            sqlite3_reset(handle)
            throw failure
        }
        sqlite3_reset(handle)
    }

    func reset() { sqlite3_reset(handle) }

    // MARK: Binding (parameters count from 1)

    @inline(__always) func bind(_ index: Int32, _ value: Int64) { sqlite3_bind_int64(handle, index, value) }
    @inline(__always) func bind(_ index: Int32, _ value: UInt64) { bind(index, Int64(bitPattern: value)) }
    @inline(__always) func bind(_ index: Int32, _ value: Int) { bind(index, Int64(value)) }
    @inline(__always) func bindNull(_ index: Int32) { sqlite3_bind_null(handle, index) }

    func bind(_ index: Int32, _ value: UInt64?) {
        if let value { bind(index, value) } else { bindNull(index) }
    }

    func bind(_ index: Int32, _ value: Int64?) {
        if let value { bind(index, value) } else { bindNull(index) }
    }

    func bind(_ index: Int32, _ value: String?) throws(StoreFailure) {
        guard var value else { return bindNull(index) }
        let rc = value.withUTF8 { bindText(index, $0) }
        guard rc == SQLITE_OK else { throw connection.failure(rc) }
    }

    func bind(_ index: Int32, utf8 bytes: [UInt8]) throws(StoreFailure) {
        let rc = bytes.withUnsafeBufferPointer { bindText(index, $0) }
        guard rc == SQLITE_OK else { throw connection.failure(rc) }
    }

    private func bindText(_ index: Int32, _ bytes: UnsafeBufferPointer<UInt8>) -> Int32 {
        guard let base = bytes.baseAddress, bytes.count > 0 else {
            // An empty buffer may have no address, and a NULL pointer would bind SQL NULL.
            return csqlite_bind_text_transient(handle, index, "", 0)
        }
        guard bytes.count <= Int(Int32.max) else { return SQLITE_TOOBIG }
        return base.withMemoryRebound(to: CChar.self, capacity: bytes.count) {
            csqlite_bind_text_transient(handle, index, $0, Int32(bytes.count))
        }
    }

    // MARK: Reading columns (count from 0)

    @inline(__always) func isNull(_ column: Int32) -> Bool { sqlite3_column_type(handle, column) == SQLITE_NULL }
    @inline(__always) func int64(_ column: Int32) -> Int64 { sqlite3_column_int64(handle, column) }
    @inline(__always) func uint64(_ column: Int32) -> UInt64 { UInt64(bitPattern: int64(column)) }

    /// NULL reads as 0, so only a 0 needs a second call to tell the two apart (on 1M rows every
    /// column call counts).
    @inline(__always)
    func optionalInt64(_ column: Int32) -> Int64? {
        let value = int64(column)
        return value == 0 && isNull(column) ? nil : value
    }

    /// The column's text as UTF-8 bytes, valid until the next step, reset or column call.
    @inline(__always)
    func bytes(_ column: Int32) -> UnsafeBufferPointer<UInt8>? {
        guard let text = sqlite3_column_text(handle, column) else { return nil }
        return UnsafeBufferPointer(start: text, count: Int(sqlite3_column_bytes(handle, column)))
    }

    func string(_ column: Int32) -> String? {
        guard let bytes = bytes(column) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }
}

extension StoreFailure {
    /// Classifies an SQLite result code (and the errno behind an I/O error) and names the file.
    static func sqlite(_ rc: Int32, _ message: String, errno: Int32, path: String, opening: Bool) -> StoreFailure {
        let primary = rc & 0xff
        var kind: Kind
        switch primary {
        case SQLITE_FULL: kind = .diskFull
        case SQLITE_READONLY: kind = .readOnly
        case SQLITE_CORRUPT, SQLITE_NOTADB: kind = .corrupt
        case SQLITE_CANTOPEN: kind = opening ? .cannotOpen : .io
        default: kind = .io
        }
        var text = "sqlite: \(message)"
        if primary == SQLITE_IOERR || primary == SQLITE_CANTOPEN || primary == SQLITE_FULL, errno != 0 {
            switch errno {
            case ENOSPC, EDQUOT: kind = .diskFull
            case EROFS: kind = .readOnly
            default: break
            }
            text += ": \(String(cString: strerror(errno)))"
        }
        return StoreFailure(kind, "\(text) (\(path))")
    }
}
