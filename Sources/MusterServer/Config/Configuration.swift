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
    /// Resolved values, by key name. Every key in `ConfigKey.all` has a value.
    public internal(set) var values: [String: ConfigValue]
    /// Local pseudo-backends and remote backends the coordinator dials.
    public internal(set) var backends: [BackendConfig]
    /// Per-backend tokens for backends that dial in, by backend name.
    public internal(set) var backendTokens: [String: String]
    /// `auth.credentials`: tokens scoped to roles, read from files or the environment at load.
    public internal(set) var credentials: [Credential] = []

    /// The embedded default: 127.0.0.1:7460 with two local simulated backends,
    /// one image-only and one with `video` and `frameinterps`.
    public static var embeddedDefault: Configuration {
        var values: [String: ConfigValue] = [:]
        for key in ConfigKey.all { values[key.name] = key.defaultValue }
        return Configuration(values: values, backends: BackendConfig.embeddedDefault, backendTokens: [:])
    }

    // MARK: Typed accessors

    public var listen: HostPort { values["listen"]!.hostPort! }
    public var sharedToken: String? { values["auth.token"]!.string.flatMap { $0.isEmpty ? nil : $0 } }
    public var tokenFile: String? { values["auth.token_file"]!.string.flatMap { $0.isEmpty ? nil : $0 } }
    public var tlsCertificate: String? { values["tls.cert"]!.string.flatMap { $0.isEmpty ? nil : $0 } }
    public var tlsKey: String? { values["tls.key"]!.string.flatMap { $0.isEmpty ? nil : $0 } }
    public var tlsClientCA: String? { values["tls.client_ca"]!.string.flatMap { $0.isEmpty ? nil : $0 } }
    public var logLevel: String { values["log.level"]!.string! }
    public var logFormat: String { values["log.format"]!.string! }
    public func seconds(_ key: String) -> Double { values[key]!.double! }
    public func int(_ key: String) -> Int { values[key]!.int! }
    public func bool(_ key: String) -> Bool { values[key]!.bool! }
    public func string(_ key: String) -> String { values[key]!.string! }

    /// Where jobs are kept (`store.url`; empty: SQLite at the default path of this user).
    public var storeURL: StoreURL {
        let text = string("store.url")
        if text.isEmpty { return .sqlite(path: StoreURL.defaultSQLitePath(environment: ProcessInfo.processInfo.environment)) }
        return (try? StoreURL(parsing: text)) ?? .memory
    }

    /// `store.url` as written in logs.
    public var storeURLDescription: String { storeURL.description }
    /// A `featureList` key: sorted, no repeats.
    public func features(_ key: String) -> [String] { string(key).split(separator: ",").map(String.init) }
    /// A `secondsByKind` value: seconds per job kind.
    public func secondsByKind(_ key: String) -> [String: Double] {
        var out: [String: Double] = [:]
        for pair in string(key).split(separator: ",") {
            let parts = pair.split(separator: "=", maxSplits: 1)
            if parts.count == 2, let x = Double(parts[1]) { out[String(parts[0])] = x }
        }
        return out
    }
}

/// One resolved configuration value.
public enum ConfigValue: Sendable, Equatable, CustomStringConvertible {
    case string(String)
    case int(Int)
    case double(Double)
    case bool(Bool)
    case hostPort(HostPort)

    var string: String? { if case .string(let s) = self { s } else { nil } }
    var int: Int? { if case .int(let i) = self { i } else { nil } }
    var double: Double? {
        switch self {
        case .double(let d): d
        case .int(let i): Double(i)
        default: nil
        }
    }
    var bool: Bool? { if case .bool(let b) = self { b } else { nil } }
    var hostPort: HostPort? { if case .hostPort(let h) = self { h } else { nil } }

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
