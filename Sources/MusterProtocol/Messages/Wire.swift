// Objects shared by both subprotocols and the HTTP API.

/// Namespace for the objects that appear in several messages and HTTP bodies.
public enum Wire {}

// MARK: - Errors

extension Wire {
    /// The one error shape: `{code, message, details}`. HTTP error bodies are exactly this object.
    public struct ErrorBody: Hashable, Sendable, WireBody, WireMembers {
        public var code: ErrorCode
        /// For people: what was wrong, where, and what to do.
        public var message: String
        /// Code-specific structured data (an object), e.g. `Wire.NoEligibleBackend`.
        public var details: RawJSON?

        public init(code: ErrorCode, message: String, details: RawJSON? = nil) {
            self.code = code
            self.message = message
            self.details = details
        }

        static var blank: Self { Self(code: ErrorCode(""), message: "") }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.required("code", &code)
            try c.string("message", &message, .message)
            try c.raw("details", &details, object: true, limit: .message)
        }

        public static func decode(_ bytes: UnsafeBufferPointer<UInt8>, limits: ProtocolLimits) throws(ProtocolError)
            -> Self
        { try decodeBody(bytes, limits: limits) }
        public func encode() -> [UInt8] { encodeBody() }
    }

    /// The `error` message (both subprotocols, both directions): the error shape plus the `id` of
    /// the request it answers, if any.
    public struct ErrorMessage: Hashable, Sendable, WireMessage, WireMembers {
        static let wireType: StaticString = "error"
        public var id: String?
        public var code: ErrorCode
        public var message: String
        public var details: RawJSON?

        public init(id: String? = nil, code: ErrorCode, message: String, details: RawJSON? = nil) {
            self.id = id
            self.code = code
            self.message = message
            self.details = details
        }

        /// The error without the request id.
        public var body: ErrorBody { ErrorBody(code: code, message: message, details: details) }

        static var blank: Self { Self(code: ErrorCode(""), message: "") }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.string("id", &id, .key)
            try c.required("code", &code)
            try c.string("message", &message, .message)
            try c.raw("details", &details, object: true, limit: .message)
        }
    }

    /// `goodbye` (both subprotocols, both directions): the sender is about to close the link on
    /// purpose. The close code follows (1001 for shutdown or restart, 1000 otherwise).
    public struct Goodbye: Hashable, Sendable, WireMessage, WireMembers {
        static let wireType: StaticString = "goodbye"
        /// Open set: `shutdown`, `restart`, `drained`, `replaced`.
        public var reason: String
        public var message: String?
        /// When the peer should try again, if it should.
        public var reconnectAfterMs: UInt64?

        public init(reason: String, message: String? = nil, reconnectAfterMs: UInt64? = nil) {
            self.reason = reason
            self.message = message
            self.reconnectAfterMs = reconnectAfterMs
        }

        static var blank: Self { Self(reason: "") }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.string("reason", &reason, .code)
            try c.string("message", &message, .message)
            try c.optional("reconnect_after_ms", &reconnectAfterMs)
        }
    }

    /// `details` of `no_eligible_backend`: what the job needs that nobody offers, and per backend
    /// considered, why it was refused.
    public struct NoEligibleBackend: Hashable, Sendable, WireMembers {
        /// Needed features that no ready backend announces.
        public var missingFeatures: [String]
        /// The job's model, when no ready backend offers it.
        public var missingModel: String?
        /// Node classes of the job's workflow that no ready backend has.
        public var missingNodes: [String]
        public var refusals: [Refusal]

        public init(missingFeatures: [String], missingModel: String? = nil, missingNodes: [String] = [], refusals: [Refusal]) {
            self.missingFeatures = missingFeatures
            self.missingModel = missingModel
            self.missingNodes = missingNodes
            self.refusals = refusals
        }

        /// Why one backend was not eligible.
        public struct Refusal: Hashable, Sendable, WireMembers {
            public var backend: BackendID
            public var name: String
            /// Open set: `link_down`, `link_suspect`, `not_announced`, `starting`, `loading`,
            /// `draining`, `missing_features`, `missing_model`, `inhibited`.
            public var reasons: [String]
            /// With `missing_features`: which of the needed features it lacks.
            public var missingFeatures: [String]
            /// With `missing_nodes`: which of the workflow's node classes it lacks.
            public var missingNodes: [String]

            public init(
                backend: BackendID, name: String, reasons: [String], missingFeatures: [String] = [],
                missingNodes: [String] = []
            ) {
                self.backend = backend
                self.name = name
                self.reasons = reasons
                self.missingFeatures = missingFeatures
                self.missingNodes = missingNodes
            }

            static var blank: Self { Self(backend: BackendID(1), name: "", reasons: []) }

            @inline(__always)
            mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
                try c.required("backend", &backend)
                try c.string("name", &name, .name)
                try c.names("reasons", &reasons, .code, maxCount: 16, optional: false)
                try c.names(
                    "missing_features", &missingFeatures, .feature, maxCount: ProtocolLimits.maxNeeds, optional: true)
                try c.names(
                    "missing_nodes", &missingNodes, .nodeClass, maxCount: ProtocolLimits.maxNodes, optional: true)
            }
        }

        static var blank: Self { Self(missingFeatures: [], refusals: []) }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.names(
                "missing_features", &missingFeatures, .feature, maxCount: ProtocolLimits.maxNeeds, optional: false)
            try c.string("missing_model", &missingModel, .model)
            try c.names("missing_nodes", &missingNodes, .nodeClass, maxCount: ProtocolLimits.maxNodes, optional: true)
            try c.list("refusals", &refusals, maxCount: ProtocolLimits.maxListLength, optional: false)
        }

        /// As the `details` of an error.
        public var details: RawJSON { RawJSON(encoding: self) }

        /// Reads the `details` of a `no_eligible_backend` error.
        public init(details: RawJSON) throws(ProtocolError) {
            self = try details.decoded(as: Self.self)
        }
    }

    /// `details` of `no_common_version`: the versions the coordinator speaks.
    public struct NoCommonVersion: Hashable, Sendable, WireMembers {
        public var supported: [Int]
        public init(supported: [Int]) { self.supported = supported }

        static var blank: Self { Self(supported: []) }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.required("supported", &supported)
        }

        /// As the `details` of an error.
        public var details: RawJSON { RawJSON(encoding: self) }

        /// Reads the `details` of a `no_common_version` error.
        public init(details: RawJSON) throws(ProtocolError) {
            self = try details.decoded(as: Self.self)
        }
    }

    /// `details` of `attempts_exhausted`: every attempt of the job, as `job_info.history` lists them.
    public struct AttemptsExhausted: Hashable, Sendable, WireMembers {
        public var history: [AttemptRecord]
        public init(history: [AttemptRecord]) { self.history = history }

        static var blank: Self { Self(history: []) }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.list("history", &history, maxCount: 1000, optional: false)
        }

        /// As the `details` of an error.
        public var details: RawJSON { RawJSON(encoding: self) }

        /// Reads the `details` of an `attempts_exhausted` error.
        public init(details: RawJSON) throws(ProtocolError) {
            self = try details.decoded(as: Self.self)
        }
    }
}

