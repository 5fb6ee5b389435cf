import CLibWebSockets

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

extension Transport {
    /// Answers a request whose handler returned ``HTTPOutcome/deferred``. Returns false when the
    /// client has gone away (or the request was already answered).
    @discardableResult
    public func respond(to request: HTTPRequestID, with response: HTTPResponse) -> Bool {
        guard let k = deferredHTTP.removeValue(forKey: request), let exchange = httpExchanges[k],
            exchange.response == nil, let wsi = exchange.wsi
        else { return false }
        exchange.response = response
        lws_callback_on_writable(wsi)
        return true
    }

    func httpRequest(_ wsi: OpaquePointer, _ input: UnsafeMutableRawPointer?) -> Int32 {
        guard let (listener, _) = listener(of: wsi) else { return -1 }
        let methods: [(HTTPMethod, lws_token_indexes)] = [
            (.get, WSI_TOKEN_GET_URI), (.post, WSI_TOKEN_POST_URI), (.put, WSI_TOKEN_PUT_URI),
            (.patch, WSI_TOKEN_PATCH_URI), (.delete, WSI_TOKEN_DELETE_URI), (.options, WSI_TOKEN_OPTIONS_URI),
            (.head, WSI_TOKEN_HEAD_URI),
        ]
        let method = methods.first { lws_hdr_total_length(wsi, $0.1) > 0 }?.0 ?? HTTPMethod("UNKNOWN")
        let path = input.map { String(cString: $0.assumingMemoryBound(to: CChar.self)) } ?? "/"
        let id = HTTPRequestID(rawValue: nextHTTP)
        nextHTTP += 1
        counters.httpRequests += 1
        let request = HTTPRequest(
            id: id, method: method, path: path, query: header(wsi, WSI_TOKEN_HTTP_URI_ARGS) ?? "",
            headers: capturedHeaders(wsi, listener.configuration.capturedHeaders), body: [], peer: peerAddress(wsi),
            peerCertificateName: peerCertificateName(wsi))
        if header(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) != nil {
            // lws 4.1 does not decode a chunked request body: it would reach the route empty and
            // the chunks be read as the next request. Refused (411) and the connection closed,
            // answered here, synchronously: lws closes the connection once this returns.
            let message = "a request body needs Content-Length; Transfer-Encoding is not supported"
            _ = writeWholeResponse(listener.configuration.http.errorResponse(411, message), wsi)
            return -1
        }
        let declared = header(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH)
        if let declared, !Self.isContentLength(declared) {
            // lws 4.1 reads an unparsable length ("abc", "-5") as 0, and two headers, or "27, 27",
            // as the first: the body would be parsed as the next request (smuggled past this
            // one's checks). Refused (400) and the connection closed (RFC 9112 6.3).
            let message = "Content-Length '\(declared)' is not one length in decimal digits"
            _ = writeWholeResponse(listener.configuration.http.errorResponse(400, message), wsi)
            return -1
        }
        let length = declared.flatMap { Int($0.trimmingSpaces) } ?? 0
        let exchange = HTTPExchange(request: request, expectedBody: length)
        exchange.wsi = wsi
        if declared == nil, [HTTPMethod.post, .put, .patch].contains(method) {
            // No length and no chunks: the body is empty (RFC 9112 6.3), but lws 4.1 waits for
            // one until its 10 s timeout, answering nothing more on the connection meanwhile.
            // Answered at once and closed instead.
            exchange.closeAfter = true
        }
        httpExchanges[key(wsi)] = exchange
        if length > listener.configuration.maxRequestBodyBytes {
            reject413(exchange, wsi, listener.configuration.maxRequestBodyBytes)
            return 0
        }
        if length > 0 { return 0 }  // the body follows in LWS_CALLBACK_HTTP_BODY
        dispatch(exchange, wsi, listener)
        return 0
    }

    func httpBody(_ wsi: OpaquePointer, _ input: UnsafeMutableRawPointer?, _ len: Int) -> Int32 {
        guard let exchange = httpExchanges[key(wsi)], let (listener, _) = listener(of: wsi) else { return -1 }
        if exchange.rejected {
            exchange.drained += len
            // A body far past the limit is not worth reading: close (a reset) instead.
            return exchange.drained > Self.drainLimit(listener.configuration.maxRequestBodyBytes) ? -1 : 0
        }
        if exchange.request.body.count + len > listener.configuration.maxRequestBodyBytes {
            reject413(exchange, wsi, listener.configuration.maxRequestBodyBytes)
            return 0
        }
        if let input, len > 0 {
            exchange.request.body.append(contentsOf: UnsafeRawBufferPointer(start: input, count: len))
        }
        return 0
    }

