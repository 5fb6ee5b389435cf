import Foundation
import MusterTransport
import Synchronization
import Testing

/// The transport's own keepalive: idle links are pinged and stay up, silent ones are dropped with
/// 1006, on server connections and client links alike. Two transports where the sides must keep
/// time differently (one pings every second, the other effectively never), so each test sees
/// one side's keepalive alone. No durations are asserted: tests wait for counters and events.
@Suite("Keepalive", .serialized, .timeLimit(.minutes(2)))
struct KeepaliveTests {
    /// Pings after 1 s of silence, hangs up after 3 s.
    private func eager() throws -> Transport {
        try makeTransport {
            $0.keepalivePingAfter = .seconds(1)
            $0.keepaliveHangUpAfter = .seconds(3)
        }
    }

    /// Never pings within a test.
    private func lazy() throws -> Transport {
        try makeTransport {
            $0.keepalivePingAfter = .seconds(600)
            $0.keepaliveHangUpAfter = .seconds(1200)
        }
    }

    private func listen(_ t: Transport, _ server: Recorder<WSEvent>) async throws -> Int {
        var s = ServerConfiguration()
        s.subprotocols = [("muster.client.v1", server.handler(echo: true))]
        let config = s
        return try await t.listen(config).port
    }

    @Test func idleServerConnectionIsPingedAndStaysUp() async throws {
        let serverSide = try eager()
        let clientSide = try lazy()
        let server = Recorder<WSEvent>()
        let client = Recorder<WSEvent>()
        let port = try await listen(serverSide, server)
        let link = try await clientSide.dial(
            DialConfiguration(url: "ws://127.0.0.1:\(port)/", subprotocol: "muster.client.v1"), handler: client.handler())
        #expect(await server.waitOpened())
        #expect(await client.waitOpened())
        // Nothing but keepalive on the link: the server pings, the client's lws answers.
        #expect(await eventually { await serverSide.counters.keepalivePongs >= 3 })
        let counters = await serverSide.counters
        #expect(counters.keepalivePings >= 3)
        #expect(counters.keepaliveTimeouts == 0)
        #expect(await clientSide.counters.keepalivePings == 0)
        #expect(server.closeCodes().isEmpty)
        #expect(client.closeCodes().isEmpty)
        #expect(await clientSide.isOpen(link))
        #expect(await clientSide.send(text: "still here", to: link) == .queued)
        #expect(await client.waitText("still here"))
        await clientSide.shutdown()
        await serverSide.shutdown()
    }

    @Test func idleClientLinkIsPingedAndStaysUp() async throws {
        let serverSide = try lazy()
        let clientSide = try eager()
        let server = Recorder<WSEvent>()
        let client = Recorder<WSEvent>()
        let port = try await listen(serverSide, server)
        let link = try await clientSide.dial(
            DialConfiguration(url: "ws://127.0.0.1:\(port)/", subprotocol: "muster.client.v1"), handler: client.handler())
        #expect(await client.waitOpened())
        #expect(await eventually { await clientSide.counters.keepalivePongs >= 3 })
        let counters = await clientSide.counters
        #expect(counters.keepalivePings >= 3)
        #expect(counters.keepaliveTimeouts == 0)
        #expect(counters.reconnectAttempts == 0)
        #expect(await serverSide.counters.keepalivePings == 0)
        #expect(client.closeCodes().isEmpty)
        #expect(server.closeCodes().isEmpty)
        #expect(await clientSide.isOpen(link))
        #expect(await clientSide.send(text: "still here", to: link) == .queued)
        #expect(await client.waitText("still here"))
        await clientSide.shutdown()
        await serverSide.shutdown()
    }

