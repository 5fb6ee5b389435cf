import Logging
import MusterServer
import Synchronization
import Testing

/// What a peer sends can never start a log line of its own (a forged `muster.audit` line).
@Suite struct EscapingLogHandlerTests {
    final class Capture: Sendable {
        let events = Mutex<[(String, Logger.Metadata?)]>([])
    }

    struct Recording: LogHandler {
        let capture: Capture
        var logLevel: Logger.Level = .trace
        var metadata: Logger.Metadata = [:]
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) { capture.events.withLock { $0.append((event.message.description, event.metadata)) } }
    }

    @Test func controlCharactersInTheMessageAndTheMetadataAreEscaped() {
        let capture = Capture()
        let logger = Logger(label: "t") { _ in EscapingLogHandler(Recording(capture: capture)) }
        let forged = "x\n2026-12-06T01:30:00+0000 notice muster.audit: FORGED"
        logger.notice("unknown type \(forged)", metadata: ["type": "\(forged)", "list": ["a\rb"], "path": "C:\\x"])
        let (message, metadata) = capture.events.withLock { $0[0] }
        #expect(message == #"unknown type x\n2026-12-06T01:30:00+0000 notice muster.audit: FORGED"#)
        #expect(metadata?["type"] == .string(#"x\n2026-12-06T01:30:00+0000 notice muster.audit: FORGED"#))
        #expect(metadata?["list"] == .array([.string(#"a\rb"#)]))
        #expect(metadata?["path"] == .string(#"C:\\x"#))
        #expect(EscapingLogHandler.escaped("tab\there\u{7}\u{2028}") == #"tab\there\u{7}\u{2028}"#)
        #expect(EscapingLogHandler.escaped("plain text, ünïcödé") == "plain text, ünïcödé")
    }
}
