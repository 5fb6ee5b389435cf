import Foundation
import MusterProtocol
import MusterTransport

extension MusterClient {
    /// Where and how a ``MusterClient`` connects.
    public struct Options: Sendable {
        /// `ws://HOST:PORT` or `wss://...`; `http(s)://` and a bare `HOST:PORT` are accepted too.
        /// Several, separated by commas (`ws://a:7460,ws://b:7460`: two coordinators on one
        /// database): they are dialled in order until one takes the link, and a standby's
        /// `not_leader` is followed to the leader it names.
        public var coordinator: String
        /// Names the client in the coordinator's logs; the default `owner` of its jobs.
        /// Must match `^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`.
        public var name: String
        /// The coordinator's client token (`auth.token`); nil when it requires none.
        public var token: String?
        /// Bound on dialling plus the `hello`/`welcome` handshake.
        public var connectTimeout: Duration = .seconds(10)
        /// Bound on each request's answer; nil waits as long as the link is up.
        public var requestTimeout: Duration? = .seconds(30)
        /// Certificate checks for `wss://`; nil verifies against the system store.
        public var tls: ClientTLS?
        /// Sent in `hello` as `software`.
        public var software: String? = "muster/\(MusterVersion.current)"
        /// Largest message accepted from the coordinator. Generous: a `status_report` of a large
        /// fleet may pass the 1 MiB the coordinator accepts from clients.
        public var maxMessageBytes = 16 << 20
        /// When set, every `job` event is handed to this closure on the client's loop thread, as
        /// soon as it is decoded, instead of to ``MusterClient/events`` (which then stays empty).
        /// It must return quickly: it runs on the thread that serves the link. For consumers that
        /// keep up with tens of thousands of events a second without a task switch per event.
        public var onEvent: (@Sendable (CoordinatorToClient.JobEvent) -> Void)?

        public init(coordinator: String = "ws://127.0.0.1:7460", name: String = "muster-client", token: String? = nil) {
            self.coordinator = coordinator
            self.name = name
            self.token = token
        }

        /// The `ws://` or `wss://` URLs to dial for `coordinator`, in order.
        public func webSocketURLs() throws(MusterClientError) -> [String] {
            let parts = coordinator.split(separator: ",", omittingEmptySubsequences: false)
            var urls: [String] = []
            for part in parts { urls.append(try Self.webSocketURL(String(part))) }
            return urls
        }

        /// The first URL of ``webSocketURLs()``.
        public func webSocketURL() throws(MusterClientError) -> String { try webSocketURLs()[0] }

        /// The coordinator's port when an address names none and has no scheme (`listen`'s default).
        public static let defaultPort = 7460

        /// The `ws://` or `wss://` URL to dial for one coordinator address.
        public static func webSocketURL(_ coordinator: String) throws(MusterClientError) -> String {
            let text = coordinator.trimmingCharacters(in: .whitespaces)
            let mapped: String
            if text.hasPrefix("ws://") || text.hasPrefix("wss://") {
                mapped = text
            } else if text.hasPrefix("http://") {
                mapped = "ws://" + text.dropFirst("http://".count)
            } else if text.hasPrefix("https://") {
                mapped = "wss://" + text.dropFirst("https://".count)
            } else if !text.contains("://"), !text.isEmpty {
                // A bare HOST or HOST:PORT; a bare host means the coordinator's port, not the URL's 80.
                let authority = text.prefix { $0 != "/" && $0 != "?" }
                let afterHost = authority.hasPrefix("[") ? authority.drop { $0 != "]" } : authority[...]
                let port = afterHost.contains(":") ? "" : ":\(defaultPort)"
                mapped = "ws://" + authority + port + text.dropFirst(authority.count)
            } else {
                throw MusterClientError(
                    code: MusterClientError.invalidURL,
                    message: "'\(coordinator)' is not a coordinator URL; expected ws://HOST:PORT or wss://HOST:PORT")
            }
            let authority = mapped.drop { $0 != "/" }.dropFirst(2).prefix { $0 != "/" && $0 != "?" }
            guard !authority.isEmpty else {
                throw MusterClientError(
                    code: MusterClientError.invalidURL,
                    message: "'\(coordinator)' names no host; expected ws://HOST:PORT")
            }
            return mapped
        }
    }
}
