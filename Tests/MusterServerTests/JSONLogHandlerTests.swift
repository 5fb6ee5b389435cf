import Foundation
import Logging
import MusterServer
import MusterTransport
import Testing

@Test func jsonLogLinesAreParseableAndKeepDottedMetadata() throws {
    let lines = Locked<[String]>([])
    var handler = JSONLogHandler(label: "muster.test") { line in lines.withLock { $0.append(line) } }
    handler.logLevel = .debug
    var logger = Logger(label: "muster.test") { _ in handler }
    logger[metadataKey: "link.id"] = "7"
    logger.info("backend \"gpu\"\nregistered", metadata: ["backend.id": "-1"])
    let line = try #require(lines.withLock { $0.first })
    #expect(line.hasSuffix("}\n"))
    let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
    #expect(object["level"] as? String == "info")
    #expect(object["msg"] as? String == "backend \"gpu\"\nregistered")
    #expect(object["backend.id"] as? String == "-1")
    #expect(object["link.id"] as? String == "7")
    #expect((object["ts"] as? String)?.hasSuffix("Z") == true)
}
