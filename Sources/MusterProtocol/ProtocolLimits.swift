/// The limits a decoder enforces. The defaults are the protocol's; a coordinator may lower them
/// (never raise them past what peers were told in `welcome`).
public struct ProtocolLimits: Hashable, Sendable {
    /// Largest message in bytes (default 1 MiB). Past it: `message_too_large`, close 1009.
    public var maxMessageBytes: Int
    /// Deepest nesting of objects and arrays, the message itself being level 1. Past it: `limit_exceeded`.
    public var maxDepth: Int
    /// Largest job `params` in bytes of JSON text. Past it: `limit_exceeded`.
    public var maxParamsBytes: Int
    /// Largest job `result` in bytes of JSON text. Past it: `limit_exceeded`.
    public var maxResultBytes: Int
    /// Most jobs in one batch, counting `count` copies. Past it: `limit_exceeded`.
    public var maxBatchJobs: Int

    public init(
        maxMessageBytes: Int = 1 << 20, maxDepth: Int = 64, maxParamsBytes: Int = 256 << 10,
        maxResultBytes: Int = 512 << 10, maxBatchJobs: Int = 10_000
    ) {
        self.maxMessageBytes = maxMessageBytes
        self.maxDepth = maxDepth
        self.maxParamsBytes = maxParamsBytes
        self.maxResultBytes = maxResultBytes
        self.maxBatchJobs = maxBatchJobs
    }

    /// The protocol's defaults.
    public static let `default` = ProtocolLimits()

    /// Longest feature or kind name, in characters (grammar `^[a-z][a-z0-9_.-]{0,63}$`).
    public static let maxFeatureLength = 64
    /// Most features in one snapshot.
    public static let maxFeatures = 256
    /// Most features a job may need.
    public static let maxNeeds = 32
    /// Most event names one `subscribe` may list.
    public static let maxEvents = 32
    /// Longest model name, in characters.
    public static let maxModelLength = 256
    /// Most models in one list of a snapshot (`available` or `loaded`).
    public static let maxModels = 4096
    /// Most node classes in a snapshot's `nodes` or a job's workflow.
    public static let maxNodes = 4096
    /// Longest node class name, in characters (no control characters).
    public static let maxNodeClassLength = 128
    /// Most devices in a snapshot's `devices`.
    public static let maxDevices = 64
    /// Longest backend or client name, in characters (grammar `^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`).
    public static let maxNameLength = 64
    /// Longest owner, batch key, request id or error code, in characters.
    public static let maxKeyLength = 128
    /// Longest token, in characters.
    public static let maxTokenLength = 1024
    /// Longest human-readable text (`message` fields), in characters.
    public static let maxTextLength = 4096
    /// Most entries in a `submit`'s `jobs` array.
    public static let maxBatchEntries = 1000
    /// Largest `count` of one entry.
    public static let maxCount = 1000
    /// Most slots a backend may announce.
    public static let maxSlots = 1024
    /// Most entries in a backend `hello`'s `jobs` (the jobs it holds from earlier links).
    public static let maxHeldJobs = 10_000
    /// Largest `speed` a capability snapshot may announce (relative to 1.0).
    public static let maxSpeed = 1000.0
    /// The largest `job_seconds` and `model_load_seconds` a backend may announce (a day).
    public static let maxAnnouncedSeconds = 86_400.0
    /// Most protocol versions listed in `hello`.
    public static let maxVersions = 16
    /// Priorities lie in this range; higher runs first.
    public static let priorityRange = -1000...1000
    /// `priorityRange` as the decoders check it.
    static let priorityRange64 = Int64(priorityRange.lowerBound)...Int64(priorityRange.upperBound)
    /// Most backends and jobs listed in one answer (status, backends, batch).
    public static let maxListLength = 100_000
}
