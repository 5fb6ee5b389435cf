import Foundation
import MusterProtocol
import MusterTransport

/// A peer that speaks raw JSON text on either subprotocol and records every message and the
/// close, so a test can check exactly what the coordinator sent, in order (Protocol/README.md
/// is the only reference: messages are read as plain JSON objects, not through the codecs).
final class WirePeer: Sendable {
    private struct State {
        var link: ConnectionID?
        var open = false
        var messages: [[String: Any]] = []
        var close: UInt16?
        var dialFailure: String?
        var cursor = 0
    }
    let transport: Transport
    // @unchecked: `[String: Any]` is not Sendable; every access goes through the lock.
    private final class Box: @unchecked Sendable {
        let lock = NSLock()
        var state = State()
    }
    private let box = Box()
    private let changed = ChangeSignal()

    /// A dial that failed before the link opened (TLS refused, connection refused).
    struct DialFailed: Error, CustomStringConvertible {
        var reason: String
        var description: String { "the link did not open: \(reason)" }
    }

    /// Opens a link to the coordinator on `port`: `ws://`, or `wss://` with `tls` (a client
    /// certificate for mTLS in it). Throws ``DialFailed`` when the first dial fails.
    init(port: Int, subprotocol: String, tls: ClientTLS? = nil) async throws {
        var config = TransportConfiguration()
        config.shutdownGrace = .seconds(1)
        config.reconnectDelays = [.seconds(3600)]
        transport = try Transport(configuration: config, logger: TestCoordinator.quietLogger)
        let id = try await transport.dial(
            DialConfiguration(
                url: "\(tls == nil ? "ws" : "wss")://127.0.0.1:\(port)/v1/ws", subprotocol: subprotocol, tls: tls),
            handler: WebSocketHandler(
                opened: { [weak self] _, _ in self?.change { $0.open = true } },
                text: { [weak self] _, _, text in
                    let object = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any]
                    self?.change { $0.messages.append(object ?? ["unparsable": text]) }
                },
                closed: { [weak self] _, event in self?.change { $0.close = event.code.rawValue } },
                dialFailed: { [weak self] _, _, why in self?.change { $0.dialFailure = $0.dialFailure ?? why } }))
        change { $0.link = id }
        let failure: String? = try await wait("the link to open") { s -> String?? in
            if s.open { return .some(nil) }
            return (s.dialFailure ?? s.close.map { "closed with \($0) before opening" }).map { .some($0) }
        }
        if let failure {
            await transport.shutdown()
            throw DialFailed(reason: failure)
        }
    }

    private func change(_ body: (inout State) -> Void) {
        box.lock.withLock { body(&box.state) }
        changed.notify()
    }

    private func wait<T>(_ what: String, _ pick: (inout State) -> T?) async throws -> T {
        let deadline = ContinuousClock.now + .seconds(30)
        while true {
            if let v = box.lock.withLock({ pick(&box.state) }) { return v }
            if ContinuousClock.now > deadline { throw BoundExceeded(what: what) }
            await changed.wait(atMost: .milliseconds(100))
        }
    }

    func send(_ json: String) async {
        guard let id = wait(sync: { $0.link }) else { return }
        _ = await transport.send(text: json, to: id)
    }

    /// Queues every message in one turn of the transport's loop, so they leave together (one
    /// write) as from a client that sends a burst.
    func sendAll(_ messages: [String]) async {
        guard let id = wait(sync: { $0.link }) else { return }
        await Self.queue(messages, to: id, on: transport)
    }

    private static func queue(_ messages: [String], to id: ConnectionID, on transport: isolated Transport) {
        for m in messages { _ = transport.send(text: m, to: id) }
    }

    private func wait<T>(sync pick: (State) -> T) -> T {
        box.lock.withLock { pick(box.state) }
    }

    /// The next message (consumed), whatever it is.
    func next(_ what: String) async throws -> [String: Any] {
        try await wait(what) { s in
            guard s.cursor < s.messages.count else { return nil }
            s.cursor += 1
            return s.messages[s.cursor - 1]
        }
    }

    /// The next message of `type` (the ones skipped are consumed).
    func next(type: String) async throws -> [String: Any] {
        try await wait("a \(type) message") { s in
            while s.cursor < s.messages.count {
                let m = s.messages[s.cursor]
                s.cursor += 1
                if m["type"] as? String == type { return m }
            }
            return nil
        }
    }

    /// Every message received so far that `match` picks, consumed or not.
    func all(_ match: ([String: Any]) -> Bool) -> [[String: Any]] {
        wait(sync: { $0.messages.filter(match) })
    }

    /// The close code, once the link has closed.
    func closed() async throws -> UInt16 {
        try await wait("the link to close") { s in s.close }
    }

    func close() async {
        await transport.shutdown()
    }
}
