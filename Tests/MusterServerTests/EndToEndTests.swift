import Foundation
@testable import MusterClient
import MusterProtocol
import MusterServer
import Testing

/// The daemon issue's end-to-end cases, with real processes on 127.0.0.1: `muster serve`,
/// `muster agent` and Debian's python3-websockets as an independent peer. Time is scaled down
/// (seconds instead of minutes); nothing asserts a duration.
@Suite(.serialized) struct EndToEndTests {
    /// Starts `muster serve` on a free port and returns it with the port.
    /// Unless `extra` names its own, the handshake timeout is far above what a test process
    /// starved on two busy cores may take to say `hello` on a raw link (`TestCoordinator`).
    func coordinator(_ extra: [String] = [], port: Int = 0) async throws -> (MusterProcess, Int) {
        let generous =
            extra.contains { $0.hasPrefix("links.handshake_timeout_seconds=") }
            ? [] : ["--set", "links.handshake_timeout_seconds=\(TestCoordinator.handshakeTimeoutSeconds)"]
        let p = try MusterProcess(["serve", "--listen", "127.0.0.1:\(port)", "--log-level", "debug"] + generous + extra)
        let line = try await p.waitForLog("muster serving")
        let bound = try #require(Int(line["listen.port"] as? String ?? ""))
        return (p, bound)
    }

    /// Starts `muster agent` against the coordinator and waits until it registered.
    func agent(port: Int, name: String, features: String, announceAfter: String = "0s", jobSeconds: String = "1s", waitForRegistration: Bool = true) async throws -> MusterProcess {
        let p = try MusterProcess([
            "agent", "--coordinator", "ws://127.0.0.1:\(port)", "--name", name, "--features", features,
            "--announce-after", announceAfter, "--job-seconds", jobSeconds, "--log-format", "json", "--log-level", "debug",
        ])
        if waitForRegistration { try await p.waitForLog("registered") }
        return p
    }

    func backends(_ json: String) -> [String] { ["--set", "backends=\(json)"] }

    /// A log line's `ts` (RFC 3339 with milliseconds) in milliseconds since 1970, as `bound_ms`.
    static func epochMilliseconds(_ line: [String: Any]) -> Int? {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return (line["ts"] as? String).flatMap(f.date).map { Int(($0.timeIntervalSince1970 * 1000).rounded()) }
    }

    /// Waits for every job of the batch to be final; returns (job, state, backend) per job.
    func finishedBatch(port: Int, batch: Int = 1) async throws -> [(job: Int, state: String, backend: Int?)] {
        let r = try await HTTP.waitFor("http://127.0.0.1:\(port)/v1/batches/\(batch)", "batch \(batch) done") { $0.json["done"] as? Bool == true }
        let jobs = r.json["jobs"] as? [[String: Any]] ?? []
        return jobs.map { ($0["job"] as? Int ?? 0, $0["state"] as? String ?? "", $0["backend"] as? Int) }
    }

    func readyBackends(port: Int, count: Int) async throws {
        try await HTTP.waitFor("http://127.0.0.1:\(port)/v1/backends", "\(count) ready backends") { r in
            let list = r.json["backends"] as? [[String: Any]] ?? []
            return list.filter { (($0["capabilities"] as? [String: Any])?["state"] as? String) == "ready" }.count == count
        }
    }

