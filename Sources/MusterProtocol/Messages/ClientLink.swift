// Subprotocol `muster.client.v1`: clients submit batches and follow their jobs.

/// A message a client sends to the coordinator.
public enum ClientToCoordinator: Hashable, Sendable, ProtocolDecodable, ProtocolEncodable {
    case hello(Hello)
    case submit(Submit)
    case subscribe(Subscribe)
    case cancel(Cancel)
    case status(Status)
    case loadModel(Wire.LoadModelRequest)
    case drain(Drain)
    /// Common to both links in both directions (Protocol 10): a client reporting a problem, or
    /// saying why it closes.
    case error(Wire.ErrorMessage)
    case goodbye(Wire.Goodbye)

    /// The wire `type`.
    public var type: String {
        switch self {
        case .hello: "hello"
        case .submit: "submit"
        case .subscribe: "subscribe"
        case .cancel: "cancel"
        case .status: "status"
        case .loadModel: "load_model"
        case .drain: "drain"
        case .error: "error"
        case .goodbye: "goodbye"
        }
    }

    static let types: [StaticString] = [
        "hello", "submit", "subscribe", "cancel", "status", "load_model", "drain", "error", "goodbye",
    ]

    public static func decode(_ bytes: UnsafeBufferPointer<UInt8>, limits: ProtocolLimits) throws(ProtocolError)
        -> Self
    {
        try Envelope.decode(bytes, limits: limits) { type, o throws(ProtocolError) in
            switch type {
            case "hello": .hello(try .decode(&o))
            case "submit": .submit(try .decode(&o))
            case "subscribe": .subscribe(try .decode(&o))
            case "cancel": .cancel(try .decode(&o))
            case "status": .status(try .decode(&o))
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
        case .hello(let m): m.encodeMessage()
        case .submit(let m): m.encodeMessage()
        case .subscribe(let m): m.encodeMessage()
        case .cancel(let m): m.encodeMessage()
        case .status(let m): m.encodeMessage()
        case .loadModel(let m): m.encodeMessage()
        case .drain(let m): m.encodeMessage()
        case .error(let m): m.encodeMessage()
        case .goodbye(let m): m.encodeMessage()
        }
    }

    /// `hello` on the client link.
    public struct Hello: Hashable, Sendable, WireMessage, WireMembers {
        static let wireType: StaticString = "hello"
        public var id: String?
        /// Names the client in logs; the default `owner` of its jobs.
        public var name: String
        /// Never logged, never echoed.
        public var token: String
        public var versions: [Int]
        public var software: String?

        public init(
            id: String? = nil, name: String, token: String, versions: [Int] = Subprotocol.supportedVersions,
            software: String? = nil
        ) {
            self.id = id
            self.name = name
            self.token = token
            self.versions = versions
            self.software = software
        }

        static var blank: Self { Self(name: "", token: "", versions: []) }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.string("id", &id, .key)
            try c.role(.client)
            try c.string("name", &name, .name)
            try c.string("token", &token, .token)
            try c.versions(&versions)
            try c.string("software", &software, .key)
        }
    }

    /// Submit a batch. Same members as the body of `POST /v1/batches`, plus `id`.
    public struct Submit: Hashable, Sendable, WireMessage, WireMembers {
        static let wireType: StaticString = "submit"
        public var id: String?
        public var batch: Wire.BatchRequest
        public init(id: String? = nil, batch: Wire.BatchRequest) {
            self.id = id
            self.batch = batch
        }

