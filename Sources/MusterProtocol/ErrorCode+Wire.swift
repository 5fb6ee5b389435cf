// Codes added by the wire protocol, and the HTTP status each one maps to (Protocol/README.md has
// the same table; a test keeps them equal).

extension ErrorCode {
    /// HTTP only: no such route.
    public static let notFound = ErrorCode("not_found")
    /// HTTP only: the route exists, the method does not.
    public static let methodNotAllowed = ErrorCode("method_not_allowed")
    /// A `batch_key` was reused with a different batch.
    public static let batchKeyConflict = ErrorCode("batch_key_conflict")
    /// `load_model` named a model no backend offers.
    public static let unknownModel = ErrorCode("unknown_model")
    /// A backend could not load a model.
    public static let modelLoadFailed = ErrorCode("model_load_failed")
    /// A job's backend was lost while the job was bound to it (the job is requeued).
    public static let backendLost = ErrorCode("backend_lost")
    /// A job's backend restarted (new incarnation) while the job was bound to it: its leases
    /// died and the job is requeued.
    public static let backendRestarted = ErrorCode("backend_restarted")
    /// A job ran longer than its time limit.
    public static let jobTimeout = ErrorCode("job_timeout")
    /// A message arrived that is valid but not allowed now (e.g. a second `hello`).
    public static let unexpectedMessage = ErrorCode("unexpected_message")
    /// `hello` from a backend whose name is linked under a newer incarnation.
    public static let staleIncarnation = ErrorCode("stale_incarnation")
    /// A link said no `hello` within the handshake timeout (closed with 4004).
    public static let helloTimeout = ErrorCode("hello_timeout")
    /// The credential is valid but its role does not allow this request or link (HTTP 403; a
    /// link's handshake refused so closes with 4007).
    public static let forbidden = ErrorCode("forbidden")
    /// The owner has as many jobs in flight as it may (`jobs.max_in_flight_per_owner`): HTTP 429.
    public static let quotaExceeded = ErrorCode("quota_exceeded")
    /// A link sent more messages per second than it may (`links.max_messages_per_second`): the
    /// error, then close 4008.
    public static let rateLimited = ErrorCode("rate_limited")
    /// A source address has as many links open as it may (`links.max_per_address`): the error,
    /// then close 4009.
    public static let tooManyLinks = ErrorCode("too_many_links")
    /// This coordinator is a standby of a pair sharing one database; `details` names the leader
    /// (`{"leader": {"name", "address"}}`, absent while none is known). HTTP 503; a link's `hello`
    /// so refused closes with 4010.
    public static let notLeader = ErrorCode("not_leader")

    /// Every code the protocol defines, in the order of the spec's table.
    public static let defined: [ErrorCode] = [
        .malformedJSON, .invalidMessage, .unknownType, .messageTooLarge, .limitExceeded, .badCredentials, .forbidden,
        .noCommonVersion, .wrongRole, .notRegistered, .unexpectedMessage, .staleIncarnation, .helloTimeout, .staleLease,
        .unknownJob, .unknownBatch, .unknownBackend, .unknownModel, .batchKeyConflict, .noEligibleBackend,
        .attemptsExhausted, .jobFailed, .jobTimeout, .backendLost, .backendRestarted, .modelLoadFailed, .canceled, .notFound,
        .methodNotAllowed, .quotaExceeded, .rateLimited, .tooManyLinks, .shuttingDown, .storeUnavailable, .notLeader,
        .internalError,
    ]

    /// The HTTP status an error with this code is answered with. Unknown codes map to 500.
    public var httpStatus: Int {
        switch self {
        case .malformedJSON, .invalidMessage, .unknownType, .noCommonVersion, .wrongRole: 400
        case .badCredentials: 401
        case .forbidden: 403
        case .unknownJob, .unknownBatch, .unknownBackend, .unknownModel, .notFound: 404
        case .methodNotAllowed: 405
        case .helloTimeout: 408
        case .notRegistered, .unexpectedMessage, .staleIncarnation, .staleLease, .batchKeyConflict: 409
        case .messageTooLarge, .limitExceeded: 413
        case .noEligibleBackend, .attemptsExhausted, .jobFailed, .jobTimeout, .backendLost, .backendRestarted, .canceled:
            422
        case .quotaExceeded, .rateLimited, .tooManyLinks: 429
        case .modelLoadFailed: 502
        case .shuttingDown, .storeUnavailable, .notLeader: 503
        default: 500
        }
    }
}
