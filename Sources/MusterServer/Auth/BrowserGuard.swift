import Foundation
import MusterTransport

/// Keeps web pages from using the coordinator through the operator's browser.
///
/// A browser reaches loopback too: any page the operator opens may send a form `POST` (with a
/// JSON text body: the HTTP API reads bodies whatever their `Content-Type`) or open a WebSocket to
/// `127.0.0.1:7460`, and a page whose own name is made to resolve to 127.0.0.1 (DNS rebinding) is
/// even same-origin with it. Browsers always say where a request comes from (`Origin`) on a
/// WebSocket upgrade and on a cross-origin `POST`, and address it by name (`Host`); programs such
/// as `muster agent`, `muster submit`, `curl` and most WebSocket libraries send no `Origin`.
///
/// - A WebSocket upgrade, or an HTTP request that changes something (any method but `GET`,
///   `HEAD`, `OPTIONS`), that carries an `Origin` is refused unless that origin is the
///   coordinator's own (its host and port are the request's `Host`, whatever its scheme: one
///   port serves one scheme, and behind a proxy that terminates TLS the page's `https` origin is
///   the coordinator's own) or is listed in `auth.allowed_origins`.
/// - While the coordinator listens on loopback with no client credentials, a request whose `Host`
///   is not a loopback name (`localhost`, `*.localhost`, `127.x.y.z`, `[::1]`, the listen host)
///   or the host of an allowed origin is refused: that is a rebinding page.
struct BrowserGuard: Sendable {
    /// `auth.allowed_origins`, each as `scheme://host[:port]` lower-cased without a default port.
    var allowedOrigins: Set<String>
    /// Check `Host`: the coordinator listens on loopback and a client needs no credentials.
    var loopbackHostsOnly: Bool
    /// The listen address's host, lower-cased.
    var listenHost: String

    /// Why the request is refused, or nil. `changes`: an HTTP request that is not a read, or a
    /// WebSocket upgrade.
    func refusal(origin: String?, host: String?, changes: Bool) -> String? {
        let rawHost = host?.lowercased()
        let host = rawHost.map(Self.withoutDefaultPort)
        if loopbackHostsOnly, let host, !host.isEmpty {
            let name = Self.hostName(of: host)
            let allowed = Self.isLoopbackName(name) || name == listenHost
                || allowedOrigins.contains { Self.hostName(of: Self.authority(of: $0)) == name }
            if !allowed {
                return "Host '\(host)' is not a loopback name: a coordinator on loopback without client credentials "
                    + "answers only requests addressed to localhost, 127.0.0.1 or [::1] (a DNS-rebinding guard); "
                    + "list the origin in auth.allowed_origins or configure credentials"
            }
        }
        guard changes, let origin, !origin.isEmpty else { return nil }
        let normalized = Self.normalizedOrigin(origin)
        if let normalized, allowedOrigins.contains(normalized) { return nil }
        // The Host as sent, its port a default one only for the origin's own scheme.
        if let normalized, let sent = rawHost, let scheme = normalized.split(separator: ":").first,
            normalized == Self.normalizedOrigin("\(scheme)://\(sent)")
        {
            return nil
        }
        return "a page from Origin '\(origin)' may not use this coordinator (its Host is '\(host ?? "")'): "
            + "browsers are refused cross-origin requests and WebSockets; list the origin in auth.allowed_origins"
    }

    /// `scheme://host[:port]` lower-cased, without a path and without the scheme's default port;
    /// nil when `text` is not such an origin (`null`, a bare host).
    static func normalizedOrigin(_ text: String) -> String? {
        let lower = text.trimmingCharacters(in: .whitespaces).lowercased()
        guard let range = lower.range(of: "://") else { return nil }
        let scheme = lower[..<range.lowerBound]
        guard ["http", "https"].contains(scheme) else { return nil }
        var authority = String(lower[range.upperBound...])
        if authority.hasSuffix("/") { authority.removeLast() }
        guard !authority.isEmpty, !authority.contains("/"), !authority.contains("@") else { return nil }
        if scheme == "http", authority.hasSuffix(":80") { authority.removeLast(3) }
        if scheme == "https", authority.hasSuffix(":443") { authority.removeLast(4) }
        return "\(scheme)://\(authority)"
    }

    /// Parses `auth.allowed_origins`: origins separated by commas.
    static func origins(_ text: String) -> Result<Set<String>, InvalidOrigin> {
        var out = Set<String>()
        for item in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !item.isEmpty {
            guard let origin = normalizedOrigin(item) else { return .failure(InvalidOrigin(text: item)) }
            out.insert(origin)
        }
        return .success(out)
    }

    struct InvalidOrigin: Error {
        var text: String
    }

    static func authority(of origin: String) -> String {
        guard let range = origin.range(of: "://") else { return origin }
        return String(origin[range.upperBound...])
    }

    /// A Host header without `:80` or `:443` (a browser omits the default port of its scheme).
    static func withoutDefaultPort(_ host: String) -> String {
        for suffix in [":80", ":443"] where host.hasSuffix(suffix) { return String(host.dropLast(suffix.count)) }
        return host
    }

    /// `host[:port]` or `[v6][:port]` without the port; an unbracketed IPv6 literal (`::1`, as
    /// some clients write `Host`) bracketed.
    static func hostName(of authority: String) -> String {
        if authority.hasPrefix("["), let end = authority.firstIndex(of: "]") {
            return String(authority[...end])
        }
        if authority.filter({ $0 == ":" }).count >= 2 { return "[\(authority)]" }
        return String(authority.prefix { $0 != ":" })
    }

    /// `HostPort.isLoopback`'s names (`localhost`, 127.0.0.0/8, `::1`), bracketed or not, and
    /// the `.localhost` names browsers resolve to loopback themselves.
    static func isLoopbackName(_ name: String) -> Bool {
        let bare = name.hasPrefix("[") && name.hasSuffix("]") ? String(name.dropFirst().dropLast()) : name
        return name.hasSuffix(".localhost") || HostPort(host: bare, port: 0).isLoopback
    }
}
