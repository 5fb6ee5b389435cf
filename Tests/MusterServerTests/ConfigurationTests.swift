import Foundation
import MusterServer
import MusterTransport
import Testing

@Suite struct ConfigurationTests {
    /// Writes `text` to a fresh temp file and returns its path.
    func write(_ text: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("muster-\(UUID().uuidString).json").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func loadError(file: String? = nil, env: [String: String] = [:], set: [(String, String)] = []) -> ConfigError? {
        do {
            _ = try Configuration.load(file: file, environment: env, overrides: set.map { ("flag --set", $0.0, $0.1) })
            return nil
        } catch {
            return error
        }
    }

    @Test func embeddedDefaultServesLocallyWithAnImageAndAVideoBackend() throws {
        let config = try Configuration.load(file: nil, environment: [:])
        #expect(config.settings.listen == HostPort(host: "127.0.0.1", port: 7460))
        #expect(config.backends.count == 2)
        #expect(config.backends.allSatisfy { $0.isLocal })
        #expect(config.backends.contains { $0.features.contains("video") && $0.features.contains("frameinterps") })
        #expect(config.backends.contains { !$0.features.contains("video") })
        #expect(config.settings.gate.window == .seconds(60))
        #expect(config.settings.routing.overqueue == 1)
    }

    @Test func featureListsTakeAnArrayOrCommasAndRefuseBadNames() throws {
        #expect(try Configuration.load(file: nil, environment: [:]).settings.dashboard.highlightFeatures == ["frameinterps", "video"])
        let file = try write(#"{"dashboard": {"highlight_features": ["video", "image", "video"]}}"#)
        #expect(try Configuration.load(file: file, environment: [:]).settings.dashboard.highlightFeatures == ["image", "video"])
        let env = try Configuration.load(file: nil, environment: ["MUSTER_DASHBOARD_HIGHLIGHT_FEATURES": "b, a"])
        #expect(env.settings.dashboard.highlightFeatures == ["a", "b"])
        let bad = loadError(set: [("dashboard.highlight_features", "video,Frame Interp")])
        #expect(bad?.key == "dashboard.highlight_features")
        #expect(bad?.description.contains("'Frame Interp' is not a feature name") == true, "\(String(describing: bad))")
        let notArray = loadError(file: try write(#"{"dashboard": {"highlight_features": [1]}}"#))
        #expect(notArray?.key == "dashboard.highlight_features")
    }

    @Test func routingPriorsTakeAnObjectOrPairsAndNameTheBadKey() throws {
        let config = try Configuration.load(file: nil, environment: [:])
        #expect(config.settings.routing.jobDurations.isEmpty)
        #expect(config.settings.routing.rule == .expectedCompletion)
        #expect(config.settings.routing.modelLoadDuration == .seconds(20))
        let file = try write(#"{"routing": {"job_seconds": {"video": "40s", "image": 6}, "rule": "least_loaded"}}"#)
        let fromFile = try Configuration.load(file: file, environment: [:])
        #expect(fromFile.settings.routing.jobDurations == ["image": .seconds(6), "video": .seconds(40)])
        #expect(fromFile.settings.routing.rule == .leastLoaded)
        let env = try Configuration.load(file: nil, environment: ["MUSTER_ROUTING_JOB_SECONDS": "image=1.5, video=2m"])
        #expect(env.settings.routing.jobDurations == ["image": .milliseconds(1500), "video": .seconds(120)])
        // The JSON object of a file works from the environment (and --set) too.
        let object = try Configuration.load(file: nil, environment: ["MUSTER_ROUTING_JOB_SECONDS": #"{"image": 6, "video": "40s"}"#])
        #expect(object.settings.routing.jobDurations == ["image": .seconds(6), "video": .seconds(40)])
        for bad in ["image", "image=-3", "image=soon", "=4", #"{"image": "soon"}"#, "{image"] {
            let error = loadError(set: [("routing.job_seconds", bad)])
            #expect(error?.key == "routing.job_seconds", "\(bad)")
        }
        #expect(loadError(set: [("routing.rule", "fastest")])?.key == "routing.rule")
    }

    @Test func backendsCarryRoutingPriorsAndRefuseBadOnes() throws {
        let config = try Configuration.load(
            file: nil, environment: [:],
            overrides: [
                (
                    "flag --set", "backends",
                    #"[{"name": "gpu", "kind": "simulated", "speed": 2.5, "expected_load_seconds": "12s"}]"#
                )
            ])
        #expect(config.backends.first?.speed == 2.5)
        #expect(config.backends.first?.expectedLoadSeconds == 12)
        let slow = loadError(set: [("backends", #"[{"name": "gpu", "kind": "simulated", "speed": 0}]"#)])
        #expect(slow?.key == "backends[0].speed")
        let load = loadError(set: [("backends", #"[{"name": "gpu", "kind": "simulated", "expected_load_seconds": "x"}]"#)])
        #expect(load?.key == "backends[0].expected_load_seconds")
    }

    @Test func protectedModeRefusesAnOpenCoordinatorBeyondLoopback() throws {
        for host in ["0.0.0.0", "192.0.2.7"] {
            let error = loadError(set: [("listen", "\(host):7460")])
            #expect(error?.key == "auth.token", "\(host)")
            #expect(error?.reason.contains("auth.allow_anonymous=true") == true)
        }
        for host in ["127.0.0.1", "127.3.0.9", "localhost"] {
            #expect(loadError(set: [("listen", "\(host):7460")]) == nil, "\(host)")
        }
        #expect(loadError(set: [("listen", "0.0.0.0:7460"), ("auth.token", "t0ken")]) == nil)
        #expect(loadError(set: [("listen", "0.0.0.0:7460"), ("auth.allow_anonymous", "true")]) == nil)
        // Backend tokens alone leave clients unauthenticated: still refused.
        #expect(loadError(set: [("listen", "0.0.0.0:7460"), ("auth.backend_tokens", #"{"gpu-1": "t"}"#)]) != nil)
    }

    @Test func laterSourcesWin() throws {
        let file = try write(#"{"listen": "0.0.0.0:9000", "auth": {"token": "t0ken"}, "gate": {"window_seconds": 30}, "routing": {"overqueue": 2}}"#)
        let config = try Configuration.load(
            file: file, environment: ["MUSTER_GATE_WINDOW_SECONDS": "45s", "MUSTER_ROUTING_OVERQUEUE": "3"],
            overrides: [("flag --set", "routing.overqueue", "4")])
        #expect(config.settings.listen == HostPort(host: "0.0.0.0", port: 9000))
        #expect(config.settings.gate.window == .seconds(45))
        #expect(config.settings.routing.overqueue == 4)
    }

    /// The listener is IPv4: an IPv6 address would quietly listen elsewhere.
    @Test func anIPv6ListenAddressIsRefused() throws {
        let v6 = try #require(loadError(set: [("listen", "[::1]:7460")]))
        #expect(v6.key == "listen" && v6.reason.contains("IPv6"), "\(v6)")
        #expect(loadError(set: [("listen", "localhost:0")]) == nil)
    }

    /// The file follows JSON's grammar strictly, as the wire does, and a refusal says where.
    @Test func aFileThatIsNotStrictJSONIsRefusedSayingWhere() throws {
        let comma = try #require(loadError(file: try write(#"{"gate": {"window_seconds": 5,}}"#)))
        #expect(comma.key == "" && comma.reason.contains("unexpected '}' at offset"), "\(comma)")
        let comment = try #require(loadError(file: try write("/* a comment */ {}")))
        #expect(comment.reason.contains("unexpected '/' at offset 0"), "\(comment)")
        let empty = try #require(loadError(file: try write("")))
        #expect(empty.reason.contains("end of input"), "\(empty)")
        let bom = try Configuration.load(file: try write("\u{FEFF}" + #"{"gate": {"window_seconds": 7}}"#), environment: [:])
        #expect(bom.settings.gate.window == .seconds(7), "a byte order mark is not part of the text")
        let section = try #require(loadError(file: try write(#"{"gate": 5}"#)))
        #expect(section.key == "gate" && section.reason.contains("is a section"), "\(section)")
        // JSON given to --set or the environment is held to the same grammar.
        let inSet = try #require(loadError(set: [("backends", #"[{"name": "a", "kind": "simulated",}]"#)]))
        #expect(inSet.key == "backends" && inSet.reason.contains("unexpected '}' at offset"), "\(inSet)")
        let inEnvironment = try #require(loadError(env: ["MUSTER_ROUTING_JOB_SECONDS": #"{"image": 01}"#]))
        #expect(inEnvironment.key == "routing.job_seconds" && inEnvironment.reason.contains("offset"), "\(inEnvironment)")
    }

    @Test func unknownKeyNamesFileKeyAndSuggestion() throws {
        let file = try write(#"{"gate": {"window_secs": 30}}"#)
        let error = try #require(loadError(file: file))
        #expect(error.source == "file \(file)")
        #expect(error.key == "gate.window_secs")
        #expect(error.reason.contains("unknown key"))
        #expect(error.reason.contains("gate.window_seconds"))
    }

    /// Foundation keeps the last of two members with one name; the loader names the key instead,
    /// at any depth, in the file and in JSON given to `--set` or the environment.
    @Test func aKeyGivenTwiceIsRefused() throws {
        let twice = try #require(loadError(file: try write(#"{"routing": {"overqueue": 1, "overqueue": 2}}"#)))
        #expect(twice.key == "routing.overqueue")
        #expect(twice.reason.contains("twice"))
        let inBackend = try #require(
            loadError(file: try write(#"{"backends": [{"name": "a", "kind": "simulated"}, {"name": "b", "name": "c", "kind": "simulated"}]}"#)))
        #expect(inBackend.key == "backends[1].name")
        let inSet = try #require(loadError(set: [("auth.backend_tokens", #"{"gpu": "x", "gpu": "y"}"#)]))
        #expect(inSet.key == "auth.backend_tokens.gpu")
        let inEnvironment = try #require(loadError(env: ["MUSTER_BACKENDS": #"[{"name": "a", "kind": "simulated", "kind": "exec"}]"#]))
        #expect(inEnvironment.key == "backends[0].kind")
        let kinds = try #require(loadError(set: [("routing.job_seconds", #"{"image": 1, "image": 2}"#)]))
        #expect(kinds.key == "routing.job_seconds")
        #expect(kinds.reason.contains("'image' is given twice"))
        let pairs = try #require(loadError(set: [("routing.job_seconds", "video=1,image=2,video=3")]))
        #expect(pairs.key == "routing.job_seconds")
        #expect(pairs.reason.contains("'video' is given twice"))
        // A dotted name and its nested form name the same key.
        let spelled = try #require(loadError(file: try write(#"{"gate.window_seconds": 5, "gate": {"window_seconds": 6}}"#)))
        #expect(spelled.key == "gate.window_seconds")
        #expect(spelled.reason.contains("twice"))
        let tokens = try #require(
            loadError(file: try write(#"{"auth": {"backend_tokens": {"a": "x"}}, "auth.backend_tokens": {"b": "y"}}"#)))
        #expect(tokens.key == "auth.backend_tokens")
        let both = try Configuration.load(
            file: try write(#"{"gate": {"window_seconds": 6}, "routing.overqueue": 2}"#), environment: [:])
        #expect(both.settings.gate.window == .seconds(6))
        #expect(both.settings.routing.overqueue == 2)
    }

    /// A token names one credential, wherever it is given, and follows the protocol's grammar.
    @Test func everyTokenIsItsOwnAndCouldBePresented() throws {
        func tokenError(_ set: [(String, String)]) throws -> ConfigError? {
            let config = try Configuration.load(file: nil, environment: [:], overrides: set.map { ("flag --set", $0.0, $0.1) })
            do {
                try config.checkTokens()
                return nil
            } catch {
                return error
            }
        }
        let shared = try #require(try tokenError([("auth.token", "same"), ("auth.backend_tokens", #"{"b": "same"}"#)]))
        #expect(shared.key == "auth.backend_tokens.b")
        #expect(shared.reason.contains("the shared token and backend credential b have the same token"), "\(shared)")
        let pair = try #require(try tokenError([("auth.backend_tokens", #"{"c": "dup", "d": "dup"}"#)]))
        #expect(pair.key == "auth.backend_tokens.d" && pair.reason.contains("same token"), "\(pair)")
        let control = try #require(try tokenError([("auth.backend_tokens", #"{"c": "a\u0007b"}"#)]))
        #expect(control.key == "auth.backend_tokens.c" && control.reason.contains("control characters"), "\(control)")
        #expect(try tokenError([("auth.token", "one"), ("auth.backend_tokens", #"{"c": "two", "d": "three"}"#)]) == nil)
        let name = try #require(loadError(set: [("auth.backend_tokens", #"{"bad name": "x"}"#)]))
        #expect(name.key == "auth.backend_tokens.bad name" && name.reason.contains("not a backend name"), "\(name)")
    }

    /// Job kinds follow the protocol's name grammar: a capitalised kind would never match a job.
    @Test func jobSecondsKindsFollowTheNameGrammar() throws {
        let routing = try #require(loadError(set: [("routing.job_seconds", "Image=3")]))
        #expect(routing.key == "routing.job_seconds")
        #expect(routing.reason.contains("'Image' is not a job kind"))
        let backend = try #require(
            loadError(file: try write(#"{"backends": [{"name": "a", "kind": "simulated", "job_seconds": {"Video": 3}}]}"#)))
        #expect(backend.key == "backends[0].job_seconds.Video")
        #expect(try Configuration.load(file: nil, environment: [:], overrides: [("flag --set", "routing.job_seconds", "image=3,video.hd=40")])
            .settings.routing.jobDurations["video.hd"] == .seconds(40))
    }

    @Test func wrongTypeAndBadValueAreRefused() throws {
        let typeError = try #require(loadError(file: try write(#"{"routing": {"overqueue": "two"}}"#)))
        #expect(typeError.key == "routing.overqueue")
        #expect(typeError.reason.contains("integer"))
        let rangeError = try #require(loadError(env: ["MUSTER_ROUTING_MAX_ATTEMPTS": "0"]))
        #expect(rangeError.source == "environment MUSTER_ROUTING_MAX_ATTEMPTS")
        #expect(rangeError.reason.contains("out of range"))
        let listenError = try #require(loadError(set: [("listen", "localhost")]))
        #expect(listenError.key == "listen")
        let boolError = try #require(loadError(file: try write(#"{"routing": {"work_stealing": 1}}"#)))
        #expect(boolError.reason.contains("true or false"))
        let notJSON = try write("{not json")
        #expect(loadError(file: notJSON) != nil)
        #expect(loadError(file: "/nonexistent/muster.json")?.reason.contains("cannot be read") == true)
        // A JSON value of the wrong kind is named as such, not as JSON that failed to parse.
        for key in ["backends", "auth.backend_tokens", "auth.credentials"] {
            let wrongKind = try #require(loadError(set: [(key, "5")]))
            #expect(wrongKind.key == key)
            #expect(wrongKind.reason.contains("expected an"), "\(wrongKind.reason)")
        }
        #expect(loadError(set: [("backends", "1e400")])?.reason.contains("out of range") == true)
    }

    /// Durations are used to the nearest millisecond, and the value kept is the value used.
    @Test func durationsAreKeptToTheMillisecond() throws {
        let window = try Configuration.load(file: nil, environment: [:], overrides: [("flag --set", "gate.window_seconds", "0.0004")])
        #expect(window.settings.gate.window == .zero)
        let rounded = try Configuration.load(file: nil, environment: ["MUSTER_GATE_WINDOW_SECONDS": "1.23456"])
        #expect(rounded.settings.gate.window == .milliseconds(1235))
        #expect(rounded.printable().contains("\"window_seconds\" : 1.235"))
        let tooShort = try #require(loadError(set: [("routing.default_job_seconds", "0.0004")]))
        #expect(tooShort.reason.contains("to the millisecond"))
    }

    @Test func backendsAreParsedStrictly() throws {
        let file = try write(
            #"""
            {"backends": [
              {"name": "sim", "kind": "simulated", "features": ["video", "frameinterps"], "slots": 2,
               "job_seconds": {"video": "1.5s", "default": 1}},
              {"name": "gpu-box", "kind": "remote", "url": "ws://127.0.0.1:7461", "token": "s3cret"}
            ]}
            """#)
        let config = try Configuration.load(file: file, environment: [:])
        #expect(config.backends.map(\.name) == ["sim", "gpu-box"])
        #expect(config.backends[0].slots == 2)
        guard case .simulated(let sim) = config.backends[0].kind else {
            Issue.record("expected a simulated backend")
            return
        }
        #expect(sim.jobSeconds["video"] == 1.5)
        #expect(!config.backends[1].isLocal)
        #expect(!config.printable().contains("s3cret"))
        #expect(config.printable().contains("<redacted>"))
        // A PostgreSQL URL's password is shown as the log shows it.
        let postgres = try Configuration.load(
            file: nil, environment: ["MUSTER_STORE_URL": "postgres://muster:pg-s3cret@db:5432/muster"])
        #expect(!postgres.printable().contains("pg-s3cret"))
        #expect(postgres.printable().contains(#"muster:***@db:5432"#))

        let unknownField = try #require(loadError(file: try write(#"{"backends": [{"name": "a", "kind": "simulated", "slot": 1}]}"#)))
        #expect(unknownField.key == "backends[0].slot")
        let badKind = try #require(loadError(file: try write(#"{"backends": [{"name": "a", "kind": "gpu"}]}"#)))
        #expect(badKind.key == "backends[0].kind")
        let duplicate = try #require(
            loadError(file: try write(#"{"backends": [{"name": "a", "kind": "simulated"}, {"name": "a", "kind": "simulated"}]}"#)))
        #expect(duplicate.key == "backends[1].name")
        let badFeature = try #require(loadError(file: try write(#"{"backends": [{"name": "a", "kind": "simulated", "features": ["Video!"]}]}"#)))
        #expect(badFeature.key == "backends[0].features")
        let badURL = try #require(loadError(set: [("backends", #"[{"name": "r", "kind": "remote", "url": "http://x"}]"#)]))
        #expect(badURL.key == "backends[0].url")
    }

    @Test func comfyuiBackendsAreParsedStrictly() throws {
        let config = try Configuration.load(file: try write(
            #"""
            {"backends": [{"name": "comfy-a", "kind": "comfyui", "url": "http://127.0.0.1:8188", "features": ["gpu"],
                           "feature_map": {"frameinterps": ["My VFI"]}, "slots": 2}]}
            """#), environment: [:])
        guard case .comfyui(let c) = config.backends[0].kind else {
            Issue.record("expected a comfyui backend")
            return
        }
        #expect(c.url == "http://127.0.0.1:8188" && c.featureMap == ["frameinterps": ["My VFI"]])
        #expect(config.backends[0].isLocal && config.backends[0].slots == 2 && config.backends[0].features == ["gpu"])
        #expect(config.printable().contains("comfyui"))
        let badURL = try #require(loadError(set: [("backends", #"[{"name": "c", "kind": "comfyui", "url": "ws://x:8188"}]"#)]))
        #expect(badURL.key == "backends[0].url" && badURL.reason.contains("http://"))
        let badMap = try #require(loadError(set: [("backends", #"[{"name": "c", "kind": "comfyui", "url": "http://x:1", "feature_map": {"frameinterps": "RIFE VFI"}}]"#)]))
        #expect(badMap.key == "backends[0].feature_map.frameinterps")
    }

    @Test func crossKeyRules() throws {
        let error = try #require(loadError(set: [("tls.cert", "/dev/null")]))
        #expect(error.key == "tls.key")
        let both = try #require(loadError(set: [("auth.token", "a"), ("auth.token_file", "/dev/null")]))
        #expect(both.key == "auth.token_file")
    }

    /// A rule across keys names the source of the key that brought the conflict in (the one
    /// that was set), as a bad value does: not just "configuration".
    @Test func crossKeyErrorsNameTheSourceOfTheKeyThatWasSet() throws {
        let file = try write(#"{"tls": {"cert": "/dev/null"}}"#)
        #expect(loadError(file: file)?.source == "file \(file)")
        let env = try #require(loadError(env: ["MUSTER_TLS_KEY": "/dev/null"]))
        #expect(env.key == "tls.cert" && env.source == "environment MUSTER_TLS_KEY", "\(env)")
        // A later source that clears a key (empty: not set) is the one named.
        let cleared = try #require(
            loadError(file: try write(#"{"tls": {"cert": "/dev/null", "key": "/dev/null"}}"#), env: ["MUSTER_TLS_KEY": ""]))
        #expect(cleared.key == "tls.key" && cleared.source == "environment MUSTER_TLS_KEY", "\(cleared)")
        // The environment set the token, --set the token file: the token file is named.
        let both = try #require(
            Result { () throws(ConfigError) in
                try Configuration.load(
                    file: nil, environment: ["MUSTER_AUTH_TOKEN": "a"], overrides: [("flag --token-file", "auth.token_file", "/dev/null")])
            }.failure)
        #expect(both.source == "flag --token-file", "\(both)")
        let open = try #require(loadError(file: try write(#"{"listen": "0.0.0.0:7460"}"#)))
        #expect(open.key == "auth.token" && open.source.hasPrefix("file "), "\(open)")
        let v6 = try #require(loadError(env: ["MUSTER_LISTEN": "[::1]:7460"]))
        #expect(v6.source == "environment MUSTER_LISTEN", "\(v6)")
        let unreadable = try #require(loadError(set: [("tls.client_ca", "/nonexistent/ca.pem"), ("tls.cert", "/dev/null"), ("tls.key", "/dev/null")]))
        #expect(unreadable.key == "tls.client_ca" && unreadable.source == "flag --set", "\(unreadable)")
        // Tokens are checked after the load: a duplicate names where the second came from.
        let config = try Configuration.load(
            file: try write(#"{"auth": {"token": "same"}}"#), environment: ["MUSTER_AUTH_BACKEND_TOKENS": #"{"b": "same"}"#])
        let dup = try #require(Result { () throws(ConfigError) in try config.checkTokens() }.failure)
        #expect(dup.key == "auth.backend_tokens.b" && dup.source == "environment MUSTER_AUTH_BACKEND_TOKENS", "\(dup)")
    }

    @Test func tokenFileFirstLineIsTheToken() throws {
        let path = try write("  tok3n  \nsecond line\n")
        let config = try Configuration.load(file: nil, environment: ["MUSTER_AUTH_TOKEN_FILE": path])
        #expect(try config.resolvedSharedToken() == "tok3n")
        #expect(!config.printable().contains("tok3n"))
    }

    @Test func environmentNamesFollowTheKeys() {
        let names = ConfigKey.all.map(\.environmentName)
        #expect(names.contains("MUSTER_GATE_WINDOW_SECONDS"))
        #expect(names.contains("MUSTER_LINKS_MAX_MESSAGE_BYTES"))
        #expect(Set(names).count == names.count)
    }
}

extension Result {
    /// The error, or nil when it succeeded.
    fileprivate var failure: Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }
}
