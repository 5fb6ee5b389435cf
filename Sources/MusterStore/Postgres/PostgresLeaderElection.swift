/// Leader election through a lease row in PostgreSQL (`muster_leader`, in the store's database).
///
/// Every `renewInterval` each candidate runs one statement: take the lease when it is free or
/// expired (a new term: the token grows by one), renew it when this candidate holds it (same
/// token, expiry pushed to `now() + lease`), else read who holds it. Expiry is the database's
/// clock (`now()`), so the candidates' clocks need not agree.
///
/// Safety: the leader measures on its own monotonic clock from the moment it sent its last
/// successful renewal (no later than the database's `now()` of that statement). If no renewal
/// succeeds by that moment + `lease` − `margin`, a timer thread reports `.standby(leader: nil)` at
/// once, whatever the campaign thread is blocked in, so the leader stops before the database can
/// hand the lease to someone else. Together with the store's fencing (commits check the token in
/// the same row) a leader cut off from the database can neither keep routing nor write.
///
/// Two threads: the campaign thread (connects, runs the statements, each with a deadline) and the
/// timer. `onChange` runs on either, one call at a time, in the order of the changes.
public final class PostgresLeaderElection: LeaderElection, @unchecked Sendable {
    // @unchecked Sendable: the `var`s below are read and written with `lock` held; `notify` is
    // held around every change of `current` together with its report, so reports keep the order
    // of the changes (lock order: notify, then lock).
    public let name: String
    public let address: String
    private let url: String
    private let target: String
    private let leaseNanos: UInt64
    private let renewNanos: UInt64
    private let marginNanos: UInt64

    private let lock = StoreLock()
    private let notify = StoreLock()
    private let stopping = StoreLock()
    private let campaignThread = WriterThread()
    private let timerThread = WriterThread()

    private var started = false
    private var stopped = false
    private var joined = false
    private var state = Leadership.standby(leader: nil)
    private var lastFailure: String?
    private var reported = false
    private var handler: (@Sendable (Leadership) -> Void)?
    /// The token of the term this candidate leads, and when it must give it up (monotonic ns).
    private var term: Int64?
    private var mustStopAt: UInt64 = 0

    /// - Parameters:
    ///   - url: The PostgreSQL database (`postgres://USER:PASSWORD@HOST:PORT/DATABASE`), the
    ///     job store's.
    ///   - name: This coordinator's node name, unique in the group.
    ///   - address: The URL agents and clients dial to reach this coordinator.
    ///   - lease: How long a lease lasts without renewal: a dead leader is replaced within about
    ///     `lease + renewInterval`.
    ///   - renewInterval: How often the leader renews and standbys look (default `lease / 3`).
    public init(
        url: String, name: String, address: String, lease: Duration = .seconds(3), renewInterval: Duration? = nil
    ) {
        self.url = url
        self.target = PostgresURL.redacted(url)
        self.name = name
        self.address = address
        leaseNanos = max(3_000_000, nanoseconds(lease))
        renewNanos = max(1_000_000, renewInterval.map(nanoseconds) ?? leaseNanos / 3)
        marginNanos = leaseNanos / 3
    }

    public var current: Leadership {
        lock.lock()
        defer { lock.unlock() }
        return state
    }

    public var failure: String? {
        lock.lock()
        defer { lock.unlock() }
        return lastFailure
    }

    public func start(_ onChange: @escaping @Sendable (Leadership) -> Void) {
        lock.lock()
        precondition(!started, "LeaderElection.start: once per object")
        started = true
        handler = onChange
        let go = !stopped
        if go {
            campaignThread.start { [self] in campaign() }
            timerThread.start { [self] in timer() }
        }
        lock.unlock()
    }

    public func stop() {
        stopping.lock()
        defer { stopping.unlock() }
        lock.lock()
        stopped = true
        let running = started && !joined
        joined = true
        lock.unlock()
        lock.broadcastWork()
        guard running else { return }
        campaignThread.join()
        timerThread.join()
    }

    // MARK: - Reporting

    /// Changes `state` (and, from a campaign's outcome, `lastFailure` to `failure`: `.some(nil)`
    /// clears it) with `notify` held and reports it when either changed (or was never reported).
    private func change(failure: String?? = .none, _ body: (inout Leadership, inout Int64?) -> Void) {
        notify.lock()
        defer { notify.unlock() }
        lock.lock()
        let before = state
        body(&state, &term)
        let after = state
        var failureChanged = false
        if case .some(let failure) = failure {
            failureChanged = lastFailure != failure
            lastFailure = failure
        }
        let report = after != before || failureChanged || !reported
        reported = true
        let handler = self.handler
        lock.unlock()
        lock.broadcastWork()
        if report { handler?(after) }
    }

    // MARK: - The timer

    /// Gives the lease up (in this process) once the leader could not renew it in time.
    private func timer() {
        lock.lock()
        while !stopped {
            if term != nil {
                let now = monotonicNanoseconds()
                if now >= mustStopAt {
                    lock.unlock()
                    change { state, term in
                        // Re-checked: a renewal may have landed between the two locks.
                        guard term != nil, monotonicNanoseconds() >= mustStopAt else { return }
                        term = nil
                        state = .standby(leader: nil)
                    }
                    lock.lock()
                    continue
                }
                lock.waitForWork(until: mustStopAt)
            } else {
                lock.waitForWork()
            }
        }
        lock.unlock()
    }

