import MusterCore
import MusterProtocol

/// The `job` events one subscription delivers (`subscribe.events`, Protocol/README.md 7.2): a bit
/// per event the coordinator sends. Names it never sends are accepted (the set is open) and match
/// nothing.
struct EventFilter: OptionSet, Hashable, Sendable {
    var rawValue: UInt16

    static let snapshot = EventFilter(rawValue: 1 << 0)
    static let queued = EventFilter(rawValue: 1 << 1)
    static let gated = EventFilter(rawValue: 1 << 2)
    static let released = EventFilter(rawValue: 1 << 3)
    static let bound = EventFilter(rawValue: 1 << 4)
    static let revoked = EventFilter(rawValue: 1 << 5)
    static let started = EventFilter(rawValue: 1 << 6)
    static let progress = EventFilter(rawValue: 1 << 7)
    static let requeued = EventFilter(rawValue: 1 << 8)
    static let completed = EventFilter(rawValue: 1 << 9)
    static let failed = EventFilter(rawValue: 1 << 10)
    static let canceling = EventFilter(rawValue: 1 << 11)
    static let canceled = EventFilter(rawValue: 1 << 12)
    static let every = EventFilter(rawValue: .max)

    private static let byName: [String: EventFilter] = [
        JobEventKind.snapshot.rawValue: .snapshot, JobEventKind.queued.rawValue: .queued,
        JobEventKind.gated.rawValue: .gated, JobEventKind.released.rawValue: .released,
        JobEventKind.bound.rawValue: .bound, JobEventKind.revoked.rawValue: .revoked,
        JobEventKind.started.rawValue: .started, JobEventKind.progress.rawValue: .progress,
        JobEventKind.requeued.rawValue: .requeued, JobEventKind.completed.rawValue: .completed,
        JobEventKind.failed.rawValue: .failed, JobEventKind.canceling.rawValue: .canceling,
        JobEventKind.canceled.rawValue: .canceled,
    ]

    init(rawValue: UInt16) { self.rawValue = rawValue }

    /// `subscribe.events`: empty (or absent) means every event.
    init(names: [String]) {
        guard !names.isEmpty else {
            self = .every
            return
        }
        self = names.reduce(into: EventFilter()) { $0.formUnion(Self.byName[$1] ?? []) }
    }

    /// The bit of the event a core event is sent as.
    init(_ kind: JobEvent.Kind) {
        switch kind {
        case .queued: self = .queued
        case .gated: self = .gated
        case .released: self = .released
        case .bound: self = .bound
        case .started: self = .started
        case .progress: self = .progress
        case .requeued: self = .requeued
        case .revoked: self = .revoked
        case .completed: self = .completed
        case .failed: self = .failed
        case .canceling: self = .canceling
        case .canceled: self = .canceled
        }
    }
}
