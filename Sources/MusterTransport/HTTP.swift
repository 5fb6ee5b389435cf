/// An HTTP method the transport routes.
public struct HTTPMethod: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String
    public init(_ rawValue: String) { self.rawValue = rawValue }
    public static let get = HTTPMethod("GET")
    public static let post = HTTPMethod("POST")
    public static let put = HTTPMethod("PUT")
    public static let patch = HTTPMethod("PATCH")
    public static let delete = HTTPMethod("DELETE")
    public static let options = HTTPMethod("OPTIONS")
    public static let head = HTTPMethod("HEAD")
    public var description: String { rawValue }
}

/// Identifies a request whose handler answered ``HTTPOutcome/deferred``.
public struct HTTPRequestID: Hashable, Sendable {
    let rawValue: UInt64
}

/// A complete HTTP request (body read up to ``ServerConfiguration/maxRequestBodyBytes``).
public struct HTTPRequest: Sendable {
    public var id: HTTPRequestID
    public var method: HTTPMethod
    /// Decoded path without the query, e.g. `/v1/jobs/42`.
    public var path: String
    /// Query string without the `?`, empty when absent.
    public var query: String
    /// Selected headers, lower-case names: `content-type`, `authorization`, `host`, plus
    /// ``ServerConfiguration/capturedHeaders``.
    public var headers: [String: String]
    public var body: [UInt8]
    public var peer: String
    /// The subject common name of the peer's verified client certificate (mTLS); nil otherwise.
    public var peerCertificateName: String? = nil

    /// The body as UTF-8 text (JSON bodies).
    public var bodyText: String { String(decoding: body, as: UTF8.self) }
}

/// A response to send.
public struct HTTPResponse: Sendable {
    public var status: Int
    public var contentType: String
    /// Extra header lines, e.g. `("allow", "GET, POST")`.
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]

    public init(
        status: Int, contentType: String = "application/json", headers: [(name: String, value: String)] = [],
        body: [UInt8] = []
    ) {
        self.status = status
        self.contentType = contentType
        self.headers = headers
        self.body = body
    }

    /// A JSON response from already-encoded JSON text.
    public static func json(_ status: Int, _ json: String) -> HTTPResponse {
        HTTPResponse(status: status, body: Array(json.utf8))
    }

    /// The JSON error body every error uses: `{"error":{"status":404,"message":"..."}}`.
    public static func error(_ status: Int, _ message: String, headers: [(name: String, value: String)] = [])
        -> HTTPResponse
    {
        HTTPResponse(
            status: status, headers: headers,
            body: Array("{\"error\":{\"status\":\(status),\"message\":\(jsonString(message))}}".utf8))
    }
}

/// What a route handler decided.
public enum HTTPOutcome: Sendable {
    /// Send this now.
    case respond(HTTPResponse)
    /// The handler will call ``Transport/respond(to:with:)`` later (on the loop).
    case deferred
}

/// A route handler; runs on the loop thread, isolated to the transport.
public typealias HTTPHandler = @Sendable (isolated Transport, HTTPRequest) -> HTTPOutcome

/// Exact-path routes per method, plus a fallback for patterns such as `/v1/jobs/{id}`.
/// A known path with an unknown method gets 405 with `Allow`; an unknown path goes to the
/// fallback, and 404 when there is none or it returns nil.
public struct HTTPRoutes: Sendable {
    var exact: [String: [HTTPMethod: HTTPHandler]] = [:]
    /// Called for paths without an exact route; return nil for 404.
    public var fallback: (@Sendable (isolated Transport, HTTPRequest) -> HTTPOutcome?)?
    /// Renders the errors the transport answers by itself (404, 405, 413) so that they share
    /// the error shape of the layer above. The default is ``HTTPResponse/error(_:_:headers:)``.
    public var errorResponse: @Sendable (_ status: Int, _ message: String) -> HTTPResponse = { HTTPResponse.error($0, $1) }

    public init() {}

    public mutating func add(_ method: HTTPMethod, _ path: String, _ handler: @escaping HTTPHandler) {
        exact[path, default: [:]][method] = handler
    }

    public mutating func get(_ path: String, _ handler: @escaping HTTPHandler) { add(.get, path, handler) }
    public mutating func post(_ path: String, _ handler: @escaping HTTPHandler) { add(.post, path, handler) }
    public mutating func delete(_ path: String, _ handler: @escaping HTTPHandler) { add(.delete, path, handler) }

    func route(_ transport: isolated Transport, _ request: HTTPRequest) -> HTTPOutcome {
        if let methods = exact[request.path] {
            if let h = methods[request.method] { return h(transport, request) }
            let allow = methods.keys.map(\.rawValue).sorted().joined(separator: ", ")
            var response = errorResponse(405, "\(request.path) takes \(allow), not \(request.method)")
            response.headers.append(("allow", allow))
            return .respond(response)
        }
        if let fallback, let outcome = fallback(transport, request) { return outcome }
        return .respond(errorResponse(404, "no route for \(request.method) \(request.path)"))
    }
}

/// JSON string literal for `s` (quotes included).
func jsonString(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if u.value < 0x20 {
                let hex = String(u.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            } else {
                out.unicodeScalars.append(u)
            }
        }
    }
    return out + "\""
}

/// The `Authorization` request header.
public enum Authorization {
    /// The token of `Bearer TOKEN`; nil for another scheme or none. The scheme is matched
    /// without regard to case (RFC 9110 11.1: `bearer` is `Bearer`), and spaces after it are
    /// skipped.
    public static func bearerToken(_ header: String) -> String? {
        let scheme = header.prefix { $0 != " " }
        guard scheme.lowercased() == "bearer" else { return nil }
        return String(header.dropFirst(scheme.count).drop { $0 == " " })
    }
}
