import Foundation
import MusterServer
import Testing

/// README.md must tell the truth: its configuration table is the one the key table produces.
@Test func readmeConfigurationReferenceMatchesTheKeyTable() throws {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    let readme = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
    let begin = "<!-- config-reference:begin -->\n", end = "<!-- config-reference:end -->"
    let start = try #require(readme.range(of: begin), "README.md lacks the config-reference markers")
    let stop = try #require(readme.range(of: end, range: start.upperBound..<readme.endIndex))
    let table = String(readme[start.upperBound..<stop.lowerBound])
    #expect(table == ConfigKey.referenceMarkdown(), "regenerate with: muster serve --config-reference")
}
