import MusterCore

extension CoreInstant {
    /// The monotonic time since `origin` as a core instant: the clock the engines and the agent
    /// give the core's backend-side state machines.
    public static func elapsed(since origin: ContinuousClock.Instant) -> CoreInstant {
        let d = ContinuousClock.now - origin
        let (s, atto) = d.components
        return CoreInstant(nanoseconds: UInt64(max(0, s)) * 1_000_000_000 + UInt64(max(0, atto) / 1_000_000_000))
    }
}
