import Dispatch
import MusterTransport

/// Wakes the tasks waiting for a change to some state, and never loses a wake-up.
///
/// A waiter checks the state, then calls ``wait(atMost:)``; a change made between the two is not
/// seen by that wait, which therefore also ends after `atMost` by a Dispatch timer. The timer runs
/// off the cooperative pool, so a waiter ends even when the pool is busy, and nothing waits on a
/// child task: the earlier helpers raced a continuation child against a sleeping one in a task
/// group, and when the sleeper won before the other child had registered, the group waited for a
/// change that a silent peer (an exited process) never made again.
final class ChangeSignal: Sendable {
    private struct State {
        var next: UInt64 = 0
        var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
    }
    private let state = Locked(State())

    /// Resumes every waiter.
    func notify() {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            defer { s.waiters = [:] }
            return Array(s.waiters.values)
        }
        for w in waiters { w.resume() }
    }

    /// Returns after the next ``notify()`` or after `atMost`, whichever comes first.
    func wait(atMost bound: Duration) async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let id = state.withLock { s -> UInt64 in
                s.next += 1
                s.waiters[s.next] = c
                return s.next
            }
            DispatchQueue.global().asyncAfter(deadline: .now() + bound.dispatchInterval) { [self] in
                state.withLock { $0.waiters.removeValue(forKey: id) }?.resume()
            }
        }
    }
}

extension Duration {
    /// The same span for a Dispatch timer, which runs off the cooperative pool.
    var dispatchInterval: DispatchTimeInterval {
        let (seconds, attoseconds) = components
        return .nanoseconds(Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000))
    }
}
