import Foundation
import Logging
@testable import MusterBackends
@testable import MusterClient
import MusterProtocol
import MusterServer
import MusterStore
import MusterTransport
import Testing

/// An election the test decides: what `current` is and when it changes. The daemon under test
/// sees it exactly as it sees the database's election, through `LeaderElection`.
final class HandElection: LeaderElection, @unchecked Sendable {
    private struct State {
        var current = Leadership.standby(leader: nil)
        var onChange: (@Sendable (Leadership) -> Void)?
        var stops = 0
    }
    private let state = Locked(State())

    func start(_ onChange: @escaping @Sendable (Leadership) -> Void) {
        let current = state.withLock { s in
            s.onChange = onChange
            return s.current
        }
        onChange(current)
    }

    func stop() { state.withLock { $0.stops += 1 } }

    var current: Leadership { state.withLock { $0.current } }
    var stops: Int { state.withLock { $0.stops } }

    /// Reports a new outcome, as the election's thread would.
    func report(_ leadership: Leadership) {
        let onChange = state.withLock { s in
            s.current = leadership
            return s.onChange
        }
        onChange?(leadership)
    }
}

/// A coordinator with an election of the test's choosing (README "Running two coordinators"),
/// in-process, memory store: a hand election here, a real PostgreSQL lease in ElectionTakeoverTests.
struct ElectedCoordinator<Election: LeaderElection> {
    let daemon: Daemon
    let election: Election
    let port: Int
    var url: String { "ws://127.0.0.1:\(port)" }
    var base: String { "http://127.0.0.1:\(port)" }

    /// `port` 0: the kernel's pick. `backends`: one simulated image backend of its own by default.
    static func start(
        name: String, port: Int = 0, backends: String? = nil, election: Election, logger: Logger? = nil
    ) async throws -> ElectedCoordinator {
        let backends = backends
            ?? #"[{"name": "sim-\#(name)", "kind": "simulated", "features": ["image"], "job_seconds": {"default": 0.05}}]"#
        // Raw links say `hello` from the test process (see `TestCoordinator`).
        let overrides = [
            ("listen", "127.0.0.1:\(port)"), ("store.url", "memory:"), ("ha.name", name), ("backends", backends),
            ("links.handshake_timeout_seconds", TestCoordinator.handshakeTimeoutSeconds),
        ]
            .map { (source: "test", key: $0.0, value: $0.1) }
        let config = try Configuration.load(file: nil, environment: [:], overrides: overrides)
        let daemon = try Daemon(
            configuration: config, logger: logger ?? TestCoordinator.quietLogger, audit: TestCoordinator.quietLogger,
            election: election)
        let bound = try await daemon.start()
        return ElectedCoordinator(daemon: daemon, election: election, port: bound)
    }

    func info(name: String, token: Int64) -> LeaderInfo { LeaderInfo(name: name, address: url, token: token) }

    func clientOptions(_ coordinator: String? = nil) -> MusterClient.Options {
        var options = MusterClient.Options(coordinator: coordinator ?? url, name: "tester")
        options.connectTimeout = .seconds(30)
        return options
    }
}

extension ElectedCoordinator where Election == HandElection {
    static func start(name: String) async throws -> ElectedCoordinator {
        try await start(name: name, election: HandElection())
    }
}

@Suite struct LeadershipTests {
    // MARK: - Configuration

    func loadError(_ set: [(String, String)]) -> ConfigError? {
        do {
            _ = try Configuration.load(file: nil, environment: [:], overrides: set.map { ("flag --set", $0.0, $0.1) })
            return nil
        } catch {
            return error
        }
    }

    @Test func aPostgresStoreNeedsAnAddressOthersCanDial() throws {
        let pg = ("store.url", "postgres://muster@127.0.0.1:5432/muster")
        // A wildcard listen address or port 0 says nothing agents could dial.
        #expect(loadError([pg, ("listen", "0.0.0.0:7460"), ("auth.token", "t")])?.key == "ha.advertise")
        #expect(loadError([pg, ("listen", "127.0.0.1:0")])?.key == "ha.advertise")
        #expect(loadError([pg, ("listen", "[::]:7460"), ("auth.token", "t")])?.key == "listen", "IPv6: refused first")
        // Not a coordinator URL.
        #expect(loadError([("ha.advertise", "http://10.0.0.5:7460")])?.key == "ha.advertise")
        #expect(loadError([("ha.advertise", "ws://a:1,ws://b:2")])?.key == "ha.advertise")
        #expect(loadError([("ha.lease_seconds", "0.5")])?.key == "ha.lease_seconds")
        // Without a shared store the keys change nothing: one coordinator, always the leader.
        let single = try Configuration.load(file: nil, environment: [:], overrides: [("test", "listen", "0.0.0.0:0"), ("test", "auth.token", "t")])
        #expect(!single.electsLeader)
        #expect(single.haAdvertise == nil)
        let named = try Configuration.load(
            file: nil, environment: [:],
            overrides: [("test", "listen", "10.1.2.3:7460"), ("test", "auth.token", "t"), ("test", "ha.name", "east")])
        #expect(named.haAdvertise == "ws://10.1.2.3:7460")
        #expect(named.haName == "east")
        #expect(named.settings.ha.lease == .seconds(3))
    }

