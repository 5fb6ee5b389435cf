import Foundation
import MusterProtocol
import MusterStore
import MusterTransport

extension Configuration {
    /// Builds the effective configuration from its sources, later ones winning:
    /// embedded defaults < `file` < `environment` (`MUSTER_*`) < `overrides` (`--set KEY=VALUE`
    /// and dedicated flags, in order). Backends come from the file or `backends` overrides; when no
    /// source declares any, the embedded default's two local simulated backends are used.
    /// The merged values are then decoded once into `settings` and checked across keys; any
    /// failure is a `ConfigError` naming the key.
    public static func load(
        file: String?,
        environment: [String: String] = ProcessInfo.processInfo.environment,
        overrides: [(source: String, key: String, value: String)] = []
    ) throws(ConfigError) -> Configuration {
        var layers = Layers()
        var backendsDeclared = false

        if let file {
            let source = "file \(file)"
            guard let data = FileManager.default.contents(atPath: file) else {
                throw ConfigError(source: source, key: "", reason: "cannot be read (does it exist?)")
            }
            // A UTF-8 byte order mark, as some editors write, is not part of the text.
            var text = [UInt8](data)
            if text.starts(with: [0xEF, 0xBB, 0xBF]) { text.removeFirst(3) }
            let (root, twice): (Any, String?)
            switch Configuration.strictJSON(text) {
            case .success(let read): (root, twice) = read
            case .failure(let failure): throw ConfigError(source: source, key: "", reason: "is not valid JSON: \(failure.reason)")
            }
            guard let object = root as? [String: Any] else {
                throw ConfigError(source: source, key: "", reason: "expected a JSON object at the top level")
            }
            if let twice { throw ConfigError(source: source, key: twice, reason: "is given twice") }
            var seen = Set<String>()
            try layers.apply(
                object: object, prefix: "", source: source, environment: environment, backendsDeclared: &backendsDeclared,
                seen: &seen)
        }

        for key in ConfigKey.all {
            if let text = environment[key.environmentName] {
                try layers.set(key.name, text: text, source: "environment \(key.environmentName)", environment: environment)
            }
        }
        for (name, source) in Self.structuredKeys {
            if let text = environment[source] {
                try layers.set(name, text: text, source: "environment \(source)", environment: environment)
                if name == "backends" { backendsDeclared = true }
            }
        }
        for o in overrides {
            try layers.set(o.key, text: o.value, source: o.source, environment: environment)
            if o.key == "backends" { backendsDeclared = true }
        }
        if !backendsDeclared { layers.backends = BackendConfig.embeddedDefault }
        let config = Configuration(
            settings: try Settings(decoding: layers.values, origins: layers.origins), values: layers.values,
            backends: layers.backends, backendTokens: layers.backendTokens, credentials: layers.credentials,
            origins: layers.origins)
        try config.validate()
        return config
    }

    /// The keys whose values are JSON structures, with their environment variables.
    static let structuredKeys = [
        ("backends", "MUSTER_BACKENDS"), ("auth.backend_tokens", "MUSTER_AUTH_BACKEND_TOKENS"),
        ("auth.credentials", "MUSTER_AUTH_CREDENTIALS"),
    ]

    /// The sources merged so far, later ones overwriting: embedded defaults first.
    private struct Layers {
        var values: [String: ConfigValue] = Dictionary(uniqueKeysWithValues: ConfigKey.all.map { ($0.name, $0.defaultValue) })
        var backends: [BackendConfig] = []
        var backendTokens: [String: String] = [:]
        var credentials: [Credential] = []
        var origins = ConfigOrigins()

