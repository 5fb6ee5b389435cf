// Bodies shared by the client subprotocol and the HTTP API.

extension Wire {
    /// A batch to submit: the body of `POST /v1/batches` and the members of `submit`.
    public struct BatchRequest: Hashable, Sendable, WireBody {
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

        static func decode(_ o: inout JSONObjectReader) throws(ProtocolError) -> Self {
            let key = try o.optionalString("batch_key", .key)
            let owner = try o.optionalString("owner", .key)
            let jobs: [JobRequest] = try o.list("jobs", maxCount: ProtocolLimits.maxBatchEntries)
            if jobs.isEmpty { throw .invalid("jobs", "a batch needs at least one job") }
            let total = jobs.reduce(0) { $0 + $1.count }
            if total > o.doc.limits.maxBatchJobs {
                throw .limit("jobs", "\(total) jobs exceed the limit of \(o.doc.limits.maxBatchJobs) per batch")
            }
            return Self(batchKey: key, owner: owner, jobs: jobs)
        }

        func encodeMembers(_ w: inout JSONWriter) {
            w.member("batch_key", batchKey)
            w.member("owner", owner)
            w.member("jobs", jobs)
        }

        public static func decode(_ bytes: UnsafeBufferPointer<UInt8>, limits: ProtocolLimits) throws(ProtocolError)
            -> Self
        { try decodeBody(bytes, limits: limits) }
        public func encode() -> [UInt8] { encodeBody() }
    }

    /// One entry of a batch: `count` jobs with the same spec.
    public struct JobRequest: Hashable, Sendable, WireObject {
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

        /// The spec of each job; `defaultOwner` applies when neither entry nor batch names one.
        public func spec(batchOwner: String?, defaultOwner: String) -> JobSpec {
            JobSpec(
                kind: kind, needs: needs, model: model, params: params, priority: priority,
                owner: owner ?? batchOwner ?? defaultOwner, nodes: nodes)
        }

        static func decode(_ o: inout JSONObjectReader) throws(ProtocolError) -> Self {
            let range = Int64(ProtocolLimits.priorityRange.lowerBound)...Int64(ProtocolLimits.priorityRange.upperBound)
            let kind = try o.string("kind", .feature)
            let needs = try o.names("needs", .feature, maxCount: ProtocolLimits.maxNeeds, required: false)
            let model = try o.optionalString("model", .model)
            let params = try o.raw("params", object: true, maxBytes: o.doc.limits.maxParamsBytes) ?? .emptyObject
            var nodes: [String] = []
            if let p = o.find("params") {
                do throws(ProtocolError) {
                    nodes = try WorkflowParams.nodeClasses(o.doc, params: p)
                } catch {
                    var e = error
                    e.prepend(key: "params")
                    throw e
                }
            }
            return Self(
                kind: kind, needs: needs, model: model, params: params,
                count: try o.optionalInt("count", in: 1...Int64(ProtocolLimits.maxCount)) ?? 1,
                priority: try o.optionalInt("priority", in: range) ?? 0,
                owner: try o.optionalString("owner", .key), nodes: nodes)
        }

        /// Members at their default value are left out: the canonical form is the shortest.
        func encodeMembers(_ w: inout JSONWriter) {
            w.member("kind", kind)
            if !needs.isEmpty { w.member("needs", needs) }
            w.member("model", model)
            if params != .emptyObject { w.member("params", params) }
            if count != 1 { w.member("count", count) }
            if priority != 0 { w.member("priority", priority) }
            w.member("owner", owner)
        }
    }

    /// The answer to a submitted batch (`accepted`; `POST /v1/batches` 201, or 200 when duplicate).
    public struct Accepted: Hashable, Sendable, WireMessage, WireBody {
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

        static func decode(_ o: inout JSONObjectReader) throws(ProtocolError) -> Self {
            Self(
                id: try o.optionalString("id", .key), batch: try o.required("batch"), jobs: try o.required("jobs"),
                duplicate: try o.required("duplicate"))
        }

