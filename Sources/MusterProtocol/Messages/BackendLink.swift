// Subprotocol `muster.backend.v1`: the link between the coordinator and one backend.

/// The WebSocket subprotocol names and protocol versions Muster speaks.
public enum Subprotocol {
    /// Coordinator <-> backend.
    public static let backend = "muster.backend.v1"
    /// Client -> coordinator.
    public static let client = "muster.client.v1"
    /// Protocol major versions this implementation speaks, for `hello.versions`.
    public static let supportedVersions: [Int] = [1]
}

/// A message a backend sends to the coordinator.
public enum BackendToCoordinator: Hashable, Sendable, ProtocolDecodable, ProtocolEncodable {
    case hello(Hello)
    /// A full capability snapshot (never a delta); also the answer to `sync`.
    case capabilities(CapabilitySnapshot)
    case started(Started)
    case progress(Progress)
    case completed(Completed)
    case failed(Failed)
    case loadModelResult(LoadModelResult)
    case error(Wire.ErrorMessage)
    case goodbye(Wire.Goodbye)

    /// The wire `type`.
    public var type: String {
        switch self {
        case .hello: "hello"
        case .capabilities: "capabilities"
        case .started: "started"
        case .progress: "progress"
        case .completed: "completed"
        case .failed: "failed"
        case .loadModelResult: "load_model_result"
        case .error: "error"
        case .goodbye: "goodbye"
        }
    }

    static let types: [StaticString] = [
        "hello", "capabilities", "started", "progress", "completed", "failed", "load_model_result", "error",
        "goodbye",
    ]

    public static func decode(_ bytes: UnsafeBufferPointer<UInt8>, limits: ProtocolLimits) throws(ProtocolError)
        -> Self
    {
        try Envelope.decode(bytes, limits: limits) { type, o throws(ProtocolError) in
            switch type {
            case "progress": .progress(try .decode(&o))
            case "started": .started(try .decode(&o))
            case "completed": .completed(try .decode(&o))
            case "failed": .failed(try .decode(&o))
            case "capabilities": .capabilities(try .decode(&o))
            case "hello": .hello(try .decode(&o))
            case "load_model_result": .loadModelResult(try .decode(&o))
            case "error": .error(try .decode(&o))
            case "goodbye": .goodbye(try .decode(&o))
            default: throw Envelope.unknownType(type, known: types)
            }
        }
    }

    public func encode() -> [UInt8] {
        switch self {
        case .hello(let m): m.encodeMessage()
        case .capabilities(let m): m.encodeMessage()
        case .started(let m): m.encodeMessage()
        case .progress(let m): m.encodeMessage()
        case .completed(let m): m.encodeMessage()
        case .failed(let m): m.encodeMessage()
        case .loadModelResult(let m): m.encodeMessage()
        case .error(let m): m.encodeMessage()
        case .goodbye(let m): m.encodeMessage()
        }
    }

    /// `hello` on the backend link: who the backend is and what it speaks.
    public struct Hello: Hashable, Sendable, WireMessage, WireMembers {
        static let wireType: StaticString = "hello"
        public var id: String?
        /// Stable across restarts; the coordinator keys the backend id on it.
        public var name: String
        /// Never logged, never echoed.
        public var token: String
        /// Protocol major versions the backend speaks.
        public var versions: [Int]
        public var incarnation: Incarnation
        /// Jobs it can run at once.
        public var slots: Int
        /// Free text, e.g. `muster-agent/0.1.0`.
        public var software: String?
        /// The jobs this process holds from links before this one (Protocol/README.md 6.2): a
        /// coordinator that restarted before it wrote one of these bindings takes it back.
        public var jobs: [Wire.HeldJob]

        public init(
            id: String? = nil, name: String, token: String, versions: [Int] = Subprotocol.supportedVersions,
            incarnation: Incarnation, slots: Int, software: String? = nil, jobs: [Wire.HeldJob] = []
        ) {
            self.id = id
            self.name = name
            self.token = token
            self.versions = versions
            self.incarnation = incarnation
            self.slots = slots
            self.software = software
            self.jobs = jobs
        }

