import Logging
import MusterProtocol
import MusterTransport

/// A client of a coordinator over `muster.client.v1`: submit batches, follow their jobs, cancel,
/// ask for status, load models.
///
/// ```swift
/// let options = MusterClient.Options(coordinator: "ws://127.0.0.1:7460")
/// let client = try await MusterClient.connect(options, logger: logger)
/// let accepted = try await client.submit(Wire.BatchRequest(jobs: [.init(kind: "image", count: 4)]))
/// try await client.subscribe(batch: accepted.batch)
/// for await event in client.events { ... }
/// await client.close()
/// ```
///
/// Like the daemon, the client is an actor whose executor is its transport's loop thread, so
/// link callbacks reach it without a hop. Requests carry an `id` and may be in flight in any
/// number, from any task; each is bounded by ``Options/requestTimeout``.
///
/// The client does not reconnect: the transport would dial again after a drop, but a new link has
/// no subscriptions and needs a new `hello`, so any close ends the client (``closeError`` says
/// why) and pending requests fail with ``MusterClientError/linkClosed``. Always end with
/// ``close()``.
public actor MusterClient {
    public nonisolated var unownedExecutor: UnownedSerialExecutor { transport.unownedExecutor }

    /// The transport carrying the link (owned by the client unless one was passed to `connect`).
    public nonisolated let transport: Transport
    /// Every `job` event of the subscriptions, in order. Finishes when the client closes.
    /// One consumer only (it is an `AsyncStream`). Empty when ``Options/onEvent`` takes the events.
    public nonisolated let events: AsyncStream<CoordinatorToClient.JobEvent>

    /// The coordinator's `welcome` (version, heartbeat, message limit).
    public private(set) var welcome: CoordinatorToClient.Welcome?
    /// Why the link ended, once it has; nil while it is up.
    public private(set) var closeError: MusterClientError?
    /// The `goodbye` the coordinator sent before closing, if any.
    public private(set) var goodbye: Wire.Goodbye?

    /// Requests sent and not yet answered.
    public var pendingRequests: Int { pending.count }

    nonisolated let options: Options
    /// The coordinator URL this client is linked to (with several, the one that took the link).
    public nonisolated let url: String
    nonisolated let logger: Logger
    private nonisolated let ownsTransport: Bool
    private nonisolated let limits: ProtocolLimits
    private let eventSink: AsyncStream<CoordinatorToClient.JobEvent>.Continuation

    private enum Phase { case connecting, ready, closed }
    private var phase = Phase.connecting
    private var link: ConnectionID?
    private var handshakeWaiter: CheckedContinuation<Result<CoordinatorToClient.Welcome, MusterClientError>, Never>?
    private var handshakeTimer: TimerID?
    /// An `error` received before `welcome`, reported with the close code that follows it.
    private var handshakeError: Wire.ErrorMessage?
    private var pending: [String: Pending] = [:]
    private var nextRequest: UInt64 = 0

    private struct Pending {
        var continuation: CheckedContinuation<Result<CoordinatorToClient, MusterClientError>, Never>
        var timer: TimerID?
        var type: String
    }

    private init(transport: Transport, ownsTransport: Bool, options: Options, url: String, logger: Logger) {
        self.transport = transport
        self.ownsTransport = ownsTransport
        self.options = options
        self.url = url
        self.logger = logger
        var limits = ProtocolLimits.default
        limits.maxMessageBytes = options.maxMessageBytes
        self.limits = limits
        (events, eventSink) = AsyncStream.makeStream(bufferingPolicy: .unbounded)
    }

    /// Dials the coordinator, sends `hello` and waits for `welcome`.
    ///
    /// Throws the coordinator's refusal with its close code (`bad_credentials` 4001,
    /// `no_common_version` 4002, `wrong_role` 4003), ``MusterClientError/connectionFailed`` when
    /// the coordinator cannot be reached, or ``MusterClientError/timeout`` after
    /// ``Options/connectTimeout``. With `transport`, the link shares that loop and ``close()``
    /// leaves it running; otherwise the client starts its own and shuts it down on ``close()``.
    ///
    /// With several coordinators (``Options/coordinator`` separated by commas) each is dialled in
    /// turn while the failure is transient; a standby's `not_leader` that names the leader sends
    /// the next dial there. The last failure is thrown when none took the link.
    public static func connect(
        _ options: Options, logger: Logger, transport: Transport? = nil
    ) async throws(MusterClientError) -> MusterClient {
        let urls = try options.webSocketURLs()
        var queue = urls[...]
        var redirects = 0
        var last: MusterClientError?
        var refused: MusterClientError?
        while let url = queue.popFirst() {
            do {
                return try await connect(options, url: url, logger: logger, transport: transport)
            } catch {
                guard urls.count > 1 || redirects > 0 || error.code == .notLeader, isTransient(error) else { throw error }
                last = error
                if error.code == .notLeader, refused == nil { refused = error }
                // Follow a standby to the leader it names, a bounded number of times (two
                // standbys naming each other while the lease moves must not loop).
                if error.code == .notLeader, redirects < 2 * urls.count,
                    let leader = Wire.NotLeader.leader(in: error.details), leader.address != url,
                    let next = try? Options.webSocketURL(leader.address)
                {
                    redirects += 1
                    logger.debug("following the leader", metadata: ["from": "\(url)", "to": "\(next)"])
                    queue.insert(next, at: queue.startIndex)
                }
            }
        }
        // A standby's refusal says most (where the leader is); what the leader's dial met is added.
        guard var error = refused else { throw last! }
        if let last, last != error { error.message += "; then \(last.message)" }
        throw error
    }

    /// Dials one coordinator URL, sends `hello` and waits for `welcome`.
    static func connect(
        _ options: Options, url: String, logger: Logger, transport: Transport?
    ) async throws(MusterClientError) -> MusterClient {
        let t: Transport
        if let transport {
            t = transport
        } else {
            var config = TransportConfiguration()
            config.maxMessageBytes = options.maxMessageBytes
            config.shutdownGrace = .seconds(1)
            do {
                t = try Transport(configuration: config, logger: logger)
            } catch {
                throw MusterClientError(
                    code: MusterClientError.connectionFailed, message: "cannot start the network loop: \(error)")
            }
        }
        let client = MusterClient(
            transport: t, ownsTransport: transport == nil, options: options, url: url, logger: logger)
        do {
            try await client.handshake()
        } catch {
            await client.close()
            throw error
        }
        return client
    }

    // MARK: - Requests

    /// Submits one batch; the answer lists its job ids in submission order.
    public func submit(_ batch: Wire.BatchRequest) async throws(MusterClientError) -> Wire.Accepted {
        let answer = try await request { .submit(.init(id: $0, batch: batch)) }
        guard case .accepted(let accepted) = answer else { throw unexpected(answer, wanted: "accepted") }
        return accepted
    }

    /// Follows one batch (or, with nil, every job): each job's current state arrives on
    /// ``events`` as a `snapshot`, then every transition. `only` names the events to receive
    /// (e.g. `[.snapshot, .completed, .failed, .canceled]` for each job's end alone); empty: all
    /// of them. `finishedSnapshots` limits the snapshots of jobs that had already ended to that
    /// many, those that ended last; the answer then counts the others by how they ended
    /// (Protocol/README.md 7.2), else nil. Subscriptions add up.
    @discardableResult
    public func subscribe(
        batch: BatchID?, only: [JobEventKind] = [], finishedSnapshots: Int? = nil
    ) async throws(MusterClientError) -> CoordinatorToClient.Subscribed.Ended? {
        let answer = try await request {
            .subscribe(.init(id: $0, batch: batch, events: only.map(\.rawValue), finishedSnapshots: finishedSnapshots))
        }
        guard case .subscribed(let subscribed) = answer else { throw unexpected(answer, wanted: "subscribed") }
        return subscribed.omitted
    }

    /// Cancels a job or every job of a batch; returns the jobs this request canceled (already
    /// final ones are not listed).
    public func cancel(_ target: ClientToCoordinator.Cancel.Target) async throws(MusterClientError) -> [JobID] {
        let answer = try await request { .cancel(.init(id: $0, target: target)) }
        guard case .canceled(let canceled) = answer else { throw unexpected(answer, wanted: "canceled") }
        return canceled.jobs
    }

    /// Readiness, backends and queue.
    public func status() async throws(MusterClientError) -> CoordinatorToClient.StatusReport {
        let answer = try await request { .status(.init(id: $0)) }
        guard case .statusReport(let report) = answer else { throw unexpected(answer, wanted: "status_report") }
        return report
    }

    /// Tells one backend, or every eligible one (and every one that joins later), to load `model`
    /// now; returns the backends told now.
    public func loadModel(_ model: String, backend: BackendID? = nil) async throws(MusterClientError)
        -> Wire.ModelsLoading
    {
        let answer = try await request { .loadModel(.init(id: $0, model: model, backend: backend)) }
        guard case .modelsLoading(let loading) = answer else { throw unexpected(answer, wanted: "models_loading") }
        return loading
    }

    /// Drains one backend: it takes no new jobs, finishes those it has and (a remote one) then
    /// leaves. Throws `unknown_backend` for an id the coordinator does not know.
    public func drain(backend: BackendID) async throws(MusterClientError) {
        let answer = try await request { .drain(.init(id: $0, backend: backend)) }
        guard case .draining = answer else { throw unexpected(answer, wanted: "draining") }
    }

    /// Closes the link with 1000, fails what is pending, finishes ``events`` and, when the client
    /// owns its transport, shuts it down. Idempotent.
    public nonisolated func close() async {
        await closeLink()
        // Nonisolated so that nothing runs on the loop's executor after its thread has stopped.
        if ownsTransport { await transport.shutdown() }
    }

    private func closeLink() {
        end(MusterClientError(code: MusterClientError.clientClosed, message: "the client was closed"))
        stopLink()
    }

    // MARK: - Handshake

    private func handshake() async throws(MusterClientError) {
        let result = await withCheckedContinuation { continuation in
            handshakeWaiter = continuation
            let dial = DialConfiguration(url: url, subprotocol: Subprotocol.client, tls: options.tls)
            do {
                link = try transport.assumeIsolated { t in try t.dial(dial, handler: handler()) }
            } catch {
                finishHandshake(
                    .failure(MusterClientError(code: MusterClientError.connectionFailed, message: "\(url): \(error)")))
                return
            }
            let timeout = options.connectTimeout
            handshakeTimer = after(timeout) { client in
                client.handshakeTimer = nil
                let refused = client.handshakeError.map { client.refusal($0, closeCode: nil) }
                client.failHandshake(
                    refused
                        ?? MusterClientError(
                            code: MusterClientError.timeout,
                            message:
                                "no welcome from \(client.url) within \(timeout); is a coordinator listening there?"))
            }
        }
        welcome = try result.get()
    }

    private nonisolated func handler() -> WebSocketHandler {
        WebSocketHandler(
            opened: { [weak self] _, info in self?.assumeIsolated { $0.opened(info.id) } },
            text: { [weak self] _, _, text in self?.assumeIsolated { $0.received(text) } },
            closed: { [weak self] _, event in self?.assumeIsolated { $0.closed(event) } },
            dialFailed: { [weak self] _, _, reason in self?.assumeIsolated { $0.dialFailed(reason) } })
    }

    private func opened(_ id: ConnectionID) {
        guard phase == .connecting else {
            // A link that opened after this client ended (a redial, or a dial that outlived the
            // connect timeout): nobody will use it.
            transport.assumeIsolated { $0.close(id, code: .normal, reason: "client done") }
            return
        }
        let hello = ClientToCoordinator.Hello(
            name: options.name, token: options.token ?? "", software: options.software)
        send(ClientToCoordinator.hello(hello).encode())
    }

    private func dialFailed(_ reason: String) {
        guard phase == .connecting else { return }
        failHandshake(
            MusterClientError(
                code: MusterClientError.connectionFailed,
                message: "cannot connect to \(url): \(reason); "
                    + (url.hasPrefix("wss://")
                        ? "is a coordinator listening there, and does it accept this client's certificate (or require one: --cert-file/--key-file)?"
                        : "is a coordinator listening there?")))
    }

    private func finishHandshake(_ result: Result<CoordinatorToClient.Welcome, MusterClientError>) {
        if let timer = handshakeTimer {
            handshakeTimer = nil
            transport.assumeIsolated { $0.cancel(timer) }
        }
        guard let waiter = handshakeWaiter else { return }
        handshakeWaiter = nil
        if case .success = result { phase = .ready }
        waiter.resume(returning: result)
    }

    private func failHandshake(_ error: MusterClientError) {
        guard phase == .connecting else { return }
        end(error)
        stopLink()
    }

    /// The refusal of a `hello`, with what to do about it.
    private func refusal(_ e: Wire.ErrorMessage, closeCode: UInt16?) -> MusterClientError {
        let closed = closeCode.map { " (close code \($0))" } ?? ""
        let hint: String
        switch e.code {
        case .badCredentials: hint = "; give the coordinator's client token (its auth.token, or a credential of auth.credentials)"
        case .forbidden: hint = "; this credential's role does not open a client link: use a client, operator or read credential"
        case .noCommonVersion: hint = "; this client speaks protocol version 1, upgrade the older side"
        case .wrongRole: hint = "; \(url) does not take clients on \(Subprotocol.client)"
        default: hint = ""
        }
        return MusterClientError(
            code: e.code, message: "\(url) refused the connection\(closed): \(e.message)\(hint)", details: e.details,
            closeCode: closeCode)
    }

    // MARK: - Messages in

    private func received(_ text: String) {
        let message: CoordinatorToClient
        do {
            message = try CoordinatorToClient.decode(text, limits: limits)
        } catch {
            logger.warning("undecodable message from the coordinator", metadata: ["error": "\(error)"])
            if let id = error.requestID {
                resolve(
                    id,
                    .failure(
                        MusterClientError(
                            code: MusterClientError.unexpectedAnswer,
                            message: "the coordinator's answer could not be read: \(error)")))
            }
            return
        }
        switch message {
        case .job(let event):
            if let onEvent = options.onEvent { onEvent(event) } else { eventSink.yield(event) }
        case .welcome(let w):
            finishHandshake(.success(w))
        case .error(let e):
            if phase == .connecting {
                // The refusals that close the link: report them with the close code that follows.
                if [.badCredentials, .noCommonVersion, .wrongRole, .notLeader].contains(e.code) {
                    handshakeError = e
                } else {
                    failHandshake(refusal(e, closeCode: nil))
                }
            } else if let id = e.id, pending[id] != nil {
                resolve(id, .failure(MusterClientError(code: e.code, message: e.message, details: e.details)))
            } else {
                logger.warning(
                    "error from the coordinator", metadata: ["code": "\(e.code)", "message": "\(e.message)"])
            }
        case .goodbye(let g):
            goodbye = g
        case .accepted(let m): answer(m.id, message)
        case .subscribed(let m): answer(m.id, message)
        case .canceled(let m): answer(m.id, message)
        case .statusReport(let m): answer(m.id, message)
        case .modelsLoading(let m): answer(m.id, message)
        case .draining(let m): answer(m.id, message)
        }
    }

    private func answer(_ id: String?, _ message: CoordinatorToClient) {
        guard let id, pending[id] != nil else {
            logger.debug("answer to no pending request", metadata: ["type": "\(message.type)"])
            return
        }
        resolve(id, .success(message))
    }

    private func closed(_ event: CloseEvent) {
        let code = event.code.rawValue
        switch phase {
        case .connecting:
            let error =
                (handshakeError ?? Self.impliedRefusal(code)).map { refusal($0, closeCode: code) }
                ?? MusterClientError(
                    code: MusterClientError.linkClosed,
                    message: "\(url) closed the link during the handshake (close code \(code)\(reasonText(event)))",
                    closeCode: code)
            failHandshake(error)
        case .ready:
            var message = "the coordinator closed the link (close code \(code)\(reasonText(event)))"
            if let goodbye {
                message += " after goodbye '\(goodbye.reason)'" + (goodbye.message.map { ": \($0)" } ?? "")
            } else if code == 1001 {
                message += ": it is stopping or restarting"
            }
            end(MusterClientError(code: MusterClientError.linkClosed, message: message, closeCode: code))
            stopLink()
        case .closed:
            break
        }
        // The transport forgets a link that will not reconnect.
        if !event.willReconnect, event.id == link { link = nil }
    }

    /// The refusal a handshake close code stands for. The coordinator sends the `error` first,
    /// but the close code alone must do when that message does not arrive.
    private static func impliedRefusal(_ code: UInt16) -> Wire.ErrorMessage? {
        switch code {
        case 4001: Wire.ErrorMessage(code: .badCredentials, message: "the token is missing or not accepted")
        case 4002: Wire.ErrorMessage(code: .noCommonVersion, message: "no common protocol version")
        case 4003: Wire.ErrorMessage(code: .wrongRole, message: "wrong role for this subprotocol")
        case 4007: Wire.ErrorMessage(code: .forbidden, message: "the credential may not open this link")
        case 4009: Wire.ErrorMessage(code: .tooManyLinks, message: "too many links from this address")
        case 4010: Wire.ErrorMessage(code: .notLeader, message: "this coordinator is a standby")
        default: nil
        }
    }

    private nonisolated func reasonText(_ event: CloseEvent) -> String {
        event.reason.isEmpty ? "" : ", reason '\(event.reason)'"
    }

    // MARK: - Plumbing

    private func request(_ make: (String) -> ClientToCoordinator) async throws(MusterClientError)
        -> CoordinatorToClient
    {
        if let closeError { throw closeError }
        nextRequest += 1
        let id = "r\(nextRequest)"
        let message = make(id)
        let result = await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let timer = options.requestTimeout.map { timeout in
                    after(timeout) { client in
                        client.pending[id]?.timer = nil
                        client.resolve(
                            id,
                            .failure(
                                MusterClientError(
                                    code: MusterClientError.timeout,
                                    message: "no answer to '\(message.type)' from \(client.url) within \(timeout)")))
                    }
                }
                pending[id] = Pending(continuation: continuation, timer: timer, type: message.type)
                if Task.isCancelled {
                    resolve(id, .failure(MusterClientError(code: MusterClientError.clientClosed, message: "cancelled")))
                    return
                }
                let sent = send(message.encode())
                if sent != .queued {
                    resolve(
                        id,
                        .failure(
                            MusterClientError(
                                code: MusterClientError.linkClosed,
                                message: "cannot send '\(message.type)' to \(url): \(sent)")))
                }
            }
        } onCancel: {
            Task {
                await self.resolve(
                    id, .failure(MusterClientError(code: MusterClientError.clientClosed, message: "cancelled")))
            }
        }
        return try result.get()
    }

    private func resolve(_ id: String, _ result: Result<CoordinatorToClient, MusterClientError>) {
        guard let p = pending.removeValue(forKey: id) else { return }
        if let timer = p.timer { transport.assumeIsolated { $0.cancel(timer) } }
        p.continuation.resume(returning: result)
    }

    private func unexpected(_ answer: CoordinatorToClient, wanted: String) -> MusterClientError {
        MusterClientError(
            code: MusterClientError.unexpectedAnswer, message: "expected '\(wanted)' from \(url), got '\(answer.type)'")
    }

    /// Ends the client once: records why, fails the handshake and every pending request, finishes
    /// the event stream.
    private func end(_ error: MusterClientError) {
        guard phase != .closed else { return }
        phase = .closed
        closeError = error
        finishHandshake(.failure(error))
        for id in Array(pending.keys) { resolve(id, .failure(error)) }
        eventSink.finish()
    }

    /// Closes the link so the transport stops redialling it.
    private func stopLink() {
        guard let link else { return }
        self.link = nil
        transport.assumeIsolated { $0.close(link, code: .normal, reason: "client done") }
    }

    @discardableResult
    private func send(_ bytes: [UInt8]) -> SendResult {
        guard let link else { return .unknownConnection }
        return transport.assumeIsolated { t in bytes.withUnsafeBytes { t.send(utf8: $0, to: link) } }
    }

    private func after(_ delay: Duration, _ body: @escaping @Sendable (isolated MusterClient) -> Void) -> TimerID {
        transport.assumeIsolated { t in
            t.schedule(after: delay) { [weak self] _ in self?.assumeIsolated { body($0) } }
        }
    }
}
