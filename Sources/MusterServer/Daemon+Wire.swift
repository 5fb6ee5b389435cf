import MusterCore
import MusterProtocol

// Mapping the core's records and events to the wire bodies of Protocol/README.md.
extension Daemon {
    func wireBackend(_ b: BackendInfo) -> Wire.BackendInfo {
        var snapshot: CapabilitySnapshot?
        if let version = b.version, let state = b.announced {
            snapshot = CapabilitySnapshot(
                version: version, state: state, features: b.features, modelsAvailable: b.modelsAvailable,
                modelsLoaded: b.modelsLoaded, slots: b.slots, speed: b.announcedSpeed, nodes: b.nodes,
                devices: b.devices, message: b.message, jobSeconds: b.announcedJobSeconds,
                modelLoadSeconds: b.announcedModelLoadSeconds)
        }
        return Wire.BackendInfo(
            id: b.id, name: b.name, local: b.isLocal, link: b.link.wire, capabilities: snapshot,
            inFlight: b.inFlight, running: b.running, capacity: b.slots + core.policy.overqueue,
            registeredMs: ms(b.registeredAt), firstAnnouncedMs: b.firstAnnouncedAt.map(ms),
            lastSeenMs: b.lastSeen.map(ms), inhibitedUntilMs: b.inhibitedUntil.map(ms),
            estimates: core.estimates(for: b.id).map { e in
                Wire.Estimates(
                    speed: e.speed, speedSource: e.speedSource.rawValue, modelLoadSeconds: e.modelLoadSeconds,
                    jobs: e.jobs.map {
                        Wire.JobEstimate(
                            kind: $0.kind, model: $0.model, nodes: $0.nodes, seconds: $0.seconds, measured: $0.measured)
                    })
            })
    }

    /// Why the gate waits for one backend, in the wire's reason tokens.
    func waitingBackend(_ id: BackendID) -> Wire.WaitingBackend {
        let info = core.backend(id)
        let reason: String
        switch (info?.link, info?.announced) {
        case (.expected?, _), (nil, _): reason = "not_connected"
        case (.down?, _): reason = "link_down"  // lost while loading: it may be restarting
        case (_, .starting?): reason = "starting"
        case (_, .loading?): reason = "loading"
        case (_, nil): reason = "not_announced"
        default: reason = "not_announced"
        }
        return Wire.WaitingBackend(id: id, name: backendName(id), reason: reason)
    }

    func backendName(_ id: BackendID) -> String { core.backend(id)?.name ?? namesByID[id] ?? "\(id)" }

    /// When the gate stops waiting for these backends at the latest.
    func gateUntilMs(_ backends: [BackendID]) -> UInt64? {
        guard core.policy.gateWindow > .zero else { return nil }
        let ends = backends.compactMap { core.backend($0)?.registeredAt }.map { $0 + core.policy.gateWindow }
        return ends.max().map(ms)
    }

    func wireWait(_ w: WaitReason) -> Wire.GateWait {
        Wire.GateWait(
            features: w.features, model: w.model, backends: w.backends.map(waitingBackend), untilMs: gateUntilMs(w.backends))
    }

    func wireReadiness() -> Wire.Readiness {
        let r = core.readiness
        if !isLeading {
            // A standby (or a deposed leader) is never ready: what to dial is the leader.
            // One whose election cannot reach the database says so: it cannot lead either.
            var reasons = ["standby"]
            if electionFailure != nil { reasons.append("store_unavailable") }
            if stopping { reasons.append("shutting_down") }
            return Wire.Readiness(
                ready: false, reasons: reasons, readyBackends: 0, heldJobs: 0, waiting: [], leader: knownLeader)
        }
        var reasons: [String] = []
        if stopping { reasons.append("shutting_down") }
        let storeDown = storeRefusal != nil
        if storeDown { reasons.append("store_unavailable") }
        if r.readyBackends == 0 { reasons.append("no_ready_backend") }
        if r.heldJobs > 0 { reasons.append("jobs_held") }
        if r.reclaim != nil { reasons.append("reclaiming") }
        let waiting = r.heldJobs == 0 ? [] : core.heldByNeed.map {
            Wire.GateWait(
                features: $0.features, model: $0.model, backends: $0.backends.map(waitingBackend),
                untilMs: gateUntilMs($0.backends), jobs: $0.jobs)
        }
        let reclaim = r.reclaim.map { p in
            Wire.Reclaim(
                untilMs: ms(p.until), backends: p.backends.map { Wire.WaitingBackend(id: $0, name: backendName($0), reason: "not_connected") })
        }
        return Wire.Readiness(
            ready: r.ready && !stopping && !storeDown, reasons: reasons, readyBackends: r.readyBackends, heldJobs: r.heldJobs,
            waiting: waiting, reclaim: reclaim)
    }

    func wireQueue() -> Wire.QueueSummary {
        let s = core.jobsByState
        let depth = core.queueDepthByPriority.sorted { $0.key > $1.key }.map { Wire.QueueSummary.PriorityDepth(priority: $0.key, jobs: $0.value) }
        return Wire.QueueSummary(queued: s[.queued] ?? 0, gated: s[.gated] ?? 0, bound: s[.bound] ?? 0, running: s[.running] ?? 0, byPriority: depth)
    }