    func httpBodyComplete(_ wsi: OpaquePointer) -> Int32 {
        guard let exchange = httpExchanges[key(wsi)], let (listener, _) = listener(of: wsi) else { return -1 }
        if exchange.bodyComplete, exchange.dispatched, !exchange.rejected {
            return repeatedBodyCompletion(exchange, wsi)
        }
        exchange.bodyComplete = true
        if exchange.rejected {
            // Answered already: every byte is read, so the close is a clean one. Not yet: the
            // answer is written and the connection closed when it is writable.
            return exchange.draining ? -1 : 0
        }
        dispatch(exchange, wsi, listener)
        return 0
    }

    /// lws 4.1 reports the end of a body again on every pass of its loop when another request
    /// was pipelined behind it (already in lws's input buffer): it feeds that buffer back while
    /// still in this request's body state, consumes nothing, and never gets to the connection's
    /// writable callback. The loop spun at full CPU and the answer was never written. So the
    /// answer is written here, as soon as it is ready (an answer the routes give later arrives
    /// on a later pass), and the connection closed after it. An answer still missing after
    /// `maxCompletionRepeats` passes closes the connection.
    private func repeatedBodyCompletion(_ exchange: HTTPExchange, _ wsi: OpaquePointer) -> Int32 {
        guard let response = exchange.response else {
            exchange.completionRepeats += 1
            return exchange.completionRepeats > Self.maxCompletionRepeats ? -1 : 0
        }
        httpExchanges.removeValue(forKey: key(wsi))
        // lws cannot go on to the pipelined request from here (completing the transaction left
        // it spinning the same way): the answer says `Connection: close` and the connection
        // closes. A client that pipelines retries what was not answered (RFC 9112 9.3.2).
        _ = writeWholeResponse(response, wsi, headOnly: exchange.request.method == .head)
        return -1
    }

    /// Loop passes a pipelined request waits behind an answer not yet given (see
    /// `repeatedBodyCompletion`): about a second on an idle loop.
    static let maxCompletionRepeats = 200_000

    /// How much of a rejected body is read and thrown away before the connection is closed:
    /// enough for a client that sent a little too much to read its 413 (see `draining`).
    static func drainLimit(_ maxRequestBodyBytes: Int) -> Int { max(maxRequestBodyBytes, 1 << 20) * 16 }

    /// How long a rejected body may take to arrive after the answer before the connection is closed.
    static let drainSeconds: Int32 = 10

    private func reject413(_ exchange: HTTPExchange, _ wsi: OpaquePointer, _ limit: Int) {
        exchange.rejected = true
        exchange.closeAfter = true
        exchange.request.body = []
        let message = "request body larger than \(limit) bytes"
        exchange.response = listener(of: wsi)?.0.configuration.http.errorResponse(413, message) ?? .error(413, message)
        lws_callback_on_writable(wsi)
    }

    private func dispatch(_ exchange: HTTPExchange, _ wsi: OpaquePointer, _ listener: ListenerState) {
        guard !exchange.dispatched else { return }
        exchange.dispatched = true
        counters.bytesIn += exchange.request.body.count
        switch listener.configuration.http.route(self, exchange.request) {
        case .respond(let response):
            exchange.response = response
            lws_callback_on_writable(wsi)
        case .deferred:
            deferredHTTP[exchange.request.id] = key(wsi)
        }
    }

