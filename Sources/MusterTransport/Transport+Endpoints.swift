import CLibWebSockets

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

extension Transport {
    // MARK: - Listening

    /// Starts listening: WebSocket subprotocols and HTTP routes on `server.host:server.port`.
    /// Returns the bound port. Listen backlog is lws' `SOMAXCONN` (4096 on these systems).
    public func listen(_ server: ServerConfiguration) throws -> Listener {
        guard let context, !shuttingDown else {
            throw TransportError(
                code: .shutDown, message: "listen on \(server.host):\(server.port): transport is shut down")
        }
        let count = 1 + server.subprotocols.count
        let protocols = UnsafeMutablePointer<lws_protocols>.allocate(capacity: count + 1)
        protocols.initialize(repeating: lws_protocols(), count: count + 1)
        let state = ListenerState(index: listeners.count, configuration: server, protocols: protocols)
        let names = ["http"] + server.subprotocols.map(\.name)
        for (i, name) in names.enumerated() {
            protocols[i].name = keepCString(name)
            protocols[i].callback = transportCallback
            protocols[i].per_session_data_size = 0
            protocols[i].rx_buffer_size = configuration.receiveChunkBytes
            protocols[i].tx_packet_size = maxSendBytes
            protocols[i].id = UInt32(i)
            protocols[i].user = Unmanaged.passUnretained(state).toOpaque()
        }
        var info = lws_context_creation_info()
        info.port = Int32(server.port)
        // lws takes an interface name or an address; `localhost` is neither, so it is the
        // loopback address it names (as the protected-mode check counts it).
        let host = server.host.lowercased() == "localhost" ? "127.0.0.1" : server.host
        info.iface = host == "0.0.0.0" || host.isEmpty ? nil : keepCString(host)
        info.protocols = UnsafePointer(protocols)
        info.vhost_name = keepCString("muster-listen-\(state.index)")
        info.options = clws_listener_options(
            server.tls?.requireClientCertificate == true ? 1 : 0, server.tls == nil ? 0 : 1)
        info.retry_and_idle_policy = UnsafePointer(retryPolicy)
        info.alpn = keepCString("http/1.1")
        info.timeout_secs = UInt32(configuration.handshakeTimeout.lwsSeconds)
        info.timeout_secs_ah_idle = UInt32(configuration.handshakeTimeout.lwsSeconds)
        if let tls = server.tls {
            info.ssl_cert_filepath = keepCString(tls.certificateFile)
            info.ssl_private_key_filepath = keepCString(tls.privateKeyFile)
            if let ca = tls.clientCAFile { info.ssl_ca_filepath = keepCString(ca) }
        }
        listeners.append(state)
        serverSSLContextCreated = nil
        defer { serverSSLContextCreated = nil }
        guard let vhost = lws_create_vhost(context, &info) else {
            throw TransportError(
                code: .listen,
                message: "cannot listen on \(server.host):\(server.port)"
                    + (server.tls == nil ? "" : " with TLS (check the certificate and key files)")
                    + ": port in use, address not local, or bad TLS files")
        }
        state.vhost = vhost
        state.sslContext = serverSSLContextCreated
        state.port = Int(lws_get_vhost_listen_port(vhost))
        logger.info("listening", metadata: ["listen.port": "\(state.port)", "tls": "\(server.tls != nil)"])
        return Listener(port: state.port, index: state.index)
    }