    @Test func serveExitsTwoNamingHaAdvertise() async throws {
        let serve = try MusterProcess([
            "serve", "--listen", "0.0.0.0:7460", "--set", "auth.token=t", "--set", "store.url=postgres://muster@127.0.0.1:1/muster",
        ])
        #expect(try await serve.waitForExit() == 2)
        #expect(serve.standardError.contains("ha.advertise"), "\(serve.standardError)")
    }

    @Test func multipleCoordinatorAddressesParseInOrder() throws {
        let options = MusterClient.Options(coordinator: "ws://a:7460, wss://b:7461,c:7462")
        #expect(try options.webSocketURLs() == ["ws://a:7460", "wss://b:7461", "ws://c:7462"])
        #expect(try options.webSocketURL() == "ws://a:7460")
        #expect(throws: MusterClientError.self) { try MusterClient.Options(coordinator: "ws://a:1,,ws://b:2").webSocketURLs() }
        #expect(throws: MusterClientError.self) { try MusterClient.Options(coordinator: "ws://a:1,ftp://b").webSocketURLs() }
        #expect(Agent.coordinatorAddresses(" ws://a:1 ,ws://b:2,") == ["ws://a:1", "ws://b:2"])
    }

    // MARK: - Standby

    @Test func aStandbyAnswersProbesAndNamesTheLeader() async throws {
        let standby = try await ElectedCoordinator.start(name: "east")
        defer { Task { await standby.daemon.shutdown() } }
        #expect(try await HTTP.get("\(standby.base)/healthz").status == 200)
        // No leader known yet.
        let unknown = try await HTTP.get("\(standby.base)/readyz")
        #expect(unknown.status == 503)
        #expect(unknown.json["reasons"] as? [String] == ["standby"])
        #expect(unknown.json["leader"] == nil)

        standby.election.report(.standby(leader: LeaderInfo(name: "west", address: "ws://10.0.0.9:7460", token: 4)))
        let named = try await HTTP.waitFor("\(standby.base)/readyz", "the leader named") { $0.json["leader"] != nil }
        #expect(named.status == 503)
        #expect(named.json["ready"] as? Bool == false)
        #expect(named.json["reasons"] as? [String] == ["standby"])
        let leader = named.json["leader"] as? [String: Any]
        #expect(leader?["name"] as? String == "west")
        #expect(leader?["address"] as? String == "ws://10.0.0.9:7460")
        let metrics = try await HTTP.get("\(standby.base)/metrics").text
        #expect(metrics.contains(#"muster_role{role="standby"} 1"#))
        #expect(metrics.contains(#"muster_role{role="leader"} 0"#))
    }

