import ArgumentParser
import Foundation
import Logging
import MusterTransport

/// `muster-bench transport`: raw transport throughput and memory on loopback.
///
/// The measured side is a server ``Transport`` in this process. The load comes from a child
/// process (`--role client`) with its own transport, so the two event loops run on separate
/// cores and the server's RSS is not mixed with the client's. Echo rates are counted by the
/// client (a round trip ends there); one-way rates and RSS are measured in the server.
struct BenchTransport: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "transport",
        abstract:
            "Echo round trips/s (1 and 100 connections), one-way messages/s and RSS per idle link, plain and TLS; HTTP client requests/s."
    )

    enum Role: String, ExpressibleByArgument { case server, column, client }
    enum Mode: String, ExpressibleByArgument { case echo, oneway, idle, http }

    @Option(
        help:
            "server (default: the whole benchmark); column and client are internal (one measured server, one load generator)."
    )
    var role: Role = .server
    @Option(help: "Seconds per echo measurement.")
    var seconds: Double = 3
    @Option(help: "Messages in the one-way measurement.")
    var messages: Int = 1_000_000
    @Option(help: "Idle links for the RSS measurement.")
    var idleLinks: Int = 1000

    @Flag(help: "Measure only the HTTP client (Transport.request), not the WebSocket table.")
    var httpOnly = false

    @Flag(help: .hidden) var tls = false

    // Client role only.
    @Option(help: .hidden) var url: String = ""
    @Option(help: .hidden) var mode: Mode = .echo
    @Option(help: .hidden) var connections: Int = 1

    func run() async throws {
        switch role {
        case .client: try await runClient()
        case .column: try await runColumn()
        case .server: try await runServer()
        }
    }

    // MARK: - Server side (the measured process)

    /// Runs one column (plain, then TLS) per fresh server process, so RSS deltas are not helped
    /// or hurt by the heap of an earlier measurement, and prints the table.
    private func runServer() async throws {
        if !httpOnly { try await runWebSocketTable() }
        try await runHTTPClientTable()
    }

    private func runWebSocketTable() async throws {
        var columns: [[String]] = []
        for secure in [false, true] {
            var args = ["--seconds", "\(seconds)", "--messages", "\(messages)", "--idle-links", "\(idleLinks)"]
            if secure { args.append("--tls") }
            let line = try await BenchChild(role: .column, args).result()
            columns.append(line.split(separator: "|").map(String.init))
        }
        let names = [
            "echo round trips/s, 1 connection", "echo round trips/s, 100 connections",
            "one-way messages/s, 1 connection",
            "RSS per idle link (\(idleLinks) links)",
        ]
        print(
            "transport (loopback; server measured in its own process, load from a child process; 32-byte text messages)"
        )
        print(pad("", 40) + pad("plain", 14) + "tls")
        for (i, name) in names.enumerated() {
            let plain = columns[0].count > i ? columns[0][i] : "?"
            let tls = columns[1].count > i ? columns[1][i] : "?"
            print(pad(name, 40) + pad(plain, 14) + tls)
        }
    }

    /// Small GETs made by a client child with `Transport.request` (one connection per request,
    /// as the client does), against a transport server in this process and against Python's
    /// threaded `http.server` in another.
    private func runHTTPClientTable() async throws {
        var logger = Logger(label: "muster.bench.http")
        logger.logLevel = .warning
        let server = try Transport(logger: logger)
        var s = ServerConfiguration()
        s.http.get("/small") { _, _ in .respond(.json(200, benchMessage)) }
        let config = s
        let port = try await server.listen(config).port
        let python = try await BenchPythonHTTP.start()
        var rows: [[String]] = []
        for inFlight in [1, 16] {
            var row: [String] = []
            for url in ["http://127.0.0.1:\(port)/small", "http://127.0.0.1:\(python.port)/small"] {
                let out = try await BenchChild(
                    role: .client,
                    ["--mode", "http", "--url", url, "--connections", "\(inFlight)", "--seconds", "\(seconds)"]
                ).result()
                row.append(out.hasPrefix("failed") ? out : formatCount(Double(out) ?? 0))
            }
            rows.append(row)
        }
        python.stop()
        await server.shutdown()
        print("")
        print("http client (Transport.request from a child process, GET with a 32-byte JSON answer, a connection each)")
        print(pad("", 40) + pad("transport server", 20) + "python http.server")
        for (i, inFlight) in [1, 16].enumerated() {
            print(pad("requests/s, \(inFlight) in flight", 40) + pad(rows[i][0], 20) + rows[i][1])
        }
    }

    /// One column: a server transport in this process, loads from client children.
    private func runColumn() async throws {
        var logger = Logger(label: "muster.bench.transport")
        logger.logLevel = .warning
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("muster-bench-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }

        var config = TransportConfiguration()
        config.outboundHighWaterBytes = 64 << 20
        let server = try Transport(configuration: config, logger: logger)
        let sink = Sink()
        var s = ServerConfiguration()
        s.tls = tls ? try makeCertificate(in: dir) : nil
        s.subprotocols = [
            ("bench.echo", WebSocketHandler(text: { t, id, text in t.send(text: text, to: id) })),
            ("bench.sink", sink.handler()),
            ("bench.idle", WebSocketHandler(opened: { _, _ in sink.opened() }, text: { _, _, _ in })),
        ]
        let listenConfig = s
        let port = try await server.listen(listenConfig).port
        let url = "\(tls ? "wss" : "ws")://127.0.0.1:\(port)/"

        // Idle links first, while the heap holds nothing from the throughput runs.
        let before = residentBytes()
        let idle = try BenchChild(role: .client, ["--mode", "idle", "--url", url, "--connections", "\(idleLinks)"])
        await sink.waitOpened(idleLinks)
        let after = residentBytes()
        try await idle.stop()
        let rss = String(format: "%.1f KB", Double(after - before) / Double(idleLinks) / 1024)

        var column: [String] = []
        for conns in [1, 100] {
            let out = try await BenchChild(
                role: .client, ["--mode", "echo", "--url", url, "--connections", "\(conns)", "--seconds", "\(seconds)"]
            ).result()
            column.append(formatCount(Double(out) ?? 0))
        }
        sink.reset(expect: messages)
        _ = try await BenchChild(role: .client, ["--mode", "oneway", "--url", url, "--messages", "\(messages)"])
            .result()
        column.append(formatCount(sink.rate()))
        column.append(rss)
        await server.shutdown()
        print(column.joined(separator: "|"))
    }

    private func makeCertificate(in dir: URL) throws -> ServerTLS {
        let cert = dir.appendingPathComponent("cert.pem").path
        let key = dir.appendingPathComponent("key.pem").path
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days",
            "1",
            "-keyout", key, "-out", cert, "-subj", "/CN=localhost",
        ]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw ValidationError(
                "openssl could not make a test certificate (is openssl installed? Scripts/setup installs it)")
        }
        return ServerTLS(certificateFile: cert, privateKeyFile: key)
    }

    // MARK: - Client side (the load generator, a child process)

    private func runClient() async throws {
        var logger = Logger(label: "muster.bench.client")
        logger.logLevel = .error
        var config = TransportConfiguration()
        config.outboundHighWaterBytes = 64 << 20
        let t = try Transport(configuration: config, logger: logger)
        let tls = ClientTLS(allowSelfSigned: true)
        let done = Done()
        switch mode {
        case .echo:
            let load = EchoLoad(connections: connections, duration: .milliseconds(Int64(seconds * 1000)), done: done)
            for _ in 0..<connections {
                _ = try await t.dial(
                    DialConfiguration(url: url, subprotocol: "bench.echo", tls: tls), handler: load.handler())
            }
            let rate = await done.wait()
            print(rate)
        case .oneway:
            let load = OneWayLoad(total: messages, done: done)
            _ = try await t.dial(
                DialConfiguration(url: url, subprotocol: "bench.sink", tls: tls), handler: load.handler())
            _ = await done.wait()
            print("sent")
        case .http:
            let load = HTTPLoad(transport: t, url: url, duration: .milliseconds(Int64(seconds * 1000)))
            print(await load.run(inFlight: connections))
        case .idle:
            let load = IdleLoad(connections: connections, done: done)
            for _ in 0..<connections {
                _ = try await t.dial(
                    DialConfiguration(url: url, subprotocol: "bench.idle", tls: tls), handler: load.handler())
            }
            _ = await done.wait()
            FileHandle.standardOutput.write(Data("ready\n".utf8))
            // Hold the links until the parent closes our stdin.
            waitForStandardInputEOF()
        }
        await t.shutdown()
    }
}

