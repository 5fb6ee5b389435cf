import CLibWebSockets

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// What an HTTP client request hands its caller, on the loop.
public typealias HTTPClientCompletion = @Sendable (isolated Transport, Result<HTTPClientResponse, HTTPClientError>)
    -> Void

extension Transport {
    /// Sends one HTTP/1.1 request on its own connection and reports the complete response (any
    /// status) or why there is none. The completion runs exactly once, on the loop thread,
    /// isolated to the transport (like ``WebSocketHandler`` callbacks), never inside this call:
    /// after the response, an error, ``HTTPClientRequest/timeout`` (which closes the connection),
    /// or ``shutdown()`` (which fails every request in flight with
    /// ``HTTPClientError/Code/shutdown``). Redirects are returned, not followed.
    public func request(_ request: HTTPClientRequest, completion: @escaping HTTPClientCompletion) {
        func failSoon(_ code: HTTPClientError.Code, _ message: String) {
            let error = HTTPClientError(code: code, message: message)
            Task { completion(self, .failure(error)) }
        }
        guard let context, !shuttingDown else {
            return failSoon(.shutdown, "\(request.method) \(request.url): transport is shut down")
        }
        let url: HTTPURL
        do {
            url = try parseHTTPURL(request.url)
            try validateHTTPClientRequest(request)
        } catch {
            return failSoon(error.code, error.message)
        }
        let vhost: OpaquePointer
        do {
            vhost = try clientVhost(for: url.secure ? request.tls : nil)
        } catch {
            return failSoon(.badRequest, "\(request.url): \(error.message)")
        }
        let id = httpClient.nextID
        httpClient.nextID += 1
        let exchange = HTTPClientExchange(
            id: id, request: request, url: url, deadline: .now + request.timeout, completion: completion)
        httpClient.exchanges[id] = exchange
        armHTTPClientTimer(exchange)

        var info = lws_client_connect_info()
        info.context = context
        info.vhost = vhost
        info.port = url.port
        info.address = UnsafePointer(exchange.cAddress)
        info.host = UnsafePointer(exchange.cHost)
        info.path = UnsafePointer(exchange.cPath)
        info.method = UnsafePointer(exchange.cMethod)
        info.alpn = UnsafePointer(exchange.cALPN)
        info.local_protocol_name = UnsafePointer(httpClient.protocolName)
        info.opaque_user_data = Unmanaged.passUnretained(exchange).toOpaque()
        var flags = Int32(LCCSCF_HTTP_NO_FOLLOW_REDIRECT.rawValue)
        if url.secure {
            flags |= Int32(LCCSCF_USE_SSL.rawValue)
            if request.tls?.allowSelfSigned == true {
                flags |= Int32(LCCSCF_ALLOW_SELFSIGNED.rawValue | LCCSCF_SKIP_SERVER_CERT_HOSTNAME_CHECK.rawValue)
            }
        }
        info.ssl_connection = flags
        exchange.starting = true
        let wsi = lws_client_connect_via_info(&info)
        exchange.starting = false
        guard exchange.completion != nil else { return }  // failed inside the call, reported soon
        guard let wsi else {
            exchange.starting = true  // still inside `request`: report on a later loop turn
            finish(exchange, .failure(.init(code: .connectFailed, message: "\(request.url): lws could not start")))
            return
        }
        exchange.wsi = wsi
    }

    /// Sends one HTTP/1.1 request from any context; see ``request(_:completion:)``. Cancelling
    /// the calling task does not cancel the request: it ends by its own timeout at the latest.
    public nonisolated func request(_ request: HTTPClientRequest) async -> Result<HTTPClientResponse, HTTPClientError> {
        await performRequest(request)
    }

    private func performRequest(_ request: HTTPClientRequest) async -> Result<HTTPClientResponse, HTTPClientError> {
        await withCheckedContinuation { (c: CheckedContinuation<Result<HTTPClientResponse, HTTPClientError>, Never>) in
            self.request(request) { _, result in c.resume(returning: result) }
        }
    }

    /// Number of HTTP client requests in flight.
    public var httpClientRequestsInFlight: Int { httpClient.exchanges.count }

