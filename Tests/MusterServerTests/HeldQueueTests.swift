import MusterCore
import MusterProtocol
@testable import MusterServer
import Testing

/// What a client link holds back while the store writes: a job's events keep their order, a
/// batch's events follow its `accepted`, and nothing else waits for another job's end.
@Suite struct HeldQueueTests {
    let b1 = BatchID(1)
    let b2 = BatchID(2)
    let j1 = JobID(1)
    let j2 = JobID(2)
    let j3 = JobID(3)

    @Test func anotherJobsEndDoesNotHoldBackABinding() {
        var q = HeldQueue()
        // Job 1 of batch 1 completed; its event waits for change 5.
        q.append(5, b1, j1, [1])
        #expect(q.mayBypass(b1, j2))  // job 2 of the same batch is bound meanwhile
        #expect(!q.mayBypass(b1, j1))  // job 1's own later events keep their place
        // A batch's `accepted` waits for change 6: no event of that batch goes ahead of it.
        q.append(6, b2, nil, [2])
        #expect(!q.mayBypass(b2, j3))
        #expect(q.mayBypass(b1, j2))
        // An event of job 3 that could not go ahead keeps its place (barrier 0).
        q.append(0, b2, j3, [3])
        #expect(!q.mayBypass(b2, j3))
        // Answers about no batch go ahead unless an answer about no batch is held.
        #expect(q.mayBypass(nil, nil))
        q.append(7, nil, nil, [4])
        #expect(!q.mayBypass(b1, j2) && !q.mayBypass(nil, nil))

        #expect(q.release(durable: 5) == [[1]])
        #expect(q.mayBypass(b1, j1) == false)  // the answer about no batch is still held
        // Change 6 durable: the `accepted` and the event that waited behind it, in order.
        #expect(q.release(durable: 6) == [[2], [3]])
        #expect(q.release(durable: 7) == [[4]])
        #expect(q.items.isEmpty && q.jobs.isEmpty && q.batches.isEmpty && q.unbatched == 0)
        #expect(q.mayBypass(b1, j1) && q.mayBypass(b2, j3))
    }

    @Test func aMessageAboutAWholeBatchWaitsForEverythingHeld() {
        var q = HeldQueue()
        q.append(3, b1, j1, [1])
        #expect(!q.mayBypass(b2, nil))
        _ = q.release(durable: 3)
        #expect(q.mayBypass(b2, nil))
    }
}
