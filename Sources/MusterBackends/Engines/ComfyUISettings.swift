import MusterProtocol

/// Where a ComfyUI is and how Muster reads it.
public struct ComfyUISettings: Sendable, Equatable {
    /// `http://host:port` (or `https://`), no trailing slash.
    public var url: String
    public var featureMap: ComfyUIFeatureMap
    /// Announced on top of the mapped ones.
    public var extraFeatures: [String]
    /// How often `/system_stats` is read for telemetry while the server answers.
    public var telemetryInterval: Duration
    /// How often a server that does not answer is tried again.
    public var retryInterval: Duration
    /// How long jobs in flight wait for a server that stopped answering before they are given
    /// back (a new incarnation: the coordinator requeues them).
    public var lostAfter: Duration
    public var requestTimeout: Duration

    public init(
        url: String, featureMap: ComfyUIFeatureMap = .defaults, extraFeatures: [String] = [],
        telemetryInterval: Duration = .seconds(10), retryInterval: Duration = .seconds(2), lostAfter: Duration = .seconds(5),
        requestTimeout: Duration = .seconds(30)
    ) {
        var u = url
        while u.hasSuffix("/") { u.removeLast() }
        self.url = u
        self.featureMap = featureMap
        self.extraFeatures = extraFeatures
        self.telemetryInterval = telemetryInterval
        self.retryInterval = retryInterval
        self.lostAfter = lostAfter
        self.requestTimeout = requestTimeout
    }

    /// The WebSocket URL of `/ws` for a client id.
    func wsURL(clientID: String) -> String {
        let ws = url.hasPrefix("https://") ? "wss://" + url.dropFirst(8) : "ws://" + url.dropFirst(url.hasPrefix("http://") ? 7 : 0)
        return "\(ws)/ws?clientId=\(clientID)"
    }
}
