import Foundation
import Logging
import MusterTransport

#if canImport(Glibc)
    import Glibc
#endif

/// Tests are quiet unless something is wrong.
func testLogger() -> Logger {
    var l = Logger(label: "muster.transport.test")
    l.logLevel = .error
    return l
}

/// Collects events from the loop thread; tests wait for the event they expect (bounded), never
/// for a fixed time.
final class Recorder<Event: Sendable>: Sendable {
    private struct Waiter {
        let predicate: @Sendable ([Event]) -> Bool
        let continuation: CheckedContinuation<Bool, Never>
    }
    private struct State {
        var events: [Event] = []
        var waiters: [UInt64: Waiter] = [:]
        var nextWaiter: UInt64 = 0
    }
    private let state = Locked(State())

    init() {}

    var events: [Event] { state.withLock { $0.events } }

    func append(_ event: Event) {
        let ready = state.withLock { s -> [CheckedContinuation<Bool, Never>] in
            s.events.append(event)
            var ready: [CheckedContinuation<Bool, Never>] = []
            for (id, w) in s.waiters where w.predicate(s.events) {
                ready.append(w.continuation)
                s.waiters.removeValue(forKey: id)
            }
            return ready
        }
        for c in ready { c.resume(returning: true) }
    }

    /// True as soon as `predicate` holds for the events so far; false after `timeout`.
    func wait(timeout: Duration = .seconds(30), until predicate: @escaping @Sendable ([Event]) -> Bool) async -> Bool {
        let id = state.withLock { s -> UInt64 in
            s.nextWaiter += 1
            return s.nextWaiter
        }
        let timer = Task {
            try? await Task.sleep(for: timeout)
            let c = self.state.withLock { $0.waiters.removeValue(forKey: id)?.continuation }
            c?.resume(returning: false)
        }
        defer { timer.cancel() }
        return await withCheckedContinuation { (c: CheckedContinuation<Bool, Never>) in
            let satisfied = state.withLock { s -> Bool in
                if predicate(s.events) { return true }
                s.waiters[id] = Waiter(predicate: predicate, continuation: c)
                return false
            }
            if satisfied { c.resume(returning: true) }
        }
    }
}

/// What a test WebSocket handler saw.
enum WSEvent: Sendable, Equatable {
    case opened(ConnectionID)
    case text(ConnectionID, String)
    case binary(ConnectionID, Int)
    case closed(ConnectionID, UInt16, String, willReconnect: Bool)
    case dialFailed(ConnectionID)
}

extension Recorder where Event == WSEvent {
    /// A handler that records everything and, when `echo`, sends every message back.
    func handler(echo: Bool = false, acceptBinary: Bool = false) -> WebSocketHandler {
        WebSocketHandler(
            opened: { _, info in self.append(.opened(info.id)) },
            text: { t, id, text in
                self.append(.text(id, text))
                if echo { t.send(text: text, to: id) }
            },
            binary: acceptBinary ? binaryHandler(echo: echo) : nil,
            closed: { _, e in self.append(.closed(e.id, e.code.rawValue, e.reason, willReconnect: e.willReconnect)) },
            dialFailed: { _, id, _ in self.append(.dialFailed(id)) })
    }

    private func binaryHandler(echo: Bool) -> @Sendable (isolated Transport, ConnectionID, [UInt8]) -> Void {
        { t, id, bytes in
            self.append(.binary(id, bytes.count))
            if echo { t.send(binary: bytes, to: id) }
        }
    }

    func openedIDs() -> [ConnectionID] {
        events.compactMap { if case .opened(let id) = $0 { return id } else { return nil } }
    }

    func waitOpened(count: Int = 1) async -> Bool {
        await wait { $0.filter { if case .opened = $0 { return true } else { return false } }.count >= count }
    }

    func waitClosed(code: UInt16? = nil) async -> Bool {
        await wait {
            $0.contains {
                if case .closed(_, let c, _, _) = $0 { return code == nil || c == code }
                return false
            }
        }
    }

