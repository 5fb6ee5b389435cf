import ArgumentParser
import Dispatch
import Foundation
import Logging
import MusterServer
import MusterTransport

/// `muster serve`: runs the coordinator until SIGTERM or SIGINT.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the coordinator.",
        discussion: """
            With no configuration it listens on 127.0.0.1:7460 and runs two local simulated backends \
            (one image-only, one with video and frameinterps). Every configuration key can be set in \
            the JSON file (--config), as a MUSTER_* environment variable or with --set KEY=VALUE; \
            see README.md, Configuration. A bad key or value exits with status 2 and names it. \
            SIGTERM or SIGINT stops gracefully: new work is refused, peers get goodbye and close \
            code 1001, and jobs still queued are reported in the log.
            """)

    @OptionGroup var options: ConfigOptions

    @Flag(help: "Print the effective configuration (secrets redacted) and exit.")
    var printConfig = false

    @Flag(help: "Print the configuration reference (Markdown) and exit.")
    var configReference = false

    func run() async throws {
        if configReference {
            print(ConfigKey.referenceMarkdown(), terminator: "")
            return
        }
        let config: Configuration
        do {
            config = try options.load()
        } catch let error as ConfigExit {
            ConfigExit.exit(error)
        }
        if printConfig {
            print(config.printable())
            return
        }
        LogBootstrap.bootstrap(format: config.logFormat, level: config.logLevel)
        let logger = Logger(label: "muster")
        if config.isOpenBeyondLoopback {
            logger.warning(
                "protected mode is off (auth.allow_anonymous): anyone who can reach this address may submit, cancel, drain and register backends",
                metadata: ["listen": "\(config.listen)"])
        }
        signal(SIGPIPE, SIG_IGN)
        let daemon: Daemon
        do {
            daemon = try Daemon(configuration: config, logger: logger)
        } catch let error as ConfigError {
            ConfigExit.exit(ConfigExit(message: error.description))
        } catch {
            logger.critical("cannot start", metadata: ["error": "\(error)"])
            throw ExitCode(1)
        }
        // Signals are watched before the daemon listens: a supervisor may stop it the moment it
        // reports that it serves, and that signal must not be lost.
        let signals = SignalHandler(logger: logger) { await daemon.shutdown() }
        defer { signals.cancel() }
        do {
            try await daemon.start()
        } catch {
            if await daemon.isStopping { return }
            logger.critical("cannot start", metadata: ["error": "\(error)"])
            throw ExitCode(1)
        }
        await daemon.waitUntilStopped()
    }
}

/// Turns SIGTERM and SIGINT into one graceful shutdown; a second signal, or a shutdown that
/// takes longer than `bound`, ends the process at once.
final class SignalHandler {
    private let sources: [any DispatchSourceSignal]

    init(logger: Logger, bound: Duration = .seconds(15), shutdown: @escaping @Sendable () async -> Void) {
        let queue = DispatchQueue(label: "muster.signals")
        let seen = Locked(false)
        var sources: [any DispatchSourceSignal] = []
        for sig in [SIGTERM, SIGINT] {
            // The default action goes first; libdispatch then installs its own handler for the
            // source (ignoring the signal after that would remove it again).
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: queue)
            source.setEventHandler {
                let again = seen.withLock { s -> Bool in
                    defer { s = true }
                    return s
                }
                if again {
                    logger.warning("second signal: exiting now")
                    exit(1)
                }
                logger.notice("signal received, shutting down", metadata: ["signal": "\(sig == SIGTERM ? "SIGTERM" : "SIGINT")"])
                queue.asyncAfter(deadline: .now() + .milliseconds(Int(bound.components.seconds * 1000))) {
                    logger.error("shutdown did not finish in time: exiting")
                    exit(1)
                }
                Task { await shutdown() }
            }
            source.resume()
            sources.append(source)
        }
        self.sources = sources
    }

    func cancel() {
        for s in sources { s.cancel() }
    }
}
