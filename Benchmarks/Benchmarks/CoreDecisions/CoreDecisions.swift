import Benchmark
import BenchFixtures
import MicroTolerances
import MusterCore
import MusterProtocol

/// MusterCore's decisions on a fleet of 1,000 backends (``CoreFleet``, the fleet of the harness's
/// `core` table), 1,000 events per measured run. Each run builds its own core outside the
/// measurement, so every run starts from the same state.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = MicroTolerances.configuration(scalingFactor: .kilo)
    let backends = 1_000

    // A one-job batch submitted to an idle fleet and bound at once: the submit path, the
    // router's pick among the backends that fit, and the assign.
    Benchmark("submitAndBind.1000backends") { benchmark in
        var fleet = CoreFleet(backends: backends)
        let specs = (0..<benchmark.scaledIterations.count).map { _ in fleet.randomSpec() }
        var bound = 0
        benchmark.startMeasurement()
        for spec in specs {
            let actions = try fleet.submit([BatchEntry(spec: spec)])
            bound += CoreFleet.assigns(actions).count
        }
        benchmark.stopMeasurement()
        precondition(bound > 0, "an idle fleet binds")
    }

    // A backend re-announces with another model loaded: the registry applies it, the router
    // re-indexes the backend, the ack goes out.
    Benchmark("announcementApplied.1000backends") { benchmark in
        var fleet = CoreFleet(backends: backends)
        let announcements = (0..<benchmark.scaledIterations.count).map { i in
            let id = BackendID(Int64(i % backends + 1))
            return (id, fleet.reannounce(id))
        }
        benchmark.startMeasurement()
        for (id, snapshot) in announcements {
            blackHole(fleet.handle(.capabilities(id, snapshot)))
        }
        benchmark.stopMeasurement()
    }

    // A running job's completion report with 10,000 jobs queued: the job ends, its slot is freed
    // and the router binds the best queued job to it (the decision of the `core` table).
    Benchmark("reportProcessed.1000backends.10000queued") { benchmark in
        var fleet = CoreFleet(backends: backends)
        var running: [(JobID, BackendID, Lease)] = []
        while running.count < fleet.slots {
            let actions = try fleet.submit([BatchEntry(spec: fleet.randomSpec())])
            running += CoreFleet.assigns(actions)
        }
        for _ in 0..<100 {
            let entries = (0..<100).map { _ in BatchEntry(spec: fleet.randomSpec()) }
            _ = try fleet.submit(entries)
        }
        for (job, backend, lease) in running { _ = fleet.handle(.jobStarted(job, backend: backend, lease: lease)) }
        let reports = running.prefix(benchmark.scaledIterations.count)
        precondition(reports.count == benchmark.scaledIterations.count, "fewer slots than reports: \(reports.count)")
        benchmark.startMeasurement()
        for (job, backend, lease) in reports {
            blackHole(fleet.handle(.jobCompleted(job, backend: backend, lease: lease, result: .null)))
        }
        benchmark.stopMeasurement()
    }
}
