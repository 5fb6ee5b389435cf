import DequeModule
import MusterCore
import MusterProtocol

/// What a worker is and how it behaves: the same description drives a local pseudo-backend inside
/// the coordinator and `muster agent`.
public struct WorkerSpec: Sendable, Equatable {
    public enum Runner: Sendable, Equatable {
        /// Each job takes `jobDurations[kind]` (or `["default"]`), failing at `failureRate`.
        case simulated
        /// Each job runs `command`: the `assign` JSON on stdin, the result JSON on stdout.
        case exec(command: [String], timeout: Duration)
        /// A server runs the jobs (a ComfyUI): every assigned job is handed over at once with
        /// `.run` (the server keeps its own queue), `.stop` takes it back; the shell reports
        /// `externalStarted`, `externalProgress` and `execFinished`, and what the server can do
        /// with `serverCapabilities`. The worker is `loading` until the server first answers.
        case external
    }

    public var name: String
    public var features: [String]
    /// Models it can run; none of them is loaded at start.
    public var models: [String]
    public var slots: Int
    public var runner: Runner
    /// Time spent `loading` before the worker announces `ready`.
    public var startupDelay: Duration
    public var jobDurations: [String: Duration]
    public var modelLoadTime: Duration
    public var failureRate: Double
    /// How often a running job reports progress.
    public var progressInterval: Duration
    /// Announced in the capabilities (relative to 1.0); simulated jobs take their duration divided
    /// by it.
    public var speed: Double?
    /// Whether a job naming a model not loaded yet waits `modelLoadTime` for a simulated load
    /// before its work begins, and that time is announced (`model_load_seconds`): simulated work,
    /// and `muster agent --exec`, which simulates its models. A coordinator's own `exec` backend
    /// runs its command at once and announces nothing.
    public var simulatesModelLoads: Bool
    /// Whether the capabilities announce `speed`, the simulated durations (`job_seconds`) and the
    /// simulated load time (`model_load_seconds`). Off (`muster agent --cold`), the coordinator
    /// learns them by running jobs, as it must for a real backend; the work takes as long.
    public var announcesEstimates = true

    public init(
        name: String, features: [String] = [], models: [String] = [], slots: Int = 1, runner: Runner = .simulated,
        startupDelay: Duration = .zero, jobDurations: [String: Duration] = ["default": .seconds(2)],
        modelLoadTime: Duration = .seconds(5), failureRate: Double = 0, progressInterval: Duration = .seconds(1),
        speed: Double? = nil, simulatesModelLoads: Bool? = nil
    ) {
        self.simulatesModelLoads = simulatesModelLoads ?? (runner == .simulated)
        self.name = name
        self.features = features
        self.models = models
        self.slots = slots
        self.runner = runner
        self.startupDelay = startupDelay
        self.jobDurations = jobDurations
        self.modelLoadTime = modelLoadTime
        self.failureRate = failureRate
        self.progressInterval = progressInterval
        self.speed = speed
    }

    func duration(kind: String) -> Duration {
        let d = jobDurations[kind] ?? jobDurations["default"] ?? .seconds(2)
        guard let speed, speed > 0 else { return d }
        return d * (1 / speed)
    }
}

/// The backend side of `muster.backend.v1` as a state machine (Protocol/README.md 6.7): it
/// announces its capabilities, runs at most `slots` assigned jobs in FIFO order, reports
/// `started`/`progress`/`completed`/`failed` under each job's lease, obeys `cancel` (confirmed with
/// `failed` `canceled` once the job stopped), `revoke`, `stale_lease`, `load_model` and `drain`,
/// answers `sync`, and reconciles its jobs with
/// `welcome.bindings` after a reconnect. Time is injected; nothing here does I/O: the shell sends
/// the messages, starts and kills `exec` processes, and arms a timer for `nextDeadline`.
public struct WorkerEngine: Sendable {
    public enum Action: Sendable, Equatable {
        case send(BackendToCoordinator)
        /// Start the exec runner for this job with `input` (the job as JSON) on stdin.
        case startExec(job: JobID, lease: Lease, input: String)
        /// Kill the exec runner of this job; its outcome is no longer wanted.
        case killExec(job: JobID, lease: Lease)
        /// External runner: hand the job to the server.
        case run(CoordinatorToBackend.Assign)
        /// External runner: take the job back from the server (delete it from the server's
        /// queue, or interrupt it when `started`); its outcome is no longer wanted. With
        /// `confirm` (a cancel), report `externalStopped` once the server confirms it stopped.
        case stop(job: JobID, lease: Lease, started: Bool, confirm: Bool)
        /// External runner: make the server load a model; answer with `externalModelLoaded`.
        case loadModel(String)
        /// Draining finished: every job is done and reported. The shell may close the link (1000).
        case drained
    }

