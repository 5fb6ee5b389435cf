import Foundation
import MusterProtocol
import MusterTransport

/// One scalar configuration key: its dotted name, type, default and help text. The table
/// `ConfigKey.all` is the single source for parsing, environment names, `--print-config` and docs.
public struct ConfigKey: Sendable {
    public enum Kind: Sendable, Equatable {
        case string
        case path
        case secret
        case int(ClosedRange<Int>)
        case seconds(ClosedRange<Double>)
        case fraction
        case bool
        case choice([String])
        case hostPort
        /// A set of feature names: a JSON array of strings, or text separated by commas. Kept as
        /// one comma-separated string, sorted, without repeats.
        case featureList
        /// Seconds per job kind: a JSON object (`{"image": 6, "video": "40s"}`) or text
        /// (`image=6,video=40s`). Kept as `kind=seconds` pairs separated by commas, sorted.
        case secondsByKind
    }

    public var name: String
    public var kind: Kind
    public var defaultValue: ConfigValue
    public var help: String

    /// `gate.window_seconds` -> `MUSTER_GATE_WINDOW_SECONDS`.
    public var environmentName: String {
        "MUSTER_" + name.uppercased().map { $0 == "." || $0 == "-" ? "_" : $0 }.map(String.init).joined()
    }

    public static let all: [ConfigKey] = [
        ConfigKey(
            name: "listen", kind: .hostPort, defaultValue: .hostPort(HostPort(host: "127.0.0.1", port: 7460)),
            help: "Address for WebSocket links, the HTTP API and probes: an IPv4 address or a name (port 0 picks a free port; the `muster serving` log line names it in `listen.port`)."),
        ConfigKey(
            name: "auth.token", kind: .secret, defaultValue: .string(""),
            help: "Shared token: every role (backend, client, operator, read). Empty with no token file and no auth.credentials: no authentication."),
        ConfigKey(
            name: "auth.token_file", kind: .path, defaultValue: .string(""),
            help: "File whose first line is the shared token (keeps it out of the process list)."),
        ConfigKey(
            name: "auth.allow_anonymous", kind: .bool, defaultValue: .bool(false),
            help: "Start even when listening beyond loopback with clients or backends needing no token and no client certificates (protected mode off)."),
        ConfigKey(
            name: "auth.metrics_open", kind: .bool, defaultValue: .bool(true),
            help: "Serve GET /metrics without a token. false: it needs the shared token or a read or operator credential (with no client-side credential at all it stays open, as the whole client side is)."),
        ConfigKey(
            name: "auth.allowed_origins", kind: .string, defaultValue: .string(""),
            help: "Web origins (https://host[:port], separated by commas) besides the coordinator's own whose pages may open WebSockets and send POST or DELETE requests to it; browsers from any other origin are refused (403, close 4007)."),
        ConfigKey(
            name: "tls.cert", kind: .path, defaultValue: .string(""),
            help: "PEM certificate chain: serve wss:// and https:// (needs tls.key)."),
        ConfigKey(
            name: "tls.key", kind: .path, defaultValue: .string(""),
            help: "PEM private key for tls.cert."),
        ConfigKey(
            name: "tls.client_ca", kind: .path, defaultValue: .string(""),
            help: "PEM CA bundle: require client certificates signed by it (mTLS); an auth.credentials entry with certificate_cn is the certificate whose subject CN it is. Reloaded on SIGHUP."),
        ConfigKey(
            name: "log.level", kind: .choice(["trace", "debug", "info", "notice", "warning", "error", "critical"]),
            defaultValue: .string("info"), help: "Lowest log level written."),
        ConfigKey(
            name: "log.format", kind: .choice(["text", "json"]), defaultValue: .string("text"),
            help: "Log lines as text or as JSON objects."),
        ConfigKey(
            name: "gate.window_seconds", kind: .seconds(0...86_400), defaultValue: .double(60),
            help: "Longest a capability-bound job waits for a registered backend to announce. 0 turns the gate off."),
        ConfigKey(
            name: "gate.settle_seconds", kind: .seconds(0...10), defaultValue: .double(0.1),
            help: "With routing.rule expected_completion, while jobs are held: after a backend first announces ready, "
                + "nothing is bound for this long, so that backends announcing at nearly the same moment are all "
                + "known when held jobs are placed. 0: no pause."),
        ConfigKey(
            name: "routing.overqueue", kind: .int(0...64), defaultValue: .int(1),
            help: "Jobs a backend may hold waiting beyond its running slots."),
        ConfigKey(
            name: "routing.work_stealing", kind: .bool, defaultValue: .bool(true),
            help: "Revoke a bound job from a busy backend when an eligible one with a free slot would finish it sooner (a running job: at most twice, each for a gain over a quarter of the job)."),
        ConfigKey(
            name: "routing.inhibit_after_failure_seconds", kind: .seconds(0...3_600), defaultValue: .double(5),
            help: "How long a backend gets no new work after a job failed on it (not after `unknown_job`: an assign lost with a link)."),
        ConfigKey(
            name: "routing.max_attempts", kind: .int(1...100), defaultValue: .int(3),
            help: "Attempts per job (a lost backend or retryable failure costs one) before it fails."),
        ConfigKey(
            name: "routing.no_eligible_backend", kind: .choice(["fail", "queue"]), defaultValue: .string("fail"),
            help: "Once the gate is open, fail jobs no backend can run, or keep them queued."),
        ConfigKey(
            name: "routing.rule", kind: .choice(["expected_completion", "least_loaded"]),
            defaultValue: .string("expected_completion"),
            help: "How a job's backend is chosen: where it is expected to finish first, or the older least-loaded rule (kept for comparison)."),
        ConfigKey(
            name: "routing.job_seconds", kind: .secondsByKind, defaultValue: .string(""),
            help: "Expected seconds of one job of each kind on a backend of speed 1.0 before any was measured, e.g. image=6,video=40 (JSON object or text)."),
        ConfigKey(
            name: "routing.default_job_seconds", kind: .seconds(0.001...86_400), defaultValue: .double(10),
            help: "Expected seconds of a job whose kind routing.job_seconds does not list, before any was measured."),
        ConfigKey(
            name: "routing.model_load_seconds", kind: .seconds(0...86_400), defaultValue: .double(20),
            help: "Expected seconds of a model load before any was measured (a backend's expected_load_seconds comes first)."),
        ConfigKey(
            name: "routing.max_wait_for_better_seconds", kind: .seconds(0...86_400), defaultValue: .double(30),
            help: "Longest a job is left waiting for a faster backend while a slower free one could take it now."),
        ConfigKey(
            name: "routing.hedge_loads", kind: .int(0...16), defaultValue: .int(2),
            help: "With routing.rule expected_completion: how many idle backends may load the model a job bound to another backend needs while it waits there, for its model or behind other jobs (while load times are guesses), or the model of a job running elsewhere that they are to run a backup of; the job moves to whichever is ready first. 0: never."),
        ConfigKey(
            name: "routing.backup_runs", kind: .int(0...16), defaultValue: .int(2),
            help: "With routing.rule expected_completion: how many idle backends may run a copy of a job running elsewhere (when twice their assumed speed, or their known speed, would finish it first); the first copy to complete wins, the others are revoked. 0: never."),
        ConfigKey(
            name: "routing.speculative_backups", kind: .bool, defaultValue: .bool(true),
            help: "With routing.backup_runs above 0: true lets an idle backend with nothing else to do also copy a running job that is not a straggler: a backend whose speed is still assumed when four times that speed would finish it first (it measures the backend), one whose speed is known when at that speed it would finish first a job running on a backend slower than 0.95 of it. A copy costs an idle GPU's power and an interrupt when it loses. false: only stragglers are copied."),
        ConfigKey(
            name: "routing.prefetch_models", kind: .bool, defaultValue: .bool(true),
            help: "With routing.rule expected_completion: true lets an idle backend with no model loaded and none loading load the model that queued jobs needed most recently among those it offers (each model once per backend), so the next job needing it there does not wait for the load; it evicts nothing. false: models load only for jobs."),
        ConfigKey(
            name: "links.suspect_grace_seconds", kind: .seconds(0...3_600), defaultValue: .double(10),
            help: "A backend whose link dropped keeps its jobs this long before they are requeued."),
        ConfigKey(
            name: "links.forget_down_seconds", kind: .seconds(0...31_536_000), defaultValue: .double(86_400),
            help: "A remote backend whose link has been down this long is forgotten: gone from /v1/backends, /metrics and the job store; a later hello of its name gets a new id. Never one that `backends` names. 0: never."),
        ConfigKey(
            name: "links.reclaim_seconds", kind: .seconds(0...600), defaultValue: .double(5),
            help: "After a restart that brought back queued jobs: at most this long, nothing is bound while the remote backends that were up link again, so one still running a job whose binding was never stored claims it (hello.jobs) before another backend takes it. Ends once all of them registered or are down. 0: no pause."),
        ConfigKey(
            name: "links.sync_interval_seconds", kind: .seconds(0.1...3_600), defaultValue: .double(15),
            help: "Anti-entropy: how often each backend is asked whether its capabilities changed."),
        ConfigKey(
            name: "links.keepalive_seconds", kind: .seconds(1...3_600), defaultValue: .double(10),
            help: "A silent peer is dropped within this bound: the coordinator pings after `heartbeat_ms` = half of it (at least 500 ms, announced in `welcome`) of silence and drops a link silent for two such intervals."),
        ConfigKey(
            name: "links.handshake_timeout_seconds", kind: .seconds(1...600), defaultValue: .double(10),
            help: "A connection must finish its WebSocket upgrade within this time, then say hello within it (else close 4004)."),
        ConfigKey(
            name: "links.max_message_bytes", kind: .int(1_024...(64 << 20)), defaultValue: .int(1 << 20),
            help: "Largest WebSocket message accepted (larger ones close the link with 1009); an HTTP request body over it is refused too (413 message_too_large), as is one over http.max_body_bytes."),
        ConfigKey(
            name: "links.outbound_high_water_bytes", kind: .int(4_096...(1 << 30)), defaultValue: .int(8 << 20),
            help: "Bytes queued to one slow peer before its link is closed with 1008."),
        ConfigKey(
            name: "links.max_per_address", kind: .int(0...1_000_000), defaultValue: .int(0),
            help: "WebSocket links one source address may hold open; more are refused with too_many_links and close 4009. 0: no limit."),
        ConfigKey(
            name: "links.max_pending_handshakes_per_address", kind: .int(0...1_000_000), defaultValue: .int(0),
            help: "Accepted connections from one source address still in their TLS/HTTP/WebSocket handshake; more are closed as they are accepted. 0: no limit."),
        ConfigKey(
            name: "links.max_messages_per_second", kind: .int(0...10_000_000), defaultValue: .int(0),
            help: "Messages one link may send per second (bursts up to one second's worth); more: rate_limited, then close 4008. 0: no limit."),
        ConfigKey(
            name: "http.max_body_bytes", kind: .int(1_024...(64 << 20)), defaultValue: .int(1 << 20),
            help: "Largest HTTP request body accepted; larger ones get 413 and the connection closes (after the rest of the body, up to 16 times this or 16 MiB, whichever is more, is read and thrown away, so the client reads the 413 instead of a reset)."),
        ConfigKey(
            name: "jobs.max_in_flight_per_owner", kind: .int(0...10_000_000), defaultValue: .int(0),
            help: "Unfinished jobs one owner may have; a submit that would pass it is refused with 429 quota_exceeded. 0: no limit."),
        ConfigKey(
            name: "jobs.retain_finished", kind: .int(0...10_000_000), defaultValue: .int(100_000),
            help: "Finished jobs kept for GET /v1/jobs/{id} and status, newest first."),
        ConfigKey(
            name: "jobs.cancel_grace_seconds", kind: .seconds(0...3_600), defaultValue: .double(30),
            help: "A job canceled while on a backend keeps that backend's slot until the backend confirms it stopped, "
                + "at most this long; then it ends canceled anyway. 0: end at once."),
        ConfigKey(
            name: "store.url", kind: .string, defaultValue: .string(""),
            help: "Job store: sqlite:///PATH (SQLite, WAL, one fsync per group commit), "
                + "postgres://USER:PASSWORD@HOST:PORT/DATABASE (PostgreSQL through libpq; query parameters such as "
                + "sslmode go to libpq) or memory: (jobs do not survive a restart). Empty: sqlite under "
                + "$XDG_STATE_HOME/muster (~/.local/state/muster)."),
        ConfigKey(
            name: "store.commit_interval_seconds", kind: .seconds(0...1), defaultValue: .double(0.004),
            help: "Least time from the start of one group commit to the next: under load the changes of that time "
                + "share one transaction and one sync; after an idle spell a change is committed at once. "
                + "0: commit as soon as the last commit ended."),
        ConfigKey(
            name: "ha.name", kind: .string, defaultValue: .string(""),
            help: "With a postgres store (two coordinators on one database): this coordinator's node name, unique in the pair. Empty: the host name."),
        ConfigKey(
            name: "ha.advertise", kind: .string, defaultValue: .string(""),
            help: "With a postgres store: the URL agents and clients dial to reach this coordinator (ws://HOST:PORT or wss://), "
                + "which a standby names as the leader. Empty: from listen, which must then be neither a wildcard address nor port 0."),
        ConfigKey(
            name: "ha.lease_seconds", kind: .seconds(1...60), defaultValue: .double(3),
            help: "With a postgres store: the leader's lease. A leader that cannot renew stops routing before it expires; "
                + "a standby takes over within about this long plus its renewal interval after the leader dies."),
        ConfigKey(
            name: "dashboard.highlight_features", kind: .featureList, defaultValue: .string("frameinterps,video"),
            help: "Features the dashboard highlights on backends and held jobs (comma-separated)."),
    ]

