import Foundation

/// The Prometheus text exposition of `GET /metrics`, read as `series -> value`, where a series is
/// the metric name with its labels as rendered: `muster_link_closes{code="1007"}`.
struct MetricsText: Sendable {
    var values: [String: Double]

    init(_ text: String) {
        var values: [String: Double] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            values[String(line[..<space])] = value
        }
        self.values = values
    }

    static func fetch(port: Int) async throws -> MetricsText {
        MetricsText(try await HTTP.get("http://127.0.0.1:\(port)/metrics").text)
    }

    subscript(_ series: String) -> Double { values[series] ?? 0 }

    /// What changed since `earlier` in the series of `families` (metric names), zeros left out.
    func delta(since earlier: MetricsText, families: [String]) -> [String: Double] {
        var out: [String: Double] = [:]
        for key in Set(values.keys).union(earlier.values.keys) {
            let name = key.split(separator: "{", maxSplits: 1).first.map(String.init) ?? key
            guard families.contains(name) else { continue }
            let d = self[key] - earlier[key]
            if d != 0 { out[key] = d }
        }
        return out
    }

    static func series(_ name: String, _ label: String, _ value: String) -> String { "\(name){\(label)=\"\(value)\"}" }
}

/// Runs a script of Tests/Interop with Debian's python3 (which has python3-websockets). Returns
/// the JSON object the script printed, or `exit`/`output` when it printed something else.
func runInteropScript(_ name: String, _ arguments: [String], bound: Duration = .seconds(120)) async throws -> [String: Any] {
    let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Interop/\(name)").path
    let (data, status) = try await runPython(script, arguments, bound: bound)
    let fallback: [String: Any] = ["exit": Int(status), "output": String(decoding: data, as: UTF8.self)]
    return ((try? JSONSerialization.jsonObject(with: data)) as? [String: Any]) ?? fallback
}

/// Runs a Python script with Debian's python3 off the test pool (`runChild`); it is terminated
/// after `bound`. Returns its standard output and status; what it wrote to standard error is
/// passed on to the test's own.
func runPython(_ script: String, _ arguments: [String], bound: Duration) async throws -> (output: Data, status: Int32) {
    let r = try await runChild("/usr/bin/python3", [script] + arguments, bound: bound)
    FileHandle.standardError.write(r.errors)
    return (r.output, r.status)
}

/// Raises this process's soft limit on open files towards `wanted` (children inherit it) and
/// returns the soft limit in force afterwards.
func raiseOpenFileLimit(to wanted: UInt64) -> UInt64 {
    var limit = rlimit()
    let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
    guard getrlimit(resource, &limit) == 0 else { return 0 }
    if UInt64(limit.rlim_cur) < wanted {
        limit.rlim_cur = min(rlim_t(wanted), limit.rlim_max)
        _ = setrlimit(resource, &limit)
        _ = getrlimit(resource, &limit)
    }
    return UInt64(limit.rlim_cur)
}
