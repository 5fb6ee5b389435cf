import MusterServer
import Testing

@Test func metricsRenderInPrometheusTextFormat() {
    let metrics = ServerMetrics()
    metrics.counter("muster_protocol_errors_total", ["code": "malformed_json"]).increment(by: 2)
    metrics.setGauges("muster_jobs", label: "state", counts: ["queued": 3, "running": 1])
    metrics.bindLatency.recordMicroseconds(300)
    var text = metrics.render()
    #expect(text.contains(#"muster_protocol_errors_total{code="malformed_json"} 2"#))
    #expect(text.contains(#"muster_jobs{state="queued"} 3"#))
    #expect(text.contains("muster_bind_latency_seconds_count 1"))

    // A state that emptied reports 0 rather than its last count.
    metrics.setGauges("muster_jobs", label: "state", counts: ["running": 2])
    text = metrics.render()
    #expect(text.contains(#"muster_jobs{state="queued"} 0"#))
    #expect(text.contains(#"muster_jobs{state="running"} 2"#))
}

@Test func separateServersKeepSeparateCounters() {
    let a = ServerMetrics(), b = ServerMetrics()
    a.counter("muster_reconnects_total").increment()
    #expect(a.render().contains("muster_reconnects_total 1"))
    #expect(!b.render().contains("muster_reconnects_total 1"))
}