    static let byName: [String: ConfigKey] = Dictionary(uniqueKeysWithValues: all.map { ($0.name, $0) })

    /// Parses a value given as text (environment, `--set`).
    func parse(text: String) -> Result<ConfigValue, InvalidValue> {
        switch kind {
        case .string, .path, .secret:
            return .success(.string(text))
        case .int(let range):
            guard let i = Int(text.trimmingCharacters(in: .whitespaces)) else { return .failure("expected an integer, got '\(text)'") }
            return check(int: i, range)
        case .seconds(let range):
            return parseSeconds(text).flatMap { check(seconds: $0, range) }
        case .fraction:
            guard let d = Double(text), (0...1).contains(d) else { return .failure("expected a number from 0 to 1") }
            return .success(.double(d))
        case .bool:
            switch text.lowercased() {
            case "true", "1", "yes", "on": return .success(.bool(true))
            case "false", "0", "no", "off": return .success(.bool(false))
            default: return .failure("expected true or false, got '\(text)'")
            }
        case .choice(let options):
            return options.contains(text)
                ? .success(.string(text)) : .failure("expected one of \(options.joined(separator: ", ")), got '\(text)'")
        case .hostPort:
            guard let hp = HostPort(text) else { return .failure("expected HOST:PORT, got '\(text)'") }
            return .success(.hostPort(hp))
        case .featureList:
            let items = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            return featureList(items)
        case .secondsByKind:
            // A JSON object, as in a file, is taken from the environment and --set too.
            if text.trimmingCharacters(in: .whitespaces).hasPrefix("{") {
                let read: (value: Any, twice: String?)
                switch Configuration.strictJSON(Array(text.utf8)) {
                case .success(let r): read = r
                case .failure(let failure): return .failure("expected a JSON object of job kind to seconds: \(failure.reason)")
                }
                guard let o = read.value as? [String: Any] else {
                    return .failure("expected a JSON object of job kind to seconds, got '\(text)'")
                }
                if let twice = read.twice { return .failure("'\(twice)' is given twice") }
                return secondsByKind(o.map { ($0.key, $0.value) })
            }
            var pairs: [(String, Any)] = []
            for item in text.split(separator: ",") {
                let parts = item.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                guard parts.count == 2 else { return .failure("expected KIND=SECONDS pairs separated by commas, got '\(item)'") }
                if pairs.contains(where: { $0.0 == parts[0] }) { return .failure("'\(parts[0])' is given twice") }
                pairs.append((parts[0], parts[1]))
            }
            return secondsByKind(pairs)
        }
    }

