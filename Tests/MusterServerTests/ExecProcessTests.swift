import Foundation
@testable import MusterBackends
import MusterServer
import Testing

@Suite struct ExecProcessTests {
    /// Runs a command to its outcome (bounded generously against hangs).
    func run(_ command: [String], input: String = "", timeout: Duration = .seconds(60), cancelAfterStart: Bool = false) async throws -> ExecProcess.Outcome {
        try await start(command, input: input, timeout: timeout, cancelAfterStart: cancelAfterStart).outcome
    }

    func start(_ command: [String], input: String = "", timeout: Duration = .seconds(60), cancelAfterStart: Bool = false) async throws -> (outcome: ExecProcess.Outcome, pid: pid_t) {
        let stream = AsyncStream<ExecProcess.Outcome>.makeStream()
        let p = try ExecProcess.start(command: command, input: Data(input.utf8), timeout: timeout, outputLimit: 1000) { outcome in
            stream.continuation.yield(outcome)
            stream.continuation.finish()
        }
        if cancelAfterStart { p.cancel() }
        for await outcome in stream.stream { return (outcome, p.pid) }
        struct NoOutcome: Error {}
        throw NoOutcome()
    }

    @Test func jobJSONGoesInAndResultComesOut() async throws {
        let outcome = try await run(["cat"], input: #"{"prompt":"a cat"}"#)
        #expect(outcome == .exited(output: Data(#"{"prompt":"a cat"}"#.utf8)))
    }

    @Test func nonZeroExitFailsWithTheTailOfStderr() async throws {
        let outcome = try await run(["sh", "-c", "echo starting >&2; echo 'CUDA out of memory' >&2; exit 3"])
        #expect(outcome == .failed(status: "exit status 3", stderrTail: "starting\nCUDA out of memory"))
    }

    @Test func timeoutKillsTheWholeProcessGroup() async throws {
        // The shell's background child is in the job's process group; it must die with the job.
        let (outcome, pid) = try await start(["sh", "-c", "sleep 30 & sleep 30"], timeout: .milliseconds(200))
        guard case .timedOut = outcome else {
            Issue.record("expected a timeout, got \(outcome)")
            return
        }
        // Wait (bounded) for the group to be gone: kill(-pgid, 0) fails with ESRCH once it is.
        let deadline = ContinuousClock.now + .seconds(20)
        while kill(-pid, 0) == 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(kill(-pid, 0) == -1 && errno == ESRCH)
    }

    @Test func cancelKillsTheJob() async throws {
        let outcome = try await run(["sleep", "30"], cancelAfterStart: true)
        #expect(outcome == .canceled)
    }

    @Test func oversizeOutputIsCutOff() async throws {
        let outcome = try await run(["sh", "-c", "yes muster | head -c 100000"])
        #expect(outcome == .outputTooLarge(limit: 1000))
    }

    @Test func missingProgramIsAClearError() {
        #expect(throws: ExecError.self) {
            _ = try ExecProcess.start(command: ["muster-no-such-program"], input: Data(), timeout: .seconds(1)) { _ in }
        }
    }
}
