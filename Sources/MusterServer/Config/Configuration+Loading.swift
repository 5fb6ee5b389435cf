import Foundation
import MusterStore

extension Configuration {
    /// Builds the effective configuration from its sources, later ones winning:
    /// embedded defaults < `file` < `environment` (`MUSTER_*`) < `overrides` (`--set KEY=VALUE`
    /// and dedicated flags, in order). Backends come from the file or `backends` overrides; when no
    /// source declares any, the embedded default's two local simulated backends are used.
    public static func load(
        file: String?,
        environment: [String: String] = ProcessInfo.processInfo.environment,
        overrides: [(source: String, key: String, value: String)] = []
    ) throws(ConfigError) -> Configuration {
        var config = Configuration.embeddedDefault
        var backendsDeclared = false

        if let file {
            let source = "file \(file)"
            guard let data = FileManager.default.contents(atPath: file) else {
                throw ConfigError(source: source, key: "", reason: "cannot be read (does it exist?)")
            }
            let root: Any
            do {
                root = try JSONSerialization.jsonObject(with: data, options: [])
            } catch {
                throw ConfigError(source: source, key: "", reason: "is not valid JSON: \(error.localizedDescription)")
            }
            guard let object = root as? [String: Any] else {
                throw ConfigError(source: source, key: "", reason: "expected a JSON object at the top level")
            }
            try config.apply(object: object, prefix: "", source: source, backendsDeclared: &backendsDeclared)
        }

        for key in ConfigKey.all {
            if let text = environment[key.environmentName] {
                try config.set(key.name, text: text, source: "environment \(key.environmentName)")
            }
        }
        for (name, source) in [("backends", "MUSTER_BACKENDS"), ("auth.backend_tokens", "MUSTER_AUTH_BACKEND_TOKENS")] {
            if let text = environment[source] {
                try config.set(name, text: text, source: "environment \(source)")
                if name == "backends" { backendsDeclared = true }
            }
        }
        for o in overrides {
            try config.set(o.key, text: o.value, source: o.source)
            if o.key == "backends" { backendsDeclared = true }
        }
        if !backendsDeclared { config.backends = BackendConfig.embeddedDefault }
        try config.validate()
        return config
    }

    private mutating func apply(
        object: [String: Any], prefix: String, source: String, backendsDeclared: inout Bool
    ) throws(ConfigError) {
        for (k, v) in object.sorted(by: { $0.key < $1.key }) {
            let name = prefix.isEmpty ? k : "\(prefix).\(k)"
            if name == "backends" {
                backendsDeclared = true
                backends = try parseBackends(v, source: source).get()
            } else if name == "auth.backend_tokens" {
                backendTokens = try parseTokens(v, source: source)
            } else if let key = ConfigKey.byName[name] {
                switch key.parse(json: v) {
                case .success(let value): values[name] = value
                case .failure(let reason): throw ConfigError(source: source, key: name, reason: reason.description)
                }
            } else if let sub = v as? [String: Any], ConfigKey.all.contains(where: { $0.name.hasPrefix(name + ".") }) {
                try apply(object: sub, prefix: name, source: source, backendsDeclared: &backendsDeclared)
            } else {
                throw ConfigError(source: source, key: name, reason: "unknown key\(Self.suggestion(for: name))")
            }
        }
    }

    /// Sets one key from text, as given in the environment or on the command line.
    private mutating func set(_ name: String, text: String, source: String) throws(ConfigError) {
        if name == "backends" || name == "auth.backend_tokens" {
            let json: Any
            do {
                json = try JSONSerialization.jsonObject(with: Data(text.utf8), options: [])
            } catch {
                throw ConfigError(source: source, key: name, reason: "expected JSON: \(error.localizedDescription)")
            }
            if name == "backends" {
                backends = try parseBackends(json, source: source).get()
            } else {
                backendTokens = try parseTokens(json, source: source)
            }
            return
        }
        guard let key = ConfigKey.byName[name] else {
            throw ConfigError(source: source, key: name, reason: "unknown key\(Self.suggestion(for: name))")
        }
        switch key.parse(text: text) {
        case .success(let value): values[name] = value
        case .failure(let reason): throw ConfigError(source: source, key: name, reason: reason.description)
        }
    }

