/// Leadership among coordinators that share one database (PostgreSQL).
///
/// One candidate at a time holds the lease and leads: it routes, links backends and clients, and
/// writes the job store. The others are standbys: they answer probes and tell agents and clients
/// where the leader is. Each term of a leader has a fencing token, larger than every earlier
/// term's; the store refuses a commit made under a token that is no longer the current one, so a
/// leader that lost its lease (cut off from the database, paused, slow) can never overwrite what
/// its successor wrote.

/// A coordinator as the others see it.
public struct LeaderInfo: Hashable, Sendable {
    /// The coordinator's node name (unique in the group).
    public var name: String
    /// The URL agents and clients dial to reach it, e.g. `ws://10.0.0.5:7460`.
    public var address: String
    /// The fencing token of its term.
    public var token: Int64

    public init(name: String, address: String, token: Int64) {
        self.name = name
        self.address = address
        self.token = token
    }
}

/// What a candidate knows about leadership at one moment.
public enum Leadership: Hashable, Sendable {
    /// This candidate holds the lease under `token`. It must stop routing and writing as soon as
    /// it sees any other value, and it sees one before its lease can have expired in the
    /// database's eyes (the election renews early and gives up a lease it could not renew in time).
    case leader(token: Int64)
    /// Another candidate holds the lease (`leader`), or none is known yet (nil: the database did
    /// not answer, or the lease is free and this candidate is about to try for it).
    case standby(leader: LeaderInfo?)
}

/// An election among coordinators. Runs on its own thread; blocking calls never run on the
/// caller's thread.
public protocol LeaderElection: AnyObject, Sendable {
    /// Starts campaigning. `onChange` is called on the election's thread with every change of
    /// `current` (the first call reports the first outcome); it should hand the value over, not
    /// work. Once per object.
    func start(_ onChange: @escaping @Sendable (Leadership) -> Void)
    /// Stops campaigning and, when leading, gives the lease up at once so a standby takes over
    /// without waiting for it to expire. Idempotent.
    func stop()
    /// The latest outcome; readable from any thread.
    var current: Leadership { get }
    /// Why the last attempt to take part failed (the database did not answer, refused the login,
    /// ...); nil once an attempt succeeds. A change is reported like one of `current`.
    var failure: String? { get }
}

extension LeaderElection {
    public var failure: String? { nil }
}
