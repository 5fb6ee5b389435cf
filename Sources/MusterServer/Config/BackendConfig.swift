import Foundation
import MusterBackends
import MusterProtocol
import MusterTransport

/// A backend declared in the configuration: a local pseudo-backend inside the coordinator
/// (`simulated` or `exec`, negative ids -1, -2, ... in declaration order) or a remote backend the
/// coordinator dials (`remote`).
public struct BackendConfig: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// Runs jobs by waiting `jobSeconds[kind]`; fails a fraction of them at random.
        case simulated(Simulated)
        /// Runs `command` per job: job JSON on stdin, result JSON from stdout.
        case exec(Exec)
        /// A remote backend at `url`, dialled and kept up with reconnect and backoff.
        case remote(Remote)
        /// A ComfyUI server at `url` the coordinator drives itself (like a local backend: its
        /// engine runs in the coordinator, with a negative id); capabilities come from the server.
        case comfyui(ComfyUI)
    }

    public struct ComfyUI: Sendable, Equatable {
        public var url: String
        /// Feature -> node classes, laid over `ComfyUIFeatureMap.defaults`.
        public var featureMap: [String: [String]] = [:]
    }

    public struct Simulated: Sendable, Equatable {
        public var startupDelaySeconds: Double = 0
        /// Seconds per job kind; `default` applies to kinds not listed.
        public var jobSeconds: [String: Double] = ["default": 2]
        public var modelLoadSeconds: Double = 5
        public var failureRate: Double = 0
    }

    public struct Exec: Sendable, Equatable {
        public var command: [String]
        public var timeoutSeconds: Double = 600
    }

    public struct Remote: Sendable, Equatable {
        public var url: String
        public var token: String?
        public var caFile: String?
        public var allowSelfSigned: Bool = false
    }

    public var name: String
    public var kind: Kind
    public var features: [String] = []
    public var models: [String] = []
    public var slots: Int = 1
    /// Breaks ties between equally loaded backends; higher first.
    public var priority: Int = 0
    /// Routing prior: speed relative to 1.0 (2: jobs take half as long), used until the
    /// backend's jobs are measured (README "Routing and the warm-up gate").
    public var speed: Double?
    /// Routing prior: seconds this backend needs to load a model, used until it has loaded one.
    public var expectedLoadSeconds: Double?

    public var isLocal: Bool {
        if case .remote = kind { return false }
        return true
    }

    /// Two local simulated backends: one image-only, one with `video` and `frameinterps`.
    public static let embeddedDefault: [BackendConfig] = [
        // Durations in the range real GPUs take, so the warm-up gate has something to do: a
        // remote backend that loads for 20 s still gets half of a four-job video batch.
        BackendConfig(
            name: "local-image",
            kind: .simulated(Simulated(jobSeconds: ["default": 5, "image": 5])),
            features: ["image"], models: ["sdxl"], slots: 1),
        BackendConfig(
            name: "local-video",
            kind: .simulated(Simulated(jobSeconds: ["default": 5, "image": 5, "video": 30])),
            features: ["frameinterps", "image", "video"], models: ["sdxl", "wan-2.1"], slots: 1),
    ]

    /// The JSON form, as written in the config file and shown by `--print-config`. Secrets redacted.
    var redactedJSON: [String: Any] {
        var o: [String: Any] = ["name": name, "features": features, "models": models, "slots": slots, "priority": priority]
        if let speed { o["speed"] = speed }
        if let expectedLoadSeconds { o["expected_load_seconds"] = expectedLoadSeconds }
        switch kind {
        case .simulated(let s):
            o["kind"] = "simulated"
            o["startup_delay_seconds"] = s.startupDelaySeconds
            o["job_seconds"] = s.jobSeconds
            o["model_load_seconds"] = s.modelLoadSeconds
            o["failure_rate"] = s.failureRate
        case .exec(let e):
            o["kind"] = "exec"
            o["command"] = e.command
            o["timeout_seconds"] = e.timeoutSeconds
        case .remote(let r):
            o["kind"] = "remote"
            o["url"] = r.url
            if r.token != nil { o["token"] = "<redacted>" }
            if let ca = r.caFile { o["ca_file"] = ca }
            o["allow_self_signed"] = r.allowSelfSigned
        case .comfyui(let c):
            o["kind"] = "comfyui"
            o["url"] = c.url
            if !c.featureMap.isEmpty { o["feature_map"] = c.featureMap }
        }
        return o
    }
}

