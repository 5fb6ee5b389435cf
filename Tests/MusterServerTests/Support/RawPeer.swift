import Foundation
import Logging
import MusterProtocol
import MusterTransport

/// A hand-driven `muster.backend.v1` peer on its own transport: the test says every message,
/// so it can say the wrong ones (a result under a lease that is no longer valid).
final class RawBackendPeer: Sendable {
    private struct State {
        var link: ConnectionID?
        var open = false
        /// The close code of the link, once it closed.
        var closeCode: UInt16?
        var received: [CoordinatorToBackend] = []
        /// Messages before this index were consumed by `next`.
        var cursor = 0
    }
    let transport: Transport
    private let state = Locked(State())
    private let changed = ChangeSignal()

    init(url: String) async throws {
        var config = TransportConfiguration()
        config.shutdownGrace = .seconds(1)
        transport = try Transport(configuration: config, logger: TestCoordinator.quietLogger)
        let id = try await transport.dial(
            DialConfiguration(url: url, subprotocol: Subprotocol.backend),
            handler: WebSocketHandler(
                opened: { [weak self] _, _ in self?.change { $0.open = true } },
                text: { [weak self] _, _, text in
                    guard let m = try? CoordinatorToBackend.decode(text) else { return }
                    self?.change { $0.received.append(m) }
                },
                closed: { [weak self] _, event in self?.change { $0.closeCode = event.code.rawValue } }))
        state.withLock { $0.link = id }
        try await wait("the link to open") { s in s.open ? () : nil }
    }

    private func change(_ body: (inout State) -> Void) {
        state.withLock { body(&$0) }
        changed.notify()
    }

    /// Waits until `pick` returns a value, re-checking on every change (bounded against hangs).
    private func wait<T>(_ what: String, _ pick: (inout State) -> T?) async throws -> T {
        let deadline = ContinuousClock.now + .seconds(30)
        while true {
            if let v = state.withLock({ pick(&$0) }) { return v }
            if ContinuousClock.now > deadline { throw BoundExceeded(what: what) }
            await changed.wait(atMost: .milliseconds(100))
        }
    }

    func send(_ message: BackendToCoordinator) async {
        guard let id = state.withLock({ $0.link }) else { return }
        _ = await transport.send(text: message.encodedString(), to: id)
    }

    /// The next message from the coordinator that `match` picks; the ones skipped are consumed.
    func next<T>(_ what: String, _ match: (CoordinatorToBackend) -> T?) async throws -> T {
        try await wait(what) { s in
            while s.cursor < s.received.count {
                let m = s.received[s.cursor]
                s.cursor += 1
                if let v = match(m) { return v }
            }
            return nil
        }
    }

    /// Waits for the coordinator to close the link; its close code.
    func closed() async throws -> UInt16 {
        try await wait("the link to close") { $0.closeCode }
    }

    func close() async {
        await transport.shutdown()
    }
}
