import ArgumentParser
import Foundation
import MusterCore
import MusterProtocol
import BenchFixtures
import MusterStore

/// `muster-bench store`: the SQLite job store alone (group-commit throughput on this disk), and
/// what a restart costs: opening a store of `--jobs` jobs (`--unfinished` of them unfinished)
/// and the core taking it over (`Coordinator.restore`) until the jobs are ready to route.
struct BenchStore: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store",
        abstract: "The SQLite job store: group-commit throughput, and restart time with a large store.")

    @Option(help: "Jobs through the group-commit run (4 changes each: accepted, bound, ended, evicted).")
    var commitJobs = 200_000
    @Option(help: "Jobs in the store for the restart run.")
    var jobs = 1_000_000
    @Option(help: "Of those, unfinished (half bound, half queued).")
    var unfinished = 100_000
    @Option(help: "Directory for the store files (default: a new temporary one, removed afterwards).")
    var directory: String?

    func run() async throws {
        let dir = directory ?? FileManager.default.temporaryDirectory.appendingPathComponent("muster-bench-store-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { if directory == nil { try? FileManager.default.removeItem(atPath: dir) } }

        let commit = try StoreBenchmark.groupCommit(path: "\(dir)/commit.sqlite", jobs: commitJobs)
        let open = try StoreBenchmark.openTime(path: "\(dir)/restart.sqlite", jobs: jobs, unfinished: unfinished)
        // The whole restart as `muster serve` does it: open (epoch commit, read everything), then
        // the core takes the snapshot over.
        let store = SQLiteJobStore(path: "\(dir)/restart.sqlite")
        let t0 = ContinuousClock.now
        let snapshot = try store.open()
        let t1 = ContinuousClock.now
        var core = Coordinator(policy: {
            var p = CorePolicy()
            p.persistChanges = true
            p.finishedJobLimit = jobs
            return p
        }())
        let actions = core.restore(snapshot, at: CoreInstant(nanoseconds: UInt64(Date().timeIntervalSince1970 * 1e9)))
        let t2 = ContinuousClock.now
        store.close()
        let states = core.jobsByState
        let routable = (states[.queued] ?? 0) + (states[.gated] ?? 0) + (states[.bound] ?? 0)

        print("store (SQLite WAL, synchronous=FULL, this machine's disk; release build)")
        print(commit.description)
        print(open.description)
        print(
            "restart: open \(String(format: "%.2f", (t1 - t0).secondsDouble)) s + core restore "
                + "\(String(format: "%.2f", (t2 - t1).secondsDouble)) s = \(String(format: "%.2f", (t2 - t0).secondsDouble)) s "
                + "for \(snapshot.jobs.count) jobs (\(routable) unfinished ready to route, \(actions.count) actions)")
    }
}