/// The 32-byte message every measurement sends.
private let benchMessage = "{\"op\":\"bench\",\"seq\":1234567890}"

/// Signals the end of a client run with a number.
private final class Done: Sendable {
    private let state = Locked<(value: Double?, waiter: CheckedContinuation<Double, Never>?)>((nil, nil))

    func finish(_ value: Double) {
        let w = state.withLock { s -> CheckedContinuation<Double, Never>? in
            guard s.value == nil else { return nil }
            s.value = value
            defer { s.waiter = nil }
            return s.waiter
        }
        w?.resume(returning: value)
    }

    func wait() async -> Double {
        await withCheckedContinuation { c in
            let v = state.withLock { s -> Double? in
                if let v = s.value { return v }
                s.waiter = c
                return nil
            }
            if let v { c.resume(returning: v) }
        }
    }
}

/// Every connection keeps one message in flight; the rate is round trips per second over all.
private final class EchoLoad: Sendable {
    private struct State {
        var open = 0
        var ids: [ConnectionID] = []
        var start: ContinuousClock.Instant?
        var count = 0
        var finished = false
    }
    private let state = Locked(State())
    let connections: Int
    let duration: Duration
    let done: Done

    init(connections: Int, duration: Duration, done: Done) {
        self.connections = connections
        self.duration = duration
        self.done = done
    }

