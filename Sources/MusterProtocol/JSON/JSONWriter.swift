// Writes JSON text straight into a byte array: members in a fixed order, strings escaped per
// RFC 8259 (quote, backslash and C0 controls; everything else is emitted as UTF-8), integers
// without going through String, opaque values (RawJSON) copied verbatim.

struct JSONWriter {
    var bytes: [UInt8]

    init(capacity: Int = 256) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    @inline(__always)
    mutating func raw(_ s: StaticString) {
        bytes.append(contentsOf: UnsafeBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount))
    }

    /// A comma unless this is the first member or element.
    @inline(__always)
    mutating func separator() {
        if let last = bytes.last, last != UInt8(ascii: "{"), last != UInt8(ascii: "[") {
            bytes.append(UInt8(ascii: ","))
        }
    }

    /// `"key":`, preceded by a comma when needed. Keys are plain ASCII and need no escaping.
    @inline(__always)
    mutating func key(_ k: StaticString) {
        separator()
        bytes.append(UInt8(ascii: "\""))
        raw(k)
        bytes.append(UInt8(ascii: "\""))
        bytes.append(UInt8(ascii: ":"))
    }

    mutating func string(_ s: String) {
        bytes.append(UInt8(ascii: "\""))
        var s = s
        s.withUTF8 { utf8 in
            var clean = 0
            for (i, b) in utf8.enumerated() where b < 0x20 || b == UInt8(ascii: "\"") || b == UInt8(ascii: "\\") {
                bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[clean..<i]))
                appendEscaped(b)
                clean = i + 1
            }
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[clean...]))
        }
        bytes.append(UInt8(ascii: "\""))
    }

    private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

    private mutating func appendEscaped(_ b: UInt8) {
        bytes.append(UInt8(ascii: "\\"))
        switch b {
        case UInt8(ascii: "\""): bytes.append(UInt8(ascii: "\""))
        case UInt8(ascii: "\\"): bytes.append(UInt8(ascii: "\\"))
        case 0x0A: bytes.append(UInt8(ascii: "n"))
        case 0x0D: bytes.append(UInt8(ascii: "r"))
        case 0x09: bytes.append(UInt8(ascii: "t"))
        case 0x08: bytes.append(UInt8(ascii: "b"))
        case 0x0C: bytes.append(UInt8(ascii: "f"))
        default:
            raw("u00")
            bytes.append(Self.hexDigits[Int(b >> 4)])
            bytes.append(Self.hexDigits[Int(b & 0xF)])
        }
    }

    mutating func uint(_ v: UInt64) {
        if v < 10 {
            bytes.append(UInt8(ascii: "0") + UInt8(v))
            return
        }
        // Digits go into a stack buffer back to front, then into the array in one copy.
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { buf in
            var p = 20
            var t = v
            while t > 0 {
                p -= 1
                buf[p] = UInt8(ascii: "0") + UInt8(t % 10)
                t /= 10
            }
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: buf[p..<20]))
        }
    }

    mutating func int(_ v: Int64) {
        if v < 0 {
            bytes.append(UInt8(ascii: "-"))
            uint(v.magnitude)
        } else {
            uint(UInt64(v))
        }
    }

    /// A finite double in its shortest round-trip form; integral values keep no fraction.
    mutating func double(_ v: Double) {
        precondition(v.isFinite, "JSON has no representation for \(v)")
        if v == v.rounded(), v.magnitude < 1e15 {
            int(Int64(v))
            return
        }
        bytes.append(contentsOf: v.description.utf8)
    }

    mutating func bool(_ v: Bool) {
        if v { raw("true") } else { raw("false") }
    }

    mutating func rawJSON(_ r: RawJSON) {
        bytes.append(contentsOf: r.text.utf8)
    }
}