    /// Parses a value from the JSON config file, where types are checked strictly.
    func parse(json: Any) -> Result<ConfigValue, InvalidValue> {
        switch kind {
        case .string, .path, .secret, .choice, .hostPort:
            guard let s = json as? String else { return .failure("expected a string, got \(jsonTypeName(json))") }
            return parse(text: s)
        case .int(let range):
            guard let n = jsonNumber(json), n == n.rounded(), abs(n) < 1e15 else {
                return .failure("expected an integer, got \(jsonTypeName(json))")
            }
            return check(int: Int(n), range)
        case .seconds(let range):
            if let s = json as? String { return parseSeconds(s).flatMap { check(seconds: $0, range) } }
            guard let n = jsonNumber(json) else { return .failure("expected seconds as a number, got \(jsonTypeName(json))") }
            return check(seconds: n, range)
        case .fraction:
            guard let n = jsonNumber(json), (0...1).contains(n) else { return .failure("expected a number from 0 to 1") }
            return .success(.double(n))
        case .bool:
            guard let b = jsonBool(json) else { return .failure("expected true or false, got \(jsonTypeName(json))") }
            return .success(.bool(b))
        case .featureList:
            if let s = json as? String { return parse(text: s) }
            guard let array = json as? [Any] else {
                return .failure("expected an array of feature names, got \(jsonTypeName(json))")
            }
            var items: [String] = []
            for element in array {
                guard let s = element as? String else {
                    return .failure("expected an array of feature names, found \(jsonTypeName(element)) in it")
                }
                items.append(s)
            }
            return featureList(items)
        case .secondsByKind:
            if let s = json as? String { return parse(text: s) }
            guard let o = json as? [String: Any] else {
                return .failure("expected an object of job kind to seconds, got \(jsonTypeName(json))")
            }
            return secondsByKind(o.map { ($0.key, $0.value) })
        }
    }

