import ArgumentParser
import Foundation
import MusterClient
import MusterProtocol

/// `muster status`: the coordinator's backends, queue and readiness.
struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show a coordinator's backends, queue and readiness.",
        discussion: """
            Backends are listed local ones first (negative ids): link (up, suspect, down), the \
            state they announced, features, models (* loaded), load (bound jobs / slots + \
            overqueue) and when they were last heard from. Then the jobs not yet final and what \
            readiness waits for. --json prints the status_report message as it came.
            """)

    @OptionGroup var client: ClientOptions

    @Flag(help: "Print the status_report as JSON.")
    var json = false

    func run() async throws {
        let report = try await client.withClient { try await $0.status() }
        if json {
            print(CoordinatorToClient.statusReport(report).encodedString())
        } else {
            for line in Self.render(report, nowMs: Self.wallClockMs()) { print(line) }
        }
    }

    static func wallClockMs() -> UInt64 {
        UInt64(max(0, Date().timeIntervalSince1970 * 1000))
    }

    static func gib(_ bytes: UInt64) -> String { String(format: "%.1f", Double(bytes) / 1_073_741_824) }

    /// The report as text lines.
    static func render(_ r: CoordinatorToClient.StatusReport, nowMs: UInt64) -> [String] {
        var lines: [String] = []
        let names = BackendNames(r.backends)
        var readiness = r.readiness.ready ? "ready" : "not ready (\(r.readiness.reasons.joined(separator: ", ")))"
        readiness += ", \(r.readiness.readyBackends) backend\(r.readiness.readyBackends == 1 ? "" : "s") ready"
        if r.readiness.heldJobs > 0 {
            readiness += ", \(r.readiness.heldJobs) job\(r.readiness.heldJobs == 1 ? "" : "s") held by the gate"
        }
        lines.append("coordinator: \(readiness)")
        for w in r.readiness.waiting {
            var line = "  waiting for \(Format.wait(w, names))"
            if let jobs = w.jobs { line += ", \(jobs) job\(jobs == 1 ? "" : "s")" }
            if let until = w.untilMs {
                line += ", at most \(Format.duration(ms: until > nowMs ? until - nowMs : 0)) more"
            }
            lines.append(line)
        }
        if let reclaim = r.readiness.reclaim {
            let awaited = reclaim.backends.map { "\($0.name) (\($0.id))" }.joined(separator: ", ")
            let left = Format.duration(ms: reclaim.untilMs > nowMs ? reclaim.untilMs - nowMs : 0)
            lines.append("  binding nothing until these backends link again after the restart: \(awaited), at most \(left) more")
        }
        lines.append("")
        if r.backends.isEmpty {
            lines.append("backends: none")
        } else {
            lines.append("backends:")
            var rows = [["ID", "NAME", "LINK", "STATE", "FEATURES", "MODELS", "LOAD", "LAST SEEN"]]
            for b in r.backends {
                let caps = b.capabilities
                let models =
                    (caps?.modelsAvailable ?? []).map { m in caps?.modelsLoaded.contains(m) == true ? "\(m)*" : m }
                    + (caps?.modelsLoaded ?? []).filter { !(caps?.modelsAvailable.contains($0) ?? false) }.map {
                        "\($0)*"
                    }
                let seen =
                    b.lastSeenMs.map { $0 >= nowMs ? "now" : Format.duration(ms: nowMs - $0) + " ago" } ?? "never"
                var state = caps?.state.rawValue ?? "not announced"
                if let until = b.inhibitedUntilMs, until > nowMs { state += " (inhibited)" }
                rows.append([
                    "\(b.id)", b.name + (b.local ? " (local)" : ""), b.link.rawValue, state,
                    caps.map { $0.features.isEmpty ? "-" : $0.features.joined(separator: ",") } ?? "-",
                    models.isEmpty ? "-" : models.joined(separator: ","),
                    "\(b.inFlight)/\(b.capacity)", seen,
                ])
            }
            lines += Format.table(rows, indent: "  ")
            // Devices and why a backend is not ready (ComfyUI backends report both).
            for b in r.backends {
                guard let caps = b.capabilities else { continue }
                for d in caps.devices {
                    lines.append("  \(b.name): device \(d.name) (\(d.type)), \(gib(d.vramFree)) of \(gib(d.vramTotal)) GiB free")
                }
                if let message = caps.message { lines.append("  \(b.name): \(message)") }
                if !caps.nodes.isEmpty { lines.append("  \(b.name): \(caps.nodes.count) node classes") }
            }
        }
        lines.append("")
        let q = r.queue
        lines.append("queue: \(q.queued) queued, \(q.gated) gated, \(q.bound) bound, \(q.running) running")
        if !q.byPriority.isEmpty {
            lines.append(
                "  waiting by priority: " + q.byPriority.map { "\($0.priority): \($0.jobs)" }.joined(separator: ", "))
        }
        return lines
    }
}
