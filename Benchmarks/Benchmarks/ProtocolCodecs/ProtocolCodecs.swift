import Benchmark
import BenchFixtures
import MicroTolerances
import MusterProtocol

/// Decode and encode of the hot messages through MusterProtocol's codecs, 1,000 messages per
/// iteration, with the tolerances of ``MicroTolerances`` against Thresholds/ProtocolCodecs.*.
/// Names carry no spaces: the threshold files are named after them, and the plugin reads back
/// only names that need no cleaning for a file name.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = MicroTolerances.configuration(scalingFactor: .kilo)

    func codec<M>(
        _ name: String, _ message: M, encode: @escaping @Sendable (M) -> [UInt8],
        decode: @escaping @Sendable ([UInt8]) throws -> M
    ) where M: Sendable {
        let bytes = encode(message)
        Benchmark("decode.\(name)") { benchmark in
            for _ in benchmark.scaledIterations { blackHole(try decode(bytes)) }
        }
        Benchmark("encode.\(name)") { benchmark in
            for _ in benchmark.scaledIterations { blackHole(encode(message)) }
        }
    }

    codec("jobEvent", HotMessages.jobEvent, encode: { $0.encode() }, decode: { try CoordinatorToClient.decode($0) })
    codec(
        "capabilities", HotMessages.capabilities, encode: { $0.encode() },
        decode: { try BackendToCoordinator.decode($0) })
    codec("submit", HotMessages.submit, encode: { $0.encode() }, decode: { try ClientToCoordinator.decode($0) })
    codec("assign", HotMessages.assign, encode: { $0.encode() }, decode: { try CoordinatorToBackend.decode($0) })
    codec("progress", HotMessages.progress, encode: { $0.encode() }, decode: { try BackendToCoordinator.decode($0) })
}