    // MARK: - Completion and timeout

    /// Completes `exchange` once: detaches it from its connection, closes the connection when
    /// `close` (never from inside a callback of that connection: those return -1 instead) and
    /// calls the completion.
    func finish(
        _ exchange: HTTPClientExchange, _ result: Result<HTTPClientResponse, HTTPClientError>, close: Bool = false
    ) {
        guard let completion = exchange.completion else { return }
        exchange.completion = nil
        if let timer = exchange.timer {
            cancel(timer)
            exchange.timer = nil
        }
        httpClient.exchanges.removeValue(forKey: exchange.id)
        if let wsi = exchange.wsi {
            exchange.wsi = nil
            lws_set_opaque_user_data(wsi, nil)
            // Callbacks of the closing connection run inside this call and find no exchange.
            if close { clws_kill_now(wsi) }
        }
        if case .failure(let error) = result {
            logger.debug(
                "http client request failed",
                metadata: [
                    "http.method": "\(exchange.request.method)", "url": "\(exchange.request.url)",
                    "error": "\(error)",
                ])
        }
        if exchange.starting {
            Task { completion(self, result) }
        } else {
            completion(self, result)
        }
    }

    /// The request's timer fires at its deadline, and before it every half handshake timeout to
    /// push lws' own per-state timeouts (the handshake timeout, armed afresh at each step of a
    /// client connection) past the deadline. One lws timer cannot be moved: the TCP connect alone
    /// fails after the handshake timeout ("Unable to connect", reported as connectFailed).
    private func armHTTPClientTimer(_ exchange: HTTPClientExchange) {
        let now = ContinuousClock.now
        let refresh = max(.milliseconds(500), configuration.handshakeTimeout / 2)
        let next = min(exchange.deadline, now + refresh)
        let id = exchange.id
        exchange.timer = schedule(after: max(.microseconds(1), next - now)) { t in t.httpClientTick(id) }
    }