    @Test func warmUpCaseSpreadsAVideoBatchAcrossTheLocalAndTheLateRemoteBackend() async throws {
        // The remote links at once but stays loading (like a real one loading its models) until
        // the test has seen the gate hold the batch for it and sends it SIGUSR1; the local
        // backend's first job (8 s) is still running then.
        let job = TimeScale.seconds(8)
        let (serve, port) = try await coordinator(
            backends(#"[{"name": "local-gpu", "kind": "simulated", "features": ["video", "frameinterps"], "job_seconds": {"default": \#(job)}}]"#)
                + ["--set", "gate.window_seconds=\(TimeScale.seconds(600))"])
        let remote = try await agent(
            port: port, name: "gpu-box", features: "video,frameinterps", announceAfter: "3600s", jobSeconds: "\(job)s")
        let submitted = try await HTTP.post(
            "http://127.0.0.1:\(port)/v1/batches", #"{"owner": "e2e", "jobs": [{"kind": "video", "needs": ["video", "frameinterps"], "count": 4}]}"#)
        #expect(submitted.status == 201)

        // Jobs wait for gpu-box, so the coordinator is not ready; unless the test process stalled
        // for the 24 s local-gpu takes to run three of them one after another, idle each time (the
        // timeline below checks that case).
        let held = try await HTTP.get("http://127.0.0.1:\(port)/readyz")
        if held.status != 200 {
            #expect(held.status == 503, "\(held.text)")
            let waiting = (held.json["waiting"] as? [[String: Any]])?.first
            let waitingFor = (waiting?["backends"] as? [[String: Any]])?.compactMap { $0["name"] as? String }
            #expect(waitingFor == ["gpu-box"])
        }
        remote.send(signal: SIGUSR1)

        let jobs = try await finishedBatch(port: port)
        #expect(jobs.allSatisfy { $0.state == "completed" })
        let perBackend = Dictionary(grouping: jobs, by: { $0.backend ?? 0 }).mapValues(\.count)
        // What the split must be follows from when gpu-box's announcement opened the gate (R),
        // which the test cannot pin down: it sends SIGUSR1 right after seeing the gate hold the
        // batch, but a test process starved on a loaded machine may send it seconds later. Before
        // R the gate is closed: local-gpu only takes a held job when its running slot is idle,
        // never parked behind another job. At R the jobs still held are placed by expected
        // completion: gpu-box (idle) takes one, local-gpu (busy, ending its job before gpu-box
        // could end two) the next, gpu-box the third. On time, 3 are held: 2 and 2.
        var attempts: [(backend: Int, bound: Int, ended: Int)] = []
        for j in jobs {
            let info = try await HTTP.get("http://127.0.0.1:\(port)/v1/jobs/\(j.job)")
            for a in info.json["history"] as? [[String: Any]] ?? [] {
                attempts.append((a["backend"] as? Int ?? 0, a["bound_ms"] as? Int ?? 0, a["ended_ms"] as? Int ?? Int.max))
            }
        }
        // R: gpu-box's first binding, made as its announcement was applied; without one, when the
        // coordinator logged the announcement (after applying it).
        let announced = try #require(serve.findLog("backend announced ready", fields: ["backend.id": "1"]), "gpu-box announced")
        let release = try #require(
            attempts.filter { $0.backend == 1 }.map(\.bound).min() ?? Self.epochMilliseconds(announced), "\(announced)")
        let before = attempts.filter { $0.bound < release }.sorted { $0.bound < $1.bound }
        #expect(before.allSatisfy { $0.backend == -1 }, "only local-gpu ran jobs before gpu-box announced: \(attempts)")
        for (earlier, later) in zip(before, before.dropFirst()) {
            #expect(later.bound >= earlier.ended, "held jobs took local-gpu only when it was idle: \(attempts)")
        }
        let stillHeld = jobs.count - before.count
        let toRemote = stillHeld >= 2 ? stillHeld - 1 : stillHeld
        #expect(
            perBackend.filter { $0.value > 0 } == [-1: jobs.count - toRemote, 1: toRemote].filter { $0.value > 0 },
            "\(stillHeld) held when gpu-box announced at \(release): \(attempts)")
        let ready = try await HTTP.get("http://127.0.0.1:\(port)/readyz")
        #expect(ready.status == 200)
        try await remote.stop()
        #expect(try await serve.stop() == 0)
    }