    func waitText(_ text: String) async -> Bool {
        await wait { $0.contains { if case .text(_, text) = $0 { return true } else { return false } } }
    }

    func waitDialFailed() async -> Bool {
        await wait { $0.contains { if case .dialFailed = $0 { true } else { false } } }
    }

    func closeCodes() -> [UInt16] {
        events.compactMap { if case .closed(_, let c, _, _) = $0 { return c } else { return nil } }
    }
}

/// A listening TCP socket on 127.0.0.1 with a port the kernel picked; the caller owns `fd`.
func loopbackListener(backlog: Int32 = 16) throws -> (fd: Int32, port: Int) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw POSIXError(.EIO) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = 0
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { p in
            bind(fd, p, len) == 0 && listen(fd, backlog) == 0 && getsockname(fd, p, &len) == 0
        }
    }
    guard ok else {
        close(fd)
        throw POSIXError(.EADDRINUSE)
    }
    return (fd, Int(UInt16(bigEndian: addr.sin_port)))
}

/// A blocking TCP socket to 127.0.0.1 for tests that must misbehave (never read, never finish a
/// handshake) or speak raw HTTP. Every read has a receive timeout, so a bug fails, not hangs.
final class RawSocket {
    let fd: Int32

    init(port: Int, receiveTimeout: Duration = .seconds(30), receiveBuffer: Int? = nil) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EIO) }
        if let receiveBuffer {
            var size = Int32(receiveBuffer)
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var tv = timeval(tv_sec: Int(receiveTimeout.components.seconds), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        try Self.connect(fd, port: port)
    }

    /// A connected TCP socket to 127.0.0.1:`port`, owned by the caller.
    static func connected(port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EIO) }
        try connect(fd, port: port)
        return fd
    }

    /// Connects `fd` to 127.0.0.1:`port`; closes it and throws when refused.
    private static func connect(_ fd: Int32, port: Int) throws {
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard rc == 0 else {
            close(fd)
            throw POSIXError(.ECONNREFUSED)
        }
    }

    deinit { close(fd) }

    func write(_ text: String) { write(Array(text.utf8)) }

    func write(_ bytes: [UInt8]) {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0, errno == EINTR { continue }
            if n <= 0 { return }
            off += n
        }
    }

    /// Sends all of `bytes`; false when the connection failed first (reset, broken pipe).
    func writeAll(_ bytes: [UInt8]) -> Bool {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0, errno == EINTR { continue }
            if n <= 0 { return false }
            off += n
        }
        return true
    }

    /// recv, retried when a signal (SIGCHLD from a test's child process) interrupts it.
    private func receive(_ buf: inout [UInt8]) -> Int {
        while true {
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0, errno == EINTR { continue }
            return n
        }
    }

    /// Reads until EOF (or timeout/error). Returns what arrived and whether EOF was seen.
    func readToEnd() -> (bytes: [UInt8], eof: Bool) {
        var all: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = receive(&buf)
            if n == 0 { return (all, true) }
            if n < 0 { return (all, false) }
            all += buf[..<n]
        }
    }

    /// Reads until `marker` appears in the data (or timeout/EOF).
    func read(until marker: String) -> String {
        var all: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        let m = Array(marker.utf8)
        while true {
            let n = receive(&buf)
            if n <= 0 { break }
            all += buf[..<n]
            if all.count >= m.count,
                (0...(all.count - m.count)).contains(where: { all[$0..<($0 + m.count)].elementsEqual(m) })
            {
                break
            }
        }
        return String(decoding: all, as: UTF8.self)
    }

    /// Sends a WebSocket upgrade (`version` nil: no `Sec-WebSocket-Version` header).
    func writeUpgrade(path: String, subprotocol: String?, version: String? = "13") {
        var req = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        req += "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        if let version { req += "Sec-WebSocket-Version: \(version)\r\n" }
        if let subprotocol { req += "Sec-WebSocket-Protocol: \(subprotocol)\r\n" }
        write(req + "\r\n")
    }

    /// Sends a WebSocket upgrade and reads the 101 response head.
    func webSocketHandshake(path: String = "/", subprotocol: String? = nil) -> String {
        writeUpgrade(path: path, subprotocol: subprotocol)
        return read(until: "\r\n\r\n")
    }

    /// Sends a WebSocket upgrade the server refuses and reads its answer, head and JSON body.
    func refusedUpgrade(path: String = "/v1/ws", subprotocol: String?, version: String? = "13") -> String {
        writeUpgrade(path: path, subprotocol: subprotocol, version: version)
        return read(until: "}")
    }

    /// One masked client frame.
    func writeFrame(opcode: UInt8, _ payload: [UInt8], fin: Bool = true) {
        var f: [UInt8] = [(fin ? 0x80 : 0) | opcode]
        let n = payload.count
        if n < 126 {
            f.append(0x80 | UInt8(n))
        } else if n < 65536 {
            f += [0x80 | 126, UInt8(n >> 8), UInt8(n & 0xff)]
        } else {
            f.append(0x80 | 127)
            for i in (0..<8).reversed() { f.append(UInt8((n >> (8 * i)) & 0xff)) }
        }
        let mask: [UInt8] = [1, 2, 3, 4]
        f += mask
        for (i, b) in payload.enumerated() { f.append(b ^ mask[i % 4]) }
        write(f)
    }
}

