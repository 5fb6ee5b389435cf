import Foundation
import Testing

/// SIGINT/SIGTERM drains an agent: it announces `draining`, finishes the job it runs, says
/// goodbye and exits 0, however long the job takes (README: "Stop the agent with Ctrl-C"), unless
/// `--drain-timeout` bounds it. Real processes; nothing asserts a duration.
@Suite(.serialized) struct AgentDrainTests {
    @Test(arguments: [false, true])
    func anInterruptedAgentFinishesItsJobBeforeExiting(bounded: Bool) async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("muster-drain-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let go = dir.appendingPathComponent("go").path
        let started = dir.appendingPathComponent("started").path
        let serve = try MusterProcess([
            "serve", "--listen", "127.0.0.1:0", "--set", "backends=[]", "--set", "store.url=memory:",
        ])
        let line = try await serve.waitForLog("muster serving")
        let port = try #require(Int(line["listen.port"] as? String ?? ""))
        let base = "http://127.0.0.1:\(port)"
        // The job runs until the test lets it end.
        var arguments = [
            "agent", "--coordinator", "ws://127.0.0.1:\(port)", "--name", "drainer", "--features", "image",
            "--exec", "touch '\(started)'; while [ ! -f '\(go)' ]; do sleep 0.05; done; echo '{}'",
            "--log-format", "json",
        ]
        if bounded { arguments += ["--drain-timeout", "1s"] }
        let agent = try MusterProcess(arguments)
        try await agent.waitForLog("registered")
        try await HTTP.waitFor("\(base)/v1/backends", "drainer ready") { r in
            ((r.json["backends"] as? [[String: Any]])?.first?["capabilities"] as? [String: Any])?["state"] as? String == "ready"
        }
        let submitted = try await HTTP.post("\(base)/v1/batches", #"{"jobs": [{"kind": "image"}]}"#)
        let job = try #require((submitted.json["jobs"] as? [Int])?.first)
        try await HTTP.waitFor("\(base)/v1/jobs/\(job)", "the job running") { $0.json["state"] as? String == "running" }
        while !FileManager.default.fileExists(atPath: started) { try await Task.sleep(for: .milliseconds(50)) }

        agent.send(signal: SIGINT)
        try await HTTP.waitFor("\(base)/v1/backends", "drainer draining") { r in
            ((r.json["backends"] as? [[String: Any]])?.first?["capabilities"] as? [String: Any])?["state"] as? String == "draining"
        }
        if bounded {
            // The bound passes while the job still runs: the agent gives up with status 1 (its
            // job's process holds the test's pipes until it is let go).
            _ = try await agent.waitForLog("shutdown did not finish in time: exiting")
            _ = FileManager.default.createFile(atPath: go, contents: nil)
            #expect(try await agent.waitForExit() == 1)
        } else {
            _ = FileManager.default.createFile(atPath: go, contents: nil)
            #expect(try await agent.waitForExit() == 0)
            let ended = try await HTTP.get("\(base)/v1/jobs/\(job)")
            #expect(ended.json["state"] as? String == "completed", "\(ended.text)")
        }
        #expect(try await serve.stop() == 0)
    }

    /// A name the protocol does not allow is refused before dialling (exit 64, naming the flag),
    /// and a hello the coordinator refuses for good (here: a local backend's name) ends the agent
    /// with exit 1 instead of a redial every half second.
    @Test func anAgentWithANameItCannotUseStops() async throws {
        let cli = SubmitCommandTests()
        let bad = try await cli.run(["agent", "--coordinator", "ws://127.0.0.1:1", "--name", "bad name"])
        #expect(bad.status == 64 && bad.errors.contains("--name"), "\(bad.errors)")
        let serve = try MusterProcess([
            "serve", "--listen", "127.0.0.1:0", "--set", "store.url=memory:",
            "--set", #"backends=[{"name": "local-gpu", "kind": "simulated", "features": ["image"]}]"#,
        ])
        let line = try await serve.waitForLog("muster serving")
        let port = try #require(Int(line["listen.port"] as? String ?? ""))
        let taken = try await cli.run(["agent", "--coordinator", "ws://127.0.0.1:\(port)", "--name", "local-gpu"])
        #expect(taken.status == 1, "\(taken.errors)")
        #expect(taken.errors.contains("forbidden") || taken.output.contains("forbidden"), "\(taken.errors)")
        #expect(try await serve.stop() == 0)
    }
}
