import CLibPQ

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A failure libpq or the server reported: the server's SQLSTATE when it sent one, and whether
/// the connection is gone (it must be dropped then).
struct PostgresError: Error, Sendable {
    /// The server's five-character code (`25006`, `53100`...); nil for failures of the
    /// connection itself (refused, reset, timed out, rejected while connecting).
    var sqlstate: String?
    var message: String
    /// The connection is unusable (lost, timed out mid-exchange, or never made).
    var connectionLost: Bool
    /// The server refused the connection at start-up (authentication, a missing database or
    /// role, pg_hba.conf), or the URL does not parse: retrying the same URL will not help.
    var rejected = false

    /// Classifies by SQLSTATE and connection status (README, "Job store on PostgreSQL"). While
    /// `opening`, a rejected connection means the store cannot be opened; in a running store it is
    /// retried like any other I/O failure.
    func storeFailure(target: String, opening: Bool) -> StoreFailure {
        var kind: StoreFailure.Kind = .io
        switch sqlstate {
        case "25006": kind = .readOnly  // read_only_sql_transaction (a hot standby, or default_transaction_read_only)
        case "53100": kind = .diskFull  // disk_full
        case "XX001", "XX002": kind = .corrupt  // data_corrupted, index_corrupted
        case "MU001": kind = .fenced  // raised by muster_check_fence (PostgresSchema)
        case "28000", "28P01", "3D000": kind = opening ? .cannotOpen : .io
        default: if rejected && opening { kind = .cannotOpen }
        }
        return StoreFailure(kind, "postgres: \(message)\(sqlstate.map { " (SQLSTATE \($0))" } ?? "") (\(target))")
    }
}

/// One value of a statement parameter or a result column, in PostgreSQL's binary format.
enum PostgresValue {
    case int64(Int64)
    /// bytea.
    case bytes([UInt8])
    /// text (its binary format is its UTF-8 bytes).
    case string(String)
    case null

    static func text(_ s: String?) -> PostgresValue { s.map { .bytes(Array($0.utf8)) } ?? .null }
    static func int(_ v: UInt64?) -> PostgresValue { v.map { .int64(Int64(bitPattern: $0)) } ?? .null }
}

/// One libpq connection, used by one thread at a time, always in nonblocking mode: every wait is
/// a poll() with a deadline on the monotonic clock, so a dead network never holds a caller longer
/// than it asked for. TCP keepalives and a user timeout make the kernel notice a dead peer too.
final class PostgresConnection {
    let handle: OpaquePointer
    /// The URL with its password redacted, for messages.
    let target: String
    /// Set when an exchange timed out or the server went away: drop the connection.
    private(set) var broken = false

    struct Options {
        /// A name the server shows in pg_stat_activity (and tests use to find the connection).
        var applicationName = "muster"
        /// The server cancels a statement that runs longer (milliseconds; 0: never).
        var statementTimeoutMilliseconds = 30_000
    }

    /// Connects to `uri` (a postgres:// URL or any libpq connection string), waiting until
    /// `deadline` (monotonic nanoseconds) at most once the host name is resolved (libpq resolves
    /// it before it returns control).
    init(uri: String, target: String, options: Options, deadline: UInt64) throws(PostgresError) {
        self.target = target
        // Ours first: a parameter of the URL (processed later, from the expanded dbname) wins.
        let timeoutSeconds = max(2, Int((deadline &- monotonicNanoseconds()) / 1_000_000_000))
        let pairs: [(String, String)] = [
            ("connect_timeout", String(timeoutSeconds)),
            ("keepalives", "1"), ("keepalives_idle", "5"), ("keepalives_interval", "2"), ("keepalives_count", "3"),
            ("tcp_user_timeout", "10000"),
            ("application_name", options.applicationName),
            ("dbname", uri),
        ]
        let keys = pairs.map { strdup($0.0) }
        let values = pairs.map { strdup($0.1) }
        defer {
            keys.forEach { free($0) }
            values.forEach { free($0) }
        }
        var keyPointers = keys.map { UnsafePointer<CChar>($0) } + [nil]
        var valuePointers = values.map { UnsafePointer<CChar>($0) } + [nil]
        guard let conn = PQconnectStartParams(&keyPointers, &valuePointers, 1) else {
            throw PostgresError(sqlstate: nil, message: "out of memory", connectionLost: true)
        }
        handle = conn
        // From here on a failure leaves the connection to deinit (PQfinish).
        do throws(PostgresError) {
            if PQstatus(conn) == CONNECTION_BAD { throw connectFailure() }
            var status = PGRES_POLLING_WRITING
            while status != PGRES_POLLING_OK {
                switch status {
                case PGRES_POLLING_READING: try wait(read: true, write: false, until: deadline)
                case PGRES_POLLING_WRITING: try wait(read: false, write: true, until: deadline)
                case PGRES_POLLING_FAILED: throw connectFailure()
                default: break
                }
                status = PQconnectPoll(conn)
            }
            PQsetnonblocking(conn, 1)
            // Notices (say "relation already exists, skipping") are not failures; libpq would
            // print them on stderr.
            PQsetNoticeProcessor(conn, { _, _ in }, nil)
            try run(
                "SET statement_timeout = \(options.statementTimeoutMilliseconds); SET synchronous_commit = on; SET lock_timeout = \(options.statementTimeoutMilliseconds)",
                until: deadline)
        } catch {
            broken = true
            throw error
        }
    }