    /// A WebSocket upgrade offering none of the listener's subprotocols (or none at all, without a
    /// default handler) gets an HTTP 400 in the layer above's error shape instead of the dropped
    /// connection lws would leave. When several are offered lws takes the first one listed that
    /// the listener knows, so those pass.
    func confirmUpgrade(_ wsi: OpaquePointer, _ input: UnsafeMutableRawPointer?) -> Int32 {
        guard let (listener, _) = listener(of: wsi) else { return 0 }
        let upgrade = input.map { String(cString: $0.assumingMemoryBound(to: CChar.self)) } ?? ""
        guard upgrade.lowercased() == "websocket" else { return 0 }
        // RFC 6455 4.4: version 13 is the protocol; lws 4.1 also takes the drafts' 7 and 8.
        let version = header(wsi, WSI_TOKEN_VERSION)?.trimmingSpaces ?? ""
        if version != "13" {
            let asked = version.isEmpty ? "gives no WebSocket version" : "asks for WebSocket version \(version)"
            var response = listener.configuration.http.errorResponse(
                426, "the upgrade \(asked); this server speaks version 13 (RFC 6455)")
            response.headers.append(("sec-websocket-version", "13"))
            return refuseUpgrade(response, wsi)
        }
        let offered = (header(wsi, WSI_TOKEN_PROTOCOL) ?? "").split(separator: ",").map { String($0).trimmingSpaces }
            .filter { !$0.isEmpty }
        let known = listener.configuration.subprotocols.map(\.name)
        if offered.isEmpty && listener.configuration.defaultWebSocket != nil { return 0 }
        if offered.contains(where: known.contains) { return 0 }
        let message =
            offered.isEmpty
            ? "the upgrade offers no subprotocol; offer one of \(known.joined(separator: ", ")) in Sec-WebSocket-Protocol"
            : "the upgrade offers \(offered.joined(separator: ", ")); this server speaks \(known.joined(separator: ", "))"
        return refuseUpgrade(listener.configuration.http.errorResponse(400, message), wsi)
    }

    /// Refuses a WebSocket upgrade with `response`, counted, written here synchronously (during
    /// the upgrade's callbacks, before lws answers 101); the value for lws: > 0 says the answer
    /// is sent and the connection closes, -1 that it could not be written.
    func refuseUpgrade(_ response: HTTPResponse, _ wsi: OpaquePointer) -> Int32 {
        handshakeEnded(key(wsi))
        counters.upgradesRefused += 1
        return writeWholeResponse(response, wsi) ? 1 : -1
    }

    /// Writes `response` as raw HTTP/1.1 bytes, head and body in one write, with `Connection:
    /// close`, for an answer after which the caller has lws close the connection at once. An
    /// upgrade is refused before lws parsed the request as plain HTTP: lws's header helpers would
    /// then write an `HTTP/1.0` status line, since it has not recorded the version. `headOnly`:
    /// the head alone, for `HEAD` (its content-length that of the body not sent).
    private func writeWholeResponse(_ response: HTTPResponse, _ wsi: OpaquePointer, headOnly: Bool = false) -> Bool {
        var head = "HTTP/1.1 \(response.status) \(Self.reason(response.status))\r\n"
        head += "content-type: \(response.contentType)\r\ncontent-length: \(response.body.count)\r\n"
        for h in response.headers where h.name.lowercased() != "connection" { head += "\(h.name.lowercased()): \(h.value)\r\n" }
        head += "connection: close\r\n\r\n"
        var bytes = [UInt8](repeating: 0, count: lwsPre) + Array(head.utf8) + (headOnly ? [] : response.body)
        let n = bytes.count - lwsPre
        let w = bytes.withUnsafeMutableBufferPointer { lws_write(wsi, $0.baseAddress! + lwsPre, n, LWS_WRITE_HTTP_HEADERS) }
        if w < 0 { return false }
        if !headOnly { counters.bytesOut += response.body.count }
        return true
    }

    /// One `Content-Length`: 1 to 18 decimal digits, spaces around them allowed. lws joins
    /// repeated headers with commas, so two of them fail too.
    static func isContentLength(_ text: String) -> Bool {
        let digits = text.trimmingSpaces
        return !digits.isEmpty && digits.utf8.count <= 18 && digits.utf8.allSatisfy { $0 >= 0x30 && $0 <= 0x39 }
    }

