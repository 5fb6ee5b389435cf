import ArgumentParser
import Foundation
import Histogram
import Logging
import MusterProtocol
import MusterServer
import MusterTransport

/// A child process of the end-to-end benchmark (`muster serve`, `muster-bench e2e-backends`, a
/// transport load client, redis): stdin is a pipe the bench writes lines to and closes, stdout is
/// read line by line on a dedicated thread (blocking reads retried on EINTR; FileHandle reads trap
/// when SIGCHLD interrupts them), stderr goes to a temporary file shown when the child fails.
final class E2EChild: @unchecked Sendable {
    // @unchecked Sendable: `process`, `input` and `stderrFile` are set in init and then only used
    // through their own thread-safe calls; the lines live in a Locked.
    let process = Process()
    let label: String
    private let input = Pipe()
    private let output = Pipe()
    private let stderrFile: URL
    private let state = Locked<(lines: [String], ended: Bool, exited: Bool, waiters: [CheckedContinuation<Void, Never>])>(([], false, false, []))
    private static let living = Locked<[E2EChild]>([])

    /// Kills every child still running: a benchmark that fails must not leave processes behind.
    static func killAll() {
        for child in living.withLock({ $0 }) where child.process.isRunning { kill(child.pid, SIGKILL) }
    }

    init(_ label: String, executable: URL, _ arguments: [String]) throws {
        self.label = label
        stderrFile = FileManager.default.temporaryDirectory.appendingPathComponent("muster-e2e-\(UUID().uuidString).err")
        _ = FileManager.default.createFile(atPath: stderrFile.path, contents: nil)
        process.executableURL = executable
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env["SWIFT_BACKTRACE"] = "enable=no"
        process.environment = env
        process.standardInput = input
        process.standardOutput = output
        process.standardError = try FileHandle(forWritingTo: stderrFile)
        // Waiting with waitUntilExit spins a core in Foundation's run loop; the handler does not.
        process.terminationHandler = { [weak self] _ in self?.wake { $0.exited = true } }
        try process.run()
        // The child has its copies; without closing ours the reader would never see end of file.
        try? output.fileHandleForWriting.close()
        try? input.fileHandleForReading.close()
        Self.living.withLock { $0.append(self) }
        let fd = output.fileHandleForReading.fileDescriptor
        Thread.detachNewThread { [self] in
            var buffer: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, 4096) }
                if n < 0, errno == EINTR { continue }
                if n <= 0 { break }
                buffer.append(contentsOf: chunk[0..<n])
                var complete: [String] = []
                while let nl = buffer.firstIndex(of: 10) {
                    complete.append(String(decoding: buffer[..<nl], as: UTF8.self))
                    buffer.removeSubrange(...nl)
                }
                if !complete.isEmpty { wake { $0.lines.append(contentsOf: complete) } }
            }
            wake { $0.ended = true }
        }
    }

    /// The real `muster` (``MusterBinary/muster()``), e.g. `serve` or `agent`.
    static func muster(_ label: String, _ arguments: [String]) throws -> E2EChild {
        try E2EChild(label, executable: try MusterBinary.muster(), arguments)
    }

    /// This harness in one of its internal roles, e.g. `e2e-backends`.
    static func harness(_ label: String, _ arguments: [String]) throws -> E2EChild {
        try E2EChild(label, executable: MusterBinary.harness, arguments)
    }

    var pid: Int32 { process.processIdentifier }

    private func wake(_ change: (inout (lines: [String], ended: Bool, exited: Bool, waiters: [CheckedContinuation<Void, Never>])) -> Void) {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            change(&s)
            defer { s.waiters = [] }
            return s.waiters
        }
        for w in waiters { w.resume() }
    }

    /// The first stdout line starting with `prefix`, waiting for it at most `bound`.
    func line(_ prefix: String, within bound: Duration = .seconds(120), anywhere: Bool = false) async throws -> String {
        let deadline = ContinuousClock.now + bound
        while true {
            let (found, ended) = state.withLock { s in
                (s.lines.first { anywhere ? $0.contains(prefix) : $0.hasPrefix(prefix) }, s.ended)
            }
            if let found { return found }
            if ended || ContinuousClock.now > deadline {
                let err = (try? String(contentsOf: stderrFile, encoding: .utf8)) ?? ""
                throw ValidationError(
                    "\(label): \(ended ? "ended" : "gave up after \(bound)") before printing '\(prefix)'; stderr:\n\(err.suffix(2000))")
            }
            // Re-checked every 50 ms. Not a continuation raced against a sleeper in a task group:
            // when the sleeper won before the other child registered, the group waited for
            // output that a silent child never wrote.
            try? await Task.sleep(for: .milliseconds(50))
        }
    }

    func send(_ line: String) {
        input.fileHandleForWriting.write(Data((line + "\n").utf8))
    }

    /// Closes stdin (the children end on it) and waits for the exit.
    func finish() async -> Int32 {
        try? input.fileHandleForWriting.close()
        return await waitExit()
    }

    func signal(_ sig: Int32) { if process.isRunning { kill(pid, sig) } }

    func waitExit() async -> Int32 {
        while !state.withLock({ $0.exited }) {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let done = state.withLock { s -> Bool in
                    if s.exited { return true }
                    s.waiters.append(c)
                    return false
                }
                if done { c.resume() }
            }
        }
        try? FileManager.default.removeItem(at: stderrFile)
        return process.terminationStatus
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; the child binds it right after).
func freeLoopbackPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw ValidationError("socket() failed: \(errno)") }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa -> Bool in
            Glibc.bind(fd, sa, len) == 0 && getsockname(fd, sa, &len) == 0
        }
    }
    guard bound else { throw ValidationError("cannot bind a loopback port: \(errno)") }
    return Int(UInt16(bigEndian: addr.sin_port))
}

