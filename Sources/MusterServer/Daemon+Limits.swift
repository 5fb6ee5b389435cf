import MusterCore
import MusterProtocol
import MusterStore
import MusterTransport

// Limits per peer (README "Security"): links per source address, messages per second per link,
// jobs in flight per owner. Counted here, in the shell (jobs from what the core already reports:
// batch owners at submit, each job's final event exactly once), and only while a limit is set.
extension Daemon {
    /// Refuses a batch that would take `owner` past `jobs.max_in_flight_per_owner`. A retry of a
    /// batch already accepted under `key` creates nothing, so it is never refused here.
    func checkQuota(owner: String, adding jobs: Int, key: String?) throws(RequestError) {
        guard ownerQuota > 0, key.flatMap({ core.batch(forKey: $0) }) == nil else { return }
        let have = inFlightByOwner[owner] ?? 0
        guard have + jobs > ownerQuota else { return }
        metrics.counter("muster_quota_exceeded_total").increment()
        throw RequestError(
            .quotaExceeded,
            "owner \(owner) has \(have) jobs in flight and this batch adds \(jobs); the limit is \(ownerQuota) "
                + "(jobs.max_in_flight_per_owner): wait for some to finish or cancel some",
            details: RawJSON(unchecked: #"{"in_flight":\#(have),"adding":\#(jobs),"limit":\#(ownerQuota)}"#))
    }

    /// A job of `batch` reached its final state.
    func jobLeftFlight(batch: BatchID) {
        guard let owner = core.batch(batch)?.owner, let have = inFlightByOwner[owner] else { return }
        inFlightByOwner[owner] = have > 1 ? have - 1 : nil
    }

    /// Each owner's unfinished jobs in what the store kept, before the core restores them (jobs
    /// the restore ends then leave through `jobLeftFlight`).
    func countInFlight(_ snapshot: StoreSnapshot) {
        var ownerOf: [BatchID: String] = [:]
        for b in snapshot.batches { ownerOf[b.id] = b.owner }
        for j in snapshot.jobs where !j.state.isFinal {
            if let owner = ownerOf[j.batch] { inFlightByOwner[owner, default: 0] += 1 }
        }
    }
}

/// A token bucket: `rate` messages a second, bursts up to one second's worth.
struct Allowance {
    var tokens: Double
    var at: ContinuousClock.Instant

    init(rate: Int, at now: ContinuousClock.Instant) {
        tokens = Double(rate)
        at = now
    }

    /// Takes one message's token; false when none is left.
    mutating func take(rate: Int, at now: ContinuousClock.Instant) -> Bool {
        let (s, atto) = (now - at).components
        tokens = min(Double(rate), tokens + (Double(s) + Double(atto) / 1e18) * Double(rate))
        at = now
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }
}

extension Daemon {
    /// A link was accepted from `peer`: counted, or refused with `too_many_links` and 4009 when
    /// its address holds `links.max_per_address` already. Returns false when refused.
    /// What keeps browsers' pages out (`BrowserGuard`), with the credentials in force.
    var browserGuard: BrowserGuard {
        let settings = configuration.settings
        return BrowserGuard(
            allowedOrigins: settings.auth.allowedOrigins,
            loopbackHostsOnly: settings.listen.isLoopback && settings.tls.clientCA == nil
                && (auth.clientSideOpen || auth.backendSideOpen),
            listenHost: settings.listen.host.lowercased())
    }

    func admitLink(_ info: ConnectionInfo, backendSide: Bool) -> Bool {
        if dialed[info.id] == nil,
            let refusal = browserGuard.refusal(origin: info.headers["origin"], host: info.headers["host"], changes: true)
        {
            metrics.counter("muster_links_refused_total", ["reason": "cross_origin"]).increment()
            logger.notice("link refused: a browser page", metadata: ["peer": "\(info.peer)", "origin": "\(info.headers["origin"] ?? "")"])
            refuse(info.id, backendSide: backendSide, code: .forbidden, message: refusal, close: 4007)
            return false
        }
        guard maxLinksPerAddress > 0, dialed[info.id] == nil else { return true }
        let have = linksByAddress[info.peer] ?? 0
        guard have < maxLinksPerAddress else {
            metrics.counter("muster_links_refused_total", ["reason": "too_many_links"]).increment()
            logger.notice("link refused: too many from one address", metadata: ["peer": "\(info.peer)", "links": "\(have)"])
            refuse(
                info.id, backendSide: backendSide, code: .tooManyLinks,
                message: "\(info.peer) holds \(have) links, the most one address may (links.max_per_address); close one first",
                close: 4009)
            return false
        }
        linksByAddress[info.peer] = have + 1
        addressOf[info.id] = info.peer
        return true
    }

    /// A link closed: it no longer counts against its address or has an allowance.
    func linkGone(_ id: ConnectionID) {
        allowances[id] = nil
        guard let peer = addressOf.removeValue(forKey: id), let have = linksByAddress[peer] else { return }
        linksByAddress[peer] = have > 1 ? have - 1 : nil
    }

    /// Whether a message from link `id` is within `links.max_messages_per_second`; over it, the
    /// link gets `rate_limited` and close 4008.
    func withinRate(_ id: ConnectionID, backendSide: Bool) -> Bool {
        guard maxMessagesPerSecond > 0 else { return true }
        let now = ContinuousClock.now
        var allowance = allowances[id] ?? Allowance(rate: maxMessagesPerSecond, at: now)
        // Refused already and closing: what still arrives is dropped.
        if allowance.tokens == -.infinity { return false }
        let ok = allowance.take(rate: maxMessagesPerSecond, at: now)
        allowances[id] = allowance
        if !ok {
            allowances[id]?.tokens = -.infinity
            metrics.counter("muster_rate_limited_total", ["link": backendSide ? "backend" : "client"]).increment()
            logger.notice("link closed: over its message rate", metadata: ["link.id": "\(id)"])
            refuse(
                id, backendSide: backendSide, code: .rateLimited,
                message: "more than \(maxMessagesPerSecond) messages a second (links.max_messages_per_second); slow down",
                close: 4008)
        }
        return ok
    }
}