        func encodeMembers(_ w: inout JSONWriter) {
            w.member("id", id)
            w.member("batch", batch)
            w.member("jobs", jobs)
            w.member("duplicate", duplicate)
        }

        public static func decode(_ bytes: UnsafeBufferPointer<UInt8>, limits: ProtocolLimits) throws(ProtocolError)
            -> Self
        { try decodeBody(bytes, limits: limits) }
        public func encode() -> [UInt8] { encodeBody() }
    }

    /// Load a model now (`load_model` on the client link; `POST /v1/models/load`): on one backend,
    /// or on every eligible one and on every one that joins later.
    public struct LoadModelRequest: Hashable, Sendable, WireMessage, WireBody {
        static let wireType: StaticString = "load_model"
        public var id: String?
        public var model: String
        public var backend: BackendID?

        public init(id: String? = nil, model: String, backend: BackendID? = nil) {
            self.id = id
            self.model = model
            self.backend = backend
        }

        static func decode(_ o: inout JSONObjectReader) throws(ProtocolError) -> Self {
            Self(
                id: try o.optionalString("id", .key), model: try o.string("model", .model),
                backend: try o.optional("backend"))
        }

        func encodeMembers(_ w: inout JSONWriter) {
            w.member("id", id)
            w.member("model", model)
            w.member("backend", backend)
        }

        public static func decode(_ bytes: UnsafeBufferPointer<UInt8>, limits: ProtocolLimits) throws(ProtocolError)
            -> Self
        { try decodeBody(bytes, limits: limits) }
        public func encode() -> [UInt8] { encodeBody() }
    }

    /// The answer to a load-model command: the backends told to load it now (HTTP 202).
    public struct ModelsLoading: Hashable, Sendable, WireMessage, WireBody {
        static let wireType: StaticString = "models_loading"
        public var id: String?
        public var model: String
        public var backends: [BackendID]

        public init(id: String? = nil, model: String, backends: [BackendID]) {
            self.id = id
            self.model = model
            self.backends = backends
        }

        static func decode(_ o: inout JSONObjectReader) throws(ProtocolError) -> Self {
            Self(
                id: try o.optionalString("id", .key), model: try o.string("model", .model),
                backends: try o.required("backends"))
        }