        static var blank: Self { Self(name: "", token: "", versions: [], incarnation: Incarnation(0), slots: 0) }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.string("id", &id, .key)
            try c.role(.backend)
            try c.string("name", &name, .name)
            try c.string("token", &token, .token)
            try c.versions(&versions)
            try c.required("incarnation", &incarnation)
            try c.int("slots", &slots, in: 0...Int64(ProtocolLimits.maxSlots))
            try c.string("software", &software, .key)
            try c.list("jobs", &jobs, maxCount: ProtocolLimits.maxHeldJobs, optional: true)
        }
    }

    /// The backend began running the job.
    public struct Started: Hashable, Sendable, WireMessage, WireMembers {
        static let wireType: StaticString = "started"
        public var job: JobID
        public var lease: Lease
        public init(job: JobID, lease: Lease) {
            self.job = job
            self.lease = lease
        }

        static var blank: Self { Self(job: JobID(0), lease: Lease(0)) }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.required("job", &job)
            try c.required("lease", &lease)
        }
    }

    /// How far the job is: `fraction` in 0...1.
    public struct Progress: Hashable, Sendable, WireMessage, WireMembers {
        static let wireType: StaticString = "progress"
        public var job: JobID
        public var lease: Lease
        public var fraction: Double
        public var message: String?
        /// `true`: `fraction` grows in proportion to the job's work time, so the coordinator may
        /// project the job's end from it (Protocol/README.md 6.4). Absent: it may not.
        public var timed: Bool?
        public init(job: JobID, lease: Lease, fraction: Double, message: String? = nil, timed: Bool? = nil) {
            self.job = job
            self.lease = lease
            self.fraction = fraction
            self.message = message
            self.timed = timed
        }

        static var blank: Self { Self(job: JobID(0), lease: Lease(0), fraction: 0) }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.required("job", &job)
            try c.required("lease", &lease)
            try c.required("fraction", &fraction)
            try c.check("fraction", fraction >= 0 && fraction <= 1, "must lie in 0...1")
            try c.string("message", &message, .message)
            try c.optional("timed", &timed)
        }
    }

    /// The job finished; `result` is opaque JSON (at most `maxResultBytes`).
    public struct Completed: Hashable, Sendable, WireMessage, WireMembers {
        static let wireType: StaticString = "completed"
        public var job: JobID
        public var lease: Lease
        public var result: RawJSON
        public init(job: JobID, lease: Lease, result: RawJSON) {
            self.job = job
            self.lease = lease
            self.result = result
        }

        static var blank: Self { Self(job: JobID(0), lease: Lease(0), result: .null) }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.required("job", &job)
            try c.required("lease", &lease)
            try c.raw("result", &result, object: false, limit: .result, absent: nil, writesAbsent: true)
        }
    }

    /// The job failed. `retryable` lets the coordinator requeue it on another backend.
    public struct Failed: Hashable, Sendable, WireMessage, WireMembers {
        static let wireType: StaticString = "failed"
        public var job: JobID
        public var lease: Lease
        public var code: ErrorCode
        public var message: String
        public var retryable: Bool
        public init(job: JobID, lease: Lease, code: ErrorCode, message: String, retryable: Bool) {
            self.job = job
            self.lease = lease
            self.code = code
            self.message = message
            self.retryable = retryable
        }

        static var blank: Self {
            Self(job: JobID(0), lease: Lease(0), code: ErrorCode(""), message: "", retryable: false)
        }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.required("job", &job)
            try c.required("lease", &lease)
            try c.required("code", &code)
            try c.string("message", &message, .message)
            try c.required("retryable", &retryable)
        }
    }

    /// The answer to `load_model`: loaded (`ok`), or why not.
    public struct LoadModelResult: Hashable, Sendable, WireMessage, WireMembers {
        static let wireType: StaticString = "load_model_result"
        public var id: String?
        public var model: String
        public var ok: Bool
        /// How long the load took, when it was done.
        public var durationMs: UInt64?
        public var error: Wire.ErrorBody?
        public init(id: String? = nil, model: String, ok: Bool, durationMs: UInt64? = nil, error: Wire.ErrorBody? = nil)
        {
            self.id = id
            self.model = model
            self.ok = ok
            self.durationMs = durationMs
            self.error = error
        }

        static var blank: Self { Self(model: "", ok: false) }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.string("id", &id, .key)
            try c.string("model", &model, .model)
            try c.required("ok", &ok)
            try c.optional("duration_ms", &durationMs)
            try c.optional("error", &error)
        }
    }
}

