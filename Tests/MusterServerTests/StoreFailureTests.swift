import Foundation
import MusterProtocol
import Testing

/// The job store failing under a running `muster serve`: a full disk (a small tmpfs filled up)
/// and a file system remounted read-only. Nothing unwritten is acknowledged, new work is refused
/// with `store_unavailable`, `/readyz` says why, and all of it recovers when the store writes again.
/// Needs root for `mount` (CI and `Scripts/test` run as root); without it the test fails, saying so.
@Suite(.serialized) struct StoreFailureTests {
    let e2e = EndToEndTests()

    /// A tmpfs of `size` at a new directory; unmounted by `unmount()`.
    struct Tmpfs {
        let path: String

        init(size: String) throws {
            path = FileManager.default.temporaryDirectory.appendingPathComponent("muster-tmpfs-\(UUID().uuidString)").path
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            try Self.run(["mount", "-t", "tmpfs", "-o", "size=\(size)", "tmpfs", path])
        }

        func remount(_ mode: String) throws { try Self.run(["mount", "-o", "remount,\(mode)", path]) }

        func unmount() {
            try? Self.run(["umount", "-l", path])
            try? FileManager.default.removeItem(atPath: path)
        }

        /// Fills the file system with a file `filler` until it is full.
        func fill() throws {
            let fd = open("\(path)/filler", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            guard fd >= 0 else { throw Failure("cannot create the filler file") }
            defer { close(fd) }
            let block = [UInt8](repeating: 0x5a, count: 4096)
            while block.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) > 0 {}
        }

        func unfill() throws { try FileManager.default.removeItem(atPath: "\(path)/filler") }

        static func run(_ arguments: [String]) throws {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = arguments
            let err = Pipe()
            p.standardError = err
            try p.run()
            p.waitUntilExit()
            guard p.terminationStatus == 0 else {
                let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                throw Failure("\(arguments.joined(separator: " ")) failed (the store failure tests need root for mount): \(text)")
            }
        }
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
        init(_ d: String) { description = d }
    }

    let batch = #"{"jobs": [{"kind": "image", "count": 3}]}"#

    func serve(_ fs: Tmpfs, port: Int = 0) async throws -> (MusterProcess, Int) {
        try await e2e.coordinator(
            [
                "--set", "store.url=sqlite://\(fs.path)/muster.sqlite",
                "--set", #"backends=[{"name": "quick", "kind": "simulated", "features": ["image"], "job_seconds": {"default": 0.05}}]"#,
            ], port: port)
    }

    @Test func aFullDiskRefusesNewWorkAcknowledgesNothingUnwrittenAndRecovers() async throws {
        let fs = try Tmpfs(size: "2m")
        defer { fs.unmount() }
        let (serve, port) = try await serve(fs)
        let base = "http://127.0.0.1:\(port)"
        let first = try await HTTP.post("\(base)/v1/batches", batch)
        #expect(first.status == 201)
        _ = try await e2e.finishedBatch(port: port, batch: 1)
        try fs.fill()
        // This batch cannot be written: its answer waits, it is not acknowledged, until the test
        // frees space (after its checks, which a loaded machine may stretch past 30 s).
        let pending = Task { try await HTTP.post("\(base)/v1/batches", batch, timeout: 600) }
        try await serve.waitForLog("job store cannot write: accepting no new work until it can; nothing unwritten is acknowledged")
        let refused = try await HTTP.post("\(base)/v1/batches", batch)
        #expect(refused.status == 503)
        #expect(refused.json["code"] as? String == "store_unavailable", "\(refused.text)")
        let ready = try await HTTP.get("\(base)/readyz")
        #expect(ready.status == 503)
        #expect((ready.json["reasons"] as? [String])?.contains("store_unavailable") == true, "\(ready.text)")
        let metrics = try await HTTP.get("\(base)/metrics").text
        #expect(metrics.contains("muster_store_available 0"), "the gauge says so")
        // Nothing shows the unwritten batch, nor the first batch's state, while it waits for the disk.
        for path in ["batches/1", "batches/2", "jobs/1", "jobs/4"] {
            let read = try await HTTP.get("\(base)/v1/\(path)")
            #expect(read.status == 503 && read.json["code"] as? String == "store_unavailable", "\(path): \(read.text)")
        }
        // The live view is answered at once.
        #expect(try await HTTP.get("\(base)/v1/backends").status == 200)
        // Space again: the held batch is written and answered, new work is accepted.
        try fs.unfill()
        let answered = try await pending.value
        #expect(answered.status == 201, "\(answered.text)")
        try await serve.waitForLog("job store writes again")
        let after = try await HTTP.post("\(base)/v1/batches", batch)
        #expect(after.status == 201)
        for b in 1...3 {
            let jobs = try await e2e.finishedBatch(port: port, batch: b)
            #expect(jobs.count == 3 && jobs.allSatisfy { $0.state == "completed" }, "batch \(b): \(jobs)")
        }
        #expect(try await serve.stop() == 0)
    }