/// A raw HTTP/1.1 exchange with `Connection: close`; returns status and body.
func httpRequest(port: Int, _ method: String, _ path: String, body: String? = nil) throws -> (
    status: Int, body: String, head: String
) {
    let s = try RawSocket(port: port)
    var req = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    if let body {
        req += "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
    } else {
        req += "\r\n"
    }
    s.write(req)
    let text = String(decoding: s.readToEnd().bytes, as: UTF8.self)
    guard let headEnd = text.range(of: "\r\n\r\n") else { return (0, "", text) }
    let head = String(text[..<headEnd.lowerBound])
    let status = Int(head.split(separator: " ").dropFirst().first ?? "") ?? 0
    return (status, String(text[headEnd.upperBound...]), head)
}

/// A fresh temporary directory, removed by the caller.
func temporaryDirectory() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("muster-transport-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// Runs a program to completion, returning its exit status and combined output. Output goes to
/// a temporary file rather than a pipe: reading a pipe with FileHandle traps when a signal
/// (SIGCHLD of another test's child) interrupts the read.
@discardableResult
func run(_ executable: String, _ arguments: [String], environment: [String: String]? = nil) throws -> (
    status: Int32, output: String
) {
    let out = FileManager.default.temporaryDirectory.appendingPathComponent("muster-run-\(UUID().uuidString).log")
    _ = FileManager.default.createFile(atPath: out.path, contents: nil)
    defer { try? FileManager.default.removeItem(at: out) }
    let handle = try FileHandle(forWritingTo: out)
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = arguments
    if let environment { p.environment = environment }
    p.standardOutput = handle
    p.standardError = handle
    p.standardInput = FileHandle.nullDevice
    try p.run()
    p.waitUntilExit()
    try handle.close()
    let data = try Data(contentsOf: out)
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// The first executable called `name` on PATH.
func which(_ name: String) -> String? {
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
        let path = "\(dir)/\(name)"
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    return nil
}

/// Runs blocking work (a child process, a blocking socket read) on its own thread so the few
/// cooperative threads of a 2-core machine stay free for the tests running beside it.
func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, any Error>) in
        Thread.detachNewThread {
            c.resume(with: Result { try body() })
        }
    }
}

/// A server and client on one transport (one loop), torn down with `shutdown()`.
func makeTransport(_ configure: (inout TransportConfiguration) -> Void = { _ in }) throws -> Transport {
    var c = TransportConfiguration()
    configure(&c)
    return try Transport(configuration: c, logger: testLogger())
}