    private func secondsByKind(_ pairs: [(String, Any)]) -> Result<ConfigValue, InvalidValue> {
        var out: [String: Double] = [:]
        for (kind, value) in pairs {
            guard isValidFeature(kind) else {
                return .failure("'\(kind)' is not a job kind (a-z, 0-9, _ . -; starts with a letter; at most 64)")
            }
            let seconds: Result<Double, InvalidValue>
            if let text = value as? String {
                seconds = parseSeconds(text)
            } else if let n = jsonNumber(value) {
                seconds = .success(n)
            } else {
                seconds = .failure("expected seconds for '\(kind)', got \(jsonTypeName(value))")
            }
            switch seconds {
            case .success(let x) where x.isFinite && x > 0 && x <= 86_400: out[kind] = x
            case .success(let x): return .failure("\(x) seconds for '\(kind)' is out of range (above 0, at most 86400)")
            case .failure(let reason): return .failure(reason)
            }
        }
        return .success(.string(out.keys.sorted().map { "\($0)=\(ConfigValue.double(out[$0]!))" }.joined(separator: ",")))
    }

    private func featureList(_ items: [String]) -> Result<ConfigValue, InvalidValue> {
        if let bad = items.first(where: { !isValidFeature($0) }) {
            return .failure("'\(bad)' is not a feature name (a-z, 0-9, _ . -; starts with a letter)")
        }
        return .success(.string(Set(items).sorted().joined(separator: ",")))
    }