    /// Loads the listener's certificate chain and private key again from their files (`tls` of
    /// its configuration), and its client CA (mTLS) when it has one: connections accepted from now
    /// on present the new certificate and are verified against the new CA, open ones are
    /// untouched. Files that do not load, or a key that does not match, leave the old ones in use.
    public func reloadCertificate(_ listener: Listener) throws(TransportError) {
        guard listener.index < listeners.count, let tls = listeners[listener.index].configuration.tls else {
            throw TransportError(code: .tlsConfiguration, message: "listener on port \(listener.port) serves no TLS")
        }
        guard let ctx = listeners[listener.index].sslContext else {
            throw TransportError(
                code: .tlsConfiguration, message: "listener on port \(listener.port): its TLS context was not captured")
        }
        if let ca = tls.clientCAFile, clws_reload_client_ca(ctx.raw, ca, 0, 0) != 0 {
            throw TransportError(
                code: .tlsConfiguration,
                message: "the client CA \(ca) does not load (PEM certificates expected); the previous certificate and CA stay in use")
        }
        let rc = clws_reload_server_certificate(ctx.raw, tls.certificateFile, tls.privateKeyFile)
        guard rc == 0 else {
            let why: String
            switch rc {
            case -1: why = "the certificate \(tls.certificateFile) does not load (PEM chain expected)"
            case -2: why = "the key \(tls.privateKeyFile) does not load (PEM expected)"
            case -3: why = "the key \(tls.privateKeyFile) does not match the certificate \(tls.certificateFile)"
            default: why = "OpenSSL refused the new certificate (code \(rc))"
            }
            throw TransportError(code: .tlsConfiguration, message: "\(why); the previous certificate stays in use")
        }
        logger.info("TLS certificate reloaded", metadata: ["listen.port": "\(listener.port)"])
        if let ca = tls.clientCAFile {
            clientCAGeneration &+= 1
            // Loaded a moment ago; it fails now only if the file changed in between.
            guard clws_reload_client_ca(ctx.raw, ca, clientCAGeneration, 1) == 0 else {
                throw TransportError(
                    code: .tlsConfiguration,
                    message: "the client CA \(ca) does not load (PEM certificates expected); the previous one stays in use")
            }
            logger.info("TLS client CA reloaded", metadata: ["listen.port": "\(listener.port)"])
        }
    }

    // MARK: - Client links

    /// Dials a client link and keeps it up: on every drop it dials again with exponential
    /// backoff and jitter (lws retry policy, ``TransportConfiguration/reconnectDelays``). The
    /// returned id stays valid across reconnects until ``close(_:code:reason:)``. Messages sent
    /// while the link is down wait in its queue and go out after the next handshake; a message
    /// already handed to a connection that then dropped is not resent.
    ///
    /// `handler.opened` / `handler.closed` report the link going up and down
    /// (``CloseEvent/willReconnect``).
    public func dial(_ target: DialConfiguration, handler: WebSocketHandler) throws -> ConnectionID {
        guard context != nil, !shuttingDown else {
            throw TransportError(code: .shutDown, message: "dial \(target.url): transport is shut down")
        }
        let url = try parseWebSocketURL(target.url)
        if url.secure == false, target.tls != nil {
            logger.debug("TLS settings ignored for ws:// URL", metadata: ["url": "\(target.url)"])
        }
        let vhost = try clientVhost(for: target.tls)
        let dial = ClientDial(
            url: target.url, secure: url.secure, host: url.host, port: url.port, path: url.path,
            subprotocol: target.subprotocol, headers: target.headers, tls: target.tls, vhost: vhost)
        let id = newConnectionID()
        let pathOnly = String(url.path.prefix { $0 != "?" })
        let query = url.path.firstIndex(of: "?").map { String(url.path[url.path.index(after: $0)...]) } ?? ""
        let info = ConnectionInfo(
            id: id, subprotocol: target.subprotocol, peer: url.host, path: pathOnly, query: query, headers: [:],
            isClient: true)
        let link = Link(id: id, handler: handler, info: info, dial: dial)
        connections[id] = link
        connect(link)
        return id
    }

