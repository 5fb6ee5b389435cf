import Foundation
import MusterStore
import Testing

/// The PostgreSQL server Scripts/with-postgres started for the suite (Scripts/test runs every test
/// beside one). Each test makes a database of its own, so tests stay independent.
enum TestPostgres {
    /// `MUSTER_TEST_POSTGRES_URL`, a superuser's URL to the `postgres` database. Without it the
    /// PostgreSQL tests fail (never skip): run them through Scripts/with-postgres.
    static func serverURL(sourceLocation: SourceLocation = #_sourceLocation) -> String? {
        guard let url = ProcessInfo.processInfo.environment["MUSTER_TEST_POSTGRES_URL"], !url.isEmpty else {
            Issue.record(
                "MUSTER_TEST_POSTGRES_URL is not set: run the tests through Scripts/with-postgres (Scripts/test does)",
                sourceLocation: sourceLocation)
            return nil
        }
        return url
    }

    /// `url` with its database replaced.
    static func url(_ url: String, database: String) -> String {
        let schemeEnd = url.range(of: "://")!.upperBound
        let slash = url[schemeEnd...].firstIndex(of: "/") ?? url.endIndex
        let query = url[slash...].firstIndex(of: "?").map { String(url[$0...]) } ?? ""
        return String(url[..<slash]) + "/" + database + query
    }

    /// `url` with its user and password replaced.
    static func url(_ url: String, user: String, password: String) -> String {
        let schemeEnd = url.range(of: "://")!.upperBound
        let at = url[schemeEnd...].firstIndex(of: "@")!
        return String(url[..<schemeEnd]) + "\(user):\(password)" + String(url[at...])
    }

    /// A new, empty database; returns its URL (the server's user).
    static func freshDatabase(sourceLocation: SourceLocation = #_sourceLocation) -> String? {
        guard let server = serverURL(sourceLocation: sourceLocation) else { return nil }
        let name = "muster_test_\(UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(20))"
        guard sql(server, "CREATE DATABASE \(name)", sourceLocation: sourceLocation) != nil else { return nil }
        return url(server, database: name)
    }

    /// Runs SQL with psql; returns what it printed (unaligned, tuples only), or nil after
    /// recording an issue.
    @discardableResult
    static func sql(_ url: String, _ sql: String, sourceLocation: SourceLocation = #_sourceLocation) -> String? {
        let result = run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
        guard result.status == 0 else {
            Issue.record("psql failed (\(result.status)) on \(sql): \(result.output)", sourceLocation: sourceLocation)
            return nil
        }
        return result.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// Collects an election's reports (on its threads), each with the monotonic instant it came.
final class LeadershipLog: @unchecked Sendable {
    // @unchecked Sendable: `events` is read and written with `condition` locked.
    private let condition = NSCondition()
    private var events: [(Leadership, UInt64)] = []

    func record(_ leadership: Leadership) {
        condition.lock()
        events.append((leadership, DispatchTime.now().uptimeNanoseconds))
        condition.broadcast()
        condition.unlock()
    }

    var all: [Leadership] {
        condition.lock()
        defer { condition.unlock() }
        return events.map(\.0)
    }

    /// When the first report matching `predicate` came (monotonic nanoseconds).
    func instant(of predicate: (Leadership) -> Bool) -> UInt64? {
        condition.lock()
        defer { condition.unlock() }
        return events.first { predicate($0.0) }?.1
    }

    /// Waits until a report matches; returns it, or nil after recording an issue.
    @discardableResult
    func wait(
        _ what: String, after count: Int = 0, timeout: TimeInterval = 30,
        sourceLocation: SourceLocation = #_sourceLocation, until predicate: (Leadership) -> Bool
    ) -> Leadership? {
        let deadline = Date(timeIntervalSinceNow: timeout)
        condition.lock()
        defer { condition.unlock() }
        while true {
            if let hit = events.dropFirst(count).first(where: { predicate($0.0) }) { return hit.0 }
            guard Date() < deadline else {
                Issue.record(
                    "timed out after \(timeout) s waiting for \(what); reports: \(events.map(\.0))",
                    sourceLocation: sourceLocation)
                return nil
            }
            _ = condition.wait(until: min(deadline, Date(timeIntervalSinceNow: 0.05)))
        }
    }

    var count: Int {
        condition.lock()
        defer { condition.unlock() }
        return events.count
    }
}

extension Leadership {
    var token: Int64? { if case .leader(let t) = self { t } else { nil } }
    var leaderInfo: LeaderInfo? { if case .standby(let l) = self { l } else { nil } }
    var isLeader: Bool { token != nil }
}
