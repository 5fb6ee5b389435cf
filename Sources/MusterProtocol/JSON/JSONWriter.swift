// Writes JSON text straight into a byte array: members in a fixed order, strings escaped per
// RFC 8259 (quote, backslash and C0 controls; everything else is emitted as UTF-8), integers
// without going through String, opaque values (RawJSON) copied verbatim.

struct JSONWriter: ~Copyable {
    // A plain growable buffer rather than [UInt8]: appends are the encoder's inner loop, and
    // Array's per-append uniqueness checks and generic copy paths cost more than the writing.
    // Noncopyable, so the buffer has exactly one owner and is freed exactly once (deinit).
    private var base: UnsafeMutablePointer<UInt8>
    private var capacity: Int
    private(set) var count = 0

    init(capacity: Int = 256) {
        self.capacity = Swift.max(capacity, 16)
        base = .allocate(capacity: self.capacity)
    }

    deinit { base.deallocate() }

    /// The JSON text written so far; ends the writer.
    consuming func finish() -> [UInt8] {
        [UInt8](UnsafeBufferPointer(start: base, count: count))
    }

    @inline(__always)
    private mutating func reserve(_ n: Int) {
        if count + n > capacity { grow(count + n) }
    }

    @inline(never)
    private mutating func grow(_ needed: Int) {
        let newCapacity = Swift.max(capacity * 2, needed)
        let newBase = UnsafeMutablePointer<UInt8>.allocate(capacity: newCapacity)
        newBase.initialize(from: base, count: count)
        base.deallocate()
        base = newBase
        capacity = newCapacity
    }

    @inline(__always)
    mutating func append(_ b: UInt8) {
        reserve(1)
        base[count] = b
        count += 1
    }

    @inline(__always)
    mutating func append(_ buffer: UnsafeBufferPointer<UInt8>) {
        guard let from = buffer.baseAddress, !buffer.isEmpty else { return }
        reserve(buffer.count)
        (base + count).initialize(from: from, count: buffer.count)
        count += buffer.count
    }

    var last: UInt8? { count > 0 ? base[count - 1] : nil }

    @inline(__always)
    mutating func raw(_ s: StaticString) {
        append(UnsafeBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount))
    }

    /// A comma unless this is the first member or element.
    @inline(__always)
    mutating func separator() {
        if let last, last != UInt8(ascii: "{"), last != UInt8(ascii: "[") {
            append(UInt8(ascii: ","))
        }
    }

    /// `"key":`, preceded by a comma when needed. Keys are plain ASCII and need no escaping.
    @inline(__always)
    mutating func key(_ k: StaticString) {
        separator()
        append(UInt8(ascii: "\""))
        raw(k)
        append(UInt8(ascii: "\""))
        append(UInt8(ascii: ":"))
    }

    mutating func string(_ s: String) {
        append(UInt8(ascii: "\""))
        var s = s
        s.withUTF8 { utf8 in
            reserve(utf8.count + 1)
            var clean = 0
            for i in 0..<utf8.count {
                let b = utf8[i]
                guard b < 0x20 || b == UInt8(ascii: "\"") || b == UInt8(ascii: "\\") else { continue }
                append(UnsafeBufferPointer(rebasing: utf8[clean..<i]))
                appendEscaped(b)
                clean = i + 1
            }
            append(UnsafeBufferPointer(rebasing: utf8[clean...]))
        }
        append(UInt8(ascii: "\""))
    }

    private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

    private mutating func appendEscaped(_ b: UInt8) {
        append(UInt8(ascii: "\\"))
        switch b {
        case UInt8(ascii: "\""): append(UInt8(ascii: "\""))
        case UInt8(ascii: "\\"): append(UInt8(ascii: "\\"))
        case 0x0A: append(UInt8(ascii: "n"))
        case 0x0D: append(UInt8(ascii: "r"))
        case 0x09: append(UInt8(ascii: "t"))
        case 0x08: append(UInt8(ascii: "b"))
        case 0x0C: append(UInt8(ascii: "f"))
        default:
            raw("u00")
            append(Self.hexDigits[Int(b >> 4)])
            append(Self.hexDigits[Int(b & 0xF)])
        }
    }

    mutating func uint(_ v: UInt64) {
        if v < 10 {
            append(UInt8(ascii: "0") + UInt8(v))
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
            append(UnsafeBufferPointer(rebasing: buf[p..<20]))
        }
    }

    mutating func int(_ v: Int64) {
        if v < 0 {
            append(UInt8(ascii: "-"))
            uint(v.magnitude)
        } else {
            uint(UInt64(v))
        }
    }

    /// A double in its shortest round-trip form; integral values keep no fraction. JSON has no
    /// NaN or infinity: those are written as `null`, which every decoder of a number rejects, so
    /// the bug that produced them shows up at the peer instead of crashing the sender.
    mutating func double(_ v: Double) {
        guard v.isFinite else {
            raw("null")
            return
        }
        if v == v.rounded(), v.magnitude < 1e15 {
            int(Int64(v))
            return
        }
        var text = v.description
        text.withUTF8 { append($0) }
    }

    mutating func bool(_ v: Bool) {
        if v { raw("true") } else { raw("false") }
    }

    mutating func rawJSON(_ r: RawJSON) {
        var text = r.text
        text.withUTF8 { append($0) }
    }
}
