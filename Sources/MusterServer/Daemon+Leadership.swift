import Foundation
import Logging
import MusterCore
import MusterProtocol
import MusterStore
import MusterTransport

/// Two coordinators on one database (README "Running two coordinators").
///
/// One leads: it opens the store under its term's fencing token, links backends and clients and
/// routes. The other stands by in the state a coordinator is in before its store opens: it answers
/// probes and metrics, `/readyz` says `standby` and names the leader, and every `hello` and client
/// API request is refused with `not_leader` naming the leader (links close with 4010), so agents
/// and clients move there.
///
/// Taking over is the restart path: the store is opened and restored, and agents that re-register
/// get their bindings back. Losing the lead (the election reports anything but this term, or the
/// store refuses a commit as fenced) stops routing at once: the core is fed nothing more and its
/// actions are dropped, links close with `not_leader`, and the daemon stops with `lostLeadership`
/// set (`muster serve` exits 75, so a supervisor starts it again as a standby). It does not go
/// back to standby in-process: the core, the link tables and the store of a term would all have
/// to be rebuilt, and a fresh process is the one state known to be clean.
extension Daemon {
    enum Role: Equatable {
        case leader
        /// Standing by; the leader when one is known.
        case standby(LeaderInfo?)
        /// Led, then lost the lead: stopping.
        case deposed
    }

    /// True while this daemon routes (always, without an election). Asks the election itself,
    /// not only the last report that reached this loop: a report travels through a task, which a
    /// busy machine may run seconds late, while the election gives the lead up a third of a lease
    /// before the database could hand it on. So routing stops the moment the election gives up.
    var isLeading: Bool {
        guard role == .leader else { return false }
        guard let election else { return true }
        if case .leader(let token) = election.current, token == leaderTerm { return true }
        leadershipChanged()
        return role == .leader
    }

    /// True while this daemon leads (always, without an election): false on a standby and once
    /// it lost the lead.
    public var leads: Bool { isLeading }

    /// The leader as the wire names it, when this daemon stands by and knows one.
    var knownLeader: Wire.CoordinatorRef? {
        guard case .standby(let leader?) = role else { return nil }
        return Wire.CoordinatorRef(name: leader.name, address: leader.address)
    }

    /// Why this daemon takes no link and no request, when it does not lead: `not_leader` with
    /// the leader in `details`.
    var leaderRefusal: RequestError? {
        switch role {
        case .leader: return nil
        case .standby(let leader?):
            return RequestError(
                .notLeader, "this coordinator is a standby; the leader is \(leader.name) at \(leader.address)",
                details: Wire.NotLeader(leader: knownLeader).details)
        case .standby(nil):
            return RequestError(
                .notLeader, "this coordinator is a standby and no leader is known yet; retry shortly",
                details: Wire.NotLeader(leader: nil).details)
        case .deposed:
            return RequestError(
                .notLeader, "this coordinator lost the lead and is stopping; dial the other coordinator",
                details: Wire.NotLeader(leader: nil).details)
        }
    }

    /// Refuses a `hello` with `not_leader` and closes with 4010, when this daemon does not lead.
    /// Returns true when it refused.
    func refuseUnlessLeading(_ id: ConnectionID, backendSide: Bool, requestID: String?) -> Bool {
        guard let refusal = leaderRefusal else { return false }
        metrics.counter("muster_protocol_errors_total", ["code": ErrorCode.notLeader.rawValue]).increment()
        sendError(
            Wire.ErrorMessage(id: requestID, code: .notLeader, message: refusal.message, details: refusal.details),
            to: id, backendSide: backendSide)
        transport.assumeIsolated { $0.close(id, code: CloseCode(CloseCode.notLeader.rawValue), reason: "not_leader") }
        return true
    }

    /// The election's thread reports a change; the daemon reads the election's latest outcome on
    /// its own loop (so reports that arrive out of order cannot mislead it).
    nonisolated func leadershipReported() {
        Task { await self.leadershipChanged() }
    }