    deinit { PQfinish(handle) }

    private func connectFailure() -> PostgresError {
        let message = errorMessage()
        // libpq gives no SQLSTATE for a refusal at start-up; the server's refusal arrives as a
        // FATAL message, transient states (starting up, shutting down, too many connections)
        // excepted.
        let transient = ["starting up", "shutting down", "too many", "remaining connection slots", "recovery"]
        let rejected = message.contains("FATAL") && !transient.contains { message.contains($0) }
        return PostgresError(sqlstate: nil, message: message, connectionLost: true, rejected: rejected)
    }

    private func errorMessage() -> String {
        var text = String(cString: PQerrorMessage(handle))
        while text.last?.isWhitespace == true { text.removeLast() }
        return text.replacingNewlines()
    }

    /// A timeout or a lost connection: the connection is done for.
    private func lost(_ message: String) -> PostgresError {
        broken = true
        return PostgresError(sqlstate: nil, message: message, connectionLost: true)
    }

    /// Waits until the socket is ready (or the deadline passes: a failure).
    private func wait(read: Bool, write: Bool, until deadline: UInt64) throws(PostgresError) {
        while true {
            let fd = PQsocket(handle)
            guard fd >= 0 else { throw lost("no connection to the server") }
            let now = monotonicNanoseconds()
            guard now < deadline else { throw lost("the server did not answer in time") }
            var p = pollfd(fd: fd, events: Int16((read ? POLLIN : 0) | (write ? POLLOUT : 0)), revents: 0)
            let rc = poll(&p, 1, Int32(clamping: (deadline - now + 999_999) / 1_000_000))
            if rc > 0 { return }
            if rc < 0 && errno != EINTR { throw lost("poll: \(String(cString: strerror(errno)))") }
        }
    }

    /// Sends what libpq buffered, reading meanwhile (the server may answer before it has read all).
    private func flush(until deadline: UInt64) throws(PostgresError) {
        while true {
            let rc = PQflush(handle)
            if rc == 0 { return }
            if rc < 0 { throw lost(errorMessage()) }
            try wait(read: true, write: true, until: deadline)
            if PQconsumeInput(handle) == 0 { throw lost(errorMessage()) }
        }
    }

    /// The next result, waiting for it until the deadline; nil after the last of a query.
    private func nextResult(until deadline: UInt64) throws(PostgresError) -> PostgresResult? {
        while PQisBusy(handle) != 0 {
            try wait(read: true, write: false, until: deadline)
            if PQconsumeInput(handle) == 0 { throw lost(errorMessage()) }
        }
        return PQgetResult(handle).map(PostgresResult.init)
    }

