import Foundation
import Logging
import MusterCore
import MusterProtocol
import MusterTransport

/// One WebSocket on `muster.backend.v1`, accepted or dialled.
struct BackendLink {
    enum Phase {
        /// Open; the backend must say `hello` before the timer fires.
        case awaitingHello(TimerID?)
        case registered(BackendID)
    }
    var phase: Phase
    var peer: String
    /// The token its `hello` presented (nil for links the coordinator dialled): checked again when
    /// credentials are reloaded (Daemon+Reload), never logged.
    var token: String? = nil
    /// The common name of the client certificate the peer presented (mTLS), checked with the token.
    var certificate: String? = nil
    /// The backend said `goodbye` on this link: its close is deliberate (`backendLeft`).
    var saidGoodbye = false
}

extension Daemon {
    nonisolated func backendHandler() -> WebSocketHandler {
        WebSocketHandler(
            opened: { [weak self] _, info in self?.assumeIsolated { $0.backendOpened(info) } },
            text: { [weak self] _, id, text in self?.assumeIsolated { $0.backendText(id, text) } },
            closed: { [weak self] _, event in self?.assumeIsolated { $0.backendClosed(event) } })
    }

    /// The id a backend name maps to: stable for the life of the coordinator, and across restarts
    /// with a job store, until the backend is forgotten (down for `links.forget_down_seconds`).
    /// A name that comes back after that gets a new id: never one given while this coordinator
    /// runs, nor one a job it restored names.
    func backendID(forName name: String) -> BackendID {
        if let id = idsByName[name] { return id }
        let id = BackendID(nextRemoteID)
        nextRemoteID += 1
        idsByName[name] = id
        namesByID[id] = name
        return id
    }

    /// The core forgot a backend that stayed down: its name is free (a later `hello` of it is a
    /// new backend) and its per-backend metrics series go.
    func forgetBackend(_ id: BackendID, name: String) {
        if idsByName[name] == id { idsByName[name] = nil }
        namesByID[id] = nil
        metrics.removeSeries(label: "backend", value: name)
        metrics.counter("muster_backends_forgotten_total").increment()
        logger.notice(
            "backend forgotten: down for longer than links.forget_down_seconds",
            metadata: [
                "backend.id": "\(id)", "backend.name": "\(name)",
                "links.forget_down_seconds": "\(configuration.settings.links.forgetDown)",
            ])
    }

    func backendOpened(_ info: ConnectionInfo) {
        if stopping {
            transport.assumeIsolated { $0.close(info.id, code: .goingAway, reason: "shutting down") }
            return
        }
        guard admitLink(info, backendSide: true) else { return }
        let timer = transport.assumeIsolated { t in
            t.schedule(after: handshakeTimeout) { [weak self] _ in
                self?.assumeIsolated { $0.helloTimedOut(info.id) }
            }
        }
        backendLinks[info.id] = BackendLink(
            phase: .awaitingHello(timer), peer: info.peer, certificate: info.peerCertificateName)
        logger.debug("backend link open", metadata: ["link.id": "\(info.id)", "peer": "\(info.peer)"])
    }

    func helloTimedOut(_ id: ConnectionID) {
        guard let link = backendLinks[id], case .awaitingHello = link.phase else { return }
        refuse(id, backendSide: true, code: .helloTimeout, message: "no hello within \(handshakeTimeout) of the link opening", close: 4004)
    }

    func backendText(_ id: ConnectionID, _ text: String) {
        guard let link = backendLinks[id], role != .deposed, withinRate(id, backendSide: true) else { return }
        let message: BackendToCoordinator
        do {
            message = try BackendToCoordinator.decode(text, limits: limits)
        } catch {
            // Before `welcome` a message that cannot be read ends the link (Protocol/README.md 6.2).
            let welcomed: Bool
            if case .registered = link.phase { welcomed = true } else { welcomed = false }
            protocolError(error, on: id, backendSide: true, welcomed: welcomed)
            return
        }
        switch link.phase {
        case .awaitingHello(let timer):
            guard case .hello(let hello) = message else {
                refuse(
                    id, backendSide: true, code: .notRegistered, message: "send hello first, then \(message.type)",
                    close: 1008, requestID: message.requestID ?? wireRequestID(of: text, limits: limits))
                return
            }
            if let timer { transport.assumeIsolated { $0.cancel(timer) } }
            register(hello, on: id, peer: link.peer, certificate: link.certificate)
        case .registered(let backend):
            if case .hello(let m) = message {
                refuse(
                    id, backendSide: true, code: .unexpectedMessage, message: "a second hello on one link", close: 1008,
                    requestID: m.id)
                return
            }
            backendMessage(message, from: backend, connection: id)
        }
    }

