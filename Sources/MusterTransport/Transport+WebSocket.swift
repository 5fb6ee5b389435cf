import CLibWebSockets

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

extension Transport {
    // MARK: - Public API

    /// Queues a text message. Never blocks; see ``SendResult`` for what can happen.
    @discardableResult
    public func send(text: String, to id: ConnectionID) -> SendResult {
        var text = text
        return text.withUTF8 { send($0, binary: false, to: id) }
    }

    /// Queues a text message given as UTF-8 bytes (not re-validated: the caller vouches).
    @discardableResult
    public func send(utf8 bytes: UnsafeRawBufferPointer, to id: ConnectionID) -> SendResult {
        send(bytes.bindMemory(to: UInt8.self), binary: false, to: id)
    }

    /// Queues a binary message.
    @discardableResult
    public func send(binary bytes: [UInt8], to id: ConnectionID) -> SendResult {
        bytes.withUnsafeBufferPointer { send($0, binary: true, to: id) }
    }

    /// Starts the close handshake with `code` and `reason` (at most 123 bytes of UTF-8 are sent).
    /// The handler's `closed` follows. Closing a client link stops its reconnects.
    public func close(_ id: ConnectionID, code: CloseCode = .normal, reason: String = "") {
        guard let link = connections[id] else { return }
        if link.isClient {
            link.closedByUser = true
            if link.wsi == nil {
                if let timer = link.retryTimer { cancel(timer) }
                link.retryTimer = nil
                connections.removeValue(forKey: id)
                counters.closesByCode[code.rawValue, default: 0] += 1
                link.handler.closed(
                    self, CloseEvent(id: id, code: code, reason: reason, initiatedByPeer: false, willReconnect: false))
                return
            }
        }
        if link.pendingClose == nil { link.pendingClose = (code, reason) }
        if let wsi = link.wsi, link.open { lws_callback_on_writable(wsi) }
    }

    /// Payload bytes queued (not yet handed to the kernel) for a connection.
    public func queuedBytes(for id: ConnectionID) -> Int? { connections[id]?.queuedBytes }

    /// True when the connection or link exists and its WebSocket is open.
    public func isOpen(_ id: ConnectionID) -> Bool { connections[id]?.open ?? false }

    // MARK: - Sending

    private func send(_ payload: UnsafeBufferPointer<UInt8>, binary: Bool, to id: ConnectionID) -> SendResult {
        guard let link = connections[id], link.pendingClose == nil, !link.closedByUser else {
            return .unknownConnection
        }
        let n = payload.count
        if link.queuedBytes + n > configuration.outboundHighWaterBytes {
            if link.wsi == nil || !link.open {
                return .queueFull
            }
            counters.slowPeerDrops += 1
            logger.notice(
                "closing slow peer", metadata: ["connection.id": "\(id)", "queued.bytes": "\(link.queuedBytes)"])
            link.queue.removeAll()
            link.queuedBytes = 0
            link.pendingClose = (.policyViolation, "slow peer: outbound queue over its high-water mark")
            if let wsi = link.wsi {
                lws_callback_on_writable(wsi)
                // A peer that does not read cannot take the close frame either: drop it soon.
                clws_kill_soon(wsi, 2)
            }
            return .closedSlowPeer
        }
        let bytes = [UInt8](unsafeUninitializedCapacity: lwsPre + n) { buf, count in
            if n > 0 { (buf.baseAddress! + lwsPre).initialize(from: payload.baseAddress!, count: n) }
            count = lwsPre + n
        }
        let wasEmpty = link.queue.isEmpty
        link.queue.append(OutFrame(bytes: bytes, binary: binary))
        link.queuedBytes += n
        if wasEmpty, link.open, let wsi = link.wsi { lws_callback_on_writable(wsi) }
        return .queued
    }

