import MusterCore
import MusterProtocol

/// What the SQL stores (SQLite, PostgreSQL) share about their rows: the stored job states, and
/// which changes of a group commit need no writing.
enum StoreRows {
    /// The stored job states. The snapshot has only queued, bound and final states: `gated` is
    /// stored as queued and `running` as bound.
    static func stateCode(_ state: JobState) -> Int64 {
        switch state {
        case .queued, .gated: 0
        case .bound, .running: 1
        case .completed: 2
        case .failed: 3
        case .canceled: 4
        }
    }

    /// A backend's `down` column: 0 up; else down, holding when it fell (nanoseconds since the
    /// epoch, `StoreChange.backendDown`), or 1 when it fell at a time not kept (rows written
    /// before the time was).
    static func downCode(_ at: CoreInstant) -> Int64 { max(2, Int64(clamping: at.nanoseconds)) }

    /// The backend a `down` column describes: (down, when it fell if known).
    static func down(_ code: Int64) -> (Bool, CoreInstant?) {
        (code != 0, code > 1 ? CoreInstant(nanoseconds: UInt64(code)) : nil)
    }

    static func state(_ code: Int64) -> JobState? {
        switch code {
        case 0: .queued
        case 1: .bound
        case 2: .completed
        case 3: .failed
        case 4: .canceled
        default: nil
        }
    }

    /// The changes of a group that a later change of the same group overwrites completely, so
    /// writing them is wasted work: a binding followed by another binding, a requeue or the end
    /// of the same job; a requeue followed by another requeue or the end; anything about a job
    /// the group then evicts. Under load most jobs are bound and end within one group commit, so
    /// this saves about one row update in three. The result is what applying all of them gives.
    static func superseded(_ changes: [SequencedChange]) -> [Bool] {
        var skip = [Bool](repeating: false, count: changes.count)
        guard changes.count > 1 else { return skip }
        // What a later change does to each job: 1 ends it or requeues it (overwrites a binding
        // and a requeue), 2 binds it (overwrites a binding only), 3 evicts it (overwrites all).
        var later: [UInt64: UInt8] = [:]
        later.reserveCapacity(changes.count)
        for i in changes.indices.reversed() {
            switch changes[i].change {
            case .jobBound(let job, _, _, _, _):
                if later[job.rawValue] != nil { skip[i] = true } else { later[job.rawValue] = 2 }
            case .jobStarted(let job, _):
                // Only sets the start of the binding before it: a later change of the job writes
                // over it, and it writes over nothing.
                if later[job.rawValue] != nil { skip[i] = true }
            case .jobRequeued(let job, _, _, _):
                if let l = later[job.rawValue], l != 2 { skip[i] = true } else { later[job.rawValue] = 1 }
            case .jobEnded(let job):
                if later[job.id.rawValue] == 3 { skip[i] = true } else { later[job.id.rawValue] = 1 }
            case .evicted(let jobs, _):
                for job in jobs { later[job.rawValue] = 3 }
            case .batchAccepted, .backendRegistered, .backendDown, .backendForgotten:
                break
            }
        }
        return skip
    }

    /// How a final job's attempts are written: the compact form of one that ran once and
    /// completed (`StoredJob.boundAt`, `startedAt`; no history text), else the whole history as
    /// `HistoryJSON` (none when empty).
    static func finalHistory(_ job: StoredJob) -> (boundAt: UInt64?, startedAt: UInt64?, json: [UInt8]?) {
        (job.boundAt?.nanoseconds, job.startedAt?.nanoseconds, job.history.isEmpty ? nil : HistoryJSON.encode(job.history))
    }

    /// A batch's entries as stored (`EntriesJSON`); `where` names the store in the message.
    static func entries(_ bytes: UnsafeBufferPointer<UInt8>?, batch id: UInt64, where place: String)
        throws(StoreFailure)
        -> [BatchEntry]
    {
        guard let bytes else { throw StoreFailure(.corrupt, "batch \(id) has no entries (\(place))") }
        return try decoded("batch \(id): its entries", place) { () throws(JSONCursor.Failure) in
            try EntriesJSON.decode(bytes)
        }
    }

    /// What `decode` reads from a stored JSON text; a text that does not read makes the store
    /// corrupt, the message naming `what` (e.g. "job 7: its history"), the byte and the store.
    private static func decoded<T>(
        _ what: @autoclosure () -> String, _ place: String, _ decode: () throws(JSONCursor.Failure) -> T
    ) throws(StoreFailure) -> T {
        do throws(JSONCursor.Failure) {
            return try decode()
        } catch {
            throw StoreFailure(.corrupt, "\(what()) cannot be read: \(error.reason) at byte \(error.offset) (\(place))")
        }
    }

    /// A job row as the snapshot has it.
    static func job(
        id: UInt64, batch: UInt64, stateCode: Int64, backend: Int64?, lease: Int64?, attempt: Int64, lost: Int64,
        endedAt: Int64?, result: String?, errorCode: String?, errorMessage: String?, boundAt: Int64?,
        startedAt: Int64?, history: UnsafeBufferPointer<UInt8>?, details: UnsafeBufferPointer<UInt8>?,
        where place: String
    ) throws(StoreFailure) -> StoredJob {
        guard let state = state(stateCode) else {
            throw StoreFailure(.corrupt, "job \(id) has an unknown state \(stateCode) (\(place))")
        }
        var attempts: [AttemptRecord] = []
        // Rows written before the schema kept histories have none (NULL): read as empty.
        if let history, history.count > 0 {
            attempts = try decoded("job \(id): its history", place) { () throws(JSONCursor.Failure) in
                try HistoryJSON.decode(history)
            }
        }
        var failure = errorCode.map { JobFailure(code: ErrorCode($0), message: errorMessage ?? "") }
        if let details, details.count > 0, let bare = failure {
            failure = try decoded("job \(id): its error's details", place) { () throws(JSONCursor.Failure) in
                try DetailsJSON.decode(details, into: bare)
            }
        }
        func instant(_ v: Int64) -> CoreInstant { CoreInstant(nanoseconds: UInt64(bitPattern: v)) }
        return StoredJob(
            id: JobID(id), batch: BatchID(batch), state: state, backend: backend.map(BackendID.init(_:)),
            lease: lease.map { Lease(UInt64(bitPattern: $0)) }, attempt: Int(attempt), lostAttempts: Int(lost),
            result: result.map(RawJSON.init(unchecked:)),
            failure: failure,
            endedAt: endedAt.map(instant), history: attempts, boundAt: boundAt.map(instant),
            startedAt: state == .queued ? nil : startedAt.map(instant))
    }
}
