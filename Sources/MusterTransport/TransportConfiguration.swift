/// Settings of one transport (one lws context, one loop thread). Durations are rounded up to
/// whole seconds where lws counts in seconds (the handshake timeout).
public struct TransportConfiguration: Sendable {
    /// A received message larger than this closes the connection with 1009.
    public var maxMessageBytes = 1 << 20
    /// Per-connection bytes queued for sending. Passing it closes a server connection with 1008
    /// (slow peer) and refuses more sends on a client link that is down.
    public var outboundHighWaterBytes = 8 << 20
    /// Idle time (nothing received: no message, no PONG) after which a PING is sent; one per
    /// silence, between whole messages. PINGs falling due close together go out in one batch,
    /// up to a fifth of the shorter of this and the time from it to ``keepaliveHangUpAfter``
    /// (at most 1 s) late. Not less than ``keepaliveHangUpAfter`` sends none.
    public var keepalivePingAfter: Duration = .seconds(5)
    /// Idle time (no PONG or data) after which the connection is dropped without a close frame
    /// and reported with 1006.
    public var keepaliveHangUpAfter: Duration = .seconds(10)
    /// A TCP connection must complete its TLS, HTTP or WebSocket handshake within this time.
    public var handshakeTimeout: Duration = .seconds(10)
    /// Accepted connections from one source address whose handshake may be pending at once; more
    /// are closed as they are accepted. 0: no limit.
    public var maxPendingHandshakesPerAddress = 0
    /// How long ``Transport/shutdown()`` waits for close handshakes after sending 1001.
    public var shutdownGrace: Duration = .seconds(2)
    /// Backoff for client links: delays in order, the last one repeats; jitter in percent added.
    public var reconnectDelays: [Duration] = [
        .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2),
        .seconds(4), .seconds(8),
    ]
    public var reconnectJitterPercent: UInt8 = 20
    /// Client dials (TCP + TLS + WebSocket handshake) in flight at once; more wait their turn.
    /// 64 keeps a burst of links from overflowing a server's accept backlog and keeps the heap
    /// high-water of concurrent TLS handshakes low; 10,000 links come up in seconds on loopback.
    public var maxConcurrentDials = 64
    /// Per-connection receive buffer lws allocates for every WebSocket (so large messages arrive
    /// in chunks of this size; socket reads stay at least 4 KiB). 1 KiB rather than lws' 4 KiB
    /// default: an idle link then costs about 4 KB of RSS instead of 7 KB, and reassembly makes
    /// the chunk size invisible to handlers.
    public var receiveChunkBytes = 1024

    public init() {}
}

/// A listener: WebSocket subprotocols and plain HTTP on one host:port.
public struct ServerConfiguration: Sendable {
    /// Address to bind; "0.0.0.0" binds every IPv4 interface.
    public var host = "127.0.0.1"
    /// 0 lets the kernel pick; ``Listener/port`` reports the result.
    public var port = 0
    /// WebSocket subprotocols by name, e.g. `muster.backend.v1`.
    public var subprotocols: [(name: String, handler: WebSocketHandler)] = []
    /// Handler for WebSocket clients that ask for no subprotocol; nil refuses them. A client that
    /// asks only for subprotocols not listed here is refused during the handshake.
    public var defaultWebSocket: WebSocketHandler?
    /// Plain HTTP routes on the same port.
    public var http = HTTPRoutes()
    /// A request body larger than this is answered 413 and the connection closed once the rest of
    /// the body (up to 16 times this or 16 MiB, whichever is more) has been read and thrown away.
    public var maxRequestBodyBytes = 1 << 20
    /// Extra request headers (lower-case names) handed to WebSocket handlers and HTTP handlers.
    public var capturedHeaders: [String] = []
    /// Serve wss/https instead of ws/http.
    public var tls: ServerTLS?

    public init() {}
}

/// Certificate and key for a TLS listener, and optionally client-certificate checking (mTLS).
public struct ServerTLS: Sendable, Hashable {
    public var certificateFile: String
    public var privateKeyFile: String
    /// CA that client certificates must chain to; needed when ``requireClientCertificate``.
    public var clientCAFile: String?
    public var requireClientCertificate = false

    public init(
        certificateFile: String, privateKeyFile: String, clientCAFile: String? = nil,
        requireClientCertificate: Bool = false
    ) {
        self.certificateFile = certificateFile
        self.privateKeyFile = privateKeyFile
        self.clientCAFile = clientCAFile
        self.requireClientCertificate = requireClientCertificate
    }
}

/// How a client link checks (and presents) certificates on `wss://`.
public struct ClientTLS: Sendable, Hashable {
    /// CA bundle to verify the server against; nil uses the system store.
    public var caFile: String?
    /// Development only: accept a self-signed server certificate and skip the host-name check.
    public var allowSelfSigned = false
    /// Client certificate and key, for servers that require mTLS.
    public var certificateFile: String?
    public var privateKeyFile: String?

    public init(
        caFile: String? = nil, allowSelfSigned: Bool = false, certificateFile: String? = nil,
        privateKeyFile: String? = nil
    ) {
        self.caFile = caFile
        self.allowSelfSigned = allowSelfSigned
        self.certificateFile = certificateFile
        self.privateKeyFile = privateKeyFile
    }
}

/// One client link to dial.
public struct DialConfiguration: Sendable {
    /// `ws://host[:port]/path?query` or `wss://...`.
    public var url: String
    /// Subprotocol to ask for, e.g. `muster.backend.v1`.
    public var subprotocol: String?
    /// Extra handshake headers (e.g. `Authorization`).
    public var headers: [(name: String, value: String)] = []
    /// Used for `wss://`; nil means verify against the system store.
    public var tls: ClientTLS?

    public init(
        url: String, subprotocol: String? = nil, headers: [(name: String, value: String)] = [], tls: ClientTLS? = nil
    ) {
        self.url = url
        self.subprotocol = subprotocol
        self.headers = headers
        self.tls = tls
    }
}

extension Duration {
    /// Whole seconds, rounded up, at least 1, clamped to what lws' 16-bit fields hold.
    var lwsSeconds: UInt16 {
        let (s, atto) = components
        var secs = s + (atto > 0 ? 1 : 0)
        if secs < 1 { secs = 1 }
        return UInt16(min(secs, Int64(UInt16.max)))
    }

    var nanoseconds: Int64 {
        let (s, atto) = components
        return s * 1_000_000_000 + atto / 1_000_000_000
    }

    var microseconds: Int64 {
        let (s, atto) = components
        return s * 1_000_000 + atto / 1_000_000_000_000
    }
}
