// Bodies shared by the client subprotocol and the HTTP API.

extension Wire {
    /// A batch to submit: the body of `POST /v1/batches` and the members of `submit`.
    public struct BatchRequest: Hashable, Sendable, WireBody, WireMembers {
        /// Chosen by the client; a retry with the same key returns the original batch.
        public var batchKey: String?
        /// Default owner of the entries that name none.
        public var owner: String?
        public var jobs: [JobRequest]

        public init(batchKey: String? = nil, owner: String? = nil, jobs: [JobRequest]) {
            self.batchKey = batchKey
            self.owner = owner
            self.jobs = jobs
        }

        /// The number of jobs this batch makes.
        public var jobCount: Int { jobs.reduce(0) { $0 + $1.count } }

        static var blank: Self { Self(jobs: []) }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.string("batch_key", &batchKey, .key)
            try c.string("owner", &owner, .key)
            try c.list("jobs", &jobs, maxCount: ProtocolLimits.maxBatchEntries, optional: false)
            try c.decoded { o throws(ProtocolError) in
                if jobs.isEmpty { throw .invalid("jobs", "a batch needs at least one job") }
                let total = jobs.reduce(0) { $0 + $1.count }
                if total > o.doc.limits.maxBatchJobs {
                    throw .limit("jobs", "\(total) jobs exceed the limit of \(o.doc.limits.maxBatchJobs) per batch")
                }
            }
        }

