import Logging
@testable import MusterClient
import MusterProtocol
import MusterServer
import MusterTransport
import Testing

/// `MusterClient` against a scripted peer on `muster.client.v1`: what it does when the
/// coordinator stays silent or closes the link in ways a real coordinator rarely does.
@Suite struct ClientLinkTests {
    /// What the scripted peer does with each `hello` and each later message.
    enum Script: Sendable {
        /// Never answers anything.
        case silent
        /// Welcomes, then never answers a request.
        case welcomeOnly
        /// Closes the link with this code at `hello`, sending nothing first.
        case closeAtHello(UInt16)
    }

    /// A peer listening on 127.0.0.1 port 0 that speaks `muster.client.v1` by `script`.
    struct Peer {
        let transport: Transport
        let port: Int

        init(_ script: Script) async throws {
            transport = try Transport(logger: TestCoordinator.quietLogger)
            let handler = WebSocketHandler(text: { t, id, text in
                guard case .hello? = try? ClientToCoordinator.decode(text) else { return }
                switch script {
                case .silent:
                    break
                case .welcomeOnly:
                    let welcome = CoordinatorToClient.welcome(.init(coordinator: "scripted", heartbeatMs: 5000))
                    t.send(text: welcome.encodedString(), to: id)
                case .closeAtHello(let code):
                    t.close(id, code: MusterTransport.CloseCode(code), reason: "scripted")
                }
            })
            var server = ServerConfiguration()
            server.subprotocols = [(Subprotocol.client, handler)]
            port = try await transport.listen(server).port
        }

        func connect(connectTimeout: Duration = .seconds(30), requestTimeout: Duration? = .seconds(30))
            async throws(MusterClientError) -> MusterClient
        {
            var options = MusterClient.Options(coordinator: "ws://127.0.0.1:\(port)", name: "tester")
            options.connectTimeout = connectTimeout
            options.requestTimeout = requestTimeout
            return try await MusterClient.connect(options, logger: TestCoordinator.quietLogger)
        }
    }

    @Test func noWelcomeIsATimeoutNotAHang() async throws {
        let peer = try await Peer(.silent)
        let error = await #expect(throws: MusterClientError.self) {
            _ = try await peer.connect(connectTimeout: .milliseconds(300))
        }
        #expect(error?.code == MusterClientError.timeout)
        #expect(error?.message.contains("no welcome") == true)
        await peer.transport.shutdown()
    }

    @Test func anUnansweredRequestIsATimeoutAndTheLinkStaysUsable() async throws {
        let peer = try await Peer(.welcomeOnly)
        let client = try await peer.connect(requestTimeout: .milliseconds(300))
        for _ in 0..<2 {
            let error = await #expect(throws: MusterClientError.self) { _ = try await client.status() }
            #expect(error?.code == MusterClientError.timeout)
            #expect(error?.message.contains("status") == true)
        }
        #expect(await client.closeError == nil)
        await client.close()
        await peer.transport.shutdown()
    }

    @Test func aCloseBeforeWelcomeIsFatalAndNamesTheCloseCode() async throws {
        let peer = try await Peer(.closeAtHello(1011))
        let error = await #expect(throws: MusterClientError.self) { _ = try await peer.connect() }
        #expect(error?.code == MusterClientError.linkClosed)
        #expect(error?.closeCode == 1011)
        #expect(error?.message.contains("1011") == true)
        await peer.transport.shutdown()
    }

    @Test func aRefusalCloseCodeAloneNamesTheRefusal() async throws {
        let peer = try await Peer(.closeAtHello(4003))
        let error = await #expect(throws: MusterClientError.self) { _ = try await peer.connect() }
        #expect(error?.code == .wrongRole)
        #expect(error?.closeCode == 4003)
        await peer.transport.shutdown()
    }

    @Test func closingTheClientFailsWhatIsPending() async throws {
        let peer = try await Peer(.welcomeOnly)
        let client = try await peer.connect(requestTimeout: nil)
        let answer = Task { () async throws(MusterClientError) -> CoordinatorToClient.StatusReport in
            try await client.status()
        }
        // Close once the request is on its way; the pending request fails instead of waiting forever.
        try await within(.seconds(60), "the request to be pending") {
            while await client.pendingRequests == 0 { await Task.yield() }
        }
        await client.close()
        let error = await #expect(throws: MusterClientError.self) { _ = try await answer.value }
        #expect(error?.code == MusterClientError.clientClosed)
        await peer.transport.shutdown()
    }
}
