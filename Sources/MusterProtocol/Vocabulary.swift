// The shared vocabulary of Muster: identifiers and value types used by the wire protocol and the
// core state machine alike. Names and existing stored properties here are stable; new members may
// be added (with defaults) but nothing is renamed, because both MusterCore and the codecs use them.

/// Identifies a backend. Remote backends get positive ids (stable per name across reconnects);
/// local pseudo-backends running inside the coordinator have negative ids: -1, -2, ...
public struct BackendID: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: Int64
    public init(rawValue: Int64) { self.rawValue = rawValue }
    public init(_ rawValue: Int64) { self.rawValue = rawValue }
    /// True for pseudo-backends that live inside the coordinator process.
    public var isLocal: Bool { rawValue < 0 }
    public static func < (a: BackendID, b: BackendID) -> Bool { a.rawValue < b.rawValue }
    public var description: String { String(rawValue) }
    /// The order backends are listed in (`status_report`, `GET /v1/backends`, `muster status`):
    /// local pseudo-backends first, -1, -2, ... (the order of the `backends` entries), then
    /// remote ones by ascending id.
    public static func listedBefore(_ a: BackendID, _ b: BackendID) -> Bool {
        if a.isLocal != b.isLocal { return a.isLocal }
        return a.isLocal ? a.rawValue > b.rawValue : a.rawValue < b.rawValue
    }
}

/// Identifies a job; assigned by the coordinator, unique for the coordinator's lifetime.
public struct JobID: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }
    public static func < (a: JobID, b: JobID) -> Bool { a.rawValue < b.rawValue }
    public var description: String { String(rawValue) }
}

/// Identifies a batch of jobs submitted together.
public struct BatchID: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }
    public static func < (a: BatchID, b: BatchID) -> Bool { a.rawValue < b.rawValue }
    public var description: String { String(rawValue) }
}

/// A fencing token: every binding of a job to a backend gets a new, strictly larger lease.
/// Messages about a job that name any other lease than the current one are stale and change nothing.
public struct Lease: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }
    public static func < (a: Lease, b: Lease) -> Bool { a.rawValue < b.rawValue }
    public var description: String { String(rawValue) }
}

/// A backend process's incarnation: chosen anew by the backend on every process start and larger
/// than any earlier incarnation of the same backend (the spec says: start time in milliseconds
/// since the Unix epoch). A larger incarnation means the backend restarted: its old leases died.
public struct Incarnation: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }
    public static func < (a: Incarnation, b: Incarnation) -> Bool { a.rawValue < b.rawValue }
    public var description: String { String(rawValue) }
}

/// The version of a capability announcement: ordered by incarnation first, then revision.
/// Revisions strictly increase within one incarnation.
public struct CapabilityVersion: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var incarnation: Incarnation
    public var revision: UInt64
    public init(incarnation: Incarnation, revision: UInt64) {
        self.incarnation = incarnation
        self.revision = revision
    }
    public static func < (a: CapabilityVersion, b: CapabilityVersion) -> Bool {
        (a.incarnation, a.revision) < (b.incarnation, b.revision)
    }
    public var description: String { "\(incarnation).\(revision)" }
}

/// What a backend says about itself in a capability announcement.
public enum BackendState: String, Hashable, Sendable, CaseIterable {
    /// The process is up but has not begun loading.
    case starting
    /// Loading models or extensions; features are not final yet.
    case loading
    /// Takes jobs; the announced features and models are final for this revision.
    case ready
    /// Finishes the jobs it has, takes no new ones.
    case draining
}

/// A full capability snapshot, as announced by a backend (never a delta).
/// `features` and the model lists are sorted and free of duplicates.
public struct CapabilitySnapshot: Hashable, Sendable {
    public var version: CapabilityVersion
    public var state: BackendState
    public var features: [String]
    public var modelsAvailable: [String]
    public var modelsLoaded: [String]
    public var slots: Int
    /// How fast the backend runs jobs relative to 1.0 (2.0: in half the time), a prior for the
    /// coordinator's estimates; nil when it does not say.
    public var speed: Double?
    /// How long a job of each kind takes on this backend, as far as it knows (its own
    /// configuration): the coordinator's prior for this backend until its jobs are measured.
    /// Sorted by kind, one entry per kind; empty when it does not say.
    public var jobSeconds: [KindSeconds]
    /// How long this backend takes to load a model, as far as it knows; nil when it does not say.
    public var modelLoadSeconds: Double?
    /// Node classes the backend can run (a ComfyUI's `/object_info` keys); empty for backends that
    /// do not run node graphs. Jobs whose workflow uses a class run only where it is listed.
    public var nodes: [String]
    /// Device telemetry (name, type, memory), for people and metrics; routing ignores it.
    public var devices: [DeviceTelemetry]
    /// Why the backend is in this state, for people: e.g. what a `loading` backend waits for.
    public var message: String?

