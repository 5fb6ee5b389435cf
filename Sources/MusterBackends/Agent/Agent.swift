import Foundation
import Logging
import MusterCore
import MusterProtocol
import MusterTransport

/// How `muster agent` runs.
public struct AgentOptions: Sendable {
    /// Dial this coordinator (`ws://` or `wss://`; several separated by commas: two coordinators
    /// on one database, dialled in turn, and a standby's `not_leader` followed to the leader) ...
    public var coordinator: String?
    /// ... or listen here and wait to be dialled.
    public var listen: HostPort?
    /// Presented in `hello`; in listen mode also required as `Authorization: Bearer` from the coordinator.
    public var token: String
    public var spec: WorkerSpec
    public var caFile: String?
    public var allowSelfSigned = false
    /// Client certificate and key presented to a `wss://` coordinator that requires one (mTLS);
    /// with no token, the certificate is the credential (README "Security").
    public var certificateFile: String?
    public var privateKeyFile: String?
    /// How long a drain may take before the agent stops anyway.
    public var drainTimeout: Duration = .seconds(120)
    /// The ComfyUI that runs the jobs (with `spec.runner == .external`).
    public var comfyui: ComfyUISettings?

    public init(coordinator: String?, listen: HostPort?, token: String, spec: WorkerSpec) {
        self.coordinator = coordinator
        self.listen = listen
        self.token = token
        self.spec = spec
    }
}

