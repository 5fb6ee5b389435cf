import BenchFixtures
import Foundation
import Testing

/// The benchmark workloads, small enough for every run (so they keep working); the full sizes
/// run with MUSTER_STORE_BENCH=1 and print what they measured. Nothing here asserts a time.
@Suite(.serialized) struct StoreWorkloadTests {
    static let full = ProcessInfo.processInfo.environment["MUSTER_STORE_BENCH"] == "1"

    @Test func groupCommitWorkload() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let jobs = Self.full ? 100_000 : 2_000
        let result = try StoreBenchmark.groupCommit(
            path: dir.file("bench.sqlite"), jobs: jobs, retained: min(10_000, jobs / 2))
        print(result)
        #expect(result.jobs == jobs)
        #expect(result.changes == 5 * jobs - min(10_000, jobs / 2))
        #expect(result.jobsStored == min(10_000, jobs / 2))
    }

    @Test func groupCommitWorkloadInBatches() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let (jobs, retained) = (2_050, 1_000)
        let result = try StoreBenchmark.groupCommit(
            path: dir.file("bench.sqlite"), jobs: jobs, batchSize: 100, retained: retained)
        print(result)
        // 21 batches accepted, each job bound, started and ended, all but the last `retained` evicted.
        #expect(result.changes == 21 + 3 * jobs + (jobs - retained))
        #expect(result.jobsStored == retained)
    }

    @Test func openWorkload() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let (jobs, unfinished) = Self.full ? (1_000_000, 100_000) : (5_000, 500)
        let result = try StoreBenchmark.openTime(path: dir.file("bench.sqlite"), jobs: jobs, unfinished: unfinished)
        print(result)
        #expect(result.jobs == jobs)
        #expect(result.unfinished == unfinished)
        #expect(result.batches == jobs / 10)
    }
}

/// A fresh directory under the system's temporary directory.
struct TempDir {
    let path: String

    init() throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("muster-bench-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    func file(_ name: String) -> String { "\(path)/\(name)" }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}
