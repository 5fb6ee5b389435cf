#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A pthread mutex with two condition variables: one the writer thread waits on for work, one
/// `close()` waits on for the writer to exit. Two, so a signal meant for the writer can never be
/// taken by a closer (and the other way round).
final class StoreLock: @unchecked Sendable {
    // @unchecked Sendable: the pthread objects live at fixed heap addresses for the life of the
    // object and are only used through the pthread calls, which are thread-safe by definition.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let work = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private let exit = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    init() {
        pthread_mutex_init(mutex, nil)
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        // Timed waits (retries) measure against the monotonic clock, not the wall clock.
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        pthread_cond_init(work, &attr)
        pthread_cond_init(exit, &attr)
        pthread_condattr_destroy(&attr)
    }

    deinit {
        pthread_cond_destroy(work)
        pthread_cond_destroy(exit)
        pthread_mutex_destroy(mutex)
        work.deallocate()
        exit.deallocate()
        mutex.deallocate()
    }

    @inline(__always) func lock() { pthread_mutex_lock(mutex) }
    @inline(__always) func unlock() { pthread_mutex_unlock(mutex) }

    /// Wakes the writer. Allowed with or without the mutex held.
    @inline(__always) func signalWork() { pthread_cond_signal(work) }
    /// Wakes every thread waiting for work. Allowed with or without the mutex held.
    @inline(__always) func broadcastWork() { pthread_cond_broadcast(work) }
    /// Waits for `signalWork`; the mutex must be held. Spurious wake-ups happen: callers loop.
    func waitForWork() { pthread_cond_wait(work, mutex) }

    /// Waits for `signalWork` or until the monotonic clock reaches `deadline` (nanoseconds).
    func waitForWork(until deadline: UInt64) {
        var ts = timespec(tv_sec: Int(deadline / 1_000_000_000), tv_nsec: Int(deadline % 1_000_000_000))
        pthread_cond_timedwait(work, mutex, &ts)
    }

    func broadcastExit() { pthread_cond_broadcast(exit) }
    func waitForExit() { pthread_cond_wait(exit, mutex) }
}

/// Nanoseconds on the monotonic clock (the clock `StoreLock`'s timed waits use).
func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// A duration in nanoseconds (negative: 0).
func nanoseconds(_ d: Duration) -> UInt64 {
    let (s, attos) = d.components
    guard s >= 0, attos >= 0 else { return 0 }
    return UInt64(s) * 1_000_000_000 + UInt64(attos / 1_000_000_000)
}

/// The store's writer thread, started once and joined once.
final class WriterThread: @unchecked Sendable {
    // @unchecked Sendable: `tid` is written in `start`, which the store calls once, before any
    // thread can call `join` (the store's state machine orders them under its lock); `join` is
    // called at most once, by the first `close()`.
    private var tid = pthread_t()

    func start(_ body: @escaping @Sendable () -> Void) {
        let box = Unmanaged.passRetained(ThreadBody(body)).toOpaque()
        var attr = pthread_attr_t()
        pthread_attr_init(&attr)
        // Deep JSON in job params is validated recursively on this thread.
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
    }

    func join() {
        pthread_join(tid, nil)
    }
}

private final class ThreadBody {
    let run: @Sendable () -> Void
    init(_ run: @escaping @Sendable () -> Void) { self.run = run }
}
