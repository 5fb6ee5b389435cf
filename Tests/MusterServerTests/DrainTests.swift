import Foundation
@testable import MusterClient
import MusterProtocol
import MusterServer
import Testing

/// `drain` on the client link and `POST /v1/backends/{id}/drain` against an in-process coordinator.
@Suite struct DrainTests {
    @Test func aDrainedLocalBackendAnnouncesDrainingAndGetsNoNewJobs() async throws {
        let coordinator = try await TestCoordinator.start()
        let client = try await coordinator.connect()
        // sim-image (-1) and sim-video (-2) both run images; once -1 is drained, only -2 may.
        try await client.drain(backend: BackendID(-1))
        let report = try await client.status()
        let drained = try #require(report.backends.first { $0.id == BackendID(-1) })
        #expect(drained.capabilities?.state == .draining, "\(drained)")
        #expect(report.backends.first { $0.id == BackendID(-2) }?.capabilities?.state == .ready)

        try await client.subscribe(batch: nil)
        let accepted = try await client.submit(Wire.BatchRequest(jobs: [Wire.JobRequest(kind: "image", count: 6)]))
        let progress = try await within(.seconds(60), "6 images final") { await client.follow(accepted) }
        #expect(progress.counts[.completed] == 6)
        #expect(
            progress.orderedJobs.allSatisfy { $0.backend == BackendID(-2) }, "\(progress.orderedJobs.map(\.backend))")

        // Draining again is harmless; an unknown id is refused with its code.
        try await client.drain(backend: BackendID(-1))
        let unknown = await #expect(throws: MusterClientError.self) { try await client.drain(backend: BackendID(42)) }
        #expect(unknown?.code == .unknownBackend)
        await client.close()
        await coordinator.stop()
    }

    @Test func theHTTPMirrorAnswers202AndTheErrorsOfSection8() async throws {
        let coordinator = try await TestCoordinator.start(settings: [("auth.token", "s3cret-token")])
        let base = "http://127.0.0.1:\(coordinator.port)/v1/backends"
        let auth = ["Authorization": "Bearer s3cret-token"]

        let refused = try await HTTP.request("POST", "\(base)/-2/drain")
        #expect(refused.status == 401)
        let accepted = try await HTTP.request("POST", "\(base)/-2/drain", headers: auth)
        #expect(accepted.status == 202, "\(accepted.text)")
        #expect(try CoordinatorToClient.Draining.decode([UInt8](accepted.body)) == .init(backend: BackendID(-2)))
        let list = try await HTTP.get(base, headers: auth)
        let backends = list.json["backends"] as? [[String: Any]] ?? []
        let state = backends.first { $0["id"] as? Int == -2 }.flatMap {
            ($0["capabilities"] as? [String: Any])?["state"] as? String
        }
        #expect(state == "draining")

        let unknown = try await HTTP.request("POST", "\(base)/77/drain", headers: auth)
        #expect(unknown.status == 404)
        #expect(unknown.json["code"] as? String == "unknown_backend")
        let notAnID = try await HTTP.request("POST", "\(base)/gpu-box/drain", headers: auth)
        #expect(notAnID.status == 400)
        #expect(notAnID.json["code"] as? String == "invalid_message")
        let wrongMethod = try await HTTP.request("GET", "\(base)/-2/drain", headers: auth)
        #expect(wrongMethod.status == 405)
        await coordinator.stop()
    }
}
