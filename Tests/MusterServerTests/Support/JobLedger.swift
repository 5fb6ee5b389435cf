import Foundation
@testable import MusterClient
import MusterProtocol
import MusterServer
import MusterTransport

/// The fault suite's invariant: every accepted job ended exactly once (completed, failed with a
/// reason, or canceled), and the client saw exactly one final event per job. The ledger follows
/// one client subscribed to every job and records what was accepted through it.
final class JobLedger: Sendable {
    private struct State {
        var accepted: Set<JobID> = []
        var finals: [JobID: [CoordinatorToClient.JobEvent]] = [:]
        var streamEnded = false
    }
    /// The state behind a reference, so the follower task can hold it before `self` exists.
    private final class Box: Sendable {
        let state = Locked(State())
        let changed = ChangeSignal()
    }
    private let box = Box()
    let client: MusterClient
    private let follower: Task<Void, Never>

    /// Subscribes `client` to every job and follows its events.
    init(_ client: MusterClient) async throws {
        self.client = client
        try await client.subscribe(batch: nil)
        let box = self.box
        follower = Task {
            for await e in client.events {
                guard e.state.isFinal, e.event != .snapshot else { continue }
                Self.change(box) { $0.finals[e.job, default: []].append(e) }
            }
            Self.change(box) { $0.streamEnded = true }
        }
    }

    private static func change(_ box: Box, _ body: (inout State) -> Void) {
        box.state.withLock { body(&$0) }
        box.changed.notify()
    }

    /// Submits through `via` (default: the ledger's own client) and records the accepted jobs.
    @discardableResult
    func submit(_ request: Wire.BatchRequest, via: MusterClient? = nil) async throws -> Wire.Accepted {
        let accepted = try await (via ?? client).submit(request)
        Self.change(box) { $0.accepted.formUnion(accepted.jobs) }
        return accepted
    }

    var acceptedCount: Int { box.state.withLock { $0.accepted.count } }
    var finalCount: Int { box.state.withLock { s in s.accepted.filter { s.finals[$0] != nil }.count } }

    /// Waits until every accepted job has a final event (bounded against hangs, not timed).
    func waitAllFinal(within bound: Duration = .seconds(120)) async throws {
        let deadline = ContinuousClock.now + bound
        while true {
            let (done, ended, missing) = box.state.withLock { s in
                (s.accepted.allSatisfy { s.finals[$0] != nil }, s.streamEnded, s.accepted.filter { s.finals[$0] == nil }.count)
            }
            if done { return }
            if ended || ContinuousClock.now > deadline {
                throw BoundExceeded(what: "a final event for every accepted job (\(missing) missing\(ended ? ", the client link ended" : ""))")
            }
            await box.changed.wait(atMost: .milliseconds(200))
        }
    }

    /// Submits one more job and waits for all to end: a late duplicate final event of an earlier
    /// job would have to overtake this one's to go unseen.
    func barrier(_ request: Wire.BatchRequest, within bound: Duration = .seconds(120)) async throws {
        try await submit(request)
        try await waitAllFinal(within: bound)
    }

    /// What breaks the invariant, one line per job; empty when it holds.
    func violations() -> [String] {
        box.state.withLock { s in
            var out: [String] = []
            for job in s.accepted.sorted() {
                let finals = s.finals[job] ?? []
                if finals.count != 1 {
                    out.append("job \(job): \(finals.count) final events \(finals.map(\.state.rawValue))")
                } else if finals[0].state == .failed, (finals[0].error?.message ?? "").isEmpty {
                    out.append("job \(job): failed without a reason")
                }
            }
            let unknown = Set(s.finals.keys).subtracting(s.accepted)
            if !unknown.isEmpty { out.append("final events for jobs never accepted: \(unknown.sorted())") }
            return out
        }
    }

    /// Outcomes of the accepted jobs, by final state.
    var outcomes: [JobState: Int] {
        box.state.withLock { s in
            var c: [JobState: Int] = [:]
            for job in s.accepted { if let f = s.finals[job]?.first { c[f.state, default: 0] += 1 } }
            return c
        }
    }

    func stop() async {
        await client.close()
        await follower.value
    }
}
