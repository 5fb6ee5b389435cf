import CLibWebSockets

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The one lws callback of every protocol of every vhost. lws calls it on the loop thread from
/// inside `lws_service` (or `lws_context_destroy`), so entering the actor with `assumeIsolated` is
/// checked by ``EventLoopExecutor/checkIsolated()``.
func transportCallback(
    _ wsi: OpaquePointer?, _ reason: lws_callback_reasons, _ user: UnsafeMutableRawPointer?,
    _ input: UnsafeMutableRawPointer?, _ len: Int
) -> Int32 {
    if reason == LWS_CALLBACK_OPENSSL_LOAD_EXTRA_SERVER_VERIFY_CERTS
        || reason == LWS_CALLBACK_OPENSSL_LOAD_EXTRA_CLIENT_VERIFY_CERTS
    {
        // `user` is the vhost's SSL_CTX (the wsi is a stand-in lws builds for this call).
        if let user { clws_tune_ssl_ctx(user) }
        // A listener's SSL_CTX is kept so its certificate can be reloaded (`reloadCertificate`).
        if reason == LWS_CALLBACK_OPENSSL_LOAD_EXTRA_SERVER_VERIFY_CERTS, let user, let wsi,
            let ctx = lws_get_context(wsi), let owner = lws_context_user(ctx)
        {
            let transport = Unmanaged<Transport>.fromOpaque(owner).takeUnretainedValue()
            let pointer = SSLContextPointer(raw: user)
            transport.assumeIsolated { $0.serverSSLContextCreated = pointer }
        }
        return 0
    }
    if reason == LWS_CALLBACK_OPENSSL_PERFORM_CLIENT_CERT_VERIFICATION {
        // lws 4.1 hands OpenSSL's verdict on a client certificate (mTLS) to this callback as `len`
        // (preverify_ok) and accepts the certificate whenever the callback returns 0, whatever that
        // verdict: returning 0 here would admit a certificate from any CA. Nonzero refuses it.
        return len == 0 ? 1 : 0
    }
    guard let wsi, let ctx = lws_get_context(wsi), let owner = lws_context_user(ctx) else { return 0 }
    let transport = Unmanaged<Transport>.fromOpaque(owner).takeUnretainedValue()
    let args = CallbackArguments(wsi: wsi, input: input)
    return transport.assumeIsolated { $0.handle(args.wsi, reason, args.input, len) }
}

/// A listener's OpenSSL `SSL_CTX`.
struct SSLContextPointer: @unchecked Sendable {
    // @unchecked Sendable: only used on the loop thread (created in a callback there, used by
    // `reloadCertificate`, which is isolated to the transport).
    let raw: UnsafeMutableRawPointer
}

/// The raw pointers of one callback, carried into the isolated closure.
private struct CallbackArguments: @unchecked Sendable {
    // @unchecked Sendable: built and consumed on the loop thread inside one lws callback;
    // `assumeIsolated` runs the closure synchronously, so the pointers never cross threads.
    let wsi: OpaquePointer
    let input: UnsafeMutableRawPointer?
}

extension Transport {
    func handle(_ wsi: OpaquePointer, _ reason: lws_callback_reasons, _ input: UnsafeMutableRawPointer?, _ len: Int)
        -> Int32
    {
        switch reason {
        // Server accept and handshake bookkeeping.
        case LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED:
            return handshakeStarted(wsi)
        case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
            return confirmUpgrade(wsi, input)
        case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
            handshakeEnded(key(wsi))
            return filterWebSocket(wsi)
        case LWS_CALLBACK_ESTABLISHED:
            return establishedServer(wsi)

        // WebSocket traffic, both directions.
        case LWS_CALLBACK_RECEIVE, LWS_CALLBACK_CLIENT_RECEIVE:
            guard let link = link(of: wsi) else { return -1 }
            return receive(link, wsi, input, len)
        case LWS_CALLBACK_SERVER_WRITEABLE, LWS_CALLBACK_CLIENT_WRITEABLE:
            guard let link = link(of: wsi) else { return 0 }
            return writable(link, wsi)
        case LWS_CALLBACK_RECEIVE_PONG, LWS_CALLBACK_CLIENT_RECEIVE_PONG:
            if let link = link(of: wsi) {
                keepaliveReceived(link)
                counters.keepalivePongs += 1
            }
            return 0
        case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
            if let link = link(of: wsi) { link.peerClose = parseClosePayload(input, len) }
            return 0
        case LWS_CALLBACK_CLOSED:
            if let link = link(of: wsi) { linkClosed(link, wsi) }
            return 0

        // Client links.
        case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER:
            guard let link = link(of: wsi), let dial = link.dial, let input else { return 0 }
            return appendHeaders(dial, wsi, input, len)
        case LWS_CALLBACK_CLIENT_ESTABLISHED:
            guard let link = link(of: wsi) else { return -1 }
            return establishedClient(link, wsi)
        case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
            if let link = link(of: wsi) {
                let why = input.map { String(cString: $0.assumingMemoryBound(to: CChar.self)) } ?? "unknown"
                dialFailed(link, wsi, why)
            }
            return 0
        case LWS_CALLBACK_CLIENT_CLOSED:
            if let link = link(of: wsi) { clientClosed(link, wsi) }
            return 0

        // Plain HTTP.
        case LWS_CALLBACK_HTTP:
            handshakeEnded(key(wsi))
            return httpRequest(wsi, input)
        case LWS_CALLBACK_HTTP_BODY:
            return httpBody(wsi, input, len)
        case LWS_CALLBACK_HTTP_BODY_COMPLETION:
            return httpBodyComplete(wsi)
        case LWS_CALLBACK_HTTP_WRITEABLE:
            return httpWritable(wsi)
        case LWS_CALLBACK_CLOSED_HTTP:
            dropHTTP(key(wsi))
            return 0

        case LWS_CALLBACK_WSI_DESTROY:
            wsiDestroyed(wsi)
            return 0
        default:
            return 0
        }
    }