    public init(
        version: CapabilityVersion, state: BackendState, features: [String],
        modelsAvailable: [String], modelsLoaded: [String], slots: Int, speed: Double? = nil, nodes: [String] = [],
        devices: [DeviceTelemetry] = [], message: String? = nil, jobSeconds: [KindSeconds] = [],
        modelLoadSeconds: Double? = nil
    ) {
        self.message = message
        self.version = version
        self.state = state
        self.features = Array(Set(features)).sorted()
        self.modelsAvailable = Array(Set(modelsAvailable)).sorted()
        self.modelsLoaded = Array(Set(modelsLoaded)).sorted()
        self.slots = slots
        self.speed = speed
        self.nodes = Array(Set(nodes)).sorted()
        self.devices = devices
        self.jobSeconds = KindSeconds.normalised(jobSeconds)
        self.modelLoadSeconds = modelLoadSeconds
    }
}

/// How long a job of one kind takes on a backend (`job_seconds` of `capabilities`).
public struct KindSeconds: Hashable, Sendable {
    public var kind: String
    public var seconds: Double

    public init(kind: String, seconds: Double) {
        self.kind = kind
        self.seconds = seconds
    }

    /// Sorted by kind, the first of each kind kept.
    static func normalised(_ list: [KindSeconds]) -> [KindSeconds] {
        if list.count < 2 { return list }
        var seen = Set<String>()
        return list.filter { seen.insert($0.kind).inserted }.sorted { $0.kind < $1.kind }
    }
}

/// One compute device of a backend, as its server reports it (ComfyUI's `/system_stats`).
public struct DeviceTelemetry: Hashable, Sendable {
    /// E.g. `cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync`, or `cpu`.
    public var name: String
    /// E.g. `cuda`, `cpu`, `mps`.
    public var type: String
    /// Bytes.
    public var vramTotal: UInt64
    /// Bytes.
    public var vramFree: UInt64

    public init(name: String, type: String, vramTotal: UInt64, vramFree: UInt64) {
        self.name = name
        self.type = type
        self.vramTotal = vramTotal
        self.vramFree = vramFree
    }
}

/// The lifecycle states of a job.
public enum JobState: String, Hashable, Sendable, CaseIterable {
    case queued, gated, bound, running, completed, failed, canceled
    /// Completed, failed and canceled are final: a job reaches exactly one of them, once.
    public var isFinal: Bool { self == .completed || self == .failed || self == .canceled }
}

/// Opaque JSON (job params, job results): kept as validated JSON text, never interpreted by the
/// coordinator, re-emitted verbatim.
public struct RawJSON: Hashable, Sendable, CustomStringConvertible {
    public var text: String
    /// Wraps text the caller has already validated as one JSON value.
    public init(unchecked text: String) { self.text = text }
    public static let emptyObject = RawJSON(unchecked: "{}")
    public static let null = RawJSON(unchecked: "null")
    public var description: String { text }
}

/// What a client asks to run. `count` copies of the same spec make a batch entry.
public struct JobSpec: Hashable, Sendable {
    /// The kind of work, e.g. `image` or `video`; picks the duration estimate.
    public var kind: String
    /// Features every eligible backend must announce (sorted, no duplicates).
    public var needs: [String]
    /// The model the job uses, if any.
    public var model: String?
    public var params: RawJSON
    /// Higher runs first.
    public var priority: Int
    /// Who submitted it; fairness is round-robin between owners within a priority.
    public var owner: String
    /// Node classes every eligible backend must have (sorted, no duplicates): the `class_type`s
    /// of the ComfyUI workflow in `params.workflow`, derived by the coordinator.
    public var nodes: [String]

