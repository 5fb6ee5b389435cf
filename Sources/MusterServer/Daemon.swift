import DequeModule
import Foundation
import Logging
import MusterBackends
import MusterCore
import MusterProtocol
import MusterStore
import MusterTransport

/// The running coordinator: the core state machine wired to the network.
///
/// The daemon is an actor whose executor is the transport's event-loop thread, so the core, the
/// link tables and the local backends live on that one thread, and every WebSocket message, HTTP
/// request and timer reaches them synchronously (`assumeIsolated`), with no hop per message.
///
/// Core events are fed through `pump`: core actions are performed in order, and whatever they
/// cause in local pseudo-backends is queued and fed back until nothing is left, so the core is
/// never re-entered while it is handling an event.
public actor Daemon {
    public nonisolated var unownedExecutor: UnownedSerialExecutor { transport.unownedExecutor }

    public nonisolated let transport: Transport
    public nonisolated let configuration: Configuration
    nonisolated let logger: Logger
    /// Who did what among operator actions and credential reloads (README "Security"): its own
    /// label, `muster.audit`, so it can be routed and kept apart.
    nonisolated let audit: Logger
    public nonisolated let metrics: ServerMetrics
    /// The software version reported in `welcome`, `/healthz` and logs.
    public static let version = MusterVersion.current

    var core: MusterCore.Coordinator
    let origin: ContinuousClock.Instant
    /// Wall-clock milliseconds at `origin`, for the `*_ms` fields of the wire protocol.
    let originMs: UInt64
    let limits: ProtocolLimits
    /// Checks tokens and says what each may do (Daemon+Auth).
    var auth: Authenticator
    /// `jobs.max_in_flight_per_owner` (0: no limit), and while it is set, each owner's unfinished
    /// jobs: added at submit, taken off at each job's final event (Daemon+Limits).
    let ownerQuota: Int
    var inFlightByOwner: [String: Int] = [:]
    /// `links.max_per_address` (0: no limit) and the open accepted links per source address.
    let maxLinksPerAddress: Int
    var linksByAddress: [String: Int] = [:]
    var addressOf: [ConnectionID: String] = [:]
    /// `links.max_messages_per_second` (0: no limit) and each link's allowance (Daemon+Limits).
    let maxMessagesPerSecond: Int
    var allowances: [ConnectionID: Allowance] = [:]
    /// How long a new link may take to say `hello` (and a connection to finish its upgrade).
    let handshakeTimeout: Duration

    // Links.
    var backendLinks: [ConnectionID: BackendLink] = [:]
    var linkOf: [BackendID: ConnectionID] = [:]
    var idsByName: [String: BackendID] = [:]
    var namesByID: [BackendID: String] = [:]
    var nextRemoteID: Int64 = 1
    var clients: [ConnectionID: ClientSession] = [:]
    /// Client links subscribed to every job, and the events each follows (`subscribe.events`).
    var subscribersAll: [ConnectionID: EventFilter] = [:]
    /// Links of client credentials subscribed to everything: by owner, they see that owner's only.
    var subscribersByOwner: [String: [ConnectionID: EventFilter]] = [:]
    var subscribersByBatch: [BatchID: [ConnectionID: EventFilter]] = [:]
    /// Per client link, the `snapshot` events its subscriptions still owe it (Daemon+Snapshots).
    var snapshotStreams: [ConnectionID: [SnapshotStream]] = [:]
    /// `load_model` requests sent to backends so far: each gets its own `id` (`lm-N`).
    var loadRequests: UInt64 = 0
    /// Bytes queued and held for a link below which it gets more owed snapshots: a quarter of
    /// the high-water mark, so the live events that come meanwhile have room.
    let snapshotLowWater: Int
    var dialed: [ConnectionID: BackendConfig] = [:]

    // Local pseudo-backends.
    var locals: [BackendID: WorkerDriver] = [:]
    /// The ComfyUI servers of `comfyui` backends, by backend id.
    var comfyRunners: [BackendID: ComfyUIRunner] = [:]
    /// Messages local backends sent, fed to the core after the current actions.
    var localInbox = Deque<(BackendID, BackendToCoordinator)>()
    var pumping = false

    // The job store (nil with `store.url = memory:`, and on a standby until it takes the lead:
    // the store of a term is made with its fencing token) and the durability barrier (Daemon+Store).
    var store: (any JobStore)?
    var storeOpened = false
    var storeFailure: StoreFailure?
    /// Sequence number of the last change appended, and of the last one the store made durable.
    var storeAppended: UInt64 = 0
    var storeDurable: UInt64 = 0
    /// Per client link, messages waiting for the store (Daemon+Store).
    var heldOutput: [ConnectionID: HeldQueue] = [:]
    var heldResponses = Deque<(barrier: UInt64, request: HTTPRequestID, response: HTTPResponse, read: Bool)>()

    // Leadership among coordinators on one database (Daemon+Leadership). Without an election
    // (SQLite, memory) the daemon leads from the start.
    nonisolated let election: (any LeaderElection)?
    var role: Role
    /// The fencing token of the term this daemon leads (nil without an election).
    var leaderTerm: Int64?
    /// Why the daemon stopped leading, once it has: it then stops (`muster serve` exits 75).
    public internal(set) var lostLeadership: String?
    /// Why the election cannot reach the database, while it cannot (`LeaderElection.failure`).
    var electionFailure: String?

    var coreTimer: (id: TimerID, at: CoreInstant)?
    var listener: Listener?
    var stopping = false
    var stopped = false
    var stopWaiters: [CheckedContinuation<Void, Never>] = []
    /// `welcome.heartbeat_ms`: the keepalive ping interval the transport really uses.
    let heartbeatMs: UInt64

    /// Creates the transport (its loop thread starts now); `start()` listens and brings up backends.
    /// `audit` defaults to the process's `muster.audit` logger. `election`: the leader election
    /// among coordinators sharing the store (with a postgres store one is made from the
    /// configuration when none is given); the daemon then starts as a standby.
    public init(
        configuration: Configuration, logger: Logger, metrics: ServerMetrics = ServerMetrics(), audit: Logger? = nil,
        election: (any LeaderElection)? = nil
    ) throws {
        self.configuration = configuration
        self.logger = logger
        self.audit = audit ?? Logger(label: "muster.audit")
        self.metrics = metrics
        let settings = configuration.settings
        var t = TransportConfiguration()
        t.maxMessageBytes = settings.links.maxMessageBytes
        t.outboundHighWaterBytes = settings.links.outboundHighWaterBytes
        self.snapshotLowWater = settings.links.outboundHighWaterBytes / 4
        // Protocol/README.md section 2: ping after `heartbeat_ms` of silence (half the keepalive,
        // at least 500 ms), drop a link silent for two intervals.
        let heartbeat = Self.heartbeatMs(keepalive: settings.links.keepalive)
        t.keepalivePingAfter = .milliseconds(Int64(heartbeat))
        t.keepaliveHangUpAfter = .milliseconds(Int64(2 * heartbeat))
        self.heartbeatMs = heartbeat
        t.handshakeTimeout = settings.links.handshakeTimeout
        t.maxPendingHandshakesPerAddress = settings.links.maxPendingHandshakesPerAddress
        self.transport = try Transport(configuration: t, logger: logger)
        switch settings.store.url {
        case .memory: self.store = nil
        case .sqlite: self.store = settings.store.makeStore()
        // Shared by two coordinators: made at takeover, with the term's fencing token (Daemon+Leadership).
        case .postgres: self.store = nil
        }
        var policy = Self.policy(from: configuration)
        policy.persistChanges = settings.store.url != .memory
        self.core = MusterCore.Coordinator(policy: policy)
        self.origin = .now
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        self.originMs = UInt64(now.tv_sec) * 1000 + UInt64(now.tv_nsec / 1_000_000)
        var limits = ProtocolLimits.default
        limits.maxMessageBytes = settings.links.maxMessageBytes
        self.limits = limits
        self.auth = try configuration.authenticator()
        self.ownerQuota = settings.jobs.maxInFlightPerOwner
        self.maxLinksPerAddress = settings.links.maxPerAddress
        self.maxMessagesPerSecond = settings.links.maxMessagesPerSecond
        self.handshakeTimeout = t.handshakeTimeout
        let election = election ?? Self.election(for: configuration)
        self.election = election
        self.role = election == nil ? .leader : .standby(nil)
        if election != nil { self.store = nil }
    }

    /// `heartbeat_ms` for `links.keepalive_seconds`: half of it, at least 500 ms.
    static func heartbeatMs(keepalive: Duration) -> UInt64 {
        UInt64(max(500, (Double(keepalive.configMilliseconds) / 2).rounded()))
    }

    static func policy(from c: Configuration) -> CorePolicy {
        let s = c.settings
        var p = CorePolicy()
        p.gateWindow = s.gate.window
        p.gateSettle = s.gate.settle
        p.overqueue = s.routing.overqueue
        p.workStealing = s.routing.workStealing
        p.inhibitAfterFailure = s.routing.inhibitAfterFailure
        p.maxAttempts = s.routing.maxAttempts
        p.keepQueuedWhenNoEligible = s.routing.noEligibleBackend == .queue
        p.suspectGrace = s.links.suspectGrace
        p.forgetDownAfter = s.links.forgetDown
        p.reclaimWindow = s.links.reclaim
        p.syncInterval = s.links.syncInterval
        p.finishedJobLimit = s.jobs.retainFinished
        p.routing = s.routing.rule
        p.jobDurationPriors = s.routing.jobDurations
        p.defaultJobDuration = s.routing.defaultJobDuration
        p.defaultModelLoadTime = s.routing.modelLoadDuration
        p.maxWaitForBetterBackend = s.routing.maxWaitForBetter
        p.hedgeLoads = s.routing.hedgeLoads
        p.backupRuns = s.routing.backupRuns
        p.speculativeBackups = s.routing.speculativeBackups
        p.prefetchModels = s.routing.prefetchModels
        p.cancelGrace = s.jobs.cancelGrace
        return p
    }

    /// The core's clock: wall-clock nanoseconds since the Unix epoch when the daemon started,
    /// advanced by the monotonic clock (instants a store kept stay meaningful after a restart).
    var now: CoreInstant {
        CoreInstant(nanoseconds: originMs &* 1_000_000 &+ CoreInstant.elapsed(since: origin).nanoseconds)
    }

    /// Wall-clock milliseconds of a core instant.
    func ms(_ t: CoreInstant) -> UInt64 { t.nanoseconds / 1_000_000 }

    // MARK: - Lifecycle

    /// Listens, starts the local pseudo-backends and dials the configured remote backends.
    /// Returns the bound port.
    @discardableResult
    public func start() throws -> Int {
        var server = ServerConfiguration()
        server.host = configuration.settings.listen.host
        server.port = configuration.settings.listen.port
        server.maxRequestBodyBytes = configuration.settings.http.maxBodyBytes
        server.subprotocols = [
            (Subprotocol.backend, backendHandler()),
            (Subprotocol.client, clientHandler()),
        ]
        server.http = httpRoutes()
        let tls = configuration.settings.tls
        if let cert = tls.cert, let key = tls.key {
            server.tls = ServerTLS(
                certificateFile: cert, privateKeyFile: key, clientCAFile: tls.clientCA, requireClientCertificate: tls.clientCA != nil)
        }
        let listener = try transport.assumeIsolated { try $0.listen(server) }
        self.listener = listener
        let passes = metrics.loopPassCPU
        transport.assumeIsolated { $0.onServicePass = { passes.recordNanoseconds($0) } }
        logger.info(
            "muster serving",
            metadata: [
                "listen.host": "\(configuration.settings.listen.host)", "listen.port": "\(listener.port)",
                "version": "\(Self.version)", "backends.local": "\(configuration.backends.filter(\.isLocal).count)",
                "backends.remote": "\(configuration.backends.filter { !$0.isLocal }.count)",
                "auth.clients": auth.clientSideOpen ? "open" : "token", "auth.backends": auth.backendSideOpen ? "open" : "token",
                "auth.credentials": "\(auth.credentials.count)",
            ])
        if let store { store.onCommit { [weak self] commit in self?.storeReported(commit) } }
        // Every coordinator reports its terms; one without an election leads one term, its run.
        let terms = metrics.counter("muster_leader_terms_total")
        if let election {
            // A standby until the election says otherwise; the store opens on taking over.
            logger.notice("standing by for leadership", metadata: ["ha.name": "\(configuration.haName)"])
            election.start { [weak self] _ in self?.leadershipReported() }
        } else if store != nil {
            terms.increment()
            // Local backends start and remote ones are dialled once the store is open.
            openStore()
        } else {
            terms.increment()
            startLocalBackends()
            dialRemoteBackends()
        }
        return listener.port
    }

    /// True once shutdown has begun.
    public var isStopping: Bool { stopping }

    /// The port the daemon listens on (after `start()`).
    public var port: Int? { listener?.port }

    /// Waits until `shutdown()` has finished.
    public func waitUntilStopped() async {
        if stopped { return }
        await withCheckedContinuation { stopWaiters.append($0) }
    }

    /// Graceful shutdown: refuse new work, tell every peer `goodbye`, log what is still queued,
    /// close every link with 1001 and stop the loop. Idempotent.
    public func shutdown() async {
        guard !stopping else {
            await waitUntilStopped()
            return
        }
        beginShutdown()
        await transport.shutdown()
        // What is appended is written before the process ends; a coordinator that lost its lease
        // writes nothing more (its store would refuse it, or hang on a database it cannot reach).
        if lostLeadership == nil { store?.close() }
        // Give the lease up only now, with everything written: the standby takes over at once.
        election?.stop()
        stopped = true
        logger.info("stopped")
        let waiters = stopWaiters
        stopWaiters = []
        for w in waiters { w.resume() }
    }

    /// The synchronous part of shutdown, on the loop: refuse work, say goodbye, stop the timers.
    private func beginShutdown() {
        stopping = true
        let states = core.jobsByState
        let queued: Int = (states[.queued] ?? 0) + (states[.gated] ?? 0)
        let bound: Int = states[.bound] ?? 0
        let running: Int = states[.running] ?? 0
        let unfinished = queued + bound + running
        logger.notice(
            "shutting down", metadata: ["jobs.queued": "\(queued)", "jobs.bound": "\(bound)", "jobs.running": "\(running)"])
        if unfinished > 0 {
            if store != nil {
                logger.notice("unfinished jobs are kept in the job store for the next start", metadata: ["jobs.unfinished": "\(unfinished)"])
            } else {
                logger.warning("jobs not finished at shutdown are lost (store.url is memory:)", metadata: ["jobs.unfinished": "\(unfinished)"])
            }
        }
        let goodbye = Wire.Goodbye(reason: "shutdown", message: "the coordinator is stopping")
        let toBackends = CoordinatorToBackend.goodbye(goodbye).encode()
        let toClients = CoordinatorToClient.goodbye(goodbye).encode()
        for id in backendLinks.keys { send(toBackends, to: id) }
        for id in clients.keys { send(toClients, to: id) }
        if let timer = coreTimer?.id { transport.assumeIsolated { $0.cancel(timer) } }
        coreTimer = nil
        for runner in comfyRunners.values { runner.stop() }
        for local in locals.values { local.stop() }
    }

    // MARK: - Core plumbing

    /// Feeds one event to the core and performs what follows.
    func feed(_ event: CoreEvent) {
        guard isLeading else { return }
        perform(core.handle(event, at: now))
        pump()
    }

    /// Performs core actions in order.
    /// `afterPersisting` runs once the event's changes are appended to the store and before any
    /// other action: what it sends to a client waits for those changes, and comes first.
    func perform(_ actions: [CoreAction], afterPersisting: () -> Void = {}) {
        // A coordinator that stopped leading routes nothing more, whatever the core decided.
        guard isLeading else { return }
        if store != nil {
            // Every change of this event goes to the store first, so whatever a client is told
            // below waits for all of them (Daemon+Store).
            for case .persist(let change) in actions { persist(change) }
        }
        afterPersisting()
        for action in actions { perform(action) }
        armCoreTimer()
    }

    /// Feeds what local backends said back into the core until nothing is left.
    func pump() {
        guard !pumping, isLeading else { return }
        pumping = true
        defer { pumping = false }
        while let (id, message) = localInbox.popFirst() {
            backendMessage(message, from: id, connection: nil)
        }
        armCoreTimer()
    }

    private func perform(_ action: CoreAction) {
        switch action {
        case .assign(let job, let batch, let spec, let backend, let lease, let attempt):
            deliver(.assign(Self.assign(job, batch: batch, spec: spec, lease: lease, attempt: attempt)), to: backend)
        case .cancel(let job, let backend, let lease):
            deliver(.cancel(.init(job: job, lease: lease)), to: backend)
        case .revoke(let job, let backend, let lease):
            deliver(.revoke(.init(job: job, lease: lease)), to: backend)
        case .loadModel(let backend, let model):
            // A number of its own per request: the model's name could pass the id's 128 characters.
            loadRequests &+= 1
            deliver(.loadModel(.init(id: "lm-\(loadRequests)", model: model)), to: backend)
        case .sync(let backend, let held):
            deliver(.sync(.init(known: held)), to: backend)
        case .ackCapabilities(let backend, let version, let applied):
            deliver(.capabilitiesAck(.init(version: version, applied: applied)), to: backend)
        case .staleLease(let job, let backend, let lease, let about):
            deliver(.staleLease(.init(job: job, lease: lease, about: about)), to: backend)
        case .jobEvent(let event):
            publish(event)
        case .persist:
            break  // appended before the other actions
        case .forgetBackend(let id, let name):
            forgetBackend(id, name: name)
        case .readinessChanged(let r):
            logger.info(
                r.ready ? "ready" : "not ready",
                metadata: [
                    "ready.backends": "\(r.readyBackends)", "gate.held_jobs": "\(r.heldJobs)",
                    "gate.features": "\(r.waitingFeatures.joined(separator: ","))",
                    "gate.backends": "\(r.waitingBackends.map(\.description).joined(separator: ","))",
                    "reclaim.backends": "\(r.reclaim?.backends.map(\.description).joined(separator: ",") ?? "")",
                ])
        case .observe(let o):
            observe(o)
        }
    }

    /// Sends a message to a backend: over its link, or into a local pseudo-backend.
    func deliver(_ message: CoordinatorToBackend, to backend: BackendID) {
        if backend.isLocal {
            locals[backend]?.receive(message)
            return
        }
        guard let connection = linkOf[backend] else { return }
        send(message.encode(), to: connection)
    }

    func send(_ bytes: [UInt8], to connection: ConnectionID) {
        transport.assumeIsolated { t in
            bytes.withUnsafeBytes { _ = t.send(utf8: $0, to: connection) }
        }
    }

    /// Keeps one transport timer armed for the core's next deadline.
    func armCoreTimer() {
        guard !stopping else { return }
        let next = core.nextDeadline
        if let current = coreTimer, let next, current.at == next { return }
        let old = coreTimer?.id
        coreTimer = nil
        if let old { transport.assumeIsolated { $0.cancel(old) } }
        guard let next else { return }
        let current = now
        let delay = next > current ? next - current : .zero
        let id = transport.assumeIsolated { t in
            t.schedule(after: delay) { [weak self] _ in
                self?.assumeIsolated { d in
                    d.coreTimer = nil
                    d.feed(.tick)
                }
            }
        }
        coreTimer = (id, next)
    }
}

extension Daemon {
    /// The `assign` message for a job bound under `lease`: what a backend is sent, and what a
    /// local ComfyUI backend holds again for a prompt it takes back after a restart.
    static func assign(_ job: JobID, batch: BatchID, spec: JobSpec, lease: Lease, attempt: Int) -> CoordinatorToBackend.Assign {
        CoordinatorToBackend.Assign(
            job: job, lease: lease, batch: batch, attempt: attempt, kind: spec.kind, needs: spec.needs, model: spec.model,
            params: spec.params)
    }
}