    /// How an exec runner ended, as the shell reports it.
    public enum ExecResult: Sendable, Equatable {
        case output(String)
        case failed(code: ErrorCode, message: String, retryable: Bool)
    }

    struct Job {
        var assign: CoordinatorToBackend.Assign
        var startedAt: CoreInstant?
        var endsAt: CoreInstant?
        var nextProgress: CoreInstant?
        /// Set while the job's model loads before it can start.
        var loadingModelUntil: CoreInstant?
        /// The final message, kept until a `welcome` shows whether it is still wanted.
        var final: BackendToCoordinator?
        /// The coordinator canceled it and it is stopping (exec process being killed, server
        /// prompt being interrupted): it keeps its slot until `failed` `canceled` is sent.
        var canceling = false
    }

    public let spec: WorkerSpec
    public private(set) var incarnation: Incarnation
    public private(set) var revision: UInt64 = 0
    public private(set) var state: BackendState
    public private(set) var loadedModels: Set<String> = []
    /// What the worker announces; the spec's for simulated and exec workers, the server's for
    /// an external one.
    public private(set) var features: [String]
    public private(set) var models: [String]
    public private(set) var nodes: [String] = []
    public private(set) var devices: [DeviceTelemetry] = []
    /// Why the worker is in its state (external runner: what is wrong with the server).
    public private(set) var stateMessage: String?
    /// True between `welcome` and the link going down.
    public private(set) var welcomed = false
    public private(set) var backendID: BackendID?

    /// Assigned jobs, by job id: queued (not started), running, or finished with a final message
    /// not yet delivered.
    var jobs: [JobID: Job] = [:]
    /// Final messages sent since the last `welcome`, the newest `keptFinals` of them: a
    /// coordinator that restarts before it stored such an end lists the job in its next
    /// `welcome` (or takes it back through `hello.jobs`), and the message goes again instead of
    /// the job running again (Protocol/README.md 6.6).
    var sentFinals: [JobID: (lease: Lease, attempt: Int, message: BackendToCoordinator)] = [:]
    var sentOrder = Deque<JobID>()
    static let keptFinals = 1024
    var queue = Deque<JobID>()
    var running = 0
    var readyAt: CoreInstant?
    var modelLoads: [String: (until: CoreInstant, requests: [String?])] = [:]
    var draining = false
    var drainReported = false
    /// The deadline of a model load that ends on a report, not on a timer.
    static let never = CoreInstant(nanoseconds: .max)
    /// External runner: when each model load began.
    var externalLoadStarted: [String: CoreInstant] = [:]
    var random: SplitMix64
    /// Wall-clock milliseconds at `CoreInstant.zero`, for new incarnations.
    let epochMs: UInt64

    /// - Parameters:
    ///   - incarnation: the process start time in ms since the Unix epoch.
    ///   - epochMs: wall-clock ms at instant zero of the clock the caller drives this engine with.
    ///   - seed: seeds the simulated failure draws, so tests are repeatable.
    public init(spec: WorkerSpec, incarnation: Incarnation, epochMs: UInt64, seed: UInt64 = 0x5eed, at now: CoreInstant) {
        self.spec = spec
        self.incarnation = incarnation
        self.epochMs = epochMs
        random = SplitMix64(seed: seed ^ incarnation.rawValue)
        features = spec.features
        models = spec.models
        if spec.runner == .external {
            state = .loading
        } else if spec.startupDelay > .zero {
            state = .loading
            readyAt = now + spec.startupDelay
        } else {
            state = .ready
        }
        revision = 1
    }