    private func check(int i: Int, _ range: ClosedRange<Int>) -> Result<ConfigValue, InvalidValue> {
        range.contains(i) ? .success(.int(i)) : .failure("\(i) is out of range \(range.lowerBound)...\(range.upperBound)")
    }

    /// Durations are used to the nearest millisecond: the value kept (and shown by
    /// `--print-config`) is the one used, so `0.0004` is 0 (for a window: off).
    private func check(seconds given: Double, _ range: ClosedRange<Double>) -> Result<ConfigValue, InvalidValue> {
        let s = given.isFinite && abs(given) < 1e12 ? (given * 1000).rounded() / 1000 : given
        guard s.isFinite, range.contains(s) else {
            let shown = s == given ? "\(s)" : "\(given) (\(ConfigValue.double(s)) to the millisecond)"
            return .failure("\(shown) is out of range \(ConfigValue.double(range.lowerBound))...\(ConfigValue.double(range.upperBound)) seconds")
        }
        return .success(.double(s))
    }
}

/// Parses `40`, `40s`, `1.5s`, `250ms`, `2m` into seconds.
func parseSeconds(_ text: String) -> Result<Double, InvalidValue> {
    let t = text.trimmingCharacters(in: .whitespaces).lowercased()
    let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
    for (suffix, scale) in units where t.hasSuffix(suffix) {
        if let n = Double(t.dropLast(suffix.count)), n.isFinite { return .success(n * scale) }
        return .failure("expected a duration like 40s or 250ms, got '\(text)'")
    }
    if let n = Double(t), n.isFinite { return .success(n) }
    return .failure("expected a duration like 40s or 250ms, got '\(text)'")
}


