import MusterProtocol

/// The `job` events one subscription delivers (`subscribe.events`, Protocol/README.md 7.2): a bit
/// per event the coordinator sends. Names it never sends are accepted (the set is open) and match
/// nothing.
struct EventFilter: OptionSet, Hashable, Sendable {
    var rawValue: UInt16

    /// Every event the coordinator sends; an event's bit is its place here.
    private static let sent: [JobEventKind] = [
        .snapshot, .queued, .gated, .released, .bound, .revoked, .started, .progress, .requeued, .completed,
        .failed, .canceling, .canceled,
    ]
    private static let bits = Dictionary(uniqueKeysWithValues: sent.enumerated().map { ($1, UInt16(1) << $0) })

    static let snapshot = EventFilter(.snapshot)
    static let every = EventFilter(rawValue: .max)

    init(rawValue: UInt16) { self.rawValue = rawValue }

    /// The bit of one event; none for an event the coordinator never sends.
    init(_ kind: JobEventKind) { rawValue = Self.bits[kind] ?? 0 }

    /// `subscribe.events`: empty (or absent) means every event.
    init(names: [String]) {
        guard !names.isEmpty else {
            self = .every
            return
        }
        self = names.reduce(into: EventFilter()) { $0.formUnion(EventFilter(JobEventKind($1))) }
    }
}
