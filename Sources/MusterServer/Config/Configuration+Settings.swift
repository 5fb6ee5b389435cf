import Foundation
import Logging
import MusterCore
import MusterStore
import MusterTransport

// The typed configuration: one struct per section of the key table, decoded once from the merged
// sources (`Configuration.load`). The decode is the only place that looks a key up by its name; it
// names the key when a value does not decode, so `muster serve` exits 2 naming it. Everything
// after the load reads these fields.
extension Configuration {
    /// Every scalar key of `ConfigKey.all`, typed, by section. Durations keep millisecond
    /// precision (the finest unit a duration may be written in, `250ms`).
    public struct Settings: Sendable, Equatable {
        /// `listen`.
        public var listen: HostPort
        public var auth: Auth
        public var tls: TLS
        public var log: Log
        public var gate: Gate
        public var routing: Routing
        public var links: Links
        public var http: HTTP
        public var jobs: Jobs
        public var store: Store
        public var ha: HA
        public var dashboard: Dashboard
    }

    /// `auth.*` (the scalar keys; `auth.credentials` and `auth.backend_tokens` are structured).
    public struct Auth: Sendable, Equatable {
        /// `auth.token`; nil when empty.
        public var token: String?
        /// `auth.token_file`; nil when empty.
        public var tokenFile: String?
        /// `auth.allow_anonymous`.
        public var allowAnonymous: Bool
        /// `auth.metrics_open`.
        public var metricsOpen: Bool
        /// `auth.allowed_origins`, normalized (BrowserGuard).
        public var allowedOrigins: Set<String> = []
    }

    /// `tls.*`; each nil when empty.
    public struct TLS: Sendable, Equatable {
        /// `tls.cert`.
        public var cert: String?
        /// `tls.key`.
        public var key: String?
        /// `tls.client_ca`.
        public var clientCA: String?
    }

    /// `log.*`.
    public struct Log: Sendable, Equatable {
        /// `log.level`.
        public var level: Logger.Level
        /// `log.format`.
        public var format: LogFormat
    }

    /// `log.format`.
    public enum LogFormat: String, Sendable, CaseIterable {
        case text, json
    }

    /// `gate.*`.
    public struct Gate: Sendable, Equatable {
        /// `gate.window_seconds`.
        public var window: Duration
        /// `gate.settle_seconds`.
        public var settle: Duration
    }

    /// `routing.*`.
    public struct Routing: Sendable, Equatable {
        /// `routing.overqueue`.
        public var overqueue: Int
        /// `routing.work_stealing`.
        public var workStealing: Bool
        /// `routing.inhibit_after_failure_seconds`.
        public var inhibitAfterFailure: Duration
        /// `routing.max_attempts`.
        public var maxAttempts: Int
        /// `routing.no_eligible_backend`.
        public var noEligibleBackend: NoEligibleBackend
        /// `routing.rule`.
        public var rule: RoutingRule
        /// `routing.job_seconds`: expected duration per job kind.
        public var jobDurations: [String: Duration]
        /// `routing.default_job_seconds`.
        public var defaultJobDuration: Duration
        /// `routing.model_load_seconds`.
        public var modelLoadDuration: Duration
        /// `routing.max_wait_for_better_seconds`.
        public var maxWaitForBetter: Duration
        /// `routing.hedge_loads`.
        public var hedgeLoads: Int
        /// `routing.backup_runs`.
        public var backupRuns: Int
        /// `routing.speculative_backups`.
        public var speculativeBackups: Bool
        /// `routing.prefetch_models`.
        public var prefetchModels: Bool
    }

    /// `routing.no_eligible_backend`: what happens, once the gate is open, to a job no backend can run.
    public enum NoEligibleBackend: String, Sendable, CaseIterable {
        case fail, queue
    }

    /// `links.*`.
    public struct Links: Sendable, Equatable {
        /// `links.suspect_grace_seconds`.
        public var suspectGrace: Duration
        /// `links.forget_down_seconds`; `.zero`: never.
        public var forgetDown: Duration
        /// `links.reclaim_seconds`; `.zero`: no pause.
        public var reclaim: Duration
        /// `links.sync_interval_seconds`.
        public var syncInterval: Duration
        /// `links.keepalive_seconds`.
        public var keepalive: Duration
        /// `links.handshake_timeout_seconds`.
        public var handshakeTimeout: Duration
        /// `links.max_message_bytes`.
        public var maxMessageBytes: Int
        /// `links.outbound_high_water_bytes`.
        public var outboundHighWaterBytes: Int
        /// `links.max_per_address`; 0: no limit.
        public var maxPerAddress: Int
        /// `links.max_pending_handshakes_per_address`; 0: no limit.
        public var maxPendingHandshakesPerAddress: Int
        /// `links.max_messages_per_second`; 0: no limit.
        public var maxMessagesPerSecond: Int
    }

    /// `http.*`.
    public struct HTTP: Sendable, Equatable {
        /// `http.max_body_bytes`.
        public var maxBodyBytes: Int
    }

