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

/// An election's reports.
final class LeadershipLog: ReportLog<Leadership>, @unchecked Sendable {
    /// Waits for a report after the first `count` that matches; returns it, or nil after
    /// recording an issue.
    @discardableResult
    func first(
        _ what: String, after count: Int = 0, timeout: TimeInterval = 30,
        sourceLocation: SourceLocation = #_sourceLocation, where predicate: (Leadership) -> Bool
    ) async -> Leadership? {
        var hit: Leadership?
        let found = await wait(what, timeout: timeout, sourceLocation: sourceLocation) { events in
            hit = events.dropFirst(count).first(where: predicate)
            return hit != nil
        }
        return found ? hit : nil
    }
}

extension Leadership {
    var token: Int64? { if case .leader(let t) = self { t } else { nil } }
    var leaderInfo: LeaderInfo? { if case .standby(let l) = self { l } else { nil } }
    var isLeader: Bool { token != nil }
}

/// The stores the contract tests run against.
enum StoreKind: String, CaseIterable, Sendable {
    case sqlite, postgres
}

/// Where a test keeps its store: a file in a temporary directory, or a fresh PostgreSQL database.
/// Every `store()` is a new store object on the same data.
final class StorePlace {
    let kind: StoreKind
    /// The file's path, or the database's URL.
    let location: String
    private let dir: TempDir?

    /// Nil (with an issue recorded) when PostgreSQL is not there.
    init?(_ kind: StoreKind, file: String = "muster.sqlite", sourceLocation: SourceLocation = #_sourceLocation) throws {
        self.kind = kind
        switch kind {
        case .sqlite:
            let dir = try TempDir()
            self.dir = dir
            location = dir.file(file)
        case .postgres:
            guard let url = TestPostgres.freshDatabase(sourceLocation: sourceLocation) else { return nil }
            dir = nil
            location = url
        }
    }

    func store(retryInterval: Duration = .seconds(1), fencingToken: Int64? = nil, commitInterval: Duration = .zero)
        -> any JobStore
    {
        switch kind {
        case .sqlite: SQLiteJobStore(path: location, retryInterval: retryInterval, commitInterval: commitInterval)
        case .postgres:
            PostgresJobStore(
                url: location, retryInterval: retryInterval, fencingToken: fencingToken, commitInterval: commitInterval)
        }
    }

    func remove() {
        dir?.remove()
        if kind == .postgres, let server = ProcessInfo.processInfo.environment["MUSTER_TEST_POSTGRES_URL"] {
            let name = String(location[location.index(after: location.lastIndex(of: "/")!)...])
            // Not waited for: DROP DATABASE waits until every backend of the server has absorbed
            // its barrier, and the election test that freezes a backend with SIGSTOP holds it for
            // up to 30 s. Two tests waiting here held both threads of the test pool, and the
            // frozen backend's test, which needs one to send SIGCONT, never ran again. The
            // throw-away server (Scripts/with-postgres) goes away with everything left in it.
            Thread.detachNewThread {
                _ = run(["psql", "-X", "-q", "-d", server, "-c", "DROP DATABASE IF EXISTS \(name) WITH (FORCE)"])
            }
        }
    }
}

/// A PostgreSQL server of one test's own (Scripts/with-postgres, held open until `shutdown`), for
/// tests that stop and start it while the shared one serves the other tests.
final class PrivatePostgres {
    private let process = Process()
    private let input = Pipe()
    /// A superuser's URL to its `postgres` database.
    let url: String
    private let control: String
    /// The server's log, quoted when pg_ctl fails.
    private let log: String

    init?(sourceLocation: SourceLocation = #_sourceLocation) {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        process.executableURL = root.appendingPathComponent("Scripts/with-postgres")
        process.arguments = [
            "sh", "-c",
            #"printf '%s\n%s\n%s\n' "$MUSTER_TEST_POSTGRES_URL" "$MUSTER_TEST_POSTGRES_CTL" "$MUSTER_TEST_POSTGRES_LOG"; exec cat >/dev/null"#,
        ]
        let output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        do {
            try process.run()
        } catch {
            Issue.record("cannot run Scripts/with-postgres: \(error)", sourceLocation: sourceLocation)
            return nil
        }
        var text = ""
        while text.filter({ $0 == "\n" }).count < 3 {
            let data = output.fileHandleForReading.availableData
            if data.isEmpty { break }
            text += String(decoding: data, as: UTF8.self)
        }
        let lines = text.split(separator: "\n").map(String.init)
        guard lines.count >= 3 else {
            Issue.record("Scripts/with-postgres did not start a server: \(text)", sourceLocation: sourceLocation)
            try? input.fileHandleForWriting.close()
            process.waitUntilExit()
            return nil
        }
        url = lines[0]
        control = lines[1]
        log = lines[2]
    }

    /// `pg_ctl stop` (fast: clients are disconnected) or `pg_ctl start`; true when it worked.
    ///
    /// Not through Foundation's Process: the server pg_ctl starts would inherit the descriptor
    /// Process watches for the child's exit (and the pipe that holds Scripts/with-postgres open),
    /// so the wait would last as long as the server. posix_spawn, then waitpid; the shell closes
    /// every descriptor above stderr before it runs pg_ctl.
    @discardableResult
    func ctl(_ action: String, sourceLocation: SourceLocation = #_sourceLocation) -> Bool {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        let script =
            #"for fd in /proc/self/fd/*; do fd=${fd##*/}; [ "$fd" -gt 2 ] && eval "exec $fd>&-" 2>/dev/null; done; "#
            + "exec \(control) \(action)"
        let arguments: [String] = ["/bin/bash", "-c", script]
        let argv = arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid = pid_t()
        guard posix_spawn(&pid, "/bin/bash", &actions, nil, argv, environ) == 0 else {
            Issue.record("cannot spawn pg_ctl \(action)", sourceLocation: sourceLocation)
            return false
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let ok = status == 0
        if !ok {
            let tail = (try? String(contentsOfFile: log, encoding: .utf8))?.split(separator: "\n").suffix(15)
                .joined(separator: "\n") ?? "(no log)"
            Issue.record(
                "pg_ctl \(action) failed (status \(status)); the server's log ends:\n\(tail)",
                sourceLocation: sourceLocation)
        }
        return ok
    }

    func shutdown() {
        try? input.fileHandleForWriting.close()
        process.waitUntilExit()
    }
}

/// A candidate of a test election (address `ws://NAME:7460`) and what it reported. It stops
/// campaigning when it goes away.
final class Candidate {
    let election: PostgresLeaderElection
    let log = LeadershipLog()

    init(url: String, name: String, lease: Duration = .seconds(3)) {
        election = PostgresLeaderElection(url: url, name: name, address: "ws://\(name):7460", lease: lease)
    }

    deinit { election.stop() }

    func start() { election.start { [log] in log.record($0) } }
    func stop() { election.stop() }
    var current: Leadership { election.current }

    /// Starts campaigning and waits until it leads; returns its token (nil: an issue is recorded).
    func lead(sourceLocation: SourceLocation = #_sourceLocation) async -> Int64? {
        start()
        return await log.first("\(election.name) leads", sourceLocation: sourceLocation, where: \.isLeader)?.token
    }
}
