import ArgumentParser
import Foundation
import Logging
import MusterBackends
import MusterCore
import MusterProtocol
import MusterServer
import MusterTransport

/// `muster-bench e2e-backends` (hidden): many simulated backends in one process, one dialled
/// `muster.backend.v1` link and one ``WorkerEngine`` each, all on one transport. The load side of
/// `muster-bench e2e` and of the fault tests.
///
/// It talks to its parent in lines: it prints `ready` once every link is welcomed and its first
/// announcement acknowledged, acts on `go` read from stdin (churn and gate modes), and on end of
/// stdin (or after `--seconds` in flap mode) prints `stats IN OUT ...` and exits.
struct BenchE2EBackends: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "e2e-backends",
        abstract: "Simulated backends for muster-bench e2e and soak (internal).",
        shouldDisplay: false)

    enum Mode: String, ExpressibleByArgument {
        /// Run zero-duration (or `--job-ms`) jobs until stdin closes.
        case work
        /// After `go`: announce capabilities as fast as acknowledgements allow for `--seconds`.
        case churn
        /// Announce `loading`; after `go`, announce `ready` on every link at once and time the
        /// assigns that follow from the last announcement sent.
        case gate
        /// Work, but every link closes after a random 50-500 ms and a new one (a new process
        /// incarnation under the same name) dials in its place, for `--seconds`.
        case flap
    }

    @Option(help: "Coordinator URL, ws://HOST:PORT.")
    var coordinator: String
    @Option(help: "Number of backends (one link each).")
    var count = 100
    @Option(help: "work, churn, gate or flap.")
    var mode: Mode = .work
    @Option(help: "Slots per backend.")
    var slots = 1
    @Option(help: "Comma-separated features every backend announces.")
    var features = "image"
    @Option(help: "Backend names are PREFIX-0, PREFIX-1, ...")
    var name = "e2e"
    @Option(help: "Backend token (auth.token of the coordinator; any non-empty text when it has none).")
    var token = "none"
    @Option(help: "Job duration in milliseconds.")
    var jobMs = 0
    @Option(help: "Churn: announcements in flight per link.")
    var window = 8
    @Option(help: "Churn: seconds of announcing. Flap: seconds of flapping.")
    var seconds: Double = 3
    @Option(help: "Ping after half of this many idle seconds, hang up after all of them.")
    var keepaliveSeconds: Double = 10
    @Option(help: "Gate: assigns to wait for before reporting.")
    var expectAssigns = 0
    @Option(help: "Write 'JOB BATCH NANOS' per first assign of a job (CLOCK_MONOTONIC) to this file at the end.")
    var assignLog: String?

    func run() async throws {
        signal(SIGPIPE, SIG_IGN)
        var logger = Logger(label: "muster.bench.backends")
        logger.logLevel = .error
        var config = TransportConfiguration()
        config.outboundHighWaterBytes = 64 << 20
        config.keepalivePingAfter = .milliseconds(Int64(keepaliveSeconds * 500))
        config.keepaliveHangUpAfter = .milliseconds(Int64(keepaliveSeconds * 1000))
        config.reconnectDelays = [.milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1)]
        let transport = try Transport(configuration: config, logger: logger)
        let fleet = SimFleet(command: self, transport: transport)
        let input = StdinLines()
        try await transport.onLoopThrowing { t in try fleet.start(t) }
        await fleet.waitReady()
        emit("ready")
        switch mode {
        case .work:
            await input.waitForEnd()
        case .flap:
            try await transport.onLoopThrowing { t in fleet.startFlapping(t) }
            try await Task.sleep(for: .milliseconds(Int64(seconds * 1000)))
            let flaps = await transport.onLoopValue { t in fleet.stopFlapping(t) }
            emit("flapped \(flaps)")
            await input.waitForEnd()
        case .churn:
            guard await input.next() == "go" else { break }
            let started = ContinuousClock.now
            await transport.onLoop { t in fleet.startChurn(t) }
            try await Task.sleep(for: .milliseconds(Int64(seconds * 1000)))
            let acks = await transport.onLoopValue { t in fleet.stopChurn(t) }
            let elapsed = ContinuousClock.now - started
            emit("churn \(acks) \(elapsed.secondsDouble)")
            await input.waitForEnd()
        case .gate:
            guard await input.next() == "go" else { break }
            await transport.onLoop { t in fleet.releaseGate(t) }
            let samples = await fleet.waitGateSamples()
            emit("gate " + samples.map { String($0) }.joined(separator: ","))
            await input.waitForEnd()
        }
        let (counters, completed, assigns) = await transport.onLoopValue { t in (t.counters, fleet.completed, fleet.assignTimes) }
        if let path = assignLog {
            var text = ""
            text.reserveCapacity(assigns.count * 24)
            for a in assigns { text += "\(a.job) \(a.batch) \(a.nanos)\n" }
            FileManager.default.createFile(atPath: path, contents: Data(text.utf8))
        }
        emit("stats \(counters.messagesIn) \(counters.messagesOut) \(completed)")
        await transport.shutdown()
    }

    private func emit(_ line: String) {
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }
}