    /// `jobs.*`.
    public struct Jobs: Sendable, Equatable {
        /// `jobs.max_in_flight_per_owner`; 0: no limit.
        public var maxInFlightPerOwner: Int
        /// `jobs.retain_finished`.
        public var retainFinished: Int
        /// `jobs.cancel_grace_seconds`.
        public var cancelGrace: Duration
    }

    /// `store.*`.
    public struct Store: Sendable, Equatable {
        /// `store.url`; empty: SQLite at the default path of this user.
        public var url: StoreURL
        /// `store.commit_interval_seconds`.
        public var commitInterval: Duration

        /// A new, unopened store for `url` with these settings (`StoreURL.makeStore`).
        func makeStore(fencingToken: Int64? = nil) -> any JobStore {
            url.makeStore(fencingToken: fencingToken, commitInterval: commitInterval)
        }
    }

    /// `ha.*`.
    public struct HA: Sendable, Equatable {
        /// `ha.name`; nil when empty (the host name is used).
        public var name: String?
        /// `ha.advertise`; nil when empty (derived from `listen`).
        public var advertise: String?
        /// `ha.lease_seconds`.
        public var lease: Duration
    }

    /// `dashboard.*`.
    public struct Dashboard: Sendable, Equatable {
        /// `dashboard.highlight_features`: sorted, no repeats.
        public var highlightFeatures: [String]
    }
}

extension Configuration.Settings {
    /// Decodes the merged values (every key of `ConfigKey.all`, each already parsed and range
    /// checked by its kind) into typed fields. Throws naming the key whose value does not decode.
    init(decoding values: [String: ConfigValue], origins: ConfigOrigins = ConfigOrigins()) throws(ConfigError) {
        let d = SettingsDecoder(values: values, origins: origins)
        listen = try d.hostPort("listen")
        auth = Configuration.Auth(
            token: try d.optionalString("auth.token"), tokenFile: try d.optionalString("auth.token_file"),
            allowAnonymous: try d.bool("auth.allow_anonymous"), metricsOpen: try d.bool("auth.metrics_open"))
        switch BrowserGuard.origins(try d.string("auth.allowed_origins")) {
        case .success(let origins): auth.allowedOrigins = origins
        case .failure(let bad):
            throw d.fail("auth.allowed_origins", "'\(bad.text)' is not an origin: expected http://HOST[:PORT] or https://HOST[:PORT]")
        }
        tls = Configuration.TLS(
            cert: try d.optionalString("tls.cert"), key: try d.optionalString("tls.key"),
            clientCA: try d.optionalString("tls.client_ca"))
        log = Configuration.Log(
            level: try d.choice("log.level") { Logger.Level(rawValue: $0) },
            format: try d.choice("log.format") { Configuration.LogFormat(rawValue: $0) })
        gate = Configuration.Gate(
            window: try d.duration("gate.window_seconds"), settle: try d.duration("gate.settle_seconds"))
        routing = Configuration.Routing(
            overqueue: try d.int("routing.overqueue"),
            workStealing: try d.bool("routing.work_stealing"),
            inhibitAfterFailure: try d.duration("routing.inhibit_after_failure_seconds"),
            maxAttempts: try d.int("routing.max_attempts"),
            noEligibleBackend: try d.choice("routing.no_eligible_backend") { Configuration.NoEligibleBackend(rawValue: $0) },
            rule: try d.choice("routing.rule") { Configuration.routingRules[$0] },
            jobDurations: try d.durationsByKind("routing.job_seconds"),
            defaultJobDuration: try d.duration("routing.default_job_seconds"),
            modelLoadDuration: try d.duration("routing.model_load_seconds"),
            maxWaitForBetter: try d.duration("routing.max_wait_for_better_seconds"),
            hedgeLoads: try d.int("routing.hedge_loads"),
            backupRuns: try d.int("routing.backup_runs"),
            speculativeBackups: try d.bool("routing.speculative_backups"),
            prefetchModels: try d.bool("routing.prefetch_models"))
        links = Configuration.Links(
            suspectGrace: try d.duration("links.suspect_grace_seconds"),
            forgetDown: try d.duration("links.forget_down_seconds"),
            reclaim: try d.duration("links.reclaim_seconds"),
            syncInterval: try d.duration("links.sync_interval_seconds"),
            keepalive: try d.duration("links.keepalive_seconds"),
            handshakeTimeout: try d.duration("links.handshake_timeout_seconds"),
            maxMessageBytes: try d.int("links.max_message_bytes"),
            outboundHighWaterBytes: try d.int("links.outbound_high_water_bytes"),
            maxPerAddress: try d.int("links.max_per_address"),
            maxPendingHandshakesPerAddress: try d.int("links.max_pending_handshakes_per_address"),
            maxMessagesPerSecond: try d.int("links.max_messages_per_second"))
        http = Configuration.HTTP(maxBodyBytes: try d.int("http.max_body_bytes"))
        jobs = Configuration.Jobs(
            maxInFlightPerOwner: try d.int("jobs.max_in_flight_per_owner"),
            retainFinished: try d.int("jobs.retain_finished"),
            cancelGrace: try d.duration("jobs.cancel_grace_seconds"))
        store = Configuration.Store(
            url: try d.storeURL("store.url"), commitInterval: try d.duration("store.commit_interval_seconds"))
        ha = Configuration.HA(
            name: try d.optionalString("ha.name"), advertise: try d.optionalString("ha.advertise"),
            lease: try d.duration("ha.lease_seconds"))
        dashboard = Configuration.Dashboard(highlightFeatures: try d.featureList("dashboard.highlight_features"))
    }
}