    private func register(_ hello: BackendToCoordinator.Hello, on id: ConnectionID, peer: String, certificate: String?) {
        guard hello.versions.contains(1) else {
            refuse(
                id, backendSide: true, code: .noCommonVersion, message: "this coordinator speaks protocol version 1 only",
                close: 4002, requestID: hello.id, details: RawJSON(unchecked: #"{"supported":[1]}"#))
            return
        }
        if refuseUnlessLeading(id, backendSide: true, requestID: hello.id) { return }
        if store != nil, !storeOpened {
            // Ids and bindings come from the store: no backend is linked before it is open.
            refuse(
                id, backendSide: true, code: .storeUnavailable,
                message: "the coordinator's job store is not open yet; reconnect later", close: 1013, requestID: hello.id)
            return
        }
        let dialedConfig = dialed[id]
        let name = dialedConfig?.name ?? hello.name
        if dialedConfig == nil {
            // Dialled links were authenticated by dialling the configured URL; others present a token.
            switch auth.backend(name: name, token: hello.token, certificate: certificate) {
            case .success:
                break
            case .failure(.badCredentials):
                logger.warning("backend refused: bad credentials", metadata: ["backend.name": "\(name)", "link.id": "\(id)", "peer": "\(peer)"])
                refuse(
                    id, backendSide: true, code: .badCredentials, message: "the token is missing or not accepted",
                    close: 4001, requestID: hello.id)
                return
            case .failure(.forbidden(let why)):
                logger.warning("backend refused: forbidden", metadata: ["backend.name": "\(name)", "link.id": "\(id)", "peer": "\(peer)", "reason": "\(why)"])
                refuse(id, backendSide: true, code: .forbidden, message: why, close: 4007, requestID: hello.id)
                return
            }
        }
        let backend = backendID(forName: name)
        if backend.isLocal {
            // A remote backend under a local backend's name would take over its id: the local
            // backend's jobs requeued as if it restarted, and its slot lost to the remote one.
            logger.warning(
                "backend refused: the name is a local backend's", metadata: ["backend.name": "\(name)", "link.id": "\(id)", "peer": "\(peer)"])
            refuse(
                id, backendSide: true, code: .forbidden,
                message: "\(name) is the name of a local backend of this coordinator (id \(backend)); choose another name",
                close: 4007, requestID: hello.id)
            return
        }
        let known = core.backend(backend)
        if let incarnation = known?.incarnation, hello.incarnation < incarnation {
            // Known (linked, suspect or down) under a newer incarnation: `details` names it, so a
            // backend whose clock went backwards across a restart can take a larger one.
            refuse(
                id, backendSide: true, code: .staleIncarnation,
                message: "backend \(name) is registered with a newer incarnation \(incarnation); use a new incarnation",
                close: 1008, requestID: hello.id, details: RawJSON(unchecked: #"{"incarnation":\#(incarnation.rawValue)}"#))
            return
        }
        if let old = linkOf[backend], old != id {
            logger.info("backend link replaced", metadata: ["backend.id": "\(backend)", "link.id": "\(old)", "link.new": "\(id)"])
            backendLinks[old] = nil
            send(CoordinatorToBackend.goodbye(.init(reason: "replaced", message: "a newer link registered \(name)")).encode(), to: old)
            transport.assumeIsolated { $0.close(old, code: CloseCode(4005), reason: "replaced") }
        }
        if known != nil { metrics.counter("muster_reconnects_total").increment() }
        backendLinks[id] = BackendLink(
            phase: .registered(backend), peer: peer, token: dialedConfig == nil ? hello.token : nil, certificate: certificate)
        linkOf[backend] = id
        let configured = configuration.backends.first { $0.name == name }
        let actions = core.handle(
            .backendRegistered(BackendRegistration(
                id: backend, name: name, incarnation: hello.incarnation, slots: hello.slots, priority: configured?.priority ?? 0,
                speed: configured?.speed, modelLoadSeconds: configured?.expectedLoadSeconds, holding: hello.jobs)),
            at: now)
        // The snapshot of this incarnation, if any: after a newer incarnation's hello the old one
        // no longer counts, so `known` is omitted until the first announcement.
        let heldVersion = core.backend(backend)?.version
        // Jobs bound by this very registration get their `assign` right after `welcome`: listed
        // there too, a backend following Protocol 6.6 would answer `unknown_job` for each (it does
        // not hold them yet), and each would lose an attempt.
        var assigned: Set<JobID> = []
        for case .assign(let job, _, _, let to, _, _) in actions where to == backend { assigned.insert(job) }
        let welcome = CoordinatorToBackend.Welcome(
            id: hello.id, backend: backend, coordinator: Self.version,
            heartbeatMs: heartbeatMs,
            syncMs: UInt64(configuration.settings.links.syncInterval.configMilliseconds),
            maxMessageBytes: limits.maxMessageBytes, known: heldVersion,
            bindings: core.bindings(of: backend).filter { !assigned.contains($0.job) }.map { Wire.Binding(job: $0.job, lease: $0.lease) })
        send(CoordinatorToBackend.welcome(welcome).encode(), to: id)
        logger.info(
            known == nil ? "backend registered" : "backend re-registered",
            metadata: [
                "backend.id": "\(backend)", "backend.name": "\(name)", "backend.incarnation": "\(hello.incarnation)",
                "link.id": "\(id)", "peer": "\(peer)", "bindings": "\(welcome.bindings.count)",
            ])
        perform(actions)
        pump()
    }

    /// A message from a registered backend, remote (`connection`) or local (nil).
    func backendMessage(_ message: BackendToCoordinator, from backend: BackendID, connection: ConnectionID?) {
        switch message {
        case .capabilities(let snapshot):
            feed(.capabilities(backend, snapshot))
        case .started(let m):
            feed(.jobStarted(m.job, backend: backend, lease: m.lease))
        case .progress(let m):
            feed(
                .jobProgress(
                    m.job, backend: backend, lease: m.lease, fraction: m.fraction, message: m.message,
                    timed: m.timed ?? false))
        case .completed(let m):
            feed(.jobCompleted(m.job, backend: backend, lease: m.lease, result: m.result))
        case .failed(let m):
            feed(.jobFailed(m.job, backend: backend, lease: m.lease, code: m.code, message: m.message, retryable: m.retryable))
        case .loadModelResult(let r):
            if r.ok {
                logger.info("model loaded", metadata: ["backend.id": "\(backend)", "model": "\(r.model)", "duration_ms": "\(r.durationMs ?? 0)"])
            } else {
                logger.warning("model load failed", metadata: ["backend.id": "\(backend)", "model": "\(r.model)", "error": "\(r.error?.message ?? "")"])
                feed(.modelLoadFailed(backend, model: r.model))
            }
        case .error(let e):
            logger.warning("backend reported an error", metadata: ["backend.id": "\(backend)", "code": "\(e.code)", "message": "\(e.message)"])
        case .goodbye(let g):
            logger.info("backend said goodbye", metadata: ["backend.id": "\(backend)", "reason": "\(g.reason)"])
            if let connection { backendLinks[connection]?.saidGoodbye = true }
            if g.reason == "drained" { feed(.drain(backend)) }
        case .hello:
            break
        }
    }

    func backendClosed(_ event: CloseEvent) {
        linkGone(event.id)
        guard let link = backendLinks.removeValue(forKey: event.id) else { return }
        if case .awaitingHello(let timer?) = link.phase { transport.assumeIsolated { $0.cancel(timer) } }
        guard case .registered(let backend) = link.phase, linkOf[backend] == event.id else { return }
        linkOf[backend] = nil
        let metadata: Logger.Metadata = [
            "backend.id": "\(backend)", "link.id": "\(event.id)", "close.code": "\(event.code.rawValue)",
            "close.reason": "\(event.reason)", "reconnecting": "\(event.willReconnect)",
        ]
        // A close after the backend's `goodbye`, or one this coordinator's shutdown made, is the
        // ending both sides agreed to: nothing for an operator to look into.
        if link.saidGoodbye || stopping {
            logger.info("backend link closed", metadata: metadata)
        } else {
            logger.warning("backend link lost", metadata: metadata)
        }
        if !stopping { feed(link.saidGoodbye ? .backendLeft(backend) : .linkLost(backend)) }
    }

    /// Dials every `remote` backend of the configuration; the gate waits for them from now on.
    func dialRemoteBackends() {
        for config in configuration.backends {
            guard case .remote(let remote) = config.kind else { continue }
            let id = backendID(forName: config.name)
            feed(.backendExpected(id, name: config.name))
            var target = DialConfiguration(url: remote.url, subprotocol: Subprotocol.backend)
            if let token = remote.token { target.headers = [("Authorization", "Bearer \(token)")] }
            if remote.caFile != nil || remote.allowSelfSigned {
                target.tls = ClientTLS(caFile: remote.caFile, allowSelfSigned: remote.allowSelfSigned)
            }
            do {
                let handler = backendHandler()
                let link = try transport.assumeIsolated { try $0.dial(target, handler: handler) }
                dialed[link] = config
                logger.info("dialling backend", metadata: ["backend.id": "\(id)", "backend.name": "\(config.name)", "url": "\(remote.url)", "link.id": "\(link)"])
            } catch {
                logger.error("cannot dial backend", metadata: ["backend.name": "\(config.name)", "url": "\(remote.url)", "error": "\(error)"])
            }
        }
    }

    // MARK: - Errors on links

    /// Answers a message that could not be decoded; closes the link when the error demands it,
    /// and always before `welcome` (a peer whose hello cannot be read is not waited for: 1008).
    func protocolError(_ error: ProtocolError, on id: ConnectionID, backendSide: Bool, welcomed: Bool) {
        metrics.counter("muster_protocol_errors_total", ["code": error.code.rawValue]).increment()
        logger.notice("protocol error", metadata: ["link.id": "\(id)", "code": "\(error.code)", "error": "\(error)"])
        sendError(error.errorMessage, to: id, backendSide: backendSide)
        if let close = error.closeCode ?? (welcomed ? nil : .policyViolation) {
            transport.assumeIsolated { $0.close(id, code: MusterTransport.CloseCode(close.rawValue), reason: error.code.rawValue) }
        }
    }

    /// Sends an `error` with `code` (echoing `requestID`, with `details` if any), then closes the
    /// link with `close`.
    func refuse(
        _ id: ConnectionID, backendSide: Bool, code: ErrorCode, message: String, close: UInt16, requestID: String? = nil,
        details: RawJSON? = nil
    ) {
        metrics.counter("muster_protocol_errors_total", ["code": code.rawValue]).increment()
        sendError(Wire.ErrorMessage(id: requestID, code: code, message: message, details: details), to: id, backendSide: backendSide)
        transport.assumeIsolated { $0.close(id, code: CloseCode(close), reason: code.rawValue) }
    }

    func sendError(_ error: Wire.ErrorMessage, to id: ConnectionID, backendSide: Bool) {
        let bytes = backendSide ? CoordinatorToBackend.error(error).encode() : CoordinatorToClient.error(error).encode()
        send(bytes, to: id)
    }
}

extension BackendToCoordinator {
    /// The request `id` of a message that carries one, echoed by an `error` about it.
    var requestID: String? {
        switch self {
        case .hello(let m): m.id
        case .loadModelResult(let m): m.id
        case .error(let m): m.id
        case .capabilities, .started, .progress, .completed, .failed, .goodbye: nil
        }
    }
}