    // MARK: - Link

    /// The `hello` to send when a link opens, listing the jobs held from earlier links (so a
    /// coordinator that restarted before it stored one of these bindings takes it back).
    public func hello(token: String, software: String) -> BackendToCoordinator {
        var held = jobs.values.map { Wire.HeldJob(job: $0.assign.job, lease: $0.assign.lease, attempt: $0.assign.attempt) }
        for (id, f) in sentFinals where jobs[id] == nil { held.append(Wire.HeldJob(job: id, lease: f.lease, attempt: f.attempt)) }
        return .hello(
            .init(
                name: spec.name, token: token, incarnation: incarnation, slots: spec.slots, software: software,
                jobs: held.sorted { $0.job < $1.job }))
    }

    /// The current full snapshot.
    public var snapshot: CapabilitySnapshot {
        CapabilitySnapshot(
            version: version, state: state, features: features, modelsAvailable: models,
            modelsLoaded: Array(loadedModels), slots: spec.slots, speed: spec.announcesEstimates ? spec.speed : nil, nodes: nodes,
            devices: devices, message: stateMessage, jobSeconds: announcedJobSeconds,
            modelLoadSeconds: spec.simulatesModelLoads && spec.announcesEstimates ? Double(spec.modelLoadTime.milliseconds) / 1000 : nil)
    }

    /// Simulated work knows how long it takes: each kind it was given a duration for (not
    /// `default`), at this backend's speed. Real runners announce nothing.
    private var announcedJobSeconds: [KindSeconds] {
        guard spec.runner == .simulated, spec.announcesEstimates else { return [] }
        return spec.jobDurations.keys.filter { $0 != "default" }.sorted().compactMap { kind in
            let seconds = Double(spec.duration(kind: kind).milliseconds) / 1000
            return seconds > 0 && seconds <= ProtocolLimits.maxAnnouncedSeconds ? KindSeconds(kind: kind, seconds: seconds) : nil
        }
    }

    public var version: CapabilityVersion { CapabilityVersion(incarnation: incarnation, revision: revision) }

    /// The link went down: keep running, keep final messages until the next `welcome`.
    public mutating func linkDown() {
        welcomed = false
    }

    /// A message from the coordinator.
    public mutating func receive(_ message: CoordinatorToBackend, at now: CoreInstant) -> [Action] {
        var out: [Action] = []
        switch message {
        case .welcome(let w):
            backendID = w.backend
            welcomed = true
            if let known = w.known, known > version { takeNewIncarnation(above: known, at: now) }
            reconcile(w.bindings, out: &out)
            if w.known != version { out.append(.send(.capabilities(snapshot))) }
        case .capabilitiesAck(let ack):
            if ack.version > version {
                takeNewIncarnation(above: ack.version, at: now)
                out.append(.send(.capabilities(snapshot)))
            }
        case .sync(let s):
            if s.known != version { out.append(.send(.capabilities(snapshot))) }
        case .assign(let a):
            accept(a, at: now, out: &out)
        case .cancel(let c):
            cancel(c.job, lease: c.lease, at: now, out: &out)
        case .revoke(let r):
            drop(r.job, lease: r.lease, out: &out)
        case .staleLease(let s):
            drop(s.job, lease: s.lease, out: &out)
        case .loadModel(let l):
            loadModel(l.model, requestID: l.id, at: now, out: &out)
        case .drain:
            beginDrain(out: &out)
        case .error, .goodbye:
            break
        }
        startQueued(at: now, out: &out)
        checkDrained(out: &out)
        return out
    }

    /// Stop taking work, finish what is here, then report `.drained`.
    public mutating func drain() -> [Action] {
        var out: [Action] = []
        beginDrain(out: &out)
        checkDrained(out: &out)
        return out
    }

    // MARK: - Time

