import Foundation
import MusterCore
import MusterProtocol
import MusterStore
import Testing

@Suite struct GroupCommitTests {
    /// A batch of `count` jobs starting at `firstJob`.
    static func batch(_ id: UInt64, firstJob: UInt64, count: Int) -> StoredBatch {
        StoredBatch(
            id: BatchID(id), key: nil, entries: [BatchEntry(spec: JobSpec(kind: "image"), count: count)],
            firstJob: JobID(firstJob), submittedAt: .zero)
    }

    /// A store whose commits are an hour apart, opened, with batch 1 (jobs 1 ... `firstBatchJobs`)
    /// durable in its first commit: what is appended next waits for a close to be committed, all
    /// in one commit.
    static func openPaced(
        _ place: StorePlace, firstBatchJobs: Int
    ) throws -> (store: any JobStore, log: CommitLog, first: UInt64) {
        let store = place.store(commitInterval: .seconds(3600))
        let log = CommitLog()
        store.onCommit { log.record($0) }
        _ = try store.open()
        let first = store.append(.batchAccepted(batch(1, firstJob: 1, count: firstBatchJobs)))
        log.waitDurable(through: first)
        return (store, log, first)
    }

    @Test(arguments: StoreKind.allCases)
    func manyAppendsFromOneThreadShareFewCommitsAndDurableOnlyGrows(kind: StoreKind) throws {
        guard let place = try StorePlace(kind) else { return }
        defer { place.remove() }
        let store = place.store()
        let log = CommitLog()
        store.onCommit { log.record($0) }
        _ = try store.open()

        var seqs: [UInt64] = [store.append(.batchAccepted(Self.batch(1, firstJob: 1, count: 1000)))]
        for n in 0..<20_000 {
            let job = JobID(UInt64(n % 1000) + 1)
            seqs.append(store.append(.jobBound(job: job, backend: BackendID(1), lease: Lease(UInt64(n)), attempt: n, at: .zero)))
        }
        #expect(seqs == Array(1...20_001))
        log.waitDurable(through: 20_001)
        let durable = log.durable
        #expect(zip(durable, durable.dropFirst()).allSatisfy { $0 < $1 }, "durable went backwards: \(durable)")
        #expect(durable.last == 20_001)
        #expect(log.failures.isEmpty)
        let stats = store.statistics
        #expect(stats.appended == 20_001 && stats.durable == 20_001 && stats.pending == 0)
        #expect(stats.changesWritten == 20_001)
        #expect(stats.commits == UInt64(durable.count))
        #expect(stats.commits < 20_001, "one commit per change: no grouping")
        #expect(stats.jobsStored == 1000)
        #expect(stats.bytesOnDisk > 0)
        #expect(stats.lastFailure == nil)
        store.close()

        let reopened = place.store()
        let snapshot = try reopened.open()
        reopened.close()
        // The last binding of job k is change n = 19_000 + (k - 1).
        #expect(snapshot.jobs.count == 1000)
        #expect(snapshot.jobs.allSatisfy { $0.state == .bound && $0.attempt == 19_000 + Int($0.id.rawValue) - 1 })
    }

