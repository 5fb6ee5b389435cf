import ArgumentParser
import Foundation
import Logging
import MusterClient
import MusterProtocol
import MusterTransport

/// The options of the commands that talk to a running coordinator as a client.
struct ClientOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "Coordinator to talk to: ws://HOST:PORT or wss://HOST:PORT (http:// and https:// are mapped; a bare HOST means port 7460). "
                + "Two coordinators on one database: both, separated by a comma (ws://a:7460,ws://b:7460); "
                + "they are tried in order and a standby's not_leader is followed to the leader.",
            valueName: "URLS"))
    var coordinator = "ws://127.0.0.1:7460"

    @Option(help: "The coordinator's client token (its auth.token), if it requires one.")
    var token: String?

    @Option(help: ArgumentHelp("File whose first line is the client token.", valueName: "FILE"))
    var tokenFile: String?

    // Unconditional: `--timeout -1` reaches the range check instead of reading as a flag.
    @Option(parsing: .unconditional, help: ArgumentHelp("Seconds to wait for the connection and for each answer (more than 0, at most 86400).", valueName: "SECONDS"))
    var timeout: Double = 30

    @Option(
        help: ArgumentHelp(
            "CA bundle (PEM) to verify a wss:// coordinator against, instead of the system store.", valueName: "FILE"))
    var tlsCa: String?

    @Option(
        help: ArgumentHelp(
            "PEM client certificate for a wss:// coordinator that requires one (its tls.client_ca; the "
                + "certificate_cn credential it matches says the role); with --key-file.", valueName: "FILE"))
    var certFile: String?

    @Option(help: ArgumentHelp("PEM private key of --cert-file.", valueName: "FILE"))
    var keyFile: String?

    func validate() throws {
        if token != nil, tokenFile != nil { throw ValidationError("give --token or --token-file, not both") }
        guard (certFile == nil) == (keyFile == nil) else { throw ValidationError("--cert-file and --key-file go together") }
        for (flag, path) in [("--cert-file", certFile), ("--key-file", keyFile)] {
            if let path, !FileManager.default.isReadableFile(atPath: path) {
                throw ValidationError("\(flag): cannot read '\(path)'")
            }
        }
        guard timeout > 0, timeout <= 86_400 else {
            throw ValidationError("--timeout must be more than 0 and at most 86400 seconds, got \(timeout)")
        }
        do {
            _ = try MusterClient.Options(coordinator: coordinator).webSocketURLs()
        } catch {
            throw ValidationError("--coordinator: \(error.message)")
        }
    }

    /// The token from `--token` or the first line of `--token-file`.
    func resolvedToken() throws -> String? {
        if let token { return token }
        guard let tokenFile else { return nil }
        guard let data = FileManager.default.contents(atPath: tokenFile) else {
            throw ClientExit(message: "--token-file: cannot read '\(tokenFile)'")
        }
        let first = String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline).first
        guard let token = first?.trimmingCharacters(in: .whitespaces), !token.isEmpty else {
            throw ClientExit(message: "--token-file: '\(tokenFile)' holds no token on its first line")
        }
        return token
    }

    /// The options `withClient` connects with.
    func clientOptions() -> MusterClient.Options {
        var options = MusterClient.Options(coordinator: coordinator, name: Self.clientName)
        options.token = try? resolvedToken()
        options.connectTimeout = .milliseconds(Int64(timeout * 1000))
        options.requestTimeout = .milliseconds(Int64(timeout * 1000))
        if tlsCa != nil || certFile != nil {
            options.tls = ClientTLS(caFile: tlsCa, certificateFile: certFile, privateKeyFile: keyFile)
        }
        return options
    }

    /// Connects, runs `body`, and closes. Errors (the coordinator's or the link's) are printed as
    /// `muster: <code>: <message>` and end the command with status 1. With `retrying`, a
    /// transient failure to connect (refused, `store_unavailable`, `shutting_down`, `not_leader`:
    /// a coordinator restarting) is retried with backoff for up to `--timeout`.
    func withClient<T>(retrying: Bool = false, _ body: (MusterClient) async throws -> T) async throws -> T {
        LogBootstrap.bootstrapForClient()
        do {
            _ = try resolvedToken()
        } catch let exit as ClientExit {
            exit.fail()
        }
        let options = clientOptions()
        let client: MusterClient
        do {
            if retrying {
                let deadline = ContinuousClock.now + .milliseconds(Int64(timeout * 1000))
                client = try await MusterClient.connect(options, logger: Logger(label: "muster.client"), retryingUntil: deadline)
            } else {
                client = try await MusterClient.connect(options, logger: Logger(label: "muster.client"))
            }
        } catch {
            ClientExit.fail(error)
        }
        do {
            let result = try await body(client)
            await client.close()
            return result
        } catch let error as MusterClientError {
            await client.close()
            ClientExit.fail(error)
        } catch {
            await client.close()
            throw error
        }
    }

    /// The login name when it is a valid client name (it becomes the default owner of jobs):
    /// `USER`, else `LOGNAME`, else the user database's name for this process's user (a shell
    /// started by a service or `sudo -i` may set neither), else `muster-cli`.
    static var clientName: String {
        func valid(_ user: String) -> Bool {
            !user.isEmpty && user.utf8.count <= 64 && user.first != "." && user.first != "-" && user.first != "_"
                && user.utf8.allSatisfy {
                    $0.isASCIIAlnum || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-")
                }
        }
        let environment = ProcessInfo.processInfo.environment
        var candidates = [environment["USER"], environment["LOGNAME"]].compactMap { $0 }.filter { !$0.isEmpty }
        if candidates.isEmpty, let entry = getpwuid(getuid()), let name = entry.pointee.pw_name {
            candidates.append(String(cString: name))
        }
        return candidates.first.flatMap { valid($0) ? $0 : nil } ?? "muster-cli"
    }
}

/// A client command's failure: printed as `muster: <message>`, exit status 1.
struct ClientExit: Error {
    var message: String

    func fail() -> Never {
        FileHandle.standardError.write(Data("muster: \(message)\n".utf8))
        exit(1)
    }

    static func fail(_ error: MusterClientError) -> Never {
        var message = error.description
        if error.code == .badCredentials { message += " (--token or --token-file)" }
        ClientExit(message: message).fail()
    }
}

extension UInt8 {
    var isASCIIAlnum: Bool {
        (self >= 0x30 && self <= 0x39) || (self >= 0x41 && self <= 0x5a) || (self >= 0x61 && self <= 0x7a)
    }
}

extension LogBootstrap {
    /// Client commands log only errors (to standard error), unless `MUSTER_LOG_LEVEL` says
    /// otherwise: their output is the answer, not a log.
    static func bootstrapForClient() {
        let env = ProcessInfo.processInfo.environment
        bootstrap(format: env["MUSTER_LOG_FORMAT"] ?? "text", level: env["MUSTER_LOG_LEVEL"] ?? "error")
    }
}