    // MARK: - The campaign

    private enum Outcome {
        case holds(token: Int64)
        case other(LeaderInfo?)
        /// The database did not answer or refused: why, for the log and `/readyz`.
        case failed(String)
    }

    private func campaign() {
        var connection: PostgresConnection?
        var schemaReady = false
        var options = PostgresConnection.Options()
        options.applicationName = "muster-election \(name)"
        options.statementTimeoutMilliseconds = Int(leaseNanos / 1_000_000)
        while true {
            lock.lock()
            if stopped {
                lock.unlock()
                break
            }
            let held = term
            lock.unlock()

            let sentAt = monotonicNanoseconds()
            // A leader's statement must end before it has to give up anyway; a standby's within a lease.
            let deadline = sentAt + (held != nil ? leaseNanos - marginNanos : leaseNanos)
            var outcome = Outcome.failed("no answer")
            do throws(PostgresError) {
                if connection == nil || connection?.broken == true {
                    connection = nil
                    connection = try PostgresConnection(uri: url, target: target, options: options, deadline: deadline)
                }
                guard let db = connection else { continue }
                if !schemaReady {
                    let version = try PostgresSchema.migrate(db, until: deadline)
                    guard version == PostgresSchema.version else {
                        throw PostgresError(
                            sqlstate: nil, message: "schema version \(version) is newer than this build's",
                            connectionLost: false, rejected: true)
                    }
                    schemaReady = true
                }
                let result = try db.query(
                    Self.campaignSQL,
                    [
                        .string(name), .string(address), .int64(Int64(leaseNanos / 1000)),
                        held.map { .int64($0) } ?? .null,
                    ],
                    until: deadline)
                if let r = result, r.rows == 1 {
                    if let token = r.optionalInt64(0, 0) {
                        outcome = .holds(token: token)
                    } else if !r.isNull(0, 3), r.bool(0, 4) {
                        outcome = .other(
                            LeaderInfo(name: r.string(0, 1) ?? "", address: r.string(0, 2) ?? "", token: r.int64(0, 3)))
                    } else {
                        outcome = .other(nil)
                    }
                }
            } catch {
                connection = nil
                outcome = .failed(PostgresURL.redacted(error.message))
            }
            apply(outcome, held: held, sentAt: sentAt)

            lock.lock()
            let next = sentAt + renewNanos
            while !stopped && monotonicNanoseconds() < next { lock.waitForWork(until: next) }
            lock.unlock()
        }

        // Stopping: stop leading first (the caller stops routing), then free the lease so a
        // standby takes over at its next look instead of after the lease.
        var released: Int64?
        change { state, term in
            released = term
            if term != nil {
                term = nil
                state = .standby(leader: nil)
            }
        }
        if let token = released, let db = connection, !db.broken {
            _ = try? db.query(
                "UPDATE muster_leader SET expires_at = now() WHERE id = 1 AND name = $1 AND token = $2",
                [.string(name), .int64(token)], until: monotonicNanoseconds() + min(leaseNanos, 2_000_000_000))
        }
    }

    private func apply(_ outcome: Outcome, held: Int64?, sentAt: UInt64) {
        var failure: String?
        if case .failed(let why) = outcome { failure = why }
        change(failure: .some(failure)) { state, term in
            switch outcome {
            case .holds(let token):
                if held != nil && term == nil {
                    // Given up by the timer while this renewal was in flight: that term is over
                    // here. The row expires; the next term comes with the next token.
                    return
                }
                term = token
                mustStopAt = sentAt + leaseNanos - marginNanos
                state = .leader(token: token)
            case .other(let leader):
                term = nil
                // A lease under this coordinator's own name and address is the one its previous
                // process held before it crashed: until it expires no leader is known, and
                // naming itself would send clients straight back here.
                let own = leader.map { $0.name == name && $0.address == address } ?? false
                state = .standby(leader: own ? nil : leader)
            case .failed:
                // A leader keeps its term until the timer says otherwise; a standby knows no leader.
                if term == nil { state = .standby(leader: nil) }
            }
        }
    }

    /// Takes the lease when free or expired (token + 1: a new term), renews it when held under
    /// $4, and returns the token held now ($4's or a new one; NULL when another holds it) beside
    /// the row as it was (name, address, token, unexpired).
    static let campaignSQL = """
        WITH taken AS (
            INSERT INTO muster_leader AS l (id, name, address, token, expires_at)
            VALUES (1, $1, $2, 1, now() + $3::bigint * interval '1 microsecond')
            ON CONFLICT (id) DO UPDATE SET
                name = EXCLUDED.name, address = EXCLUDED.address,
                token = CASE WHEN l.name = EXCLUDED.name AND l.token = $4::bigint AND l.expires_at > now()
                    THEN l.token ELSE l.token + 1 END,
                expires_at = EXCLUDED.expires_at
            WHERE (l.name = EXCLUDED.name AND l.token = $4::bigint AND l.expires_at > now()) OR l.expires_at <= now()
            RETURNING l.token
        )
        SELECT (SELECT token FROM taken), l.name, l.address, l.token, l.expires_at > now()
        FROM (SELECT 1) AS one LEFT JOIN muster_leader AS l ON l.id = 1
        """
}