        func encodeMembers(_ w: inout JSONWriter) {
            w.member("id", id)
            w.member("model", model)
            w.member("backends", backends)
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
    public struct BackendInfo: Hashable, Sendable, WireObject {
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

        static func decode(_ o: inout JSONObjectReader) throws(ProtocolError) -> Self {
            let id: BackendID = try o.required("id")
            let name = try o.string("name", .name)
            let local: Bool = try o.required("local")
            let link: LinkState = try o.required("link")
            var capabilities: CapabilitySnapshot?
            if let node = o.find("capabilities") {
                do throws(ProtocolError) {
                    capabilities = try CapabilitySnapshot.decodeJSON(o.doc, node)
                } catch {
                    var e = error
                    e.prepend(key: "capabilities")
                    throw e
                }
            }
            let load: Load = try o.required("load")
            return Self(
                id: id, name: name, local: local, link: link, capabilities: capabilities, inFlight: load.inFlight,
                running: load.running, capacity: load.capacity, registeredMs: try o.required("registered_ms"),
                firstAnnouncedMs: try o.optional("first_announced_ms"), lastSeenMs: try o.optional("last_seen_ms"),
                inhibitedUntilMs: try o.optional("inhibited_until_ms"), estimates: try o.optional("estimates"))
        }

        func encodeMembers(_ w: inout JSONWriter) {
            w.member("id", id)
            w.member("name", name)
            w.member("local", local)
            w.member("link", link)
            if let capabilities {
                w.key("capabilities")
                w.append(UInt8(ascii: "{"))
                capabilities.encodeMembers(&w)
                w.append(UInt8(ascii: "}"))
            }
            w.member("load", Load(inFlight: inFlight, running: running, capacity: capacity))
            w.member("registered_ms", registeredMs)
            w.member("first_announced_ms", firstAnnouncedMs)
            w.member("last_seen_ms", lastSeenMs)
            w.member("inhibited_until_ms", inhibitedUntilMs)
            w.member("estimates", estimates)
        }

        struct Load: WireObject {
            var inFlight: Int
            var running: Int
            var capacity: Int

            static func decode(_ o: inout JSONObjectReader) throws(ProtocolError) -> Self {
                Self(
                    inFlight: try o.int("in_flight", in: 0...Int64(Int32.max)),
                    running: try o.int("running", in: 0...Int64(Int32.max)),
                    capacity: try o.int("capacity", in: 0...Int64(Int32.max)))
            }

            func encodeMembers(_ w: inout JSONWriter) {
                w.member("in_flight", inFlight)
                w.member("running", running)
                w.member("capacity", capacity)
            }
        }
    }

    /// `GET /v1/backends`.
    public struct BackendList: Hashable, Sendable, WireBody {
        public var backends: [BackendInfo]
        public init(backends: [BackendInfo]) { self.backends = backends }

        static func decode(_ o: inout JSONObjectReader) throws(ProtocolError) -> Self {
            Self(backends: try o.list("backends", maxCount: ProtocolLimits.maxListLength))
        }

        func encodeMembers(_ w: inout JSONWriter) { w.member("backends", backends) }

        public static func decode(_ bytes: UnsafeBufferPointer<UInt8>, limits: ProtocolLimits) throws(ProtocolError)
            -> Self
        { try decodeBody(bytes, limits: limits) }
        public func encode() -> [UInt8] { encodeBody() }
    }

    /// A backend the warm-up gate waits for.
    public struct WaitingBackend: Hashable, Sendable, WireObject {
        public var id: BackendID
        public var name: String
        /// Open set: `not_connected`, `not_announced`, `starting`, `loading`.
        public var reason: String

        public init(id: BackendID, name: String, reason: String) {
            self.id = id
            self.name = name
            self.reason = reason
        }

        static func decode(_ o: inout JSONObjectReader) throws(ProtocolError) -> Self {
            Self(id: try o.required("id"), name: try o.string("name", .name), reason: try o.string("reason", .code))
        }

        func encodeMembers(_ w: inout JSONWriter) {
            w.member("id", id)
            w.member("name", name)
            w.member("reason", reason)
        }
    }

    /// Why jobs are held by the warm-up gate: the features (and model) they need and the backends
    /// that might turn out eligible but have not announced yet.
    public struct GateWait: Hashable, Sendable, WireObject {
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

        static func decode(_ o: inout JSONObjectReader) throws(ProtocolError) -> Self {
            Self(
                features: try o.names("features", .feature, maxCount: ProtocolLimits.maxNeeds),
                model: try o.optionalString("model", .model),
                backends: try o.list("backends", maxCount: ProtocolLimits.maxListLength),
                untilMs: try o.optional("until_ms"), jobs: try o.optionalInt("jobs", in: 0...Int64(Int32.max)))
        }

        func encodeMembers(_ w: inout JSONWriter) {
            w.member("features", features)
            w.member("model", model)
            w.member("backends", backends)
            w.member("until_ms", untilMs)
            w.member("jobs", jobs)
        }
    }

    /// `GET /readyz` (200 when ready, 503 otherwise) and the `readiness` of `status_report`.
    public struct Readiness: Hashable, Sendable, WireBody {
        public var ready: Bool
        /// Open set, empty when ready: `no_ready_backend`, `jobs_held`, `shutting_down`.
        public var reasons: [String]
        public var readyBackends: Int
        public var heldJobs: Int
        /// One entry per distinct need the gate holds jobs for.
        public var waiting: [GateWait]
        /// On a standby (reason `standby`): the coordinator that leads, when one is known.
        public var leader: CoordinatorRef?

        public init(
            ready: Bool, reasons: [String], readyBackends: Int, heldJobs: Int, waiting: [GateWait],
            leader: CoordinatorRef? = nil
        ) {
            self.ready = ready
            self.reasons = reasons
            self.readyBackends = readyBackends
            self.heldJobs = heldJobs
            self.waiting = waiting
            self.leader = leader
        }

        static func decode(_ o: inout JSONObjectReader) throws(ProtocolError) -> Self {
            Self(
                ready: try o.required("ready"), reasons: try o.names("reasons", .code, maxCount: 16),
                readyBackends: try o.int("ready_backends", in: 0...Int64(Int32.max)),
                heldJobs: try o.int("held_jobs", in: 0...Int64(Int32.max)),
                waiting: try o.list("waiting", maxCount: ProtocolLimits.maxListLength), leader: try o.optional("leader"))
        }

        func encodeMembers(_ w: inout JSONWriter) {
            w.member("ready", ready)
            w.member("reasons", reasons)
            w.member("ready_backends", readyBackends)
            w.member("held_jobs", heldJobs)
            w.member("waiting", waiting)
            w.member("leader", leader)
        }

        public static func decode(_ bytes: UnsafeBufferPointer<UInt8>, limits: ProtocolLimits) throws(ProtocolError)
            -> Self
        { try decodeBody(bytes, limits: limits) }
        public func encode() -> [UInt8] { encodeBody() }
    }

    /// A coordinator of a pair sharing one database, as a standby names its leader (readiness,
    /// and `details.leader` of the `not_leader` error): its node name and the URL to dial.
    public struct CoordinatorRef: Hashable, Sendable, WireObject {
        public var name: String
        /// `ws://HOST:PORT` or `wss://HOST:PORT` (its `ha.advertise`).
        public var address: String

        public init(name: String, address: String) {
            self.name = name
            self.address = address
        }

        static func decode(_ o: inout JSONObjectReader) throws(ProtocolError) -> Self {
            Self(name: try o.string("name", .key), address: try o.string("address", .key))
        }

        func encodeMembers(_ w: inout JSONWriter) {
            w.member("name", name)
            w.member("address", address)
        }
    }

    /// `details` of a `not_leader` error: the leader to dial instead, when one is known.
    public struct NotLeader: Hashable, Sendable, WireBody {
        public var leader: CoordinatorRef?

        public init(leader: CoordinatorRef?) { self.leader = leader }

        static func decode(_ o: inout JSONObjectReader) throws(ProtocolError) -> Self {
            Self(leader: try o.optional("leader"))
        }

        func encodeMembers(_ w: inout JSONWriter) { w.member("leader", leader) }

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
    public struct QueueSummary: Hashable, Sendable, WireObject {
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
        public struct PriorityDepth: Hashable, Sendable, WireObject {
            public var priority: Int
            public var jobs: Int
            public init(priority: Int, jobs: Int) {
                self.priority = priority
                self.jobs = jobs
            }

            static func decode(_ o: inout JSONObjectReader) throws(ProtocolError) -> Self {
                let range =
                    Int64(ProtocolLimits.priorityRange.lowerBound)...Int64(ProtocolLimits.priorityRange.upperBound)
                return Self(
                    priority: try o.int("priority", in: range), jobs: try o.int("jobs", in: 0...Int64(Int32.max)))
            }

            func encodeMembers(_ w: inout JSONWriter) {
                w.member("priority", priority)
                w.member("jobs", jobs)
            }
        }

        static func decode(_ o: inout JSONObjectReader) throws(ProtocolError) -> Self {
            let count: ClosedRange<Int64> = 0...Int64(Int32.max)
            return Self(
                queued: try o.int("queued", in: count), gated: try o.int("gated", in: count),
                bound: try o.int("bound", in: count), running: try o.int("running", in: count),
                byPriority: try o.list("by_priority", maxCount: ProtocolLimits.priorityRange.count))
        }

        func encodeMembers(_ w: inout JSONWriter) {
            w.member("queued", queued)
            w.member("gated", gated)
            w.member("bound", bound)
            w.member("running", running)
            w.member("by_priority", byPriority)
        }
    }

    /// One attempt of a job, in its history.
    public struct AttemptRecord: Hashable, Sendable, WireObject {
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

        static func decode(_ o: inout JSONObjectReader) throws(ProtocolError) -> Self {
            Self(
                attempt: try o.int("attempt", in: 1...1000), backend: try o.required("backend"),
                outcome: try o.required("outcome"), error: try o.optional("error"),
                boundMs: try o.required("bound_ms"), endedMs: try o.optional("ended_ms"))
        }

        func encodeMembers(_ w: inout JSONWriter) {
            w.member("attempt", attempt)
            w.member("backend", backend)
            w.member("outcome", outcome)
            w.member("error", error)
            w.member("bound_ms", boundMs)
            w.member("ended_ms", endedMs)
        }
    }

    /// `GET /v1/jobs/{id}`: everything about one job.
    public struct JobInfo: Hashable, Sendable, WireBody {
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

        static func decode(_ o: inout JSONObjectReader) throws(ProtocolError) -> Self {
            let job: JobID = try o.required("job")
            let batch: BatchID = try o.required("batch")
            let state: JobState = try o.required("state")
            let range = Int64(ProtocolLimits.priorityRange.lowerBound)...Int64(ProtocolLimits.priorityRange.upperBound)
            let spec = JobSpec(
                kind: try o.string("kind", .feature),
                needs: try o.names("needs", .feature, maxCount: ProtocolLimits.maxNeeds),
                model: try o.optionalString("model", .model),
                params: try o.raw("params", object: true, maxBytes: o.doc.limits.maxParamsBytes) ?? .emptyObject,
                priority: try o.int("priority", in: range), owner: try o.string("owner", .key))
            let progress: Double? = try o.optional("progress")
            if let progress, !(0...1).contains(progress) { throw .invalid("progress", "must lie in 0...1") }
            return Self(
                job: job, batch: batch, state: state, spec: spec, attempt: try o.int("attempt", in: 0...1000),
                backend: try o.optional("backend"), progress: progress,
                result: try o.raw("result", object: false, maxBytes: o.doc.limits.maxResultBytes),
                error: try o.optional("error"), waiting: try o.optional("waiting"),
                createdMs: try o.required("created_ms"), startedMs: try o.optional("started_ms"),
                finishedMs: try o.optional("finished_ms"), history: try o.list("history", maxCount: 1000))
        }

        func encodeMembers(_ w: inout JSONWriter) {
            w.member("job", job)
            w.member("batch", batch)
            w.member("state", state)
            w.member("kind", spec.kind)
            w.member("needs", spec.needs)
            w.member("model", spec.model)
            w.member("params", spec.params)
            w.member("priority", spec.priority)
            w.member("owner", spec.owner)
            w.member("attempt", attempt)
            w.member("backend", backend)
            w.member("progress", progress)
            w.member("result", result)
            w.member("error", error)
            w.member("waiting", waiting)
            w.member("created_ms", createdMs)
            w.member("started_ms", startedMs)
            w.member("finished_ms", finishedMs)
            w.member("history", history)
        }

        public static func decode(_ bytes: UnsafeBufferPointer<UInt8>, limits: ProtocolLimits) throws(ProtocolError)
            -> Self
        { try decodeBody(bytes, limits: limits) }
        public func encode() -> [UInt8] { encodeBody() }
    }

    /// `GET /v1/batches/{id}`.
    public struct BatchInfo: Hashable, Sendable, WireBody {
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

        static func decode(_ o: inout JSONObjectReader) throws(ProtocolError) -> Self {
            Self(
                batch: try o.required("batch"), batchKey: try o.optionalString("batch_key", .key),
                createdMs: try o.required("created_ms"), done: try o.required("done"),
                jobs: try o.list("jobs", maxCount: ProtocolLimits.maxListLength))
        }

        func encodeMembers(_ w: inout JSONWriter) {
            w.member("batch", batch)
            w.member("batch_key", batchKey)
            w.member("created_ms", createdMs)
            w.member("done", done)
            w.member("jobs", jobs)
        }

        public static func decode(_ bytes: UnsafeBufferPointer<UInt8>, limits: ProtocolLimits) throws(ProtocolError)
            -> Self
        { try decodeBody(bytes, limits: limits) }
        public func encode() -> [UInt8] { encodeBody() }
    }

    /// `DELETE /v1/jobs/{id}`: the job's state after the request; `canceled` is false when it was
    /// already final (the request is idempotent).
    public struct CancelResult: Hashable, Sendable, WireBody {
        public var job: JobID
        public var state: JobState
        public var canceled: Bool

        public init(job: JobID, state: JobState, canceled: Bool) {
            self.job = job
            self.state = state
            self.canceled = canceled
        }

        static func decode(_ o: inout JSONObjectReader) throws(ProtocolError) -> Self {
            Self(job: try o.required("job"), state: try o.required("state"), canceled: try o.required("canceled"))
        }

        func encodeMembers(_ w: inout JSONWriter) {
            w.member("job", job)
            w.member("state", state)
            w.member("canceled", canceled)
        }

        public static func decode(_ bytes: UnsafeBufferPointer<UInt8>, limits: ProtocolLimits) throws(ProtocolError)
            -> Self
        { try decodeBody(bytes, limits: limits) }
        public func encode() -> [UInt8] { encodeBody() }
    }

    /// `GET /healthz`: the process serves.
    public struct Health: Hashable, Sendable, WireBody {
        /// Always `ok`.
        public var status: String
        public var version: String
        public var uptimeMs: UInt64

        public init(version: String, uptimeMs: UInt64) {
            self.status = "ok"
            self.version = version
            self.uptimeMs = uptimeMs
        }

        static func decode(_ o: inout JSONObjectReader) throws(ProtocolError) -> Self {
            let status = try o.string("status", .code)
            var h = Self(version: try o.string("version", .key), uptimeMs: try o.required("uptime_ms"))
            h.status = status
            return h
        }

        func encodeMembers(_ w: inout JSONWriter) {
            w.member("status", status)
            w.member("version", version)
            w.member("uptime_ms", uptimeMs)
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
    public struct Estimates: Hashable, Sendable, WireObject {
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

        static func decode(_ o: inout JSONObjectReader) throws(ProtocolError) -> Self {
            Self(
                speed: try o.required("speed"), speedSource: try o.string("speed_source", .code),
                modelLoadSeconds: try o.optional("model_load_seconds"),
                jobs: try o.list("jobs", maxCount: ProtocolLimits.maxListLength))
        }

        func encodeMembers(_ w: inout JSONWriter) {
            w.member("speed", speed)
            w.member("speed_source", speedSource)
            w.member("model_load_seconds", modelLoadSeconds)
            w.member("jobs", jobs)
        }
    }

    /// Expected seconds of one job of a class (kind and model) on one backend.
    public struct JobEstimate: Hashable, Sendable, WireObject {
        public var kind: String
        public var model: String?
        public var seconds: Double
        /// Whether jobs of the class were measured (on any backend); otherwise a prior.
        public var measured: Bool

        public init(kind: String, model: String? = nil, seconds: Double, measured: Bool) {
            self.kind = kind
            self.model = model
            self.seconds = seconds
            self.measured = measured
        }

        static func decode(_ o: inout JSONObjectReader) throws(ProtocolError) -> Self {
            Self(
                kind: try o.string("kind", .feature), model: try o.optionalString("model", .model),
                seconds: try o.required("seconds"), measured: try o.required("measured"))
        }

        func encodeMembers(_ w: inout JSONWriter) {
            w.member("kind", kind)
            w.member("model", model)
            w.member("seconds", seconds)
            w.member("measured", measured)
        }
    }
}