    private func httpClientTick(_ id: UInt64) {
        guard let exchange = httpClient.exchanges[id] else { return }
        exchange.timer = nil
        let now = ContinuousClock.now
        if now >= exchange.deadline {
            let phase =
                exchange.headReceived
                ? "got \(exchange.body.count) body bytes" : exchange.requestSent ? "no response head" : "not connected"
            finish(
                exchange,
                .failure(
                    .init(
                        code: .timeout,
                        message: "\(exchange.request.method) \(exchange.request.url): no complete response within "
                            + "\(exchange.request.timeout) (\(phase))")),
                close: true)
            return
        }
        if let wsi = exchange.wsi {
            lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, Int32((exchange.deadline - now).lwsSeconds) + 1)
        }
        armHTTPClientTimer(exchange)
    }

    /// Fails every request in flight: the transport is going away.
    func failHTTPClientRequestsForShutdown() {
        for exchange in httpClient.exchanges.values.sorted(by: { $0.id < $1.id }) {
            finish(
                exchange,
                .failure(
                    .init(
                        code: .shutdown,
                        message: "\(exchange.request.method) \(exchange.request.url): transport shutting down")),
                close: true)
        }
    }

    // MARK: - lws callbacks of the HTTP client protocol

    func handleHTTPClient(
        _ wsi: OpaquePointer, _ reason: lws_callback_reasons, _ input: UnsafeMutableRawPointer?, _ len: Int
    ) -> Int32 {
        guard let p = lws_get_opaque_user_data(wsi) else {
            // A connection whose request already completed: close it if lws asks about it.
            switch reason {
            case LWS_CALLBACK_ESTABLISHED_CLIENT_HTTP, LWS_CALLBACK_RECEIVE_CLIENT_HTTP,
                LWS_CALLBACK_RECEIVE_CLIENT_HTTP_READ, LWS_CALLBACK_COMPLETED_CLIENT_HTTP,
                LWS_CALLBACK_CLIENT_HTTP_WRITEABLE:
                return -1
            default:
                return 0
            }
        }
        let exchange = Unmanaged<HTTPClientExchange>.fromOpaque(p).takeUnretainedValue()
        exchange.wsi = wsi
        switch reason {
        case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER:
            guard let input else { return 0 }
            return appendRequestHeaders(exchange, wsi, input, len)
        case LWS_CALLBACK_CLIENT_HTTP_WRITEABLE:
            return writeRequestBody(exchange, wsi)
        case LWS_CALLBACK_ESTABLISHED_CLIENT_HTTP:
            return responseHead(exchange, wsi)
        case LWS_CALLBACK_RECEIVE_CLIENT_HTTP:
            let room = httpClient.readBufferSize
            var buffer: UnsafeMutablePointer<CChar>? = httpClient.readBuffer + lwsPre
            var n = Int32(room)
            // Calls back RECEIVE_CLIENT_HTTP_READ per chunk, and COMPLETED_CLIENT_HTTP at the end.
            return lws_http_client_read(wsi, &buffer, &n) < 0 ? -1 : 0
        case LWS_CALLBACK_RECEIVE_CLIENT_HTTP_READ:
            if let input, len > 0 {
                if exchange.body.count + len > exchange.request.maxResponseBytes {
                    finish(exchange, .failure(tooLarge(exchange)))
                    return -1
                }
                exchange.body.append(contentsOf: UnsafeRawBufferPointer(start: input, count: len))
            }
            return 0
        case LWS_CALLBACK_COMPLETED_CLIENT_HTTP:
            finish(exchange, .success(response(of: exchange)))
            return -1  // no pooling: close now rather than idle
        case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
            let why = input.map { String(cString: $0.assumingMemoryBound(to: CChar.self)) } ?? "unknown"
            let code: HTTPClientError.Code = exchange.requestSent ? .protocolError : .connectFailed
            let what = exchange.failureHint ?? why
            finish(
                exchange,
                .failure(
                    .init(
                        code: exchange.failureHint == nil ? code : .badRequest,
                        message: "\(exchange.request.method) \(exchange.request.url): \(what)")))
            return 0
        case LWS_CALLBACK_CLOSED_CLIENT_HTTP, LWS_CALLBACK_WSI_DESTROY:
            connectionEnded(exchange)
            return 0
        default:
            return 0
        }
    }

    private func appendRequestHeaders(
        _ exchange: HTTPClientExchange, _ wsi: OpaquePointer, _ input: UnsafeMutableRawPointer, _ len: Int
    ) -> Int32 {
        let request = exchange.request
        var headers = request.headers.filter {
            let n = $0.name.lowercased()
            return n != "host" && n != "content-length"
        }
        let method = request.method.rawValue.uppercased()
        if !request.body.isEmpty || (method != "GET" && method != "HEAD" && method != "DELETE") {
            headers.append(("content-length", String(request.body.count)))
        }
        for (name, value) in headers {
            let rc = (name + ":").withCString { np in
                value.withCString { vp in clws_append_header(wsi, input, len, np, vp, Int32(strlen(vp))) }
            }
            if rc != 0 {
                exchange.failureHint = "request headers do not fit lws' buffer (\(len) bytes left at \(name))"
                return -1
            }
        }
        exchange.requestSent = true
        if !request.body.isEmpty {
            lws_client_http_body_pending(wsi, 1)
            lws_callback_on_writable(wsi)
        }
        return 0
    }

    private func writeRequestBody(_ exchange: HTTPClientExchange, _ wsi: OpaquePointer) -> Int32 {
        let body = exchange.request.body
        guard exchange.bodySent < body.count else { return 0 }
        let n = min(body.count - exchange.bodySent, httpClientWriteChunk)
        let last = exchange.bodySent + n == body.count
        var frame = [UInt8](repeating: 0, count: lwsPre + n)
        frame.withUnsafeMutableBufferPointer { dst in
            body.withUnsafeBufferPointer { src in
                UnsafeMutableRawPointer(dst.baseAddress! + lwsPre).copyMemory(
                    from: src.baseAddress! + exchange.bodySent, byteCount: n)
            }
        }
        let written = frame.withUnsafeMutableBufferPointer {
            lws_write(wsi, $0.baseAddress! + lwsPre, n, last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP)
        }
        if written < 0 { return -1 }
        exchange.bodySent += n
        if last {
            lws_client_http_body_pending(wsi, 0)
        } else {
            lws_callback_on_writable(wsi)
        }
        return 0
    }

    private func responseHead(_ exchange: HTTPClientExchange, _ wsi: OpaquePointer) -> Int32 {
        exchange.headReceived = true
        exchange.status = Int(lws_http_client_http_response(wsi))
        exchange.headers = responseHeaders(wsi)
        let head = response(of: exchange)
        exchange.chunked = head.header("transfer-encoding")?.lowercased().contains("chunked") == true
        if !exchange.chunked, let text = head.header("content-length") {
            guard let length = Int(text.trimmingSpaces), length >= 0 else {
                finish(
                    exchange,
                    .failure(
                        .init(
                            code: .protocolError,
                            message: "\(exchange.request.url): bad content-length \"\(text)\" in the response")))
                return -1
            }
            exchange.expectedLength = length
        }
        // Responses without a body end with their head: lws would otherwise wait for one (a
        // keep-alive server sends nothing more, so only the timeout would end the request).
        let s = exchange.status
        if exchange.request.method == .head || (100..<200).contains(s) || s == 204 || s == 304
            || (exchange.expectedLength == 0)
        {
            finish(exchange, .success(head))
            return -1
        }
        if let length = exchange.expectedLength, length > exchange.request.maxResponseBytes {
            finish(exchange, .failure(tooLarge(exchange)))
            return -1
        }
        return 0
    }

    /// The connection closed before COMPLETED_CLIENT_HTTP: a body delimited by the close (no
    /// length, not chunked) is complete; anything else is cut short.
    private func connectionEnded(_ exchange: HTTPClientExchange) {
        let request = exchange.request
        if exchange.headReceived, !exchange.chunked, exchange.expectedLength == nil {
            finish(exchange, .success(response(of: exchange)))
            return
        }
        let message: String
        if exchange.headReceived {
            let expected = exchange.expectedLength.map { " of \($0)" } ?? (exchange.chunked ? " (chunked)" : "")
            message = "connection closed after \(exchange.body.count)\(expected) body bytes"
        } else {
            message = "connection closed before a response"
        }
        finish(
            exchange,
            .failure(
                .init(
                    code: exchange.requestSent ? .protocolError : .connectFailed,
                    message: "\(request.method) \(request.url): \(message)")))
    }

    private func response(of exchange: HTTPClientExchange) -> HTTPClientResponse {
        HTTPClientResponse(status: exchange.status, headers: exchange.headers, body: exchange.body)
    }

    private func tooLarge(_ exchange: HTTPClientExchange) -> HTTPClientError {
        let announced = exchange.expectedLength.map { " (content-length \($0))" } ?? ""
        return HTTPClientError(
            code: .responseTooLarge,
            message:
                "\(exchange.request.method) \(exchange.request.url): response body over \(exchange.request.maxResponseBytes) bytes\(announced)"
        )
    }

    /// Every response header lws parsed into one of its known tokens; lws 4.1 cannot enumerate
    /// the others.
    private func responseHeaders(_ wsi: OpaquePointer) -> [(name: String, value: String)] {
        var out: [(name: String, value: String)] = []
        for raw in 0..<WSI_TOKEN_COUNT.rawValue {
            let token = lws_token_indexes(rawValue: raw)
            let length = Int(lws_hdr_total_length(wsi, token))
            guard length > 0, let namePointer = lws_token_to_string(token) else { continue }
            let name = String(cString: namePointer)
            // Request lines and HTTP/2 pseudo-headers share the token table; headers end in ':'.
            guard name.hasSuffix(":"), !name.hasPrefix(":") else { continue }
            var value = [CChar](repeating: 0, count: length + 1)
            guard lws_hdr_copy(wsi, &value, Int32(length + 1), token) >= 0 else { continue }
            let text = value.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            out.append((String(name.dropLast()).lowercased(), text))
        }
        return out
    }
}

