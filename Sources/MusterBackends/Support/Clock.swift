import MusterCore

extension CoreInstant {
    /// The monotonic time since `origin` as a core instant: the clock the engines and the agent
    /// give the core's backend-side state machines.
    public static func elapsed(since origin: ContinuousClock.Instant) -> CoreInstant {
        .zero + (ContinuousClock.now - origin)
    }
}
