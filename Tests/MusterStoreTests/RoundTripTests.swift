import MusterCore
import MusterProtocol
import MusterStore
import Testing

/// What goes in comes back: every kind of change, written, closed, read by a new store object.
@Suite struct RoundTripTests {
    static let epochLease: UInt64 = 1 << 32
    static let onceCompleted = AttemptRecord(
        attempt: 1, backend: BackendID(-1), lease: Lease(epochLease + 5), boundAt: .seconds(20), startedAt: .seconds(21),
        endedAt: .seconds(30), outcome: .completed)
    /// An attempt that ended without the job's fault, with an error whose message needs escaping.
    static let lostAttempt = AttemptRecord(
        attempt: 1, backend: BackendID(1), lease: Lease(epochLease + 1), boundAt: .seconds(11), startedAt: nil,
        endedAt: .seconds(13), outcome: .requeued, error: JobFailure(code: .backendLost, message: "link \"lost\"\n✓"))

    static let noEligible = JobFailure(
        code: .noEligibleBackend, message: "no ready backend has \"frameinterps\"",
        refusals: [
            BackendRefusal(backend: BackendID(2), name: "gpu-box ✓", reason: "announced loading", reasons: ["loading"]),
            BackendRefusal(
                backend: BackendID(-1), name: "local", reason: "missing features frameinterps, node RIFE VFI",
                reasons: ["missing_features", "missing_nodes"], missingFeatures: ["frameinterps"],
                missingNodes: ["RIFE VFI"]),
            BackendRefusal(backend: BackendID(7), name: "gone", reason: "link down\n\"x\""),
        ],
        missingFeatures: ["frameinterps"], missingModel: "wan-2.1 ✓", missingNodes: ["RIFE VFI"])

