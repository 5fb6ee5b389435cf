import Foundation

// Helpers every `muster-bench` table uses.

/// A whole number with thousands separators: 1234567 -> "1,234,567".
func formatCount(_ v: Double) -> String {
    let n = Int(v.rounded())
    var s = String(n)
    var i = s.count - 3
    while i > (n < 0 ? 1 : 0) {
        s.insert(",", at: s.index(s.startIndex, offsetBy: i))
        i -= 3
    }
    return s
}

func formatMB(_ bytes: Int) -> String { String(format: "%.1f MB", Double(bytes) / 1_048_576) }

/// CPU time of the calling thread, so other work on a shared machine does not count.
func threadCPUSeconds() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
}

extension Duration {
    var secondsDouble: Double {
        let (s, atto) = components
        return Double(s) + Double(atto) / 1e18
    }

    var nanosecondsInt: Int64 {
        let (s, atto) = components
        return s * 1_000_000_000 + atto / 1_000_000_000
    }
}
