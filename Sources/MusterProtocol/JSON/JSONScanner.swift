// A strict JSON (RFC 8259) parser over UTF-8 bytes that builds a flat tape of nodes instead of a
// tree: no per-value allocation, so small messages decode in well under a microsecond. Strings and
// numbers are validated during the scan but converted only when a decoder asks for them; opaque
// values (params, results) are sliced out as text without being materialised.
//
// Rules beyond RFC 8259 syntax: input must be valid UTF-8 (no overlong forms, no encoded
// surrogates); `\u` escapes must not leave a lone surrogate; nesting is limited; a byte order mark
// is rejected. Duplicate member names are detected by JSONObjectReader, for the objects the
// protocol interprets.

enum JSONKind: UInt8 {
    case object, array, string, number, bool, null
}

/// One value on the tape. Strings: `start..<end` is the content between the quotes. Others:
/// the value's text. `next` is the tape index after this value's subtree.
struct JSONNode {
    var kind: JSONKind
    var flags: UInt8
    var start: Int32
    var end: Int32
    var next: Int32
    var count: Int32

    /// String flag: contains at least one escape sequence.
    static let hasEscapes: UInt8 = 1
    /// Number flag: no fraction, no exponent.
    static let isInteger: UInt8 = 1
    /// Number flag: starts with a minus sign.
    static let isNegative: UInt8 = 2
    /// Bool flag: the value is `true`.
    static let isTrue: UInt8 = 1
}

struct JSONParser {
    let bytes: UnsafeBufferPointer<UInt8>
    let maxDepth: Int
    var pos = 0
    var nodes: [JSONNode] = []

    /// Parses one JSON value filling all of `bytes` (surrounding whitespace allowed).
    static func parse(_ bytes: UnsafeBufferPointer<UInt8>, maxDepth: Int) throws(ProtocolError) -> [JSONNode] {
        guard bytes.count < Int(Int32.max) else {
            throw ProtocolError(code: .messageTooLarge, reason: "input of \(bytes.count) bytes is too large")
        }
        var parser = JSONParser(bytes: bytes, maxDepth: maxDepth)
        parser.nodes.reserveCapacity(min(bytes.count / 6 + 4, 4096))
        parser.skipWhitespace()
        do {
            try parser.parseValue(depth: 0)
        } catch {
            // An `error` echoes the request id whenever it was read before the fault
            // (Protocol/README.md section 2), e.g. `id` ahead of a member nested too deep.
            var e = error
            e.requestID = parser.partialRequestID(maxDepth: maxDepth)
            throw e
        }
        parser.skipWhitespace()
        if parser.pos != bytes.count {
            throw parser.syntax("unexpected \(parser.describeByte()) after the JSON value")
        }
        return parser.nodes
    }

    /// The top-level string member `id` among the members parsed completely before a fault.
    func partialRequestID(maxDepth: Int) -> String? {
        guard let first = nodes.first, first.kind == .object else { return nil }
        var k = 1
        while k + 1 < nodes.count {
            let value = nodes[k + 1]
            guard value.next > 0, Int(value.next) <= nodes.count else { return nil }  // not finished
            let found: String?? = nodes.withUnsafeBufferPointer { buffer in
                let doc = JSONDocument(bytes: bytes, nodes: buffer, limits: .default)
                guard doc.stringEquals(k, "id") else { return .none }
                guard value.kind == .string else { return .some(nil) }
                let s = doc.string(k + 1)
                return .some((try? Grammar.key.check(s, path: "id")) != nil ? s : nil)
            }
            if let found { return found }
            k = Int(value.next)
        }
        return nil
    }

    func syntax(_ reason: String) -> ProtocolError {
        ProtocolError(code: .malformedJSON, reason: reason)
    }

    func describeByte() -> String {
        guard pos < bytes.count else { return "end of input" }
        let b = bytes[pos]
        if b >= 0x21 && b < 0x7F { return "'\(Character(Unicode.Scalar(b)))' at offset \(pos)" }
        return "byte 0x\(String(b, radix: 16)) at offset \(pos)"
    }

    @inline(__always)
    mutating func skipWhitespace() {
        while pos < bytes.count {
            let b = bytes[pos]
            guard b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09 else { return }
            pos += 1
        }
    }