    func key(_ wsi: OpaquePointer) -> UInt { UInt(bitPattern: Int(bitPattern: UnsafeRawPointer(wsi))) }

    func link(of wsi: OpaquePointer) -> Link? {
        guard let p = lws_get_opaque_user_data(wsi) else { return nil }
        return Unmanaged<Link>.fromOpaque(p).takeUnretainedValue()
    }

    func listener(of wsi: OpaquePointer) -> (ListenerState, Int)? {
        guard let proto = lws_get_protocol(wsi), let user = proto.pointee.user else { return nil }
        return (Unmanaged<ListenerState>.fromOpaque(user).takeUnretainedValue(), Int(proto.pointee.id))
    }

    /// A TCP connection was accepted: its handshake is pending. Over
    /// ``TransportConfiguration/maxPendingHandshakesPerAddress`` from its source address it is
    /// closed at once, before anything of it is read.
    private func handshakeStarted(_ wsi: OpaquePointer) -> Int32 {
        let address = peerAddress(wsi)
        let pending = pendingByAddress[address] ?? 0
        if configuration.maxPendingHandshakesPerAddress > 0, pending >= configuration.maxPendingHandshakesPerAddress {
            counters.handshakesRefused += 1
            return -1
        }
        pendingByAddress[address] = pending + 1
        pendingHandshakes[key(wsi)] = (.now, address)
        return 0
    }

    /// The handshake of connection `k` finished (or the connection is gone); when it was pending,
    /// when it was accepted.
    @discardableResult
    func handshakeEnded(_ k: UInt) -> ContinuousClock.Instant? {
        guard let pending = pendingHandshakes.removeValue(forKey: k) else { return nil }
        let left = (pendingByAddress[pending.address] ?? 1) - 1
        pendingByAddress[pending.address] = left > 0 ? left : nil
        return pending.at
    }

    /// A dial that ended before its WebSocket handshake completed: logged, counted and told to
    /// the handler (`dialFailed`); the link dials again unless its owner closes it.
    private func dialFailed(_ link: Link, _ wsi: OpaquePointer, _ why: String) {
        logger.debug(
            "link dial failed", metadata: ["link.id": "\(link.id)", "url": "\(link.dial?.url ?? "")", "error": "\(why)"])
        counters.dialFailures += 1
        linkClosed(link, wsi)
        link.handler.dialFailed?(self, link.id, why)
    }

    /// A client link's connection ended. Before the WebSocket handshake completed, lws does not
    /// always say `CLIENT_CONNECTION_ERROR`: a TLS peer that refuses the client's certificate
    /// after the client finished its side of a TLS 1.3 handshake closes a connection lws already
    /// counts as connected. That is a failed dial too, not a silent redial.
    private func clientClosed(_ link: Link, _ wsi: OpaquePointer) {
        if link.wsi == wsi, !link.open, !link.closedByUser, !shuttingDown {
            dialFailed(link, wsi, "the connection closed before the WebSocket handshake completed")
        } else {
            linkClosed(link, wsi)
        }
    }

    private func wsiDestroyed(_ wsi: OpaquePointer) {
        let k = key(wsi)
        if let accepted = handshakeEnded(k) {
            // lws drops a connection whose handshake stalls after `timeout_secs`; one destroyed
            // earlier was closed by its peer.
            let bound = configuration.handshakeTimeout - .milliseconds(500)
            if ContinuousClock.now - accepted >= bound { counters.handshakeTimeouts += 1 }
        }
        dropHTTP(k)
        if let link = link(of: wsi) {
            lws_set_opaque_user_data(wsi, nil)
            if link.wsi == wsi {
                if link.isClient {
                    clientClosed(link, wsi)
                } else if link.open {
                    linkClosed(link, wsi)
                } else {
                    // A server handshake that never completed.
                    link.wsi = nil
                    connections.removeValue(forKey: link.id)
                }
            }
        }
    }
}

/// Code and reason from a close frame payload.
func parseClosePayload(_ input: UnsafeMutableRawPointer?, _ len: Int) -> (code: CloseCode, reason: String) {
    guard let input, len >= 2 else { return (.noStatus, "") }
    let bytes = UnsafeRawBufferPointer(start: input, count: len)
    let code = UInt16(bytes[0]) << 8 | UInt16(bytes[1])
    let reason = String(decoding: bytes[2...], as: UTF8.self)
    return (CloseCode(code), reason)
}
