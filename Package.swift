// swift-tools-version: 6.1
// Muster: a coordinator that spreads image and video jobs across GPU backends.
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "muster",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "muster", targets: ["muster"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.1.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.0.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.1.0"),
        .package(url: "https://github.com/x-sheep/swift-property-based.git", from: "2.0.0"),
    ],
    targets: [
        // libwebsockets + OpenSSL, wrapped thinly. Only MusterTransport imports it.
        .systemLibrary(
            name: "CLibWebSockets",
            pkgConfig: "libwebsockets",
            providers: [.apt(["libwebsockets-dev", "libssl-dev"])]
        ),
        // Wire types and codecs. No I/O.
        .target(name: "MusterProtocol", swiftSettings: strict),
        // Registry, warm-up gate, router, job lifecycle. No I/O, time injected.
        .target(
            name: "MusterCore",
            dependencies: [
                "MusterProtocol",
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "HeapModule", package: "swift-collections"),
            ],
            swiftSettings: strict
        ),
        // The one event loop: WebSocket and HTTP server and client on libwebsockets.
        .target(
            name: "MusterTransport",
            dependencies: [
                "CLibWebSockets",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
            ],
            swiftSettings: strict
        ),
        // Wiring: coordinator on the loop, HTTP API, metrics, local backends, agent.
        .target(
            name: "MusterServer",
            dependencies: [
                "MusterProtocol",
                "MusterCore",
                "MusterTransport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "muster",
            dependencies: [
                "MusterProtocol",
                "MusterCore",
                "MusterTransport",
                "MusterServer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "MusterProtocolTests",
            dependencies: ["MusterProtocol"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "MusterCoreTests",
            dependencies: [
                "MusterCore",
                "MusterProtocol",
                .product(name: "PropertyBased", package: "swift-property-based"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "MusterTransportTests",
            dependencies: ["MusterTransport"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "MusterServerTests",
            dependencies: ["MusterServer", "MusterProtocol", "MusterCore", "MusterTransport"],
            exclude: ["Fixtures"],
            swiftSettings: strict
        ),
    ],
    swiftLanguageModes: [.v6]
)
