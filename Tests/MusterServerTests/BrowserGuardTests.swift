@testable import MusterServer
import Testing

/// Web pages in the operator's browser: cross-origin requests and WebSockets, and DNS rebinding.
@Suite struct BrowserGuardTests {
    let open = BrowserGuard(allowedOrigins: [], loopbackHostsOnly: true, listenHost: "127.0.0.1")

    @Test func programsThatSendNoOriginPass() {
        #expect(open.refusal(origin: nil, host: "127.0.0.1:7460", changes: true) == nil)
        #expect(open.refusal(origin: nil, host: nil, changes: true) == nil)
        #expect(open.refusal(origin: "", host: "localhost:7460", changes: true) == nil)
    }

    @Test func theCoordinatorsOwnPagesPass() {
        #expect(open.refusal(origin: "http://127.0.0.1:7460", host: "127.0.0.1:7460", changes: true) == nil)
        #expect(open.refusal(origin: "http://LOCALHOST:7460", host: "localhost:7460", changes: true) == nil)
        #expect(open.refusal(origin: "http://[::1]:7460", host: "[::1]:7460", changes: true) == nil)
        #expect(open.refusal(origin: "https://127.0.0.1", host: "127.0.0.1:443", changes: true) == nil)
        // Whatever the scheme: one port serves one, and a proxy that terminates TLS passes the
        // page's `https` origin with the public Host (Protocol 1).
        #expect(open.refusal(origin: "https://127.0.0.1:7460", host: "127.0.0.1:7460", changes: true) == nil)
        // A default port counts only for its own scheme: http on 443 is another port than https.
        #expect(open.refusal(origin: "http://127.0.0.1", host: "127.0.0.1:443", changes: true) != nil)
    }

    @Test func anotherOriginIsRefusedWhenItChangesSomething() {
        let refusal = open.refusal(origin: "https://evil.example", host: "127.0.0.1:7460", changes: true)
        #expect(refusal?.contains("Origin 'https://evil.example'") == true)
        #expect(open.refusal(origin: "null", host: "127.0.0.1:7460", changes: true) != nil)
        #expect(open.refusal(origin: "http://127.0.0.1:8080", host: "127.0.0.1:7460", changes: true) != nil)
        // A read cannot be seen across origins without CORS, which the coordinator never grants.
        #expect(open.refusal(origin: "https://evil.example", host: "127.0.0.1:7460", changes: false) == nil)
    }

    @Test func aRebindingPageIsRefusedEvenSameOrigin() {
        let refusal = open.refusal(origin: "http://evil.example:7460", host: "evil.example:7460", changes: false)
        #expect(refusal?.contains("Host 'evil.example:7460' is not a loopback name") == true)
        #expect(open.refusal(origin: nil, host: "127.1.2.3:7460", changes: true) == nil)
        #expect(open.refusal(origin: nil, host: "box.localhost:7460", changes: true) == nil)
        #expect(open.refusal(origin: nil, host: "1270.0.0.1:7460", changes: true) != nil)
        #expect(open.refusal(origin: nil, host: "::1", changes: true) == nil, "an unbracketed IPv6 literal")
        #expect(open.refusal(origin: nil, host: "[::1]:7460", changes: true) == nil)

        // With credentials, or beyond loopback, any name may address it.
        let guarded = BrowserGuard(allowedOrigins: [], loopbackHostsOnly: false, listenHost: "0.0.0.0")
        #expect(guarded.refusal(origin: nil, host: "gpu-box.lan:7460", changes: true) == nil)
        #expect(guarded.refusal(origin: "http://gpu-box.lan:7460", host: "gpu-box.lan:7460", changes: true) == nil)
        #expect(guarded.refusal(origin: "http://other.lan", host: "gpu-box.lan:7460", changes: true) != nil)
    }

    @Test func allowedOriginsPassAndTheirHostsAddressIt() throws {
        let origins = try BrowserGuard.origins("https://muster.example, http://ui.lan:8080/").get()
        #expect(origins == ["https://muster.example", "http://ui.lan:8080"])
        let proxied = BrowserGuard(allowedOrigins: origins, loopbackHostsOnly: true, listenHost: "127.0.0.1")
        #expect(proxied.refusal(origin: "https://muster.example:443", host: "muster.example", changes: true) == nil)
        #expect(proxied.refusal(origin: "http://ui.lan:8080", host: "127.0.0.1:7460", changes: true) == nil)
        #expect(proxied.refusal(origin: "http://ui.lan", host: "127.0.0.1:7460", changes: true) != nil)
        #expect(throws: BrowserGuard.InvalidOrigin.self) { try BrowserGuard.origins("muster.example").get() }
        #expect(throws: BrowserGuard.InvalidOrigin.self) { try BrowserGuard.origins("https://a/b").get() }
    }
}