    /// A failure as the wire's error shape; every detail was decided by the core when it happened.
    func wireError(_ f: JobFailure) -> Wire.ErrorBody {
        switch f.code {
        case .noEligibleBackend:
            let refusals = f.refusals.map {
                Wire.NoEligibleBackend.Refusal(
                    backend: $0.backend, name: $0.name, reasons: $0.reasons, missingFeatures: $0.missingFeatures,
                    missingNodes: $0.missingNodes)
            }
            return Wire.ErrorBody(
                code: f.code, message: f.message,
                details: Wire.NoEligibleBackend(
                    missingFeatures: f.missingFeatures, missingModel: f.missingModel, missingNodes: f.missingNodes,
                    refusals: refusals).details)
        case .attemptsExhausted where !f.attempts.isEmpty:
            return Wire.ErrorBody(code: f.code, message: f.message, details: Wire.AttemptsExhausted(history: f.attempts.map(wireAttempt)).details)
        default:
            return Wire.ErrorBody(code: f.code, message: f.message)
        }
    }

    func wireAttempt(_ a: AttemptRecord) -> Wire.AttemptRecord {
        Wire.AttemptRecord(
            attempt: a.attempt, backend: a.backend, outcome: a.outcome, error: a.error.map(wireError),
            boundMs: ms(a.boundAt), endedMs: a.endedAt.map(ms))
    }

    func wireJob(_ j: JobRecord) -> Wire.JobInfo {
        Wire.JobInfo(
            job: j.id, batch: j.batch, state: j.state, spec: j.spec, attempt: j.attempt,
            backend: j.backend, progress: j.state == .running ? j.progress : nil, result: j.result,
            error: j.failure.map(wireError), waiting: j.waitReason.map(wireWait), createdMs: ms(j.submittedAt),
            startedMs: startedMs(j, attempt: j.attempt, state: j.state), finishedMs: j.endedAt.map(ms),
            history: j.history.map(wireAttempt))
    }

    /// The `event` name a core event is sent under.
    static func wireKind(_ kind: JobEvent.Kind) -> JobEventKind {
        switch kind {
        case .queued: .queued
        case .gated: .gated
        case .released: .released
        case .bound: .bound
        case .started: .started
        case .progress: .progress
        case .requeued: .requeued
        case .revoked: .revoked
        case .completed: .completed
        case .failed: .failed
        case .canceling: .canceling
        case .canceled: .canceled
        }
    }

    /// The client `job` event for a core event: a mapping, every fact comes from the core.
    func wireEvent(_ e: JobEvent) -> CoordinatorToClient.JobEvent {
        var w = CoordinatorToClient.JobEvent(
            job: e.job, batch: e.batch, event: Self.wireKind(e.kind), state: e.state, attempt: e.attempt, atMs: ms(e.at),
            backend: e.backend)
        switch e.kind {
        case .gated(let reason):
            w.waiting = wireWait(reason)
        case .released(let cause):
            w.cause = cause
        case .bound:
            if let p = e.placement {
                w.expectedMs = UInt64(max(0, p.expectedSeconds * 1000).rounded())
                w.runnerUp = p.runnerUp
                w.runnerUpExpectedMs = p.runnerUpSeconds.map { UInt64(max(0, $0 * 1000).rounded()) }
            }
        case .progress(let fraction, let message):
            w.progress = fraction
            w.message = message
        case .requeued(_, let error):
            w.error = wireError(error)
        case .completed(let result):
            w.result = result
        case .failed(let failure):
            w.error = wireError(failure)
        case .queued, .started, .revoked, .canceling, .canceled:
            break
        }
        return w
    }

    /// A `snapshot` event: the job's current state.
    func snapshotEvent(_ j: JobRecord) -> CoordinatorToClient.JobEvent {
        CoordinatorToClient.JobEvent(
            job: j.id, batch: j.batch, event: .snapshot, state: j.state, attempt: j.attempt,
            atMs: ms(now), backend: j.backend, progress: j.state == .running ? j.progress : nil,
            message: j.state == .running ? j.progressMessage : nil, result: j.result,
            error: j.failure.map(wireError), waiting: j.waitReason.map(wireWait),
            startedMs: startedMs(j, attempt: j.attempt, state: j.state), finishedMs: j.state.isFinal ? j.endedAt.map(ms) : nil)
    }

    /// A snapshot's `started_ms`: when attempt `attempt` of the job started, for a job running on
    /// it or ended by it; nil before a start, for a job that never started, and for one that ended
    /// in the queue after that attempt was requeued or revoked (its start is not this end's).
    func startedMs(_ j: JobRecord?, attempt: Int, state: JobState) -> UInt64? {
        j.flatMap { Self.snapshotStart(of: $0.history, attempt: attempt, state: state) }.map(ms)
    }

    /// The start `startedMs` reports, from a job's attempts.
    static func snapshotStart(of history: [AttemptRecord], attempt: Int, state: JobState) -> CoreInstant? {
        guard state == .running || state.isFinal, let a = history.last(where: { $0.attempt == attempt }) else { return nil }
        let current = state == .running ? a.endedAt == nil : a.outcome != .requeued && a.outcome != .revoked
        return current ? a.startedAt : nil
    }
}
