import Foundation
import Synchronization

/// Runs one job as a child process: the job's JSON on stdin, the result read from stdout, the
/// tail of stderr kept for the failure message. The child gets its own process group so that a
/// timeout or a cancel kills everything it started (a `sh -c` and its children alike).
///
/// Each run has one helper thread that feeds stdin, drains stdout and stderr and reaps the child;
/// the outcome is handed to `completion` exactly once, on that thread. GPU jobs are few and long,
/// so a thread per running job is cheap next to what it supervises.
public final class ExecProcess: Sendable {
    public enum Outcome: Sendable, Equatable {
        /// Exit status 0; `output` is everything the child wrote to stdout.
        case exited(output: Data)
        /// Non-zero exit or killed by a signal; `stderrTail` is the last bytes of stderr.
        case failed(status: String, stderrTail: String)
        /// Ran longer than the timeout and was killed.
        case timedOut(stderrTail: String)
        /// Canceled by `cancel()` and killed.
        case canceled
        /// Stdout grew past the output limit; the child was killed.
        case outputTooLarge(limit: Int)
    }

    public let pid: pid_t
    // The wake pipe lives as long as this object (the helper thread holds a reference), so a
    // late cancel() never writes into a closed pipe.
    private let wakeRead: Int32
    private let wakeWrite: Int32
    private let canceled = Atomic<Bool>(false)

    /// Starts `command` (program and arguments; the program is looked up on PATH).
    public static func start(
        command: [String], input: Data, timeout: Duration, outputLimit: Int = 1 << 20,
        environment: [String: String]? = nil, completion: @escaping @Sendable (Outcome) -> Void
    ) throws -> ExecProcess {
        guard !command.isEmpty else { throw ExecError(message: "empty command") }
        var stdinPipe: [Int32] = [0, 0], stdoutPipe: [Int32] = [0, 0], stderrPipe: [Int32] = [0, 0], wake: [Int32] = [0, 0]
        guard makePipe(&stdinPipe), makePipe(&stdoutPipe), makePipe(&stderrPipe), makePipe(&wake)
        else { throw ExecError(message: "pipe: \(String(cString: strerror(errno)))") }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, stdinPipe[0], 0)
        posix_spawn_file_actions_adddup2(&actions, stdoutPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, stderrPipe[1], 2)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // A process group of its own, so kill(-pid) reaches the children it starts too.
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        posix_spawnattr_setpgroup(&attributes, 0)
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for s in [SIGPIPE, SIGTERM, SIGINT, SIGCHLD] { sigaddset(&defaults, s) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)

        let env = (environment ?? ProcessInfo.processInfo.environment).map { "\($0.key)=\($0.value)" }
        var pid: pid_t = 0
        let spawnResult = withCStrings(command) { argv in
            withCStrings(env) { envp in
                posix_spawnp(&pid, argv[0]!, &actions, &attributes, argv, envp)
            }
        }
        for fd in [stdinPipe[0], stdoutPipe[1], stderrPipe[1]] { close(fd) }
        guard spawnResult == 0 else {
            for fd in [stdinPipe[1], stdoutPipe[0], stderrPipe[0], wake[0], wake[1]] { close(fd) }
            throw ExecError(message: "cannot start '\(command[0])': \(String(cString: strerror(spawnResult)))")
        }
        let process = ExecProcess(pid: pid, wakeRead: wake[0], wakeWrite: wake[1])
        let supervisor = Supervisor(
            pid: pid, stdin: stdinPipe[1], stdout: stdoutPipe[0], stderr: stderrPipe[0], wakeRead: wake[0],
            input: input, deadline: ContinuousClock.now + timeout, outputLimit: outputLimit, process: process)
        let thread = Thread { completion(supervisor.run()) }
        thread.name = "muster-exec-\(pid)"
        thread.start()
        return process
    }

    private init(pid: pid_t, wakeRead: Int32, wakeWrite: Int32) {
        self.pid = pid
        self.wakeRead = wakeRead
        self.wakeWrite = wakeWrite
    }

    deinit {
        close(wakeRead)
        close(wakeWrite)
    }

    /// Kills the job's process group; the outcome becomes `.canceled` unless it already ended.
    public func cancel() {
        guard !canceled.exchange(true, ordering: .acquiringAndReleasing) else { return }
        var byte: UInt8 = 1
        _ = write(wakeWrite, &byte, 1)
    }

    var isCanceled: Bool { canceled.load(ordering: .acquiring) }
}

