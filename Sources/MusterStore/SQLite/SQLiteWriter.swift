import CSQLite
import MusterCore
import MusterProtocol

/// The SQLite side of the group commit, owned by the writer thread once the store is open.
///
/// After a failed commit the writer closes the database and opens it again for the retry: no
/// error state sticks to the connection, and while the store waits to retry it holds no file open
/// on a failing file system (so an administrator can remount it, read-only or read-write; Linux
/// refuses to remount read-only while files are open for writing).
final class SQLiteWriter: CommitSink {
    let path: String
    let busyTimeout: Duration
    /// Free pages above which a commit that deleted rows also compacts the file.
    let compactionThresholdPages: Int64
    private var database: SQLiteDatabase?

    init(_ database: SQLiteDatabase, busyTimeout: Duration, compactionThresholdPages: Int) {
        self.path = database.connection.path
        self.busyTimeout = busyTimeout
        self.compactionThresholdPages = Int64(max(1, compactionThresholdPages))
        self.database = database
    }

    func commit(_ changes: [SequencedChange]) throws(StoreFailure) -> Int {
        do throws(StoreFailure) {
            let database: SQLiteDatabase
            if let open = self.database {
                database = open
            } else {
                database = try reopen()
                self.database = database
            }
            return try database.commit(changes, compactionThresholdPages: compactionThresholdPages)
        } catch {
            database = nil  // closes the connection once its statements are gone (they are, with it)
            throw error
        }
    }

    /// Opens the existing store again (never creates one: a file removed under a running store is
    /// a failure, not a fresh empty store).
    private func reopen() throws(StoreFailure) -> SQLiteDatabase {
        let connection = try SQLiteConnection(path: path, create: false)
        connection.opening = false
        try SQLiteWriter.configure(connection, busyTimeout: busyTimeout)
        let version = try connection.integer("PRAGMA user_version")
        let applicationID = try connection.integer("PRAGMA application_id")
        guard version == SQLiteSchema.version, applicationID == SQLiteSchema.applicationID else {
            throw StoreFailure(
                .corrupt,
                "the store file changed under the running store (schema version \(version), application_id \(applicationID)) (\(path))"
            )
        }
        try SQLiteWriter.lockExclusively(connection, path: path)
        return try SQLiteDatabase(connection)
    }

    func finish() {
        // Moves the log into the database file and truncates the log to zero bytes: a stopped
        // daemon leaves one file of the size of its data. Failures here lose nothing (the log
        // stays and is replayed on the next open).
        try? database?.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        database = nil
    }
}

/// An open connection with its prepared statements.
final class SQLiteDatabase {
    let connection: SQLiteConnection
    private let begin: Statement
    private let commitTransaction: Statement
    private let rollback: Statement
    private let insertBatch: Statement
    private let insertJob: Statement
    private let bindJob: Statement
    private let requeueJob: Statement
    private let startJob: Statement
    private let endJob: Statement
    private let deleteJobs: Statement
    private let deleteBatch: Statement
    private let upsertBackend: Statement
    private let backendDown: Statement
    private let forgetBackend: Statement
    private let freelistCount: Statement

    init(_ connection: SQLiteConnection) throws(StoreFailure) {
        self.connection = connection
        begin = try Statement(connection, "BEGIN IMMEDIATE")
        commitTransaction = try Statement(connection, "COMMIT")
        rollback = try Statement(connection, "ROLLBACK")
        insertBatch = try Statement(connection, SQLiteSchema.insertBatch)
        insertJob = try Statement(connection, SQLiteSchema.insertJob)
        bindJob = try Statement(connection, SQLiteSchema.bindJob)
        requeueJob = try Statement(connection, SQLiteSchema.requeueJob)
        startJob = try Statement(connection, SQLiteSchema.startJob)
        endJob = try Statement(connection, SQLiteSchema.endJob)
        deleteJobs = try Statement(connection, SQLiteSchema.deleteJobs)
        deleteBatch = try Statement(connection, SQLiteSchema.deleteBatch)
        upsertBackend = try Statement(connection, SQLiteSchema.upsertBackend)
        backendDown = try Statement(connection, SQLiteSchema.backendDown)
        forgetBackend = try Statement(connection, SQLiteSchema.forgetBackend)
        freelistCount = try Statement(connection, "PRAGMA freelist_count")
    }

    /// Evicted jobs of the commit in progress, deleted together as it ends (`deleteEvicted`).
    private var evicted: [UInt64] = []

    /// Writes `changes` in one transaction; returns the job rows gained (negative: lost).
    func commit(_ changes: [SequencedChange], compactionThresholdPages: Int64) throws(StoreFailure) -> Int {
        var jobsDelta = 0
        var deleted = false
        evicted.removeAll(keepingCapacity: true)
        do throws(StoreFailure) {
            try begin.run()
            let skip = StoreRows.superseded(changes)
            for (i, change) in changes.enumerated() where !skip[i] {
                jobsDelta += try apply(change.change, deleted: &deleted)
            }
            jobsDelta -= try deleteEvicted()
            if deleted { try compact(threshold: compactionThresholdPages) }
            try commitTransaction.run()
        } catch {
            // Some failures end the transaction themselves (SQLITE_FULL and I/O errors may);
            // others leave it open (a failed COMMIT under SQLITE_BUSY).
            if connection.inTransaction { try? rollback.run() }
            throw error
        }
        return jobsDelta
    }