    /// The earliest instant at which `tick` has something to do.
    public var nextDeadline: CoreInstant? {
        var next = readyAt
        func consider(_ t: CoreInstant?) {
            if let t, next.map({ t < $0 }) ?? true { next = t }
        }
        for job in jobs.values where job.final == nil {
            consider(job.endsAt)
            consider(job.nextProgress)
            consider(job.loadingModelUntil)
        }
        for load in modelLoads.values where load.until != WorkerEngine.never { consider(load.until) }
        return next
    }

    /// Ends a simulated start-up delay now (`muster agent` on SIGUSR1): the engine announces
    /// `ready` as if its loading had just finished. Nothing happens once it has.
    public mutating func finishLoading(at now: CoreInstant) -> [Action] {
        guard readyAt != nil else { return [] }
        readyAt = now
        return tick(at: now)
    }

    public mutating func tick(at now: CoreInstant) -> [Action] {
        var out: [Action] = []
        if let readyAt, readyAt <= now {
            self.readyAt = nil
            if !draining { changeState(.ready, out: &out) }
        }
        for (model, load) in modelLoads where load.until <= now {
            modelLoads[model] = nil
            loadedModels.insert(model)
            announce(out: &out)
            for id in load.requests {
                out.append(.send(.loadModelResult(.init(id: id, model: model, ok: true, durationMs: spec.modelLoadTime.milliseconds))))
            }
        }
        for id in jobs.keys.sorted() {
            guard var job = jobs[id], job.final == nil, job.startedAt != nil else { continue }
            let lease = job.assign.lease
            if let until = job.loadingModelUntil {
                guard until <= now else { continue }
                job.loadingModelUntil = nil
                if let model = job.assign.model, !loadedModels.contains(model) {
                    loadedModels.insert(model)
                    announce(out: &out)
                }
                jobs[id] = job
                begin(id, at: now, out: &out)
                continue
            }
            if let ends = job.endsAt, ends <= now {
                let fails = spec.failureRate > 0 && Double.random(in: 0..<1, using: &random) < spec.failureRate
                if fails {
                    finish(id, .failed(.init(job: id, lease: lease, code: .simulatedFailure,
                        message: "\(spec.name) failed the job (simulated, failure rate \(spec.failureRate))", retryable: true)), out: &out)
                } else {
                    let seconds = Double((ends - job.startedAt!).milliseconds) / 1000
                    let result = #"{"backend":"\#(jsonEscaped(spec.name))","kind":"\#(jsonEscaped(job.assign.kind))","seconds":\#(seconds)}"#
                    finish(id, .completed(.init(job: id, lease: lease, result: RawJSON(unchecked: result))), out: &out)
                }
            } else if let p = job.nextProgress, p <= now, let start = job.startedAt, let ends = job.endsAt {
                let total = Double((ends - start).milliseconds)
                let fraction = total > 0 ? min(0.99, Double((now - start).milliseconds) / total) : 0
                job.nextProgress = now + spec.progressInterval
                jobs[id] = job
                // Simulated work advances evenly: the fraction is the share of its time.
                if welcomed { out.append(.send(.progress(.init(job: id, lease: lease, fraction: fraction, timed: true)))) }
            }
        }
        startQueued(at: now, out: &out)
        checkDrained(out: &out)
        return out
    }

    /// The exec runner of a job ended (external runner: the server finished the job).
    public mutating func execFinished(job id: JobID, lease: Lease, result: ExecResult, limits: ProtocolLimits = .default, at now: CoreInstant) -> [Action] {
        guard let job = jobs[id], job.assign.lease == lease, job.final == nil else { return [] }
        var out: [Action] = []
        if job.canceling {
            // Whatever it ended with, it ended: that is the confirmation the coordinator waits for.
            confirmCanceled(id, out: &out)
            startQueued(at: now, out: &out)
            checkDrained(out: &out)
            return out
        }
        switch result {
        case .output(let text):
            let trimmed = text.trimmingWhitespace()
            do throws(ProtocolError) {
                let raw = try RawJSON(validating: trimmed.isEmpty ? "null" : trimmed, limits: limits)
                if raw.text.utf8.count > limits.maxResultBytes {
                    finish(id, .failed(.init(job: id, lease: lease, code: .limitExceeded,
                        message: "result is \(raw.text.utf8.count) bytes, over the \(limits.maxResultBytes)-byte limit", retryable: false)), out: &out)
                } else {
                    finish(id, .completed(.init(job: id, lease: lease, result: raw)), out: &out)
                }
            } catch {
                finish(id, .failed(.init(job: id, lease: lease, code: .invalidResult,
                    message: "the command's stdout is not JSON: \(error.reason)", retryable: false)), out: &out)
            }
        case .failed(let code, let message, let retryable):
            finish(id, .failed(.init(job: id, lease: lease, code: code, message: message, retryable: retryable)), out: &out)
        }
        startQueued(at: now, out: &out)
        checkDrained(out: &out)
        return out
    }

