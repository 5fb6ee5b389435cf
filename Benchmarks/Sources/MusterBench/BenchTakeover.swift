import ArgumentParser
import Foundation
import Logging
import MusterClient
import MusterProtocol
import MusterServer

/// `muster-bench takeover`: two `muster serve` on one PostgreSQL database (README "Running two
/// coordinators") and one `muster agent` given both addresses. The leader is killed with SIGKILL
/// `--kills` times; after each kill the bench measures, from the kill:
///
/// - **leads**: the standby takes a client link (it no longer answers `not_leader`): it won the
///   lease, opened the store and took over;
/// - **serves**: a job submitted through a client given both addresses has completed: the agent
///   found the new leader, registered, and ran it.
///
/// The killed coordinator is started again (it stands by) before the next kill, so the two take
/// turns. Needs `--postgres URL` or `MUSTER_TEST_POSTGRES_URL` (Scripts/bench takeover starts a
/// throw-away server with Scripts/with-postgres). Prints one table; asserts nothing.
struct BenchTakeover: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "takeover",
        abstract: "Two coordinators on PostgreSQL: time from SIGKILL of the leader to the standby leading and serving.")

    @Option(help: "How many times the leader is killed.")
    var kills = 20
    @Option(help: "ha.lease_seconds of both coordinators.")
    var leaseSeconds: Double = 3
    @Option(help: "The PostgreSQL database (postgres://USER:PASS@HOST:PORT/DB); default $MUSTER_TEST_POSTGRES_URL.")
    var postgres: String?

    struct Node {
        var name: String
        var port: Int
        var child: E2EChild?
        var url: String { "ws://127.0.0.1:\(port)" }
    }

    func run() async throws {
        signal(SIGPIPE, SIG_IGN)
        do {
            try await measure()
        } catch {
            E2EChild.killAll()
            throw error
        }
    }

    func measure() async throws {
        guard let database = postgres ?? ProcessInfo.processInfo.environment["MUSTER_TEST_POSTGRES_URL"], !database.isEmpty else {
            throw ValidationError("give --postgres URL or set MUSTER_TEST_POSTGRES_URL (Scripts/bench takeover does)")
        }
        let quiet = Logger(label: "bench") { _ in SwiftLogNoOpLogHandler() }
        var nodes = [Node(name: "a", port: try freeLoopbackPort()), Node(name: "b", port: try freeLoopbackPort())]
        let both = nodes.map(\.url).joined(separator: ",")

        func start(_ i: Int) throws {
            nodes[i].child = try E2EChild.muster(
                "muster serve \(nodes[i].name)",
                [
                    "serve", "--listen", "127.0.0.1:\(nodes[i].port)", "--log-level", "error", "--set", "backends=[]",
                    "--set", "store.url=\(database)", "--set", "ha.name=\(nodes[i].name)",
                    "--set", "ha.lease_seconds=\(leaseSeconds)", "--set", "links.suspect_grace_seconds=30",
                    // A job waits for the agent instead of failing while it moves to the new leader.
                    "--set", "routing.no_eligible_backend=queue",
                ])
        }
        /// Whether `url` takes a client link now (the leader does; a standby answers not_leader).
        func leads(_ url: String) async -> Bool {
            var options = MusterClient.Options(coordinator: url, name: "bench-probe")
            options.connectTimeout = .seconds(2)
            guard let c = try? await MusterClient.connect(options, logger: quiet) else { return false }
            await c.close()
            return true
        }
        func waitUntil(_ what: String, _ condition: () async -> Bool) async throws {
            let deadline = ContinuousClock.now + .seconds(60)
            while !(await condition()) {
                if ContinuousClock.now > deadline { throw ValidationError("gave up waiting for \(what)") }
                try await Task.sleep(for: .milliseconds(10))
            }
        }
        /// One job through a client given both addresses, to its end.
        func oneJob() async throws {
            var options = MusterClient.Options(coordinator: both, name: "bench")
            options.connectTimeout = .seconds(5)
            let c = try await MusterClient.connect(options, logger: quiet, retryingUntil: .now + .seconds(60))
            defer { Task { await c.close() } }
            let accepted = try await c.submit(Wire.BatchRequest(jobs: [.init(kind: "image", needs: ["image"])]))
            try await c.subscribe(batch: accepted.batch)
            for await e in c.events where e.state.isFinal {
                guard e.state == .completed else { throw ValidationError("job \(e.job) ended \(e.state)") }
                return
            }
            throw ValidationError("the link closed before the job ended")
        }

        try start(0)
        try await waitUntil("a to lead") { await leads(nodes[0].url) }
        try start(1)
        let agent = try E2EChild.muster(
            "muster agent",
            ["agent", "--coordinator", both, "--name", "bench-gpu", "--features", "image", "--job-seconds", "10ms", "--log-level", "error"])
        try await oneJob()

        var leadTimes: [Double] = [], serveTimes: [Double] = []
        var leader = 0
        for _ in 0..<kills {
            let standby = 1 - leader
            // The standby must be standing by (it knows the leader) before the kill.
            try await Task.sleep(for: .milliseconds(Int64(leaseSeconds * 1000)))
            let killedAt = ContinuousClock.now
            nodes[leader].child?.signal(SIGKILL)
            _ = await nodes[leader].child?.waitExit()
            try await waitUntil("\(nodes[standby].name) to lead") { await leads(nodes[standby].url) }
            leadTimes.append((ContinuousClock.now - killedAt).secondsDouble)
            try await oneJob()
            serveTimes.append((ContinuousClock.now - killedAt).secondsDouble)
            try start(leader)
            leader = standby
        }

        agent.signal(SIGTERM)
        _ = await agent.waitExit()
        for node in nodes {
            node.child?.signal(SIGTERM)
            _ = await node.child?.waitExit()
        }
        func percentile(_ xs: [Double], _ p: Double) -> String {
            let sorted = xs.sorted()
            guard !sorted.isEmpty else { return "-" }
            let i = min(sorted.count - 1, Int((p / 100 * Double(sorted.count)).rounded(.up)) - 1)
            return String(format: "%.2f s", sorted[max(0, i)])
        }
        print("takeover (two muster serve on one PostgreSQL, ha.lease_seconds=\(leaseSeconds), \(kills) SIGKILLs of the leader)")
        print("| from SIGKILL of the leader to | p50 | p99 | max |")
        print("|---|---|---|---|")
        print("| the standby leads (takes a client link) | \(percentile(leadTimes, 50)) | \(percentile(leadTimes, 99)) | \(percentile(leadTimes, 100)) |")
        print("| a job submitted to both addresses has completed (the agent moved) | \(percentile(serveTimes, 50)) | \(percentile(serveTimes, 99)) | \(percentile(serveTimes, 100)) |")
    }
}