    func handler() -> WebSocketHandler {
        WebSocketHandler(
            opened: { t, info in
                let all = self.state.withLock { s -> [ConnectionID]? in
                    s.open += 1
                    s.ids.append(info.id)
                    guard s.open == self.connections else { return nil }
                    s.start = .now
                    return s.ids
                }
                for id in all ?? [] { t.send(text: benchMessage, to: id) }
            },
            text: { t, id, _ in
                let result = self.state.withLock { s -> Double? in
                    guard !s.finished, let start = s.start else { return nil }
                    s.count += 1
                    if s.count & 255 == 0 {
                        let elapsed = ContinuousClock.now - start
                        if elapsed >= self.duration {
                            s.finished = true
                            return Double(s.count) / elapsed.secondsDouble
                        }
                    }
                    return .nan
                }
                guard let result else { return }
                if result.isNaN { t.send(text: benchMessage, to: id) } else { self.done.finish(result) }
            })
    }
}

/// Sends `total` messages on one link with at most `window` unacknowledged (the sink acks every
/// `ackEvery`), so neither side's queue grows without bound.
private final class OneWayLoad: Sendable {
    static let window = 65_536
    private let sent = Locked(0)
    let total: Int
    let done: Done

    init(total: Int, done: Done) {
        self.total = total
        self.done = done
    }

    func handler() -> WebSocketHandler {
        WebSocketHandler(
            opened: { t, info in self.send(t, info.id, Self.window) },
            text: { t, id, text in
                if text == "done" {
                    self.done.finish(0)
                } else {
                    self.send(t, id, Sink.ackEvery)
                }
            })
    }

