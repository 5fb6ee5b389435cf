import Foundation
import MusterStore
import MusterTransport

/// The effective configuration of `muster serve`.
///
/// Every key has one dotted name (`gate.window_seconds`) that is used the same way everywhere:
/// as a path in the JSON config file, as an environment variable (`MUSTER_GATE_WINDOW_SECONDS`)
/// and with `--set gate.window_seconds=30` on the command line. Later sources win:
/// embedded defaults < config file < environment < command-line flags.
public struct Configuration: Sendable, Equatable {
    /// Every scalar key, typed, by section: decoded once when the configuration loads.
    public let settings: Settings
    /// The merged values by key name, as parsed, for `--print-config`; read `settings` instead.
    let values: [String: ConfigValue]
    /// Local pseudo-backends and remote backends the coordinator dials.
    public internal(set) var backends: [BackendConfig]
    /// Per-backend tokens for backends that dial in, by backend name.
    public internal(set) var backendTokens: [String: String]
    /// `auth.credentials`: tokens scoped to roles, read from files or the environment at load.
    public internal(set) var credentials: [Credential] = []
    /// Which source set each key, for errors found after the merge (rules across keys).
    var origins = ConfigOrigins()
}

/// Which source last set each key: `file muster.json`, `environment MUSTER_TLS_CERT`,
/// `flag --set`, ... An error found after the sources were merged (a rule across keys, a token
/// check) names the source of the key that brought the conflict in, not just "configuration".
/// Where a value came from does not make two configurations differ, so it takes no part in `==`.
struct ConfigOrigins: Sendable, Equatable {
    private var byKey: [String: String] = [:]

    mutating func record(_ key: String, _ source: String) { byKey[key] = source }

    /// The source of the first of `keys` (or of the section holding it: `auth.backend_tokens`
    /// for `auth.backend_tokens.gpu-1`) that a source set, an empty value included (a key a
    /// later source cleared is named before the one left set); "configuration" when none was
    /// set, as when every one has its embedded default.
    func of(_ keys: String...) -> String {
        for key in keys {
            var name = Substring(key)
            while true {
                if let source = byKey[String(name)] { return source }
                guard let cut = name.lastIndex(where: { $0 == "." || $0 == "[" }) else { break }
                name = name[..<cut]
            }
        }
        return "configuration"
    }

    static func == (_: ConfigOrigins, _: ConfigOrigins) -> Bool { true }
}

/// One resolved configuration value.
public enum ConfigValue: Sendable, Equatable, CustomStringConvertible {
    case string(String)
    case int(Int)
    case double(Double)
    case bool(Bool)
    case hostPort(HostPort)

    public var description: String {
        switch self {
        case .string(let s): s
        case .int(let i): String(i)
        case .double(let d): d == d.rounded() && abs(d) < 1e15 ? String(Int(d)) : String(d)
        case .bool(let b): String(b)
        case .hostPort(let h): h.description
        }
    }

    /// The value as a JSON fragment, for `--print-config`.
    var jsonFragment: Any {
        switch self {
        case .string(let s): s
        case .int(let i): i
        case .double(let d): d
        case .bool(let b): b
        case .hostPort(let h): h.description
        }
    }
}

/// A configuration error: where it came from, which key, and why. `muster serve` exits 2 with it.
public struct ConfigError: Error, Equatable, CustomStringConvertible {
    /// `file muster.json`, `environment MUSTER_LISTEN`, `flag --set` ...
    public var source: String
    /// The dotted key, or empty when the whole source is unreadable.
    public var key: String
    public var reason: String
    public init(source: String, key: String, reason: String) {
        self.source = source
        self.key = key
        self.reason = reason
    }
    public var description: String {
        key.isEmpty ? "\(source): \(reason)" : "\(source): key '\(key)': \(reason)"
    }
}