// MARK: - Versions and models

extension CapabilityVersion: WireMembers {
    static var blank: Self { Self(incarnation: Incarnation(0), revision: 1) }

    @inline(__always)
    mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
        try c.required("incarnation", &incarnation)
        try c.required("revision", &revision)
        try c.check("revision", revision >= 1, "must be at least 1")
    }
}

extension Wire {
    /// A binding the coordinator holds: job and lease.
    public struct Binding: Hashable, Sendable, WireMembers {
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

    /// A job a backend holds as it says `hello` (`hello.jobs`): assigned to it under `lease` as
    /// attempt `attempt`, running, waiting for a slot, or ended with its final message not yet
    /// delivered.
    public struct HeldJob: Hashable, Sendable, WireMembers {
        public var job: JobID
        public var lease: Lease
        public var attempt: Int
        public init(job: JobID, lease: Lease, attempt: Int) {
            self.job = job
            self.lease = lease
            self.attempt = attempt
        }

        static var blank: Self { Self(job: JobID(0), lease: Lease(0), attempt: 1) }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.required("job", &job)
            try c.required("lease", &lease)
            try c.int("attempt", &attempt, in: 1...1000)
        }
    }
}

/// `capabilities` payload: the snapshot's members after `type`.
extension CapabilitySnapshot: WireMessage, WireMembers {
    static let wireType: StaticString = "capabilities"

    static var blank: Self {
        Self(
            wireVersion: .blank, state: .starting, features: [], modelsAvailable: [], modelsLoaded: [], slots: 0,
            speed: nil, nodes: [], devices: [], jobSeconds: [], modelLoadSeconds: nil)
    }