public struct ExecError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// The helper thread's loop: feeds stdin, drains the outputs, enforces the deadline, reaps.
private struct Supervisor: @unchecked Sendable {
    // @unchecked Sendable: the struct is moved to the one helper thread and used only there.
    let pid: pid_t
    let stdin: Int32
    let stdout: Int32
    let stderr: Int32
    let wakeRead: Int32
    let input: Data
    let deadline: ContinuousClock.Instant
    let outputLimit: Int
    let process: ExecProcess

    static let stderrTailBytes = 4096

    func run() -> ExecProcess.Outcome {
        var output = Data()
        var errTail = Data()
        var inputOffset = 0
        var stdinOpen = true
        var stdoutOpen = true, stderrOpen = true
        var killedFor: ExecProcess.Outcome?
        _ = fcntl(stdin, F_SETFL, fcntl(stdin, F_GETFL) | O_NONBLOCK)
        if input.isEmpty {
            close(stdin)
            stdinOpen = false
        }
        var buffer = [UInt8](repeating: 0, count: 65536)

        while stdoutOpen || stderrOpen {
            var fds: [pollfd] = [
                pollfd(fd: stdoutOpen ? stdout : -1, events: Int16(POLLIN), revents: 0),
                pollfd(fd: stderrOpen ? stderr : -1, events: Int16(POLLIN), revents: 0),
                pollfd(fd: stdinOpen ? stdin : -1, events: Int16(POLLOUT), revents: 0),
                pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0),
            ]
            let remaining = deadline - ContinuousClock.now
            let waitMs = killedFor == nil ? max(0, Int32(clamping: remaining.components.seconds * 1000 + remaining.components.attoseconds / 1_000_000_000_000_000)) : 1000
            let n = poll(&fds, nfds_t(fds.count), waitMs)
            if n < 0, errno == EINTR { continue }
            if killedFor == nil {
                if process.isCanceled {
                    killedFor = .canceled
                } else if ContinuousClock.now >= deadline {
                    killedFor = .timedOut(stderrTail: "")
                } else if output.count > outputLimit {
                    killedFor = .outputTooLarge(limit: outputLimit)
                }
                if killedFor != nil { kill(-pid, SIGKILL) }
            }
            if fds[3].revents != 0 { _ = read(wakeRead, &buffer, buffer.count) }
            if stdinOpen, fds[2].revents != 0 {
                let written = input.withUnsafeBytes { raw in
                    write(stdin, raw.baseAddress! + inputOffset, raw.count - inputOffset)
                }
                if written > 0 { inputOffset += written }
                if written < 0 && errno != EAGAIN || inputOffset >= input.count {
                    close(stdin)
                    stdinOpen = false
                }
            }
            for (index, fd) in [(0, stdout), (1, stderr)] where fds[index].revents != 0 {
                let got = read(fd, &buffer, buffer.count)
                if got > 0 {
                    if index == 0 {
                        if output.count <= outputLimit { output.append(contentsOf: buffer[0..<got]) }
                    } else {
                        errTail.append(contentsOf: buffer[0..<got])
                        if errTail.count > Self.stderrTailBytes { errTail.removeFirst(errTail.count - Self.stderrTailBytes) }
                    }
                } else if got == 0 || (errno != EAGAIN && errno != EINTR) {
                    close(fd)
                    if index == 0 { stdoutOpen = false } else { stderrOpen = false }
                }
            }
        }
        if stdinOpen { close(stdin) }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        // The group may still hold children that closed their outputs; end them with the job.
        kill(-pid, SIGKILL)

        let tail = String(decoding: errTail, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        switch killedFor {
        case .canceled?: return .canceled
        case .timedOut?: return .timedOut(stderrTail: tail)
        case .outputTooLarge(let limit)?: return .outputTooLarge(limit: limit)
        default: break
        }
        if process.isCanceled { return .canceled }
        let exited = status & 0x7f == 0
        if exited, (status >> 8) & 0xff == 0 { return .exited(output: output) }
        let how = exited ? "exit status \((status >> 8) & 0xff)" : "killed by signal \(status & 0x7f)"
        return .failed(status: how, stderrTail: tail)
    }
}

/// Calls `body` with a NULL-terminated C array of C strings.
private func withCStrings<R>(_ strings: [String], _ body: ([UnsafeMutablePointer<CChar>?]) -> R) -> R {
    var pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
    pointers.append(nil)
    defer { for p in pointers { free(p) } }
    return body(pointers)
}

/// pipe(2) with both ends close-on-exec, so one job's pipes never leak into another job's child.
/// (Glibc's pipe2 is not visible to Swift without _GNU_SOURCE.)
private func makePipe(_ fds: inout [Int32]) -> Bool {
    guard pipe(&fds) == 0 else { return false }
    for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
    return true
}
