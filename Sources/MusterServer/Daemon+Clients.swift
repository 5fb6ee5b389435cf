import Foundation
import Logging
import MusterCore
import MusterProtocol
import MusterTransport

/// One WebSocket on `muster.client.v1`.
struct ClientSession {
    var name: String?
    /// Who the link's token is (set at `hello`).
    var principal: Principal = .anonymous
    /// The token its `hello` presented: checked again when credentials are reloaded; never logged.
    var token = ""
    /// The common name of the client certificate the peer presented (mTLS), checked with the token.
    var certificate: String?
    var helloTimer: TimerID?
    var batches: Set<BatchID> = []
}

/// What went wrong with a client request: answered as an `error` (WebSocket) or over HTTP with
/// the code's status (`ErrorCode.httpStatus`, the one map of Protocol/README.md section 5).
struct RequestError: Error {
    var code: ErrorCode
    var message: String
    var details: RawJSON?
    var status: Int { code.httpStatus }

    init(_ code: ErrorCode, _ message: String, details: RawJSON? = nil) {
        self.code = code
        self.message = message
        self.details = details
    }

    init(_ e: CoreError) { self.init(e.code, e.message, details: e.details) }

    init(_ e: ProtocolError) { self.init(e.code, e.path.isEmpty ? e.reason : "\(e.path): \(e.reason)") }
}

extension Daemon {
    nonisolated func clientHandler() -> WebSocketHandler {
        WebSocketHandler(
            opened: { [weak self] _, info in self?.assumeIsolated { $0.clientOpened(info) } },
            text: { [weak self] _, id, text in self?.assumeIsolated { $0.clientText(id, text) } },
            closed: { [weak self] _, event in self?.assumeIsolated { $0.clientClosed(event.id) } },
            drained: { [weak self] _, id in self?.assumeIsolated { $0.pumpSnapshots(id) } })
    }

    func clientOpened(_ info: ConnectionInfo) {
        if stopping {
            transport.assumeIsolated { $0.close(info.id, code: .goingAway, reason: "shutting down") }
            return
        }
        guard admitLink(info, backendSide: false) else { return }
        let timer = transport.assumeIsolated { t in
            t.schedule(after: handshakeTimeout) { [weak self] _ in
                self?.assumeIsolated { d in
                    guard let c = d.clients[info.id], c.name == nil else { return }
                    d.refuse(info.id, backendSide: false, code: .helloTimeout, message: "no hello within \(d.handshakeTimeout) of the link opening", close: 4004)
                }
            }
        }
        clients[info.id] = ClientSession(certificate: info.peerCertificateName, helloTimer: timer)
    }

    func clientClosed(_ id: ConnectionID) {
        linkGone(id)
        guard let session = clients.removeValue(forKey: id) else { return }
        dropHeld(for: id)
        snapshotStreams[id] = nil
        if let timer = session.helloTimer { transport.assumeIsolated { $0.cancel(timer) } }
        subscribersAll[id] = nil
        if let owner = session.principal.ownerScope {
            subscribersByOwner[owner]?[id] = nil
            if subscribersByOwner[owner]?.isEmpty == true { subscribersByOwner[owner] = nil }
        }
        for batch in session.batches {
            subscribersByBatch[batch]?[id] = nil
            if subscribersByBatch[batch]?.isEmpty == true { subscribersByBatch[batch] = nil }
        }
    }

