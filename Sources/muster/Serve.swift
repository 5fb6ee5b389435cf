import ArgumentParser
import Dispatch
import Foundation
import Logging
import MusterServer
import MusterTransport
import ServiceLifecycle

/// `muster serve`: runs the coordinator until SIGTERM or SIGINT.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the coordinator.",
        discussion: """
            With no configuration it listens on 127.0.0.1:7460, keeps accepted jobs in a SQLite job \
            store ($XDG_STATE_HOME/muster/muster.sqlite, else ~/.local/state/muster/muster.sqlite; \
            --set store.url=memory: keeps none) and runs two local simulated backends \
            (one image-only, one with video and frameinterps). Every configuration key can be set in \
            the JSON file (--config), as a MUSTER_* environment variable or with --set KEY=VALUE; \
            see README.md, Configuration. A bad key or value exits with status 2 and names it. \
            SIGTERM or SIGINT stops gracefully: new work is refused, peers get goodbye and close \
            code 1001, and unfinished jobs stay in the store for the next start (README: Durable jobs). \
            Credentials: auth.token is one token for every role; auth.credentials gives each client, \
            operator, read-only viewer and backend its own token (from a file or the environment), \
            or with --tls-client-ca its own client certificate (certificate_cn: the subject CN), \
            and limits it to its role; listening beyond loopback needs both sides covered \
            (README: Security). SIGHUP reloads the credentials and the TLS certificate, key and \
            client CA without dropping links; links whose credential was revoked close with 4001. Limits per \
            peer (links.max_per_address, links.max_messages_per_second, \
            jobs.max_in_flight_per_owner) are off until set. \
            Two coordinators on one PostgreSQL store (store.url=postgres://...) elect a leader; the \
            other stands by and sends agents and clients to it (not_leader). A leader that loses \
            its lease stops routing and exits with status 75: start it again (a supervisor with \
            Restart=always) and it stands by (README: Running two coordinators).
            """)

    @OptionGroup var options: ConfigOptions

    @Flag(help: "Print the effective configuration (secrets redacted) and exit.")
    var printConfig = false

    @Flag(help: "Print the configuration reference (Markdown) and exit.")
    var configReference = false

    /// The exit status of a leader that lost its lease (EX_TEMPFAIL): restart it as a standby.
    static let deposedExitStatus: Int32 = 75

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
            // The token file is read when serving starts; read it here too, so that what
            // --print-config accepts, serve accepts.
            do {
                try config.checkTokens()
            } catch {
                ConfigExit.exit(ConfigExit(message: error.description))
            }
            print(config.printable())
            return
        }
        LogBootstrap.bootstrap(format: config.settings.log.format.rawValue, level: config.settings.log.level.rawValue)
        let logger = Logger(label: "muster")
        if config.isOpenBeyondLoopback {
            logger.warning(
                "protected mode is off (auth.allow_anonymous): anyone who can reach this address may submit, cancel, drain and register backends",
                metadata: ["listen": "\(config.settings.listen)"])
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
        // The service group watches SIGTERM/SIGINT from the moment it runs, before the daemon
        // listens: a supervisor may stop it the moment it reports that it serves.
        do {
            // SIGHUP reads the same sources again (the file, and the environment as it is now).
            let service = CoordinatorService(daemon: daemon) { [options] in try options.load() }
            try await ServiceGroup.muster(service, logger: logger).run()
        } catch {
            logger.critical("cannot start", metadata: ["error": "\(error)"])
            throw ExitCode(1)
        }
        // Deposed: a supervisor starts this coordinator again, and it stands by.
        ProcessEnd.now(await daemon.lostLeadership != nil ? Serve.deposedExitStatus : 0)
    }
}
