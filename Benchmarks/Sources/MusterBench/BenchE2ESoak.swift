import ArgumentParser
import BenchFixtures
import Foundation
import MusterClient
import MusterProtocol
import MusterServer
import MusterTransport

/// `muster-bench soak --seconds N` (hidden; `Scripts/soak N`): a mixed workload with faults for N
/// seconds, then the invariant check (every accepted job ended exactly once, one final event per
/// job seen by the client) and the coordinator's peak RSS. Exits 1 when the invariant breaks.
///
/// The workload: 20 steady backends and 50 flapping ones (`e2e-backends`), two `muster agent`s,
/// two submitting clients and a watcher. The faults, in turn every 2 s: an agent SIGSTOPped for
/// 3 s (keepalive drops it), the other agent SIGKILLed and restarted, a batch canceled.
struct BenchSoak: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "soak", abstract: "Mixed workload with faults; prints the invariant check and peak RSS (internal).",
        shouldDisplay: false)

    @Option(help: "Seconds of load and faults.")
    var seconds: Double = 20

    @Option(help: "Coordinator crash-restarts (SIGKILL, restart on the same job store) in the second phase; 0 skips it.")
    var crashes = 3

    func run() async throws {
        signal(SIGPIPE, SIG_IGN)
        do {
            try await soak()
        } catch {
            E2EChild.killAll()
            throw error
        }
    }

    private func soak() async throws {
        let e2e = try BenchE2E.parse([])
        let coordinator = try await e2e.startCoordinator([
            "links.keepalive_seconds=2", "links.suspect_grace_seconds=0.5", "gate.window_seconds=0", "routing.max_attempts=10",
        ])
        let url = coordinator.url
        let steady = try await e2e.startBackends(url, ["--count", "20", "--job-ms", "5", "--name", "steady"])
        let flapping = try await e2e.startBackends(
            url, ["--count", "50", "--mode", "flap", "--seconds", "\(seconds)", "--job-ms", "20", "--name", "flap"])
        func agent(_ name: String) throws -> E2EChild {
            try E2EChild.muster(
                name,
                [
                    "agent", "--coordinator", url, "--token", "t", "--name", name, "--features", "image", "--job-seconds", "50ms",
                    "--log-level", "error",
                ])
        }
        let agentA = try agent("agent-a")
        var agentB = try agent("agent-b")
        let window = JobWindow(limit: 2_000)
        let clients = try await e2e.connectClients(url, count: 2, window: window)
        let tracker = clients.tracker
        let accepted = AcceptedJobs()
        let end = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))

        let submitting = Task {
            await withTaskGroup(of: Void.self) { group in
                for client in clients.submitters {
                    group.addTask {
                        while ContinuousClock.now < end {
                            await window.acquire(20)
                            let sent = ContinuousClock.now
                            guard let a = try? await client.submit(e2e.request(20)) else {
                                window.release(20)
                                continue
                            }
                            tracker.submitted(a.batch, at: sent)
                            accepted.add(a)
                        }
                    }
                }
            }
        }
        var faults: [String: Int] = [:]
        var step = 0
        while ContinuousClock.now < end {
            try await Task.sleep(for: .seconds(2))
            switch step % 3 {
            case 0:
                agentA.signal(SIGSTOP)
                faults["agent SIGSTOP 3 s", default: 0] += 1
                Task {
                    try? await Task.sleep(for: .seconds(3))
                    agentA.signal(SIGCONT)
                }
            case 1:
                agentB.signal(SIGKILL)
                _ = await agentB.waitExit()
                agentB = try agent("agent-b")
                faults["agent SIGKILL + restart", default: 0] += 1
            default:
                if let batch = accepted.latest, (try? await clients.submitters[0].cancel(.batch(batch))) != nil {
                    faults["batch canceled", default: 0] += 1
                }
            }
            step += 1
        }
        await submitting.value
        agentA.signal(SIGCONT)
        let jobs = accepted.jobs
        let finished = await tracker.waitFinals(jobs.count, within: .seconds(180))
        let peak = ProcStats.memory(coordinator.child.pid, "VmHWM")
        let summary = tracker.summary()
        let broken = tracker.violations(accepted: jobs)
        let flaps = (try? await flapping.line("flapped", within: .seconds(5)))?.split(separator: " ").last ?? "?"
        await clients.close()
        _ = try await e2e.stopBackends(steady)
        _ = try await e2e.stopBackends(flapping)
        agentA.signal(SIGTERM)
        agentB.signal(SIGTERM)
        _ = await agentA.waitExit()
        _ = await agentB.waitExit()
        await e2e.stop(coordinator)

        let outcomes = summary.outcomes.sorted { $0.key.rawValue < $1.key.rawValue }.map { "\($0.value) \($0.key.rawValue)" }
        print("soak: \(Int(seconds)) s, \(jobs.count) jobs accepted: \(outcomes.joined(separator: ", "))")
        print(
            "soak: faults: " + faults.sorted { $0.key < $1.key }.map { "\($0.value) x \($0.key)" }.joined(separator: ", ")
                + ", \(flaps) link flaps of 50 backends")
        print("soak: coordinator peak RSS \(formatMB(peak))")
        try verdict(
            finished: finished, broken: broken, holds: "every accepted job ended exactly once, one final event each")
        if crashes > 0 { try await crashPhase(e2e) }
    }

    /// The second phase: load on a coordinator that is SIGKILLed and restarted on its job store
    /// `crashes` times. Each life gets a new watcher (subscribed to every job) and submitter;
    /// after the last restart every job whose `accepted` arrived must end, with at most one live
    /// final event over all lives (a job that ended while no watcher was linked shows up final in
    /// the next life's snapshot).
    private func crashPhase(_ e2e: BenchE2E) async throws {
        // Commits every 100 ms (not 4): each crash then catches bindings sent and not yet stored,
        // which the backends running them must claim back after the restart.
        let settings = [
            "links.suspect_grace_seconds=30", "gate.window_seconds=5", "links.keepalive_seconds=2",
            "store.commit_interval_seconds=0.1",
        ]
        var coordinator = try await e2e.startCoordinator(settings)
        let url = coordinator.url
        func agent(_ name: String) throws -> E2EChild {
            try E2EChild.muster(
                name,
                ["agent", "--coordinator", url, "--name", name, "--features", "image", "--job-seconds", "100ms", "--log-level", "error"])
        }
        let agents = [try agent("crash-a"), try agent("crash-b")]
        let steady = try await e2e.startBackends(url, ["--count", "10", "--job-ms", "30", "--name", "crash-steady"])
        let ledger = CrashLedger()
        var transport = try Transport(configuration: TransportConfiguration(), logger: e2e.quiet)
        func connect(_ name: String, watch: Bool) async throws -> MusterClient {
            var options = MusterClient.Options(coordinator: url, name: name)
            options.requestTimeout = .seconds(30)
            if watch { options.onEvent = { ledger.record($0) } }
            let deadline = ContinuousClock.now + .seconds(60)
            while true {
                do {
                    return try await MusterClient.connect(options, logger: e2e.quiet, transport: transport)
                } catch {
                    // The restarted coordinator is still opening its store.
                    if ContinuousClock.now > deadline { throw error }
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
        }
        var batches = 0
        // Bindings the store had not written when a coordinator died, claimed back after the restart
        // by the backend still running the job (`muster_jobs_claimed_total`, read before each kill).
        var claimed = 0
        // Requeues by cause, over all lives (`muster_jobs_requeued_total`).
        var requeued: [String: Int] = [:]
        func claimedSoFar() async -> Int {
            let port = url.split(separator: ":").last.map(String.init) ?? ""
            let request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/metrics", timeout: .seconds(10))
            guard case .success(let r) = await transport.request(request), r.status == 200 else { return 0 }
            let text = String(decoding: r.body, as: UTF8.self)
            var found = 0
            for line in text.split(separator: "\n") {
                let value = Double(line.split(separator: " ").last ?? "").map { Int($0) } ?? 0
                if line.hasPrefix("muster_jobs_claimed_total ") { found = value }
                if line.hasPrefix("muster_jobs_requeued_total{cause=\""), let cause = line.split(separator: "\"").dropFirst().first {
                    requeued[String(cause), default: 0] += value
                }
            }
            return found
        }
        for life in 0...crashes {
            let watcher = try await connect("crash-watcher-\(life)", watch: true)
            try await watcher.subscribe(batch: nil)
            guard life < crashes else {
                let done = await ledger.waitAllFinal(within: .seconds(180))
                claimed += await claimedSoFar()
                await watcher.close()
                try report(ledger, done: done, claimed: claimed, requeued: requeued)
                break
            }
            let submitter = try await connect("crash-submitter-\(life)", watch: false)
            let until = ContinuousClock.now + .seconds(3)
            while ContinuousClock.now < until {
                batches += 1
                let request = Wire.BatchRequest(
                    batchKey: "crash-\(batches)", jobs: [Wire.JobRequest(kind: "image", needs: ["image"], count: 20)])
                if let a = try? await submitter.submit(request) { ledger.accepted(a.jobs) }
                try await Task.sleep(for: .milliseconds(50))
            }
            if life > 0 { claimed += await claimedSoFar() }
            coordinator.child.signal(SIGKILL)
            _ = await coordinator.child.waitExit()
            await submitter.close()
            await watcher.close()
            await transport.shutdown()
            transport = try Transport(configuration: TransportConfiguration(), logger: e2e.quiet)
            coordinator = try await e2e.startCoordinator(settings, restarting: coordinator)
        }
        await transport.shutdown()
        _ = try await e2e.stopBackends(steady)
        for a in agents { a.signal(SIGTERM) }
        for a in agents { _ = await a.waitExit() }
        await e2e.stop(coordinator)
    }

    private func report(_ ledger: CrashLedger, done: Bool, claimed: Int, requeued: [String: Int]) throws {
        let (accepted, live, snapshot, broken) = ledger.check()
        print(
            "soak: \(crashes) coordinator crash-restarts (SIGKILL) under load: \(accepted) jobs accepted, \(live) final "
                + "events seen live, \(snapshot) ended while no watcher was linked (seen final in the next snapshot)")
        print(
            "soak: after the restarts, \(claimed) jobs claimed back by the backend still running them (their binding "
                + "was not stored yet); requeued: "
                + (requeued.isEmpty ? "none" : requeued.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")))
        try verdict(
            finished: done, broken: broken, across: " across crashes",
            holds: "every accepted job ended exactly once, never a second final event")
    }

    /// Prints whether an invariant held; exits 1 (after up to 20 violations) when it did not.
    private func verdict(finished: Bool, broken: [String], across: String = "", holds: String) throws {
        if finished, broken.isEmpty {
            print("soak: invariant holds\(across): \(holds)")
            return
        }
        print("soak: INVARIANT BROKEN\(across.uppercased())\(finished ? "" : " (gave up waiting for every job to end)"):")
        for line in broken.prefix(20) { print("  \(line)") }
        throw ExitCode(1)
    }
}

/// What the crash phase's clients saw: the jobs accepted, and per job its live final events and
/// whether a snapshot showed it final.
final class CrashLedger: Sendable {
    private struct State {
        var accepted: Set<JobID> = []
        var live: [JobID: Int] = [:]
        var snapshotFinal: Set<JobID> = []
        var waiter: CheckedContinuation<Void, Never>?
        /// The wait's bound passed: a waiter that registers only now must not wait.
        var expired = false
        var allFinal: Bool { accepted.allSatisfy { live[$0] != nil || snapshotFinal.contains($0) } }
    }
    private let state = Locked(State())

    func accepted(_ jobs: [JobID]) { state.withLock { $0.accepted.formUnion(jobs) } }

    func record(_ e: CoordinatorToClient.JobEvent) {
        guard e.state.isFinal else { return }
        let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if e.event == .snapshot { s.snapshotFinal.insert(e.job) } else { s.live[e.job, default: 0] += 1 }
            guard s.waiter != nil, s.allFinal else { return nil }
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume()
    }

    /// Waits until every accepted job was seen final (live or in a snapshot).
    func waitAllFinal(within bound: Duration) async -> Bool {
        let timeout = Task {
            try await Task.sleep(for: bound)
            let w = self.state.withLock { s -> CheckedContinuation<Void, Never>? in
                s.expired = true
                defer { s.waiter = nil }
                return s.waiter
            }
            w?.resume()
        }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let ready = state.withLock { s -> Bool in
                if s.allFinal || s.expired { return true }
                s.waiter = c
                return false
            }
            if ready { c.resume() }
        }
        timeout.cancel()
        return state.withLock { $0.allFinal }
    }

    func check() -> (accepted: Int, live: Int, snapshotOnly: Int, broken: [String]) {
        state.withLock { s in
            var broken: [String] = []
            for job in s.accepted.sorted() {
                let n = s.live[job] ?? 0
                if n > 1 { broken.append("job \(job): \(n) live final events") }
                if n == 0 && !s.snapshotFinal.contains(job) { broken.append("job \(job): never ended") }
            }
            let snapshotOnly = s.accepted.filter { s.live[$0] == nil && s.snapshotFinal.contains($0) }.count
            return (s.accepted.count, s.live.values.reduce(0, +), snapshotOnly, broken)
        }
    }
}

/// Jobs the coordinator accepted during the soak.
final class AcceptedJobs: Sendable {
    private let state = Locked<(jobs: [JobID], latest: BatchID?)>(([], nil))

    func add(_ a: Wire.Accepted) {
        state.withLock { s in
            s.jobs += a.jobs
            s.latest = a.batch
        }
    }

    var jobs: [JobID] { state.withLock { $0.jobs } }
    var latest: BatchID? { state.withLock { $0.latest } }
}

extension JobTracker {
    /// Accepted jobs without exactly one final event, and final events of jobs never accepted.
    func violations(accepted: [JobID]) -> [String] {
        let finals = finalCounts()
        var out: [String] = []
        let set = Set(accepted)
        for job in accepted where finals[job] != 1 { out.append("job \(job): \(finals[job] ?? 0) final events") }
        for (job, _) in finals where !set.contains(job) { out.append("job \(job): final event, never accepted") }
        for job in reasonless() { out.append("job \(job): failed without a reason") }
        return out
    }
}