    mutating func parseValue(depth: Int) throws(ProtocolError) {
        guard pos < bytes.count else { throw syntax("unexpected end of input, expected a value") }
        switch bytes[pos] {
        case UInt8(ascii: "{"): try parseObject(depth: depth + 1)
        case UInt8(ascii: "["): try parseArray(depth: depth + 1)
        case UInt8(ascii: "\""): try parseString()
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): try parseNumber()
        case UInt8(ascii: "t"): try parseLiteral("true", flags: JSONNode.isTrue, kind: .bool)
        case UInt8(ascii: "f"): try parseLiteral("false", flags: 0, kind: .bool)
        case UInt8(ascii: "n"): try parseLiteral("null", flags: 0, kind: .null)
        default: throw syntax("unexpected \(describeByte()), expected a value")
        }
    }

    mutating func checkDepth(_ depth: Int) throws(ProtocolError) {
        if depth > maxDepth {
            throw ProtocolError(code: .limitExceeded, reason: "JSON nested deeper than \(maxDepth) levels")
        }
    }

    mutating func parseObject(depth: Int) throws(ProtocolError) {
        try checkDepth(depth)
        let index = nodes.count
        nodes.append(JSONNode(kind: .object, flags: 0, start: Int32(pos), end: 0, next: 0, count: 0))
        pos += 1
        var count: Int32 = 0
        skipWhitespace()
        if pos < bytes.count && bytes[pos] == UInt8(ascii: "}") {
            pos += 1
        } else {
            while true {
                skipWhitespace()
                guard pos < bytes.count, bytes[pos] == UInt8(ascii: "\"") else {
                    throw syntax("unexpected \(describeByte()), expected a member name")
                }
                try parseString()
                skipWhitespace()
                guard pos < bytes.count, bytes[pos] == UInt8(ascii: ":") else {
                    throw syntax("unexpected \(describeByte()), expected ':'")
                }
                pos += 1
                skipWhitespace()
                try parseValue(depth: depth)
                count += 1
                skipWhitespace()
                guard pos < bytes.count else { throw syntax("unexpected end of input in an object") }
                let b = bytes[pos]
                pos += 1
                if b == UInt8(ascii: ",") { continue }
                if b == UInt8(ascii: "}") { break }
                pos -= 1
                throw syntax("unexpected \(describeByte()), expected ',' or '}'")
            }
        }
        nodes[index].end = Int32(pos)
        nodes[index].next = Int32(nodes.count)
        nodes[index].count = count
    }

    mutating func parseArray(depth: Int) throws(ProtocolError) {
        try checkDepth(depth)
        let index = nodes.count
        nodes.append(JSONNode(kind: .array, flags: 0, start: Int32(pos), end: 0, next: 0, count: 0))
        pos += 1
        var count: Int32 = 0
        skipWhitespace()
        if pos < bytes.count && bytes[pos] == UInt8(ascii: "]") {
            pos += 1
        } else {
            while true {
                skipWhitespace()
                try parseValue(depth: depth)
                count += 1
                skipWhitespace()
                guard pos < bytes.count else { throw syntax("unexpected end of input in an array") }
                let b = bytes[pos]
                pos += 1
                if b == UInt8(ascii: ",") { continue }
                if b == UInt8(ascii: "]") { break }
                pos -= 1
                throw syntax("unexpected \(describeByte()), expected ',' or ']'")
            }
        }
        nodes[index].end = Int32(pos)
        nodes[index].next = Int32(nodes.count)
        nodes[index].count = count
    }

    mutating func parseLiteral(_ word: StaticString, flags: UInt8, kind: JSONKind) throws(ProtocolError) {
        let n = word.utf8CodeUnitCount
        guard pos + n <= bytes.count else { throw syntax("unexpected end of input in '\(word)'") }
        let w = word.utf8Start
        for i in 0..<n where bytes[pos + i] != w[i] {
            pos += i
            throw syntax("unexpected \(describeByte()) in '\(word)'")
        }
        nodes.append(
            JSONNode(
                kind: kind, flags: flags, start: Int32(pos), end: Int32(pos + n), next: Int32(nodes.count + 1),
                count: 0))
        pos += n
    }

    @inline(__always)
    static func isDigit(_ b: UInt8) -> Bool { b &- UInt8(ascii: "0") < 10 }

    mutating func parseNumber() throws(ProtocolError) {
        let start = pos
        var flags = JSONNode.isInteger
        if bytes[pos] == UInt8(ascii: "-") {
            flags |= JSONNode.isNegative
            pos += 1
        }
        guard pos < bytes.count, Self.isDigit(bytes[pos]) else {
            throw syntax("unexpected \(describeByte()), expected a digit")
        }
        if bytes[pos] == UInt8(ascii: "0") {
            pos += 1
        } else {
            while pos < bytes.count && Self.isDigit(bytes[pos]) { pos += 1 }
        }
        if pos < bytes.count && bytes[pos] == UInt8(ascii: ".") {
            flags &= ~JSONNode.isInteger
            pos += 1
            guard pos < bytes.count, Self.isDigit(bytes[pos]) else {
                throw syntax("unexpected \(describeByte()), expected a digit after '.'")
            }
            while pos < bytes.count && Self.isDigit(bytes[pos]) { pos += 1 }
        }
        if pos < bytes.count && (bytes[pos] | 0x20) == UInt8(ascii: "e") {
            flags &= ~JSONNode.isInteger
            pos += 1
            if pos < bytes.count && (bytes[pos] == UInt8(ascii: "+") || bytes[pos] == UInt8(ascii: "-")) { pos += 1 }
            guard pos < bytes.count, Self.isDigit(bytes[pos]) else {
                throw syntax("unexpected \(describeByte()), expected a digit in the exponent")
            }
            while pos < bytes.count && Self.isDigit(bytes[pos]) { pos += 1 }
        }
        nodes.append(
            JSONNode(
                kind: .number, flags: flags, start: Int32(start), end: Int32(pos), next: Int32(nodes.count + 1),
                count: 0))
    }

    mutating func parseString() throws(ProtocolError) {
        let open = pos
        pos += 1
        var flags: UInt8 = 0
        let n = bytes.count
        while pos < n {
            let b = bytes[pos]
            if b == UInt8(ascii: "\"") {
                nodes.append(
                    JSONNode(
                        kind: .string, flags: flags, start: Int32(open + 1), end: Int32(pos),
                        next: Int32(nodes.count + 1), count: 0))
                pos += 1
                return
            }
            if b == UInt8(ascii: "\\") {
                flags = JSONNode.hasEscapes
                try scanEscape()
            } else if b < 0x20 {
                throw syntax("unescaped control character 0x\(String(b, radix: 16)) in a string at offset \(pos)")
            } else if b < 0x80 {
                pos += 1
            } else {
                try scanUTF8(b)
            }
        }
        throw syntax("unterminated string starting at offset \(open)")
    }

    func hex4(at p: Int) -> UInt16? {
        guard p + 4 <= bytes.count else { return nil }
        var v: UInt16 = 0
        for i in 0..<4 {
            let c = bytes[p + i]
            let d: UInt8
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): d = c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): d = c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): d = c - UInt8(ascii: "A") + 10
            default: return nil
            }
            v = v << 4 | UInt16(d)
        }
        return v
    }

    mutating func scanEscape() throws(ProtocolError) {
        guard pos + 1 < bytes.count else { throw syntax("unterminated escape sequence at offset \(pos)") }
        switch bytes[pos + 1] {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
            UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
            pos += 2
        case UInt8(ascii: "u"):
            guard let unit = hex4(at: pos + 2) else { throw syntax("invalid \\u escape at offset \(pos)") }
            if unit >= 0xDC00 && unit <= 0xDFFF {
                throw syntax("lone low surrogate \\u\(String(unit, radix: 16)) at offset \(pos)")
            }
            if unit >= 0xD800 && unit <= 0xDBFF {
                let p = pos + 6
                guard p + 1 < bytes.count, bytes[p] == UInt8(ascii: "\\"), bytes[p + 1] == UInt8(ascii: "u"),
                    let low = hex4(at: p + 2), low >= 0xDC00 && low <= 0xDFFF
                else {
                    throw syntax("lone high surrogate \\u\(String(unit, radix: 16)) at offset \(pos)")
                }
                pos += 12
            } else {
                pos += 6
            }
        default:
            pos += 1
            throw syntax("invalid escape \(describeByte())")
        }
    }

    @inline(__always)
    func isContinuation(_ p: Int) -> Bool { p < bytes.count && bytes[p] & 0xC0 == 0x80 }

    /// Validates one multi-byte UTF-8 sequence starting with `b` at `pos` (Unicode table 3-7).
    mutating func scanUTF8(_ b: UInt8) throws(ProtocolError) {
        let n = bytes.count
        var ok = false
        var length = 0
        switch b {
        case 0xC2...0xDF:
            length = 2
            ok = isContinuation(pos + 1)
        case 0xE0:
            length = 3
            ok = pos + 1 < n && (0xA0...0xBF).contains(bytes[pos + 1]) && isContinuation(pos + 2)
        case 0xE1...0xEC, 0xEE...0xEF:
            length = 3
            ok = isContinuation(pos + 1) && isContinuation(pos + 2)
        case 0xED:
            length = 3
            ok = pos + 1 < n && (0x80...0x9F).contains(bytes[pos + 1]) && isContinuation(pos + 2)
        case 0xF0:
            length = 4
            ok =
                pos + 1 < n && (0x90...0xBF).contains(bytes[pos + 1]) && isContinuation(pos + 2)
                && isContinuation(pos + 3)
        case 0xF1...0xF3:
            length = 4
            ok = isContinuation(pos + 1) && isContinuation(pos + 2) && isContinuation(pos + 3)
        case 0xF4:
            length = 4
            ok =
                pos + 1 < n && (0x80...0x8F).contains(bytes[pos + 1]) && isContinuation(pos + 2)
                && isContinuation(pos + 3)
        default:
            ok = false
        }
        guard ok else { throw syntax("invalid UTF-8 at offset \(pos)") }
        pos += length
    }
}