/// The simulated backends. Every stored property is touched only on the transport's loop thread
/// (from link handlers and `onLoop` closures); the waiters are resumed from there too.
final class SimFleet: @unchecked Sendable {
    // @unchecked Sendable: state is confined to the loop thread. Link handlers and timers run
    // there by construction (they are handed the isolated transport); the entry points called
    // from the command check `precondition(onLoop)`, and the command reads results only through
    // `onLoopValue`.

    struct Backend {
        var name: String
        var engine: WorkerEngine
        var link: ConnectionID?
        var welcomed = false
        var acked = false
        /// Churn: revisions announced and not yet acknowledged.
        var inFlight = 0
        var revision: UInt64 = 0
        /// The deadline a timer is armed for (jobs that take time).
        var timerAt: CoreInstant?
    }

    let command: BenchE2EBackends
    let transport: Transport
    let origin = ContinuousClock.now
    let epochMs: UInt64
    var backends: [Backend] = []
    var byLink: [ConnectionID: Int] = [:]
    var readyCount = 0
    var readyWaiter: CheckedContinuation<Void, Never>?
    var churning = false
    var churnAcks = 0
    var flapping = false
    var flaps = 0
    var completed = 0
    var gateStart: ContinuousClock.Instant?
    var gateSamples: [Int] = []
    var gateWaiter: CheckedContinuation<[Int], Never>?
    /// With `--assign-log`: when each assign arrived (a job again after a requeue too).
    var assignTimes: [(job: JobID, batch: BatchID, nanos: UInt64)] = []
    var random = SystemRandomNumberGenerator()

    init(command: BenchE2EBackends, transport: Transport) {
        self.command = command
        self.transport = transport
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        epochMs = UInt64(now.tv_sec) * 1000 + UInt64(now.tv_nsec / 1_000_000)
    }

    private var onLoop: Bool { transport.executor.isOnLoopThread }

    var clock: CoreInstant {
        let (s, atto) = (ContinuousClock.now - origin).components
        return CoreInstant(nanoseconds: UInt64(max(0, s)) * 1_000_000_000 + UInt64(max(0, atto) / 1_000_000_000))
    }

    func spec(_ name: String) -> WorkerSpec {
        WorkerSpec(
            name: name, features: command.features.split(separator: ",").map(String.init), slots: command.slots,
            jobDurations: ["default": .milliseconds(Int64(command.jobMs))], progressInterval: .seconds(3600))
    }

    func newEngine(_ name: String, generation: UInt64) -> WorkerEngine {
        // A distinct incarnation per link generation: a flapping backend is a restarted process.
        WorkerEngine(spec: spec(name), incarnation: Incarnation(epochMs &* 1000 &+ generation), epochMs: epochMs, at: clock)
    }

    func start(_ t: isolated Transport) throws {
        precondition(onLoop)
        for i in 0..<command.count {
            let name = "\(command.name)-\(i)"
            backends.append(Backend(name: name, engine: newEngine(name, generation: 0)))
        }
        for i in backends.indices { try dial(i, t) }
    }

    private func dial(_ i: Int, _ t: isolated Transport) throws {
        let target = DialConfiguration(url: command.coordinator, subprotocol: Subprotocol.backend)
        let id = try t.dial(target, handler: handler())
        backends[i].link = id
        byLink[id] = i
    }

    private func handler() -> WebSocketHandler {
        WebSocketHandler(
            opened: { t, info in self.opened(info.id, t) },
            text: { t, id, text in self.received(text, on: id, t) },
            closed: { _, event in self.closed(event) })
    }

