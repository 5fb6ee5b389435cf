import Foundation
import MusterProtocol
import MusterServer
import MusterTransport
import Testing

/// Credentials bound to client certificates (README "Security", `certificate_cn`), against a real
/// `muster serve` with `tls.client_ca` and certificates made by openssl here: the certificate's
/// subject CN names the credential when no token is presented, and SIGHUP reloads the client CA.
@Suite(.serialized) struct ClientCertificateTests {
    /// A scratch directory with a CA, certificates it signs, and the server's own certificate.
    struct PKI {
        let dir: URL
        var serverCert: String { path("server.pem") }
        var serverKey: String { path("server.key") }

        init() async throws {
            dir = FileManager.default.temporaryDirectory.appendingPathComponent("muster-mtls-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            try await SecurityTests().selfSigned("muster-server", cert: serverCert, key: serverKey)
        }

        func path(_ name: String) -> String { dir.appendingPathComponent(name).path }
        func remove() { try? FileManager.default.removeItem(at: dir) }

        func openssl(_ arguments: [String]) async throws {
            let r = try await runChild("/usr/bin/openssl", arguments)
            try #require(r.status == 0, "openssl \(arguments.joined(separator: " ")): \(String(decoding: r.errors, as: UTF8.self))")
        }

        /// A CA `name`: `name.pem` and `name.key`.
        func ca(_ name: String) async throws {
            try await openssl([
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                "-subj", "/CN=\(name)", "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-keyout", path("\(name).key"), "-out",
                path("\(name).pem"),
            ])
        }

        /// A client certificate with subject `subject` signed by CA `ca`: returns the TLS settings
        /// that present it (and trust the server's self-signed certificate).
        func client(_ file: String, subject: String, ca: String) async throws -> ClientTLS {
            try await openssl([
                "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", subject,
                "-keyout", path("\(file).key"), "-out", path("\(file).csr"),
            ])
            try await openssl([
                "x509", "-req", "-in", path("\(file).csr"), "-CA", path("\(ca).pem"), "-CAkey", path("\(ca).key"),
                "-set_serial", "\(UInt32.random(in: 1...UInt32.max))", "-days", "1", "-out", path("\(file).pem"),
            ])
            return ClientTLS(
                caFile: serverCert, certificateFile: path("\(file).pem"), privateKeyFile: path("\(file).key"))
        }
    }