    static let changes: [StoreChange] = [
        .backendRegistered(id: BackendID(1), name: "gpu-box", incarnation: Incarnation(1_700_000_000_000)),
        .backendRegistered(id: BackendID(-1), name: "local-image", incarnation: Incarnation(1)),
        // Jobs 1, 2 (video entry) and 3 (image entry).
        .batchAccepted(Samples.batch(id: 1, firstJob: 1, key: "nightly-42 ✓")),
        // Jobs 4, 5, 6.
        .batchAccepted(
            StoredBatch(
                id: BatchID(2), key: nil, owner: "alice ✓",
                entries: [BatchEntry(spec: JobSpec(kind: "image"), count: 3)],
                firstJob: JobID(4), submittedAt: CoreInstant(nanoseconds: UInt64.max - 1))),
        .jobBound(job: JobID(1), backend: BackendID(1), lease: Lease(epochLease + 1), attempt: 1, at: .seconds(11)),
        .jobRequeued(job: JobID(1), attempt: 1, lostAttempts: 1, history: [lostAttempt]),
        .jobBound(job: JobID(1), backend: BackendID(-1), lease: Lease(epochLease + 2), attempt: 2, at: .seconds(14)),
        .jobEnded(
            StoredJob(
                id: JobID(1), batch: BatchID(1), state: .completed, backend: BackendID(-1),
                lease: Lease(epochLease + 2), attempt: 2, lostAttempts: 1,
                result: RawJSON(unchecked: #"{"images":["out/ünï \"1\".png"]}"#),
                endedAt: CoreInstant(nanoseconds: 99_000_000_000),
                history: [
                    lostAttempt,
                    AttemptRecord(
                        attempt: 2, backend: BackendID(-1), lease: Lease(epochLease + 2), boundAt: .seconds(14),
                        startedAt: .seconds(15), endedAt: CoreInstant(nanoseconds: 99_000_000_000), outcome: .completed),
                ])),
        .jobBound(job: JobID(2), backend: BackendID(1), lease: Lease(epochLease + 3), attempt: 1, at: .zero),
        .jobEnded(
            StoredJob(
                id: JobID(2), batch: BatchID(1), state: .failed, backend: BackendID(1), lease: Lease(epochLease + 3),
                attempt: 1,
                failure: JobFailure(
                    code: .attemptsExhausted, message: "gave up after 3 attempts:\n\"backend_lost\"",
                    refusals: [BackendRefusal(backend: BackendID(1), name: "gpu-box", reason: "loading")],
                    missingFeatures: ["video"]),
                endedAt: CoreInstant(nanoseconds: 100_000_000_000))),
        .jobEnded(
            StoredJob(id: JobID(3), batch: BatchID(1), state: .canceled, endedAt: CoreInstant(nanoseconds: 7))),
        // Job 10 in batch 5: failed with every detail of a `no_eligible_backend`.
        .batchAccepted(
            StoredBatch(
                id: BatchID(5), key: nil, entries: [BatchEntry(spec: JobSpec(kind: "video"))], firstJob: JobID(10),
                submittedAt: .zero)),
        .jobEnded(
            StoredJob(
                id: JobID(10), batch: BatchID(5), state: .failed,
                failure: noEligible, endedAt: CoreInstant(nanoseconds: 8))),
        // A running job is stored as bound, a gated one as queued.
        .jobEnded(StoredJob(id: JobID(4), batch: BatchID(2), state: .running, backend: BackendID(1), attempt: 1)),
        .jobEnded(StoredJob(id: JobID(6), batch: BatchID(2), state: .gated)),
        // Job 8 in batch 4, left bound: its binding's time comes back.
        .batchAccepted(
            StoredBatch(
                id: BatchID(4), key: nil, entries: [BatchEntry(spec: JobSpec(kind: "image"), count: 2)],
                firstJob: JobID(8), submittedAt: .zero)),
        .jobBound(
            job: JobID(8), backend: BackendID(-1), lease: Lease(epochLease + 4), attempt: 1,
            at: CoreInstant(nanoseconds: UInt64.max - 5)),
        // Job 8 started: its start comes back with its binding. A start of a queued job (6) is not kept.
        .jobStarted(job: JobID(8), at: CoreInstant(nanoseconds: UInt64.max - 4)),
        .jobStarted(job: JobID(6), at: .seconds(3)),
        // Job 9 ran once and completed: its attempt is stored as two instants, no history text.
        .jobEnded(
            StoredJob(
                id: JobID(9), batch: BatchID(4), state: .completed, backend: BackendID(-1), lease: Lease(epochLease + 5),
                attempt: 1, result: .null, endedAt: .seconds(30), history: [onceCompleted])),
        .jobEnded(StoredJob(id: JobID(5), batch: BatchID(2), state: .completed, result: .null)),
        .evicted(jobs: [JobID(5)], batches: []),
        // Job 7 in batch 3: evicted with its batch.
        .batchAccepted(
            StoredBatch(
                id: BatchID(3), key: "gone", entries: [BatchEntry(spec: JobSpec(kind: "image"))], firstJob: JobID(7),
                submittedAt: .zero)),
        .jobEnded(StoredJob(id: JobID(7), batch: BatchID(3), state: .canceled)),
        .evicted(jobs: [JobID(7)], batches: [BatchID(3)]),
        // The name gpu-box moves to id 2: id 1's row goes.
        .backendRegistered(id: BackendID(2), name: "gpu-box", incarnation: Incarnation(1_700_000_000_500)),
        // A new incarnation of the same backend.
        .backendRegistered(id: BackendID(-1), name: "local-image", incarnation: Incarnation(2)),
        // Backend 3 went down and stays down; local-image went down and registered again (up).
        .backendRegistered(id: BackendID(3), name: "gone-box", incarnation: Incarnation(5)),
        .backendDown(id: BackendID(3), at: .seconds(1_700_000_100)),
        .backendDown(id: BackendID(-1), at: .seconds(1_700_000_200)),
        .backendRegistered(id: BackendID(-1), name: "local-image", incarnation: Incarnation(3)),
        // Backend 4 stayed down long enough to be forgotten: its row goes.
        .backendRegistered(id: BackendID(4), name: "forgotten-box", incarnation: Incarnation(6)),
        .backendDown(id: BackendID(4), at: .seconds(1_700_000_300)),
        .backendForgotten(id: BackendID(4)),
    ]

    @Test(arguments: StoreKind.allCases)
    func everyKindOfChangeSurvivesAReopenAndTheEpochGrowsByOnePerOpen(kind: StoreKind) throws {
        // SQLite: the parent directories do not exist yet: the store creates them.
        guard let place = try StorePlace(kind, file: "state/muster/muster.sqlite") else { return }
        defer { place.remove() }

        let first = place.store()
        let log = CommitLog()
        first.onCommit { log.record($0) }
        let empty = try first.open()
        #expect(empty == StoreSnapshot(epoch: 1))
        var last: UInt64 = 0
        for change in Self.changes { last = first.append(change) }
        #expect(last == UInt64(Self.changes.count))
        log.waitDurable(through: last)
        first.close()

        var expected = StoreSnapshot()
        for change in Self.changes { expected.apply(change) }
        expected.epoch = 2

        let second = place.store()
        let snapshot = try second.open()
        second.close()
        #expect(snapshot.batches == expected.batches)
        #expect(snapshot.jobs == expected.jobs)
        #expect(snapshot.backends == expected.backends)
        #expect(snapshot == expected)

        // Spot checks against the reference model itself.
        #expect(snapshot.batches.map(\.id) == [BatchID(1), BatchID(2), BatchID(4), BatchID(5)])
        #expect(snapshot.batches[0].entries[0].spec.params.text == Samples.tricky)
        #expect(snapshot.batches[0].entries[1].spec.params.text == " [1, 2]\n")
        #expect(snapshot.batches[0].entries[0].spec.owner == "ana\u{0001}\tö")
        #expect(snapshot.batches[0].key == "nightly-42 ✓")
        #expect(snapshot.batches[1].submittedAt == CoreInstant(nanoseconds: UInt64.max - 1))
        // The batch's owner is its own, not its entries'.
        #expect(snapshot.batches[1].owner == "alice ✓")
        #expect(snapshot.batches[0].owner == "ana\u{0001}\tö")
        #expect(snapshot.jobs.map(\.id.rawValue) == [1, 2, 3, 4, 6, 8, 9, 10])
        #expect(snapshot.jobs.map(\.state) == [.completed, .failed, .canceled, .bound, .queued, .bound, .completed, .failed])
        // A failure's details come back whole.
        #expect(snapshot.jobs[7].failure == Self.noEligible)
        #expect(snapshot.jobs[6].attempts == [Self.onceCompleted] && snapshot.jobs[6].history == [])
        #expect(snapshot.jobs[6].boundAt == .seconds(20) && snapshot.jobs[6].startedAt == .seconds(21))
        // Attempt histories and the time of a binding.
        #expect(snapshot.jobs[0].history.map(\.outcome) == [.requeued, .completed])
        #expect(snapshot.jobs[0].history.first == Self.lostAttempt && snapshot.jobs[0].boundAt == nil)
        #expect(snapshot.jobs[5].boundAt == CoreInstant(nanoseconds: UInt64.max - 5) && snapshot.jobs[5].history == [])
        #expect(snapshot.jobs[5].startedAt == CoreInstant(nanoseconds: UInt64.max - 4))
        #expect(snapshot.jobs[4].startedAt == nil)
        #expect(snapshot.jobs[0].lostAttempts == 1 && snapshot.jobs[0].lease == Lease(Self.epochLease + 2))
        #expect(snapshot.jobs[1].failure?.code == .attemptsExhausted)
        #expect(snapshot.jobs[1].failure?.message == "gave up after 3 attempts:\n\"backend_lost\"")
        #expect(snapshot.jobs[1].failure?.missingFeatures == ["video"])
        #expect(snapshot.backends.map(\.name) == ["local-image", "gpu-box", "gone-box"])
        #expect(snapshot.backends.map(\.incarnation) == [Incarnation(3), Incarnation(1_700_000_000_500), Incarnation(5)])
        #expect(snapshot.backends.map(\.down) == [false, false, true])

        let third = place.store()
        let again = try third.open()
        third.close()
        #expect(again.epoch == 3)
        expected.epoch = 3
        #expect(again == expected)
    }

    @Test(arguments: StoreKind.allCases)
    func paramsAreKeptByteForByteEvenWhenTheyAreNotJSON(kind: StoreKind) throws {
        guard let place = try StorePlace(kind) else { return }
        defer { place.remove() }
        let texts = [
            "{}", "null", "  {\"a\" : [ 1 , 2 ] }  ", "\"just a string\"", "-0.5e-7", "[[[[[[[[[[[]]]]]]]]]]]",
            // Not one JSON value: stored as a string instead, read back the same.
            "", "not json {", "{\"a\":1} {\"b\":2}", "{\"a\":\"\u{0007}\"}", "\u{FEFF}{}", "{\"a\":1,}",
            String(repeating: "[", count: 600) + String(repeating: "]", count: 600),
        ]
        let batch = StoredBatch(
            id: BatchID(1), key: nil,
            entries: texts.map { BatchEntry(spec: JobSpec(kind: "k", params: RawJSON(unchecked: $0))) },
            firstJob: JobID(1), submittedAt: .zero)
        let store = place.store()
        _ = try store.open()
        _ = store.append(.batchAccepted(batch))
        store.close()

        let reopened = place.store()
        let snapshot = try reopened.open()
        reopened.close()
        #expect(snapshot.batches.first?.entries.map(\.spec.params.text) == texts)
        #expect(snapshot.jobs.count == texts.count)
    }

    /// Thousands of random changes, committed in many groups, match the reference model; a second
    /// round on the reopened store too.
    @Test(arguments: StoreKind.allCases, [1 as UInt64, 2, 3])
    func randomChangesMatchTheReference(kind: StoreKind, seed: UInt64) throws {
        guard let place = try StorePlace(kind) else { return }
        defer { place.remove() }
        var random = RandomChanges(seed: seed)
        var expected = StoreSnapshot()

        for round in 1...2 {
            let store = place.store()
            let log = CommitLog()
            store.onCommit { log.record($0) }
            let opened = try store.open()
            expected.epoch = UInt64(round)
            #expect(opened == expected)
            for n in 0..<1500 {
                let change = random.next(in: expected)
                expected.apply(change)
                let seq = store.append(change)
                if n % 97 == 0 { log.waitDurable(through: seq) }
            }
            store.close()
            #expect(store.statistics.pending == 0)
        }
        let store = place.store()
        let final = try store.open()
        store.close()
        expected.epoch = 3
        #expect(final.batches == expected.batches)
        #expect(final.jobs == expected.jobs)
        #expect(final.backends == expected.backends)
        #expect(final.epoch == 3)
    }
}

/// Plausible random changes: batches of random entries, bindings, requeues, ends and evictions of
/// jobs that exist, backends whose names move between ids.
struct RandomChanges {
    var rng: SplitMix64
    var nextBatch: UInt64 = 1
    var nextJob: UInt64 = 1
    var nextLease: UInt64 = 1