        static var blank: Self { Self(batch: .blank) }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.string("id", &id, .key)
            try c.inline(&batch)
        }
    }

    /// Follow the jobs of one batch (or, without `batch`, every job). The coordinator answers
    /// `subscribed`, then sends each job's current state as a `job` event, then every change.
    public struct Subscribe: Hashable, Sendable, WireMessage, WireMembers {
        static let wireType: StaticString = "subscribe"
        public var id: String?
        public var batch: BatchID?
        /// The `job` events to send (their `event` names, `snapshot` included); empty: every one.
        public var events: [String]
        /// Of the jobs in scope that had already ended, only this many get a snapshot: those that
        /// ended last (nil: every one). The others are counted in `subscribed.omitted`.
        public var finishedSnapshots: Int?
        public init(id: String? = nil, batch: BatchID? = nil, events: [String] = [], finishedSnapshots: Int? = nil) {
            self.id = id
            self.batch = batch
            self.events = events
            self.finishedSnapshots = finishedSnapshots
        }

        static var blank: Self { Self(batch: nil) }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.string("id", &id, .key)
            try c.optional("batch", &batch)
            try c.names("events", &events, .code, maxCount: ProtocolLimits.maxEvents, optional: true)
            try c.int("finished_snapshots", &finishedSnapshots, in: 0...Int64(Int32.max))
        }
    }

    /// Cancel one job or every job of a batch: exactly one of `job` and `batch`.
    public struct Cancel: Hashable, Sendable, WireMessage, WireMembers {
        static let wireType: StaticString = "cancel"
        public var id: String?
        public var target: Target

        /// What to cancel.
        public enum Target: Hashable, Sendable {
            case job(JobID)
            case batch(BatchID)
        }

        public init(id: String? = nil, target: Target) {
            self.id = id
            self.target = target
        }

        static var blank: Self { Self(target: .job(JobID(0))) }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            var job: JobID?
            var batch: BatchID?
            switch target {
            case .job(let j): job = j
            case .batch(let b): batch = b
            }
            try c.string("id", &id, .key)
            try c.optional("job", &job)
            try c.optional("batch", &batch)
            try c.decoded { _ throws(ProtocolError) in
                switch (job, batch) {
                case (let job?, nil): target = .job(job)
                case (nil, let batch?): target = .batch(batch)
                case (nil, nil): throw .invalid("", "one of 'job' and 'batch' is required")
                case (_?, _?): throw .invalid("", "give either 'job' or 'batch', not both")
                }
            }
        }
    }

    /// Ask for a `status_report`.
    public struct Status: Hashable, Sendable, WireMessage, WireMembers {
        static let wireType: StaticString = "status"
        public var id: String?
        public init(id: String? = nil) { self.id = id }

        static var blank: Self { Self(id: nil) }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.string("id", &id, .key)
        }
    }

    /// Drain one backend: it gets no new jobs, finishes those it has, then (a remote one) says
    /// `goodbye` and closes. Answered by `draining`.
    public struct Drain: Hashable, Sendable, WireMessage, WireMembers {
        static let wireType: StaticString = "drain"
        public var id: String?
        public var backend: BackendID
        public init(id: String? = nil, backend: BackendID) {
            self.id = id
            self.backend = backend
        }

        static var blank: Self { Self(backend: BackendID(1)) }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.string("id", &id, .key)
            try c.required("backend", &backend)
        }
    }
}

/// A message the coordinator sends to a client.
public enum CoordinatorToClient: Hashable, Sendable, ProtocolDecodable, ProtocolEncodable {
    case welcome(Welcome)
    case accepted(Wire.Accepted)
    case subscribed(Subscribed)
    case job(JobEvent)
    case canceled(Canceled)
    case statusReport(StatusReport)
    case modelsLoading(Wire.ModelsLoading)
    case draining(Draining)
    case error(Wire.ErrorMessage)
    case goodbye(Wire.Goodbye)

    /// The wire `type`.
    public var type: String {
        switch self {
        case .welcome: "welcome"
        case .accepted: "accepted"
        case .subscribed: "subscribed"
        case .job: "job"
        case .canceled: "canceled"
        case .statusReport: "status_report"
        case .modelsLoading: "models_loading"
        case .draining: "draining"
        case .error: "error"
        case .goodbye: "goodbye"
        }
    }

    static let types: [StaticString] = [
        "welcome", "accepted", "subscribed", "job", "canceled", "status_report", "models_loading", "draining", "error",
        "goodbye",
    ]

