import ArgumentParser
import Foundation
import MusterServer

/// The configuration flags `muster serve` shares with other commands that start a coordinator.
/// Each flag is a shorthand for one configuration key; `--set KEY=VALUE` reaches every key.
struct ConfigOptions: ParsableArguments {
    @Option(name: .long, help: "JSON configuration file (see README: Configuration).")
    var config: String?

    @Option(name: .long, help: "HOST:PORT to listen on (key listen; port 0 picks a free port, named in the `muster serving` log line).")
    var listen: String?

    @Option(name: .long, help: "File whose first line is the shared token (key auth.token_file).")
    var tokenFile: String?

    @Option(name: .long, help: "PEM certificate: serve wss:// and https:// (key tls.cert).")
    var tlsCert: String?

    @Option(name: .long, help: "PEM private key for --tls-cert (key tls.key).")
    var tlsKey: String?

    @Option(name: .long, help: "Require client certificates signed by this CA; auth.credentials may bind one by its CN (key tls.client_ca).")
    var tlsClientCa: String?

    @Option(name: .long, help: "trace, debug, info, notice, warning, error or critical (key log.level).")
    var logLevel: String?

    @Option(name: .long, help: "text or json (key log.format).")
    var logFormat: String?

    @Option(name: .customLong("set"), parsing: .singleValue, help: ArgumentHelp("Set any configuration key, e.g. --set gate.window_seconds=30 (repeatable).", valueName: "KEY=VALUE"))
    var settings: [String] = []

    /// Loads the effective configuration, or prints the offending source and key and exits 2.
    func load() throws -> Configuration {
        var overrides: [(source: String, key: String, value: String)] = []
        for s in settings {
            guard let eq = s.firstIndex(of: "=") else {
                throw ConfigExit(message: "flag --set: '\(s)' is not KEY=VALUE")
            }
            overrides.append(("flag --set", String(s[..<eq]), String(s[s.index(after: eq)...])))
        }
        let flags: [(String, String, String?)] = [
            ("--listen", "listen", listen), ("--token-file", "auth.token_file", tokenFile),
            ("--tls-cert", "tls.cert", tlsCert), ("--tls-key", "tls.key", tlsKey),
            ("--tls-client-ca", "tls.client_ca", tlsClientCa), ("--log-level", "log.level", logLevel),
            ("--log-format", "log.format", logFormat),
        ]
        for (flag, key, value) in flags {
            if let value { overrides.append(("flag \(flag)", key, value)) }
        }
        do {
            return try Configuration.load(file: config, overrides: overrides)
        } catch {
            throw ConfigExit(message: error.description)
        }
    }
}

/// A configuration error: printed as `muster: <source>: key '<key>': <why>`, exit status 2.
struct ConfigExit: Error, CustomStringConvertible {
    var message: String
    var description: String { message }

    static func exit(_ error: ConfigExit) -> Never {
        FileHandle.standardError.write(Data("muster: \(error.message)\n".utf8))
        Foundation.exit(2)
    }
}
