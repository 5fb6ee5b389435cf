import CLibWebSockets
import DequeModule
import Dispatch
import Logging
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// One libwebsockets context on one dedicated thread: WebSocket server and client links, plain
/// HTTP and HTTP client requests (``request(_:completion:)``), all carried by a single event loop.
///
/// The actor's executor *is* the loop thread (``executor``), so every isolated method runs on
/// it and C callbacks enter with `assumeIsolated`. Another actor can share the loop:
///
/// ```swift
/// actor Coordinator {
///     let transport: Transport
///     nonisolated var unownedExecutor: UnownedSerialExecutor {
///         transport.executor.asUnownedSerialExecutor()
///     }
///     func assign(_ job: String, to backend: ConnectionID) {
///         _ = transport.assumeIsolated { $0.send(text: job, to: backend) }   // no await
///     }
/// }
/// ```
///
/// Handlers (``WebSocketHandler``, ``HTTPHandler``) are called synchronously on the loop with the
/// transport isolated; they reach the coordinator with `coordinator.assumeIsolated { ... }`.
/// Nothing lws-typed leaves this module: connections are ``ConnectionID``s.
///
/// Start with ``init(configuration:logger:)``, add listeners with ``listen(_:)`` and links with
/// ``dial(_:handler:)``, and always end with ``shutdown()``: it sends 1001 to every link, waits
/// for the close handshakes (bounded by ``TransportConfiguration/shutdownGrace``), destroys the
/// context and waits for the loop thread to finish.
public actor Transport {
    /// The loop thread's executor; use it as the `unownedExecutor` of actors that share the loop.
    public nonisolated let executor: EventLoopExecutor
    public nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    nonisolated let configuration: TransportConfiguration
    nonisolated let logger: Logger
    private nonisolated let thread: LoopThread

    // Loop state: only touched on the loop thread (actor isolation).
    var context: OpaquePointer?
    var connections: [ConnectionID: Link] = [:]
    var nextConnection: UInt64 = 1
    /// The counters so far (read on the loop).
    public internal(set) var counters = TransportCounters()
    var listeners: [ListenerState] = []
    /// Set by the callback lws makes while a TLS listener's vhost is created; taken by `listen`.
    var serverSSLContextCreated: SSLContextPointer?
    /// Bumped at each client-CA reload: the session id context of listeners, so sessions resumed
    /// after a reload are verified against the new CA (`clws_reload_client_ca`).
    var clientCAGeneration: UInt32 = 0
    var clientVhosts: [ClientVhostKey: OpaquePointer] = [:]
    var clientProtocols: UnsafeMutablePointer<lws_protocols>?
    var timers: [UInt64: TimerBox] = [:]
    var nextTimer: UInt64 = 1
    var httpExchanges: [UInt: HTTPExchange] = [:]
    var deferredHTTP: [HTTPRequestID: UInt] = [:]
    var nextHTTP: UInt64 = 1
    /// HTTP client requests in flight (Transport+HTTPClient.swift).
    let httpClient = HTTPClientState()
    /// Accepted sockets whose handshake has not completed, with their accept time.
    var pendingHandshakes: [UInt: (at: ContinuousClock.Instant, address: String)] = [:]
    /// Accepted connections whose handshake is not done, by source address.
    var pendingByAddress: [String: Int] = [:]
    var shuttingDown = false
    var dialsInFlight = 0
    var dialQueue = Deque<ConnectionID>()
    var shutdownWaiter: CheckedContinuation<Void, Never>?
    var retryPolicy: UnsafeMutablePointer<lws_retry_bo_t>?
    /// The keepalive sweep (``keepaliveSweep()``) and the monotonic time it is due.
    var keepaliveTimer: TimerID?
    var keepaliveSweepAt = Int64.max
    /// LWS_PRE bytes of headroom and room for a PING's payload: every PING is written from here.
    var pingFrame: UnsafeMutablePointer<UInt8>?
    /// C memory that must outlive the context (protocol arrays, strings, retry tables).
    var cAllocations: [UnsafeMutableRawPointer] = []
    /// Called on the loop thread after every service pass (one `poll` and the callbacks and
    /// queued jobs it led to) with the CPU time the pass used, in nanoseconds. A message that
    /// arrives during a pass waits for its end, so a long pass delays everyone. Without it the
    /// loop reads no clock.
    public var onServicePass: (@Sendable (Int64) -> Void)? {
        didSet { timesPasses.store(onServicePass != nil, ordering: .relaxed) }
    }
    /// Whether `onServicePass` is set, readable by the loop without entering the actor.
    private nonisolated let timesPasses = Atomic<Bool>(false)

    /// Creates the lws context on a new thread and starts its loop. Throws when lws cannot create
    /// the context (for example OpenSSL initialisation failed).
    public init(configuration: TransportConfiguration = TransportConfiguration(), logger: Logger) throws {
        self.configuration = configuration
        self.logger = logger
        self.executor = EventLoopExecutor()
        self.thread = LoopThread()
        installLWSLogger(logger)
        let startup = Startup()
        thread.start { [self] in
            self.runLoop(startup)
        }
        startup.done.wait()
        if let error = startup.error { throw error }
    }

    /// Number of WebSocket connections and client links currently known (open or reconnecting).
    public var connectionCount: Int { connections.count }

    // MARK: - Loop thread

    private nonisolated func runLoop(_ startup: Startup) {
        executor.attach(thread: currentThreadID())
        let ctx = assumeIsolated { t -> UnsafeSendableContext? in
            do {
                return UnsafeSendableContext(pointer: try t.createContext())
            } catch let e as TransportError {
                startup.error = e
                return nil
            } catch {
                startup.error = TransportError(code: .contextCreation, message: "\(error)")
                return nil
            }
        }
        startup.done.signal()
        guard let ctx = ctx?.pointer else {
            executor.finished()
            return
        }
        executor.started(context: ctx)
        // While passes are timed, one CPU clock read per pass: a pass's CPU time is the
        // difference to the previous read (the loop does nothing else between them, and the wait
        // in `poll` costs no CPU). The first pass after timing starts only sets the baseline.
        var passBegan: Int64?
        while !executor.stopRequested {
            _ = lws_service(ctx, 0)
            executor.drain()
            guard timesPasses.load(ordering: .relaxed) else {
                passBegan = nil
                continue
            }
            let now = threadCPUNanoseconds()
            if let began = passBegan { assumeIsolated { $0.onServicePass?(now - began) } }
            passBegan = now
        }
        assumeIsolated { $0.destroyContext() }
        executor.finished()
    }

    private func createContext() throws -> OpaquePointer {
        let policy = UnsafeMutablePointer<lws_retry_bo_t>.allocate(capacity: 1)
        let delays = configuration.reconnectDelays.isEmpty ? [.seconds(1)] : configuration.reconnectDelays
        let table = UnsafeMutablePointer<UInt32>.allocate(capacity: delays.count)
        for (i, d) in delays.enumerated() { table[i] = UInt32(clamping: d.microseconds / 1000) }
        // Only the backoff table: lws' validity timers (secs_since_valid_*) stay off, because lws
        // keeps them in one sorted list re-inserted in O(n) on every PONG; the transport's own
        // keepalive sweep (Transport+Keepalive.swift) pings and hangs up instead.
        policy.initialize(
            to: lws_retry_bo_t(
                retry_ms_table: table, retry_ms_table_count: UInt16(delays.count),
                conceal_count: UInt16.max,
                secs_since_valid_ping: 0,
                secs_since_valid_hangup: 0,
                jitter_percent: configuration.reconnectJitterPercent))
        cAllocations.append(UnsafeMutableRawPointer(table))
        cAllocations.append(UnsafeMutableRawPointer(policy))
        retryPolicy = policy
        let ping = malloc(lwsPre + 16)!
        cAllocations.append(ping)
        pingFrame = ping.bindMemory(to: UInt8.self, capacity: lwsPre + 16)

        var info = lws_context_creation_info()
        info.user = Unmanaged.passUnretained(self).toOpaque()
        info.timeout_secs = UInt32(configuration.handshakeTimeout.lwsSeconds)
        info.timeout_secs_ah_idle = UInt32(configuration.handshakeTimeout.lwsSeconds)
        info.pt_serv_buf_size = UInt32(max(4096, configuration.receiveChunkBytes))
        // lws 4.1 keeps the OpenSSL ex_data indices it finds its per-connection wsi and a client
        // SSL_CTX's reuse record by in two globals, and every context created with
        // DO_SSL_GLOBAL_INIT allocates fresh ones. A context older than the newest then looks its
        // records up at the wrong index: destroying it never frees its client vhosts' SSL_CTX
        // (system CA store included), and its TLS verify callbacks cannot find their wsi. So
        // only the process's first context does the global init; the vhosts still ask for TLS
        // themselves. The lock makes "first" exact when transports start on several threads.
        var created: OpaquePointer?
        openSSLGlobalInit.withLock { done in
            info.options = clws_context_options(done ? 0 : 1)
            created = lws_create_context(&info)
            if created != nil { done = true }
        }
        guard let ctx = created else {
            throw TransportError(code: .contextCreation, message: "lws_create_context failed (see lws log above)")
        }
        context = ctx
        return ctx
    }

    private func destroyContext() {
        guard let ctx = context else { return }
        failHTTPClientRequestsForShutdown()
        // Callbacks for every remaining connection run inside this call (CLOSED, WSI_DESTROY).
        lws_context_destroy(ctx)
        context = nil
        for (_, box) in timers { box.memory.deallocate() }
        timers.removeAll()
        keepaliveTimer = nil
        keepaliveSweepAt = .max
        pingFrame = nil
        for p in cAllocations { free(p) }
        cAllocations.removeAll()
        if let clientProtocols { clientProtocols.deallocate() }
        clientProtocols = nil
        for l in listeners { l.protocols.deallocate() }
        listeners.removeAll()
        connections.removeAll()
        httpExchanges.removeAll()
        deferredHTTP.removeAll()
    }

    // MARK: - Shutdown

    /// Sends 1001 (going away) to every open link, waits for the close handshakes (at most
    /// ``TransportConfiguration/shutdownGrace``), destroys the lws context and waits for the loop
    /// thread to end. Idempotent. After it returns, sends answer ``SendResult/unknownConnection``.
    public nonisolated func shutdown() async {
        await closeAllForShutdown()
        executor.requestStop()
        await executor.waitForExit()
        thread.join()
    }

    private func closeAllForShutdown() async {
        guard !shuttingDown, context != nil else { return }
        shuttingDown = true
        failHTTPClientRequestsForShutdown()
        var waiting = false
        for link in connections.values {
            if let timer = link.retryTimer {
                cancel(timer)
                link.retryTimer = nil
            }
            guard let wsi = link.wsi else { continue }
            if link.pendingClose == nil { link.pendingClose = (.goingAway, "shutting down") }
            lws_callback_on_writable(wsi)
            waiting = true
        }
        guard waiting else { return }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            shutdownWaiter = c
            _ = schedule(after: configuration.shutdownGrace) { t in t.resumeShutdownWaiter() }
        }
    }

    func resumeShutdownWaiter() {
        shutdownWaiter?.resume()
        shutdownWaiter = nil
    }

    /// Called whenever a link goes away during shutdown.
    func noteLinkGone() {
        guard shuttingDown, shutdownWaiter != nil else { return }
        if !connections.values.contains(where: { $0.wsi != nil }) { resumeShutdownWaiter() }
    }

    // MARK: - Timers

    /// Runs `body` on the loop after `delay` (lws scheduler, microsecond resolution).
    @discardableResult
    public func schedule(after delay: Duration, _ body: @escaping @Sendable (isolated Transport) -> Void) -> TimerID {
        let id = nextTimer
        nextTimer += 1
        let mem = UnsafeMutablePointer<clws_timer>.allocate(capacity: 1)
        mem.initialize(to: clws_timer())
        mem.pointee.owner = Unmanaged.passUnretained(self).toOpaque()
        mem.pointee.id = id
        timers[id] = TimerBox(memory: mem, body: body)
        if let context {
            clws_timer_schedule(context, mem, timerFired, max(1, delay.microseconds))
        }
        return TimerID(rawValue: id)
    }

    /// Cancels a timer; harmless when it already ran.
    public func cancel(_ timer: TimerID) {
        guard let box = timers.removeValue(forKey: timer.rawValue) else { return }
        clws_timer_cancel(box.memory)
        box.memory.deallocate()
    }

    func fireTimer(_ id: UInt64) {
        guard let box = timers.removeValue(forKey: id) else { return }
        box.memory.deallocate()
        box.body(self)
    }

    // MARK: - Helpers

    func newConnectionID() -> ConnectionID {
        defer { nextConnection += 1 }
        return ConnectionID(rawValue: nextConnection)
    }

    /// Copies a Swift string into C memory that lives as long as the context.
    func keepCString(_ s: String) -> UnsafePointer<CChar> {
        let p = strdup(s)!
        cAllocations.append(UnsafeMutableRawPointer(p))
        return UnsafePointer(p)
    }
}

