import MusterCore
import MusterProtocol

/// The PostgreSQL side of the group commit, owned by the writer thread once the store is open.
/// After a failed commit the connection is dropped and a new one made for the retry (a server
/// restarted, failed over or back on the network is found again).
final class PostgresWriter: CommitSink {
    let url: String
    let target: String
    let fencingToken: Int64?
    private let sizes: SharedCounter
    private var connection: PostgresConnection?
    /// Set once a commit found another leader's token: every later commit is refused at once.
    private var fenced: StoreFailure?
    private var lastSizeCheck: UInt64 = 0

    /// How long one exchange with the server may take before the connection counts as lost.
    static let exchangeTimeout: UInt64 = 30_000_000_000
    /// Jobs per FETCH while reading the store at open.
    static let fetchRows = 50_000

    private init(
        url: String, target: String, fencingToken: Int64?, sizes: SharedCounter, connection: PostgresConnection
    ) {
        self.url = url
        self.target = target
        self.fencingToken = fencingToken
        self.sizes = sizes
        self.connection = connection
    }

    private static func deadline() -> UInt64 { monotonicNanoseconds() + exchangeTimeout }

    /// Connects with the store's options and prepares its statements; checks the schema version
    /// (creating or migrating the schema when `migrate`).
    private static func connect(url: String, target: String, migrate: Bool) throws(StoreFailure) -> PostgresConnection {
        do throws(PostgresError) {
            var options = PostgresConnection.Options()
            options.applicationName = "muster-store"
            let connection = try PostgresConnection(uri: url, target: target, options: options, deadline: deadline())
            let version: Int64
            if migrate {
                version = try PostgresSchema.migrate(connection, until: deadline())
            } else {
                let found = try connection.query("SELECT version FROM muster_schema WHERE id = 1", until: deadline())
                version = found.flatMap { $0.rows > 0 ? $0.int64(0, 0) : nil } ?? 0
            }
            guard version == PostgresSchema.version else {
                throw PostgresError(
                    sqlstate: nil,
                    message: version > PostgresSchema.version
                        ? "written by a newer Muster (schema version \(version); this build reads up to \(PostgresSchema.version)): run the newer build or use another database"
                        : "the schema changed under the running store (version \(version))",
                    connectionLost: false, rejected: true)
            }
            for statement in PostgresSchema.statements {
                try connection.prepare(statement.name, statement.sql, types: statement.types, until: deadline())
            }
            return connection
        } catch {
            throw error.storeFailure(target: target, opening: migrate)
        }
    }

    /// Connects (creating or migrating the schema), checks the fencing token, increments the
    /// epoch and reads everything, in one transaction.
    static func open(
        url: String, target: String, fencingToken: Int64?, sizes: SharedCounter
    ) throws(StoreFailure) -> (PostgresWriter, StoreSnapshot) {
        let connection = try connect(url: url, target: target, migrate: true)
        var snapshot = StoreSnapshot()
        do {
            try connection.run("BEGIN", until: deadline())
            if let token = fencingToken {
                try connection.query("SELECT muster_check_fence($1)", [.int64(token)], until: deadline())
            }
            let epoch = try connection.query(
                "UPDATE muster_meta SET epoch = epoch + 1 WHERE id = 1 RETURNING epoch", until: deadline())
            guard let epoch, epoch.rows == 1 else {
                throw StoreFailure(.corrupt, "the meta row holding the epoch is missing (\(target))")
            }
            snapshot.epoch = epoch.uint64(0, 0)
            snapshot.batches = try readBatches(connection)
            snapshot.jobs = try readJobs(connection)
            if let backends = try connection.query(PostgresSchema.selectBackends, until: deadline()) {
                for row in 0..<backends.rows {
                    let (down, downAt) = StoreRows.down(backends.int64(row, 3))
                    snapshot.backends.append(
                        StoredBackend(
                            id: BackendID(backends.int64(row, 0)), name: backends.string(row, 1) ?? "",
                            incarnation: Incarnation(backends.uint64(row, 2)), down: down, downAt: downAt))
                }
            }
            try connection.run("COMMIT", until: deadline())
        } catch {
            if !connection.broken { _ = try? connection.run("ROLLBACK", until: deadline()) }
            if let failure = error as? PostgresError { throw failure.storeFailure(target: target, opening: true) }
            throw error as? StoreFailure ?? StoreFailure(.io, "\(error) (\(target))")
        }
        let writer = PostgresWriter(
            url: url, target: target, fencingToken: fencingToken, sizes: sizes, connection: connection)
        writer.measureSizes(connection)
        return (writer, snapshot)
    }