    // MARK: - External runner

    /// The server began running the job.
    public mutating func externalStarted(job id: JobID, lease: Lease, at now: CoreInstant) -> [Action] {
        guard var job = jobs[id], job.assign.lease == lease, job.final == nil, job.startedAt == nil, !job.canceling
        else { return [] }
        job.startedAt = now
        jobs[id] = job
        running += 1
        return welcomed ? [.send(.started(.init(job: id, lease: lease)))] : []
    }

    /// A job its server still holds from before this process started (a local ComfyUI backend
    /// after the coordinator restarted under the same incarnation): held as if assigned, under
    /// its lease, without running it again; the runner reports its start and end. The next
    /// `welcome` keeps it if it lists the binding, and drops it otherwise.
    public mutating func adopt(_ a: CoordinatorToBackend.Assign) {
        guard spec.runner == .external, jobs[a.job] == nil else { return }
        jobs[a.job] = Job(assign: a)
    }

    /// The server confirmed that a job canceled by the coordinator stopped (its prompt was
    /// interrupted or deleted from the queue): the cancel is confirmed with `failed` `canceled`.
    public mutating func externalStopped(job id: JobID, lease: Lease, at now: CoreInstant) -> [Action] {
        guard let job = jobs[id], job.assign.lease == lease, job.final == nil, job.canceling else { return [] }
        var out: [Action] = []
        confirmCanceled(id, out: &out)
        checkDrained(out: &out)
        return out
    }

    /// Canceled jobs whose stop the server has not confirmed yet (a new prompt waits for them).
    public var externalStopping: Int { jobs.values.count { $0.canceling && $0.final == nil } }

    /// The server reported progress (`fraction` 0-1).
    public mutating func externalProgress(job id: JobID, lease: Lease, fraction: Double, message: String?, at now: CoreInstant)
        -> [Action]
    {
        var out = externalStarted(job: id, lease: lease, at: now)  // progress implies started
        guard let job = jobs[id], job.assign.lease == lease, job.final == nil, !job.canceling, welcomed else { return out }
        out.append(.send(.progress(.init(job: id, lease: lease, fraction: min(1, max(0, fraction)), message: message))))
        return out
    }

    /// What the server can do now: announced when it differs from the current snapshot (a new
    /// revision). A draining worker stays `draining`.
    public mutating func serverCapabilities(
        state newState: BackendState, features: [String], nodes: [String], models: [String], loaded: Set<String>? = nil,
        devices: [DeviceTelemetry], message: String? = nil
    ) -> [Action] {
        let f = Array(Set(features)).sorted(), n = Array(Set(nodes)).sorted(), m = Array(Set(models)).sorted()
        let s = draining ? BackendState.draining : newState
        let l = loaded ?? loadedModels
        guard s != state || f != self.features || n != self.nodes || m != self.models || devices != self.devices
            || l != loadedModels || message != stateMessage
        else { return [] }
        stateMessage = message
        state = s
        self.features = f
        self.nodes = n
        self.models = m
        self.devices = devices
        loadedModels = l
        var out: [Action] = []
        announce(out: &out)
        return out
    }

