import Foundation
import MusterProtocol
import Testing

/// Protocol/README.md and the code must tell the same story.
@Suite struct SpecTests {
    @Test func theSpecListsEveryErrorCodeWithItsHTTPStatus() throws {
        let spec = try String(contentsOf: repositoryRoot.appendingPathComponent("Protocol/README.md"), encoding: .utf8)
        for code in ErrorCode.defined {
            let row = spec.split(separator: "\n").first { $0.hasPrefix("| `\(code.rawValue)` |") }
            let cells = try #require(row, "Protocol/README.md has no table row for \(code)").split(separator: "|")
            #expect(
                cells.count > 2 && cells[1].trimmingCharacters(in: .whitespaces) == "\(code.httpStatus)",
                "\(code): the spec says \(cells.count > 1 ? String(cells[1]) : "nothing"), the code \(code.httpStatus)")
        }
    }
}