    private func parseTokens(_ json: Any, source: String) throws(ConfigError) -> [String: String] {
        guard let o = json as? [String: Any] else {
            throw ConfigError(source: source, key: "auth.backend_tokens", reason: "expected an object of backend name to token")
        }
        var out: [String: String] = [:]
        for (name, token) in o {
            guard let t = token as? String, !t.isEmpty else {
                throw ConfigError(source: source, key: "auth.backend_tokens.\(name)", reason: "expected a non-empty string")
            }
            out[name] = t
        }
        return out
    }

    /// Checks that hold across keys.
    private func validate() throws(ConfigError) {
        let source = "configuration"
        if (tlsCertificate == nil) != (tlsKey == nil) {
            throw ConfigError(source: source, key: tlsCertificate == nil ? "tls.cert" : "tls.key", reason: "tls.cert and tls.key go together")
        }
        if tlsClientCA != nil, tlsCertificate == nil {
            throw ConfigError(source: source, key: "tls.client_ca", reason: "client certificates need tls.cert and tls.key")
        }
        if sharedToken != nil, tokenFile != nil {
            throw ConfigError(source: source, key: "auth.token_file", reason: "give auth.token or auth.token_file, not both")
        }
        for path in [tokenFile, tlsCertificate, tlsKey, tlsClientCA].compactMap({ $0 }) where !FileManager.default.isReadableFile(atPath: path) {
            let key = ["auth.token_file", "tls.cert", "tls.key", "tls.client_ca"].first { string($0) == path }!
            throw ConfigError(source: source, key: key, reason: "cannot read '\(path)'")
        }
        let store = string("store.url")
        if !store.isEmpty {
            do {
                _ = try StoreURL(parsing: store)
            } catch {
                throw ConfigError(source: source, key: "store.url", reason: "\(error)")
            }
        }
        if isOpenBeyondLoopback, !bool("auth.allow_anonymous") {
            throw ConfigError(
                source: source, key: "auth.token",
                reason: "listen \(listen) is reachable beyond this machine and no credentials are configured, so anyone "
                    + "who reaches the port could submit, cancel, drain and register as a backend; set auth.token or "
                    + "auth.token_file (or tls.client_ca for client certificates), listen on 127.0.0.1, or accept "
                    + "that with --set auth.allow_anonymous=true")
        }
    }

    /// Protected mode: listening on anything but loopback with no client credentials at all (no
    /// shared token, no client certificates). `auth.allow_anonymous` lets it start anyway.
    public var isOpenBeyondLoopback: Bool {
        !listen.isLoopback && sharedToken == nil && tokenFile == nil && tlsClientCA == nil
    }

    /// " (did you mean gate.window_seconds?)" for a near miss.
    private static func suggestion(for name: String) -> String {
        let candidates = ConfigKey.all.map(\.name) + ["backends", "auth.backend_tokens"]
        let best = candidates.map { ($0, editDistance($0, name)) }.min { $0.1 < $1.1 }
        guard let best, best.1 <= max(2, name.count / 4) else { return "" }
        return " (did you mean \(best.0)?)"
    }

    /// The effective configuration as JSON, secrets redacted: what `--print-config` shows.
    public func printable() -> String {
        var root: [String: Any] = [:]
        for key in ConfigKey.all {
            var value = values[key.name]!.jsonFragment
            if key.kind == .secret, let s = value as? String, !s.isEmpty { value = "<redacted>" }
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
        root["auth"] = auth
        root["backends"] = backends.map(\.redactedJSON)
        let data = try! JSONSerialization.data(withJSONObject: root, options: [.prettyPrinted, .sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }

    /// The shared token: `auth.token`, or the first line of `auth.token_file`.
    public func resolvedSharedToken() throws(ConfigError) -> String? {
        if let sharedToken { return sharedToken }
        guard let tokenFile else { return nil }
        guard let data = FileManager.default.contents(atPath: tokenFile) else {
            throw ConfigError(source: "configuration", key: "auth.token_file", reason: "cannot read '\(tokenFile)'")
        }
        let token = String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline).first.map {
            $0.trimmingCharacters(in: .whitespaces)
        }
        guard let token, !token.isEmpty else {
            throw ConfigError(source: "configuration", key: "auth.token_file", reason: "'\(tokenFile)' holds no token on its first line")
        }
        return token
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