        mutating func apply(
            object: [String: Any], prefix: String, source: String, environment: [String: String],
            backendsDeclared: inout Bool, seen: inout Set<String>
        ) throws(ConfigError) {
            for (k, v) in object.sorted(by: { $0.key < $1.key }) {
                let name = prefix.isEmpty ? k : "\(prefix).\(k)"
                // `"gate.window_seconds"` and `"gate": {"window_seconds"}` name one key.
                let nested = ConfigKey.byName[name] == nil && v is [String: Any]
                    && ConfigKey.all.contains(where: { $0.name.hasPrefix(name + ".") })
                if !nested, !seen.insert(name).inserted {
                    throw ConfigError(source: source, key: name, reason: "is given twice")
                }
                if name == "backends" {
                    backendsDeclared = true
                    backends = try parseBackends(v, source: source).get()
                    origins.record(name, source)
                } else if name == "auth.backend_tokens" {
                    backendTokens = try Configuration.parseTokens(v, source: source)
                    origins.record(name, source)
                } else if name == "auth.credentials" {
                    credentials = try Configuration.parseCredentials(v, source: source, environment: environment)
                    origins.record(name, source)
                } else if let key = ConfigKey.byName[name] {
                    switch key.parse(json: v) {
                    case .success(let value):
                        values[name] = value
                        origins.record(name, source)
                    case .failure(let reason): throw ConfigError(source: source, key: name, reason: reason.description)
                    }
                } else if let sub = v as? [String: Any], ConfigKey.all.contains(where: { $0.name.hasPrefix(name + ".") }) {
                    try apply(
                        object: sub, prefix: name, source: source, environment: environment, backendsDeclared: &backendsDeclared,
                        seen: &seen)
                } else if ConfigKey.all.contains(where: { $0.name.hasPrefix(name + ".") }) {
                    throw ConfigError(
                        source: source, key: name,
                        reason: "is a section: expected an object of its keys (e.g. {\"\(name)\": {\"\(Configuration.firstKey(in: name))\": ...}}), got \(jsonTypeName(v))")
                } else {
                    throw ConfigError(source: source, key: name, reason: "unknown key\(Configuration.suggestion(for: name))")
                }
            }
        }

        /// Sets one key from text, as given in the environment or on the command line.
        mutating func set(_ name: String, text: String, source: String, environment: [String: String]) throws(ConfigError) {
            if Configuration.structuredKeys.contains(where: { $0.0 == name }) {
                // The grammar a file is held to (strict JSON, no key twice).
                let (json, twice): (Any, String?)
                switch Configuration.strictJSON(Array(text.utf8)) {
                case .success(let read): (json, twice) = read
                case .failure(let failure): throw ConfigError(source: source, key: name, reason: "expected JSON: \(failure.reason)")
                }
                if let twice {
                    throw ConfigError(source: source, key: twice.hasPrefix("[") ? name + twice : "\(name).\(twice)", reason: "is given twice")
                }
                switch name {
                case "backends": backends = try parseBackends(json, source: source).get()
                case "auth.backend_tokens": backendTokens = try Configuration.parseTokens(json, source: source)
                default: credentials = try Configuration.parseCredentials(json, source: source, environment: environment)
                }
                origins.record(name, source)
                return
            }
            guard let key = ConfigKey.byName[name] else {
                throw ConfigError(source: source, key: name, reason: "unknown key\(Configuration.suggestion(for: name))")
            }
            switch key.parse(text: text) {
            case .success(let value):
                values[name] = value
                origins.record(name, source)
            case .failure(let reason): throw ConfigError(source: source, key: name, reason: reason.description)
            }
        }
    }

    private static func parseTokens(_ json: Any, source: String) throws(ConfigError) -> [String: String] {
        guard let o = json as? [String: Any] else {
            throw ConfigError(source: source, key: "auth.backend_tokens", reason: "expected an object of backend name to token")
        }
        var out: [String: String] = [:]
        for (name, token) in o {
            guard ProtocolLimits.isValidName(name) else {
                throw ConfigError(
                    source: source, key: "auth.backend_tokens.\(name)",
                    reason: "'\(name)' is not a backend name (^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$): no backend could register under it")
            }
            guard let t = token as? String, !t.isEmpty else {
                throw ConfigError(source: source, key: "auth.backend_tokens.\(name)", reason: "expected a non-empty string")
            }
            out[name] = t
        }
        return out
    }

