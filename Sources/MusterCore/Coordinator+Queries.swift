import MusterProtocol

// Read-only views for the server: probes, status, metrics.
extension Coordinator {
    /// A job by id (finished jobs are kept within the retention bounds).
    public func job(_ id: JobID) -> JobRecord? {
        guard var j = jobs.get(id) else { return nil }
        // A held job waits for the backends the gate waits for now (its record keeps those of
        // when it was held, which its `gated` event showed).
        if j.state == .gated, j.waitReason != nil { j.waitReason!.backends = unknownSorted }
        if let only = j.onlyAttempt, j.history.isEmpty, let backend = j.backend, let lease = j.lease {
            j.history = [
                AttemptRecord(
                    attempt: j.attempt, backend: backend, lease: lease, boundAt: only.boundAt, startedAt: only.startedAt,
                    endedAt: j.endedAt, outcome: .completed)
            ]
        }
        return j
    }

    /// The jobs of `batch` that have ended and are kept: how and when each ended.
    public func endedJobs(of batch: BatchRecord) -> [(job: JobID, state: JobState, at: CoreInstant)] {
        batch.jobs.compactMap { job in jobs.ended(job).map { (job, $0.state, $0.at) } }
    }

    /// Calls `body` with the ended jobs the retention keeps (how and when each ended, and its
    /// batch), the most recently ended first, while it returns true.
    public func forEachEndedJob(newestFirst body: (JobID, _ state: JobState, _ at: CoreInstant, _ batch: BatchID) -> Bool) {
        for e in finished.reversed() {
            guard let ended = jobs.ended(e.job) else { continue }
            if !body(e.job, ended.state, ended.at, ended.batch) { return }
        }
    }

    /// A batch by id.
    public func batch(_ id: BatchID) -> BatchRecord? { batches[id] }

    /// The batch submitted under `key`, while it is kept.
    public func batch(forKey key: String) -> BatchRecord? { batchKeys[key].flatMap { batches[$0] } }

    /// One backend.
    public func backend(_ id: BackendID) -> BackendInfo? {
        guard let b = backends.get(id) else { return nil }
        return BackendInfo(
            id: b.id, name: b.name, isLocal: b.isLocal, link: b.link, incarnation: b.incarnation,
            announced: b.snapshot?.state, version: b.snapshot?.version,
            features: b.snapshot?.features ?? [], modelsAvailable: b.snapshot?.modelsAvailable ?? [],
            modelsLoaded: b.snapshot?.modelsLoaded ?? [], slots: b.slots, priority: b.priority,
            inFlight: b.jobs.count, running: b.running, draining: b.drainRequested || b.snapshot?.state == .draining,
            inhibitedUntil: b.inhibitedUntil > now ? b.inhibitedUntil : nil, lastSeen: b.lastSeen,
            registeredAt: b.registeredAt, firstAnnouncedAt: b.firstAnnouncedAt, nodes: b.snapshot?.nodes ?? [],
            devices: b.snapshot?.devices ?? [], message: b.snapshot?.message, announcedSpeed: b.snapshot?.speed,
            announcedJobSeconds: b.snapshot?.jobSeconds ?? [], announcedModelLoadSeconds: b.snapshot?.modelLoadSeconds)
    }

    /// Every backend, local ones first (`BackendID.listedBefore`).
    public var backendList: [BackendInfo] { backends.ids.sorted(by: BackendID.listedBefore).compactMap { backend($0) } }

    /// Ready when a backend is ready and no job is held; otherwise what the coordinator waits for.
    public var readiness: Readiness {
        let reclaim = reclaimAwaited.isEmpty ? nil : Readiness.Reclaim(until: reclaimUntil, backends: reclaimAwaited.sorted())
        let gateOpen = readyCount > 0 && held.isEmpty
        return Readiness(
            ready: gateOpen && reclaim == nil, readyBackends: readyCount, heldJobs: held.count,
            waitingFeatures: heldFeatures.keys.sorted(), waitingBackends: gateOpen ? [] : unknownSorted, reclaim: reclaim)
    }

    /// The held jobs grouped by what they need (features and model), ordered by features then
    /// model: what `readiness` waits for, one entry per distinct need. Read from per-class
    /// counts, so a probe costs the number of held classes, not of held jobs. Every held job
    /// waits for the same backends (`unknown`).
    public var heldByNeed: [HeldNeed] {
        guard !held.isEmpty else { return [] }
        struct Need: Hashable {
            var features: [String]
            var model: String?
        }
        var groups: [Need: Int] = [:]
        for (c, n) in heldPerClass { groups[Need(features: classes[c].needs, model: classes[c].model), default: 0] += n }
        return groups.sorted { a, b in
            a.key.features != b.key.features
                ? a.key.features.lexicographicallyPrecedes(b.key.features) : (a.key.model ?? "") < (b.key.model ?? "")
        }.map { HeldNeed(features: $0.key.features, model: $0.key.model, backends: unknownSorted, jobs: $0.value) }
    }

    /// Jobs waiting for a backend (queued or gated) per job priority.
    public var queueDepthByPriority: [Int: Int] {
        Dictionary(uniqueKeysWithValues: queuedByPriority.filter { $0.value > 0 }.map { ($0.key.raw, $0.value) })
    }

    /// Jobs held by the warm-up gate, by id.
    public var heldJobs: [JobID] { held.sorted() }

    /// Jobs currently in each state (finished ones within the retention bounds).
    public var jobsByState: [JobState: Int] {
        var counts: [JobState: Int] = [:]
        for state in JobState.allCases where jobs.stateCounts[state.slot] > 0 {
            counts[state] = jobs.stateCounts[state.slot]
        }
        return counts
    }

    /// Models every backend is asked to load when it can (load-model-now without a backend).
    public var rememberedModels: [String] { pinnedModels.sorted() }
}
