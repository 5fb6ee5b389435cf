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
        // For the Benchmarks/ package beside this one, which measures these modules from outside.
        .library(name: "MusterProtocol", targets: ["MusterProtocol"]),
        .library(name: "MusterCore", targets: ["MusterCore"]),
        .library(name: "MusterStore", targets: ["MusterStore"]),
        .library(name: "MusterTransport", targets: ["MusterTransport"]),
        .library(name: "MusterServer", targets: ["MusterServer"]),
        .library(name: "MusterBackends", targets: ["MusterBackends"]),
        // The client library: submit batches, follow their events, cancel, from a Swift program.
        .library(name: "MusterClient", targets: ["MusterClient"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.1.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.0.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
        .package(url: "https://github.com/x-sheep/swift-property-based.git", from: "2.0.0"),
    ],
    targets: [
        // libwebsockets + OpenSSL, wrapped thinly. Only MusterTransport imports it.
        .systemLibrary(
            name: "CLibWebSockets",
            pkgConfig: "libwebsockets",
            providers: [.apt(["libwebsockets-dev", "libssl-dev"])]
        ),
        // SQLite (Debian's libsqlite3), wrapped thinly. Only MusterStore imports it.
        .systemLibrary(
            name: "CSQLite",
            pkgConfig: "sqlite3",
            providers: [.apt(["libsqlite3-dev"])]
        ),
        // PostgreSQL's client library (Debian's libpq), wrapped thinly. Only MusterStore imports it.
        .systemLibrary(
            name: "CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
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
        // The durable job store: SQLite or PostgreSQL with one writer thread and group commit, and
        // the leader election on PostgreSQL.
        .target(
            name: "MusterStore",
            dependencies: ["MusterProtocol", "MusterCore", "CSQLite", "CLibPQ"],
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
        // The client library: a `muster.client.v1` link that submits batches, follows their
        // events, cancels, and follows the leader among several coordinators.
        .target(
            name: "MusterClient",
            dependencies: [
                "MusterProtocol",
                "MusterTransport",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // What runs a backend's jobs: the simulated, exec and ComfyUI engines, and the agent that
        // links them to a coordinator. The daemon runs the same engines as local/dialled backends.
        .target(
            name: "MusterBackends",
            dependencies: [
                "MusterProtocol",
                "MusterCore",
                "MusterTransport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        // The operator dashboard: its page, stylesheet and script, compiled into the binary.
        .target(
            name: "MusterDashboard",
            dependencies: ["MusterTransport"],
            resources: [
                .embedInCode("Resources/dashboard.html"),
                .embedInCode("Resources/dashboard.css"),
                .embedInCode("Resources/dashboard.js"),
            ],
            swiftSettings: strict
        ),
        // The coordinator daemon: the core on the loop, links, HTTP API, store, leadership,
        // metrics, configuration, credentials.
        .target(
            name: "MusterServer",
            dependencies: [
                "MusterProtocol",
                "MusterCore",
                "MusterStore",
                "MusterTransport",
                "MusterBackends",
                "MusterDashboard",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            resources: [
                // The OpenAPI document served at GET /openapi.json, generated by Scripts/openapi
                // from Protocol/openapi.yaml and the schemas.
                .embedInCode("OpenAPI/openapi.json"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "muster",
            dependencies: [
                "MusterProtocol",
                "MusterCore",
                "MusterTransport",
                "MusterClient",
                "MusterBackends",
                "MusterServer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
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
            name: "MusterStoreTests",
            dependencies: ["MusterStore", "MusterCore", "MusterProtocol"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "MusterTransportTests",
            dependencies: ["MusterTransport"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "MusterServerTests",
            dependencies: [
                "MusterServer", "MusterClient", "MusterBackends", "MusterDashboard", "MusterProtocol", "MusterCore",
                "MusterTransport",
            ],
            exclude: ["Fixtures"],
            swiftSettings: strict
        ),
    ],
    swiftLanguageModes: [.v6]
)
