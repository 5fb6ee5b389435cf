/// Monotonic counters of one transport, for metrics. Read them on the loop
/// (``Transport/counters``); byte counts are message payload bytes (WebSocket) and body bytes
/// (HTTP), not including framing.
public struct TransportCounters: Sendable, Equatable {
    public var bytesIn = 0
    public var bytesOut = 0
    public var messagesIn = 0
    public var messagesOut = 0
    /// WebSocket connections that completed a handshake (server and client side, each reconnect).
    public var connectionsOpened = 0
    public var connectionsClosed = 0
    /// Closed WebSockets by the code reported in ``CloseEvent/code``.
    public var closesByCode: [UInt16: Int] = [:]
    /// Connections closed with 1008 because their outbound queue passed the high-water mark.
    public var slowPeerDrops = 0
    /// Accepted TCP connections dropped because their TLS/HTTP/WebSocket handshake did not
    /// complete in time. lws does the dropping and does not say why, so a socket counts when it
    /// is destroyed mid-handshake at least `handshakeTimeout - 0.5 s` after it was accepted.
    public var handshakeTimeouts = 0
    /// Accepted TCP connections closed at once because their source address had
    /// ``TransportConfiguration/maxPendingHandshakesPerAddress`` handshakes pending already.
    public var handshakesRefused = 0
    /// WebSocket upgrades answered HTTP 400 because they offered no subprotocol served here.
    public var upgradesRefused = 0
    /// PINGs sent by the keepalive to links idle for ``TransportConfiguration/keepalivePingAfter``.
    public var keepalivePings = 0
    /// PONGs received: answers to those PINGs, or unsolicited ones (on server connections only
    /// those with a payload; lws does not report an empty one there).
    public var keepalivePongs = 0
    /// Open WebSockets dropped because nothing arrived for
    /// ``TransportConfiguration/keepaliveHangUpAfter`` (also counted in ``closesByCode``: as 1006,
    /// or as the code of a close this side had already started).
    public var keepaliveTimeouts = 0
    /// Dials made by client links after the first one.
    public var reconnectAttempts = 0
    /// Client dial attempts that failed before the WebSocket opened.
    public var dialFailures = 0
    public var httpRequests = 0

    public init() {}
}