    /// Writes queued frames while the socket takes them without lws buffering; lws keeps what a
    /// partial send left over and calls back when that has drained, so memory stays bounded by
    /// the high-water mark plus one batch.
    ///
    /// A requested close goes out after the messages queued before it (an `error` followed by a
    /// close must arrive in that order). Closes that must not wait (a slow peer, a protocol
    /// failure) empty the queue first.
    ///
    /// A keepalive PING goes first: every `lws_write` here is one whole message, so a PING never
    /// lands inside one.
    func writable(_ link: Link, _ wsi: OpaquePointer) -> Int32 {
        if let close = link.pendingClose, link.queue.isEmpty, lws_partial_buffered(wsi) == 0 {
            return closeNow(wsi, close.code, close.reason)
        }
        if link.pingDue, lws_partial_buffered(wsi) == 0, !writeKeepalivePing(link, wsi) { return -1 }
        var written = 0
        var batchBytes = 0
        while written < 128, batchBytes < 512 << 10, var frame = link.queue.popFirst() {
            let n = frame.payloadCount
            link.queuedBytes -= n
            let mode = frame.binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT
            let rc = frame.bytes.withUnsafeMutableBufferPointer { buf in
                lws_write(wsi, buf.baseAddress! + lwsPre, n, mode)
            }
            if rc < 0 { return -1 }
            counters.messagesOut += 1
            counters.bytesOut += n
            written += 1
            batchBytes += n
            if lws_partial_buffered(wsi) != 0 { break }
        }
        if !link.queue.isEmpty || link.pendingClose != nil || link.pingDue { lws_callback_on_writable(wsi) }
        return 0
    }

    /// Sends a close frame (from a callback) and tells lws to close.
    func closeNow(_ wsi: OpaquePointer, _ code: CloseCode, _ reason: String) -> Int32 {
        var bytes = Array(reason.utf8.prefix(123))
        bytes.withUnsafeMutableBufferPointer { buf in
            lws_close_reason(wsi, lws_close_status(UInt32(code.rawValue)), buf.baseAddress, buf.count)
        }
        return -1
    }

    /// Closes from inside a receive callback, recording the code for the `closed` event.
    func fail(_ link: Link, _ wsi: OpaquePointer, _ code: CloseCode, _ reason: String) -> Int32 {
        link.pendingClose = (code, reason)
        link.queue.removeAll()
        link.queuedBytes = 0
        return closeNow(wsi, code, reason)
    }

    // MARK: - Receiving

    func receive(_ link: Link, _ wsi: OpaquePointer, _ input: UnsafeMutableRawPointer?, _ len: Int) -> Int32 {
        keepaliveReceived(link)
        if link.pendingClose != nil { return 0 }
        if !link.inMessage {
            link.inMessage = true
            link.rxBinary = lws_frame_is_binary(wsi) != 0
            if link.rxBinary, link.handler.binary == nil {
                return fail(link, wsi, .unsupportedData, "binary messages are not accepted")
            }
        }
        if link.rx.count + len > configuration.maxMessageBytes {
            return fail(link, wsi, .messageTooBig, "message larger than \(configuration.maxMessageBytes) bytes")
        }
        let final = lws_is_final_fragment(wsi) != 0 && lws_remaining_packet_payload(wsi) == 0
        let chunk = UnsafeRawBufferPointer(start: input, count: input == nil ? 0 : len)
        if final, link.rx.isEmpty {
            // The common case: the whole message arrived in one chunk; no copy into `rx`.
            link.inMessage = false
            deliver(link, chunk)
        } else {
            link.rx.append(contentsOf: chunk)
            if final {
                let message = link.rx
                link.resetReceive()
                message.withUnsafeBytes { deliver(link, $0) }
            }
        }
        return 0
    }

    private func deliver(_ link: Link, _ bytes: UnsafeRawBufferPointer) {
        counters.messagesIn += 1
        counters.bytesIn += bytes.count
        if link.rxBinary {
            link.handler.binary?(self, link.id, Array(bytes))
        } else {
            link.handler.text(self, link.id, String(decoding: bytes, as: UTF8.self))
        }
    }

    // MARK: - Server handshake

    func filterWebSocket(_ wsi: OpaquePointer) -> Int32 {
        guard !shuttingDown, let (listener, index) = listener(of: wsi), index < listener.handlers.count,
            let handler = listener.handlers[index]
        else { return 1 }
        let id = newConnectionID()
        let uri = header(wsi, WSI_TOKEN_GET_URI) ?? "/"
        let info = ConnectionInfo(
            id: id,
            subprotocol: index == 0 ? nil : listener.configuration.subprotocols[index - 1].name,
            peer: peerAddress(wsi),
            path: uri,
            query: header(wsi, WSI_TOKEN_HTTP_URI_ARGS) ?? "",
            headers: capturedHeaders(wsi, listener.configuration.capturedHeaders),
            isClient: false)
        if let accept = handler.shouldAccept, !accept(self, info) { return 1 }
        let link = Link(id: id, handler: handler, info: info, dial: nil)
        link.wsi = wsi
        connections[id] = link
        lws_set_opaque_user_data(wsi, Unmanaged.passUnretained(link).toOpaque())
        return 0
    }