/// A message the coordinator sends to a backend.
public enum CoordinatorToBackend: Hashable, Sendable, ProtocolDecodable, ProtocolEncodable {
    case welcome(Welcome)
    case capabilitiesAck(CapabilitiesAck)
    /// Anti-entropy: the version the coordinator holds.
    case sync(Sync)
    case assign(Assign)
    case cancel(Cancel)
    case revoke(Revoke)
    case loadModel(LoadModel)
    case staleLease(StaleLease)
    case drain(Drain)
    case error(Wire.ErrorMessage)
    case goodbye(Wire.Goodbye)

    /// The wire `type`.
    public var type: String {
        switch self {
        case .welcome: "welcome"
        case .capabilitiesAck: "capabilities_ack"
        case .sync: "sync"
        case .assign: "assign"
        case .cancel: "cancel"
        case .revoke: "revoke"
        case .loadModel: "load_model"
        case .staleLease: "stale_lease"
        case .drain: "drain"
        case .error: "error"
        case .goodbye: "goodbye"
        }
    }

    static let types: [StaticString] = [
        "welcome", "capabilities_ack", "sync", "assign", "cancel", "revoke", "load_model", "stale_lease", "drain",
        "error", "goodbye",
    ]

    public static func decode(_ bytes: UnsafeBufferPointer<UInt8>, limits: ProtocolLimits) throws(ProtocolError)
        -> Self
    {
        try Envelope.decode(bytes, limits: limits) { type, o throws(ProtocolError) in
            switch type {
            case "assign": .assign(try .decode(&o))
            case "capabilities_ack": .capabilitiesAck(try .decode(&o))
            case "sync": .sync(try .decode(&o))
            case "cancel": .cancel(try .decode(&o))
            case "revoke": .revoke(try .decode(&o))
            case "stale_lease": .staleLease(try .decode(&o))
            case "welcome": .welcome(try .decode(&o))
            case "load_model": .loadModel(try .decode(&o))
            case "drain": .drain(try .decode(&o))
            case "error": .error(try .decode(&o))
            case "goodbye": .goodbye(try .decode(&o))
            default: throw Envelope.unknownType(type, known: types)
            }
        }
    }

    public func encode() -> [UInt8] {
        switch self {
        case .welcome(let m): m.encodeMessage()
        case .capabilitiesAck(let m): m.encodeMessage()
        case .sync(let m): m.encodeMessage()
        case .assign(let m): m.encodeMessage()
        case .cancel(let m): m.encodeMessage()
        case .revoke(let m): m.encodeMessage()
        case .loadModel(let m): m.encodeMessage()
        case .staleLease(let m): m.encodeMessage()
        case .drain(let m): m.encodeMessage()
        case .error(let m): m.encodeMessage()
        case .goodbye(let m): m.encodeMessage()
        }
    }

