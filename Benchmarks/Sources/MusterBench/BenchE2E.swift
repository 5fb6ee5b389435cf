import ArgumentParser
import BenchFixtures
import Foundation
import Histogram
import Logging
import MusterClient
import MusterProtocol
import MusterServer
import MusterTransport

/// `muster-bench e2e`: the whole system on loopback. A coordinator (`muster serve`) and the
/// simulated backends (`muster-bench e2e-backends`, many links in one process) run as child
/// processes; the clients (``MusterClient``s on one transport) run in this process. Prints one
/// table and asserts nothing.
///
/// Latencies are client-side: the time a submitter sent `submit` to the time the watcher (one
/// more client, subscribed to every job) received the job's `bound` event, and its final event.
/// They include the coordinator's outbound queue and the client's own event loop, so they bound
/// what the coordinator does from above; the events' `at_ms` has only millisecond resolution.
struct BenchE2E: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "e2e",
        abstract: "End to end on loopback: jobs/s, submit->bind and submit->completed latency, scale, churn, gate.")

    @Option(help: "Comma-separated scenarios: throughput, latency, scale, churn, gate.")
    var scenarios = "throughput,latency,scale,churn,gate"
    @Option(help: "Backends (links) for throughput, latency and churn.")
    var backends = 100
    @Option(help: "Jobs in the throughput scenario.")
    var jobs = 200_000
    @Option(help: "Jobs per batch (throughput).")
    var batch = 100
    @Option(help: "Submitting clients.")
    var clients = 4
    @Option(help: "Batches in flight per submitting client.")
    var inFlight = 4
    @Option(help: "Throughput: most jobs submitted and not yet final (flow control).")
    var outstanding = 5_000
    @Option(help: "Latency: jobs/s to submit; 0 = half of the throughput measured (12,500 without it).")
    var rate: Double = 0
    @Option(help: "Latency: jobs to submit.")
    var latencyJobs = 60_000
    @Option(help: "Latency: jobs per batch.")
    var latencyBatch = 10
    @Option(help: "Scale: backend links to hold.")
    var scaleLinks = 10_000
    @Option(help: "Scale: links.keepalive_seconds of the coordinator; the backends ping at half of it too.")
    var scaleKeepalive: Double = 10
    @Option(help: "Scale: seconds of idle CPU measurement.")
    var idleSeconds: Double = 10
    @Option(help: "Churn: seconds of announcing.")
    var churnSeconds: Double = 3
    @Option(help: "Gate: rounds (each a new set of backends and a held batch).")
    var gateRounds = 25
    @Option(help: "Gate: backends per round (4 slots each, one job per slot).")
    var gateBackends = 10
    @Option(help: "Messages in the raw transport reference.")
    var rawMessages = 1_000_000
    @Option(help: "Upper bound in seconds on each wait (a scenario that passes it reports what it got).")
    var bound: Double = 180
    @Flag(help: "The watcher follows every job event, as it did before 2026-12-04, not only `bound` and the final ones.")
    var watchAll = false
    @Flag(help: "Skip the Redis reference.")
    var noRedis = false
    @Option(
        help:
            "Job stores for throughput (each a row): sqlite (the default, durable), memory, postgres (a new database on the server of --postgres; skipped without one)."
    )
    var stores = "sqlite,memory,postgres"
    @Option(
        help:
            "A PostgreSQL superuser's URL (postgres://USER:PASSWORD@HOST:PORT/DB) for the postgres store. Default: $MUSTER_TEST_POSTGRES_URL, which Scripts/bench e2e sets by starting a throw-away server."
    )
    var postgres: String?

    struct Row {
        var name: String
        var rate = "-"
        var assign = "-"
        var bind = "-"
        var complete = "-"
        var cpu = "-"
        var rss = "-"
        var messages: Double?
        var note = ""
    }

    func run() async throws {
        signal(SIGPIPE, SIG_IGN)
        do {
            try await runScenarios()
        } catch {
            E2EChild.killAll()
            throw error
        }
    }

    func runScenarios() async throws {
        let wanted = Set(scenarios.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
        let known: Set<String> = ["throughput", "latency", "scale", "churn", "gate"]
        guard wanted.isSubset(of: known) else {
            throw ValidationError("--scenarios: unknown \(wanted.subtracting(known).sorted()); pick from \(known.sorted())")
        }
        var rows: [Row] = []
        var measuredRate: Double?
        let storeKinds = stores.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        guard !storeKinds.isEmpty, Set(storeKinds).isSubset(of: ["sqlite", "memory", "postgres"]) else {
            throw ValidationError("--stores: pick from sqlite, memory, postgres")
        }
        if wanted.contains("throughput") {
            for kind in storeKinds {
                if kind == "postgres", postgresServer == nil {
                    rows.append(Row(name: "throughput postgres", rate: "skipped", note: "store postgres: no server (--postgres URL, or run through Scripts/bench e2e)"))
                    continue
                }
                let row = try await throughput(store: kind)
                // Latency is offered at half the durable (first) rate.
                if measuredRate == nil { measuredRate = Double(row.rate.filter(\.isNumber)) }
                rows.append(row)
            }
        }
        if wanted.contains("latency") {
            let target = rate > 0 ? rate : (measuredRate.map { $0 / 2 } ?? 12_500)
            rows.append(try await latency(rate: target, store: storeKinds[0]))
        }
        if wanted.contains("scale") { rows.append(try await scale()) }
        if wanted.contains("churn") { rows.append(try await churn()) }
        if wanted.contains("gate") { rows.append(try await gate()) }
        if !noRedis, wanted.contains("throughput") {
            for fsync in ["no", "everysec", "always"] { rows.append(await redisReference(appendfsync: fsync)) }
        }
        let raw = try await rawTransport()
        rows.append(Row(name: "raw transport", rate: "\(formatCount(raw)) msg/s", note: "one-way, 32-byte messages, 1 link"))

        print("e2e (loopback; coordinator, backends and clients in separate processes; release build; \(ProcessInfo.processInfo.activeProcessorCount) cores)")
        let header = [
            padded("scenario", 20), padded("rate", 24), padded("submit->assign p50/p90/p99/p99.9", 34),
            padded("submit->bound p50/p90/p99/p99.9", 34),
            padded("submit->completed p50/p90/p99/p99.9", 38), padded("coord CPU", 11), padded("coord RSS", 11),
            padded("msgs/s (x raw)", 24), "notes",
        ]
        print(header.joined())
        for r in rows {
            let messages = r.messages.map { "\(formatCount($0)) (\(String(format: "%.2f", $0 / max(raw, 1))))" } ?? "-"
            print(
                [
                    padded(r.name, 20), padded(r.rate, 24), padded(r.assign, 34), padded(r.bind, 34), padded(r.complete, 38), padded(r.cpu, 11),
                    padded(r.rss, 11), padded(messages, 24), r.note,
                ].joined())
        }
    }

    var waitBound: Duration { .milliseconds(Int64(bound * 1000)) }

    // MARK: - Processes

    struct Coordinator {
        var child: E2EChild
        var url: String
        /// Its `store.url`, kept for a restart.
        var storeURL: String
        /// The temporary directory of its SQLite store, removed when it stops.
        var storeDirectory: String? = nil
    }

    /// The PostgreSQL server of the postgres store, if any.
    var postgresServer: String? {
        postgres ?? ProcessInfo.processInfo.environment["MUSTER_TEST_POSTGRES_URL"]
    }

    /// `muster serve` on a free loopback port with no configured backends, once it takes clients.
    /// `store`: `sqlite` (a new file in a temporary directory, removed afterwards), `memory`, or
    /// `postgres` (a new database on ``postgresServer``, left to the throw-away server).
    /// `restarting`: start again on that coordinator's port and store (after it was killed).
    func startCoordinator(_ settings: [String] = [], store: String = "sqlite", restarting: Coordinator? = nil) async throws
        -> Coordinator
    {
        let port = try restarting.flatMap { Int($0.url.split(separator: ":").last ?? "") } ?? freeLoopbackPort()
        var args = ["serve", "--listen", "127.0.0.1:\(port)", "--log-level", "error", "--set", "backends=[]"]
        var storeURL = "memory:", storeDirectory: String?
        if let restarting {
            storeURL = restarting.storeURL
            storeDirectory = restarting.storeDirectory
        } else if store == "postgres" {
            guard let server = postgresServer else { throw ValidationError("store postgres: no server (--postgres URL)") }
            storeURL = try BenchStore.createDatabase(server, "muster_e2e_\(UUID().uuidString.prefix(8).lowercased())")
        } else if store != "memory" {
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("muster-bench-\(UUID().uuidString)").path
            storeURL = "sqlite://\(dir)/muster.sqlite"
            storeDirectory = dir
        }
        for s in ["links.outbound_high_water_bytes=268435456", "store.url=\(storeURL)"] + settings { args += ["--set", s] }
        let child = try E2EChild.muster("muster serve", args)
        let url = "ws://127.0.0.1:\(port)"
        let deadline = ContinuousClock.now + .seconds(30)
        while true {
            // Poll until it listens: the child has no other way to say so at log level error.
            if let probe = try? await MusterClient.connect(.init(coordinator: url, name: "probe"), logger: quiet) {
                await probe.close()
                return Coordinator(child: child, url: url, storeURL: storeURL, storeDirectory: storeDirectory)
            }
            if ContinuousClock.now > deadline || !child.process.isRunning {
                child.signal(SIGKILL)
                throw ValidationError("muster serve did not start on port \(port)")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    func stop(_ c: Coordinator) async {
        c.child.signal(SIGTERM)
        let killer = Task {
            // Graceful shutdown is bounded at 15 s by muster serve itself; this is a backstop.
            try await Task.sleep(for: .seconds(20))
            c.child.signal(SIGKILL)
        }
        _ = await c.child.waitExit()
        killer.cancel()
        if let dir = c.storeDirectory { try? FileManager.default.removeItem(atPath: dir) }
    }

    func startBackends(_ url: String, _ extra: [String]) async throws -> E2EChild {
        let child = try E2EChild.harness("e2e-backends", ["e2e-backends", "--coordinator", url] + extra)
        _ = try await child.line("ready", within: waitBound)
        return child
    }

    /// Ends a backends process; returns its messages in + out.
    func stopBackends(_ child: E2EChild) async throws -> Int {
        let done = Task { await child.finish() }
        let stats = try await child.line("stats", within: .seconds(30)).split(separator: " ")
        _ = await done.value
        return (Int(stats[1]) ?? 0) + (Int(stats[2]) ?? 0)
    }

    var quiet: Logger {
        var l = Logger(label: "muster.bench.e2e")
        l.logLevel = .error
        return l
    }

    /// Submitting clients on one transport, and one watcher subscribed to every job on another:
    /// two loop threads, so decoding the watcher's events does not delay the submitters' writes.
    struct Clients {
        var transport: Transport
        var watcherTransport: Transport
        var watcher: MusterClient
        var submitters: [MusterClient]
        var tracker: JobTracker

        func close() async {
            for c in submitters { await c.close() }
            await watcher.close()
            await transport.shutdown()
            await watcherTransport.shutdown()
        }

        var messages: Int {
            get async {
                let c = await transport.counters, w = await watcherTransport.counters
                return c.messagesIn + c.messagesOut + w.messagesIn + w.messagesOut
            }
        }
    }

    func connectClients(_ url: String, count: Int, window: JobWindow?) async throws -> Clients {
        var config = TransportConfiguration()
        config.maxMessageBytes = 16 << 20
        config.outboundHighWaterBytes = 256 << 20
        config.shutdownGrace = .seconds(1)
        let transport = try Transport(configuration: config, logger: quiet)
        let watcherTransport = try Transport(configuration: config, logger: quiet)
        var options = MusterClient.Options(coordinator: url, name: "e2e-watcher")
        options.requestTimeout = .seconds(120)
        let tracker = JobTracker(window: window)
        // Events are timed on the loop thread as they are decoded, not after a hop to a consumer task.
        options.onEvent = { tracker.record($0, at: .now) }
        let watcher = try await MusterClient.connect(options, logger: quiet, transport: watcherTransport)
        // The events the latencies are read from; the others would cost the coordinator and
        // this process work that no caller of a production coordinator asks for.
        try await watcher.subscribe(batch: nil, only: watchAll ? [] : [.bound, .completed, .failed, .canceled])
        options.onEvent = nil
        var submitters: [MusterClient] = []
        for i in 0..<count {
            options.name = "e2e-client-\(i)"
            submitters.append(try await MusterClient.connect(options, logger: quiet, transport: transport))
        }
        return Clients(
            transport: transport, watcherTransport: watcherTransport, watcher: watcher, submitters: submitters, tracker: tracker)
    }

    func request(_ n: Int, needs: [String] = ["image"]) -> Wire.BatchRequest {
        Wire.BatchRequest(jobs: [Wire.JobRequest(kind: "image", needs: needs, count: n)])
    }

    // MARK: - Scenarios

    /// As many zero-duration jobs as the system moves, at most `outstanding` unfinished at a time.
    func throughput(store: String) async throws -> Row {
        let coordinator = try await startCoordinator(["gate.window_seconds=0"], store: store)
        let fleet = try await startBackends(coordinator.url, ["--count", "\(backends)"])
        let window = JobWindow(limit: outstanding)
        let clients = try await connectClients(coordinator.url, count: clients, window: window)
        let pid = coordinator.child.pid
        let cpu0 = ProcStats.cpuSeconds(pid), messages0 = await clients.messages, t0 = ContinuousClock.now
        let others0 = (ProcStats.cpuSeconds(fleet.pid), ProcStats.cpuSeconds(getpid()))
        let remaining = Remaining(jobs)
        let tracker = clients.tracker
        let batch = self.batch
        await withTaskGroup(of: Void.self) { group in
            for client in clients.submitters {
                for _ in 0..<inFlight {
                    group.addTask {
                        while true {
                            let n = remaining.take(batch)
                            guard n > 0 else { return }
                            await window.acquire(n)
                            let sent = ContinuousClock.now
                            guard let accepted = try? await client.submit(self.request(n)) else { return }
                            tracker.submitted(accepted.batch, at: sent)
                        }
                    }
                }
            }
        }
        let finished = await tracker.waitFinals(jobs, within: waitBound)
        let t1 = ContinuousClock.now, cpu1 = ProcStats.cpuSeconds(pid)
        let others = otherCPU(others0, fleet: fleet, over: t1 - t0)
        let peak = ProcStats.memory(pid, "VmHWM")
        let clientMessages = await clients.messages - messages0
        await clients.close()
        let backendMessages = try await stopBackends(fleet)
        await stop(coordinator)
        let s = tracker.summary()
        let elapsed = ((s.last ?? t1) - (s.first ?? t0)).secondsDouble
        var row = Row(name: "throughput \(store)")
        row.rate = "\(formatCount(Double(s.finals) / elapsed)) jobs/s"
        row.bind = s.bind.text
        row.complete = s.complete.text
        row.cpu = String(format: "%.0f%%", (cpu1 - cpu0) / (t1 - t0).secondsDouble * 100)
        row.rss = formatMB(peak)
        row.messages = Double(clientMessages + backendMessages) / (t1 - t0).secondsDouble
        row.note = "\(backends) backends x 1 slot, \(formatCount(Double(jobs))) jobs in batches of \(batch), \(self.clients) clients"
            + " x \(inFlight) batches in flight, <= \(formatCount(Double(outstanding))) unfinished; \(others)"
            + invariant(s, expected: jobs, finished: finished)
        return row
    }

    /// Paced submissions at `rate` jobs/s in small batches.
    func latency(rate: Double, store: String) async throws -> Row {
        let coordinator = try await startCoordinator(["gate.window_seconds=0"], store: store)
        let assignLog = NSTemporaryDirectory() + "muster-bench-assigns-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: assignLog) }
        let fleet = try await startBackends(coordinator.url, ["--count", "\(backends)", "--assign-log", assignLog])
        let clients = try await connectClients(coordinator.url, count: clients, window: nil)
        let pid = coordinator.child.pid
        let sentAt = Locked([BatchID: UInt64]())
        let cpu0 = ProcStats.cpuSeconds(pid), messages0 = await clients.messages, t0 = ContinuousClock.now
        let others0 = (ProcStats.cpuSeconds(fleet.pid), ProcStats.cpuSeconds(getpid()))
        let tracker = clients.tracker
        let size = latencyBatch
        let batches = latencyJobs / size
        let interval = Duration.nanoseconds(Int64(Double(size) / rate * 1e9))
        let submitters = clients.submitters
        await withTaskGroup(of: Void.self) { group in
            for i in 0..<batches {
                // Paced by the clock, not by answers: a slow answer does not slow the offered load.
                try? await Task.sleep(until: t0 + interval * i, clock: .continuous)
                let client = submitters[i % submitters.count]
                group.addTask {
                    let sent = ContinuousClock.now, sentNanos = monotonicNanos()
                    if let accepted = try? await client.submit(self.request(size)) {
                        tracker.submitted(accepted.batch, at: sent)
                        sentAt.withLock { $0[accepted.batch] = sentNanos }
                    }
                }
            }
        }
        let total = batches * size
        let finished = await tracker.waitFinals(total, within: waitBound)
        let t1 = ContinuousClock.now, cpu1 = ProcStats.cpuSeconds(pid)
        let others = otherCPU(others0, fleet: fleet, over: t1 - t0)
        let peak = ProcStats.memory(pid, "VmHWM")
        let clientMessages = await clients.messages - messages0
        await clients.close()
        let backendMessages = try await stopBackends(fleet)
        await stop(coordinator)
        let s = tracker.summary()
        var row = Row(name: "latency \(store)")
        row.assign = assignLatencies(assignLog, sent: sentAt.withLock { $0 }).text
        row.rate = "\(formatCount(Double(s.finals) / ((s.last ?? t1) - t0).secondsDouble)) jobs/s"
        row.bind = s.bind.text
        row.complete = s.complete.text
        row.cpu = String(format: "%.0f%%", (cpu1 - cpu0) / (t1 - t0).secondsDouble * 100)
        row.rss = formatMB(peak)
        row.messages = Double(clientMessages + backendMessages) / (t1 - t0).secondsDouble
        row.note = "offered \(formatCount(rate)) jobs/s in batches of \(size), \(backends) backends; \(others)"
            + invariant(s, expected: total, finished: finished)
        return row
    }

    /// From each batch's submit to the first `assign` of each of its jobs at the backends'
    /// process (`e2e-backends --assign-log`): when the job reached a backend.
    func assignLatencies(_ path: String, sent: [BatchID: UInt64]) -> Percentiles {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return Percentiles() }
        var seen = Set<UInt64>(), histogram = e2eHistogram()
        for line in text.split(separator: "\n") {
            let f = line.split(separator: " ")
            guard f.count == 3, let job = UInt64(f[0]), let batch = UInt64(f[1]), let at = UInt64(f[2]),
                let submitted = sent[BatchID(batch)], seen.insert(job).inserted
            else { continue }
            _ = histogram.record(at > submitted ? (at - submitted) / 1000 : 0)
        }
        return Percentiles(histogram)
    }

    /// Many idle backend links held with keepalive, then one batch routed across them.
    func scale() async throws -> Row {
        let coordinator = try await startCoordinator(["gate.window_seconds=0", "links.keepalive_seconds=\(scaleKeepalive)"])
        let pid = coordinator.child.pid
        let fleet = try await startBackends(
            coordinator.url, ["--count", "\(scaleLinks)", "--name", "scale", "--keepalive-seconds", "\(scaleKeepalive)"])
        // Idle: nothing but keepalive pings for the measurement window.
        let cpu0 = ProcStats.cpuSeconds(pid), t0 = ContinuousClock.now
        try await Task.sleep(for: .milliseconds(Int64(idleSeconds * 1000)))
        let idle = (ProcStats.cpuSeconds(pid) - cpu0) / (ContinuousClock.now - t0).secondsDouble
        let rss = ProcStats.memory(pid, "VmRSS")
        let clients = try await connectClients(coordinator.url, count: 1, window: nil)
        var left = scaleLinks
        while left > 0 {
            let n = min(1000, left)
            left -= n
            let sent = ContinuousClock.now
            let accepted = try await clients.submitters[0].submit(request(n))
            clients.tracker.submitted(accepted.batch, at: sent)
        }
        let finished = await clients.tracker.waitFinals(scaleLinks, within: waitBound)
        let peak = ProcStats.memory(pid, "VmHWM")
        await clients.close()
        _ = try await stopBackends(fleet)
        await stop(coordinator)
        let s = clients.tracker.summary()
        var row = Row(name: "scale")
        row.rate = "\(formatCount(Double(scaleLinks))) links"
        row.bind = s.bind.text
        row.complete = s.complete.text
        row.cpu = String(format: "%.1f%% idle", idle * 100)
        row.rss = formatMB(rss)
        row.note = "keepalive \(scaleKeepalive) s both ways; RSS with \(formatCount(Double(scaleLinks))) links held (peak \(formatMB(peak)) after the batch); batches of 1,000,"
            + " \(formatCount(Double(scaleLinks))) jobs, ran on \(formatCount(Double(s.backends.count))) backends"
            + invariant(s, expected: scaleLinks, finished: finished)
        return row
    }

    /// Announcements applied per second: every backend re-announces as soon as its last one is acked.
    func churn() async throws -> Row {
        let coordinator = try await startCoordinator(["gate.window_seconds=0"])
        let pid = coordinator.child.pid
        let fleet = try await startBackends(
            coordinator.url, ["--count", "\(backends)", "--mode", "churn", "--seconds", "\(churnSeconds)", "--name", "churn"])
        let cpu0 = ProcStats.cpuSeconds(pid), t0 = ContinuousClock.now
        fleet.send("go")
        let line = try await fleet.line("churn", within: waitBound).split(separator: " ")
        let cpu1 = ProcStats.cpuSeconds(pid), t1 = ContinuousClock.now
        let acks = Double(line[1]) ?? 0, elapsed = Double(line[2]) ?? 1
        let peak = ProcStats.memory(pid, "VmHWM")
        _ = try await stopBackends(fleet)
        await stop(coordinator)
        var row = Row(name: "churn")
        row.rate = "\(formatCount(acks / elapsed)) ann/s"
        row.cpu = String(format: "%.0f%%", (cpu1 - cpu0) / (t1 - t0).secondsDouble * 100)
        row.rss = formatMB(peak)
        let perCPU = acks / max(cpu1 - cpu0, 0.001)
        row.note = "announcements applied and acked (\(formatCount(perCPU)) per coordinator CPU-second), \(backends) backends"
            + " x 8 in flight, each one flips the loaded model"
        return row
    }

    /// Jobs held by the gate for backends that announced `loading`; the time from the last
    /// `ready` announcement sent to each `assign` received, both in the backends process.
    func gate() async throws -> Row {
        let coordinator = try await startCoordinator(["gate.window_seconds=60"])
        let pid = coordinator.child.pid
        var options = MusterClient.Options(coordinator: coordinator.url, name: "e2e-gate")
        options.requestTimeout = .seconds(60)
        let client = try await MusterClient.connect(options, logger: quiet)
        var histogram = e2eHistogram()
        let perRound = gateBackends * 4
        for round in 0..<gateRounds {
            let feature = "g\(round)"
            let fleet = try await startBackends(
                coordinator.url,
                [
                    "--count", "\(gateBackends)", "--mode", "gate", "--slots", "4", "--name", "gate\(round)", "--features", feature,
                    "--expect-assigns", "\(perRound)",
                ])
            // Accepted means decided: every job is held, since no ready backend has the feature.
            _ = try await client.submit(request(perRound, needs: [feature]))
            fleet.send("go")
            let samples = try await fleet.line("gate", within: waitBound).dropFirst(5).split(separator: ",")
            for s in samples { _ = histogram.record(UInt64(s) ?? 0) }
            _ = try await stopBackends(fleet)
        }
        let peak = ProcStats.memory(pid, "VmHWM")
        await client.close()
        await stop(coordinator)
        var row = Row(name: "gate")
        row.rate = "\(gateRounds) rounds"
        row.bind = Percentiles(histogram).text
        row.rss = formatMB(peak)
        row.note = "bind column: last ready announcement sent -> assign received (backend side, 2 loopback hops),"
            + " \(gateBackends) backends x 4 slots per round"
        return row
    }

    /// CPU of the backends process and of this (clients) process over a run, as text.
    func otherCPU(_ before: (Double, Double), fleet: E2EChild, over elapsed: Duration) -> String {
        let backends = (ProcStats.cpuSeconds(fleet.pid) - before.0) / elapsed.secondsDouble * 100
        let clients = (ProcStats.cpuSeconds(getpid()) - before.1) / elapsed.secondsDouble * 100
        return String(format: "CPU of the backends process %.0f%%, of the clients process %.0f%%", backends, clients)
    }

    func invariant(_ s: JobTracker.Summary, expected: Int, finished: Bool) -> String {
        let outcomes = s.outcomes.sorted { $0.key.rawValue < $1.key.rawValue }.map { "\($0.value) \($0.key.rawValue)" }
        var text = "; \(s.finals)/\(expected) jobs ended (\(outcomes.joined(separator: ", ")))"
        if s.duplicates > 0 { text += ", \(s.duplicates) DUPLICATE final events" }
        if !finished { text += ", GAVE UP after \(Int(bound)) s" }
        return text
    }

    // MARK: - References

    /// The raw transport's one-way rate: a sink here, the load from a `muster-bench transport` child.
    func rawTransport() async throws -> Double {
        var config = TransportConfiguration()
        config.outboundHighWaterBytes = 64 << 20
        let server = try Transport(configuration: config, logger: quiet)
        let sink = Sink()
        sink.reset(expect: rawMessages)
        var s = ServerConfiguration()
        s.subprotocols = [("bench.sink", sink.handler())]
        let listen = s
        let port = try await server.listen(listen).port
        let child = try E2EChild.harness(
            "transport client",
            ["transport", "--role", "client", "--mode", "oneway", "--url", "ws://127.0.0.1:\(port)/", "--messages", "\(rawMessages)"])
        _ = try await child.line("sent", within: waitBound)
        _ = await child.finish()
        await server.shutdown()
        return sink.rate()
    }

    /// Debian's redis-server with redis-benchmark LPUSH and RPOP at 100 clients; a job is 4 operations.
    func redisReference(appendfsync: String) async -> Row {
        var row = Row(name: appendfsync == "no" ? "redis no AOF" : "redis AOF \(appendfsync)")
        guard let server = which("redis-server"), let bench = which("redis-benchmark") else {
            row.note = "skipped: redis-server and redis-benchmark not installed (apt-get install redis-server redis-tools)"
            return row
        }
        do {
            let port = try freeLoopbackPort()
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("muster-redis-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: dir) }
            // The same durability choices as a job store: an append-only file synced every second
            // or on every write, on the same disk as the coordinator's store.
            let aof = appendfsync == "no" ? ["--appendonly", "no"] : ["--appendonly", "yes", "--appendfsync", appendfsync]
            let redis = try E2EChild(
                "redis-server", executable: URL(fileURLWithPath: server),
                ["--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--dir", dir.path] + aof)
            // SIGKILL: redis keeps nothing, and it inherits a mask that may block SIGTERM.
            defer { redis.signal(SIGKILL) }
            _ = try await redis.line("Ready to accept connections", within: .seconds(10), anywhere: true)
            var rates: [String: Double] = [:]
            let run = try E2EChild(
                "redis-benchmark", executable: URL(fileURLWithPath: bench),
                ["-h", "127.0.0.1", "-p", "\(port)", "-t", "lpush,rpop", "-c", "100", "-n", "500000", "-q"])
            _ = await run.finish()
            for op in ["LPUSH", "RPOP"] {
                // -q prints progress ending in \r, then "OP: N requests per second, ...".
                let line = try? await run.line("\(op): ", within: .seconds(1), anywhere: true)
                let final = line?.split(separator: "\r").last { $0.contains("requests per second") }
                if let v = final?.split(separator: " ").compactMap({ Double($0) }).first { rates[op] = v }
            }
            redis.signal(SIGKILL)
            _ = await redis.waitExit()
            guard let push = rates["LPUSH"], let pop = rates["RPOP"] else {
                row.note = "redis-benchmark printed no rates"
                return row
            }
            row.rate = "\(formatCount(1 / (2 / push + 2 / pop))) jobs/s"
            row.note = "LPUSH \(formatCount(push))/s, RPOP \(formatCount(pop))/s, 100 clients; 1 job = 2 LPUSH + 2 RPOP"
        } catch {
            row.note = "failed: \(error)"
        }
        return row
    }

    func which(_ name: String) -> String? {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let path = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return nil
    }
}