    /// The reason phrase of a status (RFC 9110 section 15), on every status line the transport
    /// writes: whole responses, and those lws writes, whose phrase it replaces (lws 4.1 has none
    /// for 201, 422, 429, ...). Empty for any other (a status line may have none).
    static func reason(_ status: Int) -> String {
        switch status {
        case 200: "OK"
        case 201: "Created"
        case 202: "Accepted"
        case 204: "No Content"
        case 304: "Not Modified"
        case 400: "Bad Request"
        case 401: "Unauthorized"
        case 403: "Forbidden"
        case 404: "Not Found"
        case 405: "Method Not Allowed"
        case 406: "Not Acceptable"
        case 408: "Request Timeout"
        case 409: "Conflict"
        case 410: "Gone"
        case 411: "Length Required"
        case 413: "Content Too Large"
        case 414: "URI Too Long"
        case 415: "Unsupported Media Type"
        case 422: "Unprocessable Content"
        case 426: "Upgrade Required"
        case 429: "Too Many Requests"
        case 431: "Request Header Fields Too Large"
        case 500: "Internal Server Error"
        case 501: "Not Implemented"
        case 502: "Bad Gateway"
        case 503: "Service Unavailable"
        case 504: "Gateway Timeout"
        default: ""
        }
    }

    func httpWritable(_ wsi: OpaquePointer) -> Int32 {
        guard let exchange = httpExchanges[key(wsi)], var response = exchange.response else { return 0 }
        let headOnly = exchange.request.method == .head
        if headOnly {
            // The head alone (RFC 9110 9.3.2), its content-length that of the body not sent; the
            // connection then closes, as lws would otherwise wait to send that body.
            exchange.closeAfter = true
        }
        if exchange.closeAfter, !response.headers.contains(where: { $0.name.lowercased() == "connection" }) {
            response.headers.append(("connection", "close"))
        }
        if exchange.rejected, !exchange.bodyComplete,
            let (listener, _) = listener(of: wsi),
            exchange.expectedBody <= Self.drainLimit(listener.configuration.maxRequestBodyBytes)
        {
            // A lingering close: answer now, then read the rest of the body (bounded in bytes
            // and time) and close when it has all arrived.
            exchange.response = nil
            exchange.draining = true
            guard writeResponse(response, wsi, headOnly: headOnly) else { return -1 }
            lws_set_timeout(wsi, PENDING_TIMEOUT_HTTP_CONTENT, Self.drainSeconds)
            return 0
        }
        httpExchanges.removeValue(forKey: key(wsi))
        guard writeResponse(response, wsi, headOnly: headOnly) else { return -1 }
        if exchange.closeAfter { return -1 }
        return lws_http_transaction_completed(wsi) != 0 ? -1 : 0
    }

    /// Writes a whole response (head and body; `headOnly`: the head, for `HEAD`); false when the
    /// connection failed.
    private func writeResponse(_ response: HTTPResponse, _ wsi: OpaquePointer, headOnly: Bool = false) -> Bool {
        let names = response.headers.map { strdup($0.name.lowercased() + ":") }
        let values = response.headers.map { strdup($0.value) }
        defer {
            names.forEach { free($0) }
            values.forEach { free($0) }
        }
        let cNames = names.map { UnsafePointer($0) }
        let cValues = values.map { UnsafePointer($0) }
        let headerRoom = 512 + response.headers.reduce(0) { $0 + $1.name.utf8.count + $1.value.utf8.count + 8 }
        var head = [UInt8](repeating: 0, count: lwsPre + headerRoom)
        let status = response.status == 0 ? 500 : response.status
        let rc = head.withUnsafeMutableBufferPointer { buf in
            cNames.withUnsafeBufferPointer { np in
                cValues.withUnsafeBufferPointer { vp in
                    clws_write_http_head(
                        wsi, buf.baseAddress, buf.count, UInt32(status), Self.reason(status), response.contentType,
                        UInt64(response.body.count), np.baseAddress, vp.baseAddress, Int32(response.headers.count))
                }
            }
        }
        if rc != 0 { return false }
        if !response.body.isEmpty, !headOnly {
            var body = [UInt8](repeating: 0, count: lwsPre) + response.body
            let n = response.body.count
            let w = body.withUnsafeMutableBufferPointer {
                lws_write(wsi, $0.baseAddress! + lwsPre, n, LWS_WRITE_HTTP_FINAL)
            }
            if w < 0 { return false }
            counters.bytesOut += n
        }
        return true
    }

    func dropHTTP(_ k: UInt) {
        if let exchange = httpExchanges.removeValue(forKey: k) {
            deferredHTTP.removeValue(forKey: exchange.request.id)
        }
    }
}

extension String {
    var trimmingSpaces: String {
        String(self.drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
    }
}
