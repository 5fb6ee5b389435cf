import Foundation
import Logging
@testable import MusterClient
import MusterProtocol
import MusterServer
import MusterTransport

/// An in-process coordinator on 127.0.0.1, port picked by the kernel, with fast simulated backends.
struct TestCoordinator {
    let daemon: Daemon
    let port: Int
    /// The folder of the store made for this coordinator, removed when it stops.
    var scratch: URL?

    static let quietLogger = Logger(label: "muster.test") { _ in SwiftLogNoOpLogHandler() }

    /// `links.handshake_timeout_seconds` for coordinators that tests say `hello` to on raw links:
    /// far above what a test process starved on two busy cores takes (a CI run once took 30 s).
    static let handshakeTimeoutSeconds = "120"

    /// Two simulated backends by default: `sim-image` (image) and `sim-video` (video,
    /// frameinterps, image; model `m1`), each job 50 ms.
    static let defaultBackends = """
        [{"name": "sim-image", "kind": "simulated", "features": ["image"], "job_seconds": {"default": 0.05}},
         {"name": "sim-video", "kind": "simulated", "features": ["frameinterps", "image", "video"], "models": ["m1"],
          "slots": 2, "job_seconds": {"default": 0.05}, "model_load_seconds": 0.05}]
        """

    static func start(backends: String = defaultBackends, settings: [(String, String)] = []) async throws
        -> TestCoordinator
    {
        // A fresh SQLite store of its own (the default engine), unless the test names one.
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("muster-test-\(UUID().uuidString)")
        let store = scratch.appendingPathComponent("muster.sqlite").path
        // Tests open raw links and say `hello` themselves, from a test process whose few
        // cooperative threads other tests may hold for tens of seconds on two busy cores (a CI run
        // once took 30 s to send one): the handshake timeout stays far above that unless the test
        // names its own.
        let generous =
            settings.contains { $0.0 == "links.handshake_timeout_seconds" }
            ? [] : [("links.handshake_timeout_seconds", Self.handshakeTimeoutSeconds)]
        let overrides = ([("listen", "127.0.0.1:0"), ("backends", backends), ("store.url", "sqlite://\(store)")] + generous + settings).map {
            (source: "test", key: $0.0, value: $0.1)
        }
        let config = try Configuration.load(file: nil, environment: [:], overrides: overrides)
        let daemon = try Daemon(configuration: config, logger: quietLogger, audit: quietLogger)
        let port = try await daemon.start()
        return TestCoordinator(daemon: daemon, port: port, scratch: scratch)
    }

    var url: String { "ws://127.0.0.1:\(port)" }

    func connect(token: String? = nil) async throws(MusterClientError) -> MusterClient {
        var options = MusterClient.Options(coordinator: url, name: "tester", token: token)
        options.connectTimeout = .seconds(30)
        options.requestTimeout = .seconds(30)
        return try await MusterClient.connect(options, logger: Self.quietLogger)
    }

    func stop() async {
        await daemon.shutdown()
        if let scratch { try? FileManager.default.removeItem(at: scratch) }
    }
}

/// Runs `body`, failing if it has not finished within `bound`: a guard against hangs, not a
/// timing assertion. It returns at the bound even when `body` ignores cancellation (a task group
/// would wait for such a child and hang with it); `body` is then cancelled and left behind.
func within<T: Sendable>(
    _ bound: Duration = .seconds(60), _ what: String, _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    let pending = Locked<CheckedContinuation<T, any Error>?>(nil)
    let finish: @Sendable (Result<T, any Error>) -> Void = { result in
        pending.withLock { c in
            defer { c = nil }
            return c
        }?.resume(with: result)
    }
    return try await withCheckedThrowingContinuation { c in
        pending.withLock { $0 = c }
        let work = Task {
            do { finish(.success(try await body())) } catch { finish(.failure(error)) }
        }
        DispatchQueue.global().asyncAfter(deadline: .now() + bound.dispatchInterval) {
            work.cancel()
            finish(.failure(BoundExceeded(what: what)))
        }
    }
}

struct BoundExceeded: Error, CustomStringConvertible {
    var what: String
    var description: String { "gave up waiting for \(what)" }
}

extension MusterClient {
    /// Follows `events` until every job of `accepted` is final.
    nonisolated func follow(_ accepted: Wire.Accepted) async -> BatchProgress {
        var progress = BatchProgress(batch: accepted.batch, jobs: accepted.jobs)
        for await event in events {
            progress.apply(event)
            if progress.isDone { break }
        }
        return progress
    }
}