    private func send(_ t: isolated Transport, _ id: ConnectionID, _ n: Int) {
        let k = sent.withLock { s -> Int in
            let k = min(n, total - s)
            s += k
            return k
        }
        for _ in 0..<k { t.send(text: benchMessage, to: id) }
    }
}

/// Server side of the one-way measurement: counts, acks, times first to last message (also the
/// raw-transport reference of `muster-bench e2e`).
final class Sink: Sendable {
    static let ackEvery = 8192
    private struct State {
        var expected = 0
        var count = 0
        var start: ContinuousClock.Instant?
        var end: ContinuousClock.Instant?
        var opened = 0
        var openWaiter: (Int, CheckedContinuation<Void, Never>)?
    }
    private let state = Locked(State())

    func reset(expect n: Int) {
        state.withLock { s in
            s.expected = n
            s.count = 0
            s.start = nil
            s.end = nil
        }
    }

    func rate() -> Double {
        state.withLock { s in
            guard let start = s.start, let end = s.end, s.count > 1 else { return 0 }
            return Double(s.count - 1) / (end - start).secondsDouble
        }
    }

    func handler() -> WebSocketHandler {
        WebSocketHandler(text: { t, id, _ in
            let reply = self.state.withLock { s -> String? in
                s.count += 1
                if s.count == 1 { s.start = .now }
                if s.count == s.expected {
                    s.end = .now
                    return "done"
                }
                return s.count % Sink.ackEvery == 0 ? "ack" : nil
            }
            if let reply { t.send(text: reply, to: id) }
        })
    }

    func opened() {
        let w = state.withLock { s -> CheckedContinuation<Void, Never>? in
            s.opened += 1
            if let (n, c) = s.openWaiter, s.opened >= n {
                s.openWaiter = nil
                return c
            }
            return nil
        }
        w?.resume()
    }

    func waitOpened(_ n: Int) async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let ready = state.withLock { s -> Bool in
                if s.opened >= n { return true }
                s.openWaiter = (n, c)
                return false
            }
            if ready { c.resume() }
        }
    }
}

/// Opens `connections` links and reports when all are up.
private final class IdleLoad: Sendable {
    private let open = Locked(0)
    let connections: Int
    let done: Done

    init(connections: Int, done: Done) {
        self.connections = connections
        self.done = done
    }

    func handler() -> WebSocketHandler {
        WebSocketHandler(
            opened: { _, _ in
                let all = self.open.withLock { n -> Bool in
                    n += 1
                    return n == self.connections
                }
                if all { self.done.finish(Double(self.connections)) }
            },
            text: { _, _, _ in })
    }
}

/// Keeps `inFlight` GETs going for `duration`; the result is requests/s, or "failed: ..." when any
/// request failed or answered other than 200.
private struct HTTPLoad {
    let transport: Transport
    let url: String
    let duration: Duration

    func run(inFlight: Int) async -> String {
        let start = ContinuousClock.now
        let end = start + duration
        let request = HTTPClientRequest(url: url, timeout: .seconds(10))
        let (count, failure) = await withTaskGroup(of: (Int, String?).self) { group in
            for _ in 0..<inFlight {
                group.addTask {
                    var n = 0
                    while ContinuousClock.now < end {
                        switch await transport.request(request) {
                        case .success(let r) where r.status == 200: n += 1
                        case .success(let r): return (n, "status \(r.status)")
                        case .failure(let e): return (n, e.description)
                        }
                    }
                    return (n, nil)
                }
            }
            var total = 0
            var failure: String?
            for await (n, f) in group {
                total += n
                failure = failure ?? f
            }
            return (total, failure)
        }
        if let failure { return "failed: \(failure)" }
        let elapsed = ContinuousClock.now - start
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        return String(Double(count) / seconds)
    }
}

