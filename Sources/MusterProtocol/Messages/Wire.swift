// Objects shared by both subprotocols and the HTTP API.

/// Namespace for the objects that appear in several messages and HTTP bodies.
public enum Wire {}

// MARK: - Errors

extension Wire {
    /// The one error shape: `{code, message, details}`. HTTP error bodies are exactly this object.
    public struct ErrorBody: Hashable, Sendable, WireBody {
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

        static func decode(_ o: inout JSONObjectReader) throws(ProtocolError) -> Self {
            Self(
                code: try o.required("code"), message: try o.string("message", .message),
                details: try o.raw("details", object: true, maxBytes: o.doc.limits.maxMessageBytes))
        }

        func encodeMembers(_ w: inout JSONWriter) {
            w.member("code", code)
            w.member("message", message)
            w.member("details", details)
        }

        public static func decode(_ bytes: UnsafeBufferPointer<UInt8>, limits: ProtocolLimits) throws(ProtocolError)
            -> Self
        { try decodeBody(bytes, limits: limits) }
        public func encode() -> [UInt8] { encodeBody() }
    }

    /// The `error` message (both subprotocols, both directions): the error shape plus the `id` of
    /// the request it answers, if any.
    public struct ErrorMessage: Hashable, Sendable, WireMessage {
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

        static func decode(_ o: inout JSONObjectReader) throws(ProtocolError) -> Self {
            Self(
                id: try o.optionalString("id", .key), code: try o.required("code"),
                message: try o.string("message", .message),
                details: try o.raw("details", object: true, maxBytes: o.doc.limits.maxMessageBytes))
        }

        func encodeMembers(_ w: inout JSONWriter) {
            w.member("id", id)
            w.member("code", code)
            w.member("message", message)
            w.member("details", details)
        }
    }

    /// `goodbye` (both subprotocols, both directions): the sender is about to close the link on
    /// purpose. The close code follows (1001 for shutdown or restart, 1000 otherwise).
    public struct Goodbye: Hashable, Sendable, WireMessage {
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

        static func decode(_ o: inout JSONObjectReader) throws(ProtocolError) -> Self {
            Self(
                reason: try o.string("reason", .code), message: try o.optionalString("message", .message),
                reconnectAfterMs: try o.optional("reconnect_after_ms"))
        }

        func encodeMembers(_ w: inout JSONWriter) {
            w.member("reason", reason)
            w.member("message", message)
            w.member("reconnect_after_ms", reconnectAfterMs)
        }
    }

    /// `details` of `no_eligible_backend`: what the job needs that nobody offers, and per backend
    /// considered, why it was refused.
    public struct NoEligibleBackend: Hashable, Sendable, WireObject {
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
        public struct Refusal: Hashable, Sendable, WireObject {
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

            static func decode(_ o: inout JSONObjectReader) throws(ProtocolError) -> Self {
                Self(
                    backend: try o.required("backend"), name: try o.string("name", .name),
                    reasons: try o.names("reasons", .code, maxCount: 16),
                    missingFeatures: try o.names(
                        "missing_features", .feature, maxCount: ProtocolLimits.maxNeeds, required: false),
                    missingNodes: try o.names(
                        "missing_nodes", .nodeClass, maxCount: ProtocolLimits.maxNodes, required: false))
            }

            func encodeMembers(_ w: inout JSONWriter) {
                w.member("backend", backend)
                w.member("name", name)
                w.member("reasons", reasons)
                if !missingFeatures.isEmpty { w.member("missing_features", missingFeatures) }
                if !missingNodes.isEmpty { w.member("missing_nodes", missingNodes) }
            }
        }

        static func decode(_ o: inout JSONObjectReader) throws(ProtocolError) -> Self {
            Self(
                missingFeatures: try o.names("missing_features", .feature, maxCount: ProtocolLimits.maxNeeds),
                missingModel: try o.optionalString("missing_model", .model),
                missingNodes: try o.names("missing_nodes", .nodeClass, maxCount: ProtocolLimits.maxNodes, required: false),
                refusals: try o.list("refusals", maxCount: ProtocolLimits.maxListLength))
        }

        func encodeMembers(_ w: inout JSONWriter) {
            w.member("missing_features", missingFeatures)
            w.member("missing_model", missingModel)
            if !missingNodes.isEmpty { w.member("missing_nodes", missingNodes) }
            w.member("refusals", refusals)
        }

        /// As the `details` of an error.
        public var details: RawJSON { RawJSON(encoding: self) }

        /// Reads the `details` of a `no_eligible_backend` error.
        public init(details: RawJSON) throws(ProtocolError) {
            self = try details.decoded(as: Self.self)
        }
    }

    /// `details` of `no_common_version`: the versions the coordinator speaks.
    public struct NoCommonVersion: Hashable, Sendable, WireObject {
        public var supported: [Int]
        public init(supported: [Int]) { self.supported = supported }

        static func decode(_ o: inout JSONObjectReader) throws(ProtocolError) -> Self {
            let list: [Int64] = try o.required("supported")
            return Self(supported: list.map { Int($0) })
        }

        func encodeMembers(_ w: inout JSONWriter) { w.member("supported", supported) }

        /// As the `details` of an error.
        public var details: RawJSON { RawJSON(encoding: self) }

        /// Reads the `details` of a `no_common_version` error.
        public init(details: RawJSON) throws(ProtocolError) {
            self = try details.decoded(as: Self.self)
        }
    }