    /// The error a failed result carries.
    private func failure(_ result: PostgresResult) -> PostgresError {
        let state = PQresultErrorField(result.handle, Int32(UInt8(ascii: "C"))).map { String(cString: $0) }
        var text = PQresultErrorMessage(result.handle).map { String(cString: $0) } ?? ""
        while text.last?.isWhitespace == true { text.removeLast() }
        if text.isEmpty { text = errorMessage() }
        let gone = PQstatus(handle) != CONNECTION_OK
        if gone { broken = true }
        return PostgresError(
            sqlstate: state, message: text.replacingNewlines(),
            connectionLost: gone || state?.hasPrefix("08") == true || state?.hasPrefix("57P") == true)
    }

    /// Runs SQL without parameters (several statements allowed); returns the last result.
    @discardableResult
    func run(_ sql: String, until deadline: UInt64) throws(PostgresError) -> PostgresResult? {
        guard PQsendQuery(handle, sql) == 1 else { throw lost(errorMessage()) }
        return try finishQuery(until: deadline)
    }

    /// Runs one statement with parameters (binary in, binary out); returns its result.
    @discardableResult
    func query(_ sql: String, _ params: [PostgresValue] = [], until deadline: UInt64) throws(PostgresError)
        -> PostgresResult?
    {
        let sent = Self.withParameters(params) { count, types, values, lengths, formats in
            PQsendQueryParams(handle, sql, count, types, values, lengths, formats, 1)
        }
        guard sent == 1 else { throw lost(errorMessage()) }
        return try finishQuery(until: deadline)
    }

    private func finishQuery(until deadline: UInt64) throws(PostgresError) -> PostgresResult? {
        try flush(until: deadline)
        var last: PostgresResult?
        var failed: PostgresError?
        while let result = try nextResult(until: deadline) {
            let status = PQresultStatus(result.handle)
            if status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK && failed == nil { failed = failure(result) }
            last = result
        }
        if let failed { throw failed }
        return last
    }

    /// Prepares a named statement on this connection (parameters typed by `types`, OIDs).
    func prepare(_ name: String, _ sql: String, types: [Oid], until deadline: UInt64) throws(PostgresError) {
        let sent = types.withUnsafeBufferPointer {
            PQsendPrepare(handle, name, sql, Int32(types.count), $0.baseAddress)
        }
        guard sent == 1 else { throw lost(errorMessage()) }
        _ = try finishQuery(until: deadline)
    }

    /// One statement of a pipeline: a prepared statement's name and its parameters.
    struct Call {
        var statement: String
        var params: [PostgresValue]
    }

    /// Sends every call in one pipeline ending in one Sync, so the calls run as one implicit
    /// transaction (committed at the Sync; rolled back as a whole when any fails) in one round
    /// trip. Returns each call's result, in order, or throws the first failure.
    func pipeline(_ calls: [Call], until deadline: UInt64) throws(PostgresError) -> [PostgresResult] {
        guard PQenterPipelineMode(handle) == 1 else { throw lost(errorMessage()) }
        var results: [PostgresResult] = []
        results.reserveCapacity(calls.count)
        var failed: PostgresError?
        for call in calls {
            let sent = Self.withParameters(call.params) { count, _, values, lengths, formats in
                PQsendQueryPrepared(handle, call.statement, count, values, lengths, formats, 1)
            }
            guard sent == 1 else { throw lost(errorMessage()) }
        }
        guard PQpipelineSync(handle) == 1 else { throw lost(errorMessage()) }
        try flush(until: deadline)
        for _ in calls {
            var own: PostgresResult?
            while let result = try nextResult(until: deadline) {
                let status = PQresultStatus(result.handle)
                if status == PGRES_PIPELINE_ABORTED {
                    if failed == nil {
                        failed = PostgresError(sqlstate: nil, message: "pipeline aborted", connectionLost: false)
                    }
                } else if status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK {
                    if failed == nil || failed?.sqlstate == nil { failed = failure(result) }
                }
                own = result
            }
            if let own { results.append(own) }
        }
        // The Sync's own result.
        guard let sync = try nextResult(until: deadline), PQresultStatus(sync.handle) == PGRES_PIPELINE_SYNC else {
            throw lost("the pipeline did not end with its sync: \(errorMessage())")
        }
        guard PQexitPipelineMode(handle) == 1 else { throw lost(errorMessage()) }
        if let failed { throw failed }
        return results
    }

