/// A point on the core's monotonic clock: nanoseconds since an origin the caller picks
/// (1970 in the server: wall-clock time when it started, advanced by the monotonic clock; zero
/// in most tests). The core never reads a clock itself, and decides the same whatever the origin
/// (`Coordinator.timeEpsilon`).
public struct CoreInstant: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var nanoseconds: UInt64
    public init(nanoseconds: UInt64) { self.nanoseconds = nanoseconds }

    /// The origin of the clock.
    public static let zero = CoreInstant(nanoseconds: 0)

    /// An instant `seconds` after the origin; handy for manual clocks.
    public static func seconds(_ seconds: Double) -> CoreInstant {
        CoreInstant(nanoseconds: UInt64((seconds * 1e9).rounded()))
    }

    public static func < (a: CoreInstant, b: CoreInstant) -> Bool { a.nanoseconds < b.nanoseconds }

    /// Adds a duration; negative durations clamp at the origin.
    public static func + (a: CoreInstant, d: Duration) -> CoreInstant {
        let n = Int64(clamping: Int64(a.nanoseconds)) &+ d.nanoseconds
        return CoreInstant(nanoseconds: UInt64(max(0, n)))
    }

    /// The time from `b` to `a` (zero when `b` is later).
    public static func - (a: CoreInstant, b: CoreInstant) -> Duration {
        a.nanoseconds >= b.nanoseconds ? .nanoseconds(Int64(a.nanoseconds - b.nanoseconds)) : .zero
    }

    /// Seconds since the origin, for reports.
    public var seconds: Double { Double(nanoseconds) / 1e9 }
    public var description: String { "t=\(seconds)s" }
}

extension Duration {
    /// Whole nanoseconds, saturating; durations in the policy are far below the limits.
    var nanoseconds: Int64 {
        let (s, attos) = components
        return s.multipliedReportingOverflow(by: 1_000_000_000).partialValue &+ attos / 1_000_000_000
    }

    /// Seconds as a floating-point value, for estimates.
    var secondsValue: Double { Double(nanoseconds) / 1e9 }
}