/// Parses the `backends` array. `path` is the key prefix used in error messages.
func parseBackends(_ json: Any, source: String, path: String = "backends") -> Result<[BackendConfig], ConfigError> {
    func fail(_ key: String, _ reason: String) -> Result<[BackendConfig], ConfigError> {
        .failure(ConfigError(source: source, key: key, reason: reason))
    }
    guard let list = json as? [Any] else { return fail(path, "expected an array of backends, got \(jsonTypeName(json))") }
    var result: [BackendConfig] = []
    var names = Set<String>()
    for (i, item) in list.enumerated() {
        let at = "\(path)[\(i)]"
        guard let o = item as? [String: Any] else { return fail(at, "expected an object, got \(jsonTypeName(item))") }
        var reader = ObjectReader(object: o, at: at, source: source)
        do {
            let name = try reader.string("name")
            guard isValidName(name) else {
                throw ConfigError(source: source, key: "\(at).name", reason: "'\(name)' is not a valid name: 1-64 of a-z A-Z 0-9 . _ -")
            }
            guard names.insert(name).inserted else {
                throw ConfigError(source: source, key: "\(at).name", reason: "'\(name)' is declared twice")
            }
            let kindName = try reader.string("kind")
            let features = try reader.stringArray("features", default: [])
            for f in features where !isValidFeature(f) {
                throw ConfigError(source: source, key: "\(at).features", reason: "'\(f)' is not a feature name (a-z, 0-9, _ . -; starts with a letter)")
            }
            let models = try reader.stringArray("models", default: [])
            let slots = try reader.int("slots", default: 1, range: 1...1024)
            let priority = try reader.int("priority", default: 0, range: -1000...1000)
            let speed = try reader.optionalDouble("speed", range: 0.01...ProtocolLimits.maxSpeed)
            let expectedLoad = try reader.optionalSeconds("expected_load_seconds")
            let kind: BackendConfig.Kind
            switch kindName {
            case "simulated":
                var s = BackendConfig.Simulated()
                s.startupDelaySeconds = try reader.seconds("startup_delay_seconds", default: 0)
                s.modelLoadSeconds = try reader.seconds("model_load_seconds", default: 5)
                s.failureRate = try reader.double("failure_rate", default: 0, range: 0...1)
                s.jobSeconds = try reader.secondsMap("job_seconds", default: ["default": 2])
                kind = .simulated(s)
            case "exec":
                let command = try reader.stringArray("command", default: nil)
                guard !command.isEmpty else {
                    throw ConfigError(source: source, key: "\(at).command", reason: "needs at least the program to run")
                }
                kind = .exec(BackendConfig.Exec(command: command, timeoutSeconds: try reader.seconds("timeout_seconds", default: 600)))
            case "remote":
                let url = try reader.string("url")
                guard url.hasPrefix("ws://") || url.hasPrefix("wss://") else {
                    throw ConfigError(source: source, key: "\(at).url", reason: "expected a ws:// or wss:// URL, got '\(url)'")
                }
                kind = .remote(
                    BackendConfig.Remote(
                        url: url, token: try reader.optionalString("token"), caFile: try reader.optionalString("ca_file"),
                        allowSelfSigned: try reader.bool("allow_self_signed", default: false)))
            case "comfyui":
                let url = try reader.string("url")
                guard url.hasPrefix("http://") || url.hasPrefix("https://"), url.count > 8 else {
                    throw ConfigError(source: source, key: "\(at).url", reason: "expected a ComfyUI http:// or https:// URL, got '\(url)'")
                }
                kind = .comfyui(BackendConfig.ComfyUI(url: url, featureMap: try reader.featureMap("feature_map")))
            default:
                throw ConfigError(source: source, key: "\(at).kind", reason: "expected simulated, exec, remote or comfyui, got '\(kindName)'")
            }
            try reader.rejectUnread()
            result.append(
                BackendConfig(
                    name: name, kind: kind, features: features, models: models, slots: slots, priority: priority,
                    speed: speed, expectedLoadSeconds: expectedLoad))
        } catch let error as ConfigError {
            return .failure(error)
        } catch {
            return fail(at, "\(error)")
        }
    }
    return .success(result)
}

func isValidName(_ s: String) -> Bool {
    !s.isEmpty && s.utf8.count <= 64
        && s.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 | 0x20 >= 0x61 && $0 | 0x20 <= 0x7a) || $0 == 0x2e || $0 == 0x5f || $0 == 0x2d }
}

func isValidFeature(_ s: String) -> Bool {
    guard let first = s.utf8.first, first >= 0x61, first <= 0x7a, s.utf8.count <= 64 else { return false }
    return s.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7a) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2e || $0 == 0x5f || $0 == 0x2d }
}

/// Reads typed fields from one JSON object and remembers which were read, so that unknown
/// (misspelt) keys are reported instead of silently ignored.
struct ObjectReader {
    let object: [String: Any]
    let at: String
    let source: String
    private var read = Set<String>()

    init(object: [String: Any], at: String, source: String) {
        self.object = object
        self.at = at
        self.source = source
    }

    private func error(_ key: String, _ reason: String) -> ConfigError {
        ConfigError(source: source, key: "\(at).\(key)", reason: reason)
    }

    mutating func optionalString(_ key: String) throws -> String? {
        read.insert(key)
        guard let v = object[key], !(v is NSNull) else { return nil }
        guard let s = v as? String else { throw error(key, "expected a string, got \(jsonTypeName(v))") }
        return s
    }

