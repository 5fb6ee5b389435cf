import Foundation
import Testing

@testable import MusterServer

/// The typed configuration (`Configuration.settings`): every key of the table lands in a field of
/// its section, and a value that does not decode is refused naming its key.
@Suite struct ConfigurationSettingsTests {
    func load(_ set: [(String, String)]) throws -> Configuration {
        try Configuration.load(file: nil, environment: [:], overrides: set.map { ("flag --set", $0.0, $0.1) })
    }

    /// Two readable files, for the keys that name one.
    func files() throws -> (String, String) {
        let dir = FileManager.default.temporaryDirectory
        let a = dir.appendingPathComponent("muster-settings-\(UUID().uuidString)-a").path
        let b = dir.appendingPathComponent("muster-settings-\(UUID().uuidString)-b").path
        try "a\n".write(toFile: a, atomically: true, encoding: .utf8)
        try "b\n".write(toFile: b, atomically: true, encoding: .utf8)
        return (a, b)
    }

    /// A valid value for `key` other than its default, as text for `--set`.
    func otherValue(_ key: ConfigKey, file: String) throws -> String {
        switch (key.kind, key.defaultValue) {
        case (.int(let range), .int(let d)):
            return String(d == range.lowerBound ? range.lowerBound + 1 : range.lowerBound)
        case (.seconds(let range), .double(let d)):
            return "\(d == range.lowerBound ? min(range.lowerBound + 1, range.upperBound) : range.lowerBound)"
        case (.fraction, .double(let d)):
            return d == 0 ? "1" : "0"
        case (.bool, .bool(let b)):
            return String(!b)
        case (.choice(let options), .string(let d)):
            return try #require(options.first { $0 != d }, "\(key.name) has one choice")
        case (.hostPort, _):
            return "127.0.0.1:7461"
        case (.featureList, _):
            return "zz"
        case (.secondsByKind, _):
            return "zz=7"
        case (.path, _):
            return file
        case (.secret, _):
            return "s3cret"
        case (.string, _):
            switch key.name {
            case "store.url": return "memory:"
            case "ha.advertise": return "ws://10.0.0.1:7460"
            case "auth.allowed_origins": return "https://ui.example"
            default: return "east"
            }
        default:
            Issue.record("\(key.name): default \(key.defaultValue) does not fit its kind \(key.kind)")
            return ""
        }
    }

    /// Keys that only load beside others (`tls.key` needs `tls.cert` ...): set in both loads.
    func companions(of key: ConfigKey, file: String) -> [(String, String)] {
        ["tls.cert", "tls.key", "tls.client_ca"].contains(key.name) ? [("tls.cert", file), ("tls.key", file)] : []
    }

    /// The sections of `settings` by name, as `Mirror` sees the stored properties.
    func sections(_ settings: Configuration.Settings) -> [String: Any] {
        Dictionary(uniqueKeysWithValues: Mirror(reflecting: settings).children.map { ($0.label ?? "?", $0.value) })
    }

    func equal(_ a: Any, _ b: Any) -> Bool {
        func same<T: Equatable>(_ x: T, _ y: Any) -> Bool { x == (y as? T) }
        guard let a = a as? any Equatable else { return false }
        return same(a, b)
    }

    /// Adding a key to `ConfigKey.all` without a field in `Configuration.Settings` fails here: each
    /// key set to another value through the loader changes its section (named by the key's first
    /// part) and no other.
    @Test func everyKeyIsDecodedIntoTheSectionItNames() throws {
        let (a, b) = try files()
        #expect(Set(sections(try load([]).settings).keys) == Set(ConfigKey.all.map { String($0.name.split(separator: ".")[0]) }))
        for key in ConfigKey.all {
            let base = companions(of: key, file: a)
            let value = try otherValue(key, file: b)
            let before = try load(base).settings
            let after = try load(base + [(key.name, value)]).settings
            let section = String(key.name.split(separator: ".")[0])
            let (old, new) = (sections(before), sections(after))
            let changed = Set(old.keys.filter { !equal(old[$0]!, new[$0] as Any) })
            #expect(changed == [section], "\(key.name)=\(value) changed \(changed.sorted())")
        }
    }

    /// Every option of a choice key decodes, each to its own case.
    @Test func everyChoiceDecodes() throws {
        for key in ConfigKey.all {
            guard case .choice(let options) = key.kind else { continue }
            let section = String(key.name.split(separator: ".")[0])
            var seen: [Any] = []
            for option in options {
                let value = try #require(sections(try load([(key.name, option)]).settings)[section])
                #expect(!seen.contains { equal($0, value) }, "\(key.name)=\(option) decodes like another option")
                seen.append(value)
            }
        }
        #expect(try load([("log.level", "trace"), ("log.format", "json")]).settings.log == .init(level: .trace, format: .json))
        #expect(try load([("routing.no_eligible_backend", "queue")]).settings.routing.noEligibleBackend == .queue)
    }

    @Test func durationsKeepMilliseconds() throws {
        let s = try load([
            ("gate.window_seconds", "250ms"), ("links.keepalive_seconds", "4.35"), ("routing.job_seconds", "image=1.5,video=2m"),
        ]).settings
        #expect(s.gate.window == .milliseconds(250))
        #expect(s.links.keepalive == .milliseconds(4350))
        #expect(s.routing.jobDurations == ["image": .milliseconds(1500), "video": .seconds(120)])
        #expect(s.gate.window.configMilliseconds == 250)
        #expect(Daemon.heartbeatMs(keepalive: .seconds(10)) == 5000)
        #expect(Daemon.heartbeatMs(keepalive: .seconds(1)) == 500)
        #expect(Daemon.heartbeatMs(keepalive: .milliseconds(4351)) == 2176)
    }

    @Test func emptyTextKeysAreNil() throws {
        let s = try load([]).settings
        #expect(s.auth.token == nil && s.auth.tokenFile == nil)
        #expect(s.tls == .init(cert: nil, key: nil, clientCA: nil))
        #expect(s.ha.name == nil && s.ha.advertise == nil)
        guard case .sqlite = s.store.url else {
            Issue.record("an empty store.url is SQLite at the default path, got \(s.store.url)")
            return
        }
        #expect(try load([("store.url", "memory:")]).settings.store.url == .memory)
    }

    /// The decode names the key of a value it cannot use, like every other configuration error
    /// (`muster serve` exits 2 with it); the loader's parsing keeps such values out, so these are
    /// handed to the decode directly.
    @Test func aValueThatDoesNotDecodeNamesItsKey() throws {
        var values = Dictionary(uniqueKeysWithValues: ConfigKey.all.map { ($0.name, $0.defaultValue) })
        _ = try Configuration.Settings(decoding: values)
        let bad: [(String, ConfigValue)] = [
            ("gate.window_seconds", .string("soon")), ("routing.overqueue", .double(1.5)), ("listen", .string("here")),
            ("log.level", .string("loud")), ("routing.rule", .string("fastest")), ("routing.job_seconds", .string("image")),
            ("store.url", .string("ftp://x")), ("auth.metrics_open", .int(1)),
        ]
        for (name, value) in bad {
            values = Dictionary(uniqueKeysWithValues: ConfigKey.all.map { ($0.name, $0.defaultValue) })
            values[name] = value
            do {
                _ = try Configuration.Settings(decoding: values)
                Issue.record("\(name)=\(value) decoded")
            } catch {
                #expect(error.key == name, "\(error)")
            }
        }
        let store = try #require(throws: ConfigError.self) { try load([("store.url", "ftp://x")]) }
        #expect(store.key == "store.url")
    }
}
