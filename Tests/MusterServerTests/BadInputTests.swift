import Foundation
@testable import MusterClient
import MusterProtocol
import MusterServer
import Testing

/// Issue 7, the bad-input suite: one real `muster serve` with a healthy remote backend (a
/// `muster agent`) and a healthy client linked for the whole run, while Debian's
/// python3-websockets (Tests/Interop/bad_input.py) and raw HTTP feed it every kind of bad input
/// on both subprotocols and the HTTP API. Each gets the answer Protocol/README.md documents
/// (error code and member path, or close code), `/metrics` counts exactly it, the daemon keeps
/// answering `/healthz`, and the healthy links keep working: after every group a job submitted on
/// the healthy client completes on the healthy backend. Nothing asserts a duration.
@Suite(.serialized, .timeLimit(.minutes(5))) struct BadInputTests {
    /// The metrics bad input may move; any change in them not expected by a case fails it.
    static let watched = [
        "muster_protocol_errors_total", "muster_request_errors_total", "muster_http_errors_total",
        "muster_link_closes", "muster_handshake_timeouts", "muster_reconnects_total",
    ]
    /// Short enough to keep the stalled-handshake cases quick, long enough that none of the 2,000
    /// links opened at once misses it on a loaded machine.
    static let handshakeTimeoutSeconds = 8

    static func protocolError(_ code: String) -> String { MetricsText.series("muster_protocol_errors_total", "code", code) }
    static func httpError(_ code: String) -> String { MetricsText.series("muster_http_errors_total", "code", code) }
    static func closes(_ code: Int) -> String { MetricsText.series("muster_link_closes", "code", "\(code)") }

    /// The coordinator and its healthy links.
    struct Rig {
        let serve: MusterProcess
        let agent: MusterProcess
        let client: MusterClient
        let port: Int
        let agentID: Int
        var base: String { "http://127.0.0.1:\(port)" }

        /// Runs `body`, then waits until the watched metrics moved by exactly `expected`
        /// (bounded: the coordinator counts a close once the close handshake is over).
        func counting<T>(
            _ what: String, _ expected: [String: Double], sourceLocation: SourceLocation = #_sourceLocation,
            _ body: () async throws -> T
        ) async throws -> T {
            let before = try await MetricsText.fetch(port: port)
            let value = try await body()
            let deadline = ContinuousClock.now + .seconds(20)
            var delta: [String: Double] = [:]
            // Read once more after the deadline: a test process that stalled through the wait
            // judges what the coordinator counted, not a reading taken before the stall.
            var last = false
            repeat {
                last = ContinuousClock.now >= deadline
                delta = try await MetricsText.fetch(port: port).delta(since: before, families: BadInputTests.watched)
                if delta == expected { break }
                try await Task.sleep(for: .milliseconds(50))
            } while !last
            #expect(delta == expected, "\(what): metrics moved by \(delta), expected \(expected)", sourceLocation: sourceLocation)
            return value
        }

        /// One case of bad_input.py, counted.
        func python(_ testCase: String, _ expected: [String: Double], sourceLocation: SourceLocation = #_sourceLocation) async throws
            -> [String: Any]
        {
            let result = try await counting(testCase, expected, sourceLocation: sourceLocation) {
                try await runInteropScript("bad_input.py", ["\(port)", testCase])
            }
            #expect(result["exception"] == nil && result["exit"] == nil, "\(testCase): \(result)", sourceLocation: sourceLocation)
            return result
        }

        /// The daemon serves and the healthy links work: a job on the healthy client completes on
        /// the healthy backend, and the client's link answers a status request.
        func healthy(_ after: String, sourceLocation: SourceLocation = #_sourceLocation) async throws {
            let health = try await HTTP.get("\(base)/healthz")
            #expect(health.status == 200, "after \(after): /healthz \(health.status)", sourceLocation: sourceLocation)
            let accepted = try await client.submit(Wire.BatchRequest(jobs: [Wire.JobRequest(kind: "probe", needs: ["probe"])]))
            let progress = try await within(.seconds(60), "the healthy job after \(after)") { await client.follow(accepted) }
            let job = progress.jobs[accepted.jobs[0]]
            #expect(job?.state == .completed, "after \(after): \(String(describing: job))", sourceLocation: sourceLocation)
            #expect(job?.backend == BackendID(Int64(agentID)), "after \(after): ran on the healthy agent", sourceLocation: sourceLocation)
            let status = try await client.status()
            #expect(status.backends.contains { $0.name == "steady" && $0.link == .up }, "after \(after)", sourceLocation: sourceLocation)
        }
    }

    func startRig() async throws -> Rig {
        let serve = try MusterProcess([
            "serve", "--listen", "127.0.0.1:0", "--log-level", "debug",
            // The gate would hold the healthy job for the bad backends that register and never
            // announce; these tests are not about it.
            "--set", "gate.window_seconds=0",
            "--set", "links.handshake_timeout_seconds=\(Self.handshakeTimeoutSeconds)",
        ])
        let line = try await serve.waitForLog("muster serving")
        let port = try #require(Int(line["listen.port"] as? String ?? ""))
        let agent = try MusterProcess([
            "agent", "--coordinator", "ws://127.0.0.1:\(port)", "--name", "steady", "--features", "probe",
            "--job-seconds", "100ms", "--log-format", "json", "--log-level", "debug",
        ])
        try await agent.waitForLog("registered")
        let ready = try await HTTP.waitFor("http://127.0.0.1:\(port)/v1/backends", "the healthy agent ready") { r in
            (r.json["backends"] as? [[String: Any]] ?? []).contains {
                $0["name"] as? String == "steady" && (($0["capabilities"] as? [String: Any])?["state"] as? String) == "ready"
            }
        }
        let agentID = try #require((ready.json["backends"] as? [[String: Any]])?.first { $0["name"] as? String == "steady" }?["id"] as? Int)
        var options = MusterClient.Options(coordinator: "ws://127.0.0.1:\(port)", name: "steady-client")
        options.connectTimeout = .seconds(30)
        options.requestTimeout = .seconds(30)
        let client = try await MusterClient.connect(options, logger: TestCoordinator.quietLogger)
        try await client.subscribe(batch: nil)
        return Rig(serve: serve, agent: agent, client: client, port: port, agentID: agentID)
    }

    /// An `error` answer with `code`, naming `path` first in its message when given, echoing `id`.
    func expectError(
        _ r: [String: Any], _ code: String, path: String? = nil, id: String? = nil, after: String? = nil, close: Int? = nil,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        #expect(r["reply"] as? String == "error", "\(r)", sourceLocation: sourceLocation)
        #expect(r["error"] as? String == code, "\(r)", sourceLocation: sourceLocation)
        if let path {
            #expect((r["message"] as? String)?.hasPrefix("\(path): ") == true, "the message names \(path): \(r)", sourceLocation: sourceLocation)
        }
        #expect(r["id"] as? String == id, "id echoed: \(r)", sourceLocation: sourceLocation)
        if let after { #expect(r["after"] as? String == after, "the link stays up: \(r)", sourceLocation: sourceLocation) }
        if let close { #expect(r["close"] as? Int == close, "\(r)", sourceLocation: sourceLocation) }
    }

    @Test func everyBadInputGetsItsDocumentedAnswerAndTheHealthyLinksCarryOn() async throws {
        // 2,000 links at once need that many descriptors in the coordinator and in python.
        let files = raiseOpenFileLimit(to: 8192)
        let rig = try await startRig()
        try await rig.healthy("start")
        let linksBefore = try await MetricsText.fetch(port: rig.port)["muster_links_open"]
        #expect(linksBefore == 2, "the healthy agent and client")

        try await backendLink(rig)
        try await rig.healthy("bad input on muster.backend.v1")
        try await clientLink(rig)
        try await rig.healthy("bad input on muster.client.v1")
        try await http(rig)
        try await rig.healthy("bad HTTP requests")
        try await browserPages(rig)
        try await rig.healthy("browser pages")
        try await stalledHandshakes(rig)
        try await rig.healthy("stalled handshakes")
        try await storm(rig, links: min(2000, Int(files) - 300))
        try await rig.healthy("2,000 links at once")

        // The healthy links were never dropped: the agent registered once and never lost its
        // link (muster_reconnects_total is watched by every case), and the client's link still
        // answers (it does not reconnect).
        #expect(rig.agent.logEvents.filter { $0["msg"] as? String == "registered" }.count == 1)
        #expect(rig.agent.findLog("link to coordinator lost") == nil)
        try await HTTP.waitFor("\(rig.base)/metrics", "links back to the healthy two") { MetricsText($0.text)["muster_links_open"] == linksBefore }
        await rig.client.close()
        #expect(try await rig.agent.stop() == 0)
        #expect(try await rig.serve.stop() == 0)
    }

    // MARK: - muster.backend.v1

    func backendLink(_ rig: Rig) async throws {
        typealias T = BadInputTests
        let ok = T.closes(1000)  // the case closing its link normally afterwards
        expectError(
            try await rig.python("b_malformed", [T.protocolError("malformed_json"): 1, ok: 1]), "malformed_json", after: "capabilities_ack")
        expectError(
            try await rig.python("b_wrong_type", [T.protocolError("invalid_message"): 1, ok: 1]), "invalid_message", path: "job",
            after: "capabilities_ack")
        expectError(
            try await rig.python("b_missing", [T.protocolError("invalid_message"): 1, ok: 1]), "invalid_message", path: "lease",
            after: "capabilities_ack")
        // Unknown members are ignored: the announcement is applied.
        let unknownField = try await rig.python("b_unknown_field", [ok: 1])
        #expect(unknownField["reply"] as? String == "capabilities_ack", "\(unknownField)")
        expectError(
            try await rig.python("b_unknown_type", [T.protocolError("unknown_type"): 1, ok: 1]), "unknown_type", path: "type", id: "t1",
            after: "capabilities_ack")
        // 2^64 does not fit an unsigned id; 1e400 is no number a double holds.
        expectError(
            try await rig.python("b_uint64_overflow", [T.protocolError("invalid_message"): 1, ok: 1]), "invalid_message", path: "job",
            after: "capabilities_ack")
        expectError(
            try await rig.python("b_huge_exponent", [T.protocolError("invalid_message"): 1, ok: 1]), "invalid_message",
            path: "fraction", after: "capabilities_ack")
        expectError(
            try await rig.python("b_long_string", [T.protocolError("limit_exceeded"): 1, ok: 1]), "limit_exceeded", path: "message",
            after: "capabilities_ack")
        expectError(
            try await rig.python("b_deep", [T.protocolError("limit_exceeded"): 1, ok: 1]), "limit_exceeded", after: "capabilities_ack")
        // Transport-level violations end the link with their close code.
        #expect(try await rig.python("b_invalid_utf8", [T.closes(1007): 1])["close"] as? Int == 1007)
        #expect(try await rig.python("b_binary", [T.closes(1003): 1])["close"] as? Int == 1003)
        #expect(try await rig.python("b_oversize", [T.closes(1009): 1])["close"] as? Int == 1009)
        expectError(
            try await rig.python("b_second_hello", [T.protocolError("unexpected_message"): 1, T.closes(1008): 1]), "unexpected_message",
            id: "h1", close: 1008)
        // An unauthenticated backend reporting a result, and a client on the backend subprotocol.
        expectError(
            try await rig.python("b_report_before_hello", [T.protocolError("not_registered"): 1, T.closes(1008): 1]), "not_registered",
            close: 1008)
        expectError(
            try await rig.python("b_client_hello", [T.protocolError("wrong_role"): 1, T.closes(4003): 1]), "wrong_role", path: "role",
            id: "h1", close: 4003)
    }

    // MARK: - muster.client.v1

    func clientLink(_ rig: Rig) async throws {
        typealias T = BadInputTests
        let ok = T.closes(1000)
        expectError(
            try await rig.python("c_malformed", [T.protocolError("malformed_json"): 1, ok: 1]), "malformed_json", id: "r0", after: "status_report")
        expectError(
            try await rig.python("c_wrong_type", [T.protocolError("invalid_message"): 1, ok: 1]), "invalid_message",
            path: "jobs[0].count", id: "r1", after: "status_report")
        expectError(
            try await rig.python("c_missing", [T.protocolError("invalid_message"): 1, ok: 1]), "invalid_message", path: "jobs", id: "r2",
            after: "status_report")
        let unknownField = try await rig.python("c_unknown_field", [ok: 1])
        #expect(unknownField["reply"] as? String == "status_report" && unknownField["id"] as? String == "r3", "\(unknownField)")
        expectError(
            try await rig.python("c_unknown_type", [T.protocolError("unknown_type"): 1, ok: 1]), "unknown_type", path: "type", id: "r4",
            after: "status_report")
        // A backend's message on the client link is a type this link does not accept.
        expectError(
            try await rig.python("c_backend_message", [T.protocolError("unknown_type"): 1, ok: 1]), "unknown_type", path: "type",
            id: "r5", after: "status_report")
        expectError(
            try await rig.python("c_uint64_overflow", [T.protocolError("invalid_message"): 1, ok: 1]), "invalid_message",
            path: "jobs[0].priority", id: "r6", after: "status_report")
        expectError(
            try await rig.python("c_huge_exponent", [T.protocolError("invalid_message"): 1, ok: 1]), "invalid_message",
            path: "jobs[0].count", id: "r7", after: "status_report")
        // Numbers of any size inside opaque params are kept as text, byte for byte.
        let opaque = try await rig.python("c_opaque_numbers", [ok: 1])
        #expect(opaque["reply"] as? String == "accepted", "\(opaque)")
        let opaqueJob = try #require((opaque["jobs"] as? [Int])?.first, "\(opaque)")
        let stored = try await HTTP.get("\(rig.base)/v1/jobs/\(opaqueJob)").text
        #expect(stored.contains(#"{"big":1e400,"huge":18446744073709551616}"#), "\(stored)")
        expectError(
            try await rig.python("c_long_string", [T.protocolError("limit_exceeded"): 1, ok: 1]), "limit_exceeded", path: "owner",
            id: "r9", after: "status_report")
        expectError(
            try await rig.python("c_deep", [T.protocolError("limit_exceeded"): 1, ok: 1]), "limit_exceeded", id: "r10",
            after: "status_report")
        #expect(try await rig.python("c_invalid_utf8", [T.closes(1007): 1])["close"] as? Int == 1007)
        #expect(try await rig.python("c_binary", [T.closes(1003): 1])["close"] as? Int == 1003)
        #expect(try await rig.python("c_oversize", [T.closes(1009): 1])["close"] as? Int == 1009)
        expectError(
            try await rig.python("c_request_before_hello", [T.protocolError("not_registered"): 1, T.closes(1008): 1]),
            "not_registered", id: "early", close: 1008)
        // A backend's hello on the client subprotocol.
        expectError(
            try await rig.python("c_backend_hello", [T.protocolError("wrong_role"): 1, T.closes(4003): 1]), "wrong_role", path: "role",
            id: "h1", close: 4003)
    }

    // MARK: - HTTP

    func http(_ rig: Rig) async throws {
        typealias T = BadInputTests
        let batches = "\(rig.base)/v1/batches"

        /// One request answered with the error shape: status, code, path named first in the message.
        func refused(
            _ method: String, _ url: String, body: String? = nil, status: Int, code: String, path: String? = nil,
            sourceLocation: SourceLocation = #_sourceLocation
        ) async throws -> HTTP.Response {
            let r = try await rig.counting("\(method) \(url)", [T.httpError(code): 1], sourceLocation: sourceLocation) {
                try await HTTP.request(method, url, body: body)
            }
            #expect(r.status == status, "\(method) \(url): \(r.status) \(r.text)", sourceLocation: sourceLocation)
            #expect(r.json["code"] as? String == code, "\(method) \(url): \(r.text)", sourceLocation: sourceLocation)
            #expect(r.json["message"] is String, "the error shape: \(r.text)", sourceLocation: sourceLocation)
            if let path {
                #expect((r.json["message"] as? String)?.hasPrefix("\(path): ") == true, "names \(path): \(r.text)", sourceLocation: sourceLocation)
            }
            return r
        }

        let put = try await refused("PUT", "\(rig.base)/v1/jobs/1", status: 405, code: "method_not_allowed")
        #expect(put.text.contains("GET, DELETE"), "\(put.text)")
        _ = try await refused("DELETE", "\(rig.base)/healthz", status: 405, code: "method_not_allowed")
        _ = try await refused("PATCH", batches, body: "{}", status: 405, code: "method_not_allowed")
        _ = try await refused("POST", batches, body: #"{"jobs": [{"kind": "image""#, status: 400, code: "malformed_json")
        _ = try await refused("POST", "\(rig.base)/v1/models/load", body: #"{"model": "#, status: 400, code: "malformed_json")
        _ = try await refused(
            "POST", batches, body: #"{"jobs": [{"kind": "image", "count": "four"}]}"#, status: 400, code: "invalid_message",
            path: "jobs[0].count")
        _ = try await refused("POST", batches, body: #"{"owner": "x"}"#, status: 400, code: "invalid_message", path: "jobs")
        _ = try await refused(
            "POST", batches, body: #"{"jobs": [{"kind": "image", "priority": 18446744073709551616}]}"#, status: 400,
            code: "invalid_message", path: "jobs[0].priority")
        _ = try await refused(
            "POST", batches, body: #"{"jobs": [{"kind": "image", "count": 1e400}]}"#, status: 400, code: "invalid_message",
            path: "jobs[0].count")
        _ = try await refused(
            "POST", batches, body: #"{"owner": ""# + String(repeating: "o", count: 200) + #"", "jobs": [{"kind": "image"}]}"#,
            status: 413, code: "limit_exceeded", path: "owner")
        _ = try await refused(
            "POST", batches, body: #"{"jobs": [{"kind": "image", "params": {"p": "# + String(repeating: "[", count: 80)
                + String(repeating: "]", count: 80) + "}}]}",
            status: 413, code: "limit_exceeded")
        _ = try await refused("POST", batches, body: String(repeating: " ", count: 2 << 20) + "{}", status: 413, code: "message_too_large")
        _ = try await refused("GET", "\(rig.base)/v1/nothing", status: 404, code: "not_found")
        _ = try await refused("GET", "\(rig.base)/nothing", status: 404, code: "not_found")
        _ = try await refused("GET", "\(rig.base)/v1/jobs/abc", status: 400, code: "invalid_message")
        // An id is written as JSON writes an integer: no sign, no leading zeros, no fraction.
        for id in ["+1", "01", "-1", "1.0", "1e0", "18446744073709551616"] {
            _ = try await refused("GET", "\(rig.base)/v1/jobs/\(id)", status: 400, code: "invalid_message")
        }
        _ = try await refused("POST", "\(rig.base)/v1/backends/+1/drain", status: 400, code: "invalid_message")
        _ = try await refused("POST", "\(rig.base)/v1/backends/-01/drain", status: 400, code: "invalid_message")
        _ = try await refused("GET", "\(rig.base)/v1/jobs/99999", status: 404, code: "unknown_job")
        // Unknown members are ignored over HTTP too.
        let extra = try await rig.counting("unknown members", [:]) {
            try await HTTP.post(batches, #"{"colour": "blue", "jobs": [{"kind": "image", "shade": "red"}]}"#)
        }
        #expect(extra.status == 201, "\(extra.text)")
    }

    // MARK: - Connections

    /// Half an upgrade request then silence: dropped after the handshake timeout and counted. A
    /// WebSocket that never says hello: `hello_timeout`, close 4004, on both subprotocols.
    /// Web pages in the operator's browser (README "Security", browsers): refused, with the error
    /// shape, while programs that send no `Origin` go on.
    func browserPages(_ rig: Rig) async throws {
        typealias T = BadInputTests
        let r = try await rig.python(
            "browser_pages",
            [T.protocolError("forbidden"): 2, T.closes(4007): 2, T.httpError("forbidden"): 3, T.closes(1000): 1])
        for side in ["backend", "client"] {
            let answer = r[side] as? [String: Any]
            #expect(answer?["error"] as? String == "forbidden", "\(side): \(r)")
            #expect(answer?["close"] as? Int == 4007, "\(side): \(r)")
        }
        #expect(r["own_origin"] as? String == "welcome", "\(r)")
        for request in ["cross_origin_post", "rebinding_get", "rebinding_dashboard"] {
            let answer = r[request] as? [String: Any]
            #expect(answer?["status"] as? Int == 403 && answer?["code"] as? String == "forbidden", "\(request): \(r)")
        }
    }

    func stalledHandshakes(_ rig: Rig) async throws {
        typealias T = BadInputTests
        let r = try await rig.python(
            "stalled_handshake",
            ["muster_handshake_timeouts": 1, T.protocolError("hello_timeout"): 2, T.closes(4004): 2])
        #expect(r["eof"] as? Bool == true, "the coordinator hung up on the half request: \(r)")
        for side in ["backend", "client"] {
            let answer = r[side] as? [String: Any]
            #expect(answer?["error"] as? String == "hello_timeout", "\(side): \(r)")
            #expect(answer?["close"] as? Int == 4004, "\(side): \(r)")
        }
    }

    /// Many client links opened at once: every one welcomed (or refused with a status or close
    /// code, never left hanging), each answering a request while all are open, /healthz served
    /// meanwhile; all closed normally afterwards.
    func storm(_ rig: Rig, links: Int) async throws {
        let before = try await MetricsText.fetch(port: rig.port)
        let r = try await runInteropScript("bad_input.py", ["\(rig.port)", "storm", "\(links)"], bound: .seconds(180))
        let outcomes = r["outcomes"] as? [String: Int] ?? [:]
        #expect(outcomes.values.reduce(0, +) == links, "every link accounted for: \(r)")
        #expect(outcomes.keys.allSatisfy { $0 == "welcomed" || $0.hasPrefix("refused_") }, "welcomed or refused cleanly: \(r)")
        let welcomed = outcomes["welcomed"] ?? 0
        #expect(welcomed > 0, "\(r)")
        #expect(r["answered"] as? Int == welcomed, "every open link answered: \(r)")
        #expect(r["healthz"] as? Int == 200, "/healthz during the storm: \(r)")
        #expect((r["links_open"] as? Double ?? 0) >= Double(welcomed + 2), "\(r)")
        // Every link that was welcomed closed normally; nothing else was counted unless refused.
        if welcomed == links {
            try await HTTP.waitFor("\(rig.base)/metrics", "the storm's closes counted") { resp in
                MetricsText(resp.text).delta(since: before, families: BadInputTests.watched) == [BadInputTests.closes(1000): Double(links)]
            }
        }
    }
}