    /// A model load the shell ran for `.loadModel` ended.
    public mutating func externalModelLoaded(_ model: String, ok: Bool, message: String, at now: CoreInstant) -> [Action] {
        guard let load = modelLoads.removeValue(forKey: model) else { return [] }
        let began = externalLoadStarted.removeValue(forKey: model) ?? now
        var out: [Action] = []
        if ok, !loadedModels.contains(model) {
            loadedModels.insert(model)
            announce(out: &out)
        }
        for id in load.requests {
            if ok {
                out.append(.send(.loadModelResult(.init(id: id, model: model, ok: true, durationMs: (now - began).milliseconds))))
            } else {
                out.append(.send(.loadModelResult(.init(id: id, model: model, ok: false,
                    error: Wire.ErrorBody(code: ErrorCode("model_load_failed"), message: message)))))
            }
        }
        return out
    }

    /// The server restarted (its queue and running prompt are gone): a new incarnation, every
    /// job forgotten (the coordinator requeues the jobs of the old incarnation when it sees the
    /// new one), `loading` until `serverCapabilities` says more.
    public mutating func serverRestarted(at now: CoreInstant) -> [Action] {
        incarnation = Incarnation(max(epochMs + UInt64(now.nanoseconds / 1_000_000), incarnation.rawValue + 1))
        revision = 0
        jobs = [:]
        queue.removeAll()
        running = 0
        modelLoads = [:]
        externalLoadStarted = [:]
        loadedModels = []
        if !draining { state = .loading }
        var out: [Action] = []
        announce(out: &out)
        checkDrained(out: &out)
        return out
    }

    /// Jobs handed to the server and not finished, with their leases (for the shell to match
    /// server messages).
    public var externalJobs: [(job: JobID, lease: Lease, started: Bool)] {
        jobs.values.filter { $0.final == nil }.map { ($0.assign.job, $0.assign.lease, $0.startedAt != nil) }
            .sorted { $0.job < $1.job }
    }

    // MARK: - Jobs

    private mutating func accept(_ a: CoordinatorToBackend.Assign, at now: CoreInstant, out: inout [Action]) {
        if let model = a.model, !models.contains(model), !loadedModels.contains(model) {
            out.append(.send(.failed(.init(job: a.job, lease: a.lease, code: .modelUnavailable,
                message: "\(spec.name) does not have model \(model)", retryable: true))))
            return
        }
        if let existing = jobs[a.job] {
            if existing.assign.lease >= a.lease { return }  // a duplicate or older assign
            drop(a.job, lease: existing.assign.lease, out: &out)
        }
        jobs[a.job] = Job(assign: a)
        if spec.runner == .external {
            out.append(.run(a))  // the server queues it; `started` waits for the server
        } else {
            queue.append(a.job)
        }
    }

    private mutating func startQueued(at now: CoreInstant, out: inout [Action]) {
        while running < spec.slots, let id = queue.popFirst() {
            guard var job = jobs[id], job.startedAt == nil else { continue }
            running += 1
            job.startedAt = now
            if welcomed { out.append(.send(.started(.init(job: id, lease: job.assign.lease)))) }
            if let model = job.assign.model, !loadedModels.contains(model), spec.simulatesModelLoads {
                // The agent's own (simulated) load, before the work or the command runs. A load
                // the coordinator asked for ahead (`load_model`) is waited for, not redone.
                job.loadingModelUntil = modelLoads[model].map(\.until) ?? now + spec.modelLoadTime
                jobs[id] = job
                continue
            }
            jobs[id] = job
            begin(id, at: now, out: &out)
        }
    }

    /// Starts the actual work of a job whose slot (and model) is ready.
    private mutating func begin(_ id: JobID, at now: CoreInstant, out: inout [Action]) {
        guard var job = jobs[id] else { return }
        switch spec.runner {
        case .simulated:
            job.startedAt = now
            job.endsAt = now + spec.duration(kind: job.assign.kind)
            job.nextProgress = now + spec.progressInterval
            jobs[id] = job
        case .exec:
            out.append(.startExec(job: id, lease: job.assign.lease, input: CoordinatorToBackend.assign(job.assign).encodedString()))
        case .external:
            break  // handed over in `accept`
        }
    }