    /// The answer to a backend's `hello`: its id and the link's timing.
    public struct Welcome: Hashable, Sendable, WireMessage, WireMembers {
        static let wireType: StaticString = "welcome"
        public var id: String?
        /// Positive, stable per backend name.
        public var backend: BackendID
        /// The protocol major version chosen.
        public var version: Int
        /// The coordinator's software version.
        public var coordinator: String
        public var heartbeatMs: UInt64
        public var syncMs: UInt64
        public var maxMessageBytes: Int
        /// The capability version the coordinator already holds for this backend, if any.
        public var known: CapabilityVersion?
        /// The jobs the coordinator still considers bound to this backend (reconnect with the same
        /// incarnation); any other job the backend runs is stale.
        public var bindings: [Wire.Binding]

        public init(
            id: String? = nil, backend: BackendID, version: Int = 1, coordinator: String, heartbeatMs: UInt64,
            syncMs: UInt64, maxMessageBytes: Int = ProtocolLimits.default.maxMessageBytes,
            known: CapabilityVersion? = nil, bindings: [Wire.Binding] = []
        ) {
            self.id = id
            self.backend = backend
            self.version = version
            self.coordinator = coordinator
            self.heartbeatMs = heartbeatMs
            self.syncMs = syncMs
            self.maxMessageBytes = maxMessageBytes
            self.known = known
            self.bindings = bindings
        }

