import MusterProtocol

/// Why a ``MusterClient`` call failed: a code, a message that says what to do, and for errors the
/// coordinator sent, its `details`. Codes are the coordinator's (`bad_credentials`,
/// `unknown_batch`, ...) or one of the client-side codes below.
public struct MusterClientError: Error, Hashable, Sendable, CustomStringConvertible {
    public var code: ErrorCode
    /// For people: what went wrong, where, and what to do. Never contains the token.
    public var message: String
    /// The coordinator's `details` object, when it sent one.
    public var details: RawJSON?
    /// The WebSocket close code, when the link closed.
    public var closeCode: UInt16?

    public init(code: ErrorCode, message: String, details: RawJSON? = nil, closeCode: UInt16? = nil) {
        self.code = code
        self.message = message
        self.details = details
        self.closeCode = closeCode
    }

    /// `code: message`, as the CLI prints it after `muster: `.
    public var description: String { "\(code): \(message)" }

    /// The URL is not `ws://`, `wss://`, `http://` or `https://`.
    public static let invalidURL = ErrorCode("invalid_url")
    /// The coordinator could not be reached, or the network loop could not start.
    public static let connectionFailed = ErrorCode("connection_failed")
    /// No `welcome`, or no answer to a request, within the configured time.
    public static let timeout = ErrorCode("timeout")
    /// The link closed (after `welcome`, or during the handshake without an `error`).
    public static let linkClosed = ErrorCode("link_closed")
    /// The coordinator answered with a message this client cannot use.
    public static let unexpectedAnswer = ErrorCode("unexpected_answer")
    /// The client was closed, or the waiting task was cancelled.
    public static let clientClosed = ErrorCode("client_closed")
}
