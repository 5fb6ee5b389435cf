import ArgumentParser
import BenchFixtures
import Foundation
import MusterProtocol

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// `muster-bench protocol`: decode, encode and decode+encode throughput of the hot messages.
struct BenchProtocol: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "protocol",
        abstract: "Messages per CPU-second through the MusterProtocol codecs (one thread)."
    )

    @Option(help: "CPU seconds to measure each cell of the table.")
    var seconds: Double = 1.0

    @Option(help: "Measure only the message with this name (e.g. for a profiler).")
    var only: String?

    func run() throws {
        let samples = Self.samples().filter { only == nil || $0.name == only }
        print("| message | bytes | decode msg/s | encode msg/s | decode+encode msg/s |")
        print("|---|---:|---:|---:|---:|")
        for sample in samples {
            // A sample that does not decode would time the error path.
            guard sample.decode() == 1 else { throw ValidationError("protocol: the \(sample.name) sample does not decode") }
            let decode = measure { sample.decode() }
            let encode = measure { sample.encode() }
            let both = measure { sample.roundTrip() }
            let cells = [sample.name, String(sample.bytes.count)] + [decode, encode, both].map(formatCount)
            print("| " + cells.joined(separator: " | ") + " |")
        }
    }

    /// Runs `body` in rounds until `seconds` of this thread's CPU time have passed; returns calls
    /// per CPU-second. CPU time rather than wall time, so that other load on a shared machine
    /// does not count against the codec.
    private func measure(_ body: () -> Int) -> Double {
        var sink = 0
        for _ in 0..<1000 { sink &+= body() }
        var calls = 0
        let start = threadCPUSeconds()
        var elapsed = 0.0
        while elapsed < seconds {
            for _ in 0..<2000 { sink &+= body() }
            calls += 2000
            elapsed = threadCPUSeconds() - start
        }
        if sink == 42 { print("") }  // keeps the work observable
        return Double(calls) / elapsed
    }

    struct Sample {
        var name: String
        var bytes: [UInt8]
        var decode: () -> Int
        var encode: () -> Int
        var roundTrip: () -> Int
    }

    static func backendIn(_ name: String, _ message: BackendToCoordinator) -> Sample {
        let bytes = message.encode()
        return Sample(
            name: name, bytes: bytes,
            decode: { (try? BackendToCoordinator.decode(bytes)) == nil ? 0 : 1 },
            encode: { message.encode().count },
            roundTrip: { (try? BackendToCoordinator.decode(bytes))?.encode().count ?? 0 })
    }

    static func backendOut(_ name: String, _ message: CoordinatorToBackend) -> Sample {
        let bytes = message.encode()
        return Sample(
            name: name, bytes: bytes,
            decode: { (try? CoordinatorToBackend.decode(bytes)) == nil ? 0 : 1 },
            encode: { message.encode().count },
            roundTrip: { (try? CoordinatorToBackend.decode(bytes))?.encode().count ?? 0 })
    }

    static func clientIn(_ name: String, _ message: ClientToCoordinator) -> Sample {
        let bytes = message.encode()
        return Sample(
            name: name, bytes: bytes,
            decode: { (try? ClientToCoordinator.decode(bytes)) == nil ? 0 : 1 },
            encode: { message.encode().count },
            roundTrip: { (try? ClientToCoordinator.decode(bytes))?.encode().count ?? 0 })
    }

    /// The same messages through Foundation's Codable coders, for comparison only.
    struct FoundationProgress: Codable, Equatable {
        var type: String
        var job: UInt64
        var lease: UInt64
        var fraction: Double
        var message: String?
    }

    struct FoundationCapabilities: Codable, Equatable {
        struct Models: Codable, Equatable {
            var available: [String]
            var loaded: [String]
        }
        var type: String
        var incarnation: UInt64
        var revision: UInt64
        var state: String
        var features: [String]
        var models: Models
        var slots: Int
    }

    static func foundation<T: Codable>(_ name: String, _ type: T.Type, _ bytes: [UInt8]) -> Sample {
        let data = Data(bytes)
        let decoder = JSONDecoder()
        let encoder = JSONEncoder()
        let value = try! decoder.decode(T.self, from: data)
        return Sample(
            name: name, bytes: bytes,
            decode: { (try? decoder.decode(T.self, from: data)) == nil ? 0 : 1 },
            encode: { (try? encoder.encode(value))?.count ?? 0 },
            roundTrip: { (try? decoder.decode(T.self, from: data)).flatMap { try? encoder.encode($0) }?.count ?? 0 })
    }

    static func samples() -> [Sample] {
        let all = [
            backendOut("assign", HotMessages.assign),
            backendIn("progress", HotMessages.progress),
            backendIn("completed", HotMessages.completed),
            backendIn("capabilities", HotMessages.capabilities),
            clientIn("submit", HotMessages.submit),
        ]
        let progress = all.first { $0.name == "progress" }!.bytes
        let capabilities = all.first { $0.name == "capabilities" }!.bytes
        return all + [
            foundation("progress (Foundation Codable)", FoundationProgress.self, progress),
            foundation("capabilities (Foundation Codable)", FoundationCapabilities.self, capabilities),
        ]
    }
}
