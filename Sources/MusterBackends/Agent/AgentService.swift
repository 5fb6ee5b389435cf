import Foundation
import Logging
import ServiceLifecycle
import UnixSignals

/// An agent as a `Service`: `run()` links (or listens to be dialled) and works until graceful
/// shutdown, which drains it: announce `draining`, finish the jobs it has, say `goodbye`, stop.
/// A drain that takes longer than `bound` (when given) ends the process with status 1. SIGUSR1
/// ends a simulated start-up delay (`Agent.finishLoading`).
public struct AgentService: Service {
    public let agent: Agent
    public let logger: Logger
    public let bound: Duration?

    public init(agent: Agent, logger: Logger, shutdownBound bound: Duration? = nil) {
        self.agent = agent
        self.logger = logger
        self.bound = bound
    }

    public func run() async throws {
        // Trapped before the agent links: a SIGUSR1 right after "registered" must not kill it.
        let usr1 = await UnixSignalsSequence(trapping: .sigusr1)
        try await withGracefulShutdownHandler {
            _ = try await agent.start()
            await withTaskGroup(of: Void.self) { group in
                group.addTask { [agent] in
                    for await _ in usr1 { await agent.finishLoading() }
                }
                await agent.waitUntilStopped()
                group.cancelAll()
            }
        } onGracefulShutdown: { [agent, logger, bound] in
            logger.notice("graceful shutdown requested: draining")
            if let bound { exitIfNotDone(within: bound, logger: logger) }
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
package func exitIfNotDone(within bound: Duration, logger: Logger) {
    let (seconds, attoseconds) = bound.components
    let deadline = DispatchTime.now() + .nanoseconds(Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000))
    DispatchQueue.global().asyncAfter(deadline: deadline) {
        logger.error("shutdown did not finish in time: exiting")
        exit(1)
    }
}