func jsonTypeName(_ value: Any) -> String {
    if value is NSNull { return "null" }
    if jsonBool(value) != nil { return "a boolean" }
    if jsonNumber(value) != nil { return "a number" }
    if value is String { return "a string" }
    if value is [Any] { return "an array" }
    if value is [String: Any] { return "an object" }
    return "an unsupported value"
}

/// JSONSerialization hands booleans over as NSNumber; its booleans carry the objCType "c",
/// which its numbers never do (they are "i", "q" or "d").
func jsonBool(_ value: Any) -> Bool? {
    guard let n = value as? NSNumber, String(cString: n.objCType) == "c" else { return nil }
    return n.boolValue
}

func jsonNumber(_ value: Any) -> Double? {
    guard let n = value as? NSNumber, String(cString: n.objCType) != "c" else { return nil }
    return n.doubleValue
}

/// Why a configuration value was refused; becomes the reason of a `ConfigError`.
struct InvalidValue: Error, ExpressibleByStringInterpolation, CustomStringConvertible {
    var description: String
    init(stringLiteral value: String) { description = value }
    init(stringInterpolation: DefaultStringInterpolation) { description = String(stringInterpolation: stringInterpolation) }
}

extension ConfigKey {
    /// The configuration reference as a Markdown table, as README.md carries it
    /// (a test keeps README equal to this).
    public static func referenceMarkdown() -> String {
        var out = "| key | environment | default | meaning |\n|---|---|---|---|\n"
        for key in all {
            let def: String
            switch key.defaultValue {
            case .string(let s) where s.isEmpty: def = "(none)"
            default: def = "`\(key.defaultValue)`"
            }
            var meaning = key.help
            if case .choice(let options) = key.kind {
                meaning += " One of " + options.map { "`\($0)`" }.joined(separator: ", ") + "."
            }
            out += "| `\(key.name)` | `\(key.environmentName)` | \(def) | \(meaning) |\n"
        }
        out += "| `backends` | `MUSTER_BACKENDS` | two local simulated | Array of backends (JSON), see below. |\n"
        out += "| `auth.backend_tokens` | `MUSTER_AUTH_BACKEND_TOKENS` | (none) | Object of backend name to the token that backend must present (JSON): backend credentials with inline tokens. |\n"
        out += "| `auth.credentials` | `MUSTER_AUTH_CREDENTIALS` | (none) | Array of credentials (JSON): `name`, `role` (`backend`, `client`, `operator`, `read`) and one of `token_file`, `token_env`; see \"Security\". |\n"
        return out
    }
}

/// A duration as written in configuration and flags (`40`, `40s`, `250ms`, `2m`), or nil when the
/// text is not one or is negative.
public func parseDuration(_ text: String) -> Duration? {
    guard case .success(let seconds) = parseSeconds(text), seconds >= 0 else { return nil }
    return .milliseconds(Int64((seconds * 1000).rounded()))
}
