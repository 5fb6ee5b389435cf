import Foundation
import MusterTransport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The HTTP client against real servers on 127.0.0.1: the transport's own HTTP server and
/// Python's `http.server` in a child process (chunked, large, close-delimited and silent
/// answers).
@Suite("HTTP client", .serialized, .timeLimit(.minutes(2)))
struct HTTPClientTests {
    // MARK: - Against the transport's own server

    @Test func getAndPostAgainstTheTransportsOwnServer() async throws {
        let t = try makeTransport()
        let port = try await ownServer(t)
        let get = try await t.request(HTTPClientRequest(url: "http://127.0.0.1:\(port)/healthz")).get()
        #expect(get.status == 200)
        #expect(get.bodyText == "{\"status\":\"ok\"}")
        #expect(get.header("Content-Type") == "application/json")
        #expect(get.header("content-length") == "15")

        let json = Array("{\"prompt\":{\"3\":{\"class_type\":\"KSampler\"}}}".utf8)
        let post = try await t.request(
            HTTPClientRequest(
                method: .post, url: "http://127.0.0.1:\(port)/echo?x=1",
                headers: [("Content-Type", "application/json")], body: json)
        ).get()
        #expect(post.status == 200)
        #expect(post.body == json)
        #expect(post.header("x-query") == nil)  // not a header lws knows by name
        #expect(post.header("content-type") == "application/json")

        let missing = try await t.request(HTTPClientRequest(url: "http://127.0.0.1:\(port)/nope")).get()
        #expect(missing.status == 404)
        #expect(missing.bodyText.contains("no route for GET /nope"))

        // A POST without a body still says Content-Length: 0 (the route reads the length).
        let empty = try await t.request(HTTPClientRequest(method: .post, url: "http://127.0.0.1:\(port)/echo")).get()
        #expect(empty.status == 200)
        #expect(empty.body.isEmpty)
        #expect(await t.httpClientRequestsInFlight == 0)
        await t.shutdown()
    }

    @Test func aHundredConcurrentRequestsToTheOwnServer() async throws {
        let t = try makeTransport()
        let port = try await ownServer(t)
        let results = await withTaskGroup(of: (Int, Result<HTTPClientResponse, HTTPClientError>).self) { group in
            for i in 0..<100 {
                group.addTask {
                    let body = Array("request \(i)".utf8)
                    return (
                        i,
                        await t.request(
                            HTTPClientRequest(method: .post, url: "http://127.0.0.1:\(port)/echo", body: body))
                    )
                }
            }
            var all: [Int: Result<HTTPClientResponse, HTTPClientError>] = [:]
            for await (i, r) in group { all[i] = r }
            return all
        }
        #expect(results.count == 100)
        for (i, r) in results {
            let response = try r.get()
            #expect(response.status == 200)
            #expect(response.bodyText == "request \(i)")
        }
        #expect(await t.httpClientRequestsInFlight == 0)
        await t.shutdown()
    }

    @Test func completionRunsOnTheLoopExactlyOnce() async throws {
        let t = try makeTransport()
        let port = try await ownServer(t)
        let seen = Recorder<String>()
        await t.request(HTTPClientRequest(url: "http://127.0.0.1:\(port)/healthz")) { t, result in
            // Isolated to the transport: its loop state is readable without await.
            seen.append("\((try? result.get())?.status ?? 0) on loop \(t.executor.isOnLoopThread)")
        }
        #expect(await seen.wait { !$0.isEmpty })
        // A later request on the same loop completes after the first; the first never again.
        _ = await t.request(HTTPClientRequest(url: "http://127.0.0.1:\(port)/healthz"))
        #expect(seen.events == ["200 on loop true"])
        await t.shutdown()
    }

    // MARK: - Against Python's http.server