    func establishedServer(_ wsi: OpaquePointer) -> Int32 {
        guard let link = link(of: wsi) else { return -1 }
        link.open = true
        keepaliveOpened(link)
        counters.connectionsOpened += 1
        link.handler.opened(self, link.info)
        if !link.queue.isEmpty || link.pendingClose != nil { lws_callback_on_writable(wsi) }
        return 0
    }

    // MARK: - Closing

    /// A WebSocket (or a dial attempt) ended. Reports it, then forgets a server connection or
    /// schedules a client link's next dial.
    func linkClosed(_ link: Link, _ wsi: OpaquePointer) {
        guard link.wsi == wsi else { return }
        lws_set_opaque_user_data(wsi, nil)
        let wasOpen = link.open
        link.wsi = nil
        link.open = false
        link.resetReceive()
        let code = link.peerClose?.code ?? link.pendingClose?.code ?? .abnormal
        let reason = link.peerClose?.reason ?? link.pendingClose?.reason ?? ""
        let byPeer = link.peerClose != nil
        link.peerClose = nil
        if link.isClient {
            dialEnded(link)
            let again = !link.closedByUser && !shuttingDown
            link.pendingClose = nil
            if !again { connections.removeValue(forKey: link.id) }
            if wasOpen || !again {
                counters.connectionsClosed += wasOpen ? 1 : 0
                counters.closesByCode[code.rawValue, default: 0] += 1
                link.handler.closed(
                    self,
                    CloseEvent(id: link.id, code: code, reason: reason, initiatedByPeer: byPeer, willReconnect: again))
            }
            if again { scheduleRedial(link) }
        } else {
            connections.removeValue(forKey: link.id)
            link.queue.removeAll()
            link.queuedBytes = 0
            if wasOpen {
                counters.connectionsClosed += 1
                counters.closesByCode[code.rawValue, default: 0] += 1
                link.handler.closed(
                    self,
                    CloseEvent(id: link.id, code: code, reason: reason, initiatedByPeer: byPeer, willReconnect: false))
            }
        }
        noteLinkGone()
    }

    // MARK: - Header helpers

    func header(_ wsi: OpaquePointer, _ token: lws_token_indexes) -> String? {
        let n = lws_hdr_total_length(wsi, token)
        guard n > 0 else { return nil }
        var buf = [CChar](repeating: 0, count: Int(n) + 1)
        guard lws_hdr_copy(wsi, &buf, Int32(buf.count), token) >= 0 else { return nil }
        return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    func customHeader(_ wsi: OpaquePointer, _ name: String) -> String? {
        let cname = name.lowercased() + ":"
        return cname.withCString { p -> String? in
            let n = lws_hdr_custom_length(wsi, p, Int32(strlen(p)))
            guard n > 0 else { return nil }
            var buf = [CChar](repeating: 0, count: Int(n) + 1)
            guard lws_hdr_custom_copy(wsi, &buf, Int32(buf.count), p, Int32(strlen(p))) >= 0 else { return nil }
            return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
    }

    func capturedHeaders(_ wsi: OpaquePointer, _ extra: [String]) -> [String: String] {
        var h: [String: String] = [:]
        let known: [(String, lws_token_indexes)] = [
            ("authorization", WSI_TOKEN_HTTP_AUTHORIZATION), ("origin", WSI_TOKEN_ORIGIN),
            ("user-agent", WSI_TOKEN_HTTP_USER_AGENT), ("host", WSI_TOKEN_HOST),
            ("content-type", WSI_TOKEN_HTTP_CONTENT_TYPE),
        ]
        for (name, token) in known {
            if let v = header(wsi, token) { h[name] = v }
        }
        for name in extra {
            if let v = customHeader(wsi, name) { h[name.lowercased()] = v }
        }
        return h
    }

    func peerAddress(_ wsi: OpaquePointer) -> String {
        var buf = [CChar](repeating: 0, count: 64)
        guard lws_get_peer_simple(wsi, &buf, buf.count) != nil else { return "" }
        return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