    /// Checks that hold across keys.
    private func validate() throws(ConfigError) {
        // Each error names the source of the key that brought the conflict in.
        let tls = settings.tls, auth = settings.auth
        if (tls.cert == nil) != (tls.key == nil) {
            // The one missing: cleared by a later source, it is named before the one left set.
            let (missing, set) = tls.cert == nil ? ("tls.cert", "tls.key") : ("tls.key", "tls.cert")
            throw ConfigError(source: origins.of(missing, set), key: missing, reason: "tls.cert and tls.key go together")
        }
        if tls.clientCA != nil, tls.cert == nil {
            throw ConfigError(
                source: origins.of("tls.cert", "tls.client_ca"), key: "tls.client_ca",
                reason: "client certificates need tls.cert and tls.key")
        }
        if tls.clientCA == nil, let bound = credentials.first(where: { $0.certificateName != nil }) {
            throw ConfigError(
                source: origins.of("auth.credentials"), key: "auth.credentials",
                reason: "credential \(bound.name) is bound to a client certificate (certificate_cn) but tls.client_ca is not set, "
                    + "so no client certificate is asked for; set tls.client_ca or give it a token_file")
        }
        if auth.token != nil, auth.tokenFile != nil {
            throw ConfigError(
                source: origins.of("auth.token_file"), key: "auth.token_file", reason: "give auth.token or auth.token_file, not both")
        }
        let files = [("auth.token_file", auth.tokenFile), ("tls.cert", tls.cert), ("tls.key", tls.key), ("tls.client_ca", tls.clientCA)]
        for case (let key, let path?) in files where !FileManager.default.isReadableFile(atPath: path) {
            throw ConfigError(source: origins.of(key), key: key, reason: "cannot read '\(path)'")
        }
        // The listener is IPv4 (lws is asked for no IPv6 socket): `[::1]` would quietly listen
        // on 127.0.0.1 and `[::]` not on IPv6 at all.
        if settings.listen.host.contains(":") {
            throw ConfigError(
                source: origins.of("listen"), key: "listen",
                reason: "IPv6 addresses are not supported (the listener is IPv4): use 127.0.0.1, 0.0.0.0 or an IPv4 address of this machine")
        }
        try validateHA()
        if let open = openSideBeyondLoopback, !auth.allowAnonymous {
            let what = open == "client"
                ? "submit, cancel and drain" : open == "backend" ? "register as a backend" : "submit, cancel, drain and register as a backend"
            // Named for the listen address that opened it: no credential key was set.
            throw ConfigError(
                source: origins.of("listen"), key: "auth.token",
                reason: "listen \(settings.listen) is reachable beyond this machine and no \(open == "both" ? "" : open + " ")credentials are configured, "
                    + "so anyone who reaches the port could \(what); set auth.token or auth.token_file (every role), "
                    + "auth.credentials with \(open == "backend" ? "a backend" : open == "client" ? "a client, operator or read" : "backend and client")"
                    + " credential (or tls.client_ca for client certificates), listen on 127.0.0.1, or accept that with "
                    + "--set auth.allow_anonymous=true")
        }
    }

    /// Protected mode: listening on anything but loopback with no client certificates and a side
    /// (clients, backends) that needs no token. `auth.allow_anonymous` lets it start anyway.
    public var isOpenBeyondLoopback: Bool { openSideBeyondLoopback != nil }

    /// "client", "backend" or "both": what protected mode refuses; nil when it does not.
    private var openSideBeyondLoopback: String? {
        guard !settings.listen.isLoopback, settings.tls.clientCA == nil else { return nil }
        let shared = settings.auth.token != nil || settings.auth.tokenFile != nil
        let auth = Authenticator(shared: shared ? "" : nil, credentials: allCredentials)
        switch (auth.clientSideOpen, auth.backendSideOpen) {
        case (true, true): return "both"
        case (true, false): return "client"
        case (false, true): return "backend"
        case (false, false): return nil
        }
    }

    /// `auth.credentials` with `auth.backend_tokens` as backend credentials.
    var allCredentials: [Credential] {
        credentials + backendTokens.sorted { $0.key < $1.key }.map {
            Credential(name: $0.key, role: .backend, origin: "auth.backend_tokens", token: $0.value)
        }
    }

    /// Checks tokens: the shared token read (from its file) now, and every credential.
    /// Every token follows the protocol's grammar (1 to 1,024 characters, no control characters:
    /// another could never be presented in a `hello`), and no two are the same: the shared token
    /// and every credential's, `auth.backend_tokens` included (a token names one credential).
    public func checkTokens() throws(ConfigError) {
        _ = try authenticator()
    }

