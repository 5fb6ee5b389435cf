/// One HTTP/1.1 request made by ``Transport/request(_:completion:)``: one TCP (or TLS)
/// connection per request, closed when the response is complete (no pooling, no redirects).
public struct HTTPClientRequest: Sendable {
    public var method: HTTPMethod
    /// `http://host[:port]/path?query` or `https://...`; IPv6 hosts in brackets.
    public var url: String
    /// Extra request headers, e.g. `Content-Type`. `Host` and `Content-Length` are set by the
    /// transport (given ones are replaced).
    public var headers: [(name: String, value: String)]
    /// The request body; empty for none.
    public var body: [UInt8]
    /// For the whole request: connect, send and the complete response. lws also bounds the TCP
    /// connect alone by ``TransportConfiguration/handshakeTimeout`` (10 s by default), failing
    /// with ``HTTPClientError/Code/connectFailed``.
    public var timeout: Duration
    /// A response body larger than this fails with ``HTTPClientError/Code/responseTooLarge``.
    public var maxResponseBytes: Int
    /// Used for `https://`; nil verifies against the system trust store.
    public var tls: ClientTLS?

    public init(
        method: HTTPMethod = .get, url: String, headers: [(name: String, value: String)] = [], body: [UInt8] = [],
        timeout: Duration = .seconds(30), maxResponseBytes: Int = 64 << 20, tls: ClientTLS? = nil
    ) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.timeout = timeout
        self.maxResponseBytes = maxResponseBytes
        self.tls = tls
    }
}

/// A complete response, whatever its status.
public struct HTTPClientResponse: Sendable {
    public var status: Int
    /// Lower-cased names. Only the headers lws knows by name (the standard HTTP set: content-type,
    /// content-length, location, set-cookie, ...); lws 4.1 cannot list others.
    public var headers: [(name: String, value: String)]
    /// The body, with any chunked transfer-coding removed.
    public var body: [UInt8]

    public init(status: Int, headers: [(name: String, value: String)] = [], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// The value of the first header called `name` (case-insensitive).
    public func header(_ name: String) -> String? {
        let wanted = name.lowercased()
        return headers.first { $0.name == wanted }?.value
    }

    /// The body as UTF-8 text (JSON bodies).
    public var bodyText: String { String(decoding: body, as: UTF8.self) }
}

/// Why a request produced no response.
public struct HTTPClientError: Error, Sendable, Equatable, CustomStringConvertible {
    public var code: Code
    /// lws' reason or ours, for logs.
    public var message: String

    public init(code: Code, message: String) {
        self.code = code
        self.message = message
    }

    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let rawValue: String
        public init(_ rawValue: String) { self.rawValue = rawValue }
        /// No connection (refused, unreachable, DNS, TLS verification or handshake failed).
        public static let connectFailed = Code("connectFailed")
        /// No complete response within ``HTTPClientRequest/timeout``; the connection was closed.
        public static let timeout = Code("timeout")
        /// The body passed ``HTTPClientRequest/maxResponseBytes``; the connection was closed.
        public static let responseTooLarge = Code("responseTooLarge")
        /// The URL is not `http://` or `https://` with a host, or has characters a request line
        /// cannot carry.
        public static let badURL = Code("badURL")
        /// A header name or value the request cannot carry (CR, LF, empty name, `:`), or a
        /// method that is not a token; or a client TLS setup lws cannot load.
        public static let badRequest = Code("badRequest")
        /// The server broke HTTP: bad response head, connection closed before the body ended.
        public static let protocolError = Code("protocolError")
        /// The transport is shutting down or shut down.
        public static let shutdown = Code("shutdown")
        public var description: String { rawValue }
    }

    public var description: String { "http client \(code): \(message)" }
}

/// The parts of an `http(s)://` URL the client needs.
struct HTTPURL: Equatable {
    var secure: Bool
    var host: String
    var port: Int32
    /// Path plus `?query`, at least "/".
    var path: String

    /// The Host header: the port only when it is not the scheme's default; IPv6 in brackets.
    var hostHeader: String {
        let h = host.contains(":") ? "[\(host)]" : host
        return port == (secure ? 443 : 80) ? h : "\(h):\(port)"
    }
}

/// Parses `http://host[:port][/path][?query]` and `https://...`. A fragment is dropped; spaces
/// and control characters are refused (they would break the request line).
func parseHTTPURL(_ text: String) throws(HTTPClientError) -> HTTPURL {
    let parsed: WebSocketURL
    do {
        parsed = try parseURL(text, plain: "http", secure: "https")
    } catch {
        throw HTTPClientError(code: .badURL, message: error.message)
    }
    var path = parsed.path
    if let hash = path.firstIndex(of: "#") { path = String(path[..<hash]) }
    if path.isEmpty { path = "/" }
    if path.unicodeScalars.contains(where: { $0.value <= 0x20 || $0.value == 0x7f }) {
        throw HTTPClientError(code: .badURL, message: "\(text): spaces and control characters must be %-encoded")
    }
    if parsed.host.unicodeScalars.contains(where: { $0.value <= 0x20 || $0.value == 0x7f || $0 == "/" }) {
        throw HTTPClientError(code: .badURL, message: "\(text): bad host")
    }
    return HTTPURL(secure: parsed.secure, host: parsed.host, port: parsed.port, path: path)
}

/// Refuses header names and values that would split the request head, and methods that are not
/// an HTTP token.
func validateHTTPClientRequest(_ request: HTTPClientRequest) throws(HTTPClientError) {
    let tchar = Set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".unicodeScalars)
    let method = request.method.rawValue
    if method.isEmpty || !method.unicodeScalars.allSatisfy({ tchar.contains($0) }) {
        throw HTTPClientError(code: .badRequest, message: "method \"\(method)\" is not an HTTP token")
    }
    for (name, value) in request.headers {
        if name.isEmpty || !name.unicodeScalars.allSatisfy({ tchar.contains($0) }) {
            throw HTTPClientError(code: .badRequest, message: "header name \"\(name)\" is not an HTTP token")
        }
        if value.unicodeScalars.contains(where: { ($0.value < 0x20 && $0 != "\t") || $0.value == 0x7f }) {
            throw HTTPClientError(code: .badRequest, message: "header \(name): value has a control character")
        }
    }
    if request.maxResponseBytes < 0 {
        throw HTTPClientError(code: .badRequest, message: "maxResponseBytes is negative")
    }
}
