import MusterCore
import MusterProtocol
@testable import MusterServer
import Testing

/// A snapshot's `started_ms` (Protocol 7.2) is the start of the attempt the job is running on or
/// that ended it, never that of an attempt it lost before ending in the queue.
@Suite struct SnapshotStartTests {
    func attempt(_ n: Int, started: Double?, ended: Double?, _ outcome: AttemptOutcome) -> AttemptRecord {
        AttemptRecord(
            attempt: n, backend: BackendID(Int64(n)), lease: Lease(UInt64(n)), boundAt: .seconds(Double(n)),
            startedAt: started.map(CoreInstant.seconds), endedAt: ended.map(CoreInstant.seconds), outcome: outcome)
    }

    @Test func theStartOfTheAttemptRunningOrEndingTheJob() {
        let running = [attempt(1, started: 2, ended: nil, .running)]
        #expect(Daemon.snapshotStart(of: running, attempt: 1, state: .running) == .seconds(2))
        let completed = [attempt(1, started: 3, ended: 5, .requeued), attempt(2, started: 6, ended: 9, .completed)]
        #expect(Daemon.snapshotStart(of: completed, attempt: 2, state: .completed) == .seconds(6))
        // Bound, not started: nothing to say yet.
        #expect(Daemon.snapshotStart(of: [attempt(1, started: nil, ended: nil, .bound)], attempt: 1, state: .bound) == nil)
    }

    @Test func nothingForAJobThatEndedInTheQueueAfterLosingAStartedAttempt() {
        // Started on attempt 1, requeued (its backend lost), then canceled while queued: `attempt`
        // is still 1, but that start is not this end's.
        let canceled = [attempt(1, started: 3, ended: 5, .requeued)]
        #expect(Daemon.snapshotStart(of: canceled, attempt: 1, state: .canceled) == nil)
        let moved = [attempt(1, started: 3, ended: 4, .revoked)]
        #expect(Daemon.snapshotStart(of: moved, attempt: 1, state: .failed) == nil)
        #expect(Daemon.snapshotStart(of: moved, attempt: 1, state: .running) == nil)
    }
}