/// Latency percentiles in microseconds.
struct Percentiles {
    var p50 = 0.0, p90 = 0.0, p99 = 0.0, p999 = 0.0, max = 0.0, count = 0

    init() {}

    init(_ h: Histogram<UInt64>) {
        guard h.totalCount > 0 else { return }
        p50 = Double(h.valueAtPercentile(50))
        p90 = Double(h.valueAtPercentile(90))
        p99 = Double(h.valueAtPercentile(99))
        p999 = Double(h.valueAtPercentile(99.9))
        max = Double(h.max)
        count = Int(h.totalCount)
    }

    /// "p50 / p90 / p99 / p99.9" in ms.
    var text: String {
        guard count > 0 else { return "-" }
        return [p50, p90, p99, p999].map { String(format: "%.2f", $0 / 1000) }.joined(separator: " / ") + " ms"
    }
}

/// CLOCK_MONOTONIC in nanoseconds: one time line for the bench and its child processes.
func monotonicNanos() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}

func e2eHistogram() -> Histogram<UInt64> {
    Histogram<UInt64>(highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three)
}

/// Flow control for submitters: at most `limit` jobs submitted and not yet final.
final class JobWindow: Sendable {
    private let state: Locked<(free: Int, waiters: [(Int, CheckedContinuation<Void, Never>)])>

    init(limit: Int) { state = Locked((limit, [])) }

    func acquire(_ n: Int) async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s.waiters.isEmpty, s.free >= n {
                    s.free -= n
                    return true
                }
                s.waiters.append((n, c))
                return false
            }
            if now { c.resume() }
        }
    }

    func release(_ n: Int) {
        let ready = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.free += n
            var out: [CheckedContinuation<Void, Never>] = []
            while let (need, c) = s.waiters.first, s.free >= need {
                s.free -= need
                s.waiters.removeFirst()
                out.append(c)
            }
            return out
        }
        for c in ready { c.resume() }
    }
}

/// Jobs left to submit, shared by the submitting tasks.
final class Remaining: Sendable {
    private let count: Locked<Int>
    init(_ n: Int) { count = Locked(n) }

    /// Takes up to `n`; 0 when none are left.
    func take(_ n: Int) -> Int {
        count.withLock { r in
            let k = min(n, r)
            r -= k
            return k
        }
    }
}

/// Follows every job event a watcher client receives: receive times of `bound` and of the final
/// event, and how many final events each job got.
final class JobTracker: Sendable {
    struct Track {
        var batch: BatchID
        var bound: ContinuousClock.Instant?
        var final: ContinuousClock.Instant?
        var finals = 0
        var state: JobState?
        var backend: BackendID?
        /// Failed, and the event gave no reason.
        var reasonless = false
    }
    private struct State {
        var jobs: [JobID: Track] = [:]
        var submitted: [BatchID: ContinuousClock.Instant] = [:]
        var uniqueFinals = 0
        var target = Int.max
        var waiter: CheckedContinuation<Void, Never>?
        /// The wait's bound passed: a waiter that registers only now must not wait.
        var expired = false
    }
    private let state = Locked(State())
    let window: JobWindow?

