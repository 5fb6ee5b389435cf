import Foundation
import MusterClient
import MusterProtocol

/// How `muster submit --wait` shows a batch: a redrawn block of one line per job on a terminal,
/// one line per event into a pipe or file, or the raw job events as JSON lines.
struct SubmitDisplay {
    enum Mode { case terminal, lines, json }

    let mode: Mode
    let batch: BatchID
    /// Lines of the live block drawn last (terminal mode), to move back over them.
    private var drawn = 0
    /// More jobs than this show as counts plus the unfinished ones.
    private let maxLiveLines = 30
    /// Width of the longest `job N`, so that the columns after it line up.
    private let jobWidth: Int

    init(mode: Mode, batch: BatchID, jobs: [JobID]) {
        self.mode = mode
        self.batch = batch
        self.jobWidth = jobs.map { "job \($0)".count }.max() ?? 0
    }

    mutating func start(_ progress: BatchProgress) {
        if mode == .lines {
            emit("following batch \(batch): \(progress.order.count) job\(progress.order.count == 1 ? "" : "s")")
        }
    }

    mutating func show(_ event: CoordinatorToClient.JobEvent, _ progress: BatchProgress, _ names: BackendNames) {
        switch mode {
        case .json: emit(CoordinatorToClient.job(event).encodedString())
        case .lines: emit(Self.line(for: event, names, jobWidth: jobWidth))
        case .terminal: redraw(progress, names)
        }
    }

    // MARK: - One line per event

    static func line(for e: CoordinatorToClient.JobEvent, _ names: BackendNames, jobWidth: Int = 0) -> String {
        var text = Format.pad("job \(e.job)", jobWidth) + "  " + Format.pad(e.event.rawValue, 9)
        let on = e.backend.map { " on \(names.label($0))" } ?? ""
        switch e.event {
        case .snapshot:
            text += " \(e.state.rawValue)\(on)"
            if let w = e.waiting { text += ", waiting for \(Format.wait(w, names))" }
            if let error = e.error { text += ": \(error.code): \(error.message)" }
        case .gated:
            text += e.waiting.map { " waiting for \(Format.wait($0, names))" } ?? ""
        case .released:
            text += e.cause.map { " (\($0))" } ?? ""
            text += on
        case .bound:
            text += "\(on), attempt \(e.attempt)"
        case .progress:
            text += on + (e.progress.map { " \(Int(($0 * 100).rounded()))%" } ?? "")
            if let m = e.message, !m.isEmpty { text += " \(m)" }
        case .requeued:
            text += " after \(e.error?.code.rawValue ?? "a failure")\(on)"
        case .failed, .canceled:
            text += on
            if let error = e.error { text += ": \(error.code): \(error.message)" }
        default:
            text += on
        }
        return text
    }

    // MARK: - Terminal

    private mutating func redraw(_ progress: BatchProgress, _ names: BackendNames) {
        var lines = [Self.header(progress)]
        var jobs = progress.orderedJobs
        if jobs.count > maxLiveLines {
            jobs = Array(jobs.filter { !$0.isFinal }.prefix(maxLiveLines))
        }
        lines += Format.table(jobs.map { Self.row($0, names) }, indent: "  ")
        var out = drawn > 0 ? "\u{1B}[\(drawn)A" : ""
        for line in lines { out += "\r\u{1B}[2K" + line + "\n" }
        // Clear what is left of a longer earlier block.
        if drawn > lines.count { out += "\u{1B}[J" }
        drawn = lines.count
        emit(out, newline: false)
    }

    static func header(_ progress: BatchProgress) -> String {
        let counts = progress.counts
        let states: [JobState] = [.queued, .gated, .bound, .running, .completed, .failed, .canceled]
        let parts = states.compactMap { s in counts[s].map { "\($0) \(s.rawValue)" } }
        return "batch \(progress.batch): "
            + (parts.isEmpty ? "waiting for the first events" : parts.joined(separator: ", "))
    }