    /// A binding sent to an agent that the store never took (the disk was full), then a crash:
    /// after the restart the job is queued again, and the agent, still running it, claims it back
    /// in its `hello` (Protocol 6.5). It keeps running there and ends once, on its first attempt.
    @Test func aBindingTheDiskNeverTookIsClaimedBackByItsAgentAfterACrash() async throws {
        let fs = try Tmpfs(size: "4m")
        defer { fs.unmount() }
        let settings = [
            "--set", "store.url=sqlite://\(fs.path)/muster.sqlite", "--set", "backends=[]", "--set", "gate.window_seconds=600",
        ]
        // A port outside the ephemeral range: the restart binds it again (TestDatabase.freePort).
        var (serve, port) = try await e2e.coordinator(settings, port: try TestDatabase.freePort())
        let base = "http://127.0.0.1:\(port)"
        // Linked and loading: the gate holds the video for it until it announces (SIGUSR1). Its
        // job runs past the crash and the restart however slow the test process is to get there.
        let keeper = try await e2e.agent(port: port, name: "keeper", features: "video", announceAfter: "3600s", jobSeconds: "20s")
        let submitted = try await HTTP.post("\(base)/v1/batches", #"{"jobs": [{"kind": "video", "needs": ["video"]}]}"#)
        #expect(submitted.status == 201, "the batch is on disk: \(submitted.text)")
        let job = try #require((submitted.json["jobs"] as? [Int])?.first)
        try fs.fill()
        keeper.send(signal: SIGUSR1)
        try await serve.waitForLog("job store cannot write: accepting no new work until it can; nothing unwritten is acknowledged")
        // The job's own read would wait for the disk (503 meanwhile); the live gauge does not.
        try await HTTP.waitFor("\(base)/metrics", "job \(job) running on keeper") {
            $0.text.contains(#"muster_jobs{state="running"} 1"#)
        }
        let read = try await HTTP.get("\(base)/v1/jobs/\(job)")
        #expect(read.status == 503 && read.json["code"] as? String == "store_unavailable", "\(read.text)")
        #expect(try await serve.stop(signal: SIGKILL) != 0)
        try fs.unfill()

        (serve, _) = try await e2e.coordinator(settings, port: port)
        try await keeper.waitUntil("re-registration") { p in
            p.logEvents.filter { $0["msg"] as? String == "registered" }.count >= 2
        }
        let registered = keeper.logEvents.filter { $0["msg"] as? String == "registered" }
        #expect(registered.last?["bindings"] as? String == "1", "welcome lists the claimed job: \(registered)")
        let done = try await HTTP.waitFor("\(base)/v1/jobs/\(job)", "job \(job) final") {
            ["completed", "failed", "canceled"].contains($0.json["state"] as? String ?? "")
        }
        #expect(done.json["state"] as? String == "completed" && done.json["attempt"] as? Int == 1, "\(done.text)")
        #expect((done.json["history"] as? [[String: Any]])?.count == 1, "\(done.text)")
        let metrics = try await HTTP.get("\(base)/metrics").text
        #expect(metrics.contains("muster_jobs_claimed_total 1"), "the claim is counted")
        try await serve.waitForLog("a backend claimed a job it ran before the restart (its binding was never stored)")
        #expect(try await keeper.stop() == 0)
        #expect(try await serve.stop() == 0)
    }

    /// `muster submit --wait` rides through a restart whose store opens late: the coordinator is
    /// killed, its file system turns read-only, and it starts again and retries the store. Until
    /// the store opens the batch is not known yet (`store_unavailable`, not `unknown_batch`), so
    /// the client keeps resubscribing, and once the store opens it prints one final line per job.
    @Test func submitWaitRidesThroughARestartWhoseStoreOpensLate() async throws {
        let fs = try Tmpfs(size: "8m")
        defer { fs.unmount() }
        let slow = [
            "--set", "store.url=sqlite://\(fs.path)/muster.sqlite",
            "--set", #"backends=[{"name": "slow", "kind": "simulated", "features": ["image"], "job_seconds": {"default": 1}}]"#,
        ]
        var (serve, port) = try await e2e.coordinator(slow)
        let submit = try MusterProcess([
            "submit", "--coordinator", "ws://127.0.0.1:\(port)", "--kind", "image", "--count", "3", "--wait",
            "--reconnect-seconds", "120",
        ])
        try await submit.waitUntil("the first job completed") { $0.standardOutput.contains("job 1  completed") }
        #expect(try await serve.stop(signal: SIGKILL) != 0)
        try fs.remount("ro")
        (serve, _) = try await e2e.coordinator(slow, port: port)
        try await serve.waitForLog("job store unavailable: accepting no work until it opens")
        let lookup = try await HTTP.get("http://127.0.0.1:\(port)/v1/batches/1")
        #expect(lookup.status == 503 && lookup.json["code"] as? String == "store_unavailable", "\(lookup.text)")
        try fs.remount("rw")
        try await SubmitCommandTests.expectOneCompletedLinePerJob(submit, jobs: 1...3)
        #expect(try await serve.stop() == 0)
    }

    /// `muster submit --wait` whose `accepted` never came: the batch could not be written (the
    /// disk was full) when the coordinator was killed. The submitter dials the restarted one,
    /// submits again under its own batch key (the first submission was never acknowledged, so it
    /// is a new batch), follows it on that new link and prints one final line per job. It used
    /// to follow on the dead link and exit 1 (`link_closed`) while the batch ran unfollowed.
    @Test func submitWaitWhoseAnswerWasLostSubmitsAgainAndFollowsTheNewLink() async throws {
        let fs = try Tmpfs(size: "2m")
        defer { fs.unmount() }
        var (server, port) = try await serve(fs)
        #expect(try await HTTP.post("http://127.0.0.1:\(port)/v1/batches", batch).status == 201)
        _ = try await e2e.finishedBatch(port: port, batch: 1)
        try fs.fill()
        let submit = try MusterProcess([
            "submit", "--coordinator", "ws://127.0.0.1:\(port)", "--kind", "image", "--count", "3", "--wait",
            "--reconnect-seconds", "120",
        ])
        try await server.waitForLog("job store cannot write: accepting no new work until it can; nothing unwritten is acknowledged")
        #expect(try await server.stop(signal: SIGKILL) != 0)
        try fs.unfill()
        (server, _) = try await serve(fs, port: port)
        let status = try await submit.waitForExit(timeout: .seconds(120))
        let out = submit.standardOutput
        #expect(status == 0, "\(out)\n\(submit.standardError)")
        let finals = out.split(separator: "\n").filter { $0.hasPrefix("job ") && $0.contains("  completed") }
        #expect(finals.count == 3, "\(out)")
        #expect(out.contains(": 3 completed"), "\(out)")
        #expect(try await server.stop() == 0)
    }

    /// A store that cannot be opened at startup (its file system is read-only): the coordinator
    /// serves probes, refuses work and backends, retries, and takes over once it opens.
    @Test func aStoreThatCannotOpenIsRetriedAndNothingIsAcceptedMeanwhile() async throws {
        let fs = try Tmpfs(size: "8m")
        defer { fs.unmount() }
        try fs.remount("ro")
        let (serve, port) = try await serve(fs)
        let base = "http://127.0.0.1:\(port)"
        try await serve.waitForLog("job store unavailable: accepting no work until it opens")
        #expect(try await HTTP.get("\(base)/healthz").status == 200)
        let refused = try await HTTP.post("\(base)/v1/batches", batch)
        #expect(refused.status == 503 && refused.json["code"] as? String == "store_unavailable", "\(refused.text)")
        let ready = try await HTTP.get("\(base)/readyz")
        #expect((ready.json["reasons"] as? [String])?.contains("store_unavailable") == true, "\(ready.text)")
        // Nothing is known until the store opens: a batch or job asked for is not "unknown" but
        // not known yet, so a client following it after a restart retries instead of giving up.
        for path in ["batches/1", "jobs/1"] {
            let lookup = try await HTTP.get("\(base)/v1/\(path)")
            #expect(lookup.status == 503 && lookup.json["code"] as? String == "store_unavailable", "\(path): \(lookup.text)")
        }
        // An agent's hello is refused for now (close 1013); it keeps redialling.
        let agent = try await e2e.agent(port: port, name: "patient", features: "image", waitForRegistration: false)
        try await serve.waitForLog("job store unavailable: accepting no work until it opens")
        try fs.remount("rw")
        try await serve.waitForLog("job store opened")
        try await agent.waitForLog("registered", timeout: .seconds(60))
        let accepted = try await HTTP.post("\(base)/v1/batches", batch)
        #expect(accepted.status == 201, "\(accepted.text)")
        let jobs = try await e2e.finishedBatch(port: port, batch: 1)
        #expect(jobs.count == 3 && jobs.allSatisfy { $0.state == "completed" })
        try await agent.stop()
        #expect(try await serve.stop() == 0)
    }
}