        public static func decode(_ bytes: UnsafeBufferPointer<UInt8>, limits: ProtocolLimits) throws(ProtocolError)
            -> Self
        { try decodeBody(bytes, limits: limits) }
        public func encode() -> [UInt8] { encodeBody() }
    }

    /// One entry of a batch: `count` jobs with the same spec.
    public struct JobRequest: Hashable, Sendable, WireMembers {
        public var kind: String
        public var needs: [String]
        public var model: String?
        public var params: RawJSON
        public var count: Int
        public var priority: Int
        public var owner: String?
        /// The node classes of the ComfyUI workflow in `params.workflow` (section 11), derived
        /// when decoding; not a member on the wire.
        public var nodes: [String]

        public init(
            kind: String, needs: [String] = [], model: String? = nil, params: RawJSON = .emptyObject, count: Int = 1,
            priority: Int = 0, owner: String? = nil, nodes: [String] = []
        ) {
            self.kind = kind
            self.needs = needs
            self.model = model
            self.params = params
            self.count = count
            self.priority = priority
            self.owner = owner
            // Built in code rather than decoded: derive what the decoder would, so that both
            // forms of the same request are equal.
            if nodes.isEmpty, params.text.contains("\"workflow\"") {
                self.nodes = (try? WorkflowParams.nodeClasses(of: params)) ?? []
            } else {
                self.nodes = nodes
            }
        }

        /// The blank value the decoder fills in (no workflow to look for).
        private init(blankKind: Void) {
            kind = ""
            needs = []
            params = .emptyObject
            count = 1
            priority = 0
            nodes = []
        }

        /// The spec of each job; `defaultOwner` applies when neither entry nor batch names one.
        public func spec(batchOwner: String?, defaultOwner: String) -> JobSpec {
            JobSpec(
                kind: kind, needs: needs, model: model, params: params, priority: priority,
                owner: owner ?? batchOwner ?? defaultOwner, nodes: nodes)
        }

        static var blank: Self { Self(blankKind: ()) }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.string("kind", &kind, .feature)
            try c.names("needs", &needs, .feature, maxCount: ProtocolLimits.maxNeeds, optional: true)
            try c.string("model", &model, .model)
            try c.raw("params", &params, object: true, limit: .params, absent: .emptyObject, writesAbsent: false)
            try c.decoded { o throws(ProtocolError) in
                // `nodes` is derived from `params.workflow` (section 11), not a member on the wire.
                guard let p = o.find("params") else { return }
                do throws(ProtocolError) {
                    nodes = try WorkflowParams.nodeClasses(o.doc, params: p)
                } catch {
                    var e = error
                    e.prepend(key: "params")
                    throw e
                }
            }
            try c.int("count", &count, default: 1, in: 1...Int64(ProtocolLimits.maxCount))
            try c.int("priority", &priority, default: 0, in: ProtocolLimits.priorityRange64)
            try c.string("owner", &owner, .key)
        }
    }

    /// The answer to a submitted batch (`accepted`; `POST /v1/batches` 201, or 200 when duplicate).
    public struct Accepted: Hashable, Sendable, WireMessage, WireBody, WireMembers {
        static let wireType: StaticString = "accepted"
        public var id: String?
        public var batch: BatchID
        /// In submission order, `count` copies expanded.
        public var jobs: [JobID]
        /// True when the `batch_key` was seen before: this is the original batch, nothing new was queued.
        public var duplicate: Bool

        public init(id: String? = nil, batch: BatchID, jobs: [JobID], duplicate: Bool = false) {
            self.id = id
            self.batch = batch
            self.jobs = jobs
            self.duplicate = duplicate
        }

        static var blank: Self { Self(batch: BatchID(0), jobs: []) }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.string("id", &id, .key)
            try c.required("batch", &batch)
            try c.required("jobs", &jobs)
            try c.required("duplicate", &duplicate)
        }

        public static func decode(_ bytes: UnsafeBufferPointer<UInt8>, limits: ProtocolLimits) throws(ProtocolError)
            -> Self
        { try decodeBody(bytes, limits: limits) }
        public func encode() -> [UInt8] { encodeBody() }
    }

    /// Load a model now (`load_model` on the client link; `POST /v1/models/load`): on one backend,
    /// or on every eligible one and on every one that joins later.
    public struct LoadModelRequest: Hashable, Sendable, WireMessage, WireBody, WireMembers {
        static let wireType: StaticString = "load_model"
        public var id: String?
        public var model: String
        public var backend: BackendID?

        public init(id: String? = nil, model: String, backend: BackendID? = nil) {
            self.id = id
            self.model = model
            self.backend = backend
        }

        static var blank: Self { Self(model: "") }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.string("id", &id, .key)
            try c.string("model", &model, .model)
            try c.optional("backend", &backend)
        }

        public static func decode(_ bytes: UnsafeBufferPointer<UInt8>, limits: ProtocolLimits) throws(ProtocolError)
            -> Self
        { try decodeBody(bytes, limits: limits) }
        public func encode() -> [UInt8] { encodeBody() }
    }

    /// The answer to a load-model command: the backends told to load it now (HTTP 202).
    public struct ModelsLoading: Hashable, Sendable, WireMessage, WireBody, WireMembers {
        static let wireType: StaticString = "models_loading"
        public var id: String?
        public var model: String
        public var backends: [BackendID]

        public init(id: String? = nil, model: String, backends: [BackendID]) {
            self.id = id
            self.model = model
            self.backends = backends
        }

        static var blank: Self { Self(model: "", backends: []) }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.string("id", &id, .key)
            try c.string("model", &model, .model)
            try c.required("backends", &backends)
        }

        public static func decode(_ bytes: UnsafeBufferPointer<UInt8>, limits: ProtocolLimits) throws(ProtocolError)
            -> Self
        { try decodeBody(bytes, limits: limits) }
        public func encode() -> [UInt8] { encodeBody() }
    }

    /// The link between coordinator and backend, as the coordinator sees it.
    public enum LinkState: String, Hashable, Sendable, CaseIterable, WireEnum {
        case up
        /// Lost, within the grace period: keeps its capabilities, gets no new work.
        case suspect
        case down
    }

    /// One backend as `GET /v1/backends` and `status_report` show it.
    public struct BackendInfo: Hashable, Sendable, WireMembers {
        public var id: BackendID
        public var name: String
        public var local: Bool
        public var link: LinkState
        /// The last applied snapshot; nil before the first announcement.
        public var capabilities: CapabilitySnapshot?
        /// Jobs bound to it (running or waiting on it).
        public var inFlight: Int
        public var running: Int
        /// slots + overqueue.
        public var capacity: Int
        /// Milliseconds since the Unix epoch.
        public var registeredMs: UInt64
        public var firstAnnouncedMs: UInt64?
        public var lastSeenMs: UInt64?
        /// Gets no new work until then after a failure.
        public var inhibitedUntilMs: UInt64?
        /// What routing expects of it.
        public var estimates: Estimates?

        public init(
            id: BackendID, name: String, local: Bool, link: LinkState, capabilities: CapabilitySnapshot?,
            inFlight: Int, running: Int, capacity: Int, registeredMs: UInt64, firstAnnouncedMs: UInt64? = nil,
            lastSeenMs: UInt64? = nil, inhibitedUntilMs: UInt64? = nil, estimates: Estimates? = nil
        ) {
            self.id = id
            self.name = name
            self.local = local
            self.link = link
            self.capabilities = capabilities
            self.inFlight = inFlight
            self.running = running
            self.capacity = capacity
            self.registeredMs = registeredMs
            self.firstAnnouncedMs = firstAnnouncedMs
            self.lastSeenMs = lastSeenMs
            self.inhibitedUntilMs = inhibitedUntilMs
            self.estimates = estimates
        }

        static var blank: Self {
            Self(
                id: BackendID(1), name: "", local: false, link: .down, capabilities: nil, inFlight: 0, running: 0,
                capacity: 0, registeredMs: 0)
        }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.required("id", &id)
            try c.string("name", &name, .name)
            try c.required("local", &local)
            try c.required("link", &link)
            try c.optional("capabilities", &capabilities)
            try c.object("load") { c throws(ProtocolError) in
                try c.int("in_flight", &inFlight, in: 0...Int64(Int32.max))
                try c.int("running", &running, in: 0...Int64(Int32.max))
                try c.int("capacity", &capacity, in: 0...Int64(Int32.max))
            }
            try c.required("registered_ms", &registeredMs)
            try c.optional("first_announced_ms", &firstAnnouncedMs)
            try c.optional("last_seen_ms", &lastSeenMs)
            try c.optional("inhibited_until_ms", &inhibitedUntilMs)
            try c.optional("estimates", &estimates)
        }

    }

    /// `GET /v1/backends`.
    public struct BackendList: Hashable, Sendable, WireBody, WireMembers {
        public var backends: [BackendInfo]
        public init(backends: [BackendInfo]) { self.backends = backends }

        static var blank: Self { Self(backends: []) }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.list("backends", &backends, maxCount: ProtocolLimits.maxListLength, optional: false)
        }

        public static func decode(_ bytes: UnsafeBufferPointer<UInt8>, limits: ProtocolLimits) throws(ProtocolError)
            -> Self
        { try decodeBody(bytes, limits: limits) }
        public func encode() -> [UInt8] { encodeBody() }
    }

    /// A backend the warm-up gate waits for.
    public struct WaitingBackend: Hashable, Sendable, WireMembers {
        public var id: BackendID
        public var name: String
        /// Open set: `not_connected`, `not_announced`, `starting`, `loading`.
        public var reason: String

        public init(id: BackendID, name: String, reason: String) {
            self.id = id
            self.name = name
            self.reason = reason
        }

        static var blank: Self { Self(id: BackendID(1), name: "", reason: "") }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.required("id", &id)
            try c.string("name", &name, .name)
            try c.string("reason", &reason, .code)
        }
    }

    /// Why jobs are held by the warm-up gate: the features (and model) they need and the backends
    /// that might turn out eligible but have not announced yet.
    public struct GateWait: Hashable, Sendable, WireMembers {
        public var features: [String]
        public var model: String?
        public var backends: [WaitingBackend]
        /// When the gate window ends at the latest (ms since the Unix epoch).
        public var untilMs: UInt64?
        /// In readiness reports: how many jobs wait for this.
        public var jobs: Int?

        public init(
            features: [String], model: String? = nil, backends: [WaitingBackend], untilMs: UInt64? = nil,
            jobs: Int? = nil
        ) {
            self.features = features
            self.model = model
            self.backends = backends
            self.untilMs = untilMs
            self.jobs = jobs
        }

        static var blank: Self { Self(features: [], backends: []) }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.names("features", &features, .feature, maxCount: ProtocolLimits.maxNeeds, optional: false)
            try c.string("model", &model, .model)
            try c.list("backends", &backends, maxCount: ProtocolLimits.maxListLength, optional: false)
            try c.optional("until_ms", &untilMs)
            try c.int("jobs", &jobs, in: 0...Int64(Int32.max))
        }
    }

    /// In readiness reports, while the pause after a restore binds nothing: when it ends at the
    /// latest, and the remote backends it still waits for (they were up when the coordinator
    /// stopped and have not linked again; `reason` `not_connected`).
    public struct Reclaim: Hashable, Sendable, WireMembers {
        /// When the pause ends at the latest (ms since the Unix epoch).
        public var untilMs: UInt64
        public var backends: [WaitingBackend]

        public init(untilMs: UInt64, backends: [WaitingBackend]) {
            self.untilMs = untilMs
            self.backends = backends
        }

        static var blank: Self { Self(untilMs: 0, backends: []) }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.required("until_ms", &untilMs)
            try c.list("backends", &backends, maxCount: ProtocolLimits.maxListLength, optional: false)
        }
    }

    /// `GET /readyz` (200 when ready, 503 otherwise) and the `readiness` of `status_report`.
    public struct Readiness: Hashable, Sendable, WireBody, WireMembers {
        public var ready: Bool
        /// Open set, empty when ready: `no_ready_backend`, `jobs_held`, `reclaiming`, `shutting_down`,
        /// `store_unavailable`, `standby`.
        public var reasons: [String]
        public var readyBackends: Int
        public var heldJobs: Int
        /// One entry per distinct need the gate holds jobs for.
        public var waiting: [GateWait]
        /// On a standby (reason `standby`): the coordinator that leads, when one is known.
        public var leader: CoordinatorRef?
        /// With reason `reclaiming`: the pause after a restore, and whom it waits for.
        public var reclaim: Reclaim?

        public init(
            ready: Bool, reasons: [String], readyBackends: Int, heldJobs: Int, waiting: [GateWait],
            leader: CoordinatorRef? = nil, reclaim: Reclaim? = nil
        ) {
            self.ready = ready
            self.reasons = reasons
            self.readyBackends = readyBackends
            self.heldJobs = heldJobs
            self.waiting = waiting
            self.leader = leader
            self.reclaim = reclaim
        }

        static var blank: Self { Self(ready: false, reasons: [], readyBackends: 0, heldJobs: 0, waiting: []) }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.required("ready", &ready)
            try c.names("reasons", &reasons, .code, maxCount: 16, optional: false)
            try c.int("ready_backends", &readyBackends, in: 0...Int64(Int32.max))
            try c.int("held_jobs", &heldJobs, in: 0...Int64(Int32.max))
            try c.list("waiting", &waiting, maxCount: ProtocolLimits.maxListLength, optional: false)
            try c.optional("leader", &leader)
            try c.optional("reclaim", &reclaim)
        }

        public static func decode(_ bytes: UnsafeBufferPointer<UInt8>, limits: ProtocolLimits) throws(ProtocolError)
            -> Self
        { try decodeBody(bytes, limits: limits) }
        public func encode() -> [UInt8] { encodeBody() }
    }

    /// A coordinator of a pair sharing one database, as a standby names its leader (readiness,
    /// and `details.leader` of the `not_leader` error): its node name and the URL to dial.
    public struct CoordinatorRef: Hashable, Sendable, WireMembers {
        public var name: String
        /// `ws://HOST:PORT` or `wss://HOST:PORT` (its `ha.advertise`).
        public var address: String

        public init(name: String, address: String) {
            self.name = name
            self.address = address
        }

        static var blank: Self { Self(name: "", address: "") }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.string("name", &name, .key)
            try c.string("address", &address, .key)
        }
    }

    /// `details` of a `not_leader` error: the leader to dial instead, when one is known.
    public struct NotLeader: Hashable, Sendable, WireBody, WireMembers {
        public var leader: CoordinatorRef?

        public init(leader: CoordinatorRef?) { self.leader = leader }

        static var blank: Self { Self(leader: nil) }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.optional("leader", &leader)
        }

        public static func decode(_ bytes: UnsafeBufferPointer<UInt8>, limits: ProtocolLimits) throws(ProtocolError)
            -> Self
        { try decodeBody(bytes, limits: limits) }
        public func encode() -> [UInt8] { encodeBody() }

        /// As an error's `details`.
        public var details: RawJSON { RawJSON(unchecked: String(decoding: encode(), as: UTF8.self)) }

        /// The leader named by an error's `details`, if it names one.
        public static func leader(in details: RawJSON?) -> CoordinatorRef? {
            guard let details else { return nil }
            let bytes = Array(details.text.utf8)
            return bytes.withUnsafeBufferPointer { try? decode($0, limits: .default) }?.leader
        }
    }

    /// Jobs not yet final, by state, and queued jobs by priority.
    public struct QueueSummary: Hashable, Sendable, WireMembers {
        public var queued: Int
        public var gated: Int
        public var bound: Int
        public var running: Int
        /// Queued and gated jobs per priority, highest priority first.
        public var byPriority: [PriorityDepth]

        public init(queued: Int, gated: Int, bound: Int, running: Int, byPriority: [PriorityDepth]) {
            self.queued = queued
            self.gated = gated
            self.bound = bound
            self.running = running
            self.byPriority = byPriority
        }

        /// How many jobs wait at one priority.
        public struct PriorityDepth: Hashable, Sendable, WireMembers {
            public var priority: Int
            public var jobs: Int
            public init(priority: Int, jobs: Int) {
                self.priority = priority
                self.jobs = jobs
            }

            static var blank: Self { Self(priority: 0, jobs: 0) }

            @inline(__always)
            mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
                try c.int("priority", &priority, in: ProtocolLimits.priorityRange64)
                try c.int("jobs", &jobs, in: 0...Int64(Int32.max))
            }
        }

        static var blank: Self { Self(queued: 0, gated: 0, bound: 0, running: 0, byPriority: []) }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.int("queued", &queued, in: 0...Int64(Int32.max))
            try c.int("gated", &gated, in: 0...Int64(Int32.max))
            try c.int("bound", &bound, in: 0...Int64(Int32.max))
            try c.int("running", &running, in: 0...Int64(Int32.max))
            try c.list("by_priority", &byPriority, maxCount: ProtocolLimits.priorityRange.count, optional: false)
        }
    }

    /// One attempt of a job, in its history.
    public struct AttemptRecord: Hashable, Sendable, WireMembers {
        public var attempt: Int
        public var backend: BackendID
        public var outcome: AttemptOutcome
        public var error: ErrorBody?
        public var boundMs: UInt64
        public var endedMs: UInt64?

        public init(
            attempt: Int, backend: BackendID, outcome: AttemptOutcome, error: ErrorBody? = nil, boundMs: UInt64,
            endedMs: UInt64? = nil
        ) {
            self.attempt = attempt
            self.backend = backend
            self.outcome = outcome
            self.error = error
            self.boundMs = boundMs
            self.endedMs = endedMs
        }

        static var blank: Self { Self(attempt: 1, backend: BackendID(1), outcome: .bound, boundMs: 0) }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.int("attempt", &attempt, in: 1...1000)
            try c.required("backend", &backend)
            try c.required("outcome", &outcome)
            try c.optional("error", &error)
            try c.required("bound_ms", &boundMs)
            try c.optional("ended_ms", &endedMs)
        }
    }

    /// `GET /v1/jobs/{id}`: everything about one job.
    public struct JobInfo: Hashable, Sendable, WireBody, WireMembers {
        public var job: JobID
        public var batch: BatchID
        public var state: JobState
        public var spec: JobSpec
        public var attempt: Int
        public var backend: BackendID?
        public var progress: Double?
        public var result: RawJSON?
        public var error: ErrorBody?
        public var waiting: GateWait?
        public var createdMs: UInt64
        public var startedMs: UInt64?
        public var finishedMs: UInt64?
        public var history: [AttemptRecord]

        public init(
            job: JobID, batch: BatchID, state: JobState, spec: JobSpec, attempt: Int, backend: BackendID? = nil,
            progress: Double? = nil, result: RawJSON? = nil, error: ErrorBody? = nil, waiting: GateWait? = nil,
            createdMs: UInt64, startedMs: UInt64? = nil, finishedMs: UInt64? = nil, history: [AttemptRecord] = []
        ) {
            self.job = job
            self.batch = batch
            self.state = state
            self.spec = spec
            self.attempt = attempt
            self.backend = backend
            self.progress = progress
            self.result = result
            self.error = error
            self.waiting = waiting
            self.createdMs = createdMs
            self.startedMs = startedMs
            self.finishedMs = finishedMs
            self.history = history
        }

        static var blank: Self {
            Self(job: JobID(0), batch: BatchID(0), state: .queued, spec: JobSpec(kind: ""), attempt: 0, createdMs: 0)
        }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.required("job", &job)
            try c.required("batch", &batch)
            try c.required("state", &state)
            try c.string("kind", &spec.kind, .feature)
            try c.names("needs", &spec.needs, .feature, maxCount: ProtocolLimits.maxNeeds, optional: false)
            try c.string("model", &spec.model, .model)
            try c.raw("params", &spec.params, object: true, limit: .params, absent: .emptyObject, writesAbsent: true)
            try c.int("priority", &spec.priority, in: ProtocolLimits.priorityRange64)
            try c.string("owner", &spec.owner, .key)
            try c.decoded { _ throws(ProtocolError) in
                spec = JobSpec(
                    kind: spec.kind, needs: spec.needs, model: spec.model, params: spec.params, priority: spec.priority,
                    owner: spec.owner)
            }
            try c.int("attempt", &attempt, in: 0...1000)
            try c.optional("backend", &backend)
            try c.optional("progress", &progress)
            try c.check("progress", progress.map { (0...1).contains($0) } ?? true, "must lie in 0...1")
            try c.raw("result", &result, object: false, limit: .result)
            try c.optional("error", &error)
            try c.optional("waiting", &waiting)
            try c.required("created_ms", &createdMs)
            try c.optional("started_ms", &startedMs)
            try c.optional("finished_ms", &finishedMs)
            try c.list("history", &history, maxCount: 1000, optional: false)
        }

        public static func decode(_ bytes: UnsafeBufferPointer<UInt8>, limits: ProtocolLimits) throws(ProtocolError)
            -> Self
        { try decodeBody(bytes, limits: limits) }
        public func encode() -> [UInt8] { encodeBody() }
    }

    /// `GET /v1/batches/{id}`.
    public struct BatchInfo: Hashable, Sendable, WireBody, WireMembers {
        public var batch: BatchID
        public var batchKey: String?
        public var createdMs: UInt64
        /// Every job is final.
        public var done: Bool
        public var jobs: [JobInfo]

        public init(batch: BatchID, batchKey: String? = nil, createdMs: UInt64, done: Bool, jobs: [JobInfo]) {
            self.batch = batch
            self.batchKey = batchKey
            self.createdMs = createdMs
            self.done = done
            self.jobs = jobs
        }

        static var blank: Self { Self(batch: BatchID(0), createdMs: 0, done: false, jobs: []) }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.required("batch", &batch)
            try c.string("batch_key", &batchKey, .key)
            try c.required("created_ms", &createdMs)
            try c.required("done", &done)
            try c.list("jobs", &jobs, maxCount: ProtocolLimits.maxListLength, optional: false)
        }

        public static func decode(_ bytes: UnsafeBufferPointer<UInt8>, limits: ProtocolLimits) throws(ProtocolError)
            -> Self
        { try decodeBody(bytes, limits: limits) }
        public func encode() -> [UInt8] { encodeBody() }
    }

    /// `DELETE /v1/jobs/{id}`: the job's state after the request; `canceled` is false when it was
    /// already final (the request is idempotent).
    public struct CancelResult: Hashable, Sendable, WireBody, WireMembers {
        public var job: JobID
        public var state: JobState
        public var canceled: Bool

        public init(job: JobID, state: JobState, canceled: Bool) {
            self.job = job
            self.state = state
            self.canceled = canceled
        }

        static var blank: Self { Self(job: JobID(0), state: .queued, canceled: false) }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.required("job", &job)
            try c.required("state", &state)
            try c.required("canceled", &canceled)
        }

        public static func decode(_ bytes: UnsafeBufferPointer<UInt8>, limits: ProtocolLimits) throws(ProtocolError)
            -> Self
        { try decodeBody(bytes, limits: limits) }
        public func encode() -> [UInt8] { encodeBody() }
    }

    /// `GET /healthz`: the process serves.
    public struct Health: Hashable, Sendable, WireBody, WireMembers {
        /// Always `ok`.
        public var status: String
        public var version: String
        public var uptimeMs: UInt64

        public init(version: String, uptimeMs: UInt64) {
            self.status = "ok"
            self.version = version
            self.uptimeMs = uptimeMs
        }

        static var blank: Self { Self(version: "", uptimeMs: 0) }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.string("status", &status, .code)
            try c.string("version", &version, .key)
            try c.required("uptime_ms", &uptimeMs)
        }

        public static func decode(_ bytes: UnsafeBufferPointer<UInt8>, limits: ProtocolLimits) throws(ProtocolError)
            -> Self
        { try decodeBody(bytes, limits: limits) }
        public func encode() -> [UInt8] { encodeBody() }
    }
}