    /// Applies one change inside the open transaction; returns the job rows gained or lost.
    private func apply(_ change: StoreChange, deleted: inout Bool) throws(StoreFailure) -> Int {
        switch change {
        case .batchAccepted(let batch):
            let count = batch.jobCount
            insertBatch.bind(1, batch.id.rawValue)
            try insertBatch.bind(2, batch.key)
            insertBatch.bind(3, batch.firstJob.rawValue)
            insertBatch.bind(4, count)
            insertBatch.bind(5, batch.submittedAt.nanoseconds)
            try insertBatch.bind(6, utf8: EntriesJSON.encode(batch.entries))
            try insertBatch.bind(7, batch.owner)
            try insertBatch.run()
            insertJob.bind(2, batch.id.rawValue)
            for n in 0..<UInt64(max(0, count)) {
                insertJob.bind(1, batch.firstJob.rawValue &+ n)
                try insertJob.run()
            }
            return count

        case .jobBound(let job, let backend, let lease, let attempt, let at):
            bindJob.bind(1, job.rawValue)
            bindJob.bind(2, backend.rawValue)
            bindJob.bind(3, lease.rawValue)
            bindJob.bind(4, attempt)
            bindJob.bind(5, at.nanoseconds)
            try bindJob.run()
            return 0

        case .jobStarted(let job, let at):
            startJob.bind(1, job.rawValue)
            startJob.bind(2, at.nanoseconds)
            try startJob.run()
            return 0

        case .jobRequeued(let job, let attempt, let lostAttempts, let history):
            requeueJob.bind(1, job.rawValue)
            requeueJob.bind(2, attempt)
            requeueJob.bind(3, lostAttempts)
            try requeueJob.bind(4, utf8: HistoryJSON.encode(history))
            try requeueJob.run()
            return 0

        case .jobEnded(let job):
            endJob.bind(1, job.id.rawValue)
            endJob.bind(2, StoreRows.stateCode(job.state))
            endJob.bind(3, job.backend?.rawValue)
            endJob.bind(4, job.lease?.rawValue)
            endJob.bind(5, job.attempt)
            endJob.bind(6, job.lostAttempts)
            endJob.bind(7, job.endedAt?.nanoseconds)
            try endJob.bind(8, job.result?.text)
            try endJob.bind(9, job.failure?.code.rawValue)
            try endJob.bind(10, job.failure?.message)
            let (boundAt, startedAt, history) = StoreRows.finalHistory(job)
            endJob.bind(11, boundAt)
            endJob.bind(12, startedAt)
            if let history { try endJob.bind(13, utf8: history) } else { endJob.bindNull(13) }
            if let details = job.failure.flatMap(DetailsJSON.encode) {
                try endJob.bind(14, utf8: details)
            } else {
                endJob.bindNull(14)
            }
            try endJob.run()
            return 0

        case .evicted(let jobs, let batches):
            // The rows go as the commit ends, in runs of consecutive ids: retention evicts one job
            // per job that ends, oldest first, so a commit's evictions are mostly one run.
            for job in jobs { evicted.append(job.rawValue) }
            for batch in batches {
                deleteBatch.bind(1, batch.rawValue)
                try deleteBatch.run()
            }
            deleted = deleted || !jobs.isEmpty || !batches.isEmpty
            return 0

        case .backendRegistered(let id, let name, let incarnation):
            upsertBackend.bind(1, id.rawValue)
            try upsertBackend.bind(2, name)
            upsertBackend.bind(3, incarnation.rawValue)
            try upsertBackend.run()
            return 0

        case .backendDown(let id, let at):
            backendDown.bind(1, id.rawValue)
            backendDown.bind(2, StoreRows.downCode(at))
            try backendDown.run()
            return 0

        case .backendForgotten(let id):
            forgetBackend.bind(1, id.rawValue)
            try forgetBackend.run()
            return 0
        }
    }

    /// Deletes the rows of the jobs evicted in this commit, a statement per run of consecutive
    /// ids; returns how many rows went. Deferring them to the end of the transaction changes
    /// nothing: an evicted job is final and gone from the core, so no later change of the same
    /// commit can concern it.
    private func deleteEvicted() throws(StoreFailure) -> Int {
        guard !evicted.isEmpty else { return 0 }
        evicted.sort()
        var removed = 0
        var i = 0
        while i < evicted.count {
            var j = i
            // A run stays on one side of the sign bit: SQLite compares the stored bit patterns as
            // signed integers.
            let side = evicted[i] >> 63
            while j + 1 < evicted.count && evicted[j + 1] &- evicted[j] <= 1 && evicted[j + 1] >> 63 == side {
                j += 1
            }
            deleteJobs.bind(1, evicted[i])
            deleteJobs.bind(2, evicted[j])
            try deleteJobs.run()
            removed += connection.changes
            i = j + 1
        }
        return removed
    }

    /// Gives free pages back to the file system once there are more than the threshold, inside
    /// the commit that freed them (no extra fsync). Half the threshold stays free for the rows of
    /// new batches, so a steady flow of batches and evictions does not move pages back and forth.
    private func compact(threshold: Int64) throws(StoreFailure) {
        defer { freelistCount.reset() }
        guard try freelistCount.step() else { return }
        let free = freelistCount.int64(0)
        guard free > threshold else { return }
        freelistCount.reset()
        try connection.execute("PRAGMA incremental_vacuum(\(free - threshold / 2))")
    }
}