    public static func decode(_ bytes: UnsafeBufferPointer<UInt8>, limits: ProtocolLimits) throws(ProtocolError)
        -> Self
    {
        try Envelope.decode(bytes, limits: limits) { type, o throws(ProtocolError) in
            switch type {
            case "job": .job(try .decode(&o))
            case "welcome": .welcome(try .decode(&o))
            case "accepted": .accepted(try .decode(&o))
            case "subscribed": .subscribed(try .decode(&o))
            case "canceled": .canceled(try .decode(&o))
            case "status_report": .statusReport(try .decode(&o))
            case "models_loading": .modelsLoading(try .decode(&o))
            case "draining": .draining(try .decode(&o))
            case "error": .error(try .decode(&o))
            case "goodbye": .goodbye(try .decode(&o))
            default: throw Envelope.unknownType(type, known: types)
            }
        }
    }

    public func encode() -> [UInt8] {
        switch self {
        case .welcome(let m): m.encodeMessage()
        case .accepted(let m): m.encodeMessage()
        case .subscribed(let m): m.encodeMessage()
        case .job(let m): m.encodeMessage()
        case .canceled(let m): m.encodeMessage()
        case .statusReport(let m): m.encodeMessage()
        case .modelsLoading(let m): m.encodeMessage()
        case .draining(let m): m.encodeMessage()
        case .error(let m): m.encodeMessage()
        case .goodbye(let m): m.encodeMessage()
        }
    }

    /// The answer to a client's `hello`.
    public struct Welcome: Hashable, Sendable, WireMessage, WireMembers {
        static let wireType: StaticString = "welcome"
        public var id: String?
        public var version: Int
        public var coordinator: String
        public var heartbeatMs: UInt64
        public var maxMessageBytes: Int
        /// What the credential of this link allows: `all` (the shared token, or no credentials
        /// configured), `operator`, `client` or `read` (an open set). Absent from older coordinators.
        public var role: String?
        /// With `client`: the owner whose batches this link submits, sees and cancels.
        public var owner: String?
        public init(
            id: String? = nil, version: Int = 1, coordinator: String, heartbeatMs: UInt64,
            maxMessageBytes: Int = ProtocolLimits.default.maxMessageBytes, role: String? = nil, owner: String? = nil
        ) {
            self.id = id
            self.version = version
            self.coordinator = coordinator
            self.heartbeatMs = heartbeatMs
            self.maxMessageBytes = maxMessageBytes
            self.role = role
            self.owner = owner
        }