/// A remote backend: one `WorkerEngine` behind a `muster.backend.v1` link. It dials the
/// coordinator (or waits to be dialled), says `hello`, announces `loading` and then its
/// capabilities, runs jobs, and on a lost link keeps running and reconnects with the same
/// incarnation. A refusal (bad token, no common version, wrong role, replaced, an `invalid_message`
/// answering its `hello`) stops it.
public actor Agent {
    public nonisolated var unownedExecutor: UnownedSerialExecutor { transport.unownedExecutor }
    public nonisolated let transport: Transport
    nonisolated let logger: Logger
    public nonisolated let options: AgentOptions
    let origin = ContinuousClock.now
    let incarnation: Incarnation
    var driver: WorkerDriver?
    var comfyRunner: ComfyUIRunner?
    /// The open link to the coordinator, if any.
    var link: ConnectionID?
    var dialedLink: ConnectionID?
    var draining = false
    var stopped = false
    /// Set as the agent decides to stop (a refusal, or `stop()`): close events after it are its
    /// own links closing.
    private var stopping = false
    var finished = false
    var stopWaiters: [CheckedContinuation<Void, Never>] = []
    /// Why the agent stopped, when it was not asked to.
    /// Kept behind a lock (`stoppedBecause`): the process reads it once the event loop that
    /// runs this actor has ended.
    public private(set) var failure: String? {
        get { stoppedBecause.withLock { $0 } }
        set { stoppedBecause.withLock { $0 = newValue } }
    }
    /// `failure`, readable without the agent's executor.
    public nonisolated let stoppedBecause = Locked<String?>(nil)
    /// The coordinators to dial (`options.coordinator` split at commas), the one dialled now, the
    /// leader a standby named (dialled next), and the failures since the last `welcome`.
    var addresses: [String] = []
    var addressIndex = 0
    var redirect: String?
    var failuresSinceWelcome = 0
    /// Dialled links given up to dial another address: their close is not a loss to report.
    var abandoned: Set<ConnectionID> = []
    var redialTimer: TimerID?
    var dialedURL: String?
    /// The address whose link last failed (dropped or not reachable), until a `welcome`.
    var unreachable: String?
    /// The last `not_leader` came on the current link: its close is a refusal, not a failure.
    var refusedAsStandby = false
    /// The coordinator answered `hello` with `store_unavailable` (its store is not open yet) and
    /// closes with 1013, which libwebsockets 4.1's client reports as 1002: the link is redialled
    /// and the log says why instead of naming a protocol error.
    var refusedForNow = false

    public init(options: AgentOptions, logger: Logger) throws {
        self.options = options
        self.logger = logger
        var t = TransportConfiguration()
        t.reconnectDelays = [.milliseconds(500), .seconds(1), .seconds(2), .seconds(4), .seconds(8), .seconds(16), .seconds(30)]
        transport = try Transport(configuration: t, logger: logger)
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        incarnation = Incarnation(UInt64(now.tv_sec) * 1000 + UInt64(now.tv_nsec / 1_000_000))
    }

    /// Starts the engine and dials (or listens). Returns the listening port in listen mode.
    @discardableResult
    public func start() throws -> Int? {
        let origin = self.origin
        let clock: @Sendable () -> CoreInstant = { CoreInstant.elapsed(since: origin) }
        let engine = WorkerEngine(spec: options.spec, incarnation: incarnation, epochMs: incarnation.rawValue, seed: incarnation.rawValue, at: clock())
        driver = WorkerDriver(
            engine: engine, transport: transport, limits: .default, clock: clock,
            output: { [weak self] action in self?.assumeIsolated { $0.engineOutput(action) } })
        if let settings = options.comfyui, let driver {
            let runner = ComfyUIRunner(settings: settings, name: options.spec.name, transport: transport, logger: logger)
            comfyRunner = runner
            runner.start(driver: driver)
        }
        logger.info(
            "agent starting",
            metadata: [
                "backend.name": "\(options.spec.name)", "incarnation": "\(incarnation)",
                "features": "\(options.spec.features.joined(separator: ","))", "models": "\(options.spec.models.joined(separator: ","))",
                "slots": "\(options.spec.slots)",
            ])
        let handler = linkHandler()
        if let listen = options.listen {
            var server = ServerConfiguration()
            server.host = listen.host
            server.port = listen.port
            let token = options.token
            var backend = handler
            backend.refuseUpgrade = { _, info in
                // A coordinator dialling us must present our token (Protocol/README.md 6.1: 401).
                if token.isEmpty || constantTimeEqual(Authorization.bearerToken(info.headers["authorization"] ?? "") ?? "", token) {
                    return nil
                }
                let message = info.headers["authorization"] == nil
                    ? "this backend needs its token: Authorization: Bearer <token>" : "the token presented is not this backend's"
                var refusal = HTTPResponse(status: 401, body: Wire.ErrorBody(code: .badCredentials, message: message).encode())
                refusal.headers.append(("www-authenticate", "Bearer"))
                return refusal
            }
            server.subprotocols = [(Subprotocol.backend, backend)]
            let listener = try transport.assumeIsolated { try $0.listen(server) }
            logger.info("agent listening", metadata: ["listen.port": "\(listener.port)"])
            return listener.port
        }
        guard let coordinator = options.coordinator else { return nil }
        addresses = Self.coordinatorAddresses(coordinator)
        try dial(addresses[0])
        return nil
    }

    /// `ws://a:7460,ws://b:7460` as a list, blanks dropped.
    public static func coordinatorAddresses(_ text: String) -> [String] {
        text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    /// The coordinator address dialled now (nil in listen mode).
    var currentAddress: String? { dialedURL }

    private func dial(_ url: String) throws {
        var target = DialConfiguration(url: url, subprotocol: Subprotocol.backend)
        if options.caFile != nil || options.allowSelfSigned || options.certificateFile != nil {
            target.tls = ClientTLS(
                caFile: options.caFile, allowSelfSigned: options.allowSelfSigned,
                certificateFile: options.certificateFile, privateKeyFile: options.privateKeyFile)
        }
        let handler = linkHandler()
        dialedLink = try transport.assumeIsolated { try $0.dial(target, handler: handler) }
        dialedURL = url
        logger.info("agent dialling", metadata: ["url": "\(url)"])
    }

    /// The dialled link failed (refused, dropped, or a standby's `not_leader`). With one address
    /// and no leader named, the transport dials it again with its backoff. Otherwise the link is
    /// given up and the next address (the named leader first, unless it is the one that just could
    /// not be reached: a standby names the old leader until its lease runs out) is dialled after
    /// the same backoff, counted in rounds of the whole list. A standby's refusal is an answer, not
    /// a failure: it does not lengthen the backoff.
    private func linkFailed(refusedAsStandby: Bool = false) {
        guard !stopped, !draining, failure == nil, let current = dialedLink else { return }
        if !refusedAsStandby {
            failuresSinceWelcome += 1
            unreachable = dialedURL
        }
        if redirect != nil, redirect == unreachable { redirect = nil }
        guard addresses.count > 1 || redirect != nil else { return }
        dialedLink = nil
        abandoned.insert(current)
        transport.assumeIsolated { $0.close(current, code: .normal, reason: "dialling another coordinator") }
        let next: String
        if let redirect {
            next = redirect
            self.redirect = nil
            if let i = addresses.firstIndex(of: next) { addressIndex = i }
        } else {
            addressIndex = (addressIndex + 1) % addresses.count
            next = addresses[addressIndex]
        }
        let delays = Self.redialDelays
        let round = max(0, failuresSinceWelcome - 1) / max(1, addresses.count)
        let delay = delays[min(round, delays.count - 1)]
        redialTimer = transport.assumeIsolated { t in
            t.schedule(after: delay) { [weak self] _ in
                self?.assumeIsolated { a in
                    a.redialTimer = nil
                    guard !a.stopped, a.failure == nil else { return }
                    do {
                        try a.dial(next)
                    } catch {
                        a.logger.error("cannot dial the coordinator", metadata: ["url": "\(next)", "error": "\(error)"])
                    }
                }
            }
        }
    }

    /// The transport's backoff (Protocol/README.md: 0.5 s doubling), capped lower: with several
    /// coordinators a round of the list must not wait long once the leader moved.
    static let redialDelays: [Duration] = [.milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2), .seconds(4)]

    nonisolated func linkHandler() -> WebSocketHandler {
        WebSocketHandler(
            opened: { [weak self] _, info in self?.assumeIsolated { $0.opened(info) } },
            text: { [weak self] _, id, text in self?.assumeIsolated { $0.text(id, text) } },
            closed: { [weak self] _, event in self?.assumeIsolated { $0.closed(event) } },
            dialFailed: { [weak self] _, id, reason in
                self?.assumeIsolated { a in
                    guard id == a.dialedLink else { return }
                    a.logger.info("cannot reach the coordinator", metadata: ["reason": "\(reason)"])
                    a.linkFailed()
                }
            })
    }

    private func opened(_ info: ConnectionInfo) {
        if let old = link, old != info.id {
            // Listen mode: a new coordinator link replaces the old one.
            transport.assumeIsolated { $0.close(old, code: CloseCode(4005), reason: "replaced") }
            driver?.linkDown()
        }
        link = info.id
        guard let driver else { return }
        // A new link starts unwelcomed, whatever came before: after a stop (SIGSTOP, a suspended
        // VM) the redial could open before the old link's close was handled, and a progress
        // report then went out ahead of the hello (`not_registered`, close 1008).
        if driver.engine.welcomed { driver.linkDown() }
        send(driver.engine.hello(token: options.token, software: "muster-agent/\(MusterVersion.current)"))
        logger.info("linked to coordinator", metadata: ["link.id": "\(info.id)", "peer": "\(info.peer)"])
    }

    private func text(_ id: ConnectionID, _ text: String) {
        guard id == link else { return }
        let message: CoordinatorToBackend
        do {
            message = try CoordinatorToBackend.decode(text)
        } catch {
            logger.warning("undecodable message from the coordinator", metadata: ["error": "\(error)"])
            return
        }
        switch message {
        case .error(let e) where e.code == .notLeader:
            // A standby (or a leader that lost its lease): dial the leader it names next.
            let leader = Wire.NotLeader.leader(in: e.details)
            logger.notice("the coordinator is not the leader", metadata: ["leader": "\(leader?.address ?? "unknown")"])
            redirect = leader?.address
            refusedAsStandby = true
        case .error(let e) where e.code == .storeUnavailable && driver?.engine.welcomed != true:
            logger.notice("the coordinator cannot link backends yet; dialling again", metadata: ["message": "\(e.message)"])
            refusedForNow = true
        case .error(let e):
            logger.error("coordinator refused", metadata: ["code": "\(e.code)", "message": "\(e.message)"])
            if [ErrorCode.badCredentials, .noCommonVersion, .wrongRole, .staleIncarnation].contains(e.code)
                || (e.code == .invalidMessage && driver?.engine.welcomed != true)
            {
                // The same hello would be refused again: redialling would not help (an
                // `invalid_message` before the engine was welcomed on this link answers the hello).
                failure = "\(e.code): \(e.message)"
            }
        case .welcome(let w):
            failuresSinceWelcome = 0
            unreachable = nil
            logger.info("registered", metadata: ["backend.id": "\(w.backend)", "bindings": "\(w.bindings.count)"])
            driver?.receive(message)
        case .assign(let a):
            // Which coordinator sent the work (two coordinators: the leader of the moment).
            logger.debug(
                "job assigned",
                metadata: ["job": "\(a.job)", "lease": "\(a.lease)", "coordinator": "\(currentAddress ?? "listen")"])
            driver?.receive(message)
        case .goodbye(let g):
            logger.info("coordinator said goodbye", metadata: ["reason": "\(g.reason)"])
        default:
            driver?.receive(message)
        }
    }

    private func closed(_ event: CloseEvent) {
        guard event.id == link || event.id == dialedLink || abandoned.contains(event.id) else { return }
        if event.id == link {
            link = nil
            driver?.linkDown()
        }
        if abandoned.contains(event.id) {
            if !event.willReconnect { abandoned.remove(event.id) }
            return
        }
        // Stopping (a refusal seen, a drain, a signal): this is the agent closing its own links,
        // code 1000, not a second word from the coordinator.
        if stopping { return }
        let fatalCodes: Set<UInt16> = [4001, 4002, 4003, 4005, 4007]
        if fatalCodes.contains(event.code.rawValue) || failure != nil {
            failure = failure ?? "the coordinator closed the link with \(event.code.rawValue) \(event.reason)"
            logger.error("stopping: the coordinator refused this agent", metadata: ["close.code": "\(event.code.rawValue)", "reason": "\(failure ?? "")"])
            stopping = true
            Task { await self.stop() }
            return
        }
        if stopped || (draining && event.code == .normal) { return }
        let refused = refusedAsStandby
        refusedAsStandby = false
        if refusedForNow {
            refusedForNow = false
        } else if !refused {
            logger.warning(
                "link to coordinator lost", metadata: ["close.code": "\(event.code.rawValue)", "reconnecting": "\(event.willReconnect)"])
        }
        linkFailed(refusedAsStandby: refused)
    }

    private func engineOutput(_ action: WorkerEngine.Action) {
        switch action {
        case .send(let message):
            send(message)
        case .drained:
            logger.info("drained: every job is done")
            send(.goodbye(.init(reason: "drained")))
            Task { await self.stop() }
        default:
            break
        }
    }

    private func send(_ message: BackendToCoordinator) {
        guard let link else { return }
        let bytes = message.encode()
        transport.assumeIsolated { t in bytes.withUnsafeBytes { _ = t.send(utf8: $0, to: link) } }
    }

    /// SIGUSR1: a simulated or exec backend still in its start-up delay (`--announce-after`)
    /// finishes loading now and announces `ready`; lets a script or a test decide when loading
    /// ends. Nothing happens once it is ready, while it drains, or with `--comfyui` (the server
    /// says when it has loaded).
    public func finishLoading() {
        guard let driver, !stopped else { return }
        driver.external { [logger] engine, now in
            let actions = engine.finishLoading(at: now)
            logger.notice(actions.isEmpty ? "SIGUSR1: not loading, nothing to do" : "SIGUSR1: loading finished on request")
            return actions
        }
    }

    /// SIGTERM: announce `draining`, finish the jobs, say goodbye and stop (bounded by the drain timeout).
    public func drain() {
        guard !draining, !stopped else { return }
        draining = true
        logger.notice("draining")
        guard let driver else {
            // Not started yet: nothing to finish.
            Task { await self.stop() }
            return
        }
        driver.drain()
        let bound = options.drainTimeout
        Task {
            try? await Task.sleep(for: bound)
            await self.drainTimedOut()
        }
    }

    private func drainTimedOut() async {
        guard !stopped else { return }
        logger.warning("drain timed out; stopping with jobs unfinished")
        await stop()
    }

    /// Closes the link with 1000 and stops the loop.
    public func stop() async {
        guard !stopped else {
            await waitUntilStopped()
            return
        }
        stopped = true
        stopping = true
        halt()
        await transport.shutdown()
        finished = true
        logger.info("agent stopped")
        let waiters = stopWaiters
        stopWaiters = []
        for w in waiters { w.resume() }
    }

    private func halt() {
        comfyRunner?.stop()
        driver?.stop()
        if let redialTimer { transport.assumeIsolated { $0.cancel(redialTimer) } }
        let links = [link, dialedLink].compactMap { $0 }
        transport.assumeIsolated { t in
            for l in links { t.close(l, code: .normal, reason: "agent stopping") }
        }
    }

    public func waitUntilStopped() async {
        if finished { return }
        await withCheckedContinuation { stopWaiters.append($0) }
    }
}