    private func opened(_ id: ConnectionID, _ t: isolated Transport) {
        guard let i = byLink[id] else { return }
        send(backends[i].engine.hello(token: command.token, software: "muster-bench"), on: id, t)
    }

    private func closed(_ event: CloseEvent) {
        guard let i = byLink[event.id] else { return }
        backends[i].welcomed = false
        backends[i].engine.linkDown()
    }

    private func received(_ text: String, on id: ConnectionID, _ t: isolated Transport) {
        guard let i = byLink[id], let message = try? CoordinatorToBackend.decode(text) else { return }
        switch message {
        case .welcome:
            backends[i].welcomed = true
        case .capabilitiesAck(let ack):
            if !backends[i].acked {
                backends[i].acked = true
                readyCount += 1
                if readyCount == backends.count, let w = readyWaiter {
                    readyWaiter = nil
                    w.resume()
                }
            }
            if churning, ack.version.incarnation == backends[i].engine.incarnation {
                churnAcks += 1
                backends[i].inFlight -= 1
                announce(i, t)
                return
            }
        case .assign(let assign):
            if command.assignLog != nil { assignTimes.append((assign.job, assign.batch, monotonicNanos())) }
            if let start = gateStart {
                gateSamples.append(Int((ContinuousClock.now - start).nanosecondsInt / 1000))
                if gateSamples.count == command.expectAssigns, let w = gateWaiter {
                    gateWaiter = nil
                    w.resume(returning: gateSamples)
                }
            }
        default:
            break
        }
        if command.mode == .gate, case .welcome = message {
            // Stay unknown to the gate: announce `loading` (revision 1) until told to go; the
            // engine's own `ready` announcement is held back.
            _ = backends[i].engine.receive(message, at: clock)
            var snapshot = backends[i].engine.snapshot
            snapshot.state = .loading
            send(.capabilities(snapshot), on: id, t)
            return
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
        if command.jobMs > 0, let due = backends[i].engine.nextDeadline, backends[i].timerAt != due {
            backends[i].timerAt = due
            t.schedule(after: due - now) { t in
                if self.backends[i].timerAt == due { self.backends[i].timerAt = nil }
                self.finishDue(i, t)
            }
        }
    }

    private func perform(_ i: Int, _ actions: [WorkerEngine.Action], _ t: isolated Transport) {
        guard let link = backends[i].link else { return }
        for action in actions {
            if case .send(let m) = action {
                if case .completed = m { completed += 1 }
                send(m, on: link, t)
            }
        }
    }

    private func send(_ message: BackendToCoordinator, on id: ConnectionID, _ t: isolated Transport) {
        let bytes = message.encode()
        bytes.withUnsafeBytes { _ = t.send(utf8: $0, to: id) }
    }

    func waitReady() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            transport.assumeIsolatedIfOnLoop {
                if self.readyCount == self.backends.count { c.resume() } else { self.readyWaiter = c }
            }
        }
    }

    // MARK: - Churn

    func startChurn(_ t: isolated Transport) {
        precondition(onLoop)
        churning = true
        for i in backends.indices {
            for _ in 0..<command.window { announce(i, t) }
        }
    }

    /// Announces the next revision, alternating which model is loaded so each one changes routing state.
    private func announce(_ i: Int, _ t: isolated Transport) {
        guard churning, let link = backends[i].link, backends[i].welcomed else { return }
        backends[i].revision += 1
        backends[i].inFlight += 1
        let b = backends[i]
        let version = CapabilityVersion(incarnation: b.engine.incarnation, revision: b.engine.revision + b.revision)
        let snapshot = CapabilitySnapshot(
            version: version, state: .ready, features: b.engine.spec.features, modelsAvailable: ["m1", "m2"],
            modelsLoaded: b.revision % 2 == 0 ? ["m1"] : ["m2"], slots: b.engine.spec.slots)
        send(.capabilities(snapshot), on: link, t)
    }

    func stopChurn(_ t: isolated Transport) -> Int {
        precondition(onLoop)
        churning = false
        return churnAcks
    }

    // MARK: - Gate

    func releaseGate(_ t: isolated Transport) {
        precondition(onLoop)
        for i in backends.indices {
            guard let link = backends[i].link else { continue }
            var snapshot = backends[i].engine.snapshot
            snapshot.version.revision += 1
            send(.capabilities(snapshot), on: link, t)
        }
        gateStart = .now
    }

    func waitGateSamples() async -> [Int] {
        await withCheckedContinuation { (c: CheckedContinuation<[Int], Never>) in
            transport.assumeIsolatedIfOnLoop {
                if self.gateSamples.count >= self.command.expectAssigns { c.resume(returning: self.gateSamples) } else { self.gateWaiter = c }
            }
        }
    }

    // MARK: - Flap

    func startFlapping(_ t: isolated Transport) {
        precondition(onLoop)
        flapping = true
        for i in backends.indices { scheduleFlap(i, t) }
    }

    /// Stops flapping; returns how many link replacements there were.
    func stopFlapping(_ t: isolated Transport) -> Int {
        precondition(onLoop)
        flapping = false
        return flaps
    }

    private func scheduleFlap(_ i: Int, _ t: isolated Transport) {
        let delay = Duration.milliseconds(Int64.random(in: 50...500, using: &random))
        t.schedule(after: delay) { t in
            guard self.flapping else { return }
            self.flap(i, t)
            self.scheduleFlap(i, t)
        }
    }

    /// Drops link `i` without a goodbye and dials a new one as a restarted process.
    private func flap(_ i: Int, _ t: isolated Transport) {
        if let old = backends[i].link {
            byLink[old] = nil
            t.close(old, code: .goingAway, reason: "flap")
        }
        flaps += 1
        backends[i].engine = newEngine(backends[i].name, generation: UInt64(flaps))
        backends[i].welcomed = false
        try? dial(i, t)
    }
}

