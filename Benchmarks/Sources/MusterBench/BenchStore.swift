import ArgumentParser
import Foundation
import MusterCore
import MusterProtocol
import BenchFixtures
import MusterStore

/// `muster-bench store`: the job store alone (group-commit throughput on this disk), and what a
/// restart costs: opening a store of `--jobs` jobs (`--unfinished` of them unfinished) and the
/// core taking it over (`Coordinator.restore`) until the jobs are ready to route. SQLite always;
/// PostgreSQL too, in the same run, when a server is given (`--postgres`, by default
/// `MUSTER_TEST_POSTGRES_URL`, which Scripts/bench store sets by starting a throw-away server).
struct BenchStore: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store",
        abstract:
            "The job stores (SQLite, and PostgreSQL when a server is given): group-commit throughput, and restart time with a large store."
    )

    @Option(help: "Jobs through the group-commit run (each bound, ended and evicted; batches accepted).")
    var commitJobs = 200_000
    @Option(
        help:
            "Jobs per batch in the group-commit run: 1 (5 changes per job), or e.g. 100 as `muster-bench e2e` submits them (jobs evicted one by one)."
    )
    var commitBatch = 1
    @Option(
        help:
            "Jobs appended per wait for durability in the group-commit run (0: never wait, commits swallow whole job lives); e.g. 50, about what `muster serve` commits every 4 ms at 12,500 jobs/s."
    )
    var commitStep = 0
    @Option(help: "Jobs in the store for the restart run.")
    var jobs = 1_000_000
    @Option(help: "Of those, unfinished (half bound, half queued).")
    var unfinished = 100_000
    @Option(help: "Directory for the store files (default: a new temporary one, removed afterwards).")
    var directory: String?
    @Option(
        help:
            "A PostgreSQL superuser's URL (postgres://USER:PASSWORD@HOST:PORT/DB): the same runs on PostgreSQL, each in a new database. Default: $MUSTER_TEST_POSTGRES_URL; none: SQLite only."
    )
    var postgres: String?

    func run() async throws {
        let dir =
            directory
            ?? FileManager.default.temporaryDirectory.appendingPathComponent("muster-bench-store-\(UUID().uuidString)")
            .path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { if directory == nil { try? FileManager.default.removeItem(atPath: dir) } }

        print("store (SQLite WAL, synchronous=FULL, this machine's disk; release build)")
        try measure(
            commitStore: { SQLiteJobStore(path: "\(dir)/commit.sqlite") },
            restartStore: { SQLiteJobStore(path: "\(dir)/restart.sqlite") })

        let server = postgres ?? ProcessInfo.processInfo.environment["MUSTER_TEST_POSTGRES_URL"]
        guard let server, !server.isEmpty else {
            print("store (PostgreSQL): skipped, no server (--postgres URL, or run through Scripts/bench store)")
            return
        }
        let suffix = UUID().uuidString.prefix(8).lowercased()
        let commitURL = try Self.createDatabase(server, "muster_bench_commit_\(suffix)")
        let restartURL = try Self.createDatabase(server, "muster_bench_restart_\(suffix)")
        print(
            "store (PostgreSQL \(Self.serverVersion(server)), libpq, synchronous_commit=on, same machine over TCP loopback; release build)"
        )
        try measure(
            commitStore: { PostgresJobStore(url: commitURL) }, restartStore: { PostgresJobStore(url: restartURL) })
    }

    private func measure(
        commitStore: () -> any JobStore, restartStore: () -> any JobStore
    ) throws {
        let commit = try StoreBenchmark.groupCommit(
            jobs: commitJobs, batchSize: commitBatch, step: commitStep, store: commitStore)
        print(commit.description)
        let open = try StoreBenchmark.openTime(jobs: jobs, unfinished: unfinished, store: restartStore)
        print(open.description)
        // The whole restart as `muster serve` does it: open (epoch commit, read everything), then
        // the core takes the snapshot over.
        let store = restartStore()
        let t0 = ContinuousClock.now
        let snapshot = try store.open()
        let t1 = ContinuousClock.now
        var core = Coordinator(
            policy: {
                var p = CorePolicy()
                p.persistChanges = true
                p.finishedJobLimit = jobs
                return p
            }())
        let actions = core.restore(snapshot, at: CoreInstant(nanoseconds: UInt64(Date().timeIntervalSince1970 * 1e9)))
        let t2 = ContinuousClock.now
        store.close()
        let states = core.jobsByState
        let routable = (states[.queued] ?? 0) + (states[.gated] ?? 0) + (states[.bound] ?? 0) + (states[.running] ?? 0)

        print(
            "restart: open \(String(format: "%.2f", (t1 - t0).secondsDouble)) s + core restore "
                + "\(String(format: "%.2f", (t2 - t1).secondsDouble)) s = \(String(format: "%.2f", (t2 - t0).secondsDouble)) s "
                + "for \(snapshot.jobs.count) jobs (\(routable) unfinished ready to route, \(actions.count) actions)")
    }

    /// Creates a database with psql; returns its URL.
    static func createDatabase(_ server: String, _ name: String) throws -> String {
        let result = psql(server, "CREATE DATABASE \(name)")
        guard result.status == 0 else { throw ValidationError("cannot create database \(name): \(result.output)") }
        let schemeEnd = server.range(of: "://")!.upperBound
        let slash = server[schemeEnd...].firstIndex(of: "/") ?? server.endIndex
        let query = server[slash...].firstIndex(of: "?").map { String(server[$0...]) } ?? ""
        return String(server[..<slash]) + "/" + name + query
    }

    private static func serverVersion(_ server: String) -> String {
        psql(server, "SHOW server_version").output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    private static func psql(_ url: String, _ sql: String) -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["psql", "-X", "-q", "-A", "-t", "-d", url, "-c", sql]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        do { try process.run() } catch { return (-1, "\(error)") }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}
