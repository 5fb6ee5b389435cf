import BenchFixtures
import MusterCore
import MusterProtocol
import Testing

/// `muster-bench core --job-seconds`'s fleet, small: it keeps the fleet busy, ends each run once,
/// and its clock follows the jobs' durations.
@Suite struct FleetRunTests {
    @Test func aTimedFleetRunsItsQueueAtItsSpeeds() {
        var fleet = CoreFleet(backends: 40, speeds: [1, 2])
        var run = FleetRun(fleet: fleet, jobSeconds: 10)
        for _ in 0..<8 {
            let entries = (0..<100).map { _ in BatchEntry(spec: fleet.randomSpec()) }
            _ = run.submit(entries, in: &fleet)
        }
        #expect(run.running == run.slots)
        let start = fleet.clock
        var ended: [JobID: Int] = [:]
        var byBackend: [BackendID: Int] = [:]
        for _ in 0..<200 {
            guard let end = run.endNext(in: &fleet, measure: { $0() }) else { break }
            ended[end.run.job, default: 0] += 1
            byBackend[end.run.backend, default: 0] += 1
            let spec = fleet.randomSpec()
            _ = run.submit([BatchEntry(spec: spec)], in: &fleet)
            // A queue is left, so every slot takes a job as soon as it frees.
            #expect(run.running == run.slots)
        }
        #expect(ended.count == 200)
        #expect(ended.values.allSatisfy { $0 == 1 })
        // Each job runs 10 s at speed 1 (even ids in this fleet) and 5 s at speed 2 (odd ids):
        // the fleet's ~60 slots end 200 jobs within a few of their durations (loads add 5 s), and
        // the fast half ends more.
        let elapsed = fleet.clock.seconds - start.seconds
        #expect(elapsed > 10 && elapsed < 80)
        let fast = byBackend.filter { $0.key.rawValue % 2 == 1 }.values.reduce(0, +)
        #expect(fast > 200 - fast)
    }

    /// The core decides the same way whatever the order of its hashed sets, which changes from
    /// one `Set` instance to the next: two coordinators fed the same events return the same
    /// actions, under either rule, with comparisons bounded and not. (A set's order once decided
    /// which of two equally loaded backends took a job: the dispatch heap was filled in the
    /// order of the dirty set.)
    @Test(arguments: [
        (RoutingRule.expectedCompletion, 2048), (.expectedCompletion, 0), (.expectedCompletion, 40),
        (.leastLoaded, 2048),
    ])
    func aFleetFedTheSameEventsDecidesTheSame(routing: RoutingRule, compareLimit: Int) {
        func actions() -> [String] {
            var policy = CorePolicy()
            policy.routing = routing
            policy.compareLimit = compareLimit == 0 ? .max : compareLimit
            var fleet = CoreFleet(backends: 60, policy: policy, speeds: [1, 1.5, 2, 3])
            var run = FleetRun(fleet: fleet, jobSeconds: 10)
            run.record = []
            for _ in 0..<12 {
                let entries = (0..<100).map { _ in BatchEntry(spec: fleet.randomSpec()) }
                _ = run.submit(entries, in: &fleet)
            }
            for _ in 0..<600 {
                guard run.endNext(in: &fleet, measure: { $0() }) != nil else { break }
                let spec = fleet.randomSpec()
                _ = run.submit([BatchEntry(spec: spec)], in: &fleet)
            }
            return run.record ?? []
        }
        let first = actions(), second = actions()
        #expect(first.count > 5_000)
        let diverged = first.indices.first { !second.indices.contains($0) || first[$0] != second[$0] }
        #expect(first.count == second.count && diverged == nil, "first difference at action \(diverged ?? -1): \(diverged.map { first[$0] } ?? "") | \(diverged.flatMap { second.indices.contains($0) ? second[$0] : nil } ?? "none")")
    }
}
