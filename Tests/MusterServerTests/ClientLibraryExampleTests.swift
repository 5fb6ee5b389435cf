import Foundation
import Logging
import MusterClient
import Testing

/// README's "The client library" example, compiled and run against a real coordinator. The test
/// also checks that README shows exactly these lines, so the example there cannot rot.
@Suite struct ClientLibraryExampleTests {
    // README example begin
    /// Submits four video jobs, keeps the first that completes and cancels the rest.
    static func firstOfFour(coordinator: String, token: String? = nil) async throws -> (kept: JobID?, canceled: [JobID]) {
        let options = MusterClient.Options(coordinator: coordinator, name: "first-of-four", token: token)
        let client = try await MusterClient.connect(options, logger: Logger(label: "first-of-four"))
        var kept: JobID?
        var canceled: [JobID] = []
        do {
            let accepted = try await client.submit(
                Wire.BatchRequest(jobs: [Wire.JobRequest(kind: "video", needs: ["frameinterps", "video"], count: 4)]))
            // A subscription starts with a snapshot of each job, so nothing before it is missed.
            try await client.subscribe(batch: accepted.batch)
            var open = Set(accepted.jobs)
            for await event in client.events {
                print("job \(event.job): \(event.event), \(event.state)")
                if let waiting = event.waiting { print("  the warm-up gate holds it for \(waiting.features)") }
                if event.state == .completed {
                    kept = event.job
                    canceled = try await client.cancel(.batch(accepted.batch))
                    break
                }
                if event.state.isFinal { open.remove(event.job) }
                if open.isEmpty { break }
            }
        } catch {
            await client.close()
            throw error
        }
        await client.close()
        return (kept, canceled)
    }
    // README example end

    @Test func theReadmeExampleRunsAgainstARealCoordinator() async throws {
        let coordinator = try await TestCoordinator.start()
        let watcher = try await coordinator.connect()
        try await watcher.subscribe(batch: nil)
        let (kept, canceled) = try await within(.seconds(60), "the example returns") {
            try await Self.firstOfFour(coordinator: coordinator.url)
        }
        let keptJob = try #require(kept, "a job completed")
        #expect(!canceled.contains(keptJob))
        // Every job of the batch ends exactly once: the kept one completed, the canceled ones
        // canceled, and any that finished before the cancel reached the coordinator completed.
        let finals = try await within(.seconds(60), "4 jobs final") {
            var finals: [JobID: [JobState]] = [:]
            for await event in watcher.events where event.state.isFinal && event.event != .snapshot {
                finals[event.job, default: []].append(event.state)
                if finals.count == 4 { break }
            }
            return finals
        }
        #expect(finals.values.allSatisfy { $0.count == 1 })
        #expect(finals[keptJob] == [.completed])
        for job in canceled { #expect(finals[job] == [.canceled]) }
        for (job, states) in finals where !canceled.contains(job) { #expect(states == [.completed]) }
        await watcher.close()
        await coordinator.stop()
    }

    @Test func readmeShowsExactlyThisExample() throws {
        let here = URL(fileURLWithPath: #filePath)
        let root = here.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let source = try String(contentsOf: here, encoding: .utf8)
        let readme = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
        let begin = "    // README example begin\n", end = "    // README example end\n"
        let start = try #require(source.range(of: begin)), stop = try #require(source.range(of: end))
        // README shows the function at the left margin.
        let example = source[start.upperBound..<stop.lowerBound].split(separator: "\n", omittingEmptySubsequences: false)
            .map { $0.hasPrefix("    ") ? String($0.dropFirst(4)) : String($0) }.joined(separator: "\n")
        #expect(readme.contains(example), "README's client library example differs from \(here.lastPathComponent)")
    }
}
