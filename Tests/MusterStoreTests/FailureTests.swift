import Foundation
import MusterCore
import MusterProtocol
import MusterStore
import Testing

/// Disks that fill up or turn read-only under a running store, and files that cannot be opened.
/// The tmpfs tests need root (CI runs as root); without it they fail, they are never skipped.
@Suite(.serialized) struct FailureTests {
    static func batch(_ id: UInt64, firstJob: UInt64, params: String = "{}") -> StoredBatch {
        StoredBatch(
            id: BatchID(id), key: nil,
            entries: [BatchEntry(spec: JobSpec(kind: "image", params: RawJSON(unchecked: params)), count: 2)],
            firstJob: JobID(firstJob), submittedAt: .zero)
    }

    /// Large enough that committing it needs pages a full tmpfs does not have.
    static let bulky = "{\"prompt\":\"\(String(repeating: "lighthouse ", count: 6000))\"}"

    @Test func diskFullIsReportedOnceThenRetriedUntilEverythingFits() throws {
        guard let fs = Tmpfs.mount(kibibytes: 512) else { return }
        defer { fs.unmount() }
        let path = fs.file("muster.sqlite")
        let store = SQLiteJobStore(path: path, retryInterval: .milliseconds(50))
        let log = CommitLog()
        store.onCommit { log.record($0) }
        _ = try store.open()
        var expected = StoreSnapshot()
        func append(_ change: StoreChange) -> UInt64 {
            expected.apply(change)
            return store.append(change)
        }
        let before = append(.batchAccepted(Self.batch(1, firstJob: 1)))
        log.waitDurable(through: before)

        fs.fill("filler")
        let failing = append(.batchAccepted(Self.batch(2, firstJob: 3, params: Self.bulky)))
        log.waitFailure(.diskFull)
        // Appended while failing: kept behind the failed change, in order.
        var last = append(.jobBound(job: JobID(3), backend: BackendID(1), lease: Lease(1), attempt: 1, at: .zero))
        last = append(.jobEnded(StoredJob(id: JobID(3), batch: BatchID(2), state: .completed, result: .emptyObject)))
        log.wait("a few more failed attempts") { _ in store.statistics.failedCommits >= 3 }

        #expect(log.durable.allSatisfy { $0 < failing }, "reported durable what was not committed: \(log.durable)")
        let failures = log.failures
        #expect(failures.count == 1, "one report per failure streak: \(failures)")
        #expect(failures.first?.kind == .diskFull)
        #expect(failures.first?.message.contains(path) == true)
        let stats = store.statistics
        #expect(stats.lastFailure?.kind == .diskFull)
        #expect(stats.durable == before && stats.appended == last)

        try FileManager.default.removeItem(atPath: fs.file("filler"))
        log.waitDurable(through: last)
        #expect(store.statistics.lastFailure == nil)
        store.close()

        let reopened = SQLiteJobStore(path: path)
        let snapshot = try reopened.open()
        reopened.close()
        expected.epoch = 2
        #expect(snapshot == expected)
    }

    /// Linux refuses to remount a file system read-only while a process holds files open on it
    /// for writing, and a running store holds its database and log open. After a failed commit
    /// the store closes its files until the retry, so the file system can be remounted then: here
    /// a full disk makes the first failure, the test remounts read-only in the pause, the retries
    /// fail read-only, and the store recovers once the file system is writable and has room.
    @Test func aFileSystemRemountedReadOnlyUnderTheStoreIsReportedAndRecoveredFrom() throws {
        guard let fs = Tmpfs.mount(kibibytes: 512) else { return }
        defer { fs.unmount() }
        let path = fs.file("muster.sqlite")
        let store = SQLiteJobStore(path: path, retryInterval: .milliseconds(50))
        let log = CommitLog()
        store.onCommit { log.record($0) }
        _ = try store.open()
        var expected = StoreSnapshot()
        func append(_ change: StoreChange) -> UInt64 {
            expected.apply(change)
            return store.append(change)
        }
        log.waitDurable(through: append(.batchAccepted(Self.batch(1, firstJob: 1))))

        // While the store holds its files open, the kernel says no.
        let busy = fs.remount(readOnly: true)
        #expect(busy.status != 0, "remount,ro succeeded while the store held its files open for writing")
        if busy.status == 0 { _ = fs.remount(readOnly: false) }

        fs.fill("filler")
        var last = append(.batchAccepted(Self.batch(2, firstJob: 3, params: Self.bulky)))
        log.waitFailure(.diskFull)
        // Between attempts the store holds no file open: the remount goes through (it may meet an
        // attempt in progress: try again).
        var remounted = false
        for _ in 0..<200 where !remounted {
            remounted = fs.remount(readOnly: true).status == 0
            if !remounted { usleep(5000) }
        }
        #expect(remounted, "could not remount read-only between the store's retries")
        log.waitFailure(.readOnly)
        let readOnly = log.failures.first { $0.kind == .readOnly }
        #expect(readOnly?.message.contains(path) == true)
        #expect(log.durable.allSatisfy { $0 < last })

        #expect(fs.remount(readOnly: false).status == 0)
        try FileManager.default.removeItem(atPath: fs.file("filler"))
        last = append(.backendRegistered(id: BackendID(1), name: "after", incarnation: Incarnation(2)))
        log.waitDurable(through: last)
        // A retry between the remount and the filler's removal may fail on the full disk again.
        #expect(Array(log.failures.map(\.kind).prefix(2)) == [.diskFull, .readOnly])
        store.close()

        let reopened = SQLiteJobStore(path: path)
        let snapshot = try reopened.open()
        reopened.close()
        expected.epoch = 2
        #expect(snapshot == expected)
    }