    /// `details` of `attempts_exhausted`: every attempt of the job, as `job_info.history` lists them.
    public struct AttemptsExhausted: Hashable, Sendable, WireObject {
        public var history: [AttemptRecord]
        public init(history: [AttemptRecord]) { self.history = history }

        static func decode(_ o: inout JSONObjectReader) throws(ProtocolError) -> Self {
            Self(history: try o.list("history", maxCount: 1000))
        }

        func encodeMembers(_ w: inout JSONWriter) { w.member("history", history) }

        /// As the `details` of an error.
        public var details: RawJSON { RawJSON(encoding: self) }

        /// Reads the `details` of an `attempts_exhausted` error.
        public init(details: RawJSON) throws(ProtocolError) {
            self = try details.decoded(as: Self.self)
        }
    }
}

// MARK: - Versions and models

extension CapabilityVersion: WireObject {
    static func decode(_ o: inout JSONObjectReader) throws(ProtocolError) -> Self {
        let incarnation: Incarnation = try o.required("incarnation")
        let revision: UInt64 = try o.required("revision")
        guard revision >= 1 else { throw .invalid("revision", "must be at least 1") }
        return Self(incarnation: incarnation, revision: revision)
    }

    func encodeMembers(_ w: inout JSONWriter) {
        w.member("incarnation", incarnation)
        w.member("revision", revision)
    }
}

extension Wire {
    /// `models` of a snapshot: what the backend can load and what it holds loaded now.
    struct Models: WireObject {
        var available: [String]
        var loaded: [String]

        static func decode(_ o: inout JSONObjectReader) throws(ProtocolError) -> Self {
            Self(
                available: try o.names("available", .model, maxCount: ProtocolLimits.maxModels),
                loaded: try o.names("loaded", .model, maxCount: ProtocolLimits.maxModels))
        }

        func encodeMembers(_ w: inout JSONWriter) {
            w.member("available", available)
            w.member("loaded", loaded)
        }
    }

    /// A binding the coordinator holds: job and lease.
    public struct Binding: Hashable, Sendable, WireObject {
        public var job: JobID
        public var lease: Lease
        public init(job: JobID, lease: Lease) {
            self.job = job
            self.lease = lease
        }

        static func decode(_ o: inout JSONObjectReader) throws(ProtocolError) -> Self {
            Self(job: try o.required("job"), lease: try o.required("lease"))
        }

        func encodeMembers(_ w: inout JSONWriter) {
            w.member("job", job)
            w.member("lease", lease)
        }
    }
}

/// `capabilities` payload: the snapshot's members after `type`.
extension CapabilitySnapshot: WireMessage {
    static let wireType: StaticString = "capabilities"

    static func decode(_ o: inout JSONObjectReader) throws(ProtocolError) -> Self {
        let incarnation: Incarnation = try o.required("incarnation")
        let revision: UInt64 = try o.required("revision")
        guard revision >= 1 else { throw .invalid("revision", "must be at least 1 (the first snapshot of an incarnation is 1)") }
        let state: BackendState = try o.required("state")
        let features = try o.names("features", .feature, maxCount: ProtocolLimits.maxFeatures)
        let models: Wire.Models = try o.required("models")
        let slots = try o.int("slots", in: 0...Int64(ProtocolLimits.maxSlots))
        let speed: Double? = try o.optional("speed")
        if let speed, !(speed > 0 && speed <= ProtocolLimits.maxSpeed) {
            throw .invalid("speed", "must be a number above 0 and at most \(Int(ProtocolLimits.maxSpeed))")
        }
        let nodes = try o.names("nodes", .nodeClass, maxCount: ProtocolLimits.maxNodes, required: false)
        let devices: [DeviceTelemetry] = try o.list("devices", maxCount: ProtocolLimits.maxDevices, required: false)
        var s = Self(
            wireVersion: CapabilityVersion(incarnation: incarnation, revision: revision), state: state,
            features: features, modelsAvailable: models.available, modelsLoaded: models.loaded, slots: slots,
            speed: speed, nodes: nodes, devices: devices)
        s.message = try o.optionalString("message", .message)
        return s
    }

    /// The public initialiser's normalisation (sorted, distinct) without its cost when the lists
    /// arrive sorted, as they usually do; the decoder has already rejected repeats.
    init(
        wireVersion: CapabilityVersion, state: BackendState, features: [String], modelsAvailable: [String],
        modelsLoaded: [String], slots: Int, speed: Double?, nodes: [String], devices: [DeviceTelemetry]
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
    }

    func encodeMembers(_ w: inout JSONWriter) {
        w.member("incarnation", version.incarnation)
        w.member("revision", version.revision)
        w.member("state", state)
        w.member("features", features)
        w.member("models", Wire.Models(available: modelsAvailable, loaded: modelsLoaded))
        w.member("slots", slots)
        if let speed { w.member("speed", speed) }
        if !nodes.isEmpty { w.member("nodes", nodes) }
        if !devices.isEmpty { w.member("devices", devices) }
        w.member("message", message)
    }
}

extension DeviceTelemetry: WireObject {
    static func decode(_ o: inout JSONObjectReader) throws(ProtocolError) -> Self {
        Self(
            name: try o.string("name", .key), type: try o.string("type", .key),
            vramTotal: try o.required("vram_total"), vramFree: try o.required("vram_free"))
    }

    func encodeMembers(_ w: inout JSONWriter) {
        w.member("name", name)
        w.member("type", type)
        w.member("vram_total", vramTotal)
        w.member("vram_free", vramFree)
    }
}
