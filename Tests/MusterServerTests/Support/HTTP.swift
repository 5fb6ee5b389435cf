import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A small HTTP client for end-to-end tests: JSON in, status and JSON out.
enum HTTP {
    struct Response {
        var status: Int
        var body: Data
        var json: [String: Any] { ((try? JSONSerialization.jsonObject(with: body)) as? [String: Any]) ?? [:] }
        var text: String { String(decoding: body, as: UTF8.self) }
    }

    /// `timeout`: longest wait for the answer (a request the coordinator holds on purpose, say
    /// until its disk has space again, waits for the test that holds it).
    static func request(
        _ method: String, _ url: String, body: String? = nil, headers: [String: String] = [:], timeout: TimeInterval = 30
    ) async throws -> Response {
        var request = URLRequest(url: URL(string: url)!)
        request.httpMethod = method
        request.timeoutInterval = timeout
        if let body {
            request.httpBody = Data(body.utf8)
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        }
        for (k, v) in headers { request.setValue(v, forHTTPHeaderField: k) }
        let (data, response) = try await URLSession.shared.data(for: request)
        return Response(status: (response as? HTTPURLResponse)?.statusCode ?? 0, body: data)
    }

    static func get(_ url: String, headers: [String: String] = [:]) async throws -> Response {
        try await request("GET", url, headers: headers)
    }

    static func post(_ url: String, _ body: String, headers: [String: String] = [:], timeout: TimeInterval = 30) async throws -> Response {
        try await request("POST", url, body: body, headers: headers, timeout: timeout)
    }

    /// Polls `url` until `condition` holds on its response (bounded generously against hangs).
    @discardableResult
    static func waitFor(
        _ url: String, _ what: String, timeout: Duration = .seconds(60), headers: [String: String] = [:],
        _ condition: (Response) -> Bool
    ) async throws -> Response {
        let deadline = ContinuousClock.now + timeout
        while true {
            if let r = try? await get(url, headers: headers), condition(r) { return r }
            if ContinuousClock.now > deadline { throw MusterProcess.Failure(description: "timed out waiting for \(what) at \(url)") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }
}
