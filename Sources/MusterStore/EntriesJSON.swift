import MusterCore
import MusterProtocol

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// How a batch's entries are stored: one JSON array, one object per entry,
///
///     [{"kind":"video","needs":["frameinterps","video"],"model":null,"params":{...},
///       "priority":0,"owner":"ana","nodes":[],"count":4}]
///
/// `params` is the entry's `RawJSON` text inlined verbatim and read back byte for byte (any
/// whitespace around it included). Text that is not one valid JSON value (the core never hands
/// such text over, but the store must not become unreadable if it did) is stored as a string
/// under `params_text` instead. MusterProtocol's JSON reader and writer are internal to it, so
/// this is a small exact codec of its own; the store reads only what it wrote, and unknown
/// members are skipped so later versions can add some.
enum EntriesJSON {
    /// Nesting deeper than this is not checked as JSON; such params go to `params_text`.
    static let maxDepth = 512

    static func encode(_ entries: [BatchEntry]) -> [UInt8] {
        var w: [UInt8] = []
        w.reserveCapacity(entries.reduce(2) { $0 + 128 + $1.spec.params.text.utf8.count })
        w.append(UInt8(ascii: "["))
        for (n, entry) in entries.enumerated() {
            let spec = entry.spec
            if n > 0 { w.append(UInt8(ascii: ",")) }
            w.append(contentsOf: #"{"kind":"#.utf8)
            appendString(spec.kind, to: &w)
            w.append(contentsOf: #","needs":"#.utf8)
            appendStrings(spec.needs, to: &w)
            w.append(contentsOf: #","model":"#.utf8)
            if let model = spec.model { appendString(model, to: &w) } else { w.append(contentsOf: "null".utf8) }
            if isJSONValue(spec.params.text) {
                w.append(contentsOf: #","params":"#.utf8)
                w.append(contentsOf: spec.params.text.utf8)
            } else {
                w.append(contentsOf: #","params_text":"#.utf8)
                appendString(spec.params.text, to: &w)
            }
            w.append(contentsOf: #","priority":"#.utf8)
            w.append(contentsOf: String(spec.priority).utf8)
            w.append(contentsOf: #","owner":"#.utf8)
            appendString(spec.owner, to: &w)
            w.append(contentsOf: #","nodes":"#.utf8)
            appendStrings(spec.nodes, to: &w)
            w.append(contentsOf: #","count":"#.utf8)
            w.append(contentsOf: String(entry.count).utf8)
            w.append(UInt8(ascii: "}"))
        }
        w.append(UInt8(ascii: "]"))
        return w
    }

    /// Decodes what `encode` wrote; the error says what is wrong and at which byte.
    static func decode(_ bytes: UnsafeBufferPointer<UInt8>) throws(JSONCursor.Failure) -> [BatchEntry] {
        try JSONCursor.array(bytes, decodeEntry)
    }

    private static func decodeEntry(_ c: inout JSONCursor) throws(JSONCursor.Failure) -> BatchEntry {
        var kind: String?
        var needs: [String] = []
        var model: String?
        var params: String?
        var priority = 0
        var owner: String?
        var nodes: [String] = []
        var count: Int?
        let start = c.at
        try c.members { c, key throws(JSONCursor.Failure) in
            if key.equals("kind") {
                kind = try c.string()
            } else if key.equals("needs") {
                needs = try c.strings()
            } else if key.equals("model") {
                if !c.literal("null") { model = try c.string() }
            } else if key.equals("params") {
                params = try c.rawValue()
            } else if key.equals("params_text") {
                params = try c.string()
            } else if key.equals("priority") {
                priority = try c.integer()
            } else if key.equals("owner") {
                owner = try c.string()
            } else if key.equals("nodes") {
                nodes = try c.strings()
            } else if key.equals("count") {
                count = try c.integer()
            } else {
                try c.skipValue()
            }
        }
        guard let kind, let owner, let params, let count else {
            throw JSONCursor.Failure(offset: start, reason: "an entry lacks kind, owner, params or count")
        }
        var spec = JobSpec(
            kind: kind, model: model, params: RawJSON(unchecked: params), priority: priority, owner: owner)
        // As stored (JobSpec's initialiser sorted them before they were stored): no sorting again.
        spec.needs = needs
        spec.nodes = nodes
        return BatchEntry(spec: spec, count: count)
    }

    /// True when `text` is exactly one JSON value (whitespace around it allowed).
    static func isJSONValue(_ text: String) -> Bool {
        var text = text
        return text.withUTF8 { bytes in
            var c = JSONCursor(bytes)
            do throws(JSONCursor.Failure) {
                try c.skipValue()
                c.skipSpace()
                return c.at == bytes.count
            } catch {
                return false
            }
        }
    }

    static func appendString(_ s: String, to w: inout [UInt8]) {
        let hex: StaticString = "0123456789abcdef"
        w.append(UInt8(ascii: "\""))
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "\""): w.append(contentsOf: #"\""#.utf8)
            case UInt8(ascii: "\\"): w.append(contentsOf: #"\\"#.utf8)
            case 0x0A: w.append(contentsOf: #"\n"#.utf8)
            case 0x0D: w.append(contentsOf: #"\r"#.utf8)
            case 0x09: w.append(contentsOf: #"\t"#.utf8)
            case 0x08: w.append(contentsOf: #"\b"#.utf8)
            case 0x0C: w.append(contentsOf: #"\f"#.utf8)
            case 0..<0x20:
                w.append(contentsOf: #"\u00"#.utf8)
                w.append(hex.utf8Start[Int(b >> 4)])
                w.append(hex.utf8Start[Int(b & 0xF)])
            default: w.append(b)
            }
        }
        w.append(UInt8(ascii: "\""))
    }

    static func appendStrings(_ strings: [String], to w: inout [UInt8]) {
        w.append(UInt8(ascii: "["))
        for (n, s) in strings.enumerated() {
            if n > 0 { w.append(UInt8(ascii: ",")) }
            appendString(s, to: &w)
        }
        w.append(UInt8(ascii: "]"))
    }
}

/// A position in UTF-8 JSON text, with the few readers the entries need.
struct JSONCursor {
    struct Failure: Error, Hashable {
        var offset: Int
        var reason: String
    }

    let bytes: UnsafeBufferPointer<UInt8>
    private(set) var at = 0

    init(_ bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    private func fail(_ reason: String) -> Failure { Failure(offset: at, reason: reason) }

    private var current: UInt8? { at < bytes.count ? bytes[at] : nil }

    mutating func skipSpace() {
        while at < bytes.count {
            switch bytes[at] {
            case 0x20, 0x09, 0x0A, 0x0D: at += 1
            default: return
            }
        }
    }

    /// Skips whitespace; consumes `byte` if it comes next.
    mutating func consume(_ byte: UInt8) -> Bool {
        skipSpace()
        guard current == byte else { return false }
        at += 1
        return true
    }

    mutating func expect(_ byte: UInt8) throws(Failure) {
        guard consume(byte) else { throw fail("expected '\(Character(Unicode.Scalar(byte)))'") }
    }

    /// Consumes the literal (after whitespace) if it comes next.
    mutating func literal(_ word: StaticString) -> Bool {
        skipSpace()
        let n = word.utf8CodeUnitCount
        guard at + n <= bytes.count else { return false }
        for i in 0..<n where bytes[at + i] != word.utf8Start[i] { return false }
        at += n
        return true
    }

    /// The whole input is read (trailing whitespace allowed).
    /// A document that is one array, each element read by `element`.
    static func array<T>(
        _ bytes: UnsafeBufferPointer<UInt8>, _ element: (inout JSONCursor) throws(Failure) -> T
    ) throws(Failure) -> [T] {
        var c = JSONCursor(bytes)
        let out = try c.elements(element)
        return try c.end(out)
    }

    /// An array, each element read by `element`.
    mutating func elements<T>(_ element: (inout JSONCursor) throws(Failure) -> T) throws(Failure) -> [T] {
        var out: [T] = []
        try expect(UInt8(ascii: "["))
        if consume(UInt8(ascii: "]")) { return out }
        repeat {
            out.append(try element(&self))
        } while consume(UInt8(ascii: ","))
        try expect(UInt8(ascii: "]"))
        return out
    }

    /// An object, each member's value read by `member` (the cursor after the `:`, and the name as
    /// bytes: a batch is decoded on every open, and making and comparing Strings for the names
    /// took most of its time).
    mutating func members(
        _ member: (inout JSONCursor, UnsafeBufferPointer<UInt8>) throws(Failure) -> Void
    ) throws(Failure) {
        try expect(UInt8(ascii: "{"))
        if consume(UInt8(ascii: "}")) { return }
        repeat {
            let key = try memberName()
            try expect(UInt8(ascii: ":"))
            try member(&self, key)
        } while consume(UInt8(ascii: ","))
        try expect(UInt8(ascii: "}"))
    }

    func end<T>(_ value: T) throws(Failure) -> T {
        var c = self
        c.skipSpace()
        guard c.at == bytes.count else { throw c.fail("unexpected text after the value") }
        return value
    }

    mutating func integer() throws(Failure) -> Int {
        skipSpace()
        let negative = current == UInt8(ascii: "-")
        if negative { at += 1 }
        var value = 0
        var digits = 0
        while let b = current, b >= UInt8(ascii: "0"), b <= UInt8(ascii: "9") {
            let (m, o1) = value.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(Int(b - UInt8(ascii: "0")))
            guard !o1, !o2 else { throw fail("integer out of range") }
            value = a
            digits += 1
            at += 1
        }
        guard digits > 0 else { throw fail("expected an integer") }
        return negative ? -value : value
    }

    /// A member name's bytes (names are written without escapes; an escaped one is skipped over
    /// as a name that matches nothing).
    mutating func memberName() throws(Failure) -> UnsafeBufferPointer<UInt8> {
        skipSpace()
        guard current == UInt8(ascii: "\"") else { throw fail("expected a member name") }
        let start = at + 1
        try skipString()
        let name = UnsafeBufferPointer(rebasing: bytes[start..<(at - 1)])
        return name.contains(UInt8(ascii: "\\")) ? UnsafeBufferPointer(rebasing: bytes[start..<start]) : name
    }

    mutating func strings() throws(Failure) -> [String] {
        try elements { c throws(Failure) in try c.string() }
    }

    mutating func string() throws(Failure) -> String {
        skipSpace()
        guard current == UInt8(ascii: "\"") else { throw fail("expected a string") }
        at += 1
        let start = at
        // Fast path: no escapes, one copy.
        while let b = current, b != UInt8(ascii: "\""), b != UInt8(ascii: "\\") {
            guard b >= 0x20 else { throw fail("control character in a string") }
            at += 1
        }
        guard let stop = current else { throw fail("unterminated string") }
        if stop == UInt8(ascii: "\"") {
            at += 1
            return String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<(at - 1)]), as: UTF8.self)
        }
        var out = Array(bytes[start..<at])
        while let b = current {
            at += 1
            switch b {
            case UInt8(ascii: "\""):
                return String(decoding: out, as: UTF8.self)
            case UInt8(ascii: "\\"):
                guard let e = current else { throw fail("unterminated string") }
                at += 1
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try hex4()
                    if (0xD800..<0xDC00).contains(scalar), at + 1 < bytes.count, bytes[at] == UInt8(ascii: "\\"),
                        bytes[at + 1] == UInt8(ascii: "u")
                    {
                        at += 2
                        let low = try hex4()
                        if (0xDC00..<0xE000).contains(low) {
                            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        } else {
                            appendScalar(0xFFFD, to: &out)
                            scalar = low
                        }
                    }
                    appendScalar(scalar, to: &out)
                default: throw fail("bad escape in a string")
                }
            default:
                guard b >= 0x20 else { throw fail("control character in a string") }
                out.append(b)
            }
        }
        throw fail("unterminated string")
    }

    private mutating func hex4() throws(Failure) -> UInt32 {
        guard at + 4 <= bytes.count else { throw fail("bad \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let b = bytes[at]
            let d: UInt8
            switch b {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): d = b - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): d = b - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): d = b - UInt8(ascii: "A") + 10
            default: throw fail("bad \\u escape")
            }
            v = v << 4 | UInt32(d)
            at += 1
        }
        return v
    }

    private func appendScalar(_ value: UInt32, to out: inout [UInt8]) {
        let scalar = Unicode.Scalar(value) ?? "\u{FFFD}"
        UTF8.encode(scalar) { out.append($0) }
    }

    /// The exact text of the next value, whitespace before and after it included (what follows a
    /// member's colon up to the comma or brace).
    mutating func rawValue() throws(Failure) -> String {
        let start = at
        try skipValue()
        skipSpace()
        return String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<at]), as: UTF8.self)
    }

    /// Skips one complete, valid JSON value (and whitespace before it).
    mutating func skipValue(depth: Int = 0) throws(Failure) {
        guard depth < EntriesJSON.maxDepth else { throw fail("nested too deeply") }
        skipSpace()
        guard let b = current else { throw fail("expected a value") }
        switch b {
        case UInt8(ascii: "{"):
            at += 1
            if consume(UInt8(ascii: "}")) { return }
            repeat {
                skipSpace()
                guard current == UInt8(ascii: "\"") else { throw fail("expected a member name") }
                try skipString()
                try expect(UInt8(ascii: ":"))
                try skipValue(depth: depth + 1)
            } while consume(UInt8(ascii: ","))
            try expect(UInt8(ascii: "}"))
        case UInt8(ascii: "["):
            at += 1
            if consume(UInt8(ascii: "]")) { return }
            repeat {
                try skipValue(depth: depth + 1)
            } while consume(UInt8(ascii: ","))
            try expect(UInt8(ascii: "]"))
        case UInt8(ascii: "\""):
            try skipString()
        case UInt8(ascii: "t"):
            guard literal("true") else { throw fail("expected a value") }
        case UInt8(ascii: "f"):
            guard literal("false") else { throw fail("expected a value") }
        case UInt8(ascii: "n"):
            guard literal("null") else { throw fail("expected a value") }
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            try skipNumber()
        default:
            throw fail("expected a value")
        }
    }

    private mutating func skipString() throws(Failure) {
        at += 1  // the opening quote
        while let b = current {
            at += 1
            switch b {
            case UInt8(ascii: "\""):
                return
            case UInt8(ascii: "\\"):
                guard let e = current else { throw fail("unterminated string") }
                at += 1
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
                    UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    break
                case UInt8(ascii: "u"):
                    _ = try hex4()
                default:
                    throw fail("bad escape in a string")
                }
            default:
                guard b >= 0x20 else { throw fail("control character in a string") }
            }
        }
        throw fail("unterminated string")
    }

    private mutating func skipNumber() throws(Failure) {
        if current == UInt8(ascii: "-") { at += 1 }
        guard let first = current, first >= UInt8(ascii: "0"), first <= UInt8(ascii: "9") else {
            throw fail("bad number")
        }
        if first == UInt8(ascii: "0") { at += 1 } else { skipDigits() }
        if current == UInt8(ascii: ".") {
            at += 1
            guard skipDigits() > 0 else { throw fail("bad number") }
        }
        if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
            at += 1
            if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { at += 1 }
            guard skipDigits() > 0 else { throw fail("bad number") }
        }
    }

    @discardableResult
    private mutating func skipDigits() -> Int {
        let start = at
        while let b = current, b >= UInt8(ascii: "0"), b <= UInt8(ascii: "9") { at += 1 }
        return at - start
    }
}

extension UnsafeBufferPointer<UInt8> {
    /// True when the bytes are exactly the ASCII `word`.
    @inline(__always)
    func equals(_ word: StaticString) -> Bool {
        guard count == word.utf8CodeUnitCount, let base = baseAddress else {
            return count == 0 && word.utf8CodeUnitCount == 0
        }
        return memcmp(base, word.utf8Start, count) == 0
    }
}
