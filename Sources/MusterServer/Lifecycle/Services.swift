import Foundation
import Logging
import ServiceLifecycle
import UnixSignals

/// The coordinator as a swift-service-lifecycle `Service`: `run()` listens and serves until the
/// group's graceful shutdown (SIGTERM or SIGINT in `muster serve`), which refuses new work, says
/// `goodbye` to every peer, logs what is still queued and closes every link with 1001. `run()`
/// returns once the daemon has stopped. A shutdown that takes longer than `bound` ends the
/// process with status 1.
///
/// With `reload`, SIGHUP reads the configuration again through it and hands it to
/// `Daemon.reload` (credentials and the TLS certificate; README "Security"); a configuration that
/// does not load changes nothing and is logged.
public struct CoordinatorService: Service {
    public let daemon: Daemon
    public let bound: Duration
    public let reload: (@Sendable () throws -> Configuration)?

    public init(
        daemon: Daemon, shutdownBound bound: Duration = .seconds(15),
        reload: (@Sendable () throws -> Configuration)? = nil
    ) {
        self.daemon = daemon
        self.bound = bound
        self.reload = reload
    }

    public func run() async throws {
        // Trapped before the daemon listens: a SIGHUP right after "muster serving" must not kill it.
        let hangups: UnixSignalsSequence? = reload == nil ? nil : await UnixSignalsSequence(trapping: .sighup)
        try await withGracefulShutdownHandler {
            do {
                _ = try await daemon.start()
            } catch {
                // A shutdown that began while the daemon was still starting is not a failure.
                if await daemon.isStopping {
                    await daemon.waitUntilStopped()
                    return
                }
                throw error
            }
            await withTaskGroup(of: Void.self) { group in
                if let hangups, let reload {
                    group.addTask { [daemon] in
                        for await _ in hangups {
                            daemon.logger.notice("SIGHUP: reloading credentials and the TLS certificate")
                            let configuration: Configuration
                            do {
                                configuration = try reload()
                            } catch {
                                await daemon.reloadRefused(error)
                                continue
                            }
                            do {
                                try await daemon.reload(configuration)
                            } catch {
                                daemon.logger.error("reload incomplete", metadata: ["error": "\(error)"])
                            }
                        }
                    }
                }
                await daemon.waitUntilStopped()
                group.cancelAll()
            }
        } onGracefulShutdown: { [daemon, bound] in
            daemon.logger.notice("graceful shutdown requested")
            exitIfNotDone(within: bound, logger: daemon.logger)
            Task { await daemon.shutdown() }
        }
    }
}

/// An agent as a `Service`: `run()` links (or listens to be dialled) and works until graceful
/// shutdown, which drains it: announce `draining`, finish the jobs it has, say `goodbye`, stop.
/// A drain that takes longer than `bound` ends the process with status 1.
public struct AgentService: Service {
    public let agent: Agent
    public let logger: Logger
    public let bound: Duration

    public init(agent: Agent, logger: Logger, shutdownBound bound: Duration = .seconds(15)) {
        self.agent = agent
        self.logger = logger
        self.bound = bound
    }

    public func run() async throws {
        try await withGracefulShutdownHandler {
            _ = try await agent.start()
            await agent.waitUntilStopped()
        } onGracefulShutdown: { [agent, logger, bound] in
            logger.notice("graceful shutdown requested: draining")
            exitIfNotDone(within: bound, logger: logger)
            Task { await agent.drain() }
        }
    }
}

extension ServiceGroup {
    /// One service under SIGTERM/SIGINT graceful shutdown. Signals are watched from the moment
    /// the group runs, before the service listens: a supervisor may stop it as soon as it serves.
    /// A service that ends by itself (a drained agent, a daemon stopped from within) ends the
    /// group normally: that is not a failure.
    public static func muster(_ service: any Service, logger: Logger) -> ServiceGroup {
        ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [.init(service: service, successTerminationBehavior: .gracefullyShutdownGroup)],
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
    }
}

/// The last resort of a graceful shutdown that hangs: log and exit 1 once `bound` has passed.
private func exitIfNotDone(within bound: Duration, logger: Logger) {
    let (seconds, attoseconds) = bound.components
    let deadline = DispatchTime.now() + .nanoseconds(Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000))
    DispatchQueue.global().asyncAfter(deadline: deadline) {
        logger.error("shutdown did not finish in time: exiting")
        exit(1)
    }
}
