import Logging

/// Wraps a text log handler (swift-log's `StreamLogHandler`) so that what a peer sent can never
/// start a line of its own: control characters in the message and in metadata values (a newline
/// in an unknown message `type`, an `error` message from a backend) are written as `\n`, `\r`,
/// `\t` or `\u{XX}`, and a backslash as `\\`. A forged `muster.audit` line is then visibly part
/// of the line that quotes it. (`--log-format json` escapes them as JSON does.)
public struct EscapingLogHandler: LogHandler {
    private var inner: any LogHandler

    public init(_ inner: any LogHandler) { self.inner = inner }

    public var logLevel: Logger.Level {
        get { inner.logLevel }
        set { inner.logLevel = newValue }
    }

    public var metadata: Logger.Metadata {
        get { inner.metadata }
        set { inner.metadata = newValue }
    }

    public var metadataProvider: Logger.MetadataProvider? {
        get { inner.metadataProvider }
        set { inner.metadataProvider = newValue }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { inner[metadataKey: key] }
        set { inner[metadataKey: key] = newValue }
    }

    public func log(event: LogEvent) {
        var event = event
        event.message = Logger.Message(stringLiteral: Self.escaped(event.message.description))
        event.metadata = event.metadata.map { $0.mapValues(Self.escaped) }
        inner.log(event: event)
    }

    static func escaped(_ value: Logger.Metadata.Value) -> Logger.Metadata.Value {
        switch value {
        case .string(let s): return .string(escaped(s))
        case .stringConvertible(let c): return .string(escaped(c.description))
        case .array(let items): return .array(items.map(escaped))
        case .dictionary(let d): return .dictionary(d.mapValues(escaped))
        }
    }

    /// `text` with control characters (C0, DEL, C1, and the line and paragraph separators) and
    /// backslashes escaped; the same text when it has none (the common case, no copy).
    public static func escaped(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: needsEscape) else { return text }
        var out = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            guard needsEscape(scalar) else {
                out.append(scalar)
                continue
            }
            let escape: String
            switch scalar {
            case "\n": escape = "\\n"
            case "\r": escape = "\\r"
            case "\t": escape = "\\t"
            case "\\": escape = "\\\\"
            default: escape = "\\u{\(String(scalar.value, radix: 16))}"
            }
            out.append(contentsOf: escape.unicodeScalars)
        }
        return String(out)
    }

    private static func needsEscape(_ s: Unicode.Scalar) -> Bool {
        s.value < 0x20 || s == "\\" || (0x7f...0x9f).contains(s.value) || s.value == 0x2028 || s.value == 0x2029
    }
}
