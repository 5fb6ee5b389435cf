import Foundation
import Logging
import MusterBackends
import MusterCore
import MusterProtocol
import MusterTransport

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
                failureRate: s.failureRate,
                // As `muster agent --speed`: the durations are at speed 1.0, jobs take them divided by it.
                speed: config.speed)
        case .exec(let e):
            self.init(
                name: config.name, features: config.features, models: config.models, slots: config.slots,
                runner: .exec(command: e.command, timeout: seconds(e.timeoutSeconds)))
        case .comfyui:
            // Features, models and node classes come from the server; `features` adds to them.
            self.init(name: config.name, features: [], models: [], slots: config.slots, runner: .external)
        case .remote:
            return nil
        }
    }
}

extension Daemon {
    /// Registers every local backend of the configuration (ids -1, -2, ... in order) and lets it
    /// announce, exactly as a remote backend would after its `welcome`. Each runs on a
    /// `WorkerDriver`; its messages reach the core without JSON, through `localInbox`.
    ///
    /// A local ComfyUI backend that held jobs when the coordinator stopped (the store restored
    /// its bindings) keeps its incarnation: its server may still queue or run those prompts, or
    /// have finished them. It registers once the server was asked for the prompts of its name
    /// (`resumeLocal`), so a prompt it takes back is not posted again.
    func startLocalBackends() {
        let fresh = Incarnation(originMs)
        let origin = self.origin
        for (index, config) in configuration.backends.filter(\.isLocal).enumerated() {
            guard let spec = WorkerSpec(config) else { continue }
            let id = BackendID(Int64(-(index + 1)))
            idsByName[config.name] = id
            namesByID[id] = config.name
            var incarnation = fresh
            var resumes = false
            if case .comfyui = config.kind, let known = core.backend(id), known.name == config.name, let stored = known.incarnation {
                incarnation = stored
                resumes = true
            }
            let engine = WorkerEngine(
                spec: spec, incarnation: incarnation, epochMs: originMs, seed: UInt64(index + 1), at: CoreInstant.elapsed(since: origin))
            locals[id] = WorkerDriver(
                engine: engine, transport: transport, limits: limits, clock: { CoreInstant.elapsed(since: origin) },
                output: { [weak self] action in
                    self?.assumeIsolated { d in
                        switch action {
                        case .send(let message): d.localInbox.append((id, message))
                        case .drained: d.logger.info("local backend drained", metadata: ["backend.id": "\(id)"])
                        default: break
                        }
                    }
                },
                settled: { [weak self] in self?.assumeIsolated { $0.pump() } })
            if case .comfyui(let c) = config.kind, let driver = locals[id] {
                let settings = ComfyUISettings(
                    url: c.url, featureMap: ComfyUIFeatureMap.defaults.merging(c.featureMap), extraFeatures: config.features)
                let runner = ComfyUIRunner(
                    settings: settings, name: config.name, transport: transport, logger: logger,
                    clientID: ComfyUIRunner.clientID(name: config.name, incarnation: incarnation))
                comfyRunners[id] = runner
                runner.start(driver: driver)
                if resumes {
                    logger.info(
                        "local backend held jobs when the coordinator stopped: asking its ComfyUI for their prompts",
                        metadata: ["backend.id": "\(id)", "bindings": "\(core.bindings(of: id).count)"])
                    // Asked within half the suspect grace, so the restored bindings are still
                    // there to take back when the answer comes.
                    let grace = configuration.settings.links.suspectGrace
                    let deadline = ContinuousClock.now + min(grace / 2, .seconds(5))
                    runner.findPrompts(until: deadline) { [weak self] found in
                        self?.assumeIsolated { $0.resumeLocal(id, config: config, spec: spec, incarnation: incarnation, found: found) }
                    }
                    continue
                }
            }
            registerLocal(id, config: config, spec: spec, incarnation: incarnation)
        }
    }