    @Test func imageJobsSpreadEvenlyOverRemoteAgents() async throws {
        let (serve, port) = try await coordinator(backends("[]"))
        var agents: [MusterProcess] = []
        for i in 1...4 { agents.append(try await agent(port: port, name: "img-\(i)", features: "image", jobSeconds: "1s")) }
        try await readyBackends(port: port, count: 4)
        _ = try await HTTP.post("http://127.0.0.1:\(port)/v1/batches", #"{"jobs": [{"kind": "image", "count": 8}]}"#)
        let jobs = try await finishedBatch(port: port)
        #expect(jobs.allSatisfy { $0.state == "completed" })
        let perBackend = Dictionary(grouping: jobs, by: { $0.backend ?? 0 }).mapValues(\.count)
        #expect(perBackend.count == 4, "all 4 agents used: \(perBackend)")
        #expect(perBackend.values.allSatisfy { $0 == 2 }, "2 each: \(perBackend)")

        // Two of them, four more images: two each.
        try await agents[2].stop()
        try await agents[3].stop()
        _ = try await HTTP.post("http://127.0.0.1:\(port)/v1/batches", #"{"jobs": [{"kind": "image", "count": 4}]}"#)
        let second = try await finishedBatch(port: port, batch: 2)
        let secondPer = Dictionary(grouping: second, by: { $0.backend ?? 0 }).mapValues(\.count)
        #expect(secondPer == [1: 2, 2: 2], "\(secondPer)")
        for a in agents { try await a.stop() }
        #expect(try await serve.stop() == 0)
    }

    @Test func agentsReconnectAndReannounceAfterTheCoordinatorRestarts() async throws {
        // Restarted on the same port: one outside the ephemeral range (TestDatabase.freePort).
        var (serve, port) = try await coordinator(backends("[]"), port: try TestDatabase.freePort())
        let remote = try await agent(port: port, name: "survivor", features: "video")
        try await readyBackends(port: port, count: 1)
        #expect(try await serve.stop(signal: SIGKILL) != 0)
        (serve, _) = try await coordinator(backends("[]"), port: port)
        try await readyBackends(port: port, count: 1)
        let list = try await HTTP.get("http://127.0.0.1:\(port)/v1/backends").json["backends"] as? [[String: Any]]
        #expect(list?.first?["name"] as? String == "survivor")
        #expect(remote.process.isRunning)
        try await remote.stop()
        #expect(try await serve.stop() == 0)
    }

    /// A second agent registering the same name replaces the first (Protocol 4005): the first
    /// exits 1 and says so once, with the code the coordinator closed its link with; its own
    /// closing of the link as it stops is not a second refusal.
    @Test func anAgentReplacedByANewerOneOfTheSameNameExitsOnceWith4005() async throws {
        let (serve, port) = try await coordinator(backends("[]"))
        let first = try await agent(port: port, name: "twin", features: "video")
        let second = try await agent(port: port, name: "twin", features: "video")
        #expect(try await first.waitForExit() == 1)
        let refusals = first.logEvents.filter { $0["msg"] as? String == "stopping: the coordinator refused this agent" }
        #expect(refusals.count == 1, "\(refusals)")
        #expect(refusals.first?["close.code"] as? String == "4005", "\(refusals)")
        #expect(second.process.isRunning)
        try await second.stop()
        #expect(try await serve.stop() == 0)
    }

    /// A backend that left and stayed away for `links.forget_down_seconds` is gone from
    /// `/v1/backends`, `/metrics` and the store (a restart does not list it); its name comes back
    /// as a new backend, under an id no stored job names.
    @Test func aBackendDownForTheForgetWindowIsForgottenAndItsNameComesBackNew() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("muster-forget-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let settings = backends("[]") + [
            "--set", "links.forget_down_seconds=1", "--set", "store.url=sqlite://\(dir.path)/muster.sqlite",
        ]
        var (serve, port) = try await coordinator(settings, port: try TestDatabase.freePort())
        let names = { () async throws -> [String: Int] in
            let list = try await HTTP.get("http://127.0.0.1:\(port)/v1/backends").json["backends"] as? [[String: Any]] ?? []
            return Dictionary(list.map { ($0["name"] as? String ?? "", $0["id"] as? Int ?? 0) }, uniquingKeysWith: { a, _ in a })
        }
        var churner = try await agent(port: port, name: "churner", features: "video", jobSeconds: "100ms")
        try await readyBackends(port: port, count: 1)
        #expect(try await names() == ["churner": 1])
        _ = try await HTTP.post("http://127.0.0.1:\(port)/v1/batches", #"{"jobs": [{"kind": "video", "needs": ["video"]}]}"#)
        #expect(try await finishedBatch(port: port).map(\.backend) == [1])
        #expect(try await HTTP.get("http://127.0.0.1:\(port)/metrics").text.contains(#"backend="churner""#))
        #expect(try await churner.stop() == 0)  // goodbye: down at once
        try await HTTP.waitFor("http://127.0.0.1:\(port)/v1/backends", "churner forgotten") { r in
            (r.json["backends"] as? [[String: Any]])?.isEmpty == true
        }
        let metrics = try await HTTP.get("http://127.0.0.1:\(port)/metrics").text
        #expect(!metrics.contains(#"backend="churner""#))
        #expect(MetricsText(metrics)["muster_backends_forgotten_total"] == 1)
        #expect(try await serve.stop() == 0)

        // The store forgot it too. The name registers as a new backend: id 1 is not given again,
        // since the finished job still names it.
        (serve, _) = try await coordinator(settings, port: port)
        #expect(try await names().isEmpty)
        #expect(try await finishedBatch(port: port).map(\.backend) == [1])
        churner = try await agent(port: port, name: "churner", features: "video")
        try await readyBackends(port: port, count: 1)
        #expect(try await names() == ["churner": 2])
        try await churner.stop()
        #expect(try await serve.stop() == 0)
    }

    /// Runs tests/Interop/backend_link.py CASE against the coordinator.
    func python(port: Int, token: String, _ testCase: String) async throws -> [String: Any] {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Interop/backend_link.py").path
        let r = try await runChild("/usr/bin/python3", [script, "\(port)", token, testCase])
        return ((try? JSONSerialization.jsonObject(with: r.output)) as? [String: Any]) ?? ["exit": Int(r.status), "output": r.text]
    }

    @Test func badInputOnTheBackendLinkGetsItsDocumentedAnswerAndTheDaemonCarriesOn() async throws {
        let (serve, port) = try await coordinator(["--set", "auth.token=s3cret"])
        let badToken = try await python(port: port, token: "s3cret", "bad_token")
        #expect(badToken["error"] as? String == "bad_credentials")
        #expect(badToken["close"] as? Int == 4001)
        let wrongRole = try await python(port: port, token: "s3cret", "client_on_backend_link")
        #expect(wrongRole["error"] as? String == "wrong_role")
        #expect(wrongRole["close"] as? Int == 4003)
        let malformed = try await python(port: port, token: "s3cret", "malformed_hello")
        #expect(malformed["error"] as? String == "malformed_json", "\(malformed)")
        #expect(malformed["close"] as? Int == 1008, "a hello that cannot be read ends the link: \(malformed)")
        let early = try await python(port: port, token: "s3cret", "report_before_hello")
        #expect(early["error"] as? String == "not_registered")
        #expect(early["close"] as? Int == 1008)
        let oversize = try await python(port: port, token: "s3cret", "oversize")
        #expect(oversize["close"] as? Int == 1009)
        let unknown = try await python(port: port, token: "s3cret", "unknown_type")
        #expect(unknown["error"] as? String == "unknown_type")
        #expect(unknown["id"] as? String == "t1")
        #expect(unknown["after"] as? String == "capabilities_ack", "the link stays up after an unknown type")

        let health = try await HTTP.get("http://127.0.0.1:\(port)/healthz")
        #expect(health.status == 200)
        // uptime_ms counts milliseconds, not whole seconds times 1000: two reads that are both
        // whole seconds would be a one-in-a-million coincidence.
        let uptimes = [health.json["uptime_ms"] as? Int ?? -1, try await HTTP.get("http://127.0.0.1:\(port)/healthz").json["uptime_ms"] as? Int ?? -1]
        #expect(uptimes[0] > 0 && uptimes[1] >= uptimes[0], "uptime_ms \(uptimes)")
        #expect(uptimes.contains { $0 % 1000 != 0 }, "uptime_ms \(uptimes) has whole-second resolution")
        let metrics = try await HTTP.get("http://127.0.0.1:\(port)/metrics").text
        #expect(metrics.contains(#"muster_protocol_errors_total{code="bad_credentials"} 1"#))
        #expect(metrics.contains(#"muster_protocol_errors_total{code="malformed_json"} 1"#))
        // A single coordinator leads, one term: its run.
        #expect(MetricsText(metrics)["muster_leader_terms_total"] == 1)
        #expect(metrics.contains(#"muster_role{role="leader"} 1"#))
        // Every pass of the event loop is timed: this test's links and requests made many.
        #expect(MetricsText(metrics)["muster_loop_pass_cpu_seconds_count"] >= 10)
        #expect(metrics.contains(#"muster_loop_pass_cpu_seconds_bucket{le="0.001"}"#))
        #expect(try await serve.stop() == 0)
    }

    @Test func httpErrorsUseTheOneErrorShape() async throws {
        let (serve, port) = try await coordinator(["--set", "auth.token=s3cret"])
        let base = "http://127.0.0.1:\(port)"
        let auth = ["Authorization": "Bearer s3cret"]
        let noToken = try await HTTP.get("\(base)/v1/backends")
        #expect(noToken.status == 401)
        #expect(noToken.json["code"] as? String == "bad_credentials")
        #expect(try await HTTP.get("\(base)/v1/backends", headers: auth).status == 200)
        let unknownJob = try await HTTP.get("\(base)/v1/jobs/99", headers: auth)
        #expect(unknownJob.status == 404)
        #expect(unknownJob.json["code"] as? String == "unknown_job")
        let badID = try await HTTP.get("\(base)/v1/jobs/abc", headers: auth)
        #expect(badID.status == 400)
        let notFound = try await HTTP.get("\(base)/v1/nothing", headers: auth)
        #expect(notFound.status == 404)
        #expect(notFound.json["code"] as? String == "not_found")
        let wrongMethod = try await HTTP.request("PUT", "\(base)/v1/jobs/1", headers: auth)
        #expect(wrongMethod.status == 405)
        let exactWrongMethod = try await HTTP.request("DELETE", "\(base)/healthz")
        #expect(exactWrongMethod.status == 405)
        #expect(exactWrongMethod.json["code"] as? String == "method_not_allowed")
        let huge = try await HTTP.post("\(base)/v1/batches", String(repeating: " ", count: 2 << 20) + "{}", headers: auth)
        #expect(huge.status == 413)
        #expect(huge.json["code"] as? String == "message_too_large")
        let malformed = try await HTTP.post("\(base)/v1/batches", #"{"jobs": [{"kind": "video""#, headers: auth)
        #expect(malformed.status == 400)
        #expect(malformed.json["code"] as? String == "malformed_json")
        let invalid = try await HTTP.post("\(base)/v1/batches", #"{"jobs": [{"kind": "video", "count": "four"}]}"#, headers: auth)
        #expect(invalid.status == 400)
        #expect((invalid.json["message"] as? String)?.contains("count") == true)
        // Probes need no token.
        #expect(try await HTTP.get("\(base)/healthz").status == 200)
        #expect(try await serve.stop() == 0)
    }

    @Test func execBackendsRunACommandPerJob() async throws {
        // The command gets the assign message on stdin and answers with a result object.
        let script = #"read -r job; printf '{"echo":%s}' "$job""#
        let config: [[String: Any]] = [
            ["name": "local-exec", "kind": "exec", "features": ["image"], "command": ["sh", "-c", script]],
            ["name": "local-fail", "kind": "exec", "features": ["fail"], "command": ["sh", "-c", "echo 'GPU on fire' >&2; exit 7"]],
        ]
        let json = String(decoding: try JSONSerialization.data(withJSONObject: config), as: UTF8.self)
        let (serve, port) = try await coordinator(backends(json))
        _ = try await HTTP.post("http://127.0.0.1:\(port)/v1/batches", #"{"jobs": [{"kind": "image", "needs": ["image"], "params": {"prompt": "a cat"}}]}"#)
        _ = try await HTTP.post("http://127.0.0.1:\(port)/v1/batches", #"{"jobs": [{"kind": "image", "needs": ["fail"]}]}"#)
        let ok = try await finishedBatch(port: port, batch: 1)
        #expect(ok.first?.state == "completed")
        let job = try await HTTP.get("http://127.0.0.1:\(port)/v1/jobs/\(ok.first?.job ?? 0)").json
        let echoed = (job["result"] as? [String: Any])?["echo"] as? [String: Any]
        #expect(echoed?["type"] as? String == "assign")
        #expect((echoed?["params"] as? [String: Any])?["prompt"] as? String == "a cat")
        let failed = try await finishedBatch(port: port, batch: 2)
        #expect(failed.first?.state == "failed")
        let failure = try await HTTP.get("http://127.0.0.1:\(port)/v1/jobs/\(failed.first?.job ?? 0)").json["error"] as? [String: Any]
        #expect((failure?["message"] as? String)?.contains("GPU on fire") == true, "the tail of stderr names the failure: \(failure ?? [:])")
        #expect(try await serve.stop() == 0)
    }

    @Test func tlsCoordinatorTakesAgentsOverWSS() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("muster-tls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let openssl = try await runChild(
            "/usr/bin/openssl",
            [
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", dir.appendingPathComponent("key.pem").path,
                "-out", dir.appendingPathComponent("cert.pem").path,
            ])
        #expect(openssl.status == 0)
        let cert = dir.appendingPathComponent("cert.pem").path
        let (serve, port) = try await coordinator(["--tls-cert", cert, "--tls-key", dir.appendingPathComponent("key.pem").path] + backends("[]"))
        let agent = try MusterProcess([
            "agent", "--coordinator", "wss://127.0.0.1:\(port)", "--token", "t", "--name", "secure", "--features", "video",
            "--ca-file", cert, "--log-format", "json",
        ])
        try await agent.waitForLog("registered")
        #expect(try await agent.stop() == 0)
        #expect(try await serve.stop() == 0)
    }

    /// TLS 1.2 is the floor even where the system's OpenSSL configuration allows older versions:
    /// both the coordinator and the probing client run with a configuration that permits TLS 1.0
    /// (MinProtocol TLSv1, security level 0); a TLS 1.1 handshake still fails, TLS 1.2 and 1.3 work.
    @Test func tlsOlderThan1_2IsRefusedWhateverTheSystemAllows() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("muster-tls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let cert = dir.appendingPathComponent("cert.pem").path, key = dir.appendingPathComponent("key.pem").path
        let weak = dir.appendingPathComponent("weak.cnf").path
        let weakConfig = [
            "openssl_conf = default_conf", "[default_conf]", "ssl_conf = ssl_sect", "[ssl_sect]",
            "system_default = system_default_sect", "[system_default_sect]", "MinProtocol = TLSv1",
            "CipherString = DEFAULT:@SECLEVEL=0", "",
        ]
        try weakConfig.joined(separator: "\n").write(toFile: weak, atomically: true, encoding: .utf8)
        func openssl(_ arguments: [String]) async throws -> (status: Int32, output: String) {
            let r = try await runChild(
                "/usr/bin/openssl", arguments,
                environment: ProcessInfo.processInfo.environment.merging(["OPENSSL_CONF": weak]) { $1 })
            return (r.status, r.text + String(decoding: r.errors, as: UTF8.self))
        }
        let made = try await openssl([
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert,
        ])
        try #require(made.status == 0, "\(made.output)")
        let serve = try MusterProcess(
            ["serve", "--listen", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", key] + backends("[]"),
            environment: ["OPENSSL_CONF": weak])
        let line = try await serve.waitForLog("muster serving")
        let port = try #require(Int(line["listen.port"] as? String ?? ""))
        func handshake(_ version: String) async throws -> (status: Int32, output: String) {
            try await openssl(["s_client", "-connect", "127.0.0.1:\(port)", version, "-cipher", "DEFAULT:@SECLEVEL=0", "-brief"])
        }
        let old = try await handshake("-tls1_1")
        #expect(old.status != 0, "a TLS 1.1 handshake succeeded: \(old.output)")
        #expect(!old.output.contains("Protocol version: TLSv1.1"), "\(old.output)")
        for version in ["-tls1_2", "-tls1_3"] {
            let r = try await handshake(version)
            #expect(r.status == 0 && r.output.contains("CONNECTION ESTABLISHED"), "\(version): \(r.output)")
        }
        #expect(try await serve.stop() == 0)
    }

    @Test func coordinatorDialsTheRemoteBackendsOfItsConfiguration() async throws {
        let agent = try MusterProcess([
            "agent", "--listen", "127.0.0.1:0", "--token", "dial-secret", "--name", "dialled", "--features", "video",
            "--job-seconds", "200ms", "--log-format", "json",
        ])
        let line = try await agent.waitForLog("agent listening")
        let agentPort = try #require(Int(line["listen.port"] as? String ?? ""))
        // Protocol 6.1: an upgrade without the agent's token, or with another, is refused 401.
        for authorization in [nil, "Bearer wrong"] {
            var headers = [
                "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Protocol": "muster.backend.v1",
            ]
            headers["Authorization"] = authorization
            let refused = try await HTTP.get("http://127.0.0.1:\(agentPort)/v1/ws", headers: headers)
            #expect(refused.status == 401, "\(authorization ?? "no token"): \(refused.status) \(refused.text)")
            #expect(refused.json["code"] as? String == "bad_credentials", "\(refused.text)")
        }
        let (serve, port) = try await coordinator(backends(
            #"[{"name": "dialled", "kind": "remote", "url": "ws://127.0.0.1:\#(agentPort)", "token": "dial-secret"}]"#))
        try await readyBackends(port: port, count: 1)
        _ = try await HTTP.post("http://127.0.0.1:\(port)/v1/batches", #"{"jobs": [{"kind": "video", "needs": ["video"], "count": 2}]}"#)
        let jobs = try await finishedBatch(port: port)
        #expect(jobs.allSatisfy { $0.state == "completed" && $0.backend == 1 })
        #expect(try await serve.stop() == 0)
        #expect(try await agent.stop() == 0)
    }

    @Test func anAgentKilledMidJobLosesItToAnotherAndEveryJobEndsOnce() async throws {
        let (serve, port) = try await coordinator(backends("[]") + ["--set", "links.suspect_grace_seconds=0.5"])
        // Its job outlasts the test however slow the test process is to kill it.
        let victim = try await agent(port: port, name: "victim", features: "video", jobSeconds: "600s")
        try await readyBackends(port: port, count: 1)
        var options = MusterClient.Options(coordinator: "ws://127.0.0.1:\(port)", name: "e2e")
        options.requestTimeout = .seconds(30)
        let client = try await MusterClient.connect(options, logger: TestCoordinator.quietLogger)
        try await client.subscribe(batch: nil)
        let accepted = try await client.submit(Wire.BatchRequest(jobs: [Wire.JobRequest(kind: "video", needs: ["video"], count: 2)]))

        let finals = try await within(.seconds(90), "every job to end") {
            var finals: [JobID: [String]] = [:]
            var rescuer: MusterProcess?
            var killed = false
            for await event in client.events where accepted.jobs.contains(event.job) {
                if event.event == .started, event.backend == BackendID(1), !killed {
                    // The victim runs a job: bring up a rescuer, then kill the victim without a goodbye.
                    rescuer = try await agent(port: port, name: "rescuer", features: "video", jobSeconds: "1s")
                    kill(victim.process.processIdentifier, SIGKILL)
                    killed = true
                }
                if event.state.isFinal { finals[event.job, default: []].append(event.state.rawValue) }
                if finals.count == accepted.jobs.count { break }
            }
            try await rescuer?.stop()
            return finals
        }
        #expect(finals.count == 2)
        #expect(finals.values.allSatisfy { $0 == ["completed"] }, "exactly one final event per job, completed: \(finals)")
        let requeued = try await HTTP.get("http://127.0.0.1:\(port)/v1/jobs/\(accepted.jobs[0])").json
        #expect((requeued["history"] as? [[String: Any]])?.first?["backend"] as? Int == 1, "the first job started on the victim")
        #expect(requeued["backend"] as? Int == 2, "and completed on the rescuer")
        await client.close()
        #expect(try await serve.stop() == 0)
    }

    /// Backup runs through real processes: an image job runs on the only agent, which takes 20 s
    /// for it; a second agent (1 s a job, its speed unknown, as the first's) joins. Two seconds
    /// in, the job's `timed` progress (a tenth done) shows it a straggler, and the idle agent runs
    /// a copy, which completes first: the job completes once, on the second agent, and the first
    /// is told to stop (`revoke`). Nothing asserts a duration.
    @Test func aStragglerCompletesOnABackupRunOnAnIdleAgent() async throws {
        let (serve, port) = try await coordinator(backends("[]"))
        let slow = try await agent(port: port, name: "slow", features: "image", jobSeconds: "20s")
        try await readyBackends(port: port, count: 1)
        let submitted = try await HTTP.post("http://127.0.0.1:\(port)/v1/batches", #"{"jobs": [{"kind": "image"}]}"#)
        let job = try #require((submitted.json["jobs"] as? [Int])?.first)
        try await slow.waitForLog("job assigned")
        let fast = try await agent(port: port, name: "fast", features: "image", jobSeconds: "1s")
        let done = try await finishedBatch(port: port)
        #expect(done.map(\.state) == ["completed"] && done.first?.backend == 2, "\(done)")
        let info = try await HTTP.get("http://127.0.0.1:\(port)/v1/jobs/\(job)").json
        let history = info["history"] as? [[String: Any]] ?? []
        #expect(history.map { $0["backend"] as? Int } == [1, 2], "\(info)")
        #expect(history.map { $0["outcome"] as? String } == ["revoked", "completed"], "\(info)")
        let metrics = try await MetricsText.fetch(port: port)
        #expect(metrics[#"muster_backup_runs_total{result="started"}"#] == 1)
        #expect(metrics[#"muster_backup_runs_total{result="won"}"#] == 1)
        try await fast.stop()
        try await slow.stop()
        #expect(try await serve.stop() == 0)
    }

    @Test func aJobNoBackendCanRunFailsNamingWhatIsMissingAndWhy() async throws {
        // Gate off: nothing is loading, so the job fails at once instead of waiting.
        let (serve, port) = try await coordinator(["--set", "gate.window_seconds=0"])
        _ = try await HTTP.post("http://127.0.0.1:\(port)/v1/batches", #"{"jobs": [{"kind": "video", "needs": ["video", "upscale4k"]}]}"#)
        let jobs = try await finishedBatch(port: port)
        #expect(jobs.first?.state == "failed")
        let error = try await HTTP.get("http://127.0.0.1:\(port)/v1/jobs/\(jobs.first?.job ?? 0)").json["error"] as? [String: Any]
        #expect(error?["code"] as? String == "no_eligible_backend")
        let details = error?["details"] as? [String: Any]
        #expect(details?["missing_features"] as? [String] == ["upscale4k"])
        let refusals = details?["refusals"] as? [[String: Any]] ?? []
        #expect(refusals.count == 2)
        #expect(refusals.allSatisfy { ($0["reasons"] as? [String])?.contains("missing_features") == true })
        let video = refusals.first { $0["name"] as? String == "local-video" }
        #expect(video?["missing_features"] as? [String] == ["upscale4k"])
        #expect(try await serve.stop() == 0)
    }

    @Test func aBatchKeyMakesRetriesIdempotentAndRefusesOtherContent() async throws {
        let (serve, port) = try await coordinator(backends("[]"))
        let url = "http://127.0.0.1:\(port)/v1/batches"
        let body = #"{"batch_key": "render-001", "jobs": [{"kind": "image", "count": 2}]}"#
        let first = try await HTTP.post(url, body)
        #expect(first.status == 201)
        #expect(first.json["duplicate"] as? Bool == false)
        let retry = try await HTTP.post(url, body)
        #expect(retry.status == 200, "a retry creates nothing")
        #expect(retry.json["duplicate"] as? Bool == true)
        #expect(retry.json["batch"] as? Int == first.json["batch"] as? Int)
        #expect(retry.json["jobs"] as? [Int] == first.json["jobs"] as? [Int])
        let conflict = try await HTTP.post(url, #"{"batch_key": "render-001", "jobs": [{"kind": "image", "count": 3}]}"#)
        #expect(conflict.status == 409)
        #expect(conflict.json["code"] as? String == "batch_key_conflict")
        #expect((conflict.json["details"] as? [String: Any])?["batch"] as? Int == first.json["batch"] as? Int)
        let status = try await HTTP.get("http://127.0.0.1:\(port)/v1/batches/\(first.json["batch"] as? Int ?? 0)")
        #expect((status.json["jobs"] as? [Any])?.count == 2, "still the first batch's two jobs only")
        #expect(try await serve.stop() == 0)
    }

    @Test func configurationErrorsExitWithStatus2AndNameTheKey() async throws {
        let p = try MusterProcess(["serve", "--set", "gate.window_secs=5"])
        #expect(try await p.waitForExit() == 2)
        #expect(p.standardError.contains("gate.window_secs"))
        #expect(p.standardError.contains("gate.window_seconds"), "suggests the right key")
    }

    /// Protected mode: a coordinator reachable beyond loopback with no credentials refuses to
    /// start, naming the key to set and the override; with the override it starts and warns.
    @Test func listeningBeyondLoopbackWithoutCredentialsIsRefused() async throws {
        let refused = try MusterProcess(["serve", "--listen", "0.0.0.0:0"])
        #expect(try await refused.waitForExit() == 2)
        #expect(refused.standardError.contains("auth.token"), "\(refused.standardError)")
        #expect(refused.standardError.contains("auth.allow_anonymous=true"), "\(refused.standardError)")

        let allowed = try MusterProcess(["serve", "--listen", "0.0.0.0:0", "--set", "auth.allow_anonymous=true"])
        let line = try await allowed.waitForLog("muster serving")
        let port = try #require(Int(line["listen.port"] as? String ?? ""))
        #expect(try await HTTP.get("http://127.0.0.1:\(port)/healthz").status == 200)
        #expect(try await allowed.stop() == 0)
        #expect(allowed.standardError.contains("protected mode is off"), "\(allowed.standardError)")

        // The agent's --listen mode follows the same rule.
        let agent = try MusterProcess(["agent", "--listen", "0.0.0.0:0", "--name", "open"])
        #expect(try await agent.waitForExit() != 0)
        #expect(agent.standardError.contains("--allow-anonymous"), "\(agent.standardError)")

        let token = try MusterProcess(["serve", "--listen", "0.0.0.0:0", "--set", "auth.token=s3cret-token"])
        _ = try await token.waitForLog("muster serving")
        #expect(try await token.stop() == 0)
        #expect(!token.standardError.contains("protected mode is off"))
    }
}