    @Test func openingOnAReadOnlyFileSystemFailsReadOnlyAndCanBeRetried() throws {
        guard let fs = Tmpfs.mount(kibibytes: 1024) else { return }
        defer { fs.unmount() }
        let path = fs.file("muster.sqlite")
        try Self.storeOneBatch(at: path)

        let ro = fs.remount(readOnly: true)
        try #require(ro.status == 0, "remount,ro: \(ro.output)")
        let store = SQLiteJobStore(path: path)
        let failure = #expect(throws: StoreFailure.self) { try store.open() }
        #expect(failure?.kind == .readOnly)
        #expect(failure?.message.contains(path) == true)

        let rw = fs.remount(readOnly: false)
        try #require(rw.status == 0, "remount,rw: \(rw.output)")
        // The same object opens once the file system is writable; the failed open did not count.
        let snapshot = try store.open()
        store.close()
        #expect(snapshot.epoch == 2)
        #expect(snapshot.jobs.count == 2)
    }

    /// A store file the coordinator may not write (mode 0444) fails `read_only`; once its mode
    /// is fixed the same store opens (the failed attempt left no read-only `-shm` index behind
    /// that would keep failing). As root, the store runs with the file system ids of `nobody`.
    @Test func aReadOnlyFileOpensOnceItsModeIsFixed() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let path = dir.file("muster.sqlite")
        try Self.storeOneBatch(at: path)
        #expect(!FileManager.default.fileExists(atPath: path + "-shm"), "a clean close leaves the file alone")
        chmod(dir.path, 0o777)
        chmod(path, 0o444)
        let store = SQLiteJobStore(path: path)
        let failure = Self.asNobody { #expect(throws: StoreFailure.self) { try store.open() } }
        #expect(failure?.kind == .readOnly, "\(String(describing: failure))")
        #expect(!FileManager.default.fileExists(atPath: path + "-shm"))
        chmod(path, 0o666)
        let snapshot = try Self.asNobody { try store.open() }
        store.close()
        #expect(snapshot.epoch == 2 && snapshot.jobs.count == 2)
    }

    /// A store file that cannot be created says the directory is not writable (SQLite's own
    /// message named the read-only retry's "No such file or directory").
    @Test func aFileInADirectoryThatIsNotWritableSaysSo() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        chmod(dir.path, 0o555)
        let path = dir.file("muster.sqlite")
        let failure = Self.asNobody { #expect(throws: StoreFailure.self) { try SQLiteJobStore(path: path).open() } }
        #expect(failure?.kind == .cannotOpen)
        #expect(failure?.message.contains("the directory \(dir.path) is not writable") == true, "\(String(describing: failure))")
    }

    /// A store at `path` holding batch 1 (two jobs), closed.
    static func storeOneBatch(at path: String) throws {
        let store = SQLiteJobStore(path: path)
        _ = try store.open()
        _ = store.append(.batchAccepted(batch(1, firstJob: 1)))
        store.close()
    }