        static var blank: Self { Self(coordinator: "", heartbeatMs: 0) }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.string("id", &id, .key)
            try c.int("version", &version, in: 1...1000)
            try c.string("coordinator", &coordinator, .key)
            try c.required("heartbeat_ms", &heartbeatMs)
            try c.int("max_message_bytes", &maxMessageBytes, in: 1024...Int64(Int32.max))
            try c.string("role", &role, .key)
            try c.string("owner", &owner, .key)
        }
    }

    /// The answer to `subscribe`.
    public struct Subscribed: Hashable, Sendable, WireMessage, WireMembers {
        static let wireType: StaticString = "subscribed"
        public var id: String?
        public var batch: BatchID?
        /// With `subscribe.finished_snapshots`: the jobs in scope that had ended and get no
        /// snapshot, by how they ended.
        public var omitted: Ended?
        public init(id: String? = nil, batch: BatchID? = nil, omitted: Ended? = nil) {
            self.id = id
            self.batch = batch
            self.omitted = omitted
        }

        static var blank: Self { Self(batch: nil) }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.string("id", &id, .key)
            try c.optional("batch", &batch)
            try c.optional("omitted", &omitted)
        }

        /// Jobs counted by how they ended.
        public struct Ended: Hashable, Sendable, WireMembers {
            public var completed: Int
            public var failed: Int
            public var canceled: Int

            public init(completed: Int = 0, failed: Int = 0, canceled: Int = 0) {
                self.completed = completed
                self.failed = failed
                self.canceled = canceled
            }

            static var blank: Self { Self() }

            @inline(__always)
            mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
                try c.int("completed", &completed, in: 0...Int64(Int32.max))
                try c.int("failed", &failed, in: 0...Int64(Int32.max))
                try c.int("canceled", &canceled, in: 0...Int64(Int32.max))
            }
        }
    }

    /// The answer to `cancel`: the jobs that were canceled by it (already final ones are not listed).
    public struct Canceled: Hashable, Sendable, WireMessage, WireMembers {
        static let wireType: StaticString = "canceled"
        public var id: String?
        public var jobs: [JobID]
        public init(id: String? = nil, jobs: [JobID]) {
            self.id = id
            self.jobs = jobs
        }

        static var blank: Self { Self(jobs: []) }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.string("id", &id, .key)
            try c.required("jobs", &jobs)
        }
    }

    /// The answer to `drain`: the backend takes no new jobs from now on. Also the body of
    /// `POST /v1/backends/{id}/drain` (HTTP 202).
    public struct Draining: Hashable, Sendable, WireMessage, WireBody, WireMembers {
        static let wireType: StaticString = "draining"
        public var id: String?
        public var backend: BackendID
        public init(id: String? = nil, backend: BackendID) {
            self.id = id
            self.backend = backend
        }

        static var blank: Self { Self(backend: BackendID(1)) }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.string("id", &id, .key)
            try c.required("backend", &backend)
        }

        public static func decode(_ bytes: UnsafeBufferPointer<UInt8>, limits: ProtocolLimits) throws(ProtocolError)
            -> Self
        { try decodeBody(bytes, limits: limits) }
        public func encode() -> [UInt8] { encodeBody() }
    }

    /// The answer to `status`: readiness, backends, queue.
    public struct StatusReport: Hashable, Sendable, WireMessage, WireMembers {
        static let wireType: StaticString = "status_report"
        public var id: String?
        public var readiness: Wire.Readiness
        public var backends: [Wire.BackendInfo]
        public var queue: Wire.QueueSummary
        public init(
            id: String? = nil, readiness: Wire.Readiness, backends: [Wire.BackendInfo], queue: Wire.QueueSummary
        ) {
            self.id = id
            self.readiness = readiness
            self.backends = backends
            self.queue = queue
        }

        static var blank: Self { Self(readiness: .blank, backends: [], queue: .blank) }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.string("id", &id, .key)
            try c.required("readiness", &readiness)
            try c.list("backends", &backends, maxCount: ProtocolLimits.maxListLength, optional: false)
            try c.required("queue", &queue)
        }
    }

    /// One transition of one job. `event` says what happened, `state` is the state after it.
    public struct JobEvent: Hashable, Sendable, WireMessage, WireMembers {
        static let wireType: StaticString = "job"
        public var job: JobID
        public var batch: BatchID
        public var event: JobEventKind
        public var state: JobState
        public var attempt: Int
        /// Milliseconds since the Unix epoch, coordinator clock.
        public var atMs: UInt64
        /// The backend the job is bound to or ran on.
        public var backend: BackendID?
        /// With `progress`: 0...1.
        public var progress: Double?
        /// With `progress`: the backend's text.
        public var message: String?
        /// With `completed`.
        public var result: RawJSON?
        /// With `failed`, `canceled` and `requeued`.
        public var error: Wire.ErrorBody?
        /// With `gated`: what the job waits for.
        public var waiting: Wire.GateWait?
        /// With `released`: open set `announced`, `window_elapsed`, `backend_left`, `idle_backend`, `claimed`, `gate_disabled`.
        public var cause: ReleaseCause?
        /// With `bound`: milliseconds from the binding until the job is expected to complete on
        /// `backend`, and the backend expected to finish it soonest after that one, with its time.
        public var expectedMs: UInt64?
        public var runnerUp: BackendID?
        public var runnerUpExpectedMs: UInt64?
        /// With `snapshot`, when the job's current attempt started (it is running, or it ended
        /// after starting): the job event a subscriber may have missed.
        public var startedMs: UInt64?
        /// With `snapshot` of a final job: when it ended (`at_ms` is when the snapshot was taken).
        public var finishedMs: UInt64?

        public init(
            job: JobID, batch: BatchID, event: JobEventKind, state: JobState, attempt: Int, atMs: UInt64,
            backend: BackendID? = nil, progress: Double? = nil, message: String? = nil, result: RawJSON? = nil,
            error: Wire.ErrorBody? = nil, waiting: Wire.GateWait? = nil, cause: ReleaseCause? = nil,
            expectedMs: UInt64? = nil, runnerUp: BackendID? = nil, runnerUpExpectedMs: UInt64? = nil,
            startedMs: UInt64? = nil, finishedMs: UInt64? = nil
        ) {
            self.job = job
            self.batch = batch
            self.event = event
            self.state = state
            self.attempt = attempt
            self.atMs = atMs
            self.backend = backend
            self.progress = progress
            self.message = message
            self.result = result
            self.error = error
            self.waiting = waiting
            self.cause = cause
            self.expectedMs = expectedMs
            self.runnerUp = runnerUp
            self.runnerUpExpectedMs = runnerUpExpectedMs
            self.startedMs = startedMs
            self.finishedMs = finishedMs
        }

        static var blank: Self {
            Self(job: JobID(0), batch: BatchID(0), event: .queued, state: .queued, attempt: 0, atMs: 0)
        }

        @inline(__always)
        mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError) {
            try c.required("job", &job)
            try c.required("batch", &batch)
            try c.required("event", &event)
            try c.required("state", &state)
            try c.int("attempt", &attempt, in: 0...1000)
            try c.required("at_ms", &atMs)
            try c.optional("backend", &backend)
            try c.optional("progress", &progress)
            try c.check("progress", progress.map { (0...1).contains($0) } ?? true, "must lie in 0...1")
            try c.string("message", &message, .message)
            try c.raw("result", &result, object: false, limit: .result)
            try c.optional("error", &error)
            try c.optional("waiting", &waiting)
            try c.optional("cause", &cause)
            try c.optional("expected_ms", &expectedMs)
            try c.optional("runner_up", &runnerUp)
            try c.optional("runner_up_expected_ms", &runnerUpExpectedMs)
            try c.optional("started_ms", &startedMs)
            try c.optional("finished_ms", &finishedMs)
        }
    }
}

