import CoreMetrics
import Prometheus

/// The coordinator's metrics, reported through swift-metrics into a Prometheus registry of this
/// server's own (so several servers in one test process never share counters), and rendered for
/// `GET /metrics` in the Prometheus text format.
///
/// Gauges for "how many are in state X right now" are set from snapshots; counters and histograms
/// are fed as things happen. Labelled metrics are created on first use and cached.
public final class ServerMetrics: @unchecked Sendable {
    // @unchecked Sendable: the label caches are only touched on the coordinator's loop thread
    // (the coordinator is the only caller); the swift-metrics handles themselves are thread-safe.

    public let registry: PrometheusCollectorRegistry
    private let factory: PrometheusMetricsFactory

    private var gauges: [String: CoreMetrics.Gauge] = [:]
    private var counters: [String: CoreMetrics.Counter] = [:]
    private var finished: [String: CoreMetrics.Counter] = [:]

    public let bindLatency: CoreMetrics.Timer
    public let jobDuration: CoreMetrics.Timer
    public let capabilityPropagation: CoreMetrics.Timer
    /// CPU time of each pass of the event loop (`muster_loop_pass_cpu_seconds`).
    public let loopPassCPU: CoreMetrics.Timer

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        var factory = PrometheusMetricsFactory(registry: registry)
        let fast: [Duration] = [
            .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1),
            .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(50), .milliseconds(250), .seconds(1),
            .seconds(10), .seconds(60),
        ]
        let slow: [Duration] = [
            .milliseconds(100), .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10),
            .seconds(30), .seconds(60), .seconds(120), .seconds(300), .seconds(600), .seconds(1800),
        ]
        factory.durationHistogramBuckets = [
            "muster_bind_latency_seconds": fast,
            "muster_job_duration_seconds": slow,
            "muster_capability_propagation_seconds": slow,
            "muster_loop_pass_cpu_seconds": fast,
        ]
        self.factory = factory
        bindLatency = CoreMetrics.Timer(label: "muster_bind_latency_seconds", dimensions: [], preferredDisplayUnit: .seconds, factory: factory)
        jobDuration = CoreMetrics.Timer(label: "muster_job_duration_seconds", dimensions: [], preferredDisplayUnit: .seconds, factory: factory)
        capabilityPropagation = Timer(
            label: "muster_capability_propagation_seconds", dimensions: [], preferredDisplayUnit: .seconds, factory: factory)
        loopPassCPU = Timer(label: "muster_loop_pass_cpu_seconds", dimensions: [], preferredDisplayUnit: .seconds, factory: factory)
    }

    /// A gauge, created on first use: `gauge("muster_jobs", ["state": "queued"])`.
    public func gauge(_ name: String, _ labels: KeyValuePairs<String, String> = [:]) -> CoreMetrics.Gauge {
        let key = Self.key(name, labels)
        if let g = gauges[key] { return g }
        let g = CoreMetrics.Gauge(label: name, dimensions: labels.map { ($0.key, $0.value) }, factory: factory)
        gauges[key] = g
        return g
    }

    /// A counter, created on first use: `counter("muster_protocol_errors_total", ["code": "malformed_json"])`.
    public func counter(_ name: String, _ labels: KeyValuePairs<String, String> = [:]) -> CoreMetrics.Counter {
        let key = Self.key(name, labels)
        if let c = counters[key] { return c }
        let c = CoreMetrics.Counter(label: name, dimensions: labels.map { ($0.key, $0.value) }, factory: factory)
        counters[key] = c
        return c
    }

    /// `muster_jobs_finished_total{outcome}`, counted once per job: its handles are kept by
    /// outcome, so counting builds no label key.
    public func jobFinished(_ outcome: String) {
        if let c = finished[outcome] { return c.increment() }
        let c = counter("muster_jobs_finished_total", ["outcome": outcome])
        finished[outcome] = c
        c.increment()
    }

    /// Sets every gauge `name{label=value}` from `counts`; values seen before but absent now go to 0,
    /// so a state that emptied does not keep reporting its last count.
    public func setGauges(_ name: String, label: String, counts: [String: Int]) {
        let prefix = name + "{" + label + "="
        for (key, g) in gauges where key.hasPrefix(prefix) {
            let value = String(key.dropFirst(prefix.count).dropLast())
            if counts[value] == nil { g.record(0) }
        }
        for (value, count) in counts {
            gauge(name, [label: value]).record(count)
        }
    }

    /// Drops every gauge with `label=value` among its labels (a backend forgotten): the series
    /// leaves the exposition, so label values that come and go do not pile up.
    public func removeSeries(label: String, value: String) {
        let needle = label + "=" + value
        for (key, g) in gauges {
            guard let open = key.firstIndex(of: "{") else { continue }
            let labels = key[key.index(after: open)..<key.index(before: key.endIndex)].split(separator: ",")
            guard labels.contains(where: { $0 == needle }) else { continue }
            g.destroy()
            gauges[key] = nil
        }
    }

    /// The Prometheus text exposition of every metric.
    public func render() -> String {
        registry.emitToString()
    }

    private static func key(_ name: String, _ labels: KeyValuePairs<String, String>) -> String {
        var key = name + "{"
        for (i, (k, v)) in labels.enumerated() {
            if i > 0 { key += "," }
            key += k + "=" + v
        }
        return key + "}"
    }
}