    @Test func chunkedLargeAndCloseDelimitedResponsesFromPython() async throws {
        let python = try await PythonHTTPServer.start()
        defer { python.stop() }
        let t = try makeTransport()
        let base = "http://127.0.0.1:\(python.port)"

        let chunked = try await t.request(HTTPClientRequest(url: "\(base)/chunked")).get()
        #expect(chunked.status == 200)
        #expect(chunked.header("transfer-encoding") == "chunked")
        #expect(chunked.bodyText == "first;second;" + String(repeating: "x", count: 20000) + ";last")

        let size = 5 << 20
        let large = try await t.request(HTTPClientRequest(url: "\(base)/large?n=\(size)")).get()
        #expect(large.status == 200)
        #expect(large.body.count == size)
        #expect(large.body == PythonHTTPServer.pattern(size))

        let closeDelimited = try await t.request(HTTPClientRequest(url: "\(base)/close-delimited")).get()
        #expect(closeDelimited.status == 200)
        #expect(closeDelimited.bodyText == "until the connection closes")

        let noContent = try await t.request(HTTPClientRequest(method: .post, url: "\(base)/nocontent")).get()
        #expect(noContent.status == 204)
        #expect(noContent.body.isEmpty)

        let notFound = try await t.request(HTTPClientRequest(url: "\(base)/status/404")).get()
        #expect(notFound.status == 404)
        #expect(notFound.bodyText == "status 404")

        let redirect = try await t.request(HTTPClientRequest(url: "\(base)/status/302")).get()
        #expect(redirect.status == 302)
        #expect(redirect.header("location") == "/elsewhere")

        // HEAD: the head is the whole response, whatever length it announces.
        let head = try await t.request(
            HTTPClientRequest(method: .head, url: "\(base)/large?n=1000", maxResponseBytes: 10)
        ).get()
        #expect(head.status == 200)
        #expect(head.header("content-length") == "1000")
        #expect(head.body.isEmpty)
        await t.shutdown()
    }

    @Test func requestHeadersAndBodyReachPython() async throws {
        let python = try await PythonHTTPServer.start()
        defer { python.stop() }
        let t = try makeTransport()
        let body = Array(repeating: UInt8(ascii: "b"), count: 300_000)
        let r = try await t.request(
            HTTPClientRequest(
                method: .post, url: "http://127.0.0.1:\(python.port)/headers?q=1",
                headers: [("Content-Type", "application/json"), ("X-Muster-Test", "yes"), ("Content-Length", "7")],
                body: body)
        ).get()
        #expect(r.status == 200)
        let seen = try #require(try JSONSerialization.jsonObject(with: Data(r.body)) as? [String: String])
        #expect(seen["method"] == "POST")
        #expect(seen["path"] == "/headers?q=1")
        #expect(seen["host"] == "127.0.0.1:\(python.port)")
        #expect(seen["content-length"] == "300000")  // the transport's, not the caller's 7
        #expect(seen["content-type"] == "application/json")
        #expect(seen["x-muster-test"] == "yes")
        #expect(seen["received"] == "300000")
        await t.shutdown()
    }

    @Test func aHundredConcurrentRequestsToPython() async throws {
        let python = try await PythonHTTPServer.start()
        defer { python.stop() }
        let t = try makeTransport()
        let statuses = await withTaskGroup(of: Int.self) { group in
            for i in 0..<100 {
                group.addTask {
                    let path = i.isMultiple(of: 2) ? "/chunked" : "/large?n=\(1000 + i)"
                    let r = await t.request(HTTPClientRequest(url: "http://127.0.0.1:\(python.port)\(path)"))
                    guard case .success(let response) = r else { return -1 }
                    let ok = i.isMultiple(of: 2) ? response.body.count == 20018 : response.body.count == 1000 + i
                    return ok ? response.status : -2
                }
            }
            var all: [Int] = []
            for await s in group { all.append(s) }
            return all
        }
        #expect(statuses == Array(repeating: 200, count: 100))
        await t.shutdown()
    }

    @Test func responseOverTheLimitFails() async throws {
        let python = try await PythonHTTPServer.start()
        defer { python.stop() }
        let t = try makeTransport()
        let base = "http://127.0.0.1:\(python.port)"
        // Announced by content-length: refused at the head.
        let announced = await t.request(HTTPClientRequest(url: "\(base)/large?n=100000", maxResponseBytes: 50_000))
        #expect(announced.failureCode == .responseTooLarge)
        // Chunked: refused once the body passes the limit.
        let streamed = await t.request(HTTPClientRequest(url: "\(base)/chunked", maxResponseBytes: 10_000))
        #expect(streamed.failureCode == .responseTooLarge)
        // At the limit exactly: fine.
        let exact = await t.request(HTTPClientRequest(url: "\(base)/large?n=50000", maxResponseBytes: 50_000))
        #expect((try? exact.get())?.body.count == 50_000)
        await t.shutdown()
    }