    /// Registers local backend `id` with the core and welcomes it; `adopt` runs between the two,
    /// with the registration's actions performed (the jobs bound to it are known then).
    private func registerLocal(
        _ id: BackendID, config: BackendConfig, spec: WorkerSpec, incarnation: Incarnation, holding: [Wire.HeldJob] = [],
        adopt: () -> Void = {}
    ) {
        perform(core.handle(
            .backendRegistered(
                BackendRegistration(
                    id: id, name: config.name, incarnation: incarnation, slots: spec.slots, priority: config.priority,
                    speed: config.speed, modelLoadSeconds: config.expectedLoadSeconds, holding: holding)),
            at: now))
        adopt()
        let welcome = CoordinatorToBackend.Welcome(
            backend: id, coordinator: Self.version, heartbeatMs: 0,
            syncMs: UInt64(configuration.settings.links.syncInterval.configMilliseconds),
            known: core.backend(id)?.version, bindings: core.bindings(of: id).map { Wire.Binding(job: $0.job, lease: $0.lease) })
        logger.info(
            "local backend started",
            metadata: [
                "backend.id": "\(id)", "backend.name": "\(config.name)", "features": "\(spec.features.joined(separator: ","))",
                "models": "\(spec.models.joined(separator: ","))", "slots": "\(spec.slots)",
                "bindings": "\(welcome.bindings.count)",
            ])
        locals[id]?.receive(.welcome(welcome))
        pump()
    }

    /// A local ComfyUI backend after a restart of the coordinator, once its server said which of
    /// its prompts it still queues, runs or lists as ended (`found`; nil: it did not answer).
    /// Prompts of jobs still bound to it under the same lease are taken back: the engine holds
    /// those jobs again and the runner follows the prompts (or reads how they ended). A prompt
    /// whose binding was sent but not stored is claimed as `muster agent` claims it in its
    /// `hello` (Durable jobs). Every other binding is answered `unknown_job` and requeued, and
    /// every other prompt of ours is deleted from the server so it does not run beside the
    /// job's next attempt.
    private func resumeLocal(
        _ id: BackendID, config: BackendConfig, spec: WorkerSpec, incarnation: Incarnation,
        found: [ComfyUIMapping.PostedPrompt]?
    ) {
        guard !stopping, let driver = locals[id], let runner = comfyRunners[id] else { return }
        if driver.incarnation != incarnation {
            // The server went away during the lookup and the backend is a new process already:
            // what it held is requeued, and what the server still has of it is not taken back.
            logger.warning(
                "the ComfyUI of a local backend went away while asked for its prompts: the jobs it held run again",
                metadata: ["backend.id": "\(id)", "backend.name": "\(config.name)"])
            registerLocal(id, config: config, spec: spec, incarnation: driver.incarnation)
            for p in found ?? [] where p.queued { runner.dropOnServer(p.id) }
            return
        }
        if found == nil {
            logger.warning(
                "the ComfyUI of a local backend did not answer: the jobs it held run again, and its earlier prompts are deleted once it answers",
                metadata: ["backend.id": "\(id)", "backend.name": "\(config.name)"])
            runner.sweepOrphansWhenUp()
        }
        let prompts = found ?? []
        let stored = Dictionary(core.bindings(of: id).map { ($0.job, $0.lease) }, uniquingKeysWith: { a, _ in a })
        // A job whose binding was sent and not stored came back queued, or gated while this
        // backend has not announced: the core's claim decides (attempt, lease from before).
        let holding = prompts.filter { p in
            stored[p.job] == p.lease || core.job(p.job).map { $0.state == .queued || $0.state == .gated } == true
        }
            .map { Wire.HeldJob(job: $0.job, lease: $0.lease, attempt: $0.attempt) }
        var adopted: [(assign: CoordinatorToBackend.Assign, prompt: String)] = []
        registerLocal(id, config: config, spec: spec, incarnation: incarnation, holding: holding) {
            let bound = Dictionary(core.bindings(of: id).map { ($0.job, $0.lease) }, uniquingKeysWith: { a, _ in a })
            for p in prompts {
                guard bound[p.job] == p.lease, let job = core.job(p.job), !adopted.contains(where: { $0.assign.job == p.job }) else {
                    if p.queued { runner.dropOnServer(p.id) }
                    continue
                }
                let a = Self.assign(p.job, batch: job.batch, spec: job.spec, lease: p.lease, attempt: job.attempt)
                driver.external { e, _ in
                    e.adopt(a)
                    return []
                }
                adopted.append((a, p.id))
            }
        }
        runner.adopt(adopted)
    }
}