    func leadershipChanged() {
        guard let election, !stopping else { return }
        let failure = election.failure
        if failure != electionFailure {
            // Once per failure streak (and when its reason changes), and once when it ends.
            if let failure {
                logger.error(
                    "the leader election cannot reach the job store's database: this coordinator cannot lead until it does",
                    metadata: ["error": "\(failure)", "store.url": "\(configuration.settings.store.url)"])
            } else {
                logger.notice("the leader election reaches the job store's database again")
            }
            electionFailure = failure
        }
        let now = election.current
        switch (role, now) {
        case (.standby, .leader(let token)):
            takeOver(token: token)
        case (.standby(let was), .standby(let leader)):
            guard was != leader else { return }
            role = .standby(leader)
            if let leader {
                logger.notice(
                    "standing by", metadata: ["leader.name": "\(leader.name)", "leader.address": "\(leader.address)", "leader.term": "\(leader.token)"])
            }
        case (.leader, .leader(let token)) where token == leaderTerm:
            return
        case (.leader, .leader(let token)):
            depose("the election reports a new term \(token) while this coordinator led term \(leaderTerm.map { "\($0)" } ?? "?")")
        case (.leader, .standby(let leader)):
            depose(leader.map { "the lease passed to \($0.name) (\($0.address))" } ?? "the lease could not be renewed in time")
        case (.deposed, _):
            return
        }
    }

    /// Becomes the leader of term `token`: opens the store under it and takes over what it holds.
    func takeOver(token: Int64) {
        role = .leader
        leaderTerm = token
        metrics.counter("muster_leader_terms_total").increment()
        logger.notice("leading: taking over the job store", metadata: ["ha.name": "\(configuration.haName)", "leader.term": "\(token)"])
        if configuration.settings.store.url == .memory {
            startLocalBackends()
            dialRemoteBackends()
        } else {
            // The store of this term: it commits under the term's token, and a commit after a
            // newer term began is refused (fenced).
            let store = configuration.settings.store.makeStore(fencingToken: token)
            store.onCommit { [weak self] commit in self?.storeReported(commit) }
            self.store = store
            openStore()
        }
    }

    /// The election a configuration asks for: with a postgres store, one through its database.
    static func election(for configuration: Configuration) -> (any LeaderElection)? {
        guard case .postgres(let url) = configuration.settings.store.url, let address = configuration.haAdvertise else { return nil }
        return PostgresLeaderElection(
            url: url, name: configuration.haName, address: address,
            lease: configuration.settings.ha.lease)
    }

    /// Stops leading at once: no action of the core goes out from here on (`isLeading`), links
    /// close with `not_leader`, and the daemon stops with `lostLeadership` set.
    func depose(_ why: String) {
        guard role == .leader else { return }
        role = .deposed
        lostLeadership = why
        logger.error(
            "lost the lead: routing stopped; stopping so a supervisor starts this coordinator again as a standby",
            metadata: ["reason": "\(why)", "leader.term": "\(leaderTerm.map { "\($0)" } ?? "")"])
        if let timer = coreTimer?.id { transport.assumeIsolated { $0.cancel(timer) } }
        coreTimer = nil
        for runner in comfyRunners.values { runner.stop() }
        for local in locals.values { local.stop() }
        let refusal = leaderRefusal!
        let error = Wire.ErrorMessage(code: .notLeader, message: refusal.message, details: refusal.details)
        let linked = Array(backendLinks.keys), clientLinks = Array(clients.keys)
        for id in linked { sendError(error, to: id, backendSide: true) }
        for id in clientLinks { sendError(error, to: id, backendSide: false) }
        transport.assumeIsolated { t in
            for id in linked + clientLinks { t.close(id, code: CloseCode(CloseCode.notLeader.rawValue), reason: "not_leader") }
        }
        heldOutput = [:]
        Task { await self.shutdown() }
    }

    /// The role gauge and the leader's term, set before `/metrics` is rendered.
    func refreshLeadershipGauges() {
        metrics.setGauges(
            "muster_role", label: "role",
            counts: ["leader": isLeading ? 1 : 0, "standby": isLeading ? 0 : 1])
    }
}