    /// Starts a dial now, or queues it while ``TransportConfiguration/maxConcurrentDials`` are in
    /// flight: thousands of links dialled at once would overflow the server's accept backlog and
    /// time out in a retry storm.
    private func connect(_ link: Link) {
        guard dialsInFlight < configuration.maxConcurrentDials else {
            if !link.awaitingDialSlot {
                link.awaitingDialSlot = true
                dialQueue.append(link.id)
            }
            return
        }
        link.awaitingDialSlot = false
        guard let context, let dial = link.dial else { return }
        link.dialing = true
        dialsInFlight += 1
        var info = lws_client_connect_info()
        info.context = context
        info.port = dial.port
        info.ietf_version_or_minus_one = -1
        info.vhost = dial.vhost
        info.opaque_user_data = Unmanaged.passUnretained(link).toOpaque()
        info.retry_and_idle_policy = UnsafePointer(retryPolicy)
        var flags: Int32 = 0
        if dial.secure {
            flags |= Int32(LCCSCF_USE_SSL.rawValue)
            if dial.tls?.allowSelfSigned == true {
                flags |= Int32(LCCSCF_ALLOW_SELFSIGNED.rawValue | LCCSCF_SKIP_SERVER_CERT_HOSTNAME_CHECK.rawValue)
            }
        }
        info.ssl_connection = flags
        info.address = UnsafePointer(dial.cHost)
        info.host = UnsafePointer(dial.cHost)
        // No `Origin`: it is what browsers send, and a coordinator refuses foreign origins (lws
        // would write `http://HOST`, without the port and whatever the scheme).
        info.origin = nil
        info.path = UnsafePointer(dial.cPath)
        info.alpn = UnsafePointer(dial.cALPN)
        info.protocol = dial.cProtocol.map { UnsafePointer($0) }
        let wsi = lws_client_connect_via_info(&info)
        // A synchronous failure may already have run CONNECTION_ERROR and scheduled the redial.
        if link.retryTimer == nil, link.wsi == nil {
            link.wsi = wsi
            if wsi == nil {
                dialEnded(link)
                scheduleRedial(link)
            }
        }
    }

    /// A dial attempt finished (open or failed): frees its slot for a queued one.
    func dialEnded(_ link: Link) {
        guard link.dialing else { return }
        link.dialing = false
        dialsInFlight -= 1
        while dialsInFlight < configuration.maxConcurrentDials, let id = dialQueue.popFirst() {
            guard let next = connections[id], next.awaitingDialSlot else { continue }
            next.awaitingDialSlot = false
            guard next.wsi == nil, !next.closedByUser, !shuttingDown else { continue }
            connect(next)
        }
    }

    func scheduleRedial(_ link: Link) {
        guard let context, link.retryTimer == nil else { return }
        var conceal: CChar = 0
        let ms = lws_retry_get_delay_ms(context, retryPolicy, &link.retryCount, &conceal)
        let id = link.id
        link.retryTimer = schedule(after: .milliseconds(Int64(ms))) { t in
            guard let link = t.connections[id] else { return }
            link.retryTimer = nil
            guard link.wsi == nil, !link.closedByUser, !t.shuttingDown else { return }
            t.counters.reconnectAttempts += 1
            t.connect(link)
        }
    }

    func establishedClient(_ link: Link, _ wsi: OpaquePointer) -> Int32 {
        link.wsi = wsi
        dialEnded(link)
        link.open = true
        keepaliveOpened(link)
        link.retryCount = 0
        counters.connectionsOpened += 1
        link.handler.opened(self, link.info)
        if !link.queue.isEmpty || link.pendingClose != nil { lws_callback_on_writable(wsi) }
        return 0
    }

    func appendHeaders(_ dial: ClientDial, _ wsi: OpaquePointer, _ input: UnsafeMutableRawPointer, _ len: Int) -> Int32
    {
        for (name, value) in dial.headers {
            let n = name.hasSuffix(":") ? name : name + ":"
            let rc = n.withCString { np in
                value.withCString { vp in clws_append_header(wsi, input, len, np, vp, Int32(strlen(vp))) }
            }
            if rc != 0 { return -1 }
        }
        return 0
    }

