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
                failureRate: s.failureRate)
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
    func startLocalBackends() {
        let incarnation = Incarnation(originMs)
        let origin = self.origin
        for (index, config) in configuration.backends.filter(\.isLocal).enumerated() {
            guard let spec = WorkerSpec(config) else { continue }
            let id = BackendID(Int64(-(index + 1)))
            idsByName[config.name] = id
            namesByID[id] = config.name
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
                let runner = ComfyUIRunner(settings: settings, name: config.name, transport: transport, logger: logger)
                comfyRunners[id] = runner
                runner.start(driver: driver)
            }
            perform(core.handle(
                .backendRegistered(
                    BackendRegistration(
                        id: id, name: config.name, incarnation: incarnation, slots: spec.slots, priority: config.priority,
                        speed: config.speed, modelLoadSeconds: config.expectedLoadSeconds)),
                at: now))
            let welcome = CoordinatorToBackend.Welcome(
                backend: id, coordinator: Self.version, heartbeatMs: 0,
                syncMs: UInt64(configuration.settings.links.syncInterval.configMilliseconds),
                known: core.backend(id)?.version, bindings: [])
            logger.info(
                "local backend started",
                metadata: [
                    "backend.id": "\(id)", "backend.name": "\(config.name)", "features": "\(spec.features.joined(separator: ","))",
                    "models": "\(spec.models.joined(separator: ","))", "slots": "\(spec.slots)",
                ])
            locals[id]?.receive(.welcome(welcome))
            pump()
        }
    }
}
