import Dispatch
import Foundation
@testable import MusterBackends
import MusterProtocol
import Testing

/// `muster submit`, `muster status`, `muster models load` and `muster drain` as real processes against a real
/// `muster serve` on 127.0.0.1 port 0.
@Suite struct SubmitCommandTests {
    /// Two fast simulated backends that can both run video jobs.
    static let twoVideoBackends = """
        [{"name": "sim-a", "kind": "simulated", "features": ["frameinterps", "video"],
          "job_seconds": {"default": 0.05}},
         {"name": "sim-b", "kind": "simulated", "features": ["frameinterps", "image", "video"], "models": ["m1"],
          "job_seconds": {"default": 0.05}, "model_load_seconds": 0.05}]
        """

    /// Starts `muster serve` and waits until it listens; returns it with its coordinator URL.
    func serve(backends: String = twoVideoBackends, settings: [String] = [], port: Int = 0) async throws -> (MusterProcess, String) {
        let server = try MusterProcess(
            ["serve", "--listen", "127.0.0.1:\(port)", "--set", "backends=\(backends)"] + settings.flatMap { ["--set", $0] })
        let serving = try await server.waitForLog("muster serving")
        let port = try #require((serving["listen.port"] as? String).flatMap(Int.init))
        return (server, "ws://127.0.0.1:\(port)")
    }

    /// Runs a `muster` client command to its end and returns its exit status and its whole output
    /// (both pipes read to end of file, so nothing is still in flight when this returns).
    func run(_ arguments: [String], bound: Duration = .seconds(120)) async throws
        -> (status: Int32, output: String, errors: String)
    {
        let process = Process()
        process.executableURL = MusterProcess.executable
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env["SWIFT_BACKTRACE"] = "enable=no"
        process.environment = env
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        // A guard against a hang, not a timing assertion: a command still running then is killed.
        let watchdog = Task {
            try await Task.sleep(for: bound)
            if process.isRunning {
                Issue.record("muster \(arguments.joined(separator: " ")) still running after \(bound); killed")
                process.terminate()
            }
        }
        defer { watchdog.cancel() }
        async let output = Self.readToEnd(out.fileHandleForReading)
        async let errors = Self.readToEnd(err.fileHandleForReading)
        let (o, e) = (await output, await errors)
        return (await Self.exitStatus(process), o, e)
    }

    /// Waits for `process` off the cooperative pool. `waitUntilExit`, not a terminationHandler:
    /// Foundation frees a Process, its pipes and its environment only once `waitUntilExit` has
    /// run (a reduced program with no Muster code leaks them under LeakSanitizer otherwise).
    static func exitStatus(_ process: Process) async -> Int32 {
        await withCheckedContinuation { c in
            DispatchQueue.global().async {
                process.waitUntilExit()
                c.resume(returning: process.terminationStatus)
            }
        }
    }

    /// `muster status --json`, decoded.
    func statusJSON(_ url: String) async throws -> CoordinatorToClient.StatusReport {
        let json = try await run(["status", "--coordinator", url, "--json"])
        guard
            case .statusReport(let report) = try CoordinatorToClient.decode(
                json.output.trimmingCharacters(in: .whitespacesAndNewlines))
        else { throw MusterProcess.Failure(description: "not a status_report: \(json.output)") }
        return report
    }

    static func readToEnd(_ handle: FileHandle) async -> String {
        await withCheckedContinuation { c in
            DispatchQueue.global().async {
                c.resume(returning: String(decoding: handle.readDataToEndOfFile(), as: UTF8.self))
            }
        }
    }