/// Python's threaded `http.server` answering `GET /small`, in a child process, killed by
/// ``stop()`` (SIGKILL: the child inherits a signal mask that may block SIGTERM).
private final class BenchPythonHTTP: @unchecked Sendable {
    // @unchecked Sendable: everything is set in init; afterwards only Process's own calls
    // (isRunning, processIdentifier, waitUntilExit) run, from one task.
    let process: Process
    let directory: URL
    let port: Int

    private static let script = """
        import http.server, socketserver, sys, os
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            def log_message(self, *args):
                pass
            def do_GET(self):
                body = b'{"op":"bench","seq":1234567890}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            request_queue_size = 256
        server = Server(("127.0.0.1", 0), Handler)
        with open(sys.argv[1] + ".tmp", "w") as f:
            f.write(str(server.server_address[1]))
        os.rename(sys.argv[1] + ".tmp", sys.argv[1])
        server.serve_forever()
        """

    private init(running process: Process, directory: URL, port: Int) {
        self.process = process
        self.directory = directory
        self.port = port
    }

    static func start() async throws -> BenchPythonHTTP {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("muster-bench-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let portFile = dir.appendingPathComponent("port").path
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", "-c", script, portFile]
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        for _ in 0..<600 {
            if let port = (try? String(contentsOfFile: portFile, encoding: .utf8)).flatMap({ Int($0) }) {
                return BenchPythonHTTP(running: p, directory: dir, port: port)
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        kill(p.processIdentifier, SIGKILL)
        throw ValidationError("python3 http.server did not start (is python3 installed? Scripts/setup installs it)")
    }

    func stop() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        try? FileManager.default.removeItem(at: directory)
    }
}

/// A child `muster-bench transport` process. Its output goes to a temporary file, not a pipe:
/// reading a pipe with FileHandle traps when SIGCHLD of another child interrupts the read.
private final class BenchChild: @unchecked Sendable {
    // @unchecked Sendable: `process` and `output` are set in init; afterwards only Process's own
    // thread-safe calls (waitUntilExit, terminationStatus) and file reads happen.
    let process = Process()
    let output: URL
    let stdin = Pipe()
    private let exit = Done()

    init(role: BenchTransport.Role, _ args: [String]) throws {
        output = FileManager.default.temporaryDirectory.appendingPathComponent("muster-bench-\(UUID().uuidString).out")
        _ = FileManager.default.createFile(atPath: output.path, contents: nil)
        process.executableURL = MusterBinary.harness
        process.arguments = ["transport", "--role", role.rawValue] + args
        process.standardOutput = try FileHandle(forWritingTo: output)
        process.standardInput = stdin
        // Not waitUntilExit: on Linux it spins a run loop and took a core away from the server
        // being measured.
        process.terminationHandler = { [exit] _ in exit.finish(0) }
        try process.run()
    }

    /// Waits for the child to exit and returns its last output line.
    func result() async throws -> String {
        _ = await exit.wait()
        defer { try? FileManager.default.removeItem(at: output) }
        let text = String(decoding: (try? Data(contentsOf: output)) ?? Data(), as: UTF8.self)
        guard process.terminationStatus == 0 else {
            throw ValidationError(
                "bench child \(process.arguments ?? []) exited with \(process.terminationStatus): \(text)")
        }
        return text.split(separator: "\n").last.map(String.init) ?? ""
    }

    /// Closes the child's stdin (it holds its links until then) and waits for it.
    func stop() async throws {
        try stdin.fileHandleForWriting.close()
        _ = try await result()
    }
}

/// Blocks until stdin reaches end of file (the parent closed it), retrying interrupted reads.
private func waitForStandardInputEOF() {
    var byte: UInt8 = 0
    while true {
        let n = read(0, &byte, 1)
        if n > 0 || (n < 0 && errno == EINTR) { continue }
        return
    }
}

private func residentBytes() -> Int {
    guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let fields = text.split(separator: " ")
    guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
    return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
}


private func pad(_ s: String, _ width: Int) -> String {
    s.count >= width ? s + " " : s + String(repeating: " ", count: width - s.count)
}
