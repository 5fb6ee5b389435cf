import Foundation
import Logging
import MusterBackends
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