    @inline(__always)
    mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
        try c.required("incarnation", &version.incarnation)
        try c.required("revision", &version.revision)
        try c.check(
            "revision", version.revision >= 1, "must be at least 1 (the first snapshot of an incarnation is 1)")
        try c.required("state", &state)
        try c.names("features", &features, .feature, maxCount: ProtocolLimits.maxFeatures, optional: false)
        try c.object("models") { c throws(ProtocolError) in
            try c.names("available", &modelsAvailable, .model, maxCount: ProtocolLimits.maxModels, optional: false)
            try c.names("loaded", &modelsLoaded, .model, maxCount: ProtocolLimits.maxModels, optional: false)
        }
        try c.int("slots", &slots, in: 0...Int64(ProtocolLimits.maxSlots))
        try c.optional("speed", &speed)
        try c.check(
            "speed", speed.map { $0 > 0 && $0 <= ProtocolLimits.maxSpeed } ?? true,
            "must be a number above 0 and at most \(Int(ProtocolLimits.maxSpeed))")
        try c.list("job_seconds", &jobSeconds, maxCount: ProtocolLimits.maxFeatures, optional: true)
        try c.optional("model_load_seconds", &modelLoadSeconds)
        try c.check(
            "model_load_seconds", modelLoadSeconds.map { $0 >= 0 && $0 <= ProtocolLimits.maxAnnouncedSeconds } ?? true,
            "must be a number from 0 to \(Int(ProtocolLimits.maxAnnouncedSeconds))")
        try c.names("nodes", &nodes, .nodeClass, maxCount: ProtocolLimits.maxNodes, optional: true)
        try c.list("devices", &devices, maxCount: ProtocolLimits.maxDevices, optional: true)
        try c.string("message", &message, .message)
        try c.decoded { _ throws(ProtocolError) in
            var kinds = Set<String>()
            for k in jobSeconds where !kinds.insert(k.kind).inserted {
                throw .invalid("job_seconds", "names kind \(k.kind) twice")
            }
            // The lists arrive sorted as a rule; the initialiser sorts them when they do not.
            let message = self.message
            self = Self(
                wireVersion: version, state: state, features: features, modelsAvailable: modelsAvailable,
                modelsLoaded: modelsLoaded, slots: slots, speed: speed, nodes: nodes, devices: devices,
                jobSeconds: jobSeconds, modelLoadSeconds: modelLoadSeconds)
            self.message = message
        }
    }

    /// The public initialiser's normalisation (sorted, distinct) without its cost when the lists
    /// arrive sorted, as they usually do; the decoder has already rejected repeats.
    init(
        wireVersion: CapabilityVersion, state: BackendState, features: [String], modelsAvailable: [String],
        modelsLoaded: [String], slots: Int, speed: Double?, nodes: [String], devices: [DeviceTelemetry],
        jobSeconds: [KindSeconds], modelLoadSeconds: Double?
    ) {
        func normalised(_ list: [String]) -> [String] {
            for i in list.indices.dropFirst() where !(list[i - 1] < list[i]) { return list.sorted() }
            return list
        }
        self.version = wireVersion
        self.state = state
        self.features = normalised(features)
        self.modelsAvailable = normalised(modelsAvailable)
        self.modelsLoaded = normalised(modelsLoaded)
        self.slots = slots
        self.speed = speed
        self.nodes = normalised(nodes)
        self.devices = devices
        self.jobSeconds = KindSeconds.normalised(jobSeconds)
        self.modelLoadSeconds = modelLoadSeconds
    }

}

extension KindSeconds: WireMembers {
    static var blank: Self { Self(kind: "", seconds: 0) }

    @inline(__always)
    mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
        try c.string("kind", &kind, .feature)
        try c.required("seconds", &seconds)
        try c.check(
            "seconds", seconds > 0 && seconds <= ProtocolLimits.maxAnnouncedSeconds,
            "must be a number above 0 and at most \(Int(ProtocolLimits.maxAnnouncedSeconds))")
    }
}

extension DeviceTelemetry: WireMembers {
    static var blank: Self { Self(name: "", type: "", vramTotal: 0, vramFree: 0) }

    @inline(__always)
    mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
        try c.string("name", &name, .key)
        try c.string("type", &type, .key)
        try c.required("vram_total", &vramTotal)
        try c.required("vram_free", &vramFree)
    }
}