    mutating func string(_ key: String) throws -> String {
        guard let s = try optionalString(key) else { throw error(key, "is required") }
        return s
    }

    mutating func stringArray(_ key: String, default def: [String]?) throws -> [String] {
        read.insert(key)
        guard let v = object[key] else {
            if let def { return def }
            throw error(key, "is required")
        }
        guard let a = v as? [Any], a.allSatisfy({ $0 is String }) else {
            throw error(key, "expected an array of strings, got \(jsonTypeName(v))")
        }
        return a.map { $0 as! String }
    }

    mutating func int(_ key: String, default def: Int, range: ClosedRange<Int>) throws -> Int {
        read.insert(key)
        guard let v = object[key] else { return def }
        guard let n = jsonNumber(v), n == n.rounded(), abs(n) < 1e15 else {
            throw error(key, "expected an integer, got \(jsonTypeName(v))")
        }
        guard range.contains(Int(n)) else { throw error(key, "\(Int(n)) is out of range \(range.lowerBound)...\(range.upperBound)") }
        return Int(n)
    }

    mutating func double(_ key: String, default def: Double, range: ClosedRange<Double>) throws -> Double {
        read.insert(key)
        guard let v = object[key] else { return def }
        guard let n = jsonNumber(v) else { throw error(key, "expected a number, got \(jsonTypeName(v))") }
        guard range.contains(n) else { throw error(key, "\(n) is out of range \(range.lowerBound)...\(range.upperBound)") }
        return n
    }

    mutating func optionalDouble(_ key: String, range: ClosedRange<Double>) throws -> Double? {
        read.insert(key)
        guard let v = object[key], !(v is NSNull) else { return nil }
        guard let n = jsonNumber(v) else { throw error(key, "expected a number, got \(jsonTypeName(v))") }
        guard range.contains(n) else { throw error(key, "\(n) is out of range \(range.lowerBound)...\(range.upperBound)") }
        return n
    }

    mutating func optionalSeconds(_ key: String) throws -> Double? {
        read.insert(key)
        guard let v = object[key], !(v is NSNull) else { return nil }
        return try Self.seconds(v, error: { error(key, $0) })
    }

    mutating func bool(_ key: String, default def: Bool) throws -> Bool {
        read.insert(key)
        guard let v = object[key] else { return def }
        guard let b = jsonBool(v) else { throw error(key, "expected true or false, got \(jsonTypeName(v))") }
        return b
    }

    mutating func seconds(_ key: String, default def: Double) throws -> Double {
        read.insert(key)
        guard let v = object[key] else { return def }
        return try Self.seconds(v, error: { error(key, $0) })
    }

    /// `{"feature": ["Node Class", ...]}`.
    mutating func featureMap(_ key: String) throws -> [String: [String]] {
        read.insert(key)
        guard let v = object[key] else { return [:] }
        guard let o = v as? [String: Any] else { throw error(key, "expected an object of feature to node classes, got \(jsonTypeName(v))") }
        var out: [String: [String]] = [:]
        for (feature, value) in o {
            guard isValidFeature(feature) else { throw error(key, "'\(feature)' is not a feature name (a-z, 0-9, _ . -; starts with a letter)") }
            guard let list = value as? [Any], list.allSatisfy({ $0 is String }) else {
                throw error("\(key).\(feature)", "expected an array of node class names, got \(jsonTypeName(value))")
            }
            out[feature] = list.map { $0 as! String }
        }
        return out
    }

    mutating func secondsMap(_ key: String, default def: [String: Double]) throws -> [String: Double] {
        read.insert(key)
        guard let v = object[key] else { return def }
        guard let o = v as? [String: Any] else { throw error(key, "expected an object of job kind to seconds, got \(jsonTypeName(v))") }
        var out: [String: Double] = [:]
        for (kind, value) in o {
            // A job's kind follows the protocol's name grammar; "Video" would never match one.
            guard isValidFeature(kind) else {
                throw error("\(key).\(kind)", "is not a job kind (a-z, 0-9, _ . -; starts with a letter; at most 64)")
            }
            out[kind] = try Self.seconds(value, error: { error("\(key).\(kind)", $0) })
        }
        return out
    }

    private static func seconds(_ v: Any, error: (String) -> ConfigError) throws -> Double {
        let parsed: Result<Double, InvalidValue>
        if let s = v as? String {
            parsed = parseSeconds(s)
        } else if let n = jsonNumber(v) {
            parsed = .success(n)
        } else {
            parsed = .failure("expected seconds, got \(jsonTypeName(v))")
        }
        switch parsed {
        case .success(let s) where s >= 0 && s.isFinite: return s
        case .success(let s): throw error("\(s) is not a duration (must be 0 or more)")
        case .failure(let reason): throw error(reason.description)
        }
    }

    func rejectUnread() throws {
        if let unknown = object.keys.sorted().first(where: { !read.contains($0) }) {
            throw ConfigError(source: source, key: "\(at).\(unknown)", reason: "unknown key")
        }
    }
}