/// lws calls timers with only the sul pointer; the clws_timer around it names the owner.
private func timerFired(_ sul: UnsafeMutablePointer<lws_sorted_usec_list_t>?) {
    guard let sul, let t = clws_timer_from_sul(sul) else { return }
    let id = t.pointee.id
    let owner = Unmanaged<Transport>.fromOpaque(t.pointee.owner).takeUnretainedValue()
    owner.assumeIsolated { $0.fireTimer(id) }
}

final class TimerBox {
    let memory: UnsafeMutablePointer<clws_timer>
    let body: @Sendable (isolated Transport) -> Void
    init(memory: UnsafeMutablePointer<clws_timer>, body: @escaping @Sendable (isolated Transport) -> Void) {
        self.memory = memory
        self.body = body
    }
}

/// Startup handshake between `init` and the loop thread.
private final class Startup: @unchecked Sendable {
    // @unchecked Sendable: `error` is written by the loop thread before `done.signal()` and read
    // by the initialiser only after `done.wait()`; the semaphore orders the two.
    let done = DispatchSemaphore(value: 0)
    var error: TransportError?
}

/// The context pointer handed from the isolated closure back to the thread body on the same
/// thread.
private struct UnsafeSendableContext: @unchecked Sendable {
    // @unchecked Sendable: created and consumed on the loop thread within one function.
    let pointer: OpaquePointer
}