extension Wire {
    /// What the coordinator's router expects of one backend: its speed and, per job class, the
    /// expected seconds of one job there.
    public struct Estimates: Hashable, Sendable, WireMembers {
        /// Relative to 1.0 (2.0: the same job in half the time).
        public var speed: Double
        /// `measured`, `configured`, `announced` or `assumed` (nothing known: 1.0).
        public var speedSource: String
        /// Its measured model load time (moving average), if it loaded one.
        public var modelLoadSeconds: Double?
        public var jobs: [JobEstimate]

        public init(speed: Double, speedSource: String, modelLoadSeconds: Double? = nil, jobs: [JobEstimate] = []) {
            self.speed = speed
            self.speedSource = speedSource
            self.modelLoadSeconds = modelLoadSeconds
            self.jobs = jobs
        }

        static var blank: Self { Self(speed: 0, speedSource: "") }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.required("speed", &speed)
            try c.string("speed_source", &speedSource, .code)
            try c.optional("model_load_seconds", &modelLoadSeconds)
            try c.list("jobs", &jobs, maxCount: ProtocolLimits.maxListLength, optional: false)
        }
    }

    /// Expected seconds of one job of a class (kind, model and a workflow's node classes) on one
    /// backend.
    public struct JobEstimate: Hashable, Sendable, WireMembers {
        public var kind: String
        public var model: String?
        /// A workflow's node classes, sorted; empty (omitted) for jobs without one.
        public var nodes: [String]
        public var seconds: Double
        /// Whether jobs of the class were measured (on any backend); otherwise a prior.
        public var measured: Bool

        public init(kind: String, model: String? = nil, nodes: [String] = [], seconds: Double, measured: Bool) {
            self.kind = kind
            self.model = model
            self.nodes = nodes
            self.seconds = seconds
            self.measured = measured
        }

        static var blank: Self { Self(kind: "", seconds: 0, measured: false) }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.string("kind", &kind, .feature)
            try c.string("model", &model, .model)
            try c.names("nodes", &nodes, .nodeClass, maxCount: ProtocolLimits.maxNodes, optional: true)
            try c.required("seconds", &seconds)
            try c.required("measured", &measured)
        }
    }
}