    /// The checker of every token, after the checks of `checkTokens` (which `--print-config`
    /// makes too, so that what it accepts `serve` accepts).
    func authenticator() throws(ConfigError) -> Authenticator {
        let shared = try resolvedSharedToken()
        let credentials = allCredentials
        var named: [(String, String, String)] = []  // (who, key, token)
        if let shared { named.append(("the shared token", settings.auth.token != nil ? "auth.token" : "auth.token_file", shared)) }
        for c in credentials {
            guard let token = c.token else { continue }
            let key = c.origin == "auth.backend_tokens" ? "auth.backend_tokens.\(c.name)" : "auth.credentials"
            named.append(("\(c.role.rawValue) credential \(c.name)", key, token))
        }
        for (who, key, token) in named
        where token.unicodeScalars.count > 1024 || token.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
            throw ConfigError(
                source: origins.of(key), key: key,
                reason: "the token of \(who) has control characters or more than 1,024 characters: no hello could present it")
        }
        for (i, a) in named.enumerated() {
            for b in named[(i + 1)...] where constantTimeEqual(a.2, b.2) {
                throw ConfigError(
                    source: origins.of(b.1), key: b.1,
                    reason: "\(a.0) and \(b.0) have the same token; give each its own")
            }
        }
        return Authenticator(shared: shared, credentials: credentials)
    }

    /// The first key of a section, without the section: `window_seconds` for `gate`.
    fileprivate static func firstKey(in section: String) -> String {
        let full = ConfigKey.all.first { $0.name.hasPrefix(section + ".") }?.name ?? section
        return String(full.dropFirst(section.count + 1).split(separator: ".").first ?? "")
    }

    /// Reads JSON given in configuration (a file, `--set`, the environment): the wire's grammar
    /// first (Foundation takes trailing commas silently and says little of what it refuses), and
    /// in the same parse a member given twice (Foundation keeps the last of two; a configuration
    /// that says a key twice is a mistake), which the caller names as it sees fit.
    static func strictJSON(_ text: [UInt8]) -> Result<(value: Any, twice: String?), StrictJSONFailure> {
        let problem = DuplicateMembers.problem(in: text)
        if case .syntax(let why) = problem { return .failure(StrictJSONFailure(reason: why)) }
        guard let value = try? JSONSerialization.jsonObject(with: Data(text), options: [.fragmentsAllowed]) else {
            // The grammar held: what is left is a number no double holds (1e400).
            return .failure(StrictJSONFailure(reason: "a number out of range"))
        }
        if case .twice(let twice) = problem { return .success((value, twice)) }
        return .success((value, nil))
    }

    struct StrictJSONFailure: Error {
        var reason: String
    }

    /// " (did you mean gate.window_seconds?)" for a near miss.
    fileprivate static func suggestion(for name: String) -> String {
        let candidates = ConfigKey.all.map(\.name) + structuredKeys.map(\.0)
        let best = candidates.map { ($0, editDistance($0, name)) }.min { $0.1 < $1.1 }
        guard let best, best.1 <= max(2, name.count / 4) else { return "" }
        return " (did you mean \(best.0)?)"
    }

    /// The effective configuration as JSON, secrets redacted: what `--print-config` shows.
    public func printable() -> String {
        var root: [String: Any] = [:]
        for key in ConfigKey.all {
            var value = (values[key.name] ?? key.defaultValue).jsonFragment
            if key.kind == .secret, let s = value as? String, !s.isEmpty { value = "<redacted>" }
            // A PostgreSQL URL may carry a password: shown as the log shows it (`***`).
            if key.name == "store.url", let s = value as? String, let url = try? StoreURL(parsing: s) { value = url.description }
            let parts = key.name.split(separator: ".").map(String.init)
            if parts.count == 1 {
                root[parts[0]] = value
            } else {
                var section = root[parts[0]] as? [String: Any] ?? [:]
                section[parts[1]] = value
                root[parts[0]] = section
            }
        }
        var auth = root["auth"] as? [String: Any] ?? [:]
        auth["backend_tokens"] = Dictionary(uniqueKeysWithValues: backendTokens.keys.map { ($0, "<redacted>") })
        auth["credentials"] = credentials.map { c -> [String: Any] in
            let parts = c.origin.split(separator: " ", maxSplits: 1).map(String.init)
            return ["name": c.name, "role": c.role.rawValue, parts[0]: parts.count > 1 ? parts[1] : ""]
        }
        root["auth"] = auth
        root["backends"] = backends.map(\.redactedJSON)
        let data = try! JSONSerialization.data(withJSONObject: root, options: [.prettyPrinted, .sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }

    /// The shared token: `auth.token`, or the first line of `auth.token_file`.
    public func resolvedSharedToken() throws(ConfigError) -> String? {
        if let token = settings.auth.token { return token }
        guard let tokenFile = settings.auth.tokenFile else { return nil }
        return try Self.readTokenFile(tokenFile, source: origins.of("auth.token_file"), key: "auth.token_file")
    }
}

private func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a.utf8), b = Array(b.utf8)
    var row = Array(0...b.count)
    for i in 1...max(a.count, 1) where !a.isEmpty {
        var prev = row[0]
        row[0] = i
        for j in 1...max(b.count, 1) where !b.isEmpty {
            let cur = row[j]
            row[j] = min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] == b[j - 1] ? 0 : 1))
            prev = cur
        }
    }
    return row[b.count]
}
