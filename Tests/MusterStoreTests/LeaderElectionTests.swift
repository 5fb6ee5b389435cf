import Foundation
import MusterStore
import Testing

/// Two candidates in one process on the real PostgreSQL server (Scripts/with-postgres), each test
/// in a database of its own.
@Suite struct LeaderElectionTests {
    @Test func oneLeadsTheOtherSeesItAndTakesOverAtOnceWhenItStops() async throws {
        guard let url = TestPostgres.freshDatabase() else { return }
        let a = Candidate(url: url, name: "a", lease: .milliseconds(1500))
        let b = Candidate(url: url, name: "b", lease: .milliseconds(1500))
        let (logA, logB) = (a.log, b.log)
        guard let tokenA = await a.lead() else { return }
        #expect(a.current == .leader(token: tokenA))

        b.start()
        let seen = await logB.first("b sees a as the leader") { $0.leaderInfo != nil }
        #expect(seen == .standby(leader: LeaderInfo(name: "a", address: "ws://a:7460", token: tokenA)))
        // Renewals keep the term: several renew intervals later a still leads under the same token.
        try await Task.sleep(for: .milliseconds(1200))
        #expect(a.current == .leader(token: tokenA))
        #expect(logA.all.filter(\.isLeader) == [.leader(token: tokenA)], "reported only on changes: \(logA.all)")
        #expect(logB.all.allSatisfy { !$0.isLeader })

        let before = logB.count
        a.stop()
        #expect(logA.all.last == .standby(leader: nil), "a reports it stopped leading: \(logA.all)")
        #expect(a.current == .standby(leader: nil))
        // Released, not expired: b leads at its next look (a renew interval), not after a lease.
        guard let next = await logB.first("b leads after a stopped", after: before, where: \.isLeader) else { return }
        #expect(next.token! == tokenA + 1, "one new term, one token more")
        #expect(TestPostgres.sql(url, "SELECT name, token FROM muster_leader") == "b|\(tokenA + 1)")
    }

