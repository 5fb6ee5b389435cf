/// Why a message was rejected: a code from the shared set, where (a field path such as
/// `jobs[2].needs[0]`, empty for the whole message), why, and what could be read of the message
/// so the answer can echo its request `id`.
public struct ProtocolError: Error, Hashable, Sendable, CustomStringConvertible {
    /// `malformed_json`, `invalid_message`, `unknown_type`, `message_too_large`, `limit_exceeded`,
    /// `wrong_role`.
    public var code: ErrorCode
    /// Where in the message, e.g. `jobs[2].needs[0]`; empty when it concerns the whole message.
    public var path: String
    /// What was wrong, for people. Never contains a credential.
    public var reason: String
    /// The request `id` of the message, when it could be read; an `error` answer echoes it.
    public var requestID: String?
    /// The message `type`, when it could be read.
    public var messageType: String?

    public init(
        code: ErrorCode, path: String = "", reason: String, requestID: String? = nil, messageType: String? = nil
    ) {
        self.code = code
        self.path = path
        self.reason = reason
        self.requestID = requestID
        self.messageType = messageType
    }

    /// The close code the link must be closed with, or nil when the link stays up after the
    /// `error` answer (malformed or invalid messages do not end a link).
    public var closeCode: CloseCode? {
        switch code {
        case .messageTooLarge: .messageTooBig
        case .wrongRole: .wrongRole
        default: nil
        }
    }

    /// The wire `error` answer for this rejection.
    public var errorMessage: Wire.ErrorMessage {
        Wire.ErrorMessage(id: requestID, code: code, message: path.isEmpty ? reason : "\(path): \(reason)")
    }

    /// The HTTP error body for this rejection (status: `code.httpStatus`).
    public var errorBody: Wire.ErrorBody { errorMessage.body }

    public var description: String {
        var s = "\(code)"
        if let messageType { s += " in '\(messageType)'" }
        if !path.isEmpty { s += " at \(path)" }
        return s + ": \(reason)"
    }

    static func invalid(_ path: String, _ reason: String) -> ProtocolError {
        ProtocolError(code: .invalidMessage, path: path, reason: reason)
    }

    static func limit(_ path: String, _ reason: String) -> ProtocolError {
        ProtocolError(code: .limitExceeded, path: path, reason: reason)
    }

    /// Makes the path relative to the enclosing object: `needs[0]` inside member `jobs[2]`.
    mutating func prepend(key: String) {
        if path.isEmpty {
            path = key
        } else if path.utf8.first == UInt8(ascii: "[") {
            path = key + path
        } else {
            path = key + "." + path
        }
    }

    mutating func prepend(index: Int) {
        if path.isEmpty || path.utf8.first == UInt8(ascii: "[") {
            path = "[\(index)]" + path
        } else {
            path = "[\(index)]." + path
        }
    }
}

/// A WebSocket close code as Muster uses it. 1000–1011 come from RFC 6455; 4000–4999 are Muster's.
public struct CloseCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    public init(_ rawValue: UInt16) { self.rawValue = rawValue }
    public var description: String { String(rawValue) }

    /// The link was closed on purpose and is not coming back (e.g. after `goodbye`).
    public static let normal = CloseCode(1000)
    /// The peer is shutting down or restarting; reconnect with backoff.
    public static let goingAway = CloseCode(1001)
    /// WebSocket framing violated (transport).
    public static let protocolError = CloseCode(1002)
    /// A binary frame: Muster speaks text frames only.
    public static let unsupportedData = CloseCode(1003)
    /// A text frame that is not valid UTF-8 (transport).
    public static let invalidPayload = CloseCode(1007)
    /// A message sent out of order, e.g. anything but `hello` before `welcome`, or a second `hello`.
    public static let policyViolation = CloseCode(1008)
    /// A message over the size limit (default 1 MiB).
    public static let messageTooBig = CloseCode(1009)
    /// The peer failed unexpectedly.
    public static let internalError = CloseCode(1011)
    /// `hello` carried a token the coordinator does not accept.
    public static let badCredentials = CloseCode(4001)
    /// No protocol version in `hello.versions` is supported.
    public static let noCommonVersion = CloseCode(4002)
    /// `hello.role` does not match the subprotocol, or the subprotocol is unknown.
    public static let wrongRole = CloseCode(4003)
    /// No `hello` within the handshake timeout (default 10 s).
    public static let handshakeTimeout = CloseCode(4004)
    /// A newer link registered the same backend name; this one is closed.
    public static let replaced = CloseCode(4005)
    /// No heartbeat answer within three heartbeat intervals.
    public static let heartbeatTimeout = CloseCode(4006)
    /// The credential is valid but may not open this link: a client's token on the backend link,
    /// a backend's on the client link, or a backend token bound to another backend name.
    public static let forbidden = CloseCode(4007)
    /// The link sent more messages per second than the coordinator allows (after `rate_limited`).
    public static let rateLimited = CloseCode(4008)
    /// The link's source address holds as many links as the coordinator allows (after `too_many_links`).
    public static let tooManyLinks = CloseCode(4009)
    /// This coordinator is a standby: the `not_leader` error before it names the leader to dial.
    public static let notLeader = CloseCode(4010)
}
