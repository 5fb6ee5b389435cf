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

    /// Asks for one ``WebSocketHandler/drained`` call once at most `bytes` of payload are queued
    /// for the connection, checked each time the socket takes a write (right away at the next
    /// writable callback when the queue is that short already). For a sender that produces a
    /// long stream (say a snapshot of many jobs) in chunks, so the queue stays under the
    /// high-water mark and a slow reader is paced, not closed. A later call replaces the mark;
    /// nothing happens for a connection that is unknown or closing.
    public func notifyWhenDrained(_ id: ConnectionID, atOrBelow bytes: Int) {
        guard let link = connections[id], link.pendingClose == nil, !link.closedByUser else { return }
        link.drainMark = max(0, bytes)
        if link.open, let wsi = link.wsi { lws_callback_on_writable(wsi) }
    }

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
                "closing slow peer", metadata: ["link.id": "\(id)", "queued.bytes": "\(link.queuedBytes)"])
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
    /// A keepalive PING goes first: every `lws_write` here is one or more whole messages, so a
    /// PING never lands inside one.
    func writable(_ link: Link, _ wsi: OpaquePointer) -> Int32 {
        if let close = link.pendingClose, link.queue.isEmpty, lws_partial_buffered(wsi) == 0 {
            return closeNow(wsi, close.code, close.reason)
        }
        if link.pingDue, lws_partial_buffered(wsi) == 0, !writeKeepalivePing(link, wsi) { return -1 }
        if link.queue.count > 1, lws_partial_buffered(wsi) == 0 {
            if writeCoalesced(link, wsi) < 0 { return -1 }
            notifyIfDrained(link)
            if !link.queue.isEmpty || link.pendingClose != nil || link.pingDue { lws_callback_on_writable(wsi) }
            return 0
        }
        var written = 0
        var batchBytes = 0
        while written < 128, batchBytes < maxSendBytes, var frame = link.queue.popFirst() {
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
        notifyIfDrained(link)
        if !link.queue.isEmpty || link.pendingClose != nil || link.pingDue { lws_callback_on_writable(wsi) }
        return 0
    }

    /// Tells the handler once that the link's queue is down to the mark asked for with
    /// ``notifyWhenDrained(_:atOrBelow:)``. What the handler sends from there is queued as usual.
    private func notifyIfDrained(_ link: Link) {
        guard let mark = link.drainMark, link.queuedBytes <= mark, link.pendingClose == nil else { return }
        link.drainMark = nil
        link.handler.drained?(self, link.id)
    }

    /// Several queued messages: frames them here and hands lws one buffer, so the kernel sees
    /// one `send` instead of one per message (lws frames each `lws_write` on its own, and on a
    /// client link also reads 4 random bytes from the kernel for each frame's mask). This
    /// transport negotiates no extensions, so a frame is a 2-14 byte header and the payload,
    /// masked on client links (RFC 6455, 5.3) with keys from one `lws_get_random` call. lws
    /// passes `LWS_WRITE_HTTP` writes through as they are and keeps what a partial send leaves
    /// over, like any other write.
    private func writeCoalesced(_ link: Link, _ wsi: OpaquePointer) -> Int32 {
        let masked = link.isClient
        var count = 0
        var total = 0
        for frame in link.queue {
            let n = frame.payloadCount
            if count == 128 || (count > 0 && total + n > maxSendBytes) { break }
            total += Self.frameHeaderBytes(n, masked: masked) + n
            count += 1
        }
        var keys = [UInt8](repeating: 0, count: masked ? 4 * count : 0)
        if masked {
            let got = keys.withUnsafeMutableBytes { lws_get_random(context, $0.baseAddress, $0.count) }
            if got != keys.count { return -1 }
        }
        var payloadBytes = 0
        let buffer = [UInt8](unsafeUninitializedCapacity: lwsPre + total) { buf, initialized in
            // lws may write into the headroom; give it defined bytes.
            buf.baseAddress!.initialize(repeating: 0, count: lwsPre)
            var at = lwsPre
            for i in 0..<count {
                let frame = link.queue.removeFirst()
                let n = frame.payloadCount
                payloadBytes += n
                let dst = buf.baseAddress! + at
                at += Self.writeFrameHeader(into: dst, payload: n, binary: frame.binary, masked: masked)
                frame.bytes.withUnsafeBufferPointer { src in
                    guard n > 0 else { return }
                    let payload = buf.baseAddress! + at
                    payload.initialize(from: src.baseAddress! + lwsPre, count: n)
                    if masked {
                        let key = (keys[4 * i], keys[4 * i + 1], keys[4 * i + 2], keys[4 * i + 3])
                        let k = buf.baseAddress! + at - 4
                        (k[0], k[1], k[2], k[3]) = key
                        for j in 0..<n { payload[j] ^= k[j & 3] }
                    }
                }
                at += n
            }
            initialized = at
        }
        link.queuedBytes -= payloadBytes
        let rc = buffer.withUnsafeBufferPointer { buf in
            lws_write(wsi, UnsafeMutablePointer(mutating: buf.baseAddress! + lwsPre), total, LWS_WRITE_HTTP)
        }
        if rc < 0 { return -1 }
        counters.messagesOut += count
        counters.bytesOut += payloadBytes
        return 0
    }

    /// Bytes of a frame header for a payload of `n` bytes, with the mask key when `masked`
    /// (RFC 6455, 5.2).
    static func frameHeaderBytes(_ n: Int, masked: Bool) -> Int {
        (n < 126 ? 2 : (n < 65536 ? 4 : 10)) + (masked ? 4 : 0)
    }

    /// Writes a final text or binary frame header, leaving the last 4 bytes for the mask key
    /// when `masked`; returns its length.
    static func writeFrameHeader(
        into p: UnsafeMutablePointer<UInt8>, payload n: Int, binary: Bool, masked: Bool
    ) -> Int {
        p[0] = 0x80 | (binary ? 0x2 : 0x1)
        let maskBit: UInt8 = masked ? 0x80 : 0
        let keyBytes = masked ? 4 : 0
        if n < 126 {
            p[1] = maskBit | UInt8(n)
            return 2 + keyBytes
        }
        if n < 65536 {
            p[1] = maskBit | 126
            p[2] = UInt8(truncatingIfNeeded: n >> 8)
            p[3] = UInt8(truncatingIfNeeded: n)
            return 4 + keyBytes
        }
        p[1] = maskBit | 127
        for i in 0..<8 { p[2 + i] = UInt8(truncatingIfNeeded: UInt64(n) >> (56 - 8 * UInt64(i))) }
        return 10 + keyBytes
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
            isClient: false,
            peerCertificateName: peerCertificateName(wsi))
        // Refused: any value but 0 makes lws close the connection after the answer.
        if let refuse = handler.refuseUpgrade, let response = refuse(self, info) { return refuseUpgrade(response, wsi) }
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
        // lws fails some frames by itself (text that is not UTF-8: 1007; framing errors: 1002)
        // and tells no callback; the close it sent is still in its close buffer.
        let byLWS = link.peerClose == nil && link.pendingClose == nil ? closeSentByLWS(wsi) : nil
        let code = link.peerClose?.code ?? link.pendingClose?.code ?? byLWS?.code ?? .abnormal
        let reason = link.peerClose?.reason ?? link.pendingClose?.reason ?? byLWS?.reason ?? ""
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

    /// The close lws queued on its own for `wsi`, if any.
    private func closeSentByLWS(_ wsi: OpaquePointer) -> (code: CloseCode, reason: String)? {
        let length = Int(lws_get_close_length(wsi))
        guard length >= 2, let payload = lws_get_close_payload(wsi) else { return nil }
        return parseClosePayload(UnsafeMutableRawPointer(payload), length)
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

    /// The common name of the peer's verified client certificate (`clws_peer_common_name`); nil
    /// without TLS, without a certificate, or when it names no single CN.
    func peerCertificateName(_ wsi: OpaquePointer) -> String? {
        var buf = [CChar](repeating: 0, count: 256)
        let n = clws_peer_common_name(wsi, &buf, buf.count)
        guard n >= 0 else { return nil }
        return String(decoding: buf.prefix(Int(n)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