    private mutating func finish(_ id: JobID, _ message: BackendToCoordinator, out: inout [Action]) {
        guard var job = jobs[id] else { return }
        if job.startedAt != nil { running -= 1 }
        if welcomed {
            jobs[id] = nil
            out.append(.send(message))
            keepSent(id, job.assign, message)
        } else {
            job.final = message
            job.endsAt = nil
            job.nextProgress = nil
            jobs[id] = job
        }
    }

    /// Keeps a final message sent on the link until the next `welcome` (at most `keptFinals`).
    private mutating func keepSent(_ id: JobID, _ assign: CoordinatorToBackend.Assign, _ message: BackendToCoordinator) {
        if sentFinals.updateValue((assign.lease, assign.attempt, message), forKey: id) == nil { sentOrder.append(id) }
        while sentOrder.count > Self.keptFinals, let oldest = sentOrder.popFirst() { sentFinals[oldest] = nil }
    }

    /// Drops a job the coordinator no longer wants under `lease` (cancel, revoke, stale lease).
    private mutating func drop(_ id: JobID, lease: Lease, out: inout [Action]) {
        guard let job = jobs[id], job.assign.lease == lease else { return }
        jobs[id] = nil
        if job.final == nil, job.startedAt != nil {
            running -= 1
            if case .exec = spec.runner, job.loadingModelUntil == nil { out.append(.killExec(job: id, lease: lease)) }
        }
        if job.final == nil, !job.canceling, spec.runner == .external {
            out.append(.stop(job: id, lease: lease, started: job.startedAt != nil, confirm: false))
        }
        if let i = queue.firstIndex(of: id) { queue.remove(at: i) }
    }

    /// The coordinator canceled a job (Protocol/README.md 6.4): stop it, and once it has stopped
    /// say so with `failed` `canceled`, so that the coordinator frees its slot. A job that is not
    /// running stops at once; an exec process stops when it exited; a server's job when the server
    /// confirms (`externalStopped`, or `execFinished` when it ended anyway).
    private mutating func cancel(_ id: JobID, lease: Lease, at now: CoreInstant, out: inout [Action]) {
        guard var job = jobs[id], job.assign.lease == lease, job.final == nil, !job.canceling else {
            drop(id, lease: lease, out: &out)
            return
        }
        if let i = queue.firstIndex(of: id) { queue.remove(at: i) }
        job.canceling = true
        job.endsAt = nil
        job.nextProgress = nil
        switch spec.runner {
        case .external:
            jobs[id] = job
            out.append(.stop(job: id, lease: lease, started: job.startedAt != nil, confirm: true))
        case .exec where job.startedAt != nil && job.loadingModelUntil == nil:
            jobs[id] = job
            out.append(.killExec(job: id, lease: lease))  // confirmed when the process exited
        case .exec, .simulated:
            jobs[id] = job
            confirmCanceled(id, out: &out)
        }
    }

    private mutating func confirmCanceled(_ id: JobID, out: inout [Action]) {
        guard let job = jobs[id] else { return }
        finish(id, .failed(.init(job: id, lease: job.assign.lease, code: .canceled,
            message: "\(spec.name) stopped the job: canceled by the coordinator", retryable: false)), out: &out)
    }

    /// After `welcome`: keep jobs bound under the same lease (resending what the coordinator may
    /// have missed), drop the rest, and report bindings this worker never got.
    private mutating func reconcile(_ bindings: [Wire.Binding], out: inout [Action]) {
        var wanted: [JobID: Lease] = [:]
        for b in bindings { wanted[b.job] = b.lease }
        let held = Set(jobs.keys)
        for id in jobs.keys.sorted() {
            let job = jobs[id]!
            guard wanted[id] == job.assign.lease else {
                drop(id, lease: job.assign.lease, out: &out)
                continue
            }
            if let final = job.final {
                jobs[id] = nil
                out.append(.send(final))
            } else if job.startedAt != nil {
                out.append(.send(.started(.init(job: id, lease: job.assign.lease))))
            }
        }
        for b in bindings.sorted(by: { $0.job < $1.job }) where !held.contains(b.job) {
            if let sent = sentFinals[b.job], sent.lease == b.lease {
                // Ended and said so, but the coordinator did not keep the end (it restarted before
                // storing it, or the message was lost with the link): say it again.
                out.append(.send(sent.message))
                continue
            }
            out.append(.send(.failed(.init(job: b.job, lease: b.lease, code: .unknownJob,
                message: "\(spec.name) does not hold this job (its assign was lost)", retryable: true))))
        }
        // Every end the coordinator still wanted went again; it has the others.
        sentFinals.removeAll()
        sentOrder.removeAll()
    }