extension Configuration {
    /// `routing.rule`'s choices as the core names them.
    static let routingRules: [String: RoutingRule] = [
        "expected_completion": .expectedCompletion, "least_loaded": .leastLoaded,
    ]
}

/// Reads one key's merged value as the type its field needs. A name missing from the key table
/// or a value of another shape is a bug in the decode, reported like a bad value: naming the key.
private struct SettingsDecoder {
    let values: [String: ConfigValue]
    let origins: ConfigOrigins

    func fail(_ name: String, _ reason: String) -> ConfigError {
        ConfigError(source: origins.of(name), key: name, reason: reason)
    }

    private func value(_ name: String) throws(ConfigError) -> (ConfigKey, ConfigValue) {
        guard let key = ConfigKey.byName[name] else { throw fail(name, "is not in the key table") }
        return (key, values[name] ?? key.defaultValue)
    }

    func int(_ name: String) throws(ConfigError) -> Int {
        guard case (_, .int(let i)) = try value(name) else { throw fail(name, "expected an integer") }
        return i
    }

    func bool(_ name: String) throws(ConfigError) -> Bool {
        guard case (_, .bool(let b)) = try value(name) else { throw fail(name, "expected true or false") }
        return b
    }

    func hostPort(_ name: String) throws(ConfigError) -> HostPort {
        guard case (_, .hostPort(let h)) = try value(name) else { throw fail(name, "expected HOST:PORT") }
        return h
    }

    func string(_ name: String) throws(ConfigError) -> String {
        guard case (_, .string(let s)) = try value(name) else { throw fail(name, "expected a string") }
        return s
    }

    /// Empty is nil.
    func optionalString(_ name: String) throws(ConfigError) -> String? {
        let s = try string(name)
        return s.isEmpty ? nil : s
    }

    /// A `.choice` key as the enum its consumer takes; every option of the key must map to a case.
    func choice<T>(_ name: String, _ make: (String) -> T?) throws(ConfigError) -> T {
        let text = try string(name)
        guard let v = make(text) else { throw fail(name, "'\(text)' has no meaning here") }
        return v
    }

    /// Seconds (a number) as a duration, to the millisecond.
    func duration(_ name: String) throws(ConfigError) -> Duration {
        let (key, v) = try value(name)
        let seconds: Double
        switch v {
        case .double(let d): seconds = d
        case .int(let i): seconds = Double(i)
        default: throw fail(key.name, "expected seconds")
        }
        guard let d = Self.duration(seconds: seconds) else { throw fail(name, "\(seconds) seconds is not a duration") }
        return d
    }

    /// A `.featureList` key: kept as sorted names separated by commas.
    func featureList(_ name: String) throws(ConfigError) -> [String] {
        try string(name).split(separator: ",").map(String.init)
    }

    /// A `.secondsByKind` key: kept as sorted `kind=seconds` pairs separated by commas.
    func durationsByKind(_ name: String) throws(ConfigError) -> [String: Duration] {
        var out: [String: Duration] = [:]
        for pair in try string(name).split(separator: ",") {
            let parts = pair.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, let x = Double(parts[1]), let d = Self.duration(seconds: x) else {
                throw fail(name, "expected KIND=SECONDS, got '\(pair)'")
            }
            out[String(parts[0])] = d
        }
        return out
    }

    /// `store.url`; empty: SQLite at the default path of this user.
    func storeURL(_ name: String) throws(ConfigError) -> StoreURL {
        let text = try string(name)
        if text.isEmpty { return .sqlite(path: StoreURL.defaultSQLitePath(environment: ProcessInfo.processInfo.environment)) }
        do {
            return try StoreURL(parsing: text)
        } catch {
            throw fail(name, "\(error)")
        }
    }

    static func duration(seconds: Double) -> Duration? {
        guard seconds.isFinite, seconds >= 0, seconds < 1e12 else { return nil }
        return .milliseconds(Int64((seconds * 1000).rounded()))
    }
}

extension Duration {
    /// Whole milliseconds (configuration durations are whole milliseconds), for the wire's `_ms` fields.
    var configMilliseconds: Int64 {
        let (s, atto) = components
        return s * 1000 + atto / 1_000_000_000_000_000
    }
}