    @Test func aStandbyRefusesLinksAndRequestsWithNotLeader() async throws {
        let standby = try await ElectedCoordinator.start(name: "east")
        defer { Task { await standby.daemon.shutdown() } }
        standby.election.report(.standby(leader: LeaderInfo(name: "west", address: "ws://10.0.0.9:7460", token: 4)))
        _ = try await HTTP.waitFor("\(standby.base)/readyz", "the leader named") { $0.json["leader"] != nil }

        // The client API over HTTP: 503 in the error shape, naming the leader.
        for (method, path, body) in [("POST", "/v1/batches", #"{"jobs": [{"kind": "image"}]}"#), ("GET", "/v1/backends", nil), ("GET", "/v1/jobs/1", nil)] {
            let r = try await HTTP.request(method, "\(standby.base)\(path)", body: body)
            #expect(r.status == 503, "\(method) \(path)")
            #expect(r.json["code"] as? String == "not_leader")
            let details = r.json["details"] as? [String: Any]
            #expect((details?["leader"] as? [String: Any])?["address"] as? String == "ws://10.0.0.9:7460")
        }

        // A client's hello: the error, then close 4010.
        var options = standby.clientOptions()
        options.coordinator = standby.url
        do {
            let c = try await MusterClient.connect(options, logger: TestCoordinator.quietLogger)
            await c.close()
            Issue.record("a standby took a client link")
        } catch {
            #expect(error.code == .notLeader, "\(error)")
            #expect(error.closeCode == 4010)
            #expect(Wire.NotLeader.leader(in: error.details)?.name == "west")
        }

        // A backend's hello: likewise.
        let peer = try await RawBackendPeer(url: standby.url)
        await peer.send(.hello(.init(name: "gpu-1", token: "", incarnation: Incarnation(1), slots: 1)))
        let refusal = try await peer.next("the refusal") { if case .error(let e) = $0 { e } else { nil } }
        #expect(refusal.code == .notLeader)
        #expect(Wire.NotLeader.leader(in: refusal.details)?.address == "ws://10.0.0.9:7460")
        #expect(try await peer.closed() == 4010)
        await peer.close()
    }

    // MARK: - Taking over and losing the lead

    @Test func takingOverServesAndLosingTheLeadStopsRoutingAndTheDaemon() async throws {
        let east = try await ElectedCoordinator.start(name: "east")
        east.election.report(.leader(token: 7))
        _ = try await HTTP.waitFor("\(east.base)/readyz", "east to lead and be ready") { $0.status == 200 }
        let client = try await MusterClient.connect(east.clientOptions(), logger: TestCoordinator.quietLogger)
        let accepted = try await client.submit(Wire.BatchRequest(jobs: [.init(kind: "image", count: 2)]))
        try await client.subscribe(batch: accepted.batch)
        _ = try await within(.seconds(60), "the first batch") { await client.follow(accepted) }
        let metrics = try await HTTP.get("\(east.base)/metrics").text
        #expect(metrics.contains(#"muster_role{role="leader"} 1"#))
        #expect(metrics.contains("muster_leader_terms_total 1"))

        // The lease passes to west: east closes its links with not_leader and stops.
        east.election.report(.standby(leader: LeaderInfo(name: "west", address: "ws://10.0.0.9:7460", token: 8)))
        try await within(.seconds(120), "east to stop") { await east.daemon.waitUntilStopped() }
        #expect(await east.daemon.lostLeadership != nil)
        for await _ in client.events {}  // ends when the link closes
        let closed = await client.closeError
        #expect(closed?.closeCode == 4010)
        // After the graceful path the lease is given up; a deposed leader gives it up too.
        #expect(east.election.stops == 1)
        await client.close()
    }

    @Test func aLeaderStoppedGracefullyGivesTheLeaseUp() async throws {
        let east = try await ElectedCoordinator.start(name: "east")
        east.election.report(.leader(token: 3))
        _ = try await HTTP.waitFor("\(east.base)/readyz", "east to lead") { $0.status == 200 }
        #expect(east.election.stops == 0)
        await east.daemon.shutdown()
        #expect(east.election.stops == 1)
        #expect(await east.daemon.lostLeadership == nil)
    }

    // MARK: - Following the leader

    @Test func clientsAndAgentsFollowNotLeaderToTheLeader() async throws {
        let east = try await ElectedCoordinator.start(name: "east")
        let west = try await ElectedCoordinator.start(name: "west")
        defer {
            Task {
                await east.daemon.shutdown()
                await west.daemon.shutdown()
            }
        }
        west.election.report(.leader(token: 1))
        east.election.report(.standby(leader: west.info(name: "west", token: 1)))
        _ = try await HTTP.waitFor("\(west.base)/readyz", "west to lead") { $0.status == 200 }
        _ = try await HTTP.waitFor("\(east.base)/readyz", "east to name west") { $0.json["leader"] != nil }

        // A client given only the standby is sent on to the leader.
        let viaStandby = try await MusterClient.connect(east.clientOptions(east.url), logger: TestCoordinator.quietLogger)
        #expect(viaStandby.url == west.url)
        await viaStandby.close()
        // A list whose first address is dead: the next one is dialled.
        let dead = "ws://127.0.0.1:\(try TestDatabase.freePort())"
        let viaList = try await MusterClient.connect(east.clientOptions("\(dead),\(west.url)"), logger: TestCoordinator.quietLogger)
        #expect(viaList.url == west.url)
        await viaList.close()

        // An agent given [east, west], east first: it registers on west.
        var options = AgentOptions(
            coordinator: "\(east.url),\(west.url)", listen: nil, token: "",
            spec: WorkerSpec(name: "gpu-follow", features: ["image"], jobDurations: ["default": .milliseconds(50)]))
        options.drainTimeout = .seconds(5)
        let agent = try Agent(options: options, logger: TestCoordinator.quietLogger)
        try await agent.start()
        defer { Task { await agent.stop() } }
        try await waitForBackend("gpu-follow", at: west.base)

        // The lead moves to east: west closes its links with not_leader and the agent moves to east.
        east.election.report(.leader(token: 2))
        west.election.report(.standby(leader: east.info(name: "east", token: 2)))
        try await waitForBackend("gpu-follow", at: east.base)
        await agent.stop()
    }

    func waitForBackend(_ name: String, at base: String) async throws {
        _ = try await HTTP.waitFor("\(base)/v1/backends", "\(name) linked at \(base)") { r in
            guard r.status == 200, let list = r.json["backends"] as? [[String: Any]] else { return false }
            return list.contains { $0["name"] as? String == name && $0["link"] as? String == "up" }
        }
    }
}
