@testable import MusterCore
import MusterProtocol
import Testing

/// The core's job table: records by id in chunks that never move, slots reused after removal.
@Suite struct JobTableTests {
    static func record(_ id: UInt64, _ state: JobState = .queued) -> JobRecord {
        JobRecord(
            id: JobID(id), batch: BatchID(id / 10), spec: JobSpec(kind: id.isMultiple(of: 2) ? "image" : "video"),
            state: state, backend: nil, lease: nil, attempt: 0, progress: 0, progressMessage: nil, history: [],
            result: nil, failure: nil, waitReason: nil, submittedAt: .zero, endedAt: nil, classIndex: 0,
            estimateIndex: 0, round: 0, seq: id, enqueuedAt: .zero)
    }

    @Test func recordsKeepTheirValuesAcrossChunkBoundaries() {
        var table = JobTable()
        // Several chunks of 1,024, with a gap in the ids.
        for id in UInt64(1)...3_000 { table.insert(Self.record(id)) }
        for id in UInt64(3_100)...5_000 { table.insert(Self.record(id, .gated)) }
        #expect(table.count == 4_901)
        #expect(table.stateCounts[JobState.queued.slot] == 3_000)
        #expect(table.stateCounts[JobState.gated.slot] == 1_901)
        for id in [UInt64(1), 1_024, 1_025, 2_048, 3_000, 3_100, 5_000] {
            #expect(table[JobID(id)].seq == id)
            #expect(table[JobID(id)].spec.kind == (id.isMultiple(of: 2) ? "image" : "video"))
        }
        #expect(table.get(JobID(3_050)) == nil)

        // Changed in place, in the last chunk and in the first.
        table[JobID(4_999)].attempt = 3
        table.setState(JobID(1_025), .running)
        #expect(table[JobID(4_999)].attempt == 3)
        #expect(table.state(JobID(1_025)) == .running)
        #expect(table.stateCounts[JobState.queued.slot] == 2_999)
        #expect(table.stateCounts[JobState.running.slot] == 1)
    }

    @Test func removedSlotsAreReusedAndTheirRecordsGone() {
        var table = JobTable()
        for id in UInt64(1)...2_100 { table.insert(Self.record(id)) }
        // The oldest 1,500 go (retention evicts the oldest first), then 1,500 new ones come.
        for id in UInt64(1)...1_500 { #expect(table.remove(JobID(id))?.seq == id) }
        #expect(table.count == 600)
        #expect(table.remove(JobID(7)) == nil, "already gone")
        for id in UInt64(2_101)...3_600 { table.insert(Self.record(id, .bound)) }
        #expect(table.count == 2_100)
        #expect(table.ids.first == JobID(1_501))
        #expect(table.ids.last == JobID(3_600))
        #expect(table.firstID(atLeast: JobID(1)) == JobID(1_501))
        for id in UInt64(1_501)...3_600 {
            #expect(table[JobID(id)].seq == id)
        }
        #expect(table.stateCounts[JobState.bound.slot] == 1_500)
        #expect(table.stateCounts[JobState.queued.slot] == 600)
    }

    @Test func chunksAppendAndChangeInPlace() {
        var chunks = Chunks<Int>()
        for i in 0..<2_500 { #expect(chunks.append(i * 3) == i) }
        #expect(chunks.count == 2_500)
        chunks[1_024] += 1
        #expect(chunks[1_023] == 3_069)
        #expect(chunks[1_024] == 3_073)
        #expect(chunks[2_499] == 7_497)
    }
}
