import MusterProtocol

/// The capability announcements known per backend, as a join-semilattice: for each backend only the
/// greatest announcement is kept (newer incarnation, then higher revision; equal versions are ordered
/// by content so that even a misbehaving backend cannot make two replicas disagree). `merge` is
/// therefore commutative, associative and idempotent, and any delivery order of the same set of
/// announcements, with or without duplicates, converges to the same registry.
public struct CapabilityRegistry: Hashable, Sendable {
    /// The greatest announcement seen per backend.
    public private(set) var entries: [BackendID: CapabilitySnapshot] = [:]

    public init() {}

    /// What applying one announcement did.
    public enum Outcome: Hashable, Sendable {
        /// The announcement is now the backend's entry; `previous` is the version it replaced.
        case applied(previous: CapabilityVersion?)
        /// Older than (or equal to) the entry held: nothing changed.
        case stale(held: CapabilityVersion)
    }

    /// Joins one announcement into the registry.
    @discardableResult
    public mutating func apply(_ snapshot: CapabilitySnapshot, from backend: BackendID) -> Outcome {
        if let held = entries[backend] {
            guard Self.precedes(held, snapshot) else { return .stale(held: held.version) }
            entries[backend] = snapshot
            return .applied(previous: held.version)
        }
        entries[backend] = snapshot
        return .applied(previous: nil)
    }

    /// Drops a backend's entry: the backend is gone (forgotten after being down), and an id is
    /// never given to another backend while the coordinator runs. Outside the semilattice: a
    /// replica that still holds the entry keeps it until it forgets the backend too.
    public mutating func forget(_ backend: BackendID) {
        entries[backend] = nil
    }

    /// The join of two registries: per backend, the greater announcement.
    public func merged(with other: CapabilityRegistry) -> CapabilityRegistry {
        var result = self
        result.merge(other)
        return result
    }

    /// Joins another registry into this one.
    public mutating func merge(_ other: CapabilityRegistry) {
        for (backend, snapshot) in other.entries { apply(snapshot, from: backend) }
    }

    /// `a < b` in the lattice order: version first, content as a deterministic tie-break.
    public static func precedes(_ a: CapabilitySnapshot, _ b: CapabilitySnapshot) -> Bool {
        if a.version != b.version { return a.version < b.version }
        if a.state != b.state { return stateRank(a.state) < stateRank(b.state) }
        if a.slots != b.slots { return a.slots < b.slots }
        if a.features != b.features { return a.features.lexicographicallyPrecedes(b.features) }
        if a.modelsAvailable != b.modelsAvailable {
            return a.modelsAvailable.lexicographicallyPrecedes(b.modelsAvailable)
        }
        if a.modelsLoaded != b.modelsLoaded { return a.modelsLoaded.lexicographicallyPrecedes(b.modelsLoaded) }
        if (a.speed ?? 0) != (b.speed ?? 0) { return (a.speed ?? 0) < (b.speed ?? 0) }
        if a.jobSeconds != b.jobSeconds {
            return a.jobSeconds.map { "\($0.kind)\u{0}\($0.seconds)" }.lexicographicallyPrecedes(
                b.jobSeconds.map { "\($0.kind)\u{0}\($0.seconds)" })
        }
        if (a.modelLoadSeconds ?? -1) != (b.modelLoadSeconds ?? -1) {
            return (a.modelLoadSeconds ?? -1) < (b.modelLoadSeconds ?? -1)
        }
        if a.nodes != b.nodes { return a.nodes.lexicographicallyPrecedes(b.nodes) }
        if a.message != b.message { return (a.message ?? "") < (b.message ?? "") }
        return a.devices.map(deviceKey).lexicographicallyPrecedes(b.devices.map(deviceKey))
    }

    private static func deviceKey(_ d: DeviceTelemetry) -> String {
        "\(d.name)\u{0}\(d.type)\u{0}\(d.vramTotal)\u{0}\(d.vramFree)"
    }

    private static func stateRank(_ s: BackendState) -> Int {
        switch s {
        case .starting: 0
        case .loading: 1
        case .ready: 2
        case .draining: 3
        }
    }
}
