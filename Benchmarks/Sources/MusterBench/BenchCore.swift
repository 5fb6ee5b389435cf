import ArgumentParser
import BenchFixtures
#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import Histogram
import MusterCore
import MusterProtocol

/// `muster-bench core`: routing decisions of the core under a large fleet and a deep queue.
struct BenchCore: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "core",
        abstract: "Bindings per second, decision latency and memory per queued job of MusterCore."
    )

    @Option(help: "Fleet sizes to measure, comma-separated.")
    var backends = "1000,10000"

    @Option(help: "Jobs kept queued.")
    var queued = 100_000

    @Option(help: "Decisions (job completions that free a slot) measured per fleet size.")
    var decisions = 200_000

    @Option(help: "Routing rule: expectedCompletion (the default) or leastLoaded (the rule before it).")
    var routing = RoutingRule.expectedCompletion.rawValue

    @Option(help: "Backend speeds, comma-separated, given to the backends in turn (e.g. 1,1.5,2,3: a mixed fleet).")
    var speeds = "1"

    @Option(
        help: ArgumentHelp(
            "Seconds a job takes at speed 1.0 in the steady state; 0: a random bound job ends one microsecond after the last event.",
            discussion:
                "With a duration, the clock follows the jobs: each backend runs its bound jobs in order on its slots, a job takes this long divided by its backend's speed, and the steady state ends whichever job is due first (as a fleet of real GPUs would)."
        ))
    var jobSeconds = 0.0

    @Option(help: "Comparisons with other backends the decisions after one event may make (CorePolicy.compareLimit); 0: no bound.")
    var compareLimit = CorePolicy().compareLimit

    var speedList: [Double] { speeds.split(separator: ",").compactMap { Double($0.filter { $0 != " " }) } }

    func validate() throws {
        guard !speedList.isEmpty, speedList.allSatisfy({ $0 > 0 && $0.isFinite }) else {
            throw ValidationError("--speeds \(speeds): expected positive numbers, comma-separated")
        }
        guard jobSeconds >= 0, jobSeconds.isFinite else {
            throw ValidationError("--job-seconds \(jobSeconds): expected a number of seconds, 0 or more")
        }
        guard RoutingRule(rawValue: routing) != nil else {
            throw ValidationError(
                "--routing \(routing): expected one of \(RoutingRule.allCases.map(\.rawValue).joined(separator: ", "))")
        }
    }

    func run() throws {
        let sizes = backends.split(separator: ",").compactMap { Int($0.filter { $0 != " " }) }
        var policy = CorePolicy()
        policy.routing = RoutingRule(rawValue: routing) ?? .expectedCompletion
        policy.compareLimit = compareLimit > 0 ? compareLimit : .max
        print(
            "core: \(queued) queued jobs over 20 feature sets and 50 models; one decision = a completion that frees a slot"
                + "; routing \(policy.routing.rawValue); speeds \(speedList.map { "\($0)" }.joined(separator: ","))"
                + (jobSeconds > 0 ? "; jobs take \(jobSeconds) s at speed 1.0" : "")
                + (policy.routing == .expectedCompletion ? "; compare limit \(compareLimit > 0 ? "\(compareLimit)" : "none")" : "")
        )
        print(
            "| backends | bindings/CPU-s (burst) | bindings/CPU-s (full cycle) | decision p50 | p99 | p99.9 | bytes/queued job |"
        )
        print(
            "|---------:|-----------------------:|----------------------------:|-------------:|----:|------:|-----------------:|"
        )
        for n in sizes {
            let r = Self.measure(
                backends: n, queued: queued, decisions: decisions, policy: policy, speeds: speedList, jobSeconds: jobSeconds)
            print(
                "| \(n) | \(Int(r.burstBindingsPerSecond)) | \(Int(r.cycleBindingsPerSecond)) | \(Self.micros(r.p50)) "
                    + "| \(Self.micros(r.p99)) | \(Self.micros(r.p999)) | \(r.bytesPerJob) |"
            )
            if let t = r.timed {
                print(
                    String(
                        format: "  (%d backends: %.1f%% of slots running on average; the decisions spanned %.1f simulated seconds;"
                            + " %d model loads, %d of them asked by the core ahead of a job)",
                        n, t.busy * 100, t.seconds, t.loads, t.asked))
            }
        }
    }

    static func micros(_ ns: UInt64) -> String {
        let us = Double(ns) / 1000
        return us < 10 ? "\((us * 100).rounded() / 100) µs" : "\(Int(us.rounded())) µs"
    }

    struct Result {
        /// Bindings per CPU second when one event frees the whole fleet (median of 5 bursts).
        var burstBindingsPerSecond: Double
        /// Bindings per CPU second of the whole loop: start report, completion, one new submission,
        /// and the bench's own bookkeeping (median chunk; CPU time, so preemption does not count).
        var cycleBindingsPerSecond: Double
        var p50: UInt64
        var p99: UInt64
        var p999: UInt64
        var bytesPerJob: Int
        /// With `--job-seconds`: the mean share of the fleet's slots running a job after each
        /// decision, the simulated seconds the decisions spanned, and `FleetRun`'s model loads
        /// (all, and those the core asked for ahead of a job).
        var timed: (busy: Double, seconds: Double, loads: Int, asked: Int)?
    }

    /// Resident bytes of the process (second field of `/proc/self/statm`, in pages). Glibc's
    /// mallinfo is not exposed to Swift, and the growth of the resident set while the queue fills
    /// is what a deployment pays anyway.
    static func residentBytes() -> Int {
        let fd = open("/proc/self/statm", O_RDONLY)
        guard fd >= 0 else { return 0 }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 128)
        let n = read(fd, &buffer, buffer.count)
        guard n > 0 else { return 0 }
        let fields = buffer[0..<n].split(separator: UInt8(ascii: " "))
        guard fields.count > 1, let pages = Int(String(decoding: fields[1], as: UTF8.self)) else { return 0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    static func measure(
        backends n: Int, queued: Int, decisions: Int, policy: CorePolicy = CorePolicy(), speeds: [Double] = [1],
        jobSeconds: Double = 0
    ) -> Result {
        var fleet = CoreFleet(backends: n, policy: policy, speeds: speeds)
        func tick() -> CoreInstant { fleet.tick() }
        func randomSpec() -> JobSpec { fleet.randomSpec() }

        // Fill the queue; measure the heap it takes.
        var bound: [(JobID, BackendID, Lease)] = []
        func collect(_ actions: [CoreAction]) -> Int {
            var n = 0
            for case .assign(let job, _, _, let backend, let lease, _) in actions {
                bound.append((job, backend, lease))
                n += 1
            }
            return n
        }
        let before = residentBytes()
        var submitted = 0
        var filled: [CoreAction] = []
        while submitted < queued {
            let entries = (0..<100).map { _ in BatchEntry(spec: randomSpec()) }
            let actions = try! fleet.submit(entries)
            _ = collect(actions)
            if jobSeconds > 0 { filled += actions }
            submitted += entries.count
        }
        let bytesPerJob = (residentBytes() - before) / max(1, queued)

        // Steady state, one decision per step: a bound job completes (untimed, a random one a
        // microsecond on; timed, `FleetRun`'s job due first), its backend takes the next job, and a
        // new job keeps the queue at its depth.
        var histogram = Histogram<UInt64>(highestTrackableValue: 10_000_000_000, numberOfSignificantValueDigits: .three)
        let timer = ContinuousClock()
        func decision(_ decide: () -> [CoreAction]) -> [CoreAction] {
            let start = timer.now
            let actions = decide()
            let d = (timer.now - start).components
            _ = histogram.record(UInt64(d.seconds) * 1_000_000_000 + UInt64(d.attoseconds / 1_000_000_000))
            return actions
        }
        var bindings = 0
        var decisionBindings = 0
        // Rates are taken per chunk of 1,000 decisions and the median chunk is reported: the
        // machines are shared, and a preempted chunk says nothing about the core.
        var cycleRates: [Double] = []
        var chunkCPU = 0.0
        var sim = jobSeconds > 0 ? FleetRun(fleet: fleet, jobSeconds: jobSeconds) : nil
        if sim != nil {
            sim!.perform(filled, at: fleet.clock)
            bound.removeAll()
        }
        let clockStart = fleet.clock
        var busySum = 0.0, steps = 0
        for step in 0..<decisions {
            if step % 1000 == 0 {
                let cpu = threadCPUSeconds()
                if step > 0 {
                    cycleRates.append(Double(bindings + decisionBindings) / (cpu - chunkCPU))
                }
                (decisionBindings, bindings, chunkCPU) = (0, 0, cpu)
            }
            if sim != nil {
                guard let end = sim!.endNext(in: &fleet, measure: decision) else { break }
                decisionBindings += end.bindings
                let spec = randomSpec()
                bindings += sim!.submit([BatchEntry(spec: spec)], in: &fleet)
                busySum += Double(sim!.running) / Double(max(1, sim!.slots))
            } else {
                guard !bound.isEmpty else { break }
                let pick = Int(fleet.rng.next() % UInt64(bound.count))
                let (job, backend, lease) = bound[pick]
                bound.swapAt(pick, bound.count - 1)
                bound.removeLast()
                let spec = randomSpec()
                _ = fleet.handle(.jobStarted(job, backend: backend, lease: lease))
                let actions = decision { fleet.handle(.jobCompleted(job, backend: backend, lease: lease, result: .null)) }
                decisionBindings += collect(actions)
                bindings += collect(try! fleet.submit([BatchEntry(spec: spec)]))
            }
            steps += 1
        }
        let timed = sim.map {
            (
                busy: steps > 0 ? busySum / Double(steps) : 0, seconds: fleet.clock.seconds - clockStart.seconds,
                loads: $0.loadsStarted, asked: $0.loadsAsked
            )
        }
        if let sim { bound = sim.bound }
        // Burst: every backend fails one job at the same instant (so it is inhibited for 5 s) and
        // finishes the rest; the queue is topped up; then one tick frees the whole fleet and the
        // router fills every slot in a single call. This is the router alone, without the
        // per-event work of reports and submissions.
        var burstRates: [Double] = []
        for _ in 0..<5 {
            var byBackend: [BackendID: [(JobID, Lease)]] = [:]
            for (job, backend, lease) in bound { byBackend[backend, default: []].append((job, lease)) }
            bound.removeAll()
            let t0 = tick()
            var ended = 0
            for backend in byBackend.keys.sorted() {
                for (k, (job, lease)) in byBackend[backend]!.enumerated() {
                    let event: CoreEvent =
                        k == 0
                        ? .jobFailed(
                            job, backend: backend, lease: lease, code: .jobFailed, message: "bench", retryable: false)
                        : .jobCompleted(job, backend: backend, lease: lease, result: .null)
                    _ = fleet.core.handle(event, at: t0)
                    ended += 1
                }
            }
            while ended > 0 {
                let entries = (0..<min(100, ended)).map { _ in BatchEntry(spec: randomSpec()) }
                _ = try! fleet.core.submit(key: nil, entries: entries, at: t0)
                ended -= entries.count
            }
            fleet.clock = t0 + .seconds(5)
            let start = threadCPUSeconds()
            let actions = fleet.core.handle(.tick, at: fleet.clock)
            let took = threadCPUSeconds() - start
            burstRates.append(Double(collect(actions)) / took)
        }
        func median(_ xs: [Double]) -> Double { xs.isEmpty ? 0 : xs.sorted()[xs.count / 2] }
        return Result(
            burstBindingsPerSecond: median(burstRates), cycleBindingsPerSecond: median(cycleRates),
            p50: histogram.valueAtPercentile(50), p99: histogram.valueAtPercentile(99),
            p999: histogram.valueAtPercentile(99.9), bytesPerJob: bytesPerJob, timed: timed)
    }
}
