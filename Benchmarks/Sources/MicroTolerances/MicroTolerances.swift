import Benchmark

/// The configuration every micro benchmark shares, with the tolerances that
/// `swift package benchmark thresholds check` applies against Thresholds/. Instructions and
/// mallocs are the gate: they barely move between runs. Time is only a coarse alarm, since the
/// machines these run on are shared and swing 2x.
public enum MicroTolerances {
    public static var tolerances: [BenchmarkMetric: BenchmarkThresholds] {
        [
            .instructions: .init(relative: [.p90: 15.0]),
            .mallocCountTotal: .init(relative: [.p90: 10.0], absolute: [.p90: 2]),
            .wallClock: .init(relative: [.p90: 300.0]),
            .throughput: .init(relative: [.p90: 80.0]),
        ]
    }

    public static func configuration(scalingFactor: BenchmarkScalingFactor = .one) -> Benchmark.Configuration {
        .init(
            metrics: [.wallClock, .throughput, .instructions, .mallocCountTotal],
            scalingFactor: scalingFactor,
            maxDuration: .seconds(1),
            maxIterations: 1_000,
            thresholds: tolerances
        )
    }
}