    /// The client vhost for these certificate files; its protocols are the WebSocket client
    /// (index 0) and the HTTP client (index 1, Transport+HTTPClient.swift).
    func clientVhost(for tls: ClientTLS?) throws(TransportError) -> OpaquePointer {
        let key = ClientVhostKey(
            caFile: tls?.caFile, certificateFile: tls?.certificateFile, privateKeyFile: tls?.privateKeyFile)
        if let vh = clientVhosts[key] { return vh }
        guard let context else { throw TransportError(code: .shutDown, message: "transport is shut down") }
        if clientProtocols == nil {
            let p = UnsafeMutablePointer<lws_protocols>.allocate(capacity: 3)
            p.initialize(repeating: lws_protocols(), count: 3)
            p[0].name = keepCString("muster-client")
            p[0].callback = transportCallback
            p[0].rx_buffer_size = configuration.receiveChunkBytes
            p[0].tx_packet_size = maxSendBytes
            p[1].name = UnsafePointer(httpClient.protocolName)
            p[1].callback = httpClientCallback
            p[1].rx_buffer_size = configuration.receiveChunkBytes
            p[1].tx_packet_size = maxSendBytes
            p[1].id = 1
            clientProtocols = p
        }
        var info = lws_context_creation_info()
        info.port = -1  // CONTEXT_PORT_NO_LISTEN
        info.protocols = UnsafePointer(clientProtocols)
        info.vhost_name = keepCString("muster-client-\(clientVhosts.count)")
        info.options = clws_client_vhost_options()
        info.retry_and_idle_policy = UnsafePointer(retryPolicy)
        if let ca = key.caFile { info.client_ssl_ca_filepath = keepCString(ca) }
        if let cert = key.certificateFile { info.client_ssl_cert_filepath = keepCString(cert) }
        if let k = key.privateKeyFile { info.client_ssl_private_key_filepath = keepCString(k) }
        guard let vh = lws_create_vhost(context, &info) else {
            throw TransportError(
                code: .tlsConfiguration,
                message:
                    "cannot create client TLS setup (ca: \(key.caFile ?? "system"), cert: \(key.certificateFile ?? "none")); check the files exist and are PEM"
            )
        }
        clientVhosts[key] = vh
        return vh
    }
}

struct WebSocketURL: Equatable {
    var secure: Bool
    var host: String
    var port: Int32
    /// Path plus `?query`, at least "/".
    var path: String
}

/// Parses `ws://host[:port][/path][?query]` and `wss://...`; IPv6 hosts in brackets.
func parseWebSocketURL(_ text: String) throws(TransportError) -> WebSocketURL {
    try parseURL(text, plain: "ws", secure: "wss")
}

/// Parses `plain://host[:port][/path][?query]` and `secure://...` (ws/wss, http/https); IPv6
/// hosts in brackets.
func parseURL(_ text: String, plain: String, secure secureScheme: String) throws(TransportError) -> WebSocketURL {
    func bad(_ why: String) -> TransportError {
        TransportError(
            code: .invalidURL,
            message: "\(text): \(why); expected \(plain)://host[:port]/path or \(secureScheme)://...")
    }
    let secure: Bool
    var rest: Substring
    if text.hasPrefix("\(plain)://") {
        secure = false
        rest = text.dropFirst(plain.count + 3)
    } else if text.hasPrefix("\(secureScheme)://") {
        secure = true
        rest = text.dropFirst(secureScheme.count + 3)
    } else {
        throw bad("scheme must be \(plain) or \(secureScheme)")
    }
    let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" } ?? rest.endIndex
    let authority = rest[..<authorityEnd]
    rest = rest[authorityEnd...]
    var host: Substring
    var portText: Substring?
    if authority.hasPrefix("[") {
        guard let close = authority.firstIndex(of: "]") else { throw bad("unclosed [ in host") }
        host = authority[authority.index(after: authority.startIndex)..<close]
        let after = authority[authority.index(after: close)...]
        if after.hasPrefix(":") { portText = after.dropFirst() } else if !after.isEmpty { throw bad("junk after ]") }
    } else if let colon = authority.lastIndex(of: ":") {
        host = authority[..<colon]
        portText = authority[authority.index(after: colon)...]
    } else {
        host = authority
    }
    guard !host.isEmpty else { throw bad("missing host") }
    var port: Int32 = secure ? 443 : 80
    if let portText {
        guard let p = Int32(portText), p > 0, p < 65536 else { throw bad("bad port") }
        port = p
    }
    var path = String(rest)
    if path.isEmpty { path = "/" } else if path.hasPrefix("?") { path = "/" + path }
    return WebSocketURL(secure: secure, host: String(host), port: port, path: path)
}