/// What happened to a job, in a `job` event. Open set: clients must accept names they do not know.
public struct JobEventKind: RawRepresentable, Hashable, Sendable, CustomStringConvertible,
    JSONValueDecodable, JSONValueEncodable
{
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public init(_ rawValue: String) { self.rawValue = rawValue }
    public var description: String { rawValue }

    /// The job's current state, sent once per job right after `subscribed`.
    public static let snapshot = JobEventKind("snapshot")
    /// Entered the queue.
    public static let queued = JobEventKind("queued")
    /// Held by the warm-up gate; `waiting` says for what.
    public static let gated = JobEventKind("gated")
    /// Let out of the gate; `cause` says why.
    public static let released = JobEventKind("released")
    /// Bound to `backend` under a new lease.
    public static let bound = JobEventKind("bound")
    /// Taken back from a backend that had not started it (work stealing); queued again.
    public static let revoked = JobEventKind("revoked")
    public static let started = JobEventKind("started")
    public static let progress = JobEventKind("progress")
    /// Its backend was lost or it failed retryably; queued again with `attempt` + 1.
    public static let requeued = JobEventKind("requeued")
    public static let completed = JobEventKind("completed")
    public static let failed = JobEventKind("failed")
    /// A client canceled it while its backend holds it: the backend was told to stop and
    /// `canceled` follows once it confirms (the state stays `bound` or `running` until then).
    public static let canceling = JobEventKind("canceling")
    public static let canceled = JobEventKind("canceled")

    static func decodeJSON(_ doc: JSONDocument, _ i: Int) throws(ProtocolError) -> JobEventKind {
        let s = try String.decodeJSON(doc, i)
        try Grammar.code.check(s, path: "")
        return JobEventKind(s)
    }

    func encodeJSON(_ w: inout JSONWriter) { w.string(rawValue) }
}
