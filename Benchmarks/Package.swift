// swift-tools-version: 6.1
// Muster's benchmarks, apart from the product: micro benchmarks on ordo-one's package-benchmark
// (thresholds checked in under Thresholds/) and `muster-bench`, the harness that starts the real
// `muster` binary for the end-to-end, transport and soak runs. Run through Scripts/bench and Scripts/soak.
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "muster-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        // The project itself, by path: its library products are what is measured.
        .package(name: "muster", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.1.0"),
        // The product's own dependency (no extra build): a heap for `FleetRun`'s events.
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.1.0"),
    ],
    targets: [
        // Workloads shared by the micro benchmarks and the harness: the hot messages, a fleet for
        // the core, the store's group-commit and restart workloads.
        .target(
            name: "BenchFixtures",
            dependencies: [
                .product(name: "MusterProtocol", package: "muster"),
                .product(name: "MusterCore", package: "muster"),
                .product(name: "MusterStore", package: "muster"),
                .product(name: "HeapModule", package: "swift-collections"),
            ],
            swiftSettings: strict
        ),
        // What every micro benchmark shares: its metrics and the tolerances of the threshold check.
        .target(
            name: "MicroTolerances",
            dependencies: [.product(name: "Benchmark", package: "benchmark")]
        ),
        // `muster-bench NAME`: the tables of README's Performance section, and the soak.
        .executableTarget(
            name: "muster-bench",
            dependencies: [
                "BenchFixtures",
                .product(name: "MusterProtocol", package: "muster"),
                .product(name: "MusterCore", package: "muster"),
                .product(name: "MusterStore", package: "muster"),
                .product(name: "MusterTransport", package: "muster"),
                .product(name: "MusterServer", package: "muster"),
                .product(name: "MusterClient", package: "muster"),
                .product(name: "MusterBackends", package: "muster"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            path: "Sources/MusterBench",
            swiftSettings: strict
        ),
        .executableTarget(
            name: "ProtocolCodecs",
            dependencies: [
                "BenchFixtures",
                "MicroTolerances",
                .product(name: "MusterProtocol", package: "muster"),
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/ProtocolCodecs",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "CoreDecisions",
            dependencies: [
                "BenchFixtures",
                "MicroTolerances",
                .product(name: "MusterCore", package: "muster"),
                .product(name: "MusterProtocol", package: "muster"),
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/CoreDecisions",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        // Keeps the workloads working at small sizes (Scripts/test runs it).
        .testTarget(
            name: "BenchFixturesTests",
            dependencies: ["BenchFixtures"],
            swiftSettings: strict
        ),
    ],
    swiftLanguageModes: [.v6]
)