        static var blank: Self { Self(backend: BackendID(1), coordinator: "", heartbeatMs: 0, syncMs: 0) }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.string("id", &id, .key)
            try c.required("backend", &backend)
            try c.int("version", &version, in: 1...1000)
            try c.string("coordinator", &coordinator, .key)
            try c.required("heartbeat_ms", &heartbeatMs)
            try c.required("sync_ms", &syncMs)
            try c.int("max_message_bytes", &maxMessageBytes, in: 1024...Int64(Int32.max))
            try c.optional("known", &known)
            try c.list("bindings", &bindings, maxCount: 100_000, optional: false)
        }
    }

    /// The version the coordinator holds after an announcement, and whether that announcement changed it.
    public struct CapabilitiesAck: Hashable, Sendable, WireMessage, WireMembers {
        static let wireType: StaticString = "capabilities_ack"
        public var version: CapabilityVersion
        /// False when the announcement was stale or a duplicate.
        public var applied: Bool
        public init(version: CapabilityVersion, applied: Bool) {
            self.version = version
            self.applied = applied
        }

        static var blank: Self { Self(version: .blank, applied: false) }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.inline(&version)
            try c.required("applied", &applied)
        }
    }

    /// Anti-entropy: the version the coordinator holds (nil: none). A backend whose own version
    /// differs answers with `capabilities`.
    public struct Sync: Hashable, Sendable, WireMessage, WireMembers {
        static let wireType: StaticString = "sync"
        public var known: CapabilityVersion?
        public init(known: CapabilityVersion?) { self.known = known }

        static var blank: Self { Self(known: nil) }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.optional("known", &known)
        }
    }

    /// Run this job under this lease.
    public struct Assign: Hashable, Sendable, WireMessage, WireMembers {
        static let wireType: StaticString = "assign"
        public var job: JobID
        public var lease: Lease
        public var batch: BatchID
        /// 1 on the first binding, +1 on every requeue.
        public var attempt: Int
        public var kind: String
        public var needs: [String]
        public var model: String?
        /// Opaque JSON object, passed through verbatim.
        public var params: RawJSON

        public init(
            job: JobID, lease: Lease, batch: BatchID, attempt: Int, kind: String, needs: [String] = [],
            model: String? = nil, params: RawJSON = .emptyObject
        ) {
            self.job = job
            self.lease = lease
            self.batch = batch
            self.attempt = attempt
            self.kind = kind
            self.needs = needs
            self.model = model
            self.params = params
        }

        static var blank: Self { Self(job: JobID(0), lease: Lease(0), batch: BatchID(0), attempt: 1, kind: "") }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.required("job", &job)
            try c.required("lease", &lease)
            try c.required("batch", &batch)
            try c.int("attempt", &attempt, in: 1...1000)
            try c.string("kind", &kind, .feature)
            try c.names("needs", &needs, .feature, maxCount: ProtocolLimits.maxNeeds, optional: false)
            try c.string("model", &model, .model)
            try c.raw("params", &params, object: true, limit: .params, absent: nil, writesAbsent: true)
        }
    }

    /// Stop the job (it was canceled); report nothing more under this lease.
    public struct Cancel: Hashable, Sendable, WireMessage, WireMembers {
        static let wireType: StaticString = "cancel"
        public var job: JobID
        public var lease: Lease
        public init(job: JobID, lease: Lease) {
            self.job = job
            self.lease = lease
        }

        static var blank: Self { Self(job: JobID(0), lease: Lease(0)) }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.required("job", &job)
            try c.required("lease", &lease)
        }
    }

    /// Give the job back (work stealing): the lease is dead from now on; drop the job if it has
    /// not started, stop it if it has.
    public struct Revoke: Hashable, Sendable, WireMessage, WireMembers {
        static let wireType: StaticString = "revoke"
        public var job: JobID
        public var lease: Lease
        public init(job: JobID, lease: Lease) {
            self.job = job
            self.lease = lease
        }

        static var blank: Self { Self(job: JobID(0), lease: Lease(0)) }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.required("job", &job)
            try c.required("lease", &lease)
        }
    }

    /// Load this model now; answer with `load_model_result` and announce the new `models.loaded`.
    public struct LoadModel: Hashable, Sendable, WireMessage, WireMembers {
        static let wireType: StaticString = "load_model"
        public var id: String?
        public var model: String
        public init(id: String? = nil, model: String) {
            self.id = id
            self.model = model
        }

        static var blank: Self { Self(model: "") }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.string("id", &id, .key)
            try c.string("model", &model, .model)
        }
    }

    /// The answer to a job message naming a lease that is not the job's current one. It changed
    /// nothing; the backend stops any work under that lease.
    public struct StaleLease: Hashable, Sendable, WireMessage, WireMembers {
        static let wireType: StaticString = "stale_lease"
        public var job: JobID
        public var lease: Lease
        /// The `type` of the message this answers, e.g. `progress`.
        public var about: String
        public init(job: JobID, lease: Lease, about: String) {
            self.job = job
            self.lease = lease
            self.about = about
        }

        static var blank: Self { Self(job: JobID(0), lease: Lease(0), about: "") }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.required("job", &job)
            try c.required("lease", &lease)
            try c.string("about", &about, .code)
        }
    }

    /// Finish the jobs you have, expect no new ones; announce `draining`.
    public struct Drain: Hashable, Sendable, WireMessage, WireMembers {
        static let wireType: StaticString = "drain"
        public var reason: String?
        public init(reason: String? = nil) { self.reason = reason }

        static var blank: Self { Self(reason: nil) }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.string("reason", &reason, .message)
        }
    }
}

/// The `role` of `hello`: must match the subprotocol.
enum PeerRole: String {
    case backend, client

    static func expect(_ role: PeerRole, in o: inout JSONObjectReader) throws(ProtocolError) {
        let s: String = try o.required("role")
        guard s == role.rawValue else {
            throw ProtocolError(
                code: .wrongRole, path: "role",
                reason: "this link speaks \(role == .backend ? Subprotocol.backend : Subprotocol.client); "
                    + "the role must be '\(role.rawValue)'")
        }
    }

    static func versions(_ o: inout JSONObjectReader) throws(ProtocolError) -> [Int] {
        let list: [Int64] = try o.required("versions")
        if list.isEmpty { throw .invalid("versions", "must list at least one version") }
        if list.count > ProtocolLimits.maxVersions {
            throw .limit("versions", "\(list.count) entries exceed the limit of \(ProtocolLimits.maxVersions)")
        }
        for (i, v) in list.enumerated() where !(1...1000).contains(v) {
            throw .invalid("versions[\(i)]", "\(v) is outside 1...1000")
        }
        return list.map { Int($0) }
    }
}