/// Most request body bytes one `lws_write` carries; lws buffers what the socket does not take.
let httpClientWriteChunk = 64 << 10

/// The one lws callback of the HTTP client protocol (``HTTPClientState/protocolName``): lws calls
/// it on the loop thread for connections made by ``Transport/request(_:completion:)`` only, so
/// the WebSocket paths never see them.
func httpClientCallback(
    _ wsi: OpaquePointer?, _ reason: lws_callback_reasons, _ user: UnsafeMutableRawPointer?,
    _ input: UnsafeMutableRawPointer?, _ len: Int
) -> Int32 {
    guard let wsi, let ctx = lws_get_context(wsi), let owner = lws_context_user(ctx) else { return 0 }
    let transport = Unmanaged<Transport>.fromOpaque(owner).takeUnretainedValue()
    let args = HTTPClientCallbackArguments(wsi: wsi, input: input)
    return transport.assumeIsolated { $0.handleHTTPClient(args.wsi, reason, args.input, len) }
}

/// The raw pointers of one callback, carried into the isolated closure.
private struct HTTPClientCallbackArguments: @unchecked Sendable {
    // @unchecked Sendable: built and consumed on the loop thread inside one lws callback;
    // `assumeIsolated` runs the closure synchronously, so the pointers never cross threads.
    let wsi: OpaquePointer
    let input: UnsafeMutableRawPointer?
}