    @Test func submitWaitRunsEveryJobAndSaysWhere() async throws {
        let (server, url) = try await serve()
        let result = try await run([
            "submit", "--coordinator", url, "--kind", "video", "--needs", "video,frameinterps", "--count", "4",
            "--wait",
        ])
        #expect(result.status == 0, "\(result.errors)")
        let summary = result.output.split(separator: "\n").filter {
            $0.range(of: #"^  job \d+ +completed +on sim-[ab] \(-[12]\)"#, options: .regularExpression) != nil
        }
        #expect(summary.count == 4, "\(result.output)")
        #expect(result.output.contains("4 completed"))
        #expect(try await server.stop() == 0)
    }

    @Test func submitWaitCompletesAVideoBatchOnTheEmbeddedDefault() async throws {
        // No configuration at all, as Scripts/run starts it (only the port is free-picked):
        // the video job runs on local-video (30 s, like a real GPU).
        let server = try MusterProcess(["serve", "--listen", "127.0.0.1:0"])
        let serving = try await server.waitForLog("muster serving")
        let port = try #require((serving["listen.port"] as? String).flatMap(Int.init))
        let result = try await run([
            "submit", "--coordinator", "ws://127.0.0.1:\(port)", "--kind", "video", "--needs", "video,frameinterps",
            "--count", "1", "--wait",
        ])
        #expect(result.status == 0, "\(result.errors)")
        #expect(result.output.contains("on local-video (-2)"), "\(result.output)")
        #expect(try await server.stop() == 0)
    }

    @Test func submitWaitExitsOneWhenAJobFails() async throws {
        let flaky =
            #"[{"name": "flaky", "kind": "simulated", "features": ["video"], "failure_rate": 1, "#
            + #""job_seconds": {"default": 0.05}}]"#
        let (server, url) = try await serve(backends: flaky, settings: ["routing.max_attempts=1"])
        let result = try await run(["submit", "--coordinator", url, "--kind", "video", "--count", "1", "--wait"])
        #expect(result.status == 1, "\(result.output)\n\(result.errors)")
        #expect(result.output.contains("1 failed"), "\(result.output)")
        #expect(result.output.contains("flaky (-1)"), "\(result.output)")
        #expect(try await server.stop() == 0)
    }

    /// A ComfyUI workflow in a temporary file.
    func workflowFile(_ text: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("muster-wf-\(UUID().uuidString).json").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func submitWorkflowRefusesABadFileBeforeQueueingAnything() async throws {
        let (server, url) = try await serve()
        let notJSON = try workflowFile("{not json")
        var r = try await run(["submit", "--coordinator", url, "--workflow", notJSON])
        #expect(r.status != 0 && r.errors.contains("is not JSON"), "\(r.errors)")
        let noInputs = try workflowFile(#"{"1": {"class_type": "EmptyImage"}}"#)
        r = try await run(["submit", "--coordinator", url, "--workflow", noInputs])
        #expect(r.status != 0 && r.errors.contains("workflow.1.inputs: required member is missing"), "\(r.errors)")
        let ui = try workflowFile(#"{"nodes": [], "links": [], "version": 0.4}"#)
        r = try await run(["submit", "--coordinator", url, "--workflow", ui])
        #expect(r.status != 0 && r.errors.contains("Export (API)"), "\(r.errors)")
        let status = try await run(["status", "--coordinator", url, "--json"])
        #expect(status.output.contains(#""queued":0"#) && status.output.contains(#""gated":0"#), "\(status.output)")
        #expect(try await server.stop() == 0)
    }

    /// `--print-config` makes the checks `serve` makes, the token file included, and exits 2
    /// naming the key where `serve` would.
    @Test func printConfigRefusesWhatServeRefuses() async throws {
        let empty = FileManager.default.temporaryDirectory.appendingPathComponent("muster-empty-\(UUID().uuidString)").path
        try "".write(toFile: empty, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: empty) }
        let printed = try await run(["serve", "--print-config", "--token-file", empty])
        #expect(printed.status == 2 && printed.errors.contains("auth.token_file"), "\(printed.errors)")
        let served = try await run(["serve", "--listen", "127.0.0.1:0", "--token-file", empty])
        #expect(served.status == 2 && served.errors.contains("auth.token_file"), "\(served.errors)")
        let fine = try await run(["serve", "--print-config"])
        #expect(fine.status == 0 && fine.output.contains(#""listen""#), "\(fine.errors)")
    }

    @Test func submitWorkflowNeedsItsNodeClasses() async throws {
        let (server, url) = try await serve()
        let wf = try workflowFile(#"{"1": {"class_type": "EmptyImage", "inputs": {}}, "2": {"class_type": "RIFE VFI", "inputs": {}}}"#)
        let r = try await run(["submit", "--coordinator", url, "--workflow", wf, "--seed", "7", "--count", "2", "--wait", "--json"])
        #expect(r.status == 1)
        #expect(r.output.contains(#""missing_nodes":["EmptyImage","RIFE VFI"]"#), "\(r.output)")
        #expect(r.output.contains(#""reasons":["missing_nodes"]"#), "\(r.output)")
        #expect(try await server.stop() == 0)
    }

    /// `--wait` rides through a coordinator killed and restarted on its job store: it redials,
    /// follows the batch again and prints exactly one final line per job.
    @Test func submitWaitRidesThroughACoordinatorRestart() async throws {
        let store = FileManager.default.temporaryDirectory
            .appendingPathComponent("muster-ride-\(UUID().uuidString)/muster.sqlite").path
        defer { try? FileManager.default.removeItem(atPath: (store as NSString).deletingLastPathComponent) }
        let slow = #"[{"name": "slow", "kind": "simulated", "features": ["image"], "job_seconds": {"default": 1}}]"#
        let settings = ["store.url=sqlite://\(store)"]
        var (server, url) = try await serve(backends: slow, settings: settings)
        let port = try #require(Int(url.split(separator: ":").last ?? ""))
        let submit = try MusterProcess([
            "submit", "--coordinator", url, "--kind", "image", "--count", "4", "--wait", "--reconnect-seconds", "120",
        ])
        try await submit.waitUntil("the first job completed") { $0.standardOutput.contains("job 1  completed") }
        #expect(try await server.stop(signal: SIGKILL) != 0)
        (server, _) = try await serve(backends: slow, settings: settings, port: port)
        let out = try await Self.expectOneCompletedLinePerJob(submit, jobs: 1...4)
        #expect(out.contains("batch 1: 4 completed"), "\(out)")
        #expect(try await server.stop() == 0)
    }

    /// A waiting submitter started while its coordinator is down (restarting) keeps dialling for
    /// up to `--timeout`; without `--wait` the refusal ends it at once.
    @Test func submitWaitRetriesItsFirstDialWhileTheCoordinatorIsDown() async throws {
        var (server, url) = try await serve()
        let port = try #require(Int(url.split(separator: ":").last ?? ""))
        #expect(try await server.stop() == 0)
        let refused = try await run(["submit", "--coordinator", url, "--kind", "image"])
        #expect(refused.status == 1)
        #expect(refused.errors.contains("connection_failed"), "\(refused.errors)")
        let submit = try MusterProcess(["submit", "--coordinator", url, "--kind", "image", "--count", "2", "--wait", "--timeout", "120"])
        // It has dialled and been refused at least once before the coordinator comes back.
        try await Task.sleep(for: .milliseconds(700))
        #expect(!submit.exitedWithAllOutput, "\(submit.standardError)")
        (server, _) = try await serve(port: port)
        try await Self.expectOneCompletedLinePerJob(submit, jobs: 1...2)
        #expect(try await server.stop() == 0)
    }

    /// Waits for `muster submit --wait` to exit 0 and checks it printed exactly one `completed`
    /// line per job: live, or from the snapshot after a reconnect when the job ended while the
    /// link was down. Returns its output.
    @discardableResult
    static func expectOneCompletedLinePerJob(_ submit: MusterProcess, jobs: ClosedRange<Int>) async throws -> String {
        let status = try await submit.waitForExit(timeout: .seconds(120))
        let out = submit.standardOutput
        #expect(status == 0, "\(out)\n\(submit.standardError)")
        for job in jobs {
            let finals = out.split(separator: "\n").filter {
                $0.hasPrefix("job \(job)  completed") || $0.hasPrefix("job \(job)  snapshot  completed")
            }
            #expect(finals.count == 1, "job \(job): \(finals.count) final lines in\n\(out)")
        }
        return out
    }

    @Test func submitWaitSaysWhatAHeldJobWaitedFor() async throws {
        // `late` stays loading until the test sends it SIGUSR1, once the gate holds the job for it:
        // no race with a loaded machine's process start-up (nor with the gate's window, far above
        // what a stalled test process may take to send it).
        let (server, url) = try await serve(backends: "[]", settings: ["gate.window_seconds=600"])
        let late = try MusterProcess([
            "agent", "--coordinator", url, "--name", "late", "--features", "video", "--announce-after", "3600s",
            "--job-seconds", "50ms", "--log-format", "json", "--log-level", "debug",
        ])
        try await late.waitForLog("registered")
        async let submitted = run(["submit", "--coordinator", url, "--kind", "video", "--needs", "video", "--wait"])
        let readyz = url.replacingOccurrences(of: "ws://", with: "http://") + "/readyz"
        try await within(.seconds(120), "the gate holds the job for late") {
            while true {
                let r = try await HTTP.get(readyz)
                let waiting = (r.json["waiting"] as? [[String: Any]])?.first?["backends"] as? [[String: Any]]
                if waiting?.contains(where: { $0["name"] as? String == "late" }) == true { return }
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        late.send(signal: SIGUSR1)
        let result = try await submitted
        #expect(result.status == 0, "\(result.errors)")
        #expect(result.output.contains("completed on late (1)"), "\(result.output)")
        #expect(result.output.contains("waited for [video]: late (1) loading"), "\(result.output)")
        #expect(result.output.contains("released: announced"), "\(result.output)")
        #expect(try await late.stop() == 0)
        #expect(try await server.stop() == 0)
    }

    @Test func submitWaitJSONPrintsTheEventsAndASummary() async throws {
        let (server, url) = try await serve()
        let result = try await run([
            "submit", "--coordinator", url, "--kind", "image", "--count", "2", "--wait", "--json",
        ])
        #expect(result.status == 0, "\(result.errors)")
        let lines = result.output.split(separator: "\n").map(String.init)
        let events = lines.compactMap { line -> CoordinatorToClient.JobEvent? in
            guard case .job(let e)? = try? CoordinatorToClient.decode(line) else { return nil }
            return e
        }
        #expect(events.filter { $0.state == .completed }.count == 2, "\(result.output)")
        let summary = try #require(
            lines.last.flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) } as? [String: Any])
        #expect(summary["type"] as? String == "summary")
        #expect(summary["completed"] as? Int == 2)
        // Each job's run time, whether its `started` came as an event or in its snapshot.
        let jobs = summary["jobs"] as? [[String: Any]] ?? []
        #expect(jobs.count == 2 && jobs.allSatisfy { $0["duration_ms"] is Int }, "\(summary)")
        #expect(try await server.stop() == 0)
    }

    @Test func submitWithoutWaitPrintsTheBatchAndItsJobs() async throws {
        let (server, url) = try await serve()
        let text = try await run([
            "submit", "--coordinator", url, "--kind", "image", "--count", "3", "--priority", "-5",
        ])
        #expect(text.status == 0, "\(text.errors)")
        #expect(text.output.contains("3 jobs accepted"), "\(text.output)")
        let json = try await run([
            "submit", "--coordinator", url.replacingOccurrences(of: "ws://", with: "http://"), "--kind", "image",
            "--json",
        ])
        #expect(json.status == 0, "\(json.errors)")
        let accepted = try Wire.Accepted.decode(json.output.trimmingCharacters(in: .whitespacesAndNewlines))
        #expect(accepted.jobs.count == 1)
        #expect(try await server.stop() == 0)
    }

    @Test func statusPrintsEveryBackend() async throws {
        let (server, url) = try await serve()
        let text = try await run(["status", "--coordinator", url])
        #expect(text.status == 0, "\(text.errors)")
        #expect(text.output.contains("sim-a"), "\(text.output)")
        #expect(text.output.contains("sim-b"), "\(text.output)")
        let report = try await statusJSON(url)
        #expect(Set(report.backends.map(\.name)) == ["sim-a", "sim-b"])
        #expect(try await server.stop() == 0)
    }

    @Test func modelsLoadNamesTheBackendsAndRefusesUnknownModels() async throws {
        let (server, url) = try await serve()
        let ok = try await run(["models", "load", "m1", "--coordinator", url])
        #expect(ok.status == 0, "\(ok.errors)")
        #expect(ok.output.contains("sim-b (-2)"), "\(ok.output)")
        // Local backends have negative ids; they must parse as the option's value.
        let onOne = try await run(["models", "load", "m1", "--backend", "-2", "--coordinator", url])
        #expect(onOne.status == 0, "\(onOne.errors)")
        #expect(onOne.output.contains("sim-b (-2)"), "\(onOne.output)")
        let unknown = try await run(["models", "load", "no-such-model", "--coordinator", url])
        #expect(unknown.status == 1)
        #expect(unknown.errors.contains("muster: unknown_model:"), "\(unknown.errors)")
        let badBackend = try await run(["models", "load", "m1", "--backend", "42", "--coordinator", url])
        #expect(badBackend.status == 1)
        #expect(badBackend.errors.contains("muster: unknown_backend:"), "\(badBackend.errors)")
        #expect(try await server.stop() == 0)
    }

    @Test func drainTakesANegativeIDAndTheBackendShowsDraining() async throws {
        let (server, url) = try await serve()
        let drained = try await run(["drain", "-1", "--coordinator", url])
        #expect(drained.status == 0, "\(drained.errors)")
        #expect(drained.output.contains("draining sim-a (-1)"), "\(drained.output)")
        let report = try await statusJSON(url)
        #expect(report.backends.first { $0.id == BackendID(-1) }?.capabilities?.state == .draining)
        #expect(report.backends.first { $0.id == BackendID(-2) }?.capabilities?.state == .ready)
        let unknown = try await run(["drain", "42", "--coordinator", url])
        #expect(unknown.status == 1)
        #expect(unknown.errors.contains("muster: unknown_backend:"), "\(unknown.errors)")
        let notAnID = try await run(["drain", "sim-a", "--coordinator", url])
        #expect(notAnID.status == 64, "\(notAnID.errors)")
        #expect(try await server.stop() == 0)
    }

    @Test func aWrongTokenExitsOneNamingTheCode() async throws {
        let (server, url) = try await serve(settings: ["auth.token=s3cret-token"])
        let wrong = try await run(["status", "--coordinator", url, "--token", "wrong-token"])
        #expect(wrong.status == 1)
        #expect(wrong.errors.contains("muster: bad_credentials:"), "\(wrong.errors)")
        #expect(wrong.errors.contains("4001"), "\(wrong.errors)")
        #expect(!wrong.errors.contains("wrong-token"))
        let right = try await run(["status", "--coordinator", url, "--token", "s3cret-token"])
        #expect(right.status == 0, "\(right.errors)")
        #expect(try await server.stop() == 0)
    }

    @Test func paramsMustBeAJSONObject() async throws {
        let result = try await run(["submit", "--kind", "video", "--params", "[1]"])
        #expect(result.status != 0)
        #expect(result.errors.contains("--params"), "\(result.errors)")
    }

    /// Bad options are refused before any dial (exit 64), saying which and why: what the wire
    /// would refuse (a feature named twice, a seed past 2^53-1 for one of the jobs) and a
    /// timeout out of range, negative ones included.
    @Test func badOptionsAreRefusedNamingTheOption() async throws {
        let workflow = try workflowFile(#"{"1": {"class_type": "EmptyImage", "inputs": {"seed": 1}}}"#)
        let cases: [([String], String)] = [
            (["submit", "--kind", "video", "--needs", "video,video"], "--needs names 'video' twice"),
            (["submit", "--kind", "video", "--needs", "video,,frameinterps"], "--needs: '' is not a feature name"),
            (["submit", "--workflow", workflow, "--seed", "9007199254740991", "--count", "2"], "past 9007199254740991"),
            (["status", "--timeout", "0"], "--timeout must be more than 0"),
            (["status", "--timeout", "-1"], "--timeout must be more than 0"),
        ]
        for (arguments, message) in cases {
            let r = try await run(arguments)
            #expect(r.status == 64 && r.errors.contains(message), "\(arguments): \(r.status) \(r.errors)")
        }
        let last = try await run(["submit", "--workflow", workflow, "--seed", "9007199254740990", "--count", "2", "--coordinator", "ws://127.0.0.1:1", "--timeout", "0.2"])
        #expect(!last.errors.contains("--seed"), "the last two seeds fit: \(last.errors)")
    }
}