    // MARK: - Capabilities

    private mutating func loadModel(_ model: String, requestID: String?, at now: CoreInstant, out: inout [Action]) {
        if loadedModels.contains(model) {
            out.append(.send(.loadModelResult(.init(id: requestID, model: model, ok: true, durationMs: 0))))
        } else if !models.contains(model) {
            out.append(.send(.loadModelResult(.init(id: requestID, model: model, ok: false,
                error: Wire.ErrorBody(code: .unknownModel, message: "\(spec.name) does not have model \(model)")))))
        } else if modelLoads[model] != nil {
            modelLoads[model]!.requests.append(requestID)
        } else if spec.runner == .external {
            modelLoads[model] = (WorkerEngine.never, [requestID])  // ends with externalModelLoaded
            externalLoadStarted[model] = now
            out.append(.loadModel(model))
        } else {
            modelLoads[model] = (now + spec.modelLoadTime, [requestID])
        }
    }

    private mutating func beginDrain(out: inout [Action]) {
        guard !draining else { return }
        draining = true
        readyAt = nil
        changeState(.draining, out: &out)
    }

    private mutating func checkDrained(out: inout [Action]) {
        guard draining, !drainReported, jobs.isEmpty else { return }
        drainReported = true
        out.append(.drained)
    }

    private mutating func changeState(_ new: BackendState, out: inout [Action]) {
        guard state != new else { return }
        state = new
        announce(out: &out)
    }

    /// Something in the snapshot changed: new revision, and tell the coordinator when linked.
    private mutating func announce(out: inout [Action]) {
        revision += 1
        if welcomed { out.append(.send(.capabilities(snapshot))) }
    }

    /// The coordinator holds a version newer than ours (our clock went backwards across a
    /// restart): take an incarnation above it and start over at revision 1.
    private mutating func takeNewIncarnation(above known: CapabilityVersion, at now: CoreInstant) {
        incarnation = Incarnation(max(epochMs + UInt64(now.nanoseconds / 1_000_000), known.incarnation.rawValue + 1))
        revision = 1
    }
}

extension Duration {
    /// Whole milliseconds (durations here are far from the limits).
    var milliseconds: UInt64 {
        let (s, atto) = components
        return UInt64(max(0, s)) * 1000 + UInt64(max(0, atto) / 1_000_000_000_000_000)
    }
}

extension String {
    func trimmingWhitespace() -> String {
        var s = Substring(self)
        while let f = s.first, f.isWhitespace { s.removeFirst() }
        while let l = s.last, l.isWhitespace { s.removeLast() }
        return String(s)
    }
}

/// Escapes text for a JSON string literal (names here are already restricted; be safe anyway).
func jsonEscaped(_ s: String) -> String {
    var out = ""
    appendJSONString(s, to: &out)
    return String(out.dropFirst().dropLast())
}

// The built-in workers' own failure codes: a backend's code travels as it is (Protocol/README.md
// section 5: the set is open, and `requeued`/`failed` keep the backend's code).
extension ErrorCode {
    /// A simulated worker drew a failure (its `failure_rate`); retryable.
    public static let simulatedFailure = ErrorCode("simulated_failure")
    /// An exec worker's command printed something that is not one JSON value.
    public static let invalidResult = ErrorCode("invalid_result")
    /// An `assign` named a model this worker does not have; retryable elsewhere.
    public static let modelUnavailable = ErrorCode("model_unavailable")
}
