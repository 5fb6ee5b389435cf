import Foundation
import MusterProtocol
import Testing

/// The repository root, found from this file's path (Tests/MusterProtocolTests/ExampleTests.swift).
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()

let validDirectory = repositoryRoot.appendingPathComponent("Protocol/examples/valid")
let invalidDirectory = repositoryRoot.appendingPathComponent("Protocol/examples/invalid")

func exampleFiles(_ directory: URL) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? [])
        .filter { $0.hasSuffix(".json") && $0 != "expected.json" }.sorted()
}

/// Decodes an example by its file name, `<channel>.<type or body>[.<variant>].json`, and
/// re-encodes it. Returns the wire type (or body name) and the re-encoded bytes.
func decodeExample(_ name: String, _ bytes: [UInt8]) throws(ProtocolError) -> (String, [UInt8]) {
    let parts = name.split(separator: ".").map(String.init)
    let channel = parts[0]
    switch channel {
    case "backend-in":
        let m = try BackendToCoordinator.decode(bytes)
        return (m.type, m.encode())
    case "backend-out":
        let m = try CoordinatorToBackend.decode(bytes)
        return (m.type, m.encode())
    case "client-in":
        let m = try ClientToCoordinator.decode(bytes)
        return (m.type, m.encode())
    case "client-out":
        let m = try CoordinatorToClient.decode(bytes)
        return (m.type, m.encode())
    case "http":
        let body = parts[1]
        switch body {
        case "batch_request": return (body, try Wire.BatchRequest.decode(bytes).encode())
        case "accepted": return (body, try Wire.Accepted.decode(bytes).encode())
        case "job_info": return (body, try Wire.JobInfo.decode(bytes).encode())
        case "batch_info": return (body, try Wire.BatchInfo.decode(bytes).encode())
        case "cancel_result": return (body, try Wire.CancelResult.decode(bytes).encode())
        case "backend_list": return (body, try Wire.BackendList.decode(bytes).encode())
        case "load_model_request": return (body, try Wire.LoadModelRequest.decode(bytes).encode())
        case "models_loading": return (body, try Wire.ModelsLoading.decode(bytes).encode())
        case "draining": return (body, try CoordinatorToClient.Draining.decode(bytes).encode())
        case "health": return (body, try Wire.Health.decode(bytes).encode())
        case "readiness": return (body, try Wire.Readiness.decode(bytes).encode())
        case "error_body": return (body, try Wire.ErrorBody.decode(bytes).encode())
        default: fatalError("example \(name) names an unknown HTTP body '\(body)'")
        }
    default:
        fatalError("example \(name) names an unknown channel '\(channel)'")
    }
}

/// JSON equality as values: member order and number spelling do not matter.
func jsonEquivalent(_ a: [UInt8], _ b: [UInt8]) throws -> Bool {
    let x = try JSONSerialization.jsonObject(with: Data(a), options: [.fragmentsAllowed])
    let y = try JSONSerialization.jsonObject(with: Data(b), options: [.fragmentsAllowed])
    return NSDictionary(dictionary: ["v": x]).isEqual(to: ["v": y])
}

@Suite struct ExampleTests {
    @Test func everyChannelHasExamples() {
        let names = exampleFiles(validDirectory)
        for channel in ["backend-in", "backend-out", "client-in", "client-out", "http"] {
            #expect(names.contains { $0.hasPrefix(channel + ".") }, "no valid example for \(channel)")
        }
        #expect(names.count >= 60)
    }

    @Test(arguments: exampleFiles(validDirectory))
    func validExampleRoundTrips(_ name: String) throws {
        let bytes = [UInt8](try Data(contentsOf: validDirectory.appendingPathComponent(name)))
        do {
            let (type, encoded) = try decodeExample(name, bytes)
            let parts = name.split(separator: ".").map(String.init)
            #expect(type == parts[1], "\(name) decoded as '\(type)'")
            #expect(
                try jsonEquivalent(bytes, encoded),
                "\(name) re-encodes differently: \(String(decoding: encoded, as: UTF8.self))")
            // Encoding is stable: decoding our own output gives the same bytes again.
            let (_, again) = try decodeExample(name, encoded)
            #expect(again == encoded)
        } catch {
            Issue.record("\(name) was rejected: \(error)")
        }
    }

    struct Expectation: Decodable {
        var code: String
        var path: String
        var check: String
    }

    static func expectations() throws -> [String: Expectation] {
        let data = try Data(contentsOf: invalidDirectory.appendingPathComponent("expected.json"))
        return try JSONDecoder().decode([String: Expectation].self, from: data)
    }

    @Test func everyInvalidExampleHasAnExpectation() throws {
        let expected = try Self.expectations()
        #expect(Set(expected.keys) == Set(exampleFiles(invalidDirectory)))
        #expect(expected.values.allSatisfy { $0.check == "schema" || $0.check == "semantic" })
    }

    @Test(arguments: exampleFiles(invalidDirectory))
    func invalidExampleIsRejected(_ name: String) throws {
        let expected = try #require(try Self.expectations()[name])
        let bytes = [UInt8](try Data(contentsOf: invalidDirectory.appendingPathComponent(name)))
        do {
            let (type, _) = try decodeExample(name, bytes)
            Issue.record("\(name) was accepted as '\(type)'")
        } catch {
            #expect(error.code.rawValue == expected.code, "\(name): \(error)")
            #expect(error.path == expected.path, "\(name): \(error)")
        }
    }

    @Test func schemasAgreeWithTheExamples() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = [repositoryRoot.appendingPathComponent("Scripts/check-schemas").path]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "Scripts/check-schemas failed:\n\(output)")
    }

    @Test func errorsEchoTheRequestID() {
        do {
            _ = try ClientToCoordinator.decode(#"{"type":"submit","id":"r42","jobs":[{"kind":"Image"}]}"#)
            Issue.record("accepted a bad kind")
        } catch {
            #expect(error.requestID == "r42")
            #expect(error.messageType == "submit")
            #expect(error.path == "jobs[0].kind")
            #expect(error.errorMessage.id == "r42")
            #expect(error.errorMessage.code == .invalidMessage)
        }
    }
}