    @Test func silentServerTimesOutAndTheConnectionCloses() async throws {
        let python = try await PythonHTTPServer.start()
        defer { python.stop() }
        let t = try makeTransport { $0.handshakeTimeout = .seconds(1) }
        let results = Recorder<HTTPClientError.Code?>()
        // The 3 s timeout is longer than lws' own 1 s handshake timeout: the request's timeout
        // is the one that counts.
        await t.request(HTTPClientRequest(url: "http://127.0.0.1:\(python.port)/silent", timeout: .seconds(3))) {
            _, r in results.append(r.failureCode)
        }
        #expect(await results.wait { !$0.isEmpty })
        #expect(results.events == [.timeout])
        // The server sees the connection close.
        #expect(await python.waitForLine("silent: peer closed"))
        #expect(results.events == [.timeout])
        #expect(await t.httpClientRequestsInFlight == 0)
        await t.shutdown()
    }

    /// A listener whose accept queue is full drops the SYN, so the connect never completes: the
    /// request's timeout ends it when it is the shorter one; lws bounds the TCP connect itself by
    /// the handshake timeout (a timer of its own), reported as a connect failure.
    @Test func connectThatNeverCompletes() async throws {
        let (listener, port) = try fullListener()
        defer { listener.forEach { close($0) } }
        let t = try makeTransport { $0.handshakeTimeout = .seconds(2) }
        let results = Recorder<HTTPClientError>()
        for timeout in [Duration.milliseconds(500), .seconds(20)] {
            await t.request(HTTPClientRequest(url: "http://127.0.0.1:\(port)/", timeout: timeout)) { _, r in
                if case .failure(let e) = r { results.append(e) }
            }
        }
        #expect(await results.wait { $0.count == 2 })
        #expect(results.events.map(\.code) == [.timeout, .connectFailed], "\(results.events)")
        #expect(results.events.first?.message.contains("not connected") == true, "\(results.events)")
        #expect(await t.httpClientRequestsInFlight == 0)
        await t.shutdown()
    }

    @Test func refusedPortFailsToConnect() async throws {
        let t = try makeTransport()
        let port = try closedPort()
        let r = await t.request(HTTPClientRequest(url: "http://127.0.0.1:\(port)/", timeout: .seconds(10)))
        #expect(r.failureCode == .connectFailed)
        await t.shutdown()
    }

    @Test func badRequestsFailWithoutTouchingTheNetwork() async throws {
        let t = try makeTransport()
        for url in ["ftp://127.0.0.1/", "http://", "http://127.0.0.1:99999/", "http://127.0.0.1/a b", "ws://x/"] {
            #expect(await t.request(HTTPClientRequest(url: url)).failureCode == .badURL, "\(url)")
        }
        let injected = HTTPClientRequest(url: "http://127.0.0.1:1/", headers: [("X-A", "1\r\nX-B: 2")])
        #expect(await t.request(injected).failureCode == .badRequest)
        let badName = HTTPClientRequest(url: "http://127.0.0.1:1/", headers: [("X A", "1")])
        #expect(await t.request(badName).failureCode == .badRequest)
        let badMethod = HTTPClientRequest(method: HTTPMethod("GET /x"), url: "http://127.0.0.1:1/")
        #expect(await t.request(badMethod).failureCode == .badRequest)
        await t.shutdown()
    }

    // MARK: - Shutdown