    /// Pacing (`commitInterval`): the first change after an idle spell is committed at once;
    /// changes appended while the next commit may not start yet wait and share one commit; a
    /// close does not wait out the interval but commits them at once. (The interval is an hour:
    /// a close that waited it out fails the 60 s bound below instead of passing slowly.)
    @Test(arguments: StoreKind.allCases)
    func changesAppendedWithinTheCommitIntervalShareOneCommit(kind: StoreKind) throws {
        guard let place = try StorePlace(kind) else { return }
        defer { place.remove() }
        let (store, log, first) = try Self.openPaced(place, firstBatchJobs: 100)
        #expect(store.statistics.commits == 1)
        var last: UInt64 = 0
        for n in 1...100 {
            last = store.append(.jobBound(job: JobID(UInt64(n)), backend: BackendID(1), lease: Lease(UInt64(n)), attempt: 1, at: .zero))
            Thread.sleep(forTimeInterval: 0.0005)
        }
        last = store.append(.jobRequeued(job: JobID(1), attempt: 1, lostAttempts: 1, history: []))
        #expect(store.statistics.durable == first, "a change was committed before the interval ended")
        let closed = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            store.close()
            closed.signal()
        }
        #expect(closed.wait(timeout: .now() + 60) == .success, "close() waited out the commit interval")
        let stats = store.statistics
        #expect(stats.commits == 2, "the changes of one interval took \(stats.commits - 1) commits")
        #expect(stats.lastCommitChanges == 101)
        #expect(stats.durable == last)
        #expect(log.durable == [first, last])
        let reopened = place.store()
        let snapshot = try reopened.open()
        reopened.close()
        #expect(snapshot.jobs.filter { $0.state == .bound }.count == 99)
    }

    /// Evictions of one commit, in any order and with gaps between their ids, remove exactly
    /// those jobs (the SQLite writer deletes them in runs of consecutive ids as the commit ends),
    /// and the count of stored jobs follows.
    @Test(arguments: StoreKind.allCases)
    func evictionsOfOneCommitRemoveExactlyTheirJobs(kind: StoreKind) throws {
        guard let place = try StorePlace(kind) else { return }
        defer { place.remove() }
        let (store, _, _) = try Self.openPaced(place, firstBatchJobs: 12)
        var last: UInt64 = 0
        for n in 1...12 {
            last = store.append(
                .jobEnded(StoredJob(id: JobID(UInt64(n)), batch: BatchID(1), state: .completed, result: .null)))
        }
        // Runs 2-4, 7 and 9-10, in changes out of order, one of them twice.
        for jobs in [[9], [3, 2], [10, 4], [7], [3]] {
            last = store.append(.evicted(jobs: jobs.map { JobID(UInt64($0)) }, batches: []))
        }
        store.close()
        let stats = store.statistics
        #expect(stats.commits == 2)
        #expect(stats.durable == last)
        #expect(stats.jobsStored == 6)
        let reopened = place.store()
        let snapshot = try reopened.open()
        reopened.close()
        #expect(snapshot.jobs.map(\.id.rawValue) == [1, 5, 6, 8, 11, 12])
        #expect(snapshot.jobs.allSatisfy { $0.state == .completed })
    }

    /// No clean shutdown: the files as the running store leaves them (its log not checkpointed),
    /// copied as a crash would leave them, hold everything reported durable. The file itself is
    /// the running store's alone: a second store object cannot open it.
    @Test func everythingReportedDurableIsThereWithoutAClose() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let path = dir.file("muster.sqlite")
        let first = SQLiteJobStore(path: path)
        let log = CommitLog()
        first.onCommit { log.record($0) }
        _ = try first.open()
        var expected = StoreSnapshot()
        var last: UInt64 = 0
        for n in 0..<50 {
            let change = StoreChange.batchAccepted(Self.batch(UInt64(n + 1), firstJob: UInt64(n * 3 + 1), count: 3))
            expected.apply(change)
            last = first.append(change)
        }
        log.waitDurable(through: last)
        #expect(FileManager.default.fileExists(atPath: path + "-wal"))

        let rival = SQLiteJobStore(path: path, busyTimeout: .milliseconds(200))
        #expect(throws: StoreFailure.self, "a second coordinator on the same file is refused") { try rival.open() }
        do {
            _ = try SQLiteJobStore(path: path, busyTimeout: .milliseconds(200)).open()
        } catch {
            #expect(error.message.contains("locked"), "\(error)")
        }
        let copy = dir.file("copy.sqlite")
        try FileManager.default.copyItem(atPath: path, toPath: copy)
        try FileManager.default.copyItem(atPath: path + "-wal", toPath: copy + "-wal")
        let second = SQLiteJobStore(path: copy)
        let snapshot = try second.open()
        expected.epoch = 2
        #expect(snapshot == expected)
        second.close()
        first.close()
    }

    @Test(arguments: StoreKind.allCases)
    func closeWritesWhatIsQueuedAndIsIdempotent(kind: StoreKind) throws {
        guard let place = try StorePlace(kind) else { return }
        defer { place.remove() }
        let store = place.store()
        let log = CommitLog()
        store.onCommit { log.record($0) }
        // Appended before open(): written after it.
        _ = store.append(.backendRegistered(id: BackendID(1), name: "early", incarnation: Incarnation(1)))
        _ = try store.open()
        var last: UInt64 = 0
        for n in 0..<5000 {
            last = store.append(.batchAccepted(Self.batch(UInt64(n + 1), firstJob: UInt64(n + 1), count: 1)))
        }
        store.close()
        #expect(log.durable.last == last)
        store.close()
        #expect(store.statistics.durable == last)
        if kind == .sqlite {
            // close() checkpointed and truncated the log.
            #expect(fileSizeOf(place.location + "-wal") == 0)
        }

        let reopened = place.store()
        let snapshot = try reopened.open()
        reopened.close()
        #expect(snapshot.batches.count == 5000 && snapshot.jobs.count == 5000)
        #expect(snapshot.backends == [StoredBackend(id: BackendID(1), name: "early", incarnation: Incarnation(1))])
    }

    @Test(arguments: StoreKind.allCases)
    func closingFromManyThreadsAtOnceIsSafe(kind: StoreKind) async throws {
        guard let place = try StorePlace(kind) else { return }
        defer { place.remove() }
        let store = place.store()
        _ = try store.open()
        for n in 0..<1000 {
            _ = store.append(.batchAccepted(Self.batch(UInt64(n + 1), firstJob: UInt64(n + 1), count: 1)))
        }
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<4 { group.addTask { store.close() } }
        }
        #expect(store.statistics.pending == 0)
    }

    @Test(arguments: StoreKind.allCases)
    func aStoreObjectOpensOnce(kind: StoreKind) throws {
        guard let place = try StorePlace(kind) else { return }
        defer { place.remove() }
        let store = place.store()
        _ = try store.open()
        #expect(throws: StoreFailure.self) { try store.open() }
        store.close()
        let closed = place.store()
        closed.close()
        #expect(throws: StoreFailure.self) { try closed.open() }
    }

    @Test func compactionGivesEvictedSpaceBack() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let path = dir.file("muster.sqlite")
        let store = SQLiteJobStore(path: path, compactionThresholdPages: 64)
        let log = CommitLog()
        store.onCommit { log.record($0) }
        _ = try store.open()
        let result = RawJSON(unchecked: "{\"images\":[\"\(String(repeating: "x", count: 400))\"]}")
        var job: UInt64 = 1
        var peak: UInt64 = 0
        for round in 1...8 {
            let first = job
            var last = store.append(.batchAccepted(Self.batch(UInt64(round), firstJob: first, count: 2000)))
            for id in first..<(first + 2000) {
                last = store.append(
                    .jobEnded(
                        StoredJob(id: JobID(id), batch: BatchID(UInt64(round)), state: .completed, result: result)))
            }
            log.waitDurable(through: last)
            peak = max(peak, fileSizeOf(path))
            last = store.append(
                .evicted(jobs: (first..<(first + 2000)).map(JobID.init(_:)), batches: [BatchID(UInt64(round))]))
            log.waitDurable(through: last)
            job += 2000
        }
        #expect(store.statistics.jobsStored == 0)
        store.close()
        // 16,000 jobs of ~450 bytes went through; one round's worth (~1 MB) was the most held at once.
        let after = fileSizeOf(path)
        #expect(after < 256 * 1024, "the database file kept \(after) bytes after every row was evicted (peak \(peak))")
    }

    /// Large stores are read in parts (SQLite: by two threads; PostgreSQL: in several FETCHes of a
    /// cursor): every job comes back once, in order, with its own state.
    @Test(arguments: StoreKind.allCases)
    func aLargeStoreReadsBackWhole(kind: StoreKind) throws {
        guard let place = try StorePlace(kind) else { return }
        defer { place.remove() }
        let store = place.store()
        let log = CommitLog()
        store.onCommit { log.record($0) }
        _ = try store.open()
        for n in 0..<60 {
            _ = store.append(.batchAccepted(Self.batch(UInt64(n + 1), firstJob: UInt64(n * 1000 + 1), count: 1000)))
        }
        var last: UInt64 = 0
        for id in stride(from: 7 as UInt64, through: 60_000, by: 7) {
            last = store.append(.jobBound(job: JobID(id), backend: BackendID(2), lease: Lease(id), attempt: 1, at: .zero))
        }
        log.waitDurable(through: last)
        store.close()

        let reopened = place.store()
        let snapshot = try reopened.open()
        reopened.close()
        #expect(snapshot.batches.map(\.id.rawValue) == Array(1...60))
        #expect(snapshot.jobs.map(\.id.rawValue) == Array(1...60_000))
        #expect(snapshot.jobs.allSatisfy { $0.batch.rawValue == ($0.id.rawValue - 1) / 1000 + 1 })
        #expect(snapshot.jobs.allSatisfy { ($0.state == .bound) == ($0.id.rawValue % 7 == 0) })
        #expect(snapshot.jobs.allSatisfy { $0.lease == ($0.id.rawValue % 7 == 0 ? Lease($0.id.rawValue) : nil) })
    }

    @Test func theMemoryStoreAcknowledgesEverythingAndKeepsNothing() throws {
        let store = MemoryJobStore()
        let log = CommitLog()
        store.onCommit { log.record($0) }
        #expect(try store.open() == StoreSnapshot(epoch: 1))
        var last: UInt64 = 0
        for n in 0..<100 {
            last = store.append(.batchAccepted(Self.batch(UInt64(n + 1), firstJob: UInt64(n + 1), count: 1)))
        }
        log.waitDurable(through: last)
        store.close()
        #expect(store.statistics.durable == 100)
        #expect(log.failures.isEmpty)
    }
}

func fileSizeOf(_ path: String) -> UInt64 {
    ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.uint64Value ?? 0
}
