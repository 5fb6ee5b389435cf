import Foundation
import Testing

/// Issue 16, the OpenAPI document: Protocol/openapi.yaml (reusing Protocol/schemas by `$ref`),
/// its bundle committed as Sources/MusterServer/OpenAPI/openapi.json and served at
/// `GET /openapi.json`, checked by independent tools from PyPI (Tests/Interop/openapi.py):
/// openapi-spec-validator on both forms, and schemathesis against a real `muster serve` (embedded
/// default, two local backends) for a bounded number of generated requests, valid and invalid,
/// finding no 5xx and no answer the document does not allow. Nothing asserts a duration.
@Suite(.serialized, .timeLimit(.minutes(5))) struct OpenAPITests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// The committed bundle is what Scripts/openapi makes from Protocol/openapi.yaml and the
    /// schemas now: editing either without regenerating fails here.
    @Test func theCommittedBundleIsFresh() async throws {
        let r = try await runChild("/usr/bin/python3", [Self.root.appendingPathComponent("Scripts/openapi").path, "--check"])
        #expect(r.status == 0, "Scripts/openapi --check:\n\(r.text)\(String(decoding: r.errors, as: UTF8.self))")
    }

    /// A coordinator with its embedded default, listening on a free loopback port.
    func serve() async throws -> (MusterProcess, Int) {
        let serve = try MusterProcess(["serve", "--listen", "127.0.0.1:0", "--log-level", "debug"])
        let line = try await serve.waitForLog("muster serving")
        return (serve, try #require(Int(line["listen.port"] as? String ?? "")))
    }

    /// The result of one openapi.py run, its output shown when it failed.
    func expectOK(_ r: [String: Any], sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(
            r["ok"] as? Bool == true,
            "\(r["error"] ?? r)\n\(r["output"] as? String ?? "")", sourceLocation: sourceLocation)
    }

    @Test func theDocumentIsValidAndServedAsCommitted() async throws {
        let (serve, port) = try await serve()
        let served = try await HTTP.get("http://127.0.0.1:\(port)/openapi.json")
        #expect(served.status == 200)
        let committed = try Data(contentsOf: Self.root.appendingPathComponent("Sources/MusterServer/OpenAPI/openapi.json"))
        #expect(served.body == committed, "GET /openapi.json is the committed bundle")
        #expect(served.json["openapi"] as? String == "3.1.0")
        // Served with every other route, no token needed even when /v1/ needs one.
        let r = try await runInteropScript("openapi.py", ["validate", "\(port)"], bound: .seconds(240))
        expectOK(r)
        #expect((r["examples"] as? [String])?.isEmpty == false, "\(r)")
        #expect(try await serve.stop() == 0)
    }

    @Test func aTokenGuardsTheAPIButNotTheDocument() async throws {
        let serve = try MusterProcess(
            ["serve", "--listen", "127.0.0.1:0", "--log-level", "debug"], environment: ["MUSTER_AUTH_TOKEN": "s3cret"])
        let line = try await serve.waitForLog("muster serving")
        let port = try #require(Int(line["listen.port"] as? String ?? ""))
        let base = "http://127.0.0.1:\(port)"
        #expect(try await HTTP.get("\(base)/openapi.json").status == 200)
        let refused = try await HTTP.get("\(base)/v1/backends")
        #expect(refused.status == 401 && refused.json["code"] as? String == "bad_credentials", "\(refused.text)")
        #expect(try await HTTP.get("\(base)/v1/backends", headers: ["Authorization": "Bearer s3cret"]).status == 200)
        // The scheme is case-insensitive (RFC 9110 11.1); another scheme is no token.
        #expect(try await HTTP.get("\(base)/v1/backends", headers: ["Authorization": "bearer s3cret"]).status == 200)
        #expect(try await HTTP.get("\(base)/v1/backends", headers: ["Authorization": "Basic s3cret"]).status == 401)
        #expect(try await serve.stop() == 0)
    }

    @Test func schemathesisFindsNoAnswerTheDocumentDoesNotAllow() async throws {
        let (serve, port) = try await serve()
        let r = try await runInteropScript("openapi.py", ["fuzz", "\(port)"], bound: .seconds(280))
        expectOK(r)
        let summary = r["summary"] as? [String: Any] ?? [:]
        // Every operation but GET /openapi.json, which schemathesis leaves out as the document itself.
        let document = try #require(
            try JSONSerialization.jsonObject(with: Data(contentsOf: Self.root.appendingPathComponent("Sources/MusterServer/OpenAPI/openapi.json")))
                as? [String: Any])
        let operations = (document["paths"] as? [String: [String: Any]] ?? [:]).values.reduce(0) { $0 + $1.count }
        #expect(operations >= 14)
        #expect((summary["operations"] as? [String])?.count == operations - 1, "\(r)")
        #expect(summary["stateful"] as? Bool == true, "stateful sequences along the document's links: \(r)")
        #expect((summary["failed"] as? [String])?.isEmpty == true, "\(r)")
        // The coordinator kept serving through it all.
        #expect(try await HTTP.get("http://127.0.0.1:\(port)/healthz").status == 200)
        #expect(try await serve.stop() == 0)
    }
}
