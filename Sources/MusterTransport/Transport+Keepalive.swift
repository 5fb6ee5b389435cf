import CLibWebSockets

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Keepalive kept by the transport rather than by lws' per-connection validity timers.
///
/// lws keeps every connection's validity timer in one sorted list and re-inserts it in O(n)
/// whenever a PONG refreshes it: with 10,000 idle links that was most of a core. Here every open
/// WebSocket only notes when anything last arrived (``Link/lastReceived``: one coarse clock read
/// per received chunk or PONG), and one timer for the whole transport, the sweep, walks the open
/// links:
///
/// - idle for ``TransportConfiguration/keepalivePingAfter``: a PING is asked for (once per
///   silence); it is written from the link's next writable callback, before its queued messages,
///   so it always goes between whole messages;
/// - silent for ``TransportConfiguration/keepaliveHangUpAfter``: dropped without a close frame and
///   reported with 1006, as lws' validity timeout did.
///
/// The sweep runs when the earliest of those deadlines comes, but for pings at most once per
/// ``keepaliveGap``: links falling due within one gap are pinged in one batch (one loop wakeup
/// for many links), none more than one gap late. Hang-up deadlines are kept exactly (they only
/// exist for links that did not answer a PING, so they add few sweeps). With no open links
/// nothing runs.
///
/// A PONG with an empty payload reaches the transport only on client links (lws 4.1 does not
/// report one to a server), so the PINGs sent here carry a payload.
extension Transport {
    /// Shortest time between two sweeps that only ping: a fifth of the shorter of
    /// ``TransportConfiguration/keepalivePingAfter`` and the time from it to
    /// ``TransportConfiguration/keepaliveHangUpAfter``, within 10 ms ... 1 s. Every loop wakeup
    /// costs a `poll()` over all sockets (lws' default loop), so fewer, larger batches are
    /// what keeps thousands of idle links cheap; a PING a little late only shortens the time
    /// left for its PONG.
    var keepaliveGap: Int64 {
        let ping = configuration.keepalivePingAfter.nanoseconds
        let hangUp = configuration.keepaliveHangUpAfter.nanoseconds
        let span = ping < hangUp ? min(ping, hangUp - ping) : hangUp
        return min(1_000_000_000, max(10_000_000, span / 5))
    }

    /// A WebSocket (server connection or client link) just opened: its silence starts now.
    func keepaliveOpened(_ link: Link) {
        link.lastReceived = coarseMonotonicNanoseconds()
        link.pingAwaited = false
        link.pingDue = false
        let ping = configuration.keepalivePingAfter.nanoseconds
        let hangUp = configuration.keepaliveHangUpAfter.nanoseconds
        scheduleKeepaliveSweep(at: link.lastReceived + min(ping, hangUp))
    }

    /// Something arrived on the link (a chunk of a message, a PONG).
    @inline(__always)
    func keepaliveReceived(_ link: Link) {
        link.lastReceived = coarseMonotonicNanoseconds()
        link.pingAwaited = false
        link.pingDue = false
    }

    /// Makes sure a sweep runs no later than `when` (monotonic nanoseconds).
    func scheduleKeepaliveSweep(at when: Int64) {
        guard when < keepaliveSweepAt, context != nil else { return }
        if let timer = keepaliveTimer { cancel(timer) }
        keepaliveSweepAt = when
        let delay = max(0, when - monotonicNanoseconds())
        keepaliveTimer = schedule(after: .nanoseconds(delay)) { t in t.keepaliveSweep() }
    }

    /// Pings the links idle past ``TransportConfiguration/keepalivePingAfter``, drops those silent
    /// past ``TransportConfiguration/keepaliveHangUpAfter``, and schedules the next sweep.
    func keepaliveSweep() {
        keepaliveTimer = nil
        keepaliveSweepAt = .max
        guard context != nil else { return }
        // The precise clock: never behind the coarse stamps, so a deadline the timer was set for
        // is due when it fires.
        let now = monotonicNanoseconds()
        let pingAfter = configuration.keepalivePingAfter.nanoseconds
        let hangUp = configuration.keepaliveHangUpAfter.nanoseconds
        let pings = pingAfter < hangUp
        var nextPing = Int64.max
        var nextHangUp = Int64.max
        var silent: [(Link, OpaquePointer)] = []
        for link in connections.values {
            guard link.open, let wsi = link.wsi else { continue }
            let idle = now - link.lastReceived
            if idle >= hangUp {
                silent.append((link, wsi))
                continue
            }
            if pings, !link.pingAwaited, link.pendingClose == nil {
                if idle < pingAfter {
                    nextPing = min(nextPing, link.lastReceived + pingAfter)
                    continue
                }
                link.pingAwaited = true
                link.pingDue = true
                lws_callback_on_writable(wsi)
            }
            nextHangUp = min(nextHangUp, link.lastReceived + hangUp)
        }
        // Closing runs the handlers' `closed` (which may close or open other links), so only
        // after the walk, and only for links still on the connection they had.
        for (link, wsi) in silent where link.wsi == wsi && link.open {
            counters.keepaliveTimeouts += 1
            logger.debug(
                "keepalive: peer silent, dropping",
                metadata: ["link.id": "\(link.id)", "silent.ms": "\((now - link.lastReceived) / 1_000_000)"])
            clws_kill_now(wsi)
        }
        let next = min(nextPing == .max ? .max : max(nextPing, now + keepaliveGap), nextHangUp)
        if next != .max { scheduleKeepaliveSweep(at: next) }
    }

    /// Writes the PING the sweep asked for (from a writable callback, so between whole
    /// messages). False when lws failed the write.
    ///
    /// The payload is not empty because lws 4.1 does not report an empty PONG to a server
    /// (LWS_CALLBACK_RECEIVE_PONG); it is written again each time because lws masks a client's
    /// payload in place.
    func writeKeepalivePing(_ link: Link, _ wsi: OpaquePointer) -> Bool {
        link.pingDue = false
        guard let frame = pingFrame else { return true }
        let payload = frame + lwsPre
        payload[0] = UInt8(ascii: "k")
        payload[1] = UInt8(ascii: "a")
        if lws_write(wsi, payload, 2, LWS_WRITE_PING) < 0 { return false }
        counters.keepalivePings += 1
        return true
    }
}

/// CLOCK_MONOTONIC at the kernel's tick resolution (1-4 ms) for a fraction of its cost: read on
/// every received chunk.
@inline(__always)
func coarseMonotonicNanoseconds() -> Int64 {
    var ts = timespec()
    #if os(Linux)
        clock_gettime(CLOCK_MONOTONIC_COARSE, &ts)
    #else
        clock_gettime(CLOCK_MONOTONIC, &ts)
    #endif
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}

/// CLOCK_MONOTONIC; never behind ``coarseMonotonicNanoseconds()``.
func monotonicNanoseconds() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}

/// CPU time the calling thread has used (CLOCK_THREAD_CPUTIME_ID).
func threadCPUNanoseconds() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}