    /// A raw peer that completes the handshake, receives the PING and never answers.
    @Test func silentPeerIsPingedThenDroppedWith1006() async throws {
        let t = try makeTransport {
            $0.keepalivePingAfter = .seconds(1)
            $0.keepaliveHangUpAfter = .seconds(2)
        }
        let server = Recorder<WSEvent>()
        var s = ServerConfiguration()
        s.defaultWebSocket = server.handler()
        let config = s
        let port = try await t.listen(config).port
        // On its own thread: the handshake, the PING, then reading until the server drops it.
        let seen = try await blocking {
            let socket = try RawSocket(port: port)
            let head = socket.webSocketHandshake()
            let ping = socket.read(bytes: 4)
            return (head: head, ping: ping, eof: socket.readToEnd().eof)
        }
        #expect(seen.head.hasPrefix("HTTP/1.1 101"))
        // An unmasked server PING with a 2-byte payload.
        #expect(seen.ping.prefix(2) == [0x89, 0x02])
        #expect(seen.eof)
        #expect(await server.waitOpened())
        #expect(await server.waitClosed(code: 1006))
        let counters = await t.counters
        #expect(counters.keepalivePings == 1)
        #expect(counters.keepaliveTimeouts == 1)
        #expect(counters.closesByCode[1006] == 1)
        #expect(await t.connectionCount == 0)
        await t.shutdown()
    }

    /// The server stops answering anything (a relay between them drops every byte, like a
    /// SIGSTOPped process): the client link is dropped with 1006 and dials again.
    @Test func clientLinkToASilentServerIsDroppedAndRedials() async throws {
        let serverSide = try lazy()
        let clientSide = try makeTransport {
            $0.keepalivePingAfter = .seconds(1)
            $0.keepaliveHangUpAfter = .seconds(2)
        }
        let server = Recorder<WSEvent>()
        let client = Recorder<WSEvent>()
        let port = try await listen(serverSide, server)
        let relay = try FreezableRelay(upstream: port)
        let link = try await clientSide.dial(
            DialConfiguration(url: "ws://127.0.0.1:\(relay.port)/", subprotocol: "muster.client.v1"),
            handler: client.handler())
        #expect(await client.waitOpened())
        #expect(await clientSide.send(text: "before", to: link) == .queued)
        #expect(await client.waitText("before"))
        relay.freeze()
        #expect(await client.wait { $0.contains(.closed(link, 1006, "", willReconnect: true)) })
        let counters = await clientSide.counters
        #expect(counters.keepaliveTimeouts == 1)
        #expect(counters.keepalivePings >= 1)
        #expect(counters.closesByCode[1006] == 1)
        await clientSide.close(link)
        relay.stop()
        await clientSide.shutdown()
        await serverSide.shutdown()
    }

    /// Pings go out while a stream of large messages is being written (the writer receives
    /// nothing, so it keeps pinging): every message arrives whole and in order, and the link
    /// stays up.
    @Test func pingsGoBetweenWholeMessages() async throws {
        let serverSide = try eager()
        let clientSide = try lazy()
        let server = Recorder<WSEvent>()
        let received = Recorder<String>()
        var s = ServerConfiguration()
        s.subprotocols = [("muster.client.v1", server.handler())]
        let config = s
        let port = try await serverSide.listen(config).port
        let handler = WebSocketHandler(text: { _, _, text in received.append(String(text.prefix(8))) })
        _ = try await clientSide.dial(
            DialConfiguration(url: "ws://127.0.0.1:\(port)/", subprotocol: "muster.client.v1"), handler: handler)
        #expect(await server.waitOpened())
        let id = try #require(server.openedIDs().first)
        let body = String(repeating: "x", count: 64 << 10)
        var sent = 0
        // Keep messages in flight until the server has pinged a few times.
        sending: while await serverSide.counters.keepalivePongs < 3, sent < 5_000 {
            for _ in 0..<2 {
                let result = await serverSide.send(text: String(format: "%08d", sent) + body, to: id)
                #expect(result == .queued)
                if result != .queued { break sending }
                sent += 1
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        let total = sent
        #expect(await received.wait(timeout: .seconds(60)) { $0.count == total })
        #expect(received.events == (0..<total).map { String(format: "%08d", $0) })
        #expect(await serverSide.counters.keepalivePings >= 3)
        #expect(server.closeCodes().isEmpty)
        await clientSide.shutdown()
        await serverSide.shutdown()
    }
}

/// Polls `condition` until it holds or `bound` passes (a generous bound, not a measurement).
func eventually(_ bound: Duration = .seconds(60), _ condition: () async -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + bound
    while ContinuousClock.now < deadline {
        if await condition() { return true }
        try? await Task.sleep(for: .milliseconds(50))
    }
    return await condition()
}

extension RawSocket {
    /// Reads exactly `count` bytes (fewer on timeout or EOF).
    func read(bytes count: Int) -> [UInt8] {
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: count)
        while out.count < count {
            let want = count - out.count
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, want, 0) }
            if n < 0, errno == EINTR { continue }
            if n <= 0 { break }
            out += buf[..<n]
        }
        return out
    }
}