/// A parsed message: the input bytes and their tape. Valid only while both buffers are.
struct JSONDocument {
    let bytes: UnsafeBufferPointer<UInt8>
    let nodes: UnsafeBufferPointer<JSONNode>
    let limits: ProtocolLimits

    /// Parses `bytes` and runs `body` on the document.
    static func with<R>(
        _ bytes: UnsafeBufferPointer<UInt8>, limits: ProtocolLimits,
        _ body: (JSONDocument) throws(ProtocolError) -> R
    ) throws(ProtocolError) -> R {
        if bytes.count > limits.maxMessageBytes {
            throw ProtocolError(
                code: .messageTooLarge,
                reason: "message of \(bytes.count) bytes exceeds the limit of \(limits.maxMessageBytes) bytes")
        }
        let nodes = try JSONParser.parse(bytes, maxDepth: limits.maxDepth)
        // withUnsafeBufferPointer's closure is untyped-throws; carry the typed error across it.
        let result: Result<R, ProtocolError> = nodes.withUnsafeBufferPointer { nodeBuffer in
            let doc = JSONDocument(bytes: bytes, nodes: nodeBuffer, limits: limits)
            do throws(ProtocolError) {
                return .success(try body(doc))
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    @inline(__always)
    func kindName(_ i: Int) -> String {
        switch nodes[i].kind {
        case .object: "an object"
        case .array: "an array"
        case .string: "a string"
        case .number: "a number"
        case .bool: "a boolean"
        case .null: "null"
        }
    }

    /// The decoded string content of string node `i`.
    func string(_ i: Int) -> String {
        let node = nodes[i]
        let raw = UnsafeBufferPointer(rebasing: bytes[Int(node.start)..<Int(node.end)])
        if node.flags & JSONNode.hasEscapes == 0 {
            return String(decoding: raw, as: UTF8.self)
        }
        return String(decoding: Self.unescape(raw), as: UTF8.self)
    }

    /// Whether string node `i` equals `literal` (compared after unescaping).
    @inline(__always)
    func stringEquals(_ i: Int, _ literal: StaticString) -> Bool {
        let node = nodes[i]
        if node.flags & JSONNode.hasEscapes != 0 {
            let u = Self.unescape(UnsafeBufferPointer(rebasing: bytes[Int(node.start)..<Int(node.end)]))
            return u.elementsEqual(UnsafeBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount))
        }
        let n = literal.utf8CodeUnitCount
        guard Int(node.end - node.start) == n else { return false }
        let p = literal.utf8Start
        let s = Int(node.start)
        for k in 0..<n where bytes[s + k] != p[k] { return false }
        return true
    }

    /// The unescaped bytes of a string's content (already validated by the parser).
    static func unescape(_ raw: UnsafeBufferPointer<UInt8>) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(raw.count)
        var i = 0
        func hex(_ p: Int) -> UInt32 {
            var v: UInt32 = 0
            for k in 0..<4 {
                let c = raw[p + k]
                let d: UInt32 =
                    c <= UInt8(ascii: "9") ? UInt32(c - UInt8(ascii: "0")) : UInt32((c | 0x20) - UInt8(ascii: "a") + 10)
                v = v << 4 | d
            }
            return v
        }
        while i < raw.count {
            let b = raw[i]
            guard b == UInt8(ascii: "\\") else {
                out.append(b)
                i += 1
                continue
            }
            let e = raw[i + 1]
            i += 2
            switch e {
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = hex(i)
                i += 4
                if scalar >= 0xD800 && scalar <= 0xDBFF {
                    let low = hex(i + 2)
                    i += 6
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                }
                out.append(contentsOf: UTF8.encode(Unicode.Scalar(scalar)!)!)
            default: out.append(e)
            }
        }
        return out
    }

    /// The JSON text of node `i`, verbatim.
    func text(_ i: Int) -> String {
        let node = nodes[i]
        let range: Range<Int> =
            node.kind == .string ? Int(node.start) - 1..<Int(node.end) + 1 : Int(node.start)..<Int(node.end)
        return String(decoding: UnsafeBufferPointer(rebasing: bytes[range]), as: UTF8.self)
    }

    /// Byte length of node `i`'s JSON text.
    func textLength(_ i: Int) -> Int {
        let node = nodes[i]
        return Int(node.end - node.start) + (node.kind == .string ? 2 : 0)
    }

    /// An unsigned integer; nil when the number is not an integer or out of range. `-0` is 0.
    func uint64(_ i: Int) -> UInt64? {
        let node = nodes[i]
        guard node.kind == .number, node.flags & JSONNode.isInteger != 0 else { return nil }
        let negative = node.flags & JSONNode.isNegative != 0
        var v: UInt64 = 0
        for p in Int(node.start) + (negative ? 1 : 0)..<Int(node.end) {
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(UInt64(bytes[p] - UInt8(ascii: "0")))
            if o1 || o2 { return nil }
            v = a
        }
        return negative && v != 0 ? nil : v
    }

    /// A signed integer; nil when the number is not an integer or out of range.
    func int64(_ i: Int) -> Int64? {
        let node = nodes[i]
        guard node.kind == .number, node.flags & JSONNode.isInteger != 0 else { return nil }
        let negative = node.flags & JSONNode.isNegative != 0
        var v: UInt64 = 0
        for p in Int(node.start) + (negative ? 1 : 0)..<Int(node.end) {
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(UInt64(bytes[p] - UInt8(ascii: "0")))
            if o1 || o2 { return nil }
            v = a
        }
        if negative {
            if v <= UInt64(Int64.max) { return -Int64(v) }
            if v == UInt64(Int64.max) + 1 { return Int64.min }
            return nil
        }
        return v <= UInt64(Int64.max) ? Int64(v) : nil
    }

    private static let powersOfTen: [Double] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18,
        1e19, 1e20, 1e21, 1e22,
    ]

