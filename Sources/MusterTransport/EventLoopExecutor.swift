import CLibWebSockets
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The serial executor of one event-loop thread: every job enqueued here runs on the thread that
/// runs `lws_service`, between two service passes.
///
/// An actor that should share the loop (the coordinator) returns
/// `transport.executor.asUnownedSerialExecutor()` as its `unownedExecutor`. Code on that actor
/// may then call the transport synchronously with `transport.assumeIsolated { $0.send(...) }`,
/// and the transport's handlers (which run on the loop) may enter that actor the same way.
///
/// Jobs from other threads are appended to a locked queue and the loop is woken with
/// `lws_cancel_service`, the one lws call that is safe from any thread. The loop drains the queue
/// after each `lws_service` pass rather than inside `LWS_CALLBACK_EVENT_WAIT_CANCELLED`: that
/// callback is broadcast to every protocol of every vhost (and to none before the first vhost
/// exists), and a job that creates or destroys a vhost must not run while lws walks its vhosts.
public final class EventLoopExecutor: SerialExecutor, @unchecked Sendable {
    // @unchecked Sendable: `jobs`, `context` and `phase` are only read or written with `lock`
    // held; the owning thread id is an atomic. lws itself is only called on the loop thread,
    // except `lws_cancel_service`, which lws documents as thread-safe.
    private let lock = Locked<Void>(())
    private var jobs: [UnownedJob] = []
    private var context: OpaquePointer?
    private var phase = Phase.starting
    private var exitWaiters: [CheckedContinuation<Void, Never>] = []
    /// The thread currently allowed to run jobs: the loop thread, or after the loop ended the
    /// thread draining leftover jobs.
    private let owner = Atomic<UInt>(0)

    private enum Phase {
        case starting
        case running
        case stopping
        case stopped
    }

    init() {}

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        var wake: OpaquePointer?
        var runHere = false
        lock.withLock { _ in
            jobs.append(job)
            switch phase {
            case .starting:
                break
            case .running, .stopping:
                if !isOwnerThread { wake = context }
            case .stopped:
                // The loop is gone: drain on this thread unless a drain is already under way.
                runHere = owner.load(ordering: .acquiring) == 0
            }
        }
        if let wake { lws_cancel_service(wake) }
        if runHere { drainAfterStop() }
    }

    public func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }

    /// Loop isolation is a property of the thread: C callbacks from `lws_service` run outside any
    /// job, and `assumeIsolated` there asks this.
    public func checkIsolated() {
        precondition(isOwnerThread, "not on the Muster event-loop thread")
    }

    public func isIsolatingCurrentContext() -> Bool? {
        isOwnerThread
    }

    /// True on the event-loop thread.
    public var isOnLoopThread: Bool { isOwnerThread }

    private var isOwnerThread: Bool {
        owner.load(ordering: .acquiring) == currentThreadID()
    }

    // MARK: - Loop side (called on the loop thread only)

    func attach(thread: UInt) {
        owner.store(thread, ordering: .releasing)
    }

    func started(context: OpaquePointer) {
        let pending = lock.withLock { _ -> Bool in
            self.context = context
            phase = .running
            return !jobs.isEmpty
        }
        if pending { lws_cancel_service(context) }
    }

    /// Runs every queued job, including jobs enqueued by those jobs.
    func drain() {
        while true {
            let batch = lock.withLock { _ -> [UnownedJob] in
                let batch = jobs
                jobs.removeAll(keepingCapacity: true)
                return batch
            }
            if batch.isEmpty { return }
            for job in batch {
                job.runSynchronously(on: asUnownedSerialExecutor())
            }
        }
    }

    /// Asks the loop to leave `lws_service` after this pass.
    func requestStop() {
        let ctx = lock.withLock { _ -> OpaquePointer? in
            if case .running = phase { phase = .stopping }
            return context
        }
        if let ctx { lws_cancel_service(ctx) }
    }

    var stopRequested: Bool {
        lock.withLock { _ in
            if case .stopping = phase { return true }
            return false
        }
    }

    /// Called by the loop thread after `lws_context_destroy`: from now on jobs run on whichever
    /// thread enqueues them (one at a time), and everybody waiting for the exit is resumed.
    func finished() {
        drain()
        let waiters = lock.withLock { _ -> [CheckedContinuation<Void, Never>] in
            context = nil
            phase = .stopped
            let w = exitWaiters
            exitWaiters = []
            return w
        }
        owner.store(0, ordering: .releasing)
        // Jobs that arrived between the last drain and the phase change.
        drainAfterStop()
        for w in waiters { w.resume() }
    }

    /// Waits until the loop thread has destroyed its context and finished.
    func waitForExit() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let done = lock.withLock { _ -> Bool in
                if case .stopped = phase { return true }
                exitWaiters.append(c)
                return false
            }
            if done { c.resume() }
        }
    }

    private func drainAfterStop() {
        // The runtime holds executors unowned. Before the loop ended, the loop thread kept the
        // transport (and so this executor) alive; now a job run here may drop the last reference
        // to it, and the drain must not touch a freed executor.
        withExtendedLifetime(self) { drainLeftovers() }
    }

    private func drainLeftovers() {
        let me = currentThreadID()
        while true {
            guard owner.compareExchange(expected: 0, desired: me, ordering: .acquiringAndReleasing).exchanged
            else { return }
            drain()
            owner.store(0, ordering: .releasing)
            let more = lock.withLock { _ in !jobs.isEmpty }
            if !more { return }
        }
    }
}

func currentThreadID() -> UInt {
    #if canImport(Glibc)
        return UInt(pthread_self())
    #else
        return UInt(bitPattern: pthread_self())
    #endif
}
