import MusterTransport
import Testing

@Test func linksAgainstLibwebsockets41() {
    #expect(libwebsocketsVersion().hasPrefix("4."))
}
