import Foundation
import Testing

/// Issue 13, the wire-only conformance suite: Tests/Conformance/conformance.py, written from
/// Protocol/README.md and its schemas alone, starts the real `muster serve` once per scenario, plays
/// raw backends and clients, and checks every message and HTTP body the daemon sends against the
/// schemas and the spec's rules. The script runs every scenario once (two at a time); each scenario
/// is reported here as its own test case, failing with the rule it broke and what the daemon sent.
@Suite(.timeLimit(.minutes(5))) struct ConformanceTests {
    /// The scenarios of conformance.py (`--list`), each named after the diagram or rule it checks.
    static let scenarios = [
        "registration", "sync_and_anti_entropy", "gate_announced", "gate_window_elapsed", "backend_lost_requeue",
        "work_stealing", "longest_first", "announce_together", "reconnect_same_incarnation", "reconnect_new_incarnation", "coordinator_restart", "failure_retryable",
        "failure_not_retryable", "attempts_exhausted", "cancel_states", "cancel_keeps_slot", "cancel_batch", "drain", "bad_token_4001",
        "forbidden_4007", "limits_per_peer",
        "no_common_version_4002", "wrong_role_4003", "hello_timeout_4004", "replaced_4005", "stale_incarnation_1008",
        "message_before_hello_1008", "second_hello_1008", "invalid_hello_1008", "subprotocol_negotiation",
        "framing_errors", "client_requests", "snapshot_times", "http_api", "readyz", "heartbeat", "shutdown_goodbye", "opaque_values",
        "readme_names",
    ]

    /// Scenarios the daemon does not pass yet, with the spec decisions (issue 13) they wait for.
    /// Listed ones are recorded as known issues; one that starts passing fails the case ("known
    /// issue not recorded") until it is taken off this list.
    static let knownDivergences: [String: Comment] = [:]

    struct Outcome: Decodable, Sendable {
        var rule: String
        var ok: Bool
        var failures: [String]
        var seconds: Double
        var daemon_log_tail: [String]?
    }

    struct Report: Decodable, Sendable {
        var scenarios: [String: Outcome]
    }

    /// One run of the whole script, shared by every case.
    static let run = Task<Report, any Error> {
        let out = try await conformanceScript(
            ["--muster", MusterProcess.executable.path, "--jobs", "2", "--json"], bound: .seconds(240))
        do {
            return try JSONDecoder().decode(Report.self, from: out)
        } catch {
            throw MusterProcess.Failure(
                description: "conformance.py printed no report: \(String(decoding: out, as: UTF8.self).suffix(2000))")
        }
    }

    @Test(arguments: scenarios) func scenario(_ name: String) async throws {
        let report = try await Self.run.value
        let outcome = try #require(report.scenarios[name], "conformance.py did not run \(name)")
        let log = (outcome.daemon_log_tail ?? []).joined(separator: "\n")
        let verdict = {
            #expect(
                outcome.ok,
                "\(name) (\(outcome.rule)):\n\(outcome.failures.joined(separator: "\n"))\n-- daemon log tail --\n\(log)"
            )
        }
        if let why = Self.knownDivergences[name] {
            withKnownIssue(why) { verdict() }
        } else {
            verdict()
        }
    }

    /// The list above is the script's: a scenario added there is not silently left out here.
    @Test func everyScenarioOfTheScriptIsACase() async throws {
        let listing = String(decoding: try await conformanceScript(["--list"], bound: .seconds(60)), as: UTF8.self)
        let names = listing.split(separator: "\n").map { String($0.split(separator: "\t")[0]) }
        #expect(names == Self.scenarios)
    }
}

/// Runs Tests/Conformance/conformance.py with Debian's python3 and returns its standard output;
/// the script is killed after `bound`.
func conformanceScript(_ arguments: [String], bound: Duration) async throws -> Data {
    let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Conformance/conformance.py").path
    return try await runPython(script, arguments, bound: bound).output
}
