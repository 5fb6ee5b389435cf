#if canImport(Glibc)
    import Glibc
#endif

/// How `muster serve` and `muster agent` end once their service has stopped and everything is
/// written (the job store closed, the links closed).
///
/// Not `exit()`: the last steps of the shutdown run as tasks on other threads (after its event
/// loop ended, a daemon's leftover jobs run on the thread that resumes them), and `exit()` runs the
/// C library's and the runtime's exit handlers while they may still be running. A SIGTERM then
/// now and then ended in a crash (signal 11 in a release inside the executor's drain, with the
/// exit handlers on another thread), and a supervisor saw status 139 instead of 0. `_exit` ends
/// every thread at once. Standard output and error are flushed first, and a LeakSanitizer build
/// still runs its leak check (an exit handler that `_exit` would skip).
enum ProcessEnd {
    static func now(_ status: Int32) -> Never {
        fflush(nil)
        var status = status
        if let check = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "__lsan_do_recoverable_leak_check") {
            typealias LeakCheck = @convention(c) () -> Int32
            if unsafeBitCast(check, to: LeakCheck.self)() != 0 { status = 23 }
        }
        _exit(status)
    }
}