/// A TCP relay from 127.0.0.1 (port 0) to `upstream` on 127.0.0.1. After ``freeze()`` it drops
/// every byte both ways but keeps the sockets open: to both ends the other has gone silent, as
/// a process stopped with SIGSTOP would.
final class FreezableRelay: Sendable {
    let port: Int
    private let listener: Int32
    private let frozen = Atomic<Bool>(false)
    private let pairs = Locked<[RelayPair]>([])

    init(upstream: Int) throws {
        (listener, port) = try loopbackListener()
        Thread.detachNewThread { [self] in acceptLoop(upstream: upstream) }
    }

    func freeze() { frozen.store(true, ordering: .sequentiallyConsistent) }

    /// Stops accepting and shuts every relayed socket down (the pumps then close them).
    func stop() {
        shutdown(listener, Int32(SHUT_RDWR))
        for pair in pairs.withLock({ $0 }) { pair.shutdownIfOpen() }
    }

    deinit { close(listener) }

    private func acceptLoop(upstream: Int) {
        while true {
            let down = accept(listener, nil, nil)
            if down < 0, errno == EINTR { continue }
            if down < 0 { return }
            guard let up = try? RawSocket.connected(port: upstream) else {
                close(down)
                continue
            }
            let pair = RelayPair(down, up)
            pairs.withLock { $0.append(pair) }
            Thread.detachNewThread { [self] in pump(from: down, to: up, pair) }
            Thread.detachNewThread { [self] in pump(from: up, to: down, pair) }
        }
    }

    private func pump(from: Int32, to: Int32, _ pair: RelayPair) {
        var buf = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let n = buf.withUnsafeMutableBytes { recv(from, $0.baseAddress, $0.count, 0) }
            if n < 0, errno == EINTR { continue }
            if n <= 0 { break }
            if frozen.load(ordering: .sequentiallyConsistent) { continue }
            var off = 0
            while off < n {
                let w = buf[off..<n].withUnsafeBytes { send(to, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                if w < 0, errno == EINTR { continue }
                if w <= 0 { break }
                off += w
            }
        }
        shutdown(to, Int32(SHUT_WR))
        pair.pumpEnded()
    }
}

/// The two sockets of one relayed connection, closed when both pumps have ended (never shut
/// down after that: the descriptors may belong to someone else by then).
private final class RelayPair: Sendable {
    let a: Int32
    let b: Int32
    private let running = Locked(2)

    init(_ a: Int32, _ b: Int32) {
        self.a = a
        self.b = b
    }

    func shutdownIfOpen() {
        running.withLock { n in
            if n > 0 {
                shutdown(a, Int32(SHUT_RDWR))
                shutdown(b, Int32(SHUT_RDWR))
            }
        }
    }

    func pumpEnded() {
        running.withLock { n in
            n -= 1
            if n == 0 {
                close(a)
                close(b)
            }
        }
    }
}
