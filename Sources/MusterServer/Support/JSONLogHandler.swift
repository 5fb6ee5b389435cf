import Foundation
import Logging
import MusterProtocol

/// Writes one JSON object per log line to standard error: `ts`, `level`, `label`, `msg`, then the
/// metadata keys (dotted names such as `backend.id` kept as they are). For `--log-format json`.
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    public var logLevel: Logger.Level = .info
    private let label: String
    private let write: @Sendable (String) -> Void

    /// - Parameter write: where finished lines go (standard error by default; tests capture them).
    public init(label: String, write: @escaping @Sendable (String) -> Void = JSONLogHandler.standardError) {
        self.label = label
        self.write = write
    }

    public static let standardError: @Sendable (String) -> Void = { line in
        // One write(2) per line, so lines from different threads never interleave mid-line.
        var line = line
        line.withUTF8 { bytes in _ = Foundation.write(STDERR_FILENO, bytes.baseAddress, bytes.count) }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        var line = "{\"ts\":"
        appendJSONString(Self.timestamp(), to: &line)
        line += ",\"level\":"
        appendJSONString(event.level.rawValue, to: &line)
        line += ",\"label\":"
        appendJSONString(label, to: &line)
        line += ",\"msg\":"
        appendJSONString(event.message.description, to: &line)
        for (key, value) in merged.sorted(by: { $0.key < $1.key }) where !["ts", "level", "label", "msg"].contains(key) {
            line += ","
            appendJSONString(key, to: &line)
            line += ":"
            appendJSONString(value.description, to: &line)
        }
        line += "}\n"
        write(line)
    }

    private static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var seconds = now.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return String(
            format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday,
            parts.tm_hour, parts.tm_min, parts.tm_sec, Int(now.tv_nsec / 1_000_000))
    }
}