    @Test func shutdownFailsRequestsInFlightAndLaterOnes() async throws {
        let python = try await PythonHTTPServer.start()
        defer { python.stop() }
        let t = try makeTransport()
        let results = Recorder<HTTPClientError.Code?>()
        for _ in 0..<3 {
            await t.request(HTTPClientRequest(url: "http://127.0.0.1:\(python.port)/silent", timeout: .seconds(60))) {
                _, r in results.append(r.failureCode)
            }
        }
        #expect(await python.waitForLine("silent: request", count: 3))
        // One more made while the shutdown runs, from another task.
        let during = Task { await t.request(HTTPClientRequest(url: "http://127.0.0.1:\(python.port)/silent")) }
        await t.shutdown()
        #expect(results.events == [.shutdown, .shutdown, .shutdown])
        #expect(await during.value.failureCode == .shutdown)
        #expect(await t.request(HTTPClientRequest(url: "http://127.0.0.1:\(python.port)/")).failureCode == .shutdown)
        #expect(await python.waitForLine("silent: peer closed", count: 3))
        #expect(results.events == [.shutdown, .shutdown, .shutdown])
    }

    // MARK: - TLS

    @Test func httpsAgainstASelfSignedCertificate() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let cert = try TestCertificate(name: "server", in: dir)
        let other = try TestCertificate(name: "other", in: dir)
        let t = try makeTransport()
        var s = ServerConfiguration()
        s.tls = ServerTLS(certificateFile: cert.certificate, privateKeyFile: cert.key)
        s.http.get("/system_stats") { _, _ in .respond(.json(200, "{\"system\":{}}")) }
        let config = s
        let port = try await t.listen(config).port
        let url = "https://127.0.0.1:\(port)/system_stats"

        let verified = try await t.request(HTTPClientRequest(url: url, tls: ClientTLS(caFile: cert.certificate))).get()
        #expect(verified.status == 200)
        #expect(verified.bodyText == "{\"system\":{}}")
        let development = try await t.request(HTTPClientRequest(url: url, tls: ClientTLS(allowSelfSigned: true))).get()
        #expect(development.status == 200)
        let wrongCA = await t.request(HTTPClientRequest(url: url, tls: ClientTLS(caFile: other.certificate)))
        #expect(wrongCA.failureCode == .connectFailed)
        let systemStore = await t.request(HTTPClientRequest(url: url))
        #expect(systemStore.failureCode == .connectFailed)
        await t.shutdown()
    }

    // MARK: - Helpers

    /// Routes on the transport's own listener: health, echo (body and content type back).
    private func ownServer(_ t: Transport) async throws -> Int {
        var s = ServerConfiguration()
        s.http.get("/healthz") { _, _ in .respond(.json(200, "{\"status\":\"ok\"}")) }
        s.http.post("/echo") { _, req in
            .respond(
                HTTPResponse(
                    status: 200, contentType: req.headers["content-type"] ?? "application/octet-stream",
                    headers: [("x-query", req.query)], body: req.body))
        }
        let config = s
        return try await t.listen(config).port
    }

    /// A listening socket with a backlog of 0 whose queue is already full (one connection made,
    /// never accepted): further SYNs are dropped. Returns every descriptor to close, and the port.
    private func fullListener() throws -> ([Int32], Int) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let rc = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { p in
                bind(fd, p, len) == 0 && listen(fd, 0) == 0 ? getsockname(fd, p, &len) : -1
            }
        }
        try #require(rc == 0)
        let port = Int(UInt16(bigEndian: addr.sin_port))
        // Backlog 0 still queues one connection (two on some kernels); fill it.
        var fds = [fd]
        for _ in 0..<2 {
            let c = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            var to = sockaddr_in()
            to.sin_family = sa_family_t(AF_INET)
            to.sin_port = in_port_t(UInt16(port).bigEndian)
            to.sin_addr.s_addr = inet_addr("127.0.0.1")
            _ = withUnsafePointer(to: &to) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glibc.connect(c, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            fds.append(c)
        }
        return (fds, port)
    }

    /// A port on 127.0.0.1 nobody listens on: bound, then released.
    private func closedPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let rc = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { p in
                bind(fd, p, len) == 0 ? getsockname(fd, p, &len) : -1
            }
        }
        try #require(rc == 0)
        return Int(UInt16(bigEndian: addr.sin_port))
    }
}

extension Result where Failure == HTTPClientError {
    var failureCode: HTTPClientError.Code? {
        if case .failure(let e) = self { return e.code }
        return nil
    }
}