    public init(
        kind: String, needs: [String] = [], model: String? = nil, params: RawJSON = .emptyObject,
        priority: Int = 0, owner: String = "anonymous", nodes: [String] = []
    ) {
        self.kind = kind
        self.needs = Array(Set(needs)).sorted()
        self.model = model
        self.params = params
        self.priority = priority
        self.owner = owner
        self.nodes = Array(Set(nodes)).sorted()
    }
}

/// How one attempt of a job ended: `outcome` of `job_info.history` (Protocol/README.md section 8).
/// The core records it and the wire carries it, so there is one type. Open set: accept unknown
/// values.
public struct AttemptOutcome: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public init(_ rawValue: String) { self.rawValue = rawValue }
    public var description: String { rawValue }

    /// Open attempt, not started yet.
    public static let bound = AttemptOutcome("bound")
    /// Open attempt, running.
    public static let running = AttemptOutcome("running")
    public static let completed = AttemptOutcome("completed")
    /// The job failed on this attempt (the backend's failure, or attempts ran out).
    public static let failed = AttemptOutcome("failed")
    public static let canceled = AttemptOutcome("canceled")
    /// The attempt ended without the job's fault (retryable failure, backend lost or restarted):
    /// the job went back to the queue.
    public static let requeued = AttemptOutcome("requeued")
    /// Taken back by work stealing before it started.
    public static let revoked = AttemptOutcome("revoked")
}

/// Why a held job left the warm-up gate: `cause` of a `released` job event (Protocol/README.md
/// 7.2). One type for the core and the wire. Open set: accept unknown values.
public struct ReleaseCause: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public init(_ rawValue: String) { self.rawValue = rawValue }
    public var description: String { rawValue }

    /// Every backend the gate waited for has announced (the event names the last one).
    public static let announced = ReleaseCause("announced")
    /// The gate window of the last backend it waited for ended.
    public static let windowElapsed = ReleaseCause("window_elapsed")
    /// The last backend it waited for said `goodbye` before it announced.
    public static let backendLeft = ReleaseCause("backend_left")
    /// An eligible backend had an idle running slot, which a held job may always take (the event
    /// names that backend).
    public static let idleBackend = ReleaseCause("idle_backend")
    /// The gate was turned off while the job was held.
    public static let gateDisabled = ReleaseCause("gate_disabled")
    /// After a coordinator restart, the backend that still runs the job claimed it in its
    /// `hello` (the event names that backend; `bound` follows).
    public static let claimed = ReleaseCause("claimed")
}

/// A machine-readable error code, shared by protocol errors, job failures and HTTP errors.
/// The set is open: peers must accept codes they do not know.
public struct ErrorCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public init(_ rawValue: String) { self.rawValue = rawValue }
    public var description: String { rawValue }

    public static let malformedJSON = ErrorCode("malformed_json")
    public static let invalidMessage = ErrorCode("invalid_message")
    public static let unknownType = ErrorCode("unknown_type")
    public static let messageTooLarge = ErrorCode("message_too_large")
    public static let badCredentials = ErrorCode("bad_credentials")
    public static let noCommonVersion = ErrorCode("no_common_version")
    public static let wrongRole = ErrorCode("wrong_role")
    public static let notRegistered = ErrorCode("not_registered")
    public static let staleLease = ErrorCode("stale_lease")
    public static let unknownJob = ErrorCode("unknown_job")
    public static let unknownBatch = ErrorCode("unknown_batch")
    public static let unknownBackend = ErrorCode("unknown_backend")
    public static let noEligibleBackend = ErrorCode("no_eligible_backend")
    public static let attemptsExhausted = ErrorCode("attempts_exhausted")
    public static let jobFailed = ErrorCode("job_failed")
    public static let canceled = ErrorCode("canceled")
    public static let limitExceeded = ErrorCode("limit_exceeded")
    public static let shuttingDown = ErrorCode("shutting_down")
    /// The job store cannot write (cannot open, read-only, disk full, corrupt) or is too far
    /// behind: nothing new is accepted until it can.
    public static let storeUnavailable = ErrorCode("store_unavailable")
    public static let internalError = ErrorCode("internal_error")
}