    /// Lays the parameters out as libpq wants them: binary format, int8 or bytea.
    private static func withParameters<R>(
        _ params: [PostgresValue],
        _ body: (
            Int32, UnsafePointer<Oid>?, UnsafePointer<UnsafePointer<CChar>?>?, UnsafePointer<Int32>?,
            UnsafePointer<Int32>?
        ) -> R
    ) -> R {
        var storage: [UInt8] = []
        var offsets: [Int] = []
        var lengths: [Int32] = []
        var types: [Oid] = []
        for p in params {
            offsets.append(storage.count)
            switch p {
            case .int64(let v):
                withUnsafeBytes(of: v.bigEndian) { storage.append(contentsOf: $0) }
                lengths.append(8)
                types.append(20)
            case .bytes(let b):
                storage.append(contentsOf: b)
                lengths.append(Int32(b.count))
                types.append(17)
            case .string(let s):
                storage.append(contentsOf: s.utf8)
                lengths.append(Int32(s.utf8.count))
                types.append(25)
            case .null:
                lengths.append(-1)
                types.append(0)
            }
        }
        // One extra byte: an empty value still needs a non-NULL pointer (NULL means SQL NULL).
        storage.append(0)
        let formats = [Int32](repeating: 1, count: params.count)
        return storage.withUnsafeBufferPointer { base in
            let start = UnsafeRawPointer(base.baseAddress!).assumingMemoryBound(to: CChar.self)
            let values: [UnsafePointer<CChar>?] = params.indices.map { i in
                if case .null = params[i] { return nil }
                return start + offsets[i]
            }
            return body(Int32(params.count), types, values, lengths, formats)
        }
    }
}

/// A query's result (binary format), freed with the object.
final class PostgresResult {
    let handle: OpaquePointer

    init(_ handle: OpaquePointer) { self.handle = handle }
    deinit { PQclear(handle) }

    var rows: Int { Int(PQntuples(handle)) }
    /// Rows an INSERT, UPDATE or DELETE touched.
    var affected: Int { Int(String(cString: PQcmdTuples(handle))) ?? 0 }

    @inline(__always) func isNull(_ row: Int, _ column: Int) -> Bool {
        PQgetisnull(handle, Int32(row), Int32(column)) == 1
    }

    /// An int8 column (binary: 8 bytes, big-endian); an int4 or int2 too.
    func int64(_ row: Int, _ column: Int) -> Int64 {
        let length = PQgetlength(handle, Int32(row), Int32(column))
        guard let p = PQgetvalue(handle, Int32(row), Int32(column)) else { return 0 }
        var value: Int64 = 0
        let bytes = UnsafeRawPointer(p).assumingMemoryBound(to: UInt8.self)
        for i in 0..<Int(length) { value = value << 8 | Int64(bytes[i]) }
        // Sign-extend int4 and int2.
        if length == 4 { value = Int64(Int32(truncatingIfNeeded: value)) }
        if length == 2 { value = Int64(Int16(truncatingIfNeeded: value)) }
        return value
    }

    func optionalInt64(_ row: Int, _ column: Int) -> Int64? { isNull(row, column) ? nil : int64(row, column) }
    func uint64(_ row: Int, _ column: Int) -> UInt64 { UInt64(bitPattern: int64(row, column)) }

    /// A bytea or text column's bytes (nil for NULL), valid while the result lives.
    func bytes(_ row: Int, _ column: Int) -> UnsafeBufferPointer<UInt8>? {
        guard !isNull(row, column), let p = PQgetvalue(handle, Int32(row), Int32(column)) else { return nil }
        let length = Int(PQgetlength(handle, Int32(row), Int32(column)))
        return UnsafeBufferPointer(start: UnsafeRawPointer(p).assumingMemoryBound(to: UInt8.self), count: length)
    }

    func string(_ row: Int, _ column: Int) -> String? { bytes(row, column).map { String(decoding: $0, as: UTF8.self) } }

    func bool(_ row: Int, _ column: Int) -> Bool { bytes(row, column)?.first == 1 }
}

extension String {
    fileprivate func replacingNewlines() -> String {
        String(
            split(whereSeparator: \.isNewline).map { $0.trimmingPrefix(while: \.isWhitespace) }.joined(separator: "; "))
    }
}
