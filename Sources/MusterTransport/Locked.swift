#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A value behind a `pthread_mutex_t`, with the same `withLock` shape as `Synchronization.Mutex`.
///
/// Muster uses this instead of `Mutex` everywhere. On Linux `Mutex` is built on raw futex system
/// calls, which ThreadSanitizer does not model: it sees no happens-before between two critical
/// sections and reports every guarded access as a race, hiding real ones. ThreadSanitizer
/// intercepts `pthread_mutex_lock` and `pthread_mutex_unlock`, so with this lock
/// `Scripts/test-sanitizers thread` checks the locking Muster actually does. An uncontended
/// pthread mutex costs about the same as `Mutex` (both are a futex word with a user-space fast
/// path).
public final class Locked<Value>: @unchecked Sendable {
    // @unchecked Sendable: `value` is only touched inside `withLock`, with `mutex` held, and
    // `withLock` takes and returns values as `sending`, exactly like `Mutex`, so no non-Sendable
    // state escapes into two regions.
    //
    // Both live in their own allocations, never in stored properties: the pthread mutex must not
    // move, and a stored `var value` would make `&value` a dynamic exclusivity access, which
    // ThreadSanitizer records as a write at the field's address. For an empty `Value` (`Void`)
    // that address is the object's start, which other threads read unlocked for the class
    // metadata on every call, and TSan reported that as a race.
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let value: UnsafeMutablePointer<Value>

    public init(_ initialValue: consuming sending Value) {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        let rc = pthread_mutex_init(mutex, nil)
        precondition(rc == 0, "pthread_mutex_init failed: \(rc)")
        value = .allocate(capacity: 1)
        value.initialize(to: initialValue)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deinitialize(count: 1)
        mutex.deallocate()
        value.deinitialize(count: 1)
        value.deallocate()
    }

    /// Runs `body` with the lock held and exclusive access to the value.
    public func withLock<Result: ~Copyable, E: Error>(
        _ body: (inout sending Value) throws(E) -> sending Result
    ) throws(E) -> sending Result {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value.pointee)
    }
}