    static func row(_ job: BatchProgress.Job, _ names: BackendNames) -> [String] {
        let state = job.state?.rawValue ?? "?"
        let backend = job.backend.map { names.label($0) } ?? "-"
        var bar = ""
        if let p = job.progress {
            let width = 20
            let filled = max(0, min(width, Int((p * Double(width)).rounded())))
            bar = "[" + String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled) + "]"
            bar += " " + Format.pad("\(Int((p * 100).rounded()))%", 4)
        } else {
            bar = String(repeating: " ", count: 27)
        }
        var tail = job.attempt > 0 ? "attempt \(job.attempt)" : ""
        if job.state == .gated, let w = job.waits.last {
            tail = "waiting for " + (w.features.isEmpty ? "announcements" : w.features.joined(separator: ", "))
        }
        if let e = job.error { tail += (tail.isEmpty ? "" : "  ") + "\(e.code)" }
        return ["job \(job.id)", state, backend, bar, tail]
    }

    // MARK: - Summary

    mutating func summary(_ progress: BatchProgress, _ names: BackendNames) {
        if mode == .json {
            emit(Format.jsonLine(Self.summaryObject(progress, names)))
            return
        }
        if mode == .terminal { emit("") }
        let counts = progress.counts
        let parts = [JobState.completed, .failed, .canceled].compactMap { s in counts[s].map { "\($0) \(s.rawValue)" } }
        let first = progress.orderedJobs.compactMap(\.firstSeenMs).min()
        let last = progress.orderedJobs.compactMap(\.endedMs).max()
        var head = "batch \(progress.batch): \(parts.joined(separator: ", "))"
        if let first, let last, last >= first { head += " in \(Format.duration(ms: last - first))" }
        emit(head)
        for job in progress.orderedJobs {
            emit("  " + Self.summaryLine(job, names, jobWidth: jobWidth))
            for extra in Self.summaryDetails(job, names) { emit("      " + extra) }
        }
    }

    static func summaryLine(_ job: BatchProgress.Job, _ names: BackendNames, jobWidth: Int = 0) -> String {
        let state = job.state?.rawValue ?? "?"
        var text = Format.pad("job \(job.id)", jobWidth) + "  " + (job.backend == nil ? state : Format.pad(state, 9))
        if let b = job.backend { text += " on \(names.label(b))" }
        if job.state == .completed {
            if let ms = job.durationMs {
                text += ", ran \(Format.duration(ms: ms))"
            } else if let ms = job.followedMs {
                text += ", ran at least \(Format.duration(ms: ms)) (it started before it was followed)"
            }
        }
        if job.attempt > 1 { text += ", attempt \(job.attempt)" }
        if let e = job.error { text += ": \(e.code): \(e.message)" }
        return text
    }

    /// Why it waited, why it was requeued, and for `no_eligible_backend` who refused it and why.
    static func summaryDetails(_ job: BatchProgress.Job, _ names: BackendNames) -> [String] {
        var lines: [String] = []
        for w in job.waits {
            var line = "waited for \(Format.wait(w, names))"
            if let cause = job.releaseCause { line += "; released: \(cause)" }
            lines.append(line)
        }
        for r in job.requeues { lines.append("requeued: \(r.code): \(r.message)") }
        if let e = job.error, e.code == .noEligibleBackend, let details = e.details,
            let d = try? Wire.NoEligibleBackend(details: details)
        {
            if !d.missingFeatures.isEmpty {
                lines.append("no ready backend has [\(d.missingFeatures.joined(separator: ", "))]")
            }
            for r in d.refusals {
                var line = "refused by \(r.name) (\(r.backend)): \(r.reasons.joined(separator: ", "))"
                if !r.missingFeatures.isEmpty { line += " [\(r.missingFeatures.joined(separator: ", "))]" }
                lines.append(line)
            }
        }
        return lines
    }

    static func summaryObject(_ progress: BatchProgress, _ names: BackendNames) -> [String: Any] {
        let counts = progress.counts
        let jobs: [[String: Any]] = progress.orderedJobs.map { job in
            var o: [String: Any] = [
                "job": job.id.rawValue, "state": job.state?.rawValue ?? "unknown", "attempt": job.attempt,
            ]
            if let b = job.backend {
                o["backend"] = b.rawValue
                if let name = names.name(b) { o["backend_name"] = name }
            }
            if let ms = job.durationMs { o["duration_ms"] = ms }
            if !job.waits.isEmpty {
                o["waited"] = job.waits.map { w -> [String: Any] in
                    var wo: [String: Any] = [
                        "features": w.features,
                        "backends": w.backends.map { ["id": $0.id.rawValue, "name": $0.name, "reason": $0.reason] },
                    ]
                    if let model = w.model { wo["model"] = model }
                    return wo
                }
            }
            if let cause = job.releaseCause { o["released"] = cause }
            if !job.requeues.isEmpty { o["requeues"] = job.requeues.map(Format.errorObject) }
            if let e = job.error { o["error"] = Format.errorObject(e) }
            return o
        }
        return [
            "type": "summary", "batch": progress.batch.rawValue, "jobs": jobs,
            "completed": counts[.completed] ?? 0, "failed": counts[.failed] ?? 0, "canceled": counts[.canceled] ?? 0,
        ]
    }

    private func emit(_ text: String, newline: Bool = true) {
        FileHandle.standardOutput.write(Data((newline ? text + "\n" : text).utf8))
    }
}
