import Foundation

/// What a child process printed and how it ended.
struct ChildResult: Sendable {
    var status: Int32
    var output: Data
    var errors: Data
    var text: String { String(decoding: output, as: UTF8.self) }
}

/// Runs `executable` to its end on a thread of its own, never on the cooperative pool; with
/// `bound`, it is terminated (SIGTERM) if still running after that long.
///
/// A test that waited for a child (python, openssl, chromium) on the pool held one of its threads
/// for the child's whole run; on a 2-core machine two such waits stopped every other test in the
/// process, and the ones talking to a real daemon then stalled past the daemon's own timers.
/// Output goes through temporary files, not pipes: a child writing more than a pipe holds to the
/// stream read second cannot block the one read first.
func runChild(
    _ executable: String, _ arguments: [String], environment: [String: String]? = nil, bound: Duration? = nil
) async throws -> ChildResult {
    try await offPool {
        let dir = FileManager.default.temporaryDirectory
        let out = dir.appendingPathComponent("muster-child-\(UUID().uuidString).out")
        let err = dir.appendingPathComponent("muster-child-\(UUID().uuidString).err")
        _ = FileManager.default.createFile(atPath: out.path, contents: nil)
        _ = FileManager.default.createFile(atPath: err.path, contents: nil)
        defer {
            try? FileManager.default.removeItem(at: out)
            try? FileManager.default.removeItem(at: err)
        }
        let outHandle = try FileHandle(forWritingTo: out), errHandle = try FileHandle(forWritingTo: err)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        if let environment { p.environment = environment }
        p.standardOutput = outHandle
        p.standardError = errHandle
        p.standardInput = FileHandle.nullDevice
        try p.run()
        if let bound {
            DispatchQueue.global().asyncAfter(deadline: .now() + bound.dispatchInterval) {
                if p.isRunning { p.terminate() }
            }
        }
        p.waitUntilExit()
        try outHandle.close()
        try errHandle.close()
        return ChildResult(
            status: p.terminationStatus, output: try Data(contentsOf: out), errors: try Data(contentsOf: err))
    }
}

/// Runs `body` on a thread of its own and returns its result, leaving the cooperative pool free.
func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, any Error>) in
        Thread.detachNewThread { c.resume(with: Result { try body() }) }
    }
}