extension Transport {
    /// Runs `body` on the loop and returns its value.
    func onLoopValue<T: Sendable>(_ body: @Sendable (isolated Transport) -> T) -> T { body(self) }
    func onLoop(_ body: @Sendable (isolated Transport) -> Void) { body(self) }
    func onLoopThrowing(_ body: @Sendable (isolated Transport) throws -> Void) throws { try body(self) }

    /// Runs `body` on the loop: at once when already there, else as a hop.
    nonisolated func assumeIsolatedIfOnLoop(_ body: @escaping @Sendable () -> Void) {
        if executor.isOnLoopThread {
            body()
        } else {
            Task { await self.onLoop { _ in body() } }
        }
    }
}

/// Lines read from stdin on a dedicated thread (blocking reads, retried on EINTR).
final class StdinLines: Sendable {
    private struct State {
        var lines: [String] = []
        var ended = false
        var waiters: [CheckedContinuation<String?, Never>] = []
    }
    private let state = Locked(State())

    init() {
        Thread.detachNewThread { [self] in
            var buffer: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = chunk.withUnsafeMutableBytes { read(0, $0.baseAddress, 4096) }
                if n < 0, errno == EINTR { continue }
                if n <= 0 { break }
                buffer.append(contentsOf: chunk[0..<n])
                while let nl = buffer.firstIndex(of: 10) {
                    deliver(String(decoding: buffer[..<nl], as: UTF8.self))
                    buffer.removeSubrange(...nl)
                }
            }
            deliver(nil)
        }
    }

    private func deliver(_ line: String?) {
        let waiter = state.withLock { s -> CheckedContinuation<String?, Never>? in
            if line == nil { s.ended = true }
            if !s.waiters.isEmpty { return s.waiters.removeFirst() }
            if let line { s.lines.append(line) }
            return nil
        }
        waiter?.resume(returning: line)
        if line == nil {
            let rest = state.withLock { s -> [CheckedContinuation<String?, Never>] in
                defer { s.waiters = [] }
                return s.waiters
            }
            for w in rest { w.resume(returning: nil) }
        }
    }

    /// The next line; nil at end of input.
    func next() async -> String? {
        await withCheckedContinuation { c in
            let ready = state.withLock { s -> String?? in
                if !s.lines.isEmpty { return .some(s.lines.removeFirst()) }
                if s.ended { return .some(nil) }
                s.waiters.append(c)
                return .none
            }
            if let ready { c.resume(returning: ready) }
        }
    }

    func waitForEnd() async {
        while await next() != nil {}
    }
}