    init(seed: UInt64) { rng = SplitMix64(seed: seed) }

    static let texts = [
        "", "plain", "ünïcödé ✓", "quote \" backslash \\ slash /", "line\nbreak\ttab\r", "\u{0000}\u{001F}\u{007F}",
        "🎞️ 日本語", "{\"json\":\"in a string\"}",
    ]
    static let params = [
        "{}", "null", Samples.tricky, "[1,2,3]", "{\"workflow\":{\"3\":{\"class_type\":\"KSampler\"}}}", "not json",
    ]

    mutating func text() -> String { Self.texts.randomElement(using: &rng)! }

    mutating func next(in state: StoreSnapshot) -> StoreChange {
        let live = state.jobs
        switch live.isEmpty ? 0 : Int.random(in: 0..<100, using: &rng) {
        case 0..<15:
            let entries = (0..<Int.random(in: 1...3, using: &rng)).map { _ in
                BatchEntry(
                    spec: JobSpec(
                        kind: text(), needs: Bool.random(using: &rng) ? [] : [text(), text()],
                        model: Bool.random(using: &rng) ? nil : text(),
                        params: RawJSON(unchecked: Self.params.randomElement(using: &rng)!),
                        priority: Int.random(in: -5...5, using: &rng), owner: text(),
                        nodes: Bool.random(using: &rng) ? [] : [text()]),
                    count: Int.random(in: 1...4, using: &rng))
            }
            let batch = StoredBatch(
                id: BatchID(nextBatch), key: Bool.random(using: &rng) ? nil : "key-\(nextBatch)-\(text())",
                entries: entries, firstJob: JobID(nextJob),
                submittedAt: CoreInstant(nanoseconds: UInt64.random(in: 0...UInt64.max, using: &rng)))
            nextBatch += 1
            nextJob += UInt64(batch.jobCount)
            return .batchAccepted(batch)
        case 15..<40:
            nextLease += 1
            return .jobBound(
                job: live.randomElement(using: &rng)!.id, backend: BackendID(Int64.random(in: -3...5, using: &rng)),
                lease: Lease(nextLease), attempt: Int.random(in: 1...5, using: &rng),
                at: CoreInstant(nanoseconds: UInt64.random(in: 0...UInt64.max, using: &rng)))
        case 40..<45:
            return .jobStarted(
                job: live.randomElement(using: &rng)!.id,
                at: CoreInstant(nanoseconds: UInt64.random(in: 0...UInt64.max, using: &rng)))
        case 45..<50:
            return .jobRequeued(
                job: live.randomElement(using: &rng)!.id, attempt: Int.random(in: 0...5, using: &rng),
                lostAttempts: Int.random(in: 0...3, using: &rng), history: [])
        case 50..<75:
            let job = live.randomElement(using: &rng)!
            let state = [JobState.completed, .failed, .canceled, .running, .gated].randomElement(using: &rng)!
            return .jobEnded(
                StoredJob(
                    id: job.id, batch: job.batch, state: state,
                    backend: Bool.random(using: &rng) ? nil : BackendID(Int64.random(in: -3...5, using: &rng)),
                    lease: Bool.random(using: &rng) ? nil : Lease(UInt64.random(in: 0...UInt64.max, using: &rng)),
                    attempt: Int.random(in: 0...5, using: &rng), lostAttempts: Int.random(in: 0...3, using: &rng),
                    result: state == .completed ? RawJSON(unchecked: Self.params.randomElement(using: &rng)!) : nil,
                    failure: state == .failed
                        ? (Bool.random(using: &rng)
                            ? JobFailure(code: ErrorCode(text()), message: text())
                            : JobFailure(
                                code: .noEligibleBackend, message: text(),
                                refusals: [BackendRefusal(backend: BackendID(1), name: text(), reason: text(), reasons: [text()])],
                                missingFeatures: Bool.random(using: &rng) ? [] : [text(), text()],
                                missingModel: Bool.random(using: &rng) ? nil : text()))
                        : nil,
                    endedAt: Bool.random(using: &rng)
                        ? nil : CoreInstant(nanoseconds: UInt64.random(in: 0...1 << 62, using: &rng))))
        case 75..<90:
            let finished = live.filter(\.state.isFinal).map(\.id)
            let jobs = Array(finished.shuffled(using: &rng).prefix(Int.random(in: 0...6, using: &rng)))
            // The batches left with no job: linear in the jobs (a check per batch and job made
            // this generator quadratic, and its six cases held the test pool for 20 s).
            let gone = Set(jobs)
            let kept = Set(live.lazy.filter { !gone.contains($0.id) }.map(\.batch))
            let empty = state.batches.filter { !kept.contains($0.id) }
            return .evicted(jobs: jobs, batches: empty.map(\.id))
        case 90..<93:
            // Also ids that are not stored: the change is then a no-op, as in every store.
            return .backendDown(
                id: BackendID(Int64.random(in: -3...5, using: &rng)), at: .seconds(Double(Int.random(in: 1...2_000_000_000, using: &rng))))
        case 93..<94:
            return .backendForgotten(id: BackendID(Int64.random(in: -3...5, using: &rng)))
        default:
            return .backendRegistered(
                id: BackendID(Int64.random(in: -3...5, using: &rng)),
                name: ["a", "b", "c", "d"].randomElement(using: &rng)!,
                incarnation: Incarnation(UInt64.random(in: 0...UInt64.max, using: &rng)))
        }
    }
}