    func clientText(_ id: ConnectionID, _ text: String) {
        // A deposed leader has closed its links; what they still deliver is not acted on.
        guard var session = clients[id], role != .deposed, withinRate(id, backendSide: false) else { return }
        let message: ClientToCoordinator
        do {
            message = try ClientToCoordinator.decode(text, limits: limits)
        } catch {
            protocolError(error, on: id, backendSide: false, welcomed: session.name != nil)
            return
        }
        guard session.name != nil else {
            guard case .hello(let hello) = message else {
                refuse(
                    id, backendSide: false, code: .notRegistered, message: "send hello first, then \(message.type)",
                    close: 1008, requestID: message.requestID ?? wireRequestID(of: text, limits: limits))
                return
            }
            if let timer = session.helloTimer { transport.assumeIsolated { $0.cancel(timer) } }
            session.helloTimer = nil
            guard hello.versions.contains(1) else {
                refuse(
                    id, backendSide: false, code: .noCommonVersion, message: "this coordinator speaks protocol version 1 only",
                    close: 4002, requestID: hello.id, details: RawJSON(unchecked: #"{"supported":[1]}"#))
                return
            }
            // A standby sends every client to the leader, before any credential is looked at.
            if refuseUnlessLeading(id, backendSide: false, requestID: hello.id) { return }
            guard let principal = auth.client(token: hello.token, certificate: session.certificate) else {
                refuse(
                    id, backendSide: false, code: .badCredentials, message: "the token is missing or not accepted"
                        + (session.certificate.map { " (and the client certificate \($0) names no credential)" } ?? ""),
                    close: 4001, requestID: hello.id)
                return
            }
            guard principal.isClientSide else {
                refuse(
                    id, backendSide: false, code: .forbidden,
                    message: "credential \(principal.name) is a backend credential: it opens the backend link only", close: 4007,
                    requestID: hello.id)
                return
            }
            session.name = hello.name
            session.principal = principal
            session.token = hello.token
            clients[id] = session
            let welcome = CoordinatorToClient.Welcome(
                id: hello.id, version: 1, coordinator: Self.version,
                heartbeatMs: heartbeatMs, maxMessageBytes: limits.maxMessageBytes, role: principal.wireRole,
                owner: principal.ownerScope)
            send(CoordinatorToClient.welcome(welcome).encode(), to: id)
            logger.debug("client registered", metadata: ["client.name": "\(hello.name)", "link.id": "\(id)"])
            return
        }
        do {
            switch message {
            case .hello(let m):
                refuse(
                    id, backendSide: false, code: .unexpectedMessage, message: "a second hello on one link", close: 1008,
                    requestID: m.id)
            case .submit(let m):
                let (accepted, actions) = try submit(m.batch, by: session.principal, defaultOwner: session.name ?? "anonymous")
                var answer = accepted
                answer.id = m.id
                // The answer waits for the batch to be durable, and goes before the batch's events.
                perform(actions) {
                    sendToClient(CoordinatorToClient.accepted(answer).encode(), to: id, batch: answer.batch)
                }
                pump()
            case .subscribe(let m):
                try subscribe(
                    id, batch: m.batch, events: EventFilter(names: m.events), finishedSnapshots: m.finishedSnapshots,
                    by: session.principal, requestID: m.id)
            case .cancel(let m):
                let canceled = try cancel(m.target, by: session.principal)
                sendToClient(CoordinatorToClient.canceled(.init(id: m.id, jobs: canceled)).encode(), to: id)
            case .status(let m):
                let report = CoordinatorToClient.StatusReport(
                    id: m.id, readiness: wireReadiness(), backends: core.backendList.map(wireBackend), queue: wireQueue())
                // A read: answered at once (in order behind anything held for this link).
                sendToClient(CoordinatorToClient.statusReport(report).encode(), to: id, durable: false)
            case .loadModel(let m):
                var answer = try loadModel(m.model, backend: m.backend, by: session.principal)
                answer.id = m.id
                sendToClient(CoordinatorToClient.modelsLoading(answer).encode(), to: id)
            case .drain(let m):
                try drain(m.backend, by: session.principal)
                sendToClient(CoordinatorToClient.draining(.init(id: m.id, backend: m.backend)).encode(), to: id)
            case .error(let e):
                // Common to both links (Protocol 10): logged, never answered.
                logger.warning(
                    "client reported an error",
                    metadata: ["link.id": "\(id)", "client.name": "\(session.name ?? "")", "code": "\(e.code)", "message": "\(e.message)"])
            case .goodbye(let g):
                logger.debug("client said goodbye", metadata: ["link.id": "\(id)", "reason": "\(g.reason)"])
            }
        } catch {
            metrics.counter("muster_request_errors_total", ["code": error.code.rawValue]).increment()
            sendError(Wire.ErrorMessage(id: message.requestID, code: error.code, message: error.message, details: error.details), to: id, backendSide: false)
        }
    }

    // MARK: - Requests shared by the client link and HTTP

    /// Submits a batch; returns the answer and the core actions to perform after it is sent.
    func submit(
        _ request: Wire.BatchRequest, by principal: Principal, defaultOwner: String
    ) throws(RequestError) -> (Wire.Accepted, [CoreAction]) {
        try require(principal.canSubmit, principal, "submit jobs")
        var owner = request.owner ?? defaultOwner
        if let scope = principal.ownerScope {
            // A client credential's jobs are its own: the owner is its name, or it is refused.
            for named in [request.owner] + request.jobs.map(\.owner) {
                if let named, named != scope {
                    throw RequestError(
                        .forbidden, "credential \(principal.name) submits as owner \(scope) only; leave owner out or set it to \(scope)")
                }
            }
            owner = scope
        }
        if let refusal = leaderRefusal { throw refusal }
        if stopping { throw RequestError(.shuttingDown, "the coordinator is stopping and takes no new work") }
        if let refusal = storeRefusal { throw refusal }
        let entries = request.jobs.map { j in
            BatchEntry(
                spec: JobSpec(kind: j.kind, needs: j.needs, model: j.model, params: j.params, priority: j.priority, owner: j.owner ?? owner, nodes: j.nodes),
                count: j.count)
        }
        try checkQuota(owner: owner, adding: entries.reduce(0) { $0 + $1.count }, key: request.batchKey)
        do {
            // The core tells an idempotent retry (same key, same entries) from a conflicting reuse.
            let (receipt, actions) = try core.submit(key: request.batchKey, entries: entries, owner: owner, at: now)
            if ownerQuota > 0, !receipt.duplicate { inFlightByOwner[owner, default: 0] += receipt.jobs.count }
            logSubmit(receipt, owner: owner)
            return (Wire.Accepted(batch: receipt.batch, jobs: receipt.jobs, duplicate: receipt.duplicate), actions)
        } catch {
            if error.code == .batchKeyConflict, let scope = principal.ownerScope, let key = request.batchKey,
                let held = core.batch(forKey: key), held.owner != scope
            {
                // Another owner's batch holds the key: a credential scoped to its own owner may
                // not read that batch, so the answer does not name it.
                throw RequestError(.batchKeyConflict, "batch_key '\(key)' is taken by another owner's batch; use a new key")
            }
            throw RequestError(error)
        }
    }

    private func logSubmit(_ receipt: SubmitReceipt, owner: String) {
        guard !receipt.duplicate else { return }
        logger.info("batch accepted", metadata: ["batch.id": "\(receipt.batch)", "jobs": "\(receipt.jobs.count)", "owner": "\(owner)"])
    }

    /// Subscribes a link to a batch or to every job it may see, for the `events` given; a second
    /// subscription of the same scope adds its events to the first one's.
    func subscribe(
        _ id: ConnectionID, batch: BatchID?, events: EventFilter, finishedSnapshots: Int? = nil, by principal: Principal,
        requestID: String?
    ) throws(RequestError) {
        var record: BatchRecord?
        if let batch {
            guard let found = core.batch(batch) else { throw notFound(.unknownBatch, "no batch \(batch)") }
            try requireAccess(principal, owner: found.owner, cancel: false, "batch \(batch)")
            clients[id]?.batches.insert(batch)
            subscribersByBatch[batch, default: [:]][id, default: []].formUnion(events)
            record = found
        } else if let owner = principal.ownerScope {
            // Every job of its own owner, and nothing else.
            subscribersByOwner[owner, default: [:]][id, default: []].formUnion(events)
        } else {
            subscribersAll[id, default: []].formUnion(events)
        }
        let snapshots = events.contains(.snapshot)
        let finished = snapshots ? finishedSnapshots.map { selectFinished(limit: $0, batch: record, owner: principal.ownerScope) } : nil
        sendToClient(CoordinatorToClient.subscribed(.init(id: requestID, batch: batch, omitted: finished?.omitted)).encode(), to: id)
        guard snapshots else { return }
        // Sent as the link drains (Daemon+Snapshots), a chunk now.
        startSnapshots(id, batch: record, owner: principal.ownerScope, finished: finished)
    }

    /// Cancels a job or a batch; returns the jobs this request canceled: ended `canceled` now, or
    /// `canceling` on their backend (they end `canceled` when it confirms).
    func cancel(_ target: ClientToCoordinator.Cancel.Target, by principal: Principal) throws(RequestError) -> [JobID] {
        try requireMayCancel(principal)
        let owner: String
        switch target {
        case .job(let job): owner = try ownerOf(job: job)
        case .batch(let batch): owner = try ownerOf(batch: batch)
        }
        let what: String
        switch target {
        case .job(let job): what = "job \(job)"
        case .batch(let batch): what = "batch \(batch)"
        }
        try requireAccess(principal, owner: owner, cancel: true, what)
        let othersJobs = owner != principal.name
        let actions: [CoreAction]
        do {
            switch target {
            case .job(let job): actions = try core.cancelJob(job, at: now)
            case .batch(let batch): actions = try core.cancelBatch(batch, at: now)
            }
        } catch {
            throw RequestError(error)
        }
        let canceled = actions.compactMap { action -> JobID? in
            guard case .jobEvent(let e) = action else { return nil }
            switch e.kind {
            case .canceled, .canceling: return e.job
            default: return nil
            }
        }
        if othersJobs {
            audited(
                "cancel of another owner's jobs", action: "cancel", by: principal,
                ["target": "\(what)", "owner": "\(owner)", "jobs.canceled": "\(canceled.count)"])
        }
        perform(actions)
        pump()
        return canceled
    }

    func loadModel(_ model: String, backend: BackendID?, by principal: Principal) throws(RequestError) -> Wire.ModelsLoading {
        try require(principal.canOperate, principal, "load models")
        if let backend {
            guard let info = core.backend(backend) else { throw RequestError(.unknownBackend, "no backend \(backend)") }
            // Protocol/README.md 7.3: `unknown_model` when the backend named does not offer it.
            guard info.modelsAvailable.contains(model) || info.modelsLoaded.contains(model) else {
                throw RequestError(.unknownModel, "backend \(backend) (\(info.name)) does not offer model \(model)")
            }
        }
        let offered = core.backendList.contains { $0.modelsAvailable.contains(model) || $0.modelsLoaded.contains(model) }
        guard offered || (backend == nil && configuration.backends.contains { $0.models.contains(model) }) else {
            throw RequestError(.unknownModel, "no backend offers model \(model)")
        }
        let actions: [CoreAction]
        do {
            actions = try core.loadModelNow(model, backend: backend, at: now)
        } catch {
            throw RequestError(error)
        }
        let told = actions.compactMap { action -> BackendID? in
            if case .loadModel(let b, let m) = action, m == model { return b }
            return nil
        }
        audited(
            "load model now", action: "load_model", by: principal,
            ["model": "\(model)", "backends": "\(told.map(\.description).joined(separator: ","))"])
        perform(actions)
        pump()
        return Wire.ModelsLoading(model: model, backends: told)
    }

    /// Drains a backend: the core stops routing to it at once, and the backend is told to finish
    /// what it has (a remote one then says `goodbye` and leaves). Draining twice is harmless.
    func drain(_ backend: BackendID, by principal: Principal) throws(RequestError) {
        try require(principal.canOperate, principal, "drain backends")
        guard let info = core.backend(backend) else {
            throw RequestError(.unknownBackend, "no backend \(backend); GET /v1/backends lists them")
        }
        audited("drain requested", action: "drain", by: principal, ["backend.id": "\(backend)", "backend.name": "\(info.name)"])
        feed(.drain(backend))
        if backend.isLocal {
            // The driver's own answer (`draining`, later `.drained`) lands in the local inbox.
            locals[backend]?.drain()
            pump()
        } else {
            deliver(.drain(.init(reason: "requested by a client")), to: backend)
        }
    }

    // MARK: - Events out

    /// Sends a job event to every client subscribed to it, encoded once.
    func publish(_ event: JobEvent) {
        switch event.kind {
        case .completed, .failed, .canceled:
            metrics.jobFinished(event.state.rawValue)
            if ownerQuota > 0 { jobLeftFlight(batch: event.batch) }
        case .gated:
            metrics.counter("muster_jobs_gated_total").increment()
        default:
            break
        }
        let batchSubscribers = subscribersByBatch[event.batch]
        // Client credentials following "everything" see their own owner's batches only.
        let ownerSubscribers = subscribersByOwner.isEmpty ? nil : core.batch(event.batch).flatMap { subscribersByOwner[$0.owner] }
        guard !subscribersAll.isEmpty || batchSubscribers != nil || ownerSubscribers != nil else { return }
        let bit = EventFilter(Self.wireKind(event.kind))
        // Encoded once, for the first link that follows this event; a final event waits until the
        // job's end is durable, the others need not.
        var bytes: [UInt8]?
        let durable = event.state.isFinal
        func deliver(_ id: ConnectionID) {
            // A link still owed this job's snapshot gets it now, in place of the event.
            if !snapshotStreams.isEmpty, sendOwedSnapshot(event, to: id) { return }
            if bytes == nil { bytes = CoordinatorToClient.job(wireEvent(event)).encode() }
            sendToClient(bytes!, to: id, durable: durable, batch: event.batch, job: event.job)
        }
        // A link is in at most one of `subscribersAll` and the owner's (its credential decides),
        // and may follow the batch too: either subscription's events reach it, once.
        func follows(_ id: ConnectionID, _ events: EventFilter) -> Bool {
            events.contains(bit) || batchSubscribers?[id]?.contains(bit) == true
        }
        for (id, events) in subscribersAll where follows(id, events) { deliver(id) }
        for (id, events) in ownerSubscribers ?? [:] where follows(id, events) { deliver(id) }
        for (id, events) in batchSubscribers ?? [:]
        where events.contains(bit) && subscribersAll[id] == nil && ownerSubscribers?[id] == nil {
            deliver(id)
        }
    }

    func observe(_ o: Observation) {
        switch o {
        case .bindLatency(_, let d):
            metrics.bindLatency.recordNanoseconds(d.nanosecondsClamped)
        case .propagation(let b, let d):
            metrics.capabilityPropagation.recordNanoseconds(d.nanosecondsClamped)
            logger.info("backend announced ready", metadata: ["backend.id": "\(b)", "propagation_ms": "\(d.nanosecondsClamped / 1_000_000)"])
        case .announcementApplied:
            metrics.counter("muster_announcements_total", ["result": "applied"]).increment()
        case .staleAnnouncement:
            metrics.counter("muster_announcements_total", ["result": "stale"]).increment()
        case .announcementConflict(let b, let version):
            metrics.counter("muster_announcements_total", ["result": "conflict"]).increment()
            logger.warning(
                "protocol violation: other content under a capability version already held; kept the held one",
                metadata: ["backend.id": "\(b)", "version": "\(version)"])
        case .staleReport:
            metrics.counter("muster_stale_reports_total").increment()
        case .stolen:
            metrics.counter("muster_jobs_stolen_total").increment()
        case .claimed(let job, let b):
            metrics.counter("muster_jobs_claimed_total").increment()
            logger.info(
                "a backend claimed a job it ran before the restart (its binding was never stored)",
                metadata: ["job.id": "\(job)", "backend.id": "\(b)"])
        case .backup(_, _, let outcome):
            metrics.counter("muster_backup_runs_total", ["result": outcome.rawValue]).increment()
        case .requeued(_, let cause):
            metrics.counter("muster_jobs_requeued_total", ["cause": cause.rawValue]).increment()
        case .jobDuration(_, _, let d):
            metrics.jobDuration.recordNanoseconds(d.nanosecondsClamped)
        case .modelLoadRequested(_, _, let reason):
            metrics.counter("muster_model_loads_requested_total", ["reason": reason.rawValue]).increment()
        case .cancelSettled(let job, let b, let how):
            metrics.counter("muster_cancels_settled_total", ["how": how.rawValue]).increment()
            if how == .graceExpired {
                logger.warning(
                    "a canceled job's backend did not confirm within the cancel grace; its slot is free again",
                    metadata: ["job.id": "\(job)", "backend.id": "\(b)"])
            }
        }
    }
}

extension Duration {
    var nanosecondsClamped: Int64 {
        let (s, atto) = components
        return s.multipliedReportingOverflow(by: 1_000_000_000).partialValue &+ atto / 1_000_000_000
    }
}

extension ClientToCoordinator {
    /// The request `id`, echoed by the answer.
    var requestID: String? {
        switch self {
        case .hello(let m): m.id
        case .submit(let m): m.id
        case .subscribe(let m): m.id
        case .cancel(let m): m.id
        case .status(let m): m.id
        case .loadModel(let m): m.id
        case .drain(let m): m.id
        case .error, .goodbye: nil
        }
    }
}