/// The dedicated loop thread, joinable once.
final class LoopThread: @unchecked Sendable {
    // @unchecked Sendable: `tid` is written once in `start` before any other thread can call
    // `join`, and `joined` is an atomic exchange so the thread is joined at most once.
    private var tid = pthread_t()
    private let started = Atomic<Bool>(false)
    private let joined = Atomic<Bool>(false)

    func start(_ body: @escaping @Sendable () -> Void) {
        let box = Unmanaged.passRetained(ThreadBody(body)).toOpaque()
        var attr = pthread_attr_t()
        pthread_attr_init(&attr)
        pthread_attr_setstacksize(&attr, 8 << 20)
        let rc = pthread_create(
            &tid, &attr,
            { arg in
                let body = Unmanaged<ThreadBody>.fromOpaque(arg!).takeRetainedValue()
                body.run()
                return nil
            }, box)
        pthread_attr_destroy(&attr)
        precondition(rc == 0, "pthread_create failed: \(rc)")
        started.store(true, ordering: .releasing)
    }

    func join() {
        guard started.load(ordering: .acquiring), !joined.exchange(true, ordering: .acquiringAndReleasing)
        else { return }
        pthread_join(tid, nil)
    }
}

private final class ThreadBody {
    let run: @Sendable () -> Void
    init(_ run: @escaping @Sendable () -> Void) { self.run = run }
}

/// Whether a context of this process already did lws' OpenSSL global init (see createContext).
private let openSSLGlobalInit = Locked<Bool>(false)

// MARK: - lws logging into swift-log

private let lwsLogger = Locked<Logger?>(nil)

/// lws logging is process-wide: the first transport's logger receives it. Errors are logged as
/// warnings (lws calls many peer mistakes errors), warnings as debug.
private func installLWSLogger(_ logger: Logger) {
    let first = lwsLogger.withLock { current -> Bool in
        if current != nil { return false }
        current = logger
        return true
    }
    if first {
        lws_set_log_level(Int32(LLL_ERR | LLL_WARN)) { level, line in
            guard let line else { return }
            var text = String(cString: line)
            while text.last == "\n" { text.removeLast() }
            let logger = lwsLogger.withLock { $0 }
            if level & Int32(LLL_ERR) != 0 {
                logger?.warning("lws: \(text)")
            } else {
                logger?.debug("lws: \(text)")
            }
        }
    }
}
