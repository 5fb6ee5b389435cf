import MusterCore

/// A store that keeps nothing: every change is acknowledged as durable at once (on the store's
/// own thread, like the SQLite store) and nothing survives the process. For `--store memory:`,
/// tests and benchmarks of the daemon without disk I/O.
public final class MemoryJobStore: JobStore {
    private let group = GroupCommit(retryInterval: .seconds(1))

    public init() {}

    deinit { group.close() }

    /// An empty snapshot with epoch 1.
    public func open() throws(StoreFailure) -> StoreSnapshot {
        try group.open("memory:") { (DiscardingSink(), StoreSnapshot(epoch: 1)) }
    }

    public func append(_ change: StoreChange) -> UInt64 { group.append(change) }

    public func onCommit(_ handler: @escaping @Sendable (StoreCommit) -> Void) { group.onCommit(handler) }

    public func close() { group.close() }

    public var statistics: StoreStatistics { group.statistics }

    public var counters: StoreStatistics { group.statistics }
}

private final class DiscardingSink: CommitSink {
    func commit(_ changes: [SequencedChange]) throws(StoreFailure) -> Int { 0 }
    func finish() {}
}