    func serve(_ pki: PKI, clientCA: String, credentials: String, environment: [String: String] = [:]) async throws
        -> (MusterProcess, Int)
    {
        let p = try MusterProcess(
            [
                "serve", "--listen", "127.0.0.1:0", "--log-level", "debug", "--tls-cert", pki.serverCert, "--tls-key",
                pki.serverKey, "--set", "tls.client_ca=\(clientCA)", "--set", "auth.credentials=\(credentials)",
                // These tests say `hello` themselves on raw links (see `TestCoordinator`).
                "--set", "links.handshake_timeout_seconds=\(TestCoordinator.handshakeTimeoutSeconds)",
            ]
                + EndToEndTests().backends(
                    #"[{"name": "slow", "kind": "simulated", "features": ["image"], "job_seconds": {"default": 600}}]"#),
            environment: environment)
        let line = try await p.waitForLog("muster serving")
        return (p, try #require(Int(line["listen.port"] as? String ?? "")))
    }

    /// Opens a wss:// link presenting `tls`, says `hello` with `token` (empty: none), returns the answer.
    func hello(port: Int, tls: ClientTLS, backend: Bool = false, name: String = "cli", token: String = "") async throws
        -> (WirePeer, [String: Any])
    {
        let peer = try await WirePeer(
            port: port, subprotocol: backend ? Subprotocol.backend : Subprotocol.client, tls: tls)
        if backend {
            await peer.send(
                #"{"type": "hello", "id": "h", "role": "backend", "name": "\#(name)", "token": "\#(token)", "versions": [1], "incarnation": 1, "slots": 1}"#
            )
        } else {
            await peer.send(
                #"{"type": "hello", "id": "h", "role": "client", "name": "\#(name)", "token": "\#(token)", "versions": [1]}"#
            )
        }
        return (peer, try await peer.next("the answer to hello"))
    }

    /// An HTTPS request presenting `tls`'s client certificate (Python's ssl, a client apart from
    /// ours): the status code.
    func https(_ method: String, _ url: String, tls: ClientTLS, body: String? = nil) async throws -> Int {
        let arguments =
            [
                "-c",
                """
                import ssl, sys, urllib.request, urllib.error
                ctx = ssl.create_default_context(cafile=sys.argv[1])
                ctx.load_cert_chain(sys.argv[2], sys.argv[3])
                data = sys.argv[6].encode() if len(sys.argv) > 6 else None
                req = urllib.request.Request(sys.argv[5], method=sys.argv[4], data=data, headers={"Content-Type": "application/json"})
                try:
                    print(urllib.request.urlopen(req, context=ctx, timeout=30).status)
                except urllib.error.HTTPError as e:
                    print(e.code)
                """,
                tls.caFile!, tls.certificateFile!, tls.privateKeyFile!, method, url,
            ] + (body.map { [$0] } ?? [])
        let r = try await runChild("/usr/bin/python3", arguments)
        return try #require(Int(r.text.trimmingCharacters(in: .whitespacesAndNewlines)), "\(String(decoding: r.errors, as: UTF8.self))")
    }

    @Test func aClientCertificateNamesItsCredentialAndItsRole() async throws {
        let pki = try await PKI()
        defer { pki.remove() }
        try await pki.ca("ca-one")
        let viewer = try await pki.client("viewer", subject: "/CN=viewer.example", ca: "ca-one")
        let ops = try await pki.client("ops", subject: "/CN=ops.example", ca: "ca-one")
        let gpu = try await pki.client("gpu", subject: "/CN=gpu-a", ca: "ca-one")
        // The CN must be the whole, only CN: "viewer.example" followed by another RDN still names viewer.
        let viewerInOrg = try await pki.client("viewer-org", subject: "/CN=viewer.example/O=Example", ca: "ca-one")
        let stranger = try await pki.client("stranger", subject: "/CN=stranger.example", ca: "ca-one")
        let aliceToken = "alice-\(UUID().uuidString)"
        let credentials = """
            [{"name": "viewer", "role": "read", "certificate_cn": "viewer.example"},
             {"name": "ops", "role": "operator", "certificate_cn": "ops.example"},
             {"name": "gpu-a", "role": "backend", "certificate_cn": "gpu-a"},
             {"name": "alice", "role": "client", "token_env": "ALICE_TOKEN"}]
            """
        let (serve, port) = try await serve(
            pki, clientCA: pki.path("ca-one.pem"), credentials: credentials, environment: ["ALICE_TOKEN": aliceToken])

        // A read certificate looks but cannot submit: forbidden, and its link stays up.
        let (viewerLink, viewerWelcome) = try await hello(port: port, tls: viewer)
        #expect(
            viewerWelcome["type"] as? String == "welcome" && viewerWelcome["role"] as? String == "read",
            "\(viewerWelcome)")
        await viewerLink.send(#"{"type": "submit", "id": "s1", "jobs": [{"kind": "image"}]}"#)
        let refused = try await viewerLink.next(type: "error")
        #expect(refused["code"] as? String == "forbidden" && refused["id"] as? String == "s1", "\(refused)")
        #expect((refused["message"] as? String)?.contains("viewer") == true, "\(refused)")
        await viewerLink.send(#"{"type": "status", "id": "st"}"#)
        #expect(try await viewerLink.next(type: "status_report")["id"] as? String == "st")
        await viewerLink.close()
        let (orgLink, orgWelcome) = try await hello(port: port, tls: viewerInOrg)
        #expect(orgWelcome["role"] as? String == "read", "\(orgWelcome)")
        await orgLink.close()

        // The same over HTTPS: the certificate is the credential when no bearer token is sent.
        let base = "https://127.0.0.1:\(port)"
        #expect(try await https("GET", "\(base)/v1/backends", tls: viewer) == 200)
        #expect(try await https("POST", "\(base)/v1/batches", tls: viewer, body: #"{"jobs": [{"kind": "image"}]}"#) == 403)
        #expect(try await https("POST", "\(base)/v1/backends/-1/drain", tls: viewer) == 403)

        // An operator certificate drains.
        let (opsLink, opsWelcome) = try await hello(port: port, tls: ops)
        #expect(opsWelcome["role"] as? String == "operator", "\(opsWelcome)")
        await opsLink.send(#"{"type": "drain", "id": "d1", "backend": -1}"#)
        #expect(try await opsLink.next(type: "draining")["id"] as? String == "d1")
        await opsLink.close()
        // The audit line reaches the test through the process's stderr, which may come after the
        // answer on the link: wait for it.
        @Sendable func drainAudits(_ p: MusterProcess) -> [[String: Any]] {
            p.logEvents.filter { $0["label"] as? String == "muster.audit" && $0["audit.action"] as? String == "drain" }
        }
        try await serve.waitUntil("the drain's audit line") { !drainAudits($0).isEmpty }
        let audit = drainAudits(serve)
        #expect(audit.first?["audit.by"] as? String == "ops", "\(audit)")

        // A backend certificate registers under its own name only.
        let (stolen, otherName) = try await hello(port: port, tls: gpu, backend: true, name: "gpu-b")
        #expect(otherName["code"] as? String == "forbidden", "\(otherName)")
        #expect(try await stolen.closed() == 4007)
        await stolen.close()
        let (gpuLink, gpuWelcome) = try await hello(port: port, tls: gpu, backend: true, name: "gpu-a")
        #expect(gpuWelcome["type"] as? String == "welcome", "\(gpuWelcome)")
        // ...and opens no client link.
        let (gpuAsClient, notClient) = try await hello(port: port, tls: gpu)
        #expect(notClient["code"] as? String == "forbidden", "\(notClient)")
        #expect(try await gpuAsClient.closed() == 4007)
        await gpuAsClient.close()

        // A certificate the CA signed but no credential names admits the connection and nothing more.
        let (nobody, bad) = try await hello(port: port, tls: stranger)
        #expect(bad["code"] as? String == "bad_credentials", "\(bad)")
        #expect(try await nobody.closed() == 4001)
        await nobody.close()
        #expect(try await https("GET", "\(base)/v1/backends", tls: stranger) == 401)

        // A token, when one is given, wins over the certificate: the operator's certificate with
        // alice's token is alice, a client.
        let (asAlice, aliceWelcome) = try await hello(port: port, tls: ops, token: aliceToken)
        #expect(
            aliceWelcome["role"] as? String == "client" && aliceWelcome["owner"] as? String == "alice",
            "\(aliceWelcome)")
        await asAlice.close()
        let (strangerWithToken, strangerWelcome) = try await hello(port: port, tls: stranger, token: aliceToken)
        #expect(strangerWelcome["role"] as? String == "client", "\(strangerWelcome)")
        await strangerWithToken.close()

        await gpuLink.close()
        #expect(try await serve.stop() == 0)
    }

    @Test func sighupReloadsTheClientCAForNewConnections() async throws {
        let pki = try await PKI()
        defer { pki.remove() }
        try await pki.ca("ca-one")
        try await pki.ca("ca-two")
        let oldViewer = try await pki.client("viewer-one", subject: "/CN=viewer.example", ca: "ca-one")
        let newViewer = try await pki.client("viewer-two", subject: "/CN=viewer.example", ca: "ca-two")
        let clientCA = pki.path("client-ca.pem")
        try FileManager.default.copyItem(atPath: pki.path("ca-one.pem"), toPath: clientCA)
        let (serve, port) = try await serve(
            pki, clientCA: clientCA,
            credentials: #"[{"name": "viewer", "role": "read", "certificate_cn": "viewer.example"}]"#)

        let (kept, welcome) = try await hello(port: port, tls: oldViewer)
        #expect(welcome["role"] as? String == "read", "\(welcome)")
        await #expect(throws: WirePeer.DialFailed.self) {
            _ = try await WirePeer(port: port, subprotocol: Subprotocol.client, tls: newViewer)
        }

        // The client CA file now holds the second CA: after SIGHUP its certificates get in, the
        // first CA's no longer do, and the link opened before stays.
        try FileManager.default.removeItem(atPath: clientCA)
        try FileManager.default.copyItem(atPath: pki.path("ca-two.pem"), toPath: clientCA)
        try await SecurityTests().hangUp(serve, expecting: "TLS client CA reloaded")
        let (fresh, freshWelcome) = try await hello(port: port, tls: newViewer)
        #expect(freshWelcome["role"] as? String == "read", "\(freshWelcome)")
        await fresh.close()
        await #expect(throws: WirePeer.DialFailed.self) {
            _ = try await WirePeer(port: port, subprotocol: Subprotocol.client, tls: oldViewer)
        }
        await kept.send(#"{"type": "status", "id": "after"}"#)
        #expect(try await kept.next(type: "status_report")["id"] as? String == "after")

        // A client CA file that no longer loads is refused; the second CA stays in force.
        try Data("not a certificate\n".utf8).write(to: URL(fileURLWithPath: clientCA))
        try await SecurityTests().hangUp(serve, expecting: "TLS certificate reload refused: the old one stays in use")
        let (still, stillWelcome) = try await hello(port: port, tls: newViewer)
        #expect(stillWelcome["role"] as? String == "read", "\(stillWelcome)")
        await still.close()

        await kept.close()
        #expect(try await serve.stop() == 0)
    }
    @Test func certificateCredentialsAreCheckedWhenTheConfigurationLoads() async throws {
        let pki = try await PKI()
        defer { pki.remove() }
        func load(_ json: String, clientCA: Bool = true, env: [String: String] = [:]) -> ConfigError? {
            var overrides = [("listen", "127.0.0.1:0"), ("auth.credentials", json)]
            if clientCA {
                overrides += [
                    ("tls.cert", pki.serverCert), ("tls.key", pki.serverKey), ("tls.client_ca", pki.serverCert),
                ]
            }
            do {
                _ = try Configuration.load(
                    file: nil, environment: env, overrides: overrides.map { (source: "t", key: $0.0, value: $0.1) })
                return nil
            } catch {
                return error
            }
        }
        #expect(load(#"[{"name": "g", "role": "backend", "certificate_cn": "gpu-a"}]"#) == nil)
        let noCA = load(#"[{"name": "g", "role": "backend", "certificate_cn": "gpu-a"}]"#, clientCA: false)
        #expect(
            noCA?.key == "auth.credentials" && noCA?.reason.contains("tls.client_ca") == true,
            "\(String(describing: noCA))")
        let both = load(
            #"[{"name": "g", "role": "backend", "certificate_cn": "gpu-a", "token_env": "T"}]"#, env: ["T": "x"])
        #expect(
            both?.key == "auth.credentials[0]" && both?.reason.contains("exactly one") == true,
            "\(String(describing: both))")
        #expect(
            load(#"[{"name": "g", "role": "backend", "certificate_cn": ""}]"#)?.key
                == "auth.credentials[0].certificate_cn")
        let twice = load(
            #"[{"name": "g", "role": "backend", "certificate_cn": "x"}, {"name": "o", "role": "operator", "certificate_cn": "x"}]"#
        )
        #expect(twice?.key == "auth.credentials[1].certificate_cn", "\(String(describing: twice))")
        let printed = try Configuration.load(
            file: nil, environment: [:],
            overrides: [
                ("tls.cert", pki.serverCert), ("tls.key", pki.serverKey), ("tls.client_ca", pki.serverCert),
                ("auth.credentials", #"[{"name": "g", "role": "backend", "certificate_cn": "gpu-a"}]"#),
            ].map { (source: "t", key: $0.0, value: $0.1) }
        ).printable()
        #expect(printed.contains(#""certificate_cn" : "gpu-a""#), "\(printed)")
    }
    @Test func anAgentPresentsItsCertificateAndRegistersUnderItsName() async throws {
        let pki = try await PKI()
        defer { pki.remove() }
        try await pki.ca("ca-one")
        let gpu = try await pki.client("gpu", subject: "/CN=gpu-a.example", ca: "ca-one")
        let (serve, port) = try await serve(
            pki, clientCA: pki.path("ca-one.pem"),
            credentials: #"[{"name": "gpu-a", "role": "backend", "certificate_cn": "gpu-a.example"}]"#)
        let agent = try MusterProcess([
            "agent", "--coordinator", "wss://127.0.0.1:\(port)", "--name", "gpu-a", "--features", "image",
            "--ca-file", pki.serverCert, "--cert-file", gpu.certificateFile!, "--key-file", gpu.privateKeyFile!,
            "--log-format", "json",
        ])
        try await agent.waitForLog("registered")
        // The same certificate under another name is refused: the agent exits 1.
        let impostor = try MusterProcess([
            "agent", "--coordinator", "wss://127.0.0.1:\(port)", "--name", "gpu-b", "--features", "image",
            "--ca-file", pki.serverCert, "--cert-file", gpu.certificateFile!, "--key-file", gpu.privateKeyFile!,
            "--log-format", "json",
        ])
        #expect(try await impostor.waitForExit() == 1)
        #expect(try await agent.stop() == 0)
        #expect(try await serve.stop() == 0)
    }

    /// The client commands present a certificate with --cert-file/--key-file; the credential whose
    /// certificate_cn it carries decides what they may do.
    @Test func clientCommandsPresentTheirCertificate() async throws {
        let pki = try await PKI()
        defer { pki.remove() }
        try await pki.ca("ca-one")
        let viewer = try await pki.client("viewer", subject: "/CN=viewer.example", ca: "ca-one")
        let alice = try await pki.client("alice", subject: "/CN=alice.example", ca: "ca-one")
        let (serve, port) = try await serve(
            pki, clientCA: pki.path("ca-one.pem"),
            credentials: #"[{"name": "viewer", "role": "read", "certificate_cn": "viewer.example"}, "#
                + #"{"name": "alice", "role": "client", "certificate_cn": "alice.example"}]"#)
        let cli = SubmitCommandTests()
        func tls(_ c: ClientTLS) -> [String] {
            ["--coordinator", "wss://127.0.0.1:\(port)", "--tls-ca", pki.serverCert, "--cert-file", c.certificateFile!,
             "--key-file", c.privateKeyFile!]
        }
        let status = try await cli.run(["status", "--json"] + tls(viewer))
        #expect(status.status == 0, "\(status.errors)")
        #expect(status.output.contains(#""type":"status_report""#), "\(status.output)")
        let refused = try await cli.run(["submit", "--kind", "image"] + tls(viewer))
        #expect(refused.status == 1 && refused.errors.contains("forbidden"), "\(refused.errors)")
        let submitted = try await cli.run(["submit", "--kind", "image", "--json"] + tls(alice))
        #expect(submitted.status == 0, "\(submitted.errors)")
        #expect(submitted.output.contains(#""batch":1"#), "\(submitted.output)")
        let anonymous = try await cli.run(["status", "--coordinator", "wss://127.0.0.1:\(port)", "--tls-ca", pki.serverCert])
        #expect(anonymous.status == 1, "no certificate and no token: \(anonymous.output)")
        let half = try await cli.run(["status", "--cert-file", alice.certificateFile!])
        #expect(half.status == 64 && half.errors.contains("--cert-file and --key-file go together"), "\(half.errors)")
        #expect(try await serve.stop() == 0)
    }
}