    /// Runs `body` on this thread with the file system ids of `nobody` when root (permissions do
    /// not hold for root), as is otherwise.
    static func asNobody<T>(_ body: () throws -> T) rethrows -> T {
        guard geteuid() == 0 else { return try body() }
        // glibc's setfsuid/setfsgid (per thread), which the Glibc module does not export.
        typealias SetID = @convention(c) (UInt32) -> Int32
        let setfsuid = unsafeBitCast(dlsym(dlopen(nil, RTLD_NOW), "setfsuid"), to: SetID.self)
        let setfsgid = unsafeBitCast(dlsym(dlopen(nil, RTLD_NOW), "setfsgid"), to: SetID.self)
        _ = setfsgid(65534)
        _ = setfsuid(65534)
        defer {
            _ = setfsuid(0)
            _ = setfsgid(0)
        }
        return try body()
    }

    @Test func aDirectoryWhereTheFileShouldBeCannotBeOpened() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let path = dir.file("muster.sqlite")
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        let failure = #expect(throws: StoreFailure.self) { try SQLiteJobStore(path: path).open() }
        #expect(failure?.kind == .cannotOpen)
        #expect(failure?.message.contains(path) == true)
    }

    @Test func aFileWhereADirectoryShouldBeCannotBeOpened() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        try Data("x".utf8).write(to: URL(fileURLWithPath: dir.file("state")))
        let path = dir.file("state/muster.sqlite")
        let failure = #expect(throws: StoreFailure.self) { try SQLiteJobStore(path: path).open() }
        #expect(failure?.kind == .cannotOpen)
        #expect(failure?.message.contains(path) == true)
    }

    @Test func aFileOfGarbageIsCorrupt() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let path = dir.file("muster.sqlite")
        var rng = SplitMix64(seed: 7)
        let garbage = (0..<65536).map { _ in UInt8.random(in: 0...255, using: &rng) }
        try Data(garbage).write(to: URL(fileURLWithPath: path))
        let failure = #expect(throws: StoreFailure.self) { try SQLiteJobStore(path: path).open() }
        #expect(failure?.kind == .corrupt)
        #expect(failure?.message.contains(path) == true)
        // Nothing was written over it.
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == Data(garbage))
    }

    /// A stored JSON text that does not read (entries, history, a failure's details) makes the
    /// store corrupt, and the message says which row and column, and at which byte.
    @Test(arguments: [
        ("UPDATE batches SET entries = '[{' WHERE id = 1", "batch 1: its entries cannot be read"),
        ("UPDATE jobs SET history = '[1]' WHERE id = 1", "job 1: its history cannot be read"),
        (
            "UPDATE jobs SET error_code = 'no_eligible_backend', error_details = '{\"r\":[{}]}' WHERE id = 1",
            "job 1: its error's details cannot be read"
        ),
    ])
    func aStoredTextThatDoesNotReadIsCorrupt(update: String, message: String) throws {
        let path = try closedStore()
        defer { try? FileManager.default.removeItem(atPath: parentOf(path)) }
        let patched = run(["sqlite3", path, update])
        #expect(patched.status == 0, "\(patched.output)")
        let failure = #expect(throws: StoreFailure.self) { try SQLiteJobStore(path: path).open() }
        #expect(failure?.kind == .corrupt)
        #expect(failure?.message.contains(message) == true, "\(failure?.message ?? "")")
        #expect(failure?.message.contains(path) == true)
    }

    @Test func aStoreOfANewerSchemaIsRefused() throws {
        let path = try closedStore()
        defer { try? FileManager.default.removeItem(atPath: parentOf(path)) }
        try patchHeader(path, offset: 60, value: 99)  // user_version
        let failure = #expect(throws: StoreFailure.self) { try SQLiteJobStore(path: path).open() }
        #expect(failure?.kind == .cannotOpen)
        #expect(failure?.message.contains("newer") == true)
        #expect(failure?.message.contains(path) == true)
    }

    @Test func aVersion1StoreIsMigratedAndItsBatchesAreOwnedByTheirFirstEntrysOwner() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let path = dir.file("v1.sqlite")
        // The version 1 schema as it was written, with one batch of one job.
        let v1 = """
            PRAGMA auto_vacuum = INCREMENTAL;
            CREATE TABLE meta (id INTEGER PRIMARY KEY CHECK (id = 1), epoch INTEGER NOT NULL);
            INSERT INTO meta (id, epoch) VALUES (1, 4);
            CREATE TABLE batches (id INTEGER PRIMARY KEY, key TEXT UNIQUE, first_job INTEGER NOT NULL,
                job_count INTEGER NOT NULL, submitted_at INTEGER NOT NULL, entries TEXT NOT NULL);
            CREATE TABLE jobs (id INTEGER PRIMARY KEY, batch INTEGER NOT NULL, state INTEGER NOT NULL,
                attempt INTEGER NOT NULL, lost INTEGER NOT NULL, backend INTEGER, lease INTEGER, ended_at INTEGER,
                result TEXT, error_code TEXT, error_message TEXT);
            CREATE TABLE backends (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, incarnation INTEGER NOT NULL);
            INSERT INTO batches VALUES (1, 'k', 1, 1, 5,
                '[{"kind":"image","needs":[],"params":{},"priority":0,"owner":"ana","nodes":[],"count":1}]');
            INSERT INTO jobs (id, batch, state, attempt, lost) VALUES (1, 1, 0, 0, 0);
            INSERT INTO backends VALUES (1, 'gpu-box', 9);
            PRAGMA application_id = 1297306706;
            PRAGMA user_version = 1;
            """
        let created = run(["sqlite3", path, v1])
        #expect(created.status == 0, "\(created.output)")
        let store = SQLiteJobStore(path: path)
        let snapshot = try store.open()
        #expect(snapshot.epoch == 5)
        #expect(snapshot.batches.map(\.owner) == ["ana"])
        #expect(snapshot.jobs.map(\.id) == [JobID(1)])
        // The job written before the migration has no history (NULL): read as empty.
        #expect(snapshot.jobs.first?.history == [] && snapshot.jobs.first?.boundAt == nil)
        // A backend written before its link state was: read as up.
        #expect(snapshot.backends == [StoredBackend(id: BackendID(1), name: "gpu-box", incarnation: Incarnation(9))])
        // Written after the migration: the new columns hold the owner, the history and the binding's time.
        _ = store.append(
            .batchAccepted(
                StoredBatch(
                    id: BatchID(2), key: nil, owner: "bob", entries: [BatchEntry(spec: JobSpec(kind: "image"))],
                    firstJob: JobID(2), submittedAt: .zero)))
        let lost = AttemptRecord(
            attempt: 1, backend: BackendID(3), lease: Lease(7), boundAt: .seconds(1), startedAt: .seconds(2),
            endedAt: .seconds(3), outcome: .requeued, error: JobFailure(code: .backendLost, message: "link \"lost\""))
        _ = store.append(.jobRequeued(job: JobID(1), attempt: 1, lostAttempts: 1, history: [lost]))
        _ = store.append(.jobBound(job: JobID(1), backend: BackendID(-1), lease: Lease(8), attempt: 2, at: .seconds(4)))
        _ = store.append(.backendDown(id: BackendID(1), at: .seconds(5)))
        store.close()
        let again = SQLiteJobStore(path: path)
        let reopened = try again.open()
        #expect(reopened.batches.map(\.owner) == ["ana", "bob"])
        #expect(reopened.jobs.first?.history == [lost])
        #expect(reopened.jobs.first?.boundAt == .seconds(4) && reopened.jobs.first?.attempt == 2)
        #expect(reopened.backends.map(\.down) == [true])
        again.close()
        #expect(run(["sqlite3", path, "PRAGMA user_version"]).output.trimmingCharacters(in: .whitespacesAndNewlines) == "4")
    }

    @Test func anotherApplicationsDatabaseIsRefused() throws {
        let path = try closedStore()
        defer { try? FileManager.default.removeItem(atPath: parentOf(path)) }
        try patchHeader(path, offset: 68, value: 0x1234)  // application_id
        let failure = #expect(throws: StoreFailure.self) { try SQLiteJobStore(path: path).open() }
        #expect(failure?.kind == .cannotOpen)
        #expect(failure?.message.contains(path) == true)
    }

    /// A store created, written and closed (its log checkpointed into the file).
    private func closedStore() throws -> String {
        let dir = try TempDir()
        let path = dir.file("muster.sqlite")
        let store = SQLiteJobStore(path: path)
        _ = try store.open()
        _ = store.append(.batchAccepted(Self.batch(1, firstJob: 1)))
        store.close()
        return path
    }

    private func parentOf(_ path: String) -> String { URL(fileURLWithPath: path).deletingLastPathComponent().path }

    /// Writes a big-endian 32-bit value into the database header.
    private func patchHeader(_ path: String, offset: UInt64, value: UInt32) throws {
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        try handle.seek(toOffset: offset)
        try handle.write(contentsOf: withUnsafeBytes(of: value.bigEndian) { Data($0) })
    }
}
