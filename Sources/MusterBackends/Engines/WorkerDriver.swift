import Foundation
import MusterCore
import MusterProtocol
import MusterTransport

/// Runs a `WorkerEngine` on the transport's event loop: arms one timer for the engine's next
/// deadline, starts and kills its exec processes, and hands its messages to the owner (the daemon
/// for a local pseudo-backend, `muster agent` for a remote one).
///
/// `output` receives every `.send` and `.drained` action in order. `settled` is called after work
/// that came from outside the owner's own calls (a timer, an exec process ending), so the owner can
/// process what `output` queued; calls the owner makes itself (`receive`, `drain`) never trigger it,
/// which keeps the owner from being re-entered in the middle of its own work.
package final class WorkerDriver: @unchecked Sendable {
    // @unchecked Sendable: every stored property is read and written only on the transport's loop
    // thread; each entry point checks that with `precondition(onLoop)`. Exec completions arrive on
    // helper threads and are moved onto the loop before they touch anything.

    let transport: Transport
    private(set) var engine: WorkerEngine
    private let clock: @Sendable () -> CoreInstant
    private let limits: ProtocolLimits
    private let output: (WorkerEngine.Action) -> Void
    private let settled: () -> Void
    private var timer: (id: TimerID, at: CoreInstant)?
    /// Running exec processes, by job and lease (a killed one stays until it was reaped).
    private var execs: [ExecKey: ExecProcess] = [:]
    struct ExecKey: Hashable {
        var job: JobID
        var lease: Lease
    }
    private var stopped = false
    /// Performs the `.run`, `.stop` and `.loadModel` actions of an external runner (ComfyUI).
    package var externalRunner: ((WorkerEngine.Action) -> Void)?

    /// The engine's incarnation now (a runner may have made it take a newer one).
    package var incarnation: Incarnation { engine.incarnation }

    package init(
        engine: WorkerEngine, transport: Transport, limits: ProtocolLimits, clock: @escaping @Sendable () -> CoreInstant,
        output: @escaping (WorkerEngine.Action) -> Void, settled: @escaping () -> Void = {}
    ) {
        self.engine = engine
        self.transport = transport
        self.limits = limits
        self.clock = clock
        self.output = output
        self.settled = settled
    }

    private var onLoop: Bool { transport.executor.isOnLoopThread }

    /// A message from the coordinator.
    package func receive(_ message: CoordinatorToBackend) {
        precondition(onLoop)
        perform(engine.receive(message, at: clock()))
    }

    /// Stop taking work; `.drained` follows once every job is done and reported.
    package func drain() {
        precondition(onLoop)
        perform(engine.drain())
    }

    package func linkDown() {
        precondition(onLoop)
        engine.linkDown()
    }

    /// An external runner's report (server started a job, progress, outcome, capabilities):
    /// applies it to the engine and performs what follows.
    package func external(_ report: (inout WorkerEngine, CoreInstant) -> [WorkerEngine.Action]) {
        precondition(onLoop)
        guard !stopped else { return }
        perform(report(&engine, clock()))
        settled()
    }

    /// Kills every exec process and stops the timer (shutdown).
    package func stop() {
        precondition(onLoop)
        stopped = true
        for process in execs.values { process.cancel() }
        execs = [:]
        if let timer { transport.assumeIsolated { $0.cancel(timer.id) } }
        timer = nil
    }

    private func perform(_ actions: [WorkerEngine.Action]) {
        for action in actions {
            switch action {
            case .send, .drained:
                output(action)
            case .startExec(let job, let lease, let input):
                startExec(job: job, lease: lease, input: input)
            case .killExec(let job, let lease):
                execs[ExecKey(job: job, lease: lease)]?.cancel()  // `execEnded` follows once the process exited and was reaped
            case .run, .stop, .loadModel:
                externalRunner?(action)
            }
        }
        armTimer()
    }

    private func armTimer() {
        guard !stopped else { return }
        let next = engine.nextDeadline
        if let current = timer, let next, current.at == next { return }
        if let old = timer?.id { transport.assumeIsolated { $0.cancel(old) } }
        timer = nil
        guard let next else { return }
        let now = clock()
        let delay = next > now ? next - now : .zero
        let id = transport.assumeIsolated { t in
            t.schedule(after: delay) { [weak self] _ in
                guard let self else { return }
                self.timer = nil
                self.perform(self.engine.tick(at: self.clock()))
                self.settled()
            }
        }
        timer = (id, next)
    }

    private func startExec(job: JobID, lease: Lease, input: String) {
        guard case .exec(let command, let timeout) = engine.spec.runner else { return }
        do {
            let process = try ExecProcess.start(command: command, input: Data(input.utf8), timeout: timeout, outputLimit: limits.maxResultBytes) {
                [weak self] outcome in
                guard let self else { return }
                Task { await self.transport.onLoop { _ in self.execEnded(job: job, lease: lease, outcome: outcome) } }
            }
            execs[ExecKey(job: job, lease: lease)] = process
        } catch {
            execEnded(job: job, lease: lease, outcome: .failed(status: "not started", stderrTail: "\(error)"))
        }
    }

    private func execEnded(job: JobID, lease: Lease, outcome: ExecProcess.Outcome) {
        precondition(onLoop)
        execs[ExecKey(job: job, lease: lease)] = nil
        let result: WorkerEngine.ExecResult
        switch outcome {
        case .exited(let output):
            result = .output(String(decoding: output, as: UTF8.self))
        case .failed(let status, let tail):
            result = .failed(code: .jobFailed, message: tail.isEmpty ? "the command ended with \(status)" : "the command ended with \(status): \(tail)", retryable: false)
        case .timedOut(let tail):
            result = .failed(code: .jobTimeout, message: "the command ran past its timeout and was killed" + (tail.isEmpty ? "" : ": \(tail)"), retryable: false)
        case .outputTooLarge(let limit):
            result = .failed(code: .limitExceeded, message: "the command wrote more than \(limit) bytes to stdout", retryable: false)
        case .canceled:
            // Killed for a cancel (or a revoke): a canceled job's cancel is confirmed now that its
            // process is gone; any other job was already forgotten and this changes nothing.
            result = .failed(code: .canceled, message: "the command was killed: canceled", retryable: false)
        }
        perform(engine.execFinished(job: job, lease: lease, result: result, limits: limits, at: clock()))
        settled()
    }
}

extension Transport {
    /// Runs `body` on the loop (for work that starts on another thread).
    func onLoop(_ body: @Sendable (isolated Transport) -> Void) {
        body(self)
    }
}
