import Foundation
import MusterTransport
import Testing

/// A self-signed certificate made with the `openssl` command line for one test.
struct TestCertificate {
    let directory: URL
    let certificate: String
    let key: String

    init(name: String, in directory: URL) throws {
        self.directory = directory
        certificate = directory.appendingPathComponent("\(name).pem").path
        key = directory.appendingPathComponent("\(name).key").path
        let openssl = try #require(which("openssl"), "openssl is needed (Scripts/setup installs it)")
        let r = try run(
            openssl,
            [
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                "-keyout", key, "-out", certificate, "-subj", "/CN=localhost",
                "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            ])
        try #require(r.status == 0, "openssl failed: \(r.output)")
    }
}

@Suite("TLS", .serialized, .timeLimit(.minutes(1)))
struct TLSTests {
    @Test func wssRoundTripVerifiedAgainstCAFile() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let cert = try TestCertificate(name: "server", in: dir)
        let t = try makeTransport()
        let server = Recorder<WSEvent>()
        var s = ServerConfiguration()
        s.tls = ServerTLS(certificateFile: cert.certificate, privateKeyFile: cert.key)
        s.subprotocols = [("muster.backend.v1", server.handler(echo: true))]
        s.http.get("/healthz") { _, _ in .respond(.json(200, "{}")) }
        let config = s
        let port = try await t.listen(config).port
        let client = Recorder<WSEvent>()
        let link = try await t.dial(
            DialConfiguration(
                url: "wss://127.0.0.1:\(port)/", subprotocol: "muster.backend.v1",
                tls: ClientTLS(caFile: cert.certificate)),
            handler: client.handler())
        #expect(await client.waitOpened())
        #expect(await t.send(text: "over tls", to: link) == .queued)
        #expect(await client.waitText("over tls"))
        #expect(await server.waitText("over tls"))
        await t.shutdown()
    }

    @Test func untrustedCertificateIsRefusedUnlessSelfSignedAllowed() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let cert = try TestCertificate(name: "server", in: dir)
        let other = try TestCertificate(name: "other", in: dir)
        // A 1 s redial lets the link that must open recover from a failed first attempt (seen
        // when the whole suite loads the machine); the refused link fails every attempt anyway.
        let t = try makeTransport { $0.reconnectDelays = [.seconds(1)] }
        let server = Recorder<WSEvent>()
        var s = ServerConfiguration()
        s.tls = ServerTLS(certificateFile: cert.certificate, privateKeyFile: cert.key)
        s.subprotocols = [("muster.backend.v1", server.handler(echo: true))]
        let config = s
        let port = try await t.listen(config).port

        // Verified against the wrong CA: the handshake fails, nothing opens.
        let refused = Recorder<WSEvent>()
        let bad = try await t.dial(
            DialConfiguration(
                url: "wss://127.0.0.1:\(port)/", subprotocol: "muster.backend.v1",
                tls: ClientTLS(caFile: other.certificate)),
            handler: refused.handler())
        // Development mode: self-signed accepted explicitly.
        let dev = Recorder<WSEvent>()
        _ = try await t.dial(
            DialConfiguration(
                url: "wss://127.0.0.1:\(port)/", subprotocol: "muster.backend.v1", tls: ClientTLS(allowSelfSigned: true)
            ),
            handler: dev.handler())
        #expect(await dev.waitOpened())
        #expect(await server.waitOpened(count: 1))
        #expect(await refused.waitDialFailed())
        #expect(refused.openedIDs().isEmpty)
        #expect(await t.isOpen(bad) == false)
        await t.shutdown()
    }

    @Test func mutualTLSRequiresClientCertificate() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let serverCert = try TestCertificate(name: "server", in: dir)
        let clientCert = try TestCertificate(name: "client", in: dir)
        // Links redial after a failure; a short delay lets the certificate-bearing link recover
        // from a transient failure of its first attempt (seen on a heavily loaded machine) within
        // the test's bound, while the anonymous link keeps failing every attempt.
        let t = try makeTransport { $0.reconnectDelays = [.seconds(1)] }
        let server = Recorder<WSEvent>()
        var s = ServerConfiguration()
        s.tls = ServerTLS(
            certificateFile: serverCert.certificate, privateKeyFile: serverCert.key,
            clientCAFile: clientCert.certificate,
            requireClientCertificate: true)
        s.subprotocols = [("muster.backend.v1", server.handler(echo: true))]
        let config = s
        let port = try await t.listen(config).port

        let anonymous = Recorder<WSEvent>()
        _ = try await t.dial(
            DialConfiguration(
                url: "wss://127.0.0.1:\(port)/", subprotocol: "muster.backend.v1",
                tls: ClientTLS(caFile: serverCert.certificate)),
            handler: anonymous.handler())
        let withCert = Recorder<WSEvent>()
        let link = try await t.dial(
            DialConfiguration(
                url: "wss://127.0.0.1:\(port)/", subprotocol: "muster.backend.v1",
                tls: ClientTLS(
                    caFile: serverCert.certificate, certificateFile: clientCert.certificate,
                    privateKeyFile: clientCert.key)),
            handler: withCert.handler())
        #expect(await withCert.waitOpened())
        #expect(await t.send(text: "mtls", to: link) == .queued)
        #expect(await withCert.waitText("mtls"))
        #expect(await server.waitOpened(count: 1))
        #expect(await anonymous.waitDialFailed())
        #expect(anonymous.openedIDs().isEmpty)
        // A certificate the client CA did not sign is refused too.
        let stranger = try TestCertificate(name: "stranger", in: dir)
        let withStrangerCert = Recorder<WSEvent>()
        _ = try await t.dial(
            DialConfiguration(
                url: "wss://127.0.0.1:\(port)/", subprotocol: "muster.backend.v1",
                tls: ClientTLS(
                    caFile: serverCert.certificate, certificateFile: stranger.certificate, privateKeyFile: stranger.key)),
            handler: withStrangerCert.handler())
        #expect(await withStrangerCert.waitDialFailed())
        #expect(withStrangerCert.openedIDs().isEmpty)
        #expect(server.openedIDs().count == 1)
        await t.shutdown()
    }
}
