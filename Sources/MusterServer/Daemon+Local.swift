import Foundation
import Logging
import MusterCore
import MusterProtocol
import MusterTransport

/// A pseudo-backend inside the coordinator (negative id): a `WorkerEngine` driven on the loop,
/// its messages handed to the core without JSON, its exec jobs run as child processes.
struct LocalBackend {
    var engine: WorkerEngine
    var timer: (id: TimerID, at: CoreInstant)?
    var execs: [JobID: ExecProcess] = [:]

    func killAll() {
        for process in execs.values { process.cancel() }
    }
}

extension WorkerSpec {
    /// The worker a `simulated` or `exec` backend entry describes.
    init?(_ config: BackendConfig) {
        func seconds(_ s: Double) -> Duration { .milliseconds(Int64(s * 1000)) }
        switch config.kind {
        case .simulated(let s):
            self.init(
                name: config.name, features: config.features, models: config.models, slots: config.slots,
                runner: .simulated, startupDelay: seconds(s.startupDelaySeconds),
                jobDurations: s.jobSeconds.mapValues(seconds), modelLoadTime: seconds(s.modelLoadSeconds),
                failureRate: s.failureRate)
        case .exec(let e):
            self.init(
                name: config.name, features: config.features, models: config.models, slots: config.slots,
                runner: .exec(command: e.command, timeout: seconds(e.timeoutSeconds)))
        case .remote:
            return nil
        }
    }
}

extension Daemon {
    /// Registers every local backend of the configuration (ids -1, -2, ... in order) and lets it
    /// announce, exactly as a remote backend would after its `welcome`.
    func startLocalBackends() {
        let incarnation = Incarnation(originMs)
        for (index, config) in configuration.backends.filter(\.isLocal).enumerated() {
            guard let spec = WorkerSpec(config) else { continue }
            let id = BackendID(Int64(-(index + 1)))
            idsByName[config.name] = id
            namesByID[id] = config.name
            locals[id] = LocalBackend(engine: WorkerEngine(spec: spec, incarnation: incarnation, epochMs: originMs, seed: UInt64(index + 1), at: now))
            perform(core.handle(
                .backendRegistered(BackendRegistration(id: id, name: config.name, incarnation: incarnation, slots: spec.slots, priority: config.priority)),
                at: now))
            let welcome = CoordinatorToBackend.Welcome(
                backend: id, coordinator: Self.version, heartbeatMs: 0,
                syncMs: UInt64(configuration.seconds("links.sync_interval_seconds") * 1000),
                known: core.backend(id)?.version, bindings: [])
            logger.info(
                "local backend started",
                metadata: [
                    "backend.id": "\(id)", "backend.name": "\(config.name)", "features": "\(spec.features.joined(separator: ","))",
                    "models": "\(spec.models.joined(separator: ","))", "slots": "\(spec.slots)",
                ])
            localReceive(.welcome(welcome), id: id)
            pump()
        }
    }

    /// A message from the core to a local backend.
    func localReceive(_ message: CoordinatorToBackend, id: BackendID) {
        guard var local = locals[id] else { return }
        let actions = local.engine.receive(message, at: now)
        locals[id] = local
        localPerform(actions, id: id)
    }

    func localPerform(_ actions: [WorkerEngine.Action], id: BackendID) {
        for action in actions {
            switch action {
            case .send(let message):
                localInbox.append((id, message))
            case .startExec(let job, let lease, let input):
                startExec(job: job, lease: lease, input: input, backend: id)
            case .killExec(let job, _):
                locals[id]?.execs.removeValue(forKey: job)?.cancel()
            case .drained:
                logger.info("local backend drained", metadata: ["backend.id": "\(id)"])
            }
        }
        armLocalTimer(id)
    }

    private func startExec(job: JobID, lease: Lease, input: String, backend: BackendID) {
        guard case .exec(let command, let timeout) = locals[backend]?.engine.spec.runner else { return }
        do {
            let process = try ExecProcess.start(command: command, input: Data(input.utf8), timeout: timeout, outputLimit: limits.maxResultBytes) {
                [weak self] outcome in
                Task { await self?.execEnded(job: job, lease: lease, backend: backend, outcome: outcome) }
            }
            locals[backend]?.execs[job] = process
        } catch {
            execEnded(job: job, lease: lease, backend: backend, outcome: .failed(status: "not started", stderrTail: "\(error)"))
        }
    }

    private func execEnded(job: JobID, lease: Lease, backend: BackendID, outcome: ExecProcess.Outcome) {
        guard var local = locals[backend] else { return }
        local.execs[job] = nil
        let result: WorkerEngine.ExecResult
        switch outcome {
        case .exited(let output):
            result = .output(String(decoding: output, as: UTF8.self))
        case .failed(let status, let tail):
            result = .failed(code: .jobFailed, message: tail.isEmpty ? "the command ended with \(status)" : "the command ended with \(status): \(tail)", retryable: false)
        case .timedOut(let tail):
            result = .failed(code: ErrorCode("job_timeout"), message: "the command ran past its timeout and was killed" + (tail.isEmpty ? "" : ": \(tail)"), retryable: false)
        case .outputTooLarge(let limit):
            result = .failed(code: .limitExceeded, message: "the command wrote more than \(limit) bytes to stdout", retryable: false)
        case .canceled:
            locals[backend] = local
            return
        }
        let actions = local.engine.execFinished(job: job, lease: lease, result: result, limits: limits, at: now)
        locals[backend] = local
        localPerform(actions, id: backend)
        pump()
    }

    /// One transport timer per local backend, for its engine's next deadline.
    func armLocalTimer(_ id: BackendID) {
        guard !stopping, let local = locals[id] else { return }
        let next = local.engine.nextDeadline
        if let current = local.timer, let next, current.at == next { return }
        locals[id]?.timer = nil
        if let old = local.timer?.id { transport.assumeIsolated { $0.cancel(old) } }
        guard let next else { return }
        let current = now
        let delay = next > current ? next - current : .zero
        let timer = transport.assumeIsolated { t in
            t.schedule(after: delay) { [weak self] _ in
                self?.assumeIsolated { d in
                    guard var local = d.locals[id] else { return }
                    local.timer = nil
                    let actions = local.engine.tick(at: d.now)
                    d.locals[id] = local
                    d.localPerform(actions, id: id)
                    d.pump()
                }
            }
        }
        locals[id]?.timer = (timer, next)
    }
}
