import Foundation
@testable import MusterBackends
import MusterProtocol
import MusterServer
import MusterStore
import MusterTransport
import Testing

/// Two in-process coordinators elected through a real PostgreSQL lease (PostgresLeaderElection
/// on a database of their own), with memory job stores: what the daemon does with the election's
/// reports, apart from the store (TwoCoordinatorTests run the whole thing as processes).
@Suite(.serialized) struct ElectionTakeoverTests {

    typealias Node = ElectedCoordinator<PostgresLeaderElection>

    /// A coordinator named `name` on a free port (its address must be known to its election),
    /// elected through `database`, or through a forwarder to it on `via`.
    func start(_ name: String, database: URLComponents, via forwarderPort: Int? = nil) async throws -> Node {
        let port = try TestDatabase.freePort()
        var url = database
        if let forwarderPort { url.port = forwarderPort }
        let election = PostgresLeaderElection(url: url.string!, name: name, address: "ws://127.0.0.1:\(port)", lease: .seconds(3))
        return try await Node.start(name: name, port: port, backends: "[]", election: election)
    }

    func waitUntil(_ what: String, within bound: Duration = .seconds(30), _ condition: () async -> Bool) async throws {
        let deadline = ContinuousClock.now + bound
        while !(await condition()) {
            if ContinuousClock.now > deadline { throw BoundExceeded(what: what) }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    func backendUp(_ name: String, at node: Node) async -> Bool {
        guard let r = try? await HTTP.get("\(node.base)/v1/backends"), r.status == 200 else { return false }
        let list = r.json["backends"] as? [[String: Any]] ?? []
        return list.contains { $0["name"] as? String == name && $0["link"] as? String == "up" }
    }

    @Test func aLeaderStoppedGracefullyHandsOverAtOnceAndAgentsFollow() async throws {
        let database = try await TestDatabase.fresh()
        let east = try await start("east", database: database)
        try await waitUntil("east to lead") { await east.daemon.leads }
        let west = try await start("west", database: database)
        let standby = try await HTTP.waitFor("\(west.base)/readyz", "west to name east") { $0.json["leader"] != nil }
        #expect(standby.status == 503)
        #expect((standby.json["leader"] as? [String: Any])?["name"] as? String == "east")
        #expect(!(await west.daemon.leads))

        var options = AgentOptions(
            coordinator: "\(west.url),\(east.url)", listen: nil, token: "",
            spec: WorkerSpec(name: "gpu-1", features: ["image"], jobDurations: ["default": .milliseconds(50)]))
        options.drainTimeout = .seconds(5)
        let agent = try Agent(options: options, logger: TestCoordinator.quietLogger)
        try await agent.start()
        try await waitUntil("the agent on east") { await backendUp("gpu-1", at: east) }

        // SIGTERM's path: drain, then give the lease up; west takes over without waiting for it to expire.
        let stoppedAt = ContinuousClock.now
        await east.daemon.shutdown()
        try await waitUntil("west to lead") { await west.daemon.leads }
        print("graceful handover: west leads \(ContinuousClock.now - stoppedAt) after east stopped")
        try await waitUntil("the agent on west") { await backendUp("gpu-1", at: west) }
        #expect(await east.daemon.lostLeadership == nil)
        await agent.stop()
        await west.daemon.shutdown()
    }
}