/// Python's `http.server` (threaded, HTTP/1.1) in a child process, answering the paths the tests
/// need. It writes its port to a file and logs events to another; ``stop()`` terminates it.
final class PythonHTTPServer: Sendable {
    let port: Int
    private let process: Process
    private let directory: URL
    private var logFile: String { directory.appendingPathComponent("events").path }

    private init(port: Int, process: Process, directory: URL) {
        self.port = port
        self.process = process
        self.directory = directory
    }

    static let script = """
        import http.server, json, socketserver, sys
        events = open(sys.argv[2], "a", buffering=1)
        def pattern(n):
            unit = bytes(range(256))
            return (unit * (n // 256 + 1))[:n]
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            def log_message(self, *args):
                pass
            def body(self):
                n = int(self.headers.get("content-length") or 0)
                return self.rfile.read(n) if n else b""
            def send(self, status, data, ctype="text/plain", extra=()):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                for k, v in extra:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
            def do_POST(self):
                self.do_GET()
            def do_HEAD(self):
                self.send_response(200)
                self.send_header("Content-Length", "1000")
                self.end_headers()
            def do_GET(self):
                path = self.path.split("?")[0]
                query = self.path.split("?")[1] if "?" in self.path else ""
                if path == "/chunked":
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for part in [b"first;", b"second;", b"x" * 20000, b";last"]:
                        self.wfile.write(b"%x\\r\\n%s\\r\\n" % (len(part), part))
                        self.wfile.flush()
                    self.wfile.write(b"0\\r\\n\\r\\n")
                elif path == "/large":
                    self.send(200, pattern(int(query.split("=")[1])), "application/octet-stream")
                elif path == "/close-delimited":
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(b"until the connection closes")
                    self.close_connection = True
                elif path == "/nocontent":
                    self.body()
                    self.send_response(204)
                    self.end_headers()
                elif path.startswith("/status/"):
                    code = int(path.split("/")[2])
                    self.send(code, b"status %d" % code, extra=[("Location", "/elsewhere")] if code == 302 else [])
                elif path == "/headers":
                    data = self.body()
                    seen = {k.lower(): v for k, v in self.headers.items()}
                    seen.update(method=self.command, path=self.path, received=str(len(data)))
                    self.send(200, json.dumps(seen).encode(), "application/json")
                elif path == "/silent":
                    events.write("silent: request\\n")
                    while self.rfile.read(1):
                        pass
                    events.write("silent: peer closed\\n")
                    self.close_connection = True
                else:
                    self.send(404, b"not found")
        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            request_queue_size = 256
        server = Server(("127.0.0.1", 0), Handler)
        with open(sys.argv[1] + ".tmp", "w") as f:
            f.write(str(server.server_address[1]))
        import os; os.rename(sys.argv[1] + ".tmp", sys.argv[1])
        server.serve_forever()
        """

    static func start() async throws -> PythonHTTPServer {
        let dir = try temporaryDirectory()
        let portFile = dir.appendingPathComponent("port").path
        let events = dir.appendingPathComponent("events").path
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        p.arguments = ["-c", script, portFile, events]
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        var port: Int?
        for _ in 0..<600 where port == nil {
            port = (try? String(contentsOfFile: portFile, encoding: .utf8)).flatMap { Int($0) }
            if port == nil { try await Task.sleep(for: .milliseconds(50)) }
        }
        guard let port else {
            p.terminate()
            throw POSIXError(.ETIMEDOUT)
        }
        return PythonHTTPServer(port: port, process: p, directory: dir)
    }

    /// The bytes `/large?n=` answers.
    static func pattern(_ n: Int) -> [UInt8] { (0..<n).map { UInt8($0 & 0xff) } }

    /// Waits (bounded) until the server logged `line` at least `count` times.
    func waitForLine(_ line: String, count: Int = 1) async -> Bool {
        for _ in 0..<600 {
            let text = (try? String(contentsOfFile: logFile, encoding: .utf8)) ?? ""
            if text.split(separator: "\n").filter({ $0 == line }).count >= count { return true }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return false
    }

    /// Kills the server and reaps it (Foundation frees a Process only after `waitUntilExit`).
    func stop() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        try? FileManager.default.removeItem(at: directory)
    }
}
