import Foundation
import MusterProtocol
import Testing

/// A job canceled while running ends only when its backend confirms, with real processes: `muster
/// serve`, `muster agent --exec` and the job's own process. Nothing asserts a duration.
@Suite(.serialized) struct CancelEndToEndTests {
    @Test func aCanceledExecJobEndsOnlyOnceItsProcessIsGoneAndKeepsItsSlotUntilThen() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("muster-cancel-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let pids = dir.appendingPathComponent("pids").path
        // A grace far beyond the test's bounds: only the agent's confirmation can end the job.
        let serve = try MusterProcess([
            "serve", "--listen", "127.0.0.1:0", "--log-level", "debug", "--set", "backends=[]",
            "--set", "routing.overqueue=0", "--set", "jobs.cancel_grace_seconds=3600", "--set", "store.url=memory:",
        ])
        let line = try await serve.waitForLog("muster serving")
        let port = try #require(Int(line["listen.port"] as? String ?? ""))
        let base = "http://127.0.0.1:\(port)"
        // Each job records its pid, then sleeps far longer than the test (only a kill ends it).
        let agent = try MusterProcess([
            "agent", "--coordinator", "ws://127.0.0.1:\(port)", "--name", "exec-box", "--features", "image",
            "--exec", "echo $$ >> '\(pids)'; exec sleep 3600", "--log-format", "json", "--log-level", "debug",
        ])
        try await agent.waitForLog("registered")
        try await HTTP.waitFor("\(base)/v1/backends", "exec-box ready") { r in
            ((r.json["backends"] as? [[String: Any]])?.first?["capabilities"] as? [String: Any])?["state"] as? String == "ready"
        }
        let submitted = try await HTTP.post("\(base)/v1/batches", #"{"owner": "e2e", "jobs": [{"kind": "image", "count": 2}]}"#)
        let jobs = try #require(submitted.json["jobs"] as? [Int])
        try await HTTP.waitFor("\(base)/v1/jobs/\(jobs[0])", "job 1 running") { $0.json["state"] as? String == "running" }
        let first = try await waitForPids(pids, count: 1)[0]

        let canceled = try await HTTP.request("DELETE", "\(base)/v1/jobs/\(jobs[0])")
        #expect(canceled.status == 200 && canceled.json["canceled"] as? Bool == true)
        let ended = try await HTTP.waitFor("\(base)/v1/jobs/\(jobs[0])", "job 1 canceled") { $0.json["state"] as? String == "canceled" }
        // By the time the job is canceled, its process has exited and been reaped.
        #expect(kill(first, 0) == -1 && errno == ESRCH, "process \(first) still exists after the cancel was confirmed")
        // The second job took the slot only after the first one's end: bound at or after it.
        let second = try await HTTP.waitFor("\(base)/v1/jobs/\(jobs[1])", "job 2 running") { $0.json["state"] as? String == "running" }
        let endedMs = try #require(ended.json["finished_ms"] as? Int)
        let boundMs = try #require(((second.json["history"] as? [[String: Any]])?.first)?["bound_ms"] as? Int)
        #expect(boundMs >= endedMs, "job 2 bound at \(boundMs), before job 1 ended at \(endedMs)")
        #expect(try await waitForPids(pids, count: 2).count == 2)
        let metrics = try await MetricsText.fetch(port: port)
        #expect(metrics[MetricsText.series("muster_cancels_settled_total", "how", "confirmed")] == 1)

        _ = try await HTTP.request("DELETE", "\(base)/v1/jobs/\(jobs[1])")
        try await HTTP.waitFor("\(base)/v1/jobs/\(jobs[1])", "job 2 canceled") { $0.json["state"] as? String == "canceled" }
        _ = try await agent.stop()
        #expect(try await serve.stop() == 0)
    }

    /// The pids the job processes wrote, once there are `count` of them.
    func waitForPids(_ path: String, count: Int) async throws -> [pid_t] {
        for _ in 0..<600 {
            let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
            let pids = text.split(separator: "\n").compactMap { pid_t($0) }
            if pids.count >= count { return pids }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw CancellationError()
    }
}
