import Foundation
import MusterTransport

/// A real `muster` process started by an end-to-end test, with its JSON log lines collected so the
/// test can wait for the event it expects (never for a fixed time).
final class MusterProcess: Sendable {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    let process: Process
    let arguments: [String]
    private let lines = Locked<[String]>([])
    private let stdoutText = Locked<String>("")
    private let changed = ChangeSignal()
    /// Pipes (stderr, stdout) read to end of file: after exit, the output is complete only then.
    private let pipesEnded = Locked(0)
    private let exitSeenAt = Locked<ContinuousClock.Instant?>(nil)
    /// The state directory made for this process alone (none when the test passed its own
    /// `XDG_STATE_HOME`): removed once the process has exited.
    private let ownState: URL?

    /// The `muster` executable built next to the test bundle (`swift build --build-tests` builds it).
    static var executable: URL {
        let bundleDir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for dir in [bundleDir, bundleDir.deletingLastPathComponent()] {
            let candidate = dir.appendingPathComponent("muster")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        }
        return bundleDir.appendingPathComponent("muster")
    }

    /// Starts `muster ARGUMENTS` with JSON logs at debug level on standard error.
    init(_ arguments: [String], environment: [String: String] = [:], stdin: Data? = nil) throws {
        self.arguments = arguments
        process = Process()
        process.executableURL = Self.executable
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env["MUSTER_LOG_FORMAT"] = env["MUSTER_LOG_FORMAT"] ?? "json"
        env["SWIFT_BACKTRACE"] = "enable=no"
        // A store of its own per process (the default sqlite path is under XDG_STATE_HOME).
        let state = FileManager.default.temporaryDirectory
            .appendingPathComponent("muster-test-state-\(UUID().uuidString)")
        env["XDG_STATE_HOME"] = state.path
        ownState = environment["XDG_STATE_HOME"] == nil ? state : nil
        for (k, v) in environment { env[k] = v }
        process.environment = env
        let err = Pipe(), out = Pipe()
        process.standardError = err
        process.standardOutput = out
        if let stdin {
            let input = Pipe()
            process.standardInput = input
            input.fileHandleForWriting.write(stdin)
            try? input.fileHandleForWriting.close()
        } else {
            process.standardInput = FileHandle.nullDevice
        }
        let partial = Locked<String>("")
        readToEnd(err.fileHandleForReading) { [weak self] data in
            guard let self else { return }
            if data.isEmpty {
                let last = partial.withLock { buffer in
                    defer { buffer = "" }
                    return buffer
                }
                if !last.isEmpty { self.lines.withLock { $0.append(last) } }
                self.pipesEnded.withLock { $0 += 1 }
                self.wake()
                return
            }
            let complete: [String] = partial.withLock { buffer in
                buffer += String(decoding: data, as: UTF8.self)
                var done: [String] = []
                while let nl = buffer.firstIndex(of: "\n") {
                    done.append(String(buffer[..<nl]))
                    buffer = String(buffer[buffer.index(after: nl)...])
                }
                return done
            }
            if !complete.isEmpty {
                self.lines.withLock { $0.append(contentsOf: complete) }
                self.wake()
            }
        }
        readToEnd(out.fileHandleForReading) { [weak self] data in
            guard let self else { return }
            if data.isEmpty {
                self.pipesEnded.withLock { $0 += 1 }
                self.wake()
                return
            }
            self.stdoutText.withLock { $0 += String(decoding: data, as: UTF8.self) }
            self.wake()
        }
        // No terminationHandler (a reduced program with one leaked its Process under
        // LeakSanitizer); `waitUntil` re-checks `isRunning` at least every 100 ms instead.
        try process.run()
    }

    deinit {
        if process.isRunning { process.terminate() }
        // Foundation frees a Process (and its pipes) only once `waitUntilExit` has run; a process
        // that was merely seen to end leaks, as a reduced program shows under LeakSanitizer.
        let process = self.process, ownState = self.ownState
        DispatchQueue.global().async {
            process.waitUntilExit()
            if let ownState { try? FileManager.default.removeItem(at: ownState) }
        }
    }

    private func wake() { changed.notify() }

