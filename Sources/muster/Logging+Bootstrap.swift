import Logging
import MusterServer

/// Bootstraps swift-log once for the process: text or JSON lines on standard error.
/// Only the executable does this; the libraries take the `Logger` they are given.
enum LogBootstrap {
    static func bootstrap(format: String, level: String) {
        let level = Logger.Level(rawValue: level) ?? .info
        LoggingSystem.bootstrap { label in
            var handler: any LogHandler =
                format == "json"
                ? JSONLogHandler(label: label) : EscapingLogHandler(StreamLogHandler.standardError(label: label))
            handler.logLevel = level
            return handler
        }
    }
}