    /// A coordinator restarted at once after a crash finds the lease of its previous process
    /// (its own name and address) still running: it names no leader until that lease is gone,
    /// rather than itself, which would send clients straight back to it.
    @Test func aLeaseUnderItsOwnNameIsNotNamedAsTheLeader() async throws {
        guard let url = TestPostgres.freshDatabase() else { return }
        let before = Candidate(url: url, name: "a", lease: .milliseconds(1500))
        guard let token = await before.lead() else { return }
        let after = Candidate(url: url, name: "a", lease: .milliseconds(1500))
        let other = Candidate(url: url, name: "b", lease: .milliseconds(1500))
        after.start()
        other.start()
        await other.log.first("b sees a") { $0.leaderInfo?.name == "a" }
        // Two more of b's looks (a third of the lease apart), by which the restarted a has looked too.
        try await Task.sleep(for: .milliseconds(1100))
        #expect(before.current == .leader(token: token))
        #expect(after.log.all.allSatisfy { $0 == .standby(leader: nil) }, "names no leader: \(after.log.all)")
        #expect(after.current == .standby(leader: nil))
        before.stop()
        var next: Int64?
        for _ in 0..<3000 where next == nil {
            next = (after.log.all + other.log.all).compactMap(\.token).first { $0 > token }
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(next != nil, "a new term once the first process let go: \(after.log.all), \(other.log.all)")
    }

    /// The leader loses its database (its connections are terminated and its role may no longer
    /// log in) while the database serves the other: the leader gives up before the standby takes
    /// over, and once it can connect again it finds the new leader and stays a standby.
    @Test func aLeaderCutOffFromTheDatabaseStopsBeforeTheStandbyTakesOver() async throws {
        guard let url = TestPostgres.freshDatabase() else { return }
        let suffix = UUID().uuidString.prefix(8).lowercased()
        let roleA = "muster_a_\(suffix)"
        let roleB = "muster_b_\(suffix)"
        for role in [roleA, roleB] {
            guard TestPostgres.sql(url, "CREATE ROLE \(role) LOGIN SUPERUSER PASSWORD 'pw'") != nil else { return }
        }
        defer {
            // The schema belongs to whichever created it; it goes with the test's database.
            TestPostgres.sql(url, "DROP OWNED BY \(roleA), \(roleB)")
            TestPostgres.sql(url, "DROP ROLE \(roleA)")
            TestPostgres.sql(url, "DROP ROLE \(roleB)")
        }
        let a = Candidate(url: TestPostgres.url(url, user: roleA, password: "pw"), name: "a")
        let b = Candidate(url: TestPostgres.url(url, user: roleB, password: "pw"), name: "b")
        let (logA, logB) = (a.log, b.log)
        guard let tokenA = await a.lead() else { return }
        b.start()
        await logB.first("b sees a") { $0.leaderInfo?.name == "a" }

        let reportsA = logA.count
        TestPostgres.sql(url, "ALTER ROLE \(roleA) NOLOGIN")
        TestPostgres.sql(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '\(roleA)'")
        await logA.first("a gives up", after: reportsA) { $0 == .standby(leader: nil) }
        guard let tokenB = await logB.first("b takes over", where: \.isLeader)?.token else { return }
        #expect(tokenB > tokenA)
        let aStopped = logA.instant { $0 == .standby(leader: nil) }
        let bStarted = logB.instant(of: \.isLeader)
        #expect(aStopped != nil && bStarted != nil && aStopped! < bStarted!, "a stopped leading before b began")

        // a can reach the database again: it finds b and stays a standby.
        let reportsAfter = logA.count
        TestPostgres.sql(url, "ALTER ROLE \(roleA) LOGIN")
        await logA.first("a sees b", after: reportsAfter) { $0.leaderInfo?.name == "b" }
        #expect(logA.all.dropFirst(reportsAfter).allSatisfy { !$0.isLeader })
        #expect(b.current == .leader(token: tokenB))
    }

    /// The leader's database session stops answering (its backend process is frozen with
    /// SIGSTOP: the renewal hangs, nothing fails): the leader gives up on its own clock, before the
    /// lease can go to a next term (b's, or a's own on a new connection).
    @Test func aLeaderWhoseDatabaseHangsGivesUpBeforeTheStandbyTakesOver() async throws {
        guard let url = TestPostgres.freshDatabase() else { return }
        let a = Candidate(url: url, name: "a")
        let b = Candidate(url: url, name: "b")
        guard let tokenA = await a.lead() else { return }
        b.start()
        await b.log.first("b sees a") { $0.leaderInfo?.name == "a" }
        guard
            let pid = TestPostgres.sql(
                url,
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'muster-election a' AND datname = current_database()"
            ),
            Int(pid) != nil
        else {
            Issue.record("no single session of a's election")
            return
        }
        let reports = a.log.count
        guard run(["kill", "-STOP", pid]).status == 0 else {
            Issue.record("cannot stop the backend \(pid) (the test runs as root in CI)")
            return
        }
        defer { run(["kill", "-CONT", pid]) }
        await a.log.first("a gives up", after: reports) { $0 == .standby(leader: nil) }
        // The next term: b's, or a's own again on a new connection; either way a new token, begun
        // after a gave up the old term.
        var next: (log: LeadershipLog, token: Int64)?
        for _ in 0..<3000 where next == nil {
            for log in [a.log, b.log] {
                if let token = log.all.compactMap(\.token).first(where: { $0 > tokenA }) { next = (log, token) }
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        guard let next else {
            Issue.record("no new term within 30 s: a \(a.log.all), b \(b.log.all)")
            return
        }
        let aStopped = a.log.instant { $0 == .standby(leader: nil) }
        let nextStarted = next.log.instant { $0 == .leader(token: next.token) }
        #expect(
            aStopped != nil && nextStarted != nil && aStopped! < nextStarted!, "a stopped leading before the next term")
    }

    @Test func aDatabaseThatDoesNotAnswerMeansNoLeaderIsKnown() async throws {
        // A port nothing listens on: bind one, then close it.
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        let port = UInt16(bigEndian: address.sin_port)
        close(fd)

        let election = PostgresLeaderElection(
            url: "postgres://nobody:pw@127.0.0.1:\(port)/none", name: "a", address: "ws://a:7460",
            lease: .milliseconds(600))
        let log = LeadershipLog()
        election.start { log.record($0) }
        // The first outcome is reported even though it equals the initial value.
        await log.first("a first report") { _ in true }
        try await Task.sleep(for: .milliseconds(500))
        // Why it cannot take part, for the log and /readyz (the same failure is not reported again).
        let failure = election.failure
        #expect(failure?.contains("port \(port)") == true, "\(String(describing: failure))")
        election.stop()
        #expect(log.all == [.standby(leader: nil)])
        #expect(election.current == .standby(leader: nil))
    }
}