    init(window: JobWindow?) { self.window = window }

    func submitted(_ batch: BatchID, at t: ContinuousClock.Instant) {
        state.withLock { $0.submitted[batch] = t }
    }

    func record(_ e: CoordinatorToClient.JobEvent, at t: ContinuousClock.Instant) {
        let (newFinal, waiter) = state.withLock { s -> (Bool, CheckedContinuation<Void, Never>?) in
            var track = s.jobs[e.job] ?? Track(batch: e.batch)
            if track.bound == nil, e.event == .bound || e.state == .bound || e.state == .running || e.state.isFinal {
                track.bound = t
            }
            var newFinal = false
            if e.state.isFinal {
                if track.finals == 0 {
                    track.final = t
                    s.uniqueFinals += 1
                    newFinal = true
                }
                track.finals += 1
                track.state = e.state
                track.backend = e.backend ?? track.backend
                if e.state == .failed, (e.error?.message ?? "").isEmpty { track.reasonless = true }
            }
            s.jobs[e.job] = track
            if newFinal, s.uniqueFinals >= s.target, let w = s.waiter {
                s.waiter = nil
                return (true, w)
            }
            return (newFinal, nil)
        }
        if newFinal { window?.release(1) }
        waiter?.resume()
    }

    /// Waits until `count` distinct jobs have ended, or `bound` passed; returns whether they did.
    func waitFinals(_ count: Int, within bound: Duration) async -> Bool {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                    let done = self.state.withLock { s -> Bool in
                        if s.uniqueFinals >= count || s.expired { return true }
                        s.target = count
                        s.waiter = c
                        return false
                    }
                    if done { c.resume() }
                }
                return true
            }
            group.addTask {
                try? await Task.sleep(for: bound)
                return false
            }
            let first = await group.next() ?? false
            if !first {
                // Unblock the waiter so the group can end.
                let w = self.state.withLock { s -> CheckedContinuation<Void, Never>? in
                    s.expired = true
                    defer { s.waiter = nil }
                    return s.waiter
                }
                w?.resume()
            }
            group.cancelAll()
            return first
        }
    }

    /// Final events seen per job, for jobs with at least one; and the jobs that failed without a reason.
    func finalCounts() -> [JobID: Int] {
        state.withLock { s in s.jobs.compactMapValues { $0.finals > 0 ? $0.finals : nil } }
    }

    func reasonless() -> [JobID] {
        state.withLock { s in s.jobs.filter { $0.value.reasonless }.map(\.key).sorted() }
    }

    struct Summary {
        var finals = 0
        var duplicates = 0
        var outcomes: [JobState: Int] = [:]
        var backends = Set<BackendID>()
        var bind = Percentiles()
        var complete = Percentiles()
        var first: ContinuousClock.Instant?
        var last: ContinuousClock.Instant?
    }

    /// Latencies from each batch's submit time to the job's `bound` and final events.
    func summary() -> Summary {
        state.withLock { s in
            var out = Summary()
            var bind = e2eHistogram(), complete = e2eHistogram()
            out.first = s.submitted.values.min()
            for track in s.jobs.values {
                guard track.finals > 0 else { continue }
                out.finals += 1
                out.duplicates += track.finals - 1
                if let state = track.state { out.outcomes[state, default: 0] += 1 }
                if let b = track.backend { out.backends.insert(b) }
                if let f = track.final, out.last.map({ f > $0 }) ?? true { out.last = f }
                guard let submitted = s.submitted[track.batch] else { continue }
                if let b = track.bound { _ = bind.record(UInt64(max(0, (b - submitted).nanosecondsInt / 1000))) }
                if let f = track.final { _ = complete.record(UInt64(max(0, (f - submitted).nanosecondsInt / 1000))) }
            }
            out.bind = Percentiles(bind)
            out.complete = Percentiles(complete)
            return out
        }
    }
}

func padded(_ s: String, _ width: Int) -> String {
    s.count >= width ? s + " " : s + String(repeating: " ", count: width - s.count)
}
