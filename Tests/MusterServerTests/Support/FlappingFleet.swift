import Foundation
import Logging
@testable import MusterBackends
import MusterCore
import MusterProtocol
import MusterServer
import MusterTransport

/// Many simulated backends in the test process, one dialled `muster.backend.v1` link and one
/// ``WorkerEngine`` each, all on one transport of their own. Once flapping, every link closes
/// after a random 50-500 ms without a goodbye and a new one (a restarted process: a new
/// incarnation under the same name) dials in its place.
final class FlappingFleet: @unchecked Sendable {
    // @unchecked Sendable: every stored var is touched only on the transport's loop thread (link
    // handlers, timers and the `run` hops); the entry points check `precondition(onLoop)`, and the
    // test reads results only through `run`.

    private struct Backend {
        var name: String
        var engine: WorkerEngine
        var link: ConnectionID?
        var acked = false
        /// The deadline a timer is armed for (jobs that take time).
        var timerAt: CoreInstant?
    }

    let transport: Transport
    private let url: String
    private let features: [String]
    private let jobDuration: Duration
    private let origin = ContinuousClock.now
    private let epochMs = UInt64(Date().timeIntervalSince1970 * 1000)
    private var backends: [Backend] = []
    private var byLink: [ConnectionID: Int] = [:]
    private var readyCount = 0
    private var readyWaiter: CheckedContinuation<Void, Never>?
    private var flapping = false
    private(set) var flaps = 0
    /// `flap(for:)` is over: the links stay up from now on.
    private(set) var flapsEnded = false
    private var random = SystemRandomNumberGenerator()

    /// Dials `count` backends named `NAME-0`... and returns once every one is welcomed and its
    /// first announcement acknowledged.
    init(coordinator url: String, count: Int, name: String, features: [String], jobDuration: Duration) async throws {
        self.url = url
        self.features = features
        self.jobDuration = jobDuration
        var config = TransportConfiguration()
        config.outboundHighWaterBytes = 64 << 20
        config.shutdownGrace = .seconds(1)
        config.reconnectDelays = [.milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1)]
        transport = try Transport(configuration: config, logger: TestCoordinator.quietLogger)
        for i in 0..<count {
            backends.append(Backend(name: "\(name)-\(i)", engine: newEngine("\(name)-\(i)", generation: 0)))
        }
        try await run { t in for i in self.backends.indices { try self.dial(i, t) } }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            Task {
                await self.run { _ in
                    if self.readyCount == self.backends.count { c.resume() } else { self.readyWaiter = c }
                }
            }
        }
    }

    /// Runs `body` on the fleet's loop.
    func run<T: Sendable>(_ body: @Sendable (isolated Transport) throws -> T) async rethrows -> T {
        try await transport.perform(body)
    }

    /// Flaps every link for `duration`, then leaves the last links up; returns the link replacements.
    func flap(for duration: Duration) async throws -> Int {
        await run { t in
            self.flapping = true
            for i in self.backends.indices { self.scheduleFlap(i, t) }
        }
        try await Task.sleep(for: duration)
        return await run { _ in
            self.flapping = false
            self.flapsEnded = true
            return self.flaps
        }
    }

    func stop() async { await transport.shutdown() }

    private var onLoop: Bool { transport.executor.isOnLoopThread }

    private var clock: CoreInstant {
        let (s, atto) = (ContinuousClock.now - origin).components
        return CoreInstant(nanoseconds: UInt64(max(0, s)) * 1_000_000_000 + UInt64(max(0, atto) / 1_000_000_000))
    }

    private func newEngine(_ name: String, generation: UInt64) -> WorkerEngine {
        let spec = WorkerSpec(
            name: name, features: features, slots: 1, jobDurations: ["default": jobDuration],
            progressInterval: .seconds(3600))
        return WorkerEngine(
            spec: spec, incarnation: Incarnation(epochMs &* 1000 &+ generation), epochMs: epochMs, at: clock)
    }

    private func dial(_ i: Int, _ t: isolated Transport) throws {
        precondition(onLoop)
        let id = try t.dial(
            DialConfiguration(url: url, subprotocol: Subprotocol.backend),
            handler: WebSocketHandler(
                opened: { t, info in self.opened(info.id, t) },
                text: { t, id, text in self.received(text, on: id, t) },
                closed: { _, event in self.closed(event) }))
        backends[i].link = id
        byLink[id] = i
    }

    private func opened(_ id: ConnectionID, _ t: isolated Transport) {
        guard let i = byLink[id] else { return }
        send(backends[i].engine.hello(token: "none", software: "muster-tests"), on: id, t)
    }

    private func closed(_ event: CloseEvent) {
        guard let i = byLink[event.id] else { return }
        backends[i].engine.linkDown()
    }

    private func received(_ text: String, on id: ConnectionID, _ t: isolated Transport) {
        guard let i = byLink[id], let message = try? CoordinatorToBackend.decode(text) else { return }
        if case .capabilitiesAck = message, !backends[i].acked {
            backends[i].acked = true
            readyCount += 1
            if readyCount == backends.count, let w = readyWaiter {
                readyWaiter = nil
                w.resume()
            }
        }
        perform(i, backends[i].engine.receive(message, at: clock), t)
        finishDue(i, t)
    }

    private func finishDue(_ i: Int, _ t: isolated Transport) {
        var now = clock
        while let due = backends[i].engine.nextDeadline, due <= now {
            perform(i, backends[i].engine.tick(at: now), t)
            now = clock
        }
        if let due = backends[i].engine.nextDeadline, backends[i].timerAt != due {
            backends[i].timerAt = due
            t.schedule(after: due - now) { t in
                if self.backends[i].timerAt == due { self.backends[i].timerAt = nil }
                self.finishDue(i, t)
            }
        }
    }

    private func perform(_ i: Int, _ actions: [WorkerEngine.Action], _ t: isolated Transport) {
        guard let link = backends[i].link else { return }
        for case .send(let m) in actions { send(m, on: link, t) }
    }

    private func send(_ message: BackendToCoordinator, on id: ConnectionID, _ t: isolated Transport) {
        let bytes = message.encode()
        bytes.withUnsafeBytes { _ = t.send(utf8: $0, to: id) }
    }

    private func scheduleFlap(_ i: Int, _ t: isolated Transport) {
        let delay = Duration.milliseconds(Int64.random(in: 50...500, using: &random))
        t.schedule(after: delay) { t in
            guard self.flapping else { return }
            self.replace(i, t)
            self.scheduleFlap(i, t)
        }
    }

    /// Drops link `i` without a goodbye and dials a new one as a restarted process.
    private func replace(_ i: Int, _ t: isolated Transport) {
        if let old = backends[i].link {
            byLink[old] = nil
            t.close(old, code: .goingAway, reason: "flap")
        }
        flaps += 1
        backends[i].engine = newEngine(backends[i].name, generation: UInt64(flaps))
        try? dial(i, t)
    }
}

extension Transport {
    /// Runs `body` on the loop and returns its value.
    fileprivate func perform<T: Sendable>(_ body: @Sendable (isolated Transport) throws -> T) rethrows -> T {
        try body(self)
    }
}