/// Loop-side state of the HTTP client (only touched on the loop thread).
final class HTTPClientState {
    var exchanges: [UInt64: HTTPClientExchange] = [:]
    var nextID: UInt64 = 1
    /// The lws protocol HTTP client connections bind to (index 1 of every client vhost).
    let protocolName: UnsafeMutablePointer<CChar> = strdup("muster-http-client")!
    /// Where `lws_http_client_read` puts received bytes (LWS_PRE headroom first); the loop reads
    /// one connection at a time.
    let readBufferSize = 64 << 10
    let readBuffer: UnsafeMutablePointer<CChar>

    init() {
        readBuffer = UnsafeMutablePointer<CChar>.allocate(capacity: lwsPre + readBufferSize)
    }

    deinit {
        free(protocolName)
        readBuffer.deallocate()
    }
}

/// One request in flight. The connection's opaque user data points here (unretained; the
/// transport's table holds it) until the request completes.
final class HTTPClientExchange {
    let id: UInt64
    let request: HTTPClientRequest
    let url: HTTPURL
    let deadline: ContinuousClock.Instant
    /// Present until the request completes: taking it is what makes completion exactly-once.
    var completion: HTTPClientCompletion?
    var wsi: OpaquePointer?
    var timer: TimerID?
    /// Inside `request(_:completion:)`: a completion now must wait for a later loop turn.
    var starting = false
    /// The request head is being written: failures from here on are the server's.
    var requestSent = false
    var bodySent = 0
    /// Set when this side made lws drop the connection, to explain the CONNECTION_ERROR.
    var failureHint: String?
    var headReceived = false
    var status = 0
    var headers: [(name: String, value: String)] = []
    var body: [UInt8] = []
    var expectedLength: Int?
    var chunked = false
    // C copies for lws_client_connect_info.
    let cAddress: UnsafeMutablePointer<CChar>
    let cHost: UnsafeMutablePointer<CChar>
    let cPath: UnsafeMutablePointer<CChar>
    let cMethod: UnsafeMutablePointer<CChar>
    let cALPN: UnsafeMutablePointer<CChar>

    init(
        id: UInt64, request: HTTPClientRequest, url: HTTPURL, deadline: ContinuousClock.Instant,
        completion: @escaping HTTPClientCompletion
    ) {
        self.id = id
        self.request = request
        self.url = url
        self.deadline = deadline
        self.completion = completion
        cAddress = strdup(url.host)!
        cHost = strdup(url.hostHeader)!
        cPath = strdup(url.path)!
        cMethod = strdup(request.method.rawValue)!
        cALPN = strdup("http/1.1")!
    }

    deinit {
        free(cAddress)
        free(cHost)
        free(cPath)
        free(cMethod)
        free(cALPN)
    }
}
