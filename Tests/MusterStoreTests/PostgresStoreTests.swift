import Foundation
import MusterCore
import MusterProtocol
import MusterStore
import Testing

/// What only the PostgreSQL store does: fencing under the leader election, failures classified
/// from the server's answers, a server that goes away and comes back. (The contract it shares
/// with SQLite runs against both in RoundTripTests and GroupCommitTests.)
@Suite struct PostgresStoreTests {
    static func batch(_ id: UInt64, firstJob: UInt64, count: Int = 2) -> StoredBatch {
        StoredBatch(
            id: BatchID(id), key: "batch-\(id)", entries: [BatchEntry(spec: JobSpec(kind: "image"), count: count)],
            firstJob: JobID(firstJob), submittedAt: .zero)
    }

    /// A store writing under the token of a term that ended is refused: once reported, final,
    /// nothing of it written; the new leader's store sees what the old one wrote before.
    @Test func aStoreOfAnEndedTermIsFencedOnceAndForGood() async throws {
        guard let url = TestPostgres.freshDatabase() else { return }
        let a = Candidate(url: url, name: "a", lease: .milliseconds(1500))
        let b = Candidate(url: url, name: "b", lease: .milliseconds(1500))
        guard let tokenA = await a.lead() else { return }

        let old = PostgresJobStore(url: url, retryInterval: .milliseconds(20), fencingToken: tokenA)
        let log = CommitLog()
        old.onCommit { log.record($0) }
        _ = try old.open()
        var expected = StoreSnapshot()
        let change = StoreChange.batchAccepted(Self.batch(1, firstJob: 1))
        expected.apply(change)
        await log.waitDurable(through: old.append(change))

        b.start()
        a.stop()
        guard let tokenB = await b.log.first("b leads", where: \.isLeader)?.token else { return }
        #expect(tokenB > tokenA)

        let refused = old.append(.batchAccepted(Self.batch(2, firstJob: 3)))
        await log.waitFailure(.fenced)
        _ = old.append(.jobBound(job: JobID(1), backend: BackendID(1), lease: Lease(9), attempt: 1, at: .zero))
        await log.wait("several refused attempts") { _ in old.statistics.failedCommits >= 4 }
        #expect(log.failures.count == 1, "fenced is reported once: \(log.failures)")
        #expect(log.failures.first?.kind == .fenced)
        #expect(log.durable.allSatisfy { $0 < refused })
        #expect(old.statistics.lastFailure?.kind == .fenced)
        old.close()

        // Opening under the old token is refused too.
        let reopenedOld = PostgresJobStore(url: url, fencingToken: tokenA)
        do {
            _ = try reopenedOld.open()
            Issue.record("opened under the token of an ended term")
        } catch {
            #expect(error.kind == .fenced, "\(error)")
        }
        // The new leader's store has what was written before its term, and nothing after.
        let new = PostgresJobStore(url: url, fencingToken: tokenB)
        let snapshot = try new.open()
        new.close()
        #expect(snapshot.batches == expected.batches)
        #expect(snapshot.jobs == expected.jobs)
    }

    /// Sessions of the database turn read-only (as on a hot standby): commits fail `read_only`,
    /// reported once, retried on fresh connections; once writable again everything is written.
    @Test func aReadOnlyDatabaseIsReportedAndRecoveredFrom() async throws {
        guard let url = TestPostgres.freshDatabase(), let server = TestPostgres.serverURL() else { return }
        let database = String(url[url.index(after: url.lastIndex(of: "/")!)...])
        let under = try StoreUnderTest(PostgresJobStore(url: url, retryInterval: .milliseconds(50)))
        let (store, log) = (under.store, under.log)
        await log.waitDurable(through: under.append(.batchAccepted(Self.batch(1, firstJob: 1))))

        // From the server's own database: sessions of this one can no longer undo it.
        TestPostgres.sql(server, "ALTER DATABASE \(database) SET default_transaction_read_only = on")
        // The store's session keeps its settings: end it, so the store connects again.
        TestPostgres.sql(
            server,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'muster-store' AND datname = '\(database)'"
        )
        let failing = under.append(.batchAccepted(Self.batch(2, firstJob: 3)))
        await log.waitFailure(.readOnly)
        let last = under.append(.jobBound(job: JobID(3), backend: BackendID(1), lease: Lease(1), attempt: 1, at: .zero))
        await log.wait("a few more attempts") { _ in store.statistics.failedCommits >= 3 }
        #expect(log.durable.allSatisfy { $0 < failing })
        #expect(log.failures.last?.kind == .readOnly)
        #expect(log.failures.last?.message.contains("25006") == true)
        #expect(log.failures.allSatisfy { !$0.message.contains(":muster@") }, "the password stays out of messages")

        TestPostgres.sql(server, "ALTER DATABASE \(database) RESET default_transaction_read_only")
        await log.waitDurable(through: last)
        try under.closeAndCheck(PostgresJobStore(url: url), epoch: 2)
    }

