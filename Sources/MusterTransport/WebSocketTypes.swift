/// One WebSocket connection or client link on a ``Transport``. A client link keeps its id across
/// reconnects; a server connection's id is never reused within a process.
public struct ConnectionID: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public var description: String { "c\(rawValue)" }
}

/// A WebSocket close status code (RFC 6455 section 7.4). Open-ended: any `UInt16` is allowed.
public struct CloseCode: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt16
    public init(_ rawValue: UInt16) { self.rawValue = rawValue }

    public static let normal = CloseCode(1000)
    public static let goingAway = CloseCode(1001)
    public static let protocolError = CloseCode(1002)
    public static let unsupportedData = CloseCode(1003)
    /// The peer sent a close frame without a code (never sent on the wire).
    public static let noStatus = CloseCode(1005)
    /// The connection ended without a close frame: reset, keepalive timeout, handshake failure.
    public static let abnormal = CloseCode(1006)
    public static let invalidPayload = CloseCode(1007)
    public static let policyViolation = CloseCode(1008)
    public static let messageTooBig = CloseCode(1009)
    public static let internalError = CloseCode(1011)

    public var description: String { String(rawValue) }
}

/// What a handler learns when a WebSocket opens: a server connection after its handshake, or a
/// client link each time it (re)connects.
public struct ConnectionInfo: Sendable {
    public var id: ConnectionID
    /// The negotiated subprotocol; nil when the client asked for none.
    public var subprotocol: String?
    /// Peer IP address as text (for a client link: the host it dialled).
    public var peer: String
    /// Request path without the query (server side), or the dialled path (client side).
    public var path: String
    /// Raw query string without the `?`, empty when absent.
    public var query: String
    /// Selected request headers, names lower-cased: `authorization`, `origin`, `user-agent`,
    /// `host`, plus the names listed in ``ServerConfiguration/capturedHeaders``.
    public var headers: [String: String]
    /// True for a link this process dialled.
    public var isClient: Bool
    /// The subject common name of the client certificate the peer presented, when the listener
    /// requires one (mTLS, ``ServerTLS/clientCAFile``) and it verified; nil otherwise.
    public var peerCertificateName: String? = nil
}

/// A WebSocket went down.
public struct CloseEvent: Sendable {
    public var id: ConnectionID
    /// The peer's close code if it sent one, else the code this side closed with, else 1006.
    public var code: CloseCode
    public var reason: String
    /// True when the peer sent the close frame first.
    public var initiatedByPeer: Bool
    /// For a client link: true when the transport will dial again (the id stays valid).
    public var willReconnect: Bool
}

/// Receives the events of WebSocket connections with one subprotocol, or of one client link.
/// Every closure runs synchronously on the loop thread, isolated to the transport, so it may call
/// ``Transport/send(text:to:)`` directly and enter an actor sharing the loop's executor with
/// `assumeIsolated`.
public struct WebSocketHandler: Sendable {
    /// Server side only: called during the handshake; nil accepts the upgrade, a response
    /// refuses it (written as the answer, with `Connection: close`; nothing opens).
    public var refuseUpgrade: (@Sendable (isolated Transport, ConnectionInfo) -> HTTPResponse?)?
    public var opened: @Sendable (isolated Transport, ConnectionInfo) -> Void
    /// A complete, reassembled, UTF-8 validated text message.
    public var text: @Sendable (isolated Transport, ConnectionID, String) -> Void
    /// A complete binary message. When nil, a binary message closes the connection with 1003.
    public var binary: (@Sendable (isolated Transport, ConnectionID, [UInt8]) -> Void)?
    public var closed: @Sendable (isolated Transport, CloseEvent) -> Void
    /// Client links only: one dial attempt failed (refused, TLS verification, handshake); the
    /// text is lws' reason. The link stays and dials again after its backoff.
    public var dialFailed: (@Sendable (isolated Transport, ConnectionID, String) -> Void)?
    /// Called once after ``Transport/notifyWhenDrained(_:atOrBelow:)`` when the connection's
    /// queue has drained to the mark.
    public var drained: (@Sendable (isolated Transport, ConnectionID) -> Void)?

    public init(
        refuseUpgrade: (@Sendable (isolated Transport, ConnectionInfo) -> HTTPResponse?)? = nil,
        opened: @escaping @Sendable (isolated Transport, ConnectionInfo) -> Void = { _, _ in },
        text: @escaping @Sendable (isolated Transport, ConnectionID, String) -> Void,
        binary: (@Sendable (isolated Transport, ConnectionID, [UInt8]) -> Void)? = nil,
        closed: @escaping @Sendable (isolated Transport, CloseEvent) -> Void = { _, _ in },
        dialFailed: (@Sendable (isolated Transport, ConnectionID, String) -> Void)? = nil,
        drained: (@Sendable (isolated Transport, ConnectionID) -> Void)? = nil
    ) {
        self.refuseUpgrade = refuseUpgrade
        self.opened = opened
        self.text = text
        self.binary = binary
        self.closed = closed
        self.dialFailed = dialFailed
        self.drained = drained
    }
}

/// What happened to a message handed to ``Transport/send(text:to:)``.
public enum SendResult: Sendable, Equatable {
    /// Queued; it goes out when the socket is writable (for a link that is down: after reconnect).
    case queued
    /// No such connection: it never existed, has closed, or is closing.
    case unknownConnection
    /// The connection's outbound queue passed its high-water mark: the peer is too slow, so the
    /// connection is being closed with 1008 and the message was dropped. (A client link closed
    /// this way dials again like after any other drop.)
    case closedSlowPeer
    /// A client link that is down has a full queue; the message was dropped, the link stays.
    case queueFull
}

/// A timer scheduled with ``Transport/schedule(after:_:)``.
public struct TimerID: Hashable, Sendable {
    let rawValue: UInt64
}

/// A listener created by ``Transport/listen(_:)``.
public struct Listener: Sendable, Hashable {
    /// The bound TCP port (the one the kernel picked when the configuration said 0).
    public let port: Int
    let index: Int
}

/// A problem a caller can act on: what failed and where.
public struct TransportError: Error, Sendable, CustomStringConvertible, Equatable {
    public let code: Code
    public let message: String

    public struct Code: Hashable, Sendable {
        let raw: String
        public static let contextCreation = Code(raw: "contextCreation")
        public static let listen = Code(raw: "listen")
        public static let invalidURL = Code(raw: "invalidURL")
        public static let tlsConfiguration = Code(raw: "tlsConfiguration")
        public static let shutDown = Code(raw: "shutDown")
    }

    public var description: String { "transport \(code.raw): \(message)" }
}
