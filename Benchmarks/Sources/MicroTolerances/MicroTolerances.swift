import Benchmark

/// The configuration every micro benchmark shares, with the tolerances that
/// `swift package benchmark thresholds check` applies against Thresholds/. Mallocs (and
/// instructions, where the kernel allows perf events) are the gate: they barely move between
/// runs. Time is only an alarm for a gross regression: the machines these run on are shared, and
/// the same run was seen 6x apart while other builds ran. Every metric measured is stored in the
/// threshold files and compared, strictly unless a tolerance is given here; so no throughput,
/// whose whole runs per second are too coarse to compare.
public enum MicroTolerances {
    public static var tolerances: [BenchmarkMetric: BenchmarkThresholds] {
        [
            .instructions: .init(relative: [.p90: 15.0]),
            .mallocCountTotal: .init(relative: [.p90: 10.0]),
            .wallClock: .init(relative: [.p90: 500.0]),
        ]
    }

    public static func configuration(scalingFactor: BenchmarkScalingFactor = .one) -> Benchmark.Configuration {
        .init(
            metrics: [.wallClock, .instructions, .mallocCountTotal],
            scalingFactor: scalingFactor,
            maxDuration: .seconds(1),
            maxIterations: 1_000,
            thresholds: tolerances
        )
    }
}
