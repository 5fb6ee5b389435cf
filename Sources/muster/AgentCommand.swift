import ArgumentParser
import Foundation
import Logging
import MusterBackends
import MusterClient
import MusterProtocol
import MusterServer
import MusterTransport
import ServiceLifecycle

/// `muster agent`: a real remote backend, simulated or running a command per job.
struct AgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent",
        abstract: "Run a remote backend that links to a coordinator.",
        discussion: """
            The agent dials the coordinator (--coordinator) or listens to be dialled (--listen), says \
            hello, announces `loading`, and after --announce-after (or on SIGUSR1, whichever comes \
            first) its features, models and slots as `ready`. Jobs are simulated (--job-seconds) or run by --exec: the assign message as JSON on \
            stdin, the result JSON read from stdout. Models are simulated either way: a job naming a model not \
            loaded yet waits --model-load-seconds for it before it runs. A lost link is redialled with backoff; the agent \
            keeps the same incarnation and lists the jobs it holds in its hello, so the coordinator \
            resumes its jobs, even after a crash that kept a binding from its store. SIGTERM (or SIGINT) drains: \
            the agent announces `draining`, finishes its jobs however long they take, says goodbye and \
            exits 0 (exits 1 if --drain-timeout passes first). A refused hello (bad \
            token, no common version, replaced, a name or value the coordinator does not accept) exits 1. With two coordinators on one database give \
            both (--coordinator ws://a:7460,ws://b:7460): they are dialled in turn, a standby's \
            not_leader sends the agent to the leader it names, and when the leader moves the agent \
            registers there with its jobs (README: Running two coordinators).

            With --comfyui URL the jobs run on that ComfyUI server (ComfyUI workflows, see \
            `muster submit --workflow`): the agent announces `loading` until the server's \
            /object_info answers, then `ready` with the server's node classes, the features they \
            give (--feature-map), its checkpoints as models and its devices' memory. --features adds \
            features on top; --slots is how many prompts run at once (ComfyUI runs one).
            """)

    @Option(
        help: "Coordinator to dial: ws://HOST:PORT or wss://HOST:PORT (http:// and https:// are mapped; a bare HOST means port 7460); several separated by commas (two coordinators on one database).")
    var coordinator: String?

    @Option(help: "Listen on HOST:PORT and wait to be dialled instead of dialling.")
    var listen: String?

    @Flag(help: "With --listen beyond loopback: accept a coordinator that presents no token (protected mode off).")
    var allowAnonymous = false

    @Option(help: "Token presented to the coordinator (and required from it in --listen mode).")
    var token: String?

    @Option(help: "File whose first line is the token.")
    var tokenFile: String?

    @Option(help: "Backend name: stable across restarts; the coordinator keys the backend id on it.")
    var name: String = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "agent"

    @Option(help: "Features announced, comma separated, e.g. video,frameinterps.")
    var features: String = ""

    @Option(help: "Models available, comma separated.")
    var models: String = ""

    @Option(help: "Jobs run at once.")
    var slots: Int = 1

    @Option(help: "Time spent loading before announcing ready, e.g. 40s. SIGUSR1 ends it early.")
    var announceAfter: String = "0s"

    @Option(
        help: """
            Simulated job time: one duration (5s) or per kind (video=8s,image=2s,default=4s). Each kind's \
            (not default's, divided by --speed) is announced to the coordinator as its job_seconds.
            """)
    var jobSeconds: String = "5s"

    @Option(
        help: """
            Speed announced to the coordinator, relative to 1.0 (2 = twice as fast), its prior for this \
            backend's job durations; simulated jobs take --job-seconds divided by it.
            """)
    var speed: Double?

    @Option(help: "Simulated time to load a model (on request, or before a job that names it; also with --exec); announced to the coordinator as model_load_seconds.")
    var modelLoadSeconds: String = "5s"

    @Flag(
        help: """
            Announce neither --speed nor the --job-seconds and --model-load-seconds: the coordinator \
            learns them from the jobs it runs, as for a real backend (the simulated work takes as long).
            """)
    var cold = false

    @Option(help: "Fraction of simulated jobs that fail (retryable), 0 to 1.")
    var failureRate: Double = 0

    @Option(help: "Run this shell command per job instead of simulating (sh -c).")
    var exec: String?

    @Option(help: "Kill an --exec job running longer than this.")
    var execTimeout: String = "600s"

    @Option(help: "On SIGTERM/SIGINT, exit with status 1 if the drain (finishing the jobs it has) takes longer than this, e.g. 90s; 0 waits for the jobs however long they take.")
    var drainTimeout: String = "0"

    @Option(help: ArgumentHelp("Run the jobs on this ComfyUI server, e.g. http://127.0.0.1:8188.", valueName: "URL"))
    var comfyui: String?

    @Option(help: ArgumentHelp(
        "With --comfyui: features from node classes, laid over the defaults, e.g. '{\"frameinterps\": [\"RIFE VFI\"]}'.",
        valueName: "JSON"))
    var featureMap: String?

    @Option(help: "CA file to verify a wss:// coordinator.")
    var caFile: String?

    @Flag(help: "Accept a self-signed wss:// certificate (development only).")
    var allowSelfSigned = false

    @Option(help: "PEM client certificate for a wss:// coordinator that requires one (its tls.client_ca); with --key-file.")
    var certFile: String?

    @Option(help: "PEM private key of --cert-file.")
    var keyFile: String?

    @Option(help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"

    @Option(help: "text or json.")
    var logFormat: String = "text"

    func validate() throws {
        guard (coordinator == nil) != (listen == nil) else {
            throw ValidationError("give exactly one of --coordinator URL and --listen HOST:PORT")
        }
        if let coordinator {
            let urls = Agent.coordinatorAddresses(coordinator)
            if urls.isEmpty { throw ValidationError("--coordinator names no URL") }
            for url in urls {
                do throws(MusterClientError) {
                    _ = try MusterClient.Options.webSocketURL(url)
                } catch {
                    throw ValidationError("--coordinator: \(error.message)")
                }
            }
        }
        if let listen, HostPort(listen) == nil { throw ValidationError("--listen must be HOST:PORT, got '\(listen)'") }
        if let listen, let hp = HostPort(listen), hp.host.contains(":") {
            throw ValidationError("--listen: IPv6 addresses are not supported (the listener is IPv4), got '\(listen)'")
        }
        // Protected mode, as for `muster serve`: whoever dials an open agent gets its GPU.
        if let listen, let hp = HostPort(listen), !hp.isLoopback, token == nil, tokenFile == nil, !allowAnonymous {
            throw ValidationError(
                "--listen \(listen) is reachable beyond this machine and no --token or --token-file is set, so anyone who "
                    + "reaches it could send jobs; set a token, listen on 127.0.0.1, or pass --allow-anonymous")
        }
        guard ProtocolLimits.isValidName(name) else {
            throw ValidationError("--name must match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$, got '\(name)'")
        }
        for model in list(models) where !Grammar.isLabel(model, max: ProtocolLimits.maxModelLength) {
            throw ValidationError(
                "--models: '\(model.prefix(40))…' is not a model name (at most \(ProtocolLimits.maxModelLength) characters, no control characters)")
        }
        guard (1...1024).contains(slots) else { throw ValidationError("--slots must be 1...1024") }
        if let speed, !(speed > 0 && speed <= ProtocolLimits.maxSpeed) {
            throw ValidationError("--speed must be above 0 and at most \(Int(ProtocolLimits.maxSpeed)), got \(speed)")
        }
        guard (0...1).contains(failureRate) else { throw ValidationError("--failure-rate must be from 0 to 1") }
        guard token == nil || tokenFile == nil else { throw ValidationError("give --token or --token-file, not both") }
        guard (certFile == nil) == (keyFile == nil) else { throw ValidationError("--cert-file and --key-file go together") }
        for (flag, path) in [("--cert-file", certFile), ("--key-file", keyFile)] {
            if let path, !FileManager.default.isReadableFile(atPath: path) {
                throw ValidationError("\(flag): cannot read '\(path)'")
            }
        }
        for f in list(features) where !Grammar.isFeature(f) {
            throw ValidationError("--features: '\(f)' is not a feature name (a-z, 0-9, _ . -; starts with a letter)")
        }
        _ = try duration(announceAfter, "--announce-after")
        _ = try durations(jobSeconds)
        _ = try duration(modelLoadSeconds, "--model-load-seconds")
        _ = try duration(execTimeout, "--exec-timeout")
        _ = try drainBound()
        if let comfyui {
            guard (comfyui.hasPrefix("http://") || comfyui.hasPrefix("https://")) && comfyui.count > 8 else {
                throw ValidationError("--comfyui must be an http:// or https:// URL, got '\(comfyui)'")
            }
            guard exec == nil else { throw ValidationError("give --comfyui or --exec, not both") }
        }
        if featureMap != nil {
            guard comfyui != nil else { throw ValidationError("--feature-map applies to --comfyui") }
            _ = try parsedFeatureMap()
        }
        guard ["text", "json"].contains(logFormat) else { throw ValidationError("--log-format must be text or json") }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("--log-level: unknown level '\(logLevel)'") }
    }

    func run() async throws {
        LogBootstrap.bootstrap(format: logFormat, level: logLevel)
        let logger = Logger(label: "muster.agent")
        signal(SIGPIPE, SIG_IGN)
        var resolvedToken = token ?? ""
        if let tokenFile {
            guard let text = try? String(contentsOfFile: tokenFile, encoding: .utf8),
                let first = text.split(whereSeparator: \.isNewline).first
            else { throw ValidationError("--token-file: cannot read a token from '\(tokenFile)'") }
            resolvedToken = first.trimmingCharacters(in: .whitespaces)
        }
        var runner: WorkerSpec.Runner = exec.map { .exec(command: ["/bin/sh", "-c", $0], timeout: (try? duration(execTimeout, "")) ?? .seconds(600)) } ?? .simulated
        if comfyui != nil { runner = .external }
        var spec = WorkerSpec(
            name: name, features: list(features), models: list(models), slots: slots, runner: runner,
            startupDelay: try duration(announceAfter, "--announce-after"), jobDurations: try durations(jobSeconds),
            modelLoadTime: try duration(modelLoadSeconds, "--model-load-seconds"), failureRate: failureRate,
            speed: speed, simulatesModelLoads: runner != .external)
        spec.announcesEstimates = !cold
        // The client commands' forms: http(s):// mapped, a bare HOST on port 7460 (validated above).
        let dialled = coordinator.map { text in
            Agent.coordinatorAddresses(text).compactMap { try? MusterClient.Options.webSocketURL($0) }.joined(separator: ",")
        }
        var options = AgentOptions(coordinator: dialled, listen: listen.flatMap(HostPort.init), token: resolvedToken, spec: spec)
        options.caFile = caFile
        options.allowSelfSigned = allowSelfSigned
        options.certificateFile = certFile
        options.privateKeyFile = keyFile
        if let comfyui {
            options.comfyui = ComfyUISettings(
                url: comfyui, featureMap: ComfyUIFeatureMap.defaults.merging(try parsedFeatureMap()),
                extraFeatures: list(features))
        }
        let agent: Agent
        do {
            agent = try Agent(options: options, logger: logger)
        } catch {
            logger.critical("cannot start", metadata: ["error": "\(error)"])
            throw ExitCode(1)
        }
        do {
            try await ServiceGroup.muster(
                AgentService(agent: agent, logger: logger, shutdownBound: try drainBound()), logger: logger).run()
        } catch {
            logger.critical("cannot start", metadata: ["error": "\(error)"])
            throw ExitCode(1)
        }
        if let failure = agent.stoppedBecause.withLock({ $0 }) {
            FileHandle.standardError.write(Data("muster agent: \(failure)\n".utf8))
            ProcessEnd.now(1)
        }
        ProcessEnd.now(0)
    }

    /// `--feature-map` as feature -> node classes.
    private func parsedFeatureMap() throws -> [String: [String]] {
        guard let featureMap else { return [:] }
        guard let o = try? JSONSerialization.jsonObject(with: Data(featureMap.utf8)) as? [String: Any] else {
            throw ValidationError("--feature-map must be a JSON object of feature to node classes, got \(featureMap)")
        }
        var out: [String: [String]] = [:]
        for (feature, value) in o {
            guard let classes = value as? [String] else {
                throw ValidationError("--feature-map: '\(feature)' must map to an array of node class names")
            }
            out[feature] = classes
        }
        return out
    }

    private func list(_ s: String) -> [String] {
        s.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    /// `--drain-timeout`: nil for 0 (no bound).
    private func drainBound() throws -> Duration? {
        if drainTimeout == "0" { return nil }
        let d = try duration(drainTimeout, "--drain-timeout")
        return d > .zero ? d : nil
    }

    private func duration(_ text: String, _ flag: String) throws -> Duration {
        switch parseDuration(text) {
        case .some(let d): return d
        case .none: throw ValidationError("\(flag): expected a duration like 40s or 250ms, got '\(text)'")
        }
    }

    /// `5s` or `video=8s,image=2s,default=4s`.
    private func durations(_ text: String) throws -> [String: Duration] {
        if !text.contains("=") { return ["default": try duration(text, "--job-seconds")] }
        var out: [String: Duration] = [:]
        for part in list(text) {
            let kv = part.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2 else { throw ValidationError("--job-seconds: expected KIND=DURATION, got '\(part)'") }
            out[kv[0]] = try duration(kv[1], "--job-seconds")
        }
        return out
    }
}