    /// Every log line so far, parsed.
    var logEvents: [[String: Any]] {
        lines.withLock { $0 }.compactMap { line in
            (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
        }
    }

    var standardOutput: String { stdoutText.withLock { $0 } }
    var standardError: String { lines.withLock { $0.joined(separator: "\n") } }

    /// Waits until `condition` holds, checking after every new output, or fails after `timeout`
    /// (a generous bound against hangs, not a timing assertion).
    func waitUntil(
        _ what: String, timeout: Duration = .seconds(60), _ condition: @Sendable (MusterProcess) -> Bool
    ) async throws {
        let deadline = ContinuousClock.now + timeout
        while !condition(self) {
            if ContinuousClock.now > deadline {
                throw Failure(description: "timed out waiting for \(what) (running: \(process.isRunning), pipes at end: \(pipesEnded.withLock { $0 })); muster \(arguments.joined(separator: " ")) wrote:\n\(standardError.suffix(4000))")
            }
            if exitedWithAllOutput, !condition(self) {
                throw Failure(description: "muster exited (\(process.terminationStatus)) before \(what):\n\(standardError.suffix(4000))")
            }
            // Wake on new output, or re-check at least every 100 ms.
            await changed.wait(atMost: .milliseconds(100))
        }
    }

    /// Waits for a log line whose `msg` is `message` (and whose fields match `fields`), returning it.
    @discardableResult
    func waitForLog(_ message: String, fields: [String: String] = [:], timeout: Duration = .seconds(60)) async throws -> [String: Any] {
        try await waitUntil("log '\(message)' \(fields)", timeout: timeout) { p in p.findLog(message, fields: fields) != nil }
        return findLog(message, fields: fields)!
    }

    func findLog(_ message: String, fields: [String: String] = [:]) -> [String: Any]? {
        logEvents.first { e in
            e["msg"] as? String == message && fields.allSatisfy { e[$0.key] as? String == $0.value }
        }
    }

    /// Sends `signal` and returns at once (SIGHUP: reload).
    func send(signal: Int32) {
        if process.isRunning { kill(process.processIdentifier, signal) }
    }

    /// How many log lines so far have `msg` `message`.
    func countLogs(_ message: String) -> Int {
        logEvents.filter { $0["msg"] as? String == message }.count
    }

    /// Sends `signal` and waits for the process to exit; returns its exit status.
    @discardableResult
    func stop(signal: Int32 = SIGTERM, timeout: Duration = .seconds(30)) async throws -> Int32 {
        if process.isRunning { kill(process.processIdentifier, signal) }
        try await waitUntil("exit after signal \(signal)", timeout: timeout) { $0.exitedWithAllOutput }
        return process.terminationStatus
    }

    /// Waits for the process to exit by itself.
    func waitForExit(timeout: Duration = .seconds(60)) async throws -> Int32 {
        try await waitUntil("exit", timeout: timeout) { $0.exitedWithAllOutput }
        return process.terminationStatus
    }

    /// Exited, and both pipes read to end of file, or 5 s have passed since the exit was first
    /// seen: a child of its own still holding a pipe open must not hang the test.
    var exitedWithAllOutput: Bool {
        guard !process.isRunning else { return false }
        if pipesEnded.withLock({ $0 }) == 2 { return true }
        let now = ContinuousClock.now
        let seen = exitSeenAt.withLock { at in
            if at == nil { at = now }
            return at!
        }
        return now - seen > .seconds(5)
    }
}

/// Reads `handle` to its end on a thread of its own with blocking `read`s, handing each chunk to
/// `chunk` and then an empty one at end of file; the thread keeps the handle (and so the
/// descriptor) until then.
///
/// Not `readabilityHandler`: its dispatch read source is cancelled asynchronously, and a pipe
/// closed while that cancellation is still in flight leaves libdispatch's epoll loop with a
/// dangling registration for a descriptor number the next pipe reuses, a use after free that
/// crashed the whole test process now and then (SIGSEGV in `_dispatch_event_loop_drain`).
func readToEnd(_ handle: FileHandle, _ chunk: @escaping @Sendable (Data) -> Void) {
    Thread.detachNewThread {
        var buffer = [UInt8](repeating: 0, count: 65536)
        let fd = handle.fileDescriptor
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n > 0 {
                chunk(Data(buffer[0..<n]))
            } else if n < 0, errno == EINTR {
                continue
            } else {
                break
            }
        }
        try? handle.close()
        chunk(Data())
    }
}