    private static func readBatches(_ connection: PostgresConnection) throws -> [StoredBatch] {
        guard let rows = try connection.query(PostgresSchema.selectBatches, until: deadline()) else { return [] }
        var out: [StoredBatch] = []
        out.reserveCapacity(rows.rows)
        for row in 0..<rows.rows {
            let id = rows.uint64(row, 0)
            out.append(
                StoredBatch(
                    id: BatchID(id), key: rows.string(row, 1), owner: rows.string(row, 6),
                    entries: try StoreRows.entries(rows.bytes(row, 5), batch: id, where: connection.target),
                    firstJob: JobID(rows.uint64(row, 2)), submittedAt: CoreInstant(nanoseconds: rows.uint64(row, 4))))
        }
        return out
    }

    private static func readJobs(_ connection: PostgresConnection) throws -> [StoredJob] {
        try connection.run(PostgresSchema.declareJobs, until: deadline())
        var out: [StoredJob] = []
        while true {
            guard let rows = try connection.query("FETCH \(fetchRows) FROM muster_jobs_cursor", until: deadline()),
                rows.rows > 0
            else { break }
            out.reserveCapacity(out.count + rows.rows)
            for row in 0..<rows.rows {
                out.append(
                    try StoreRows.job(
                        id: rows.uint64(row, 0), batch: rows.uint64(row, 1), stateCode: rows.int64(row, 2),
                        backend: rows.optionalInt64(row, 3), lease: rows.optionalInt64(row, 4),
                        attempt: rows.int64(row, 5), lost: rows.int64(row, 6), endedAt: rows.optionalInt64(row, 7),
                        result: rows.string(row, 8), errorCode: rows.string(row, 9), errorMessage: rows.string(row, 10),
                        boundAt: rows.optionalInt64(row, 11), startedAt: rows.optionalInt64(row, 12),
                        history: rows.bytes(row, 13), details: rows.bytes(row, 14), where: connection.target))
            }
        }
        try connection.run("CLOSE muster_jobs_cursor", until: deadline())
        return out
    }

    // MARK: - Commits

    func commit(_ changes: [SequencedChange]) throws(StoreFailure) -> Int {
        if let fenced { throw fenced }
        let connection: PostgresConnection
        if let open = self.connection, !open.broken {
            connection = open
        } else {
            self.connection = nil
            connection = try Self.connect(url: url, target: target, migrate: false)
            self.connection = connection
        }

        var calls: [PostgresConnection.Call] = []
        calls.reserveCapacity(changes.count + 2)
        if let token = fencingToken { calls.append(.init(statement: "fence", params: [.int64(token)])) }
        var jobsDelta = 0
        // Calls whose affected rows count against the jobs stored (evictions).
        var deletions: [Int] = []
        let skip = StoreRows.superseded(changes)
        for (i, change) in changes.enumerated() where !skip[i] {
            jobsDelta += Self.calls(for: change.change, into: &calls, deletions: &deletions)
        }
        let now = monotonicNanoseconds()
        let measure = now &- lastSizeCheck >= 1_000_000_000
        if measure { calls.append(.init(statement: "sizes", params: [])) }

        let results: [PostgresResult]
        do throws(PostgresError) {
            results = try connection.pipeline(calls, until: Self.deadline())
        } catch {
            self.connection = nil
            let failure = error.storeFailure(target: target, opening: false)
            if failure.kind == .fenced { fenced = failure }
            throw failure
        }
        for i in deletions where i < results.count { jobsDelta -= results[i].affected }
        if measure, let last = results.last, last.rows == 1 {
            lastSizeCheck = now
            sizes.value = UInt64(max(0, last.int64(0, 0)))
        }
        return jobsDelta
    }