    /// A number as a Double: exact fast path for short decimals (mantissa < 2^53, |exponent| <= 22),
    /// the standard library's correctly rounded conversion otherwise. Infinite for huge magnitudes.
    func double(_ i: Int) -> Double? {
        let node = nodes[i]
        guard node.kind == .number else { return nil }
        var p = Int(node.start)
        let end = Int(node.end)
        let negative = bytes[p] == UInt8(ascii: "-")
        if negative { p += 1 }
        var mantissa: UInt64 = 0
        var digits = 0
        var exp10 = 0
        var fast = true
        while p < end && JSONParser.isDigit(bytes[p]) {
            if digits < 19 {
                mantissa = mantissa * 10 + UInt64(bytes[p] - UInt8(ascii: "0"))
                if mantissa != 0 { digits += 1 }
            } else {
                fast = false
            }
            p += 1
        }
        if p < end && bytes[p] == UInt8(ascii: ".") {
            p += 1
            while p < end && JSONParser.isDigit(bytes[p]) {
                if digits < 19 {
                    mantissa = mantissa * 10 + UInt64(bytes[p] - UInt8(ascii: "0"))
                    if mantissa != 0 { digits += 1 }
                    exp10 -= 1
                } else {
                    fast = false
                }
                p += 1
            }
        }
        if p < end { fast = false }  // exponent: take the slow path
        if fast && mantissa < (1 << 53) && exp10 >= -22 {
            let m = Double(mantissa)
            let v = exp10 == 0 ? m : m / Self.powersOfTen[-exp10]
            return negative ? -v : v
        }
        return Double(text(i))
    }
}
