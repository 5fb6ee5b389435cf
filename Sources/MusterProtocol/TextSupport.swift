import Foundation

/// Appends `s` as a JSON string literal, escaping quotes, backslashes and control characters.
public func appendJSONString(_ s: String, to out: inout String) {
    out.append("\"")
    for scalar in s.unicodeScalars {
        switch scalar {
        case "\"": out.append("\\\"")
        case "\\": out.append("\\\\")
        case "\n": out.append("\\n")
        case "\r": out.append("\\r")
        case "\t": out.append("\\t")
        case _ where scalar.value < 0x20:
            out.append(String(format: "\\u%04x", scalar.value))
        default: out.unicodeScalars.append(scalar)
        }
    }
    out.append("\"")
}

/// Compares secrets in time that depends only on their lengths, not on where they differ.
public func constantTimeEqual(_ a: String, _ b: String) -> Bool {
    let x = Array(a.utf8), y = Array(b.utf8)
    var diff = UInt8(truncatingIfNeeded: x.count ^ y.count)
    for i in 0..<max(x.count, y.count) {
        diff |= (i < x.count ? x[i] : 0) ^ (i < y.count ? y[i] : 0)
    }
    return diff == 0
}