    /// The calls that write one change; returns the job rows it adds (evictions are counted from
    /// the rows their calls delete, listed in `deletions`).
    private static func calls(
        for change: StoreChange, into calls: inout [PostgresConnection.Call], deletions: inout [Int]
    ) -> Int {
        switch change {
        case .batchAccepted(let batch):
            let key = PostgresValue.text(batch.key)
            if batch.key != nil {
                calls.append(.init(statement: "drop_batch_key", params: [.int(batch.id.rawValue), key]))
            }
            calls.append(
                .init(
                    statement: "insert_batch",
                    params: [
                        .int(batch.id.rawValue), key, .int(batch.firstJob.rawValue), .int64(Int64(batch.jobCount)),
                        .int(batch.submittedAt.nanoseconds), .bytes(EntriesJSON.encode(batch.entries)),
                        .text(batch.owner),
                    ]))
            calls.append(
                .init(
                    statement: "insert_jobs",
                    params: [
                        .int(batch.firstJob.rawValue), .int(batch.id.rawValue), .int64(Int64(max(0, batch.jobCount))),
                    ]))
            return max(0, batch.jobCount)

        case .jobBound(let job, let backend, let lease, let attempt, let at):
            calls.append(
                .init(
                    statement: "bind_job",
                    params: [
                        .int(job.rawValue), .int64(backend.rawValue), .int(lease.rawValue), .int64(Int64(attempt)),
                        .int(at.nanoseconds),
                    ]))
            return 0

        case .jobStarted(let job, let at):
            calls.append(.init(statement: "start_job", params: [.int(job.rawValue), .int(at.nanoseconds)]))
            return 0

        case .jobRequeued(let job, let attempt, let lostAttempts, let history):
            calls.append(
                .init(
                    statement: "requeue_job",
                    params: [
                        .int(job.rawValue), .int64(Int64(attempt)), .int64(Int64(lostAttempts)),
                        .bytes(HistoryJSON.encode(history)),
                    ]))
            return 0

        case .jobEnded(let job):
            let (boundAt, startedAt, history) = StoreRows.finalHistory(job)
            calls.append(
                .init(
                    statement: "end_job",
                    params: [
                        .int(job.id.rawValue), .int64(StoreRows.stateCode(job.state)),
                        job.backend.map { .int64($0.rawValue) } ?? .null, .int(job.lease?.rawValue),
                        .int64(Int64(job.attempt)), .int64(Int64(job.lostAttempts)), .int(job.endedAt?.nanoseconds),
                        .text(job.result?.text), .text(job.failure?.code.rawValue), .text(job.failure?.message),
                        .int(boundAt), .int(startedAt), history.map { .bytes($0) } ?? .null,
                        job.failure.flatMap(DetailsJSON.encode).map { .bytes($0) } ?? .null,
                    ]))
            return 0

        case .evicted(let jobs, let batches):
            for job in jobs {
                deletions.append(calls.count)
                calls.append(.init(statement: "delete_job", params: [.int(job.rawValue)]))
            }
            for batch in batches { calls.append(.init(statement: "delete_batch", params: [.int(batch.rawValue)])) }
            return 0

        case .backendRegistered(let id, let name, let incarnation):
            let nameValue = PostgresValue.text(name)
            calls.append(.init(statement: "drop_backend_name", params: [.int64(id.rawValue), nameValue]))
            calls.append(
                .init(
                    statement: "upsert_backend", params: [.int64(id.rawValue), nameValue, .int(incarnation.rawValue)]))
            return 0

        case .backendDown(let id, let at):
            calls.append(.init(statement: "backend_down", params: [.int64(id.rawValue), .int64(StoreRows.downCode(at))]))
            return 0

        case .backendForgotten(let id):
            calls.append(.init(statement: "forget_backend", params: [.int64(id.rawValue)]))
            return 0
        }
    }

    private func measureSizes(_ connection: PostgresConnection) {
        guard let result = try? connection.pipeline([.init(statement: "sizes", params: [])], until: Self.deadline()),
            let r = result.first, r.rows == 1
        else { return }
        lastSizeCheck = monotonicNanoseconds()
        sizes.value = UInt64(max(0, r.int64(0, 0)))
    }

    func finish() {
        // The sizes as the store leaves them, for `statistics` after close().
        if let connection, !connection.broken { measureSizes(connection) }
        connection = nil
    }
}