    /// The server stops under a running store: commits fail `io` while it is down and go through
    /// once it is back, nothing lost, nothing reported durable that was not.
    @Test func theStoreSurvivesARestartOfTheServer() async throws {
        guard let server = PrivatePostgres() else { return }
        defer { server.shutdown() }
        let under = try StoreUnderTest(PostgresJobStore(url: server.url, retryInterval: .milliseconds(50)))
        let (store, log) = (under.store, under.log)
        await log.waitDurable(through: under.append(.batchAccepted(Self.batch(1, firstJob: 1))))

        guard server.ctl("stop") else { return }
        let failing = under.append(.batchAccepted(Self.batch(2, firstJob: 3)))
        await log.waitFailure(.io)
        var last: UInt64 = 0
        for n in 1...20 {
            last = under.append(
                .jobBound(job: JobID(UInt64(n % 4 + 1)), backend: BackendID(1), lease: Lease(UInt64(n)), attempt: n, at: .zero))
        }
        await log.wait("a few more attempts") { _ in store.statistics.failedCommits >= 3 }
        #expect(log.durable.allSatisfy { $0 < failing })
        #expect(store.statistics.lastFailure?.kind == .io)

        guard server.ctl("start") else { return }
        await log.waitDurable(through: last)
        #expect(store.statistics.lastFailure == nil)
        try under.closeAndCheck(PostgresJobStore(url: server.url), epoch: 2)
    }

    @Test func aWrongPasswordOrAMissingDatabaseCannotOpen() async throws {
        guard let server = TestPostgres.serverURL() else { return }
        let wrongPassword = TestPostgres.url(server, user: "muster", password: "not-the-password")
        let missing = TestPostgres.url(server, database: "no_such_database_here")
        for url in [wrongPassword, missing] {
            do {
                _ = try PostgresJobStore(url: url).open()
                Issue.record("opened \(url)")
            } catch {
                #expect(error.kind == .cannotOpen, "\(error)")
                #expect(!error.message.contains("not-the-password"), "\(error)")
            }
        }
        // Nothing listens: an I/O failure (the server may come), not a refusal.
        do {
            _ = try PostgresJobStore(url: "postgres://muster:pw@127.0.0.1:1/muster").open()
            Issue.record("opened a store where nothing listens")
        } catch {
            #expect(error.kind == .io, "\(error)")
        }
    }

    @Test func aSchemaOfANewerMusterIsRefused() async throws {
        guard let url = TestPostgres.freshDatabase() else { return }
        let store = PostgresJobStore(url: url)
        _ = try store.open()
        store.close()
        TestPostgres.sql(url, "UPDATE muster_schema SET version = 99")
        do {
            _ = try PostgresJobStore(url: url).open()
            Issue.record("opened a store of schema version 99")
        } catch {
            #expect(error.kind == .cannotOpen)
            #expect(error.message.contains("newer Muster"), "\(error)")
        }
    }

    /// Two coordinators starting at once on an empty database: the migrations do not race (the
    /// advisory lock), both open, the epoch counts both.
    @Test func twoStoresCreatingTheSchemaAtOnceBothOpen() async throws {
        guard let url = TestPostgres.freshDatabase() else { return }
        let epochs = try await withThrowingTaskGroup(of: UInt64.self) { group in
            for _ in 0..<4 {
                group.addTask {
                    let store = PostgresJobStore(url: url)
                    defer { store.close() }
                    return try store.open().epoch
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(epochs.sorted() == [1, 2, 3, 4])
    }

    /// Everything reported durable is there without a close (the writer's process could have
    /// died): a new store object reads it while the first still runs.
    @Test func everythingReportedDurableIsThereWithoutAClose() async throws {
        guard let url = TestPostgres.freshDatabase() else { return }
        let under = try StoreUnderTest(PostgresJobStore(url: url))
        var last: UInt64 = 0
        for n in 0..<50 {
            last = under.append(.batchAccepted(Self.batch(UInt64(n + 1), firstJob: UInt64(n * 3 + 1), count: 3)))
        }
        await under.log.waitDurable(through: last)
        #expect(under.store.statistics.bytesOnDisk > 0)
        #expect(under.store.statistics.jobsStored == 150)
        // Read while the first store still runs.
        let second = PostgresJobStore(url: url)
        let snapshot = try second.open()
        second.close()
        var want = under.expected
        want.epoch = 2
        #expect(snapshot == want)
        under.store.close()
    }
}
