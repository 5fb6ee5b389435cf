// Typed access to the members of one JSON object on the tape, with the protocol's rules:
// unknown members are ignored, duplicate member names are rejected, a missing required member or a
// value of the wrong type is `invalid_message` with the member's path. Errors carry paths relative
// to the object; enclosing readers prepend their own key or index on the way out.

/// A value that can be read from a tape node. Errors carry a path relative to the node.
protocol JSONValueDecodable {
    static func decodeJSON(_ doc: JSONDocument, _ i: Int) throws(ProtocolError) -> Self
}

/// A value that can write itself as JSON.
protocol JSONValueEncodable {
    func encodeJSON(_ w: inout JSONWriter)
}

/// A JSON object type of the protocol: decoded member by member, encoded in a fixed member order.
protocol WireObject: JSONValueDecodable, JSONValueEncodable {
    static func decode(_ o: inout JSONObjectReader) throws(ProtocolError) -> Self
    func encodeMembers(_ w: inout JSONWriter)
}

extension WireObject {
    static func decodeJSON(_ doc: JSONDocument, _ i: Int) throws(ProtocolError) -> Self {
        var o = try JSONObjectReader(doc, i)
        return try decode(&o)
    }

    func encodeJSON(_ w: inout JSONWriter) {
        w.append(UInt8(ascii: "{"))
        encodeMembers(&w)
        w.append(UInt8(ascii: "}"))
    }
}

struct JSONObjectReader {
    let doc: JSONDocument
    let node: Int
    /// Key node where the next lookup starts: encoders write members in the order decoders read
    /// them, so most lookups hit the first key they compare.
    private var cursor: Int

    init(_ doc: JSONDocument, _ node: Int) throws(ProtocolError) {
        guard doc.nodes[node].kind == .object else {
            throw .invalid("", "expected an object, found \(doc.kindName(node))")
        }
        self.doc = doc
        self.node = node
        self.cursor = node + 1
        try checkDuplicates()
    }

    private var endIndex: Int { Int(doc.nodes[node].next) }

    @inline(__always)
    private func nextKey(after key: Int) -> Int { Int(doc.nodes[key + 1].next) }

    /// Rejects an object that names a member twice. Pairwise for small objects; hashed for large
    /// ones so that a hostile message cannot make this quadratic.
    private func checkDuplicates() throws(ProtocolError) {
        let count = Int(doc.nodes[node].count)
        guard count > 1 else { return }
        let end = endIndex
        if count <= 24 {
            var a = node + 1
            while a < end {
                var b = nextKey(after: a)
                while b < end {
                    if keysEqual(a, b) { throw duplicate(b) }
                    b = nextKey(after: b)
                }
                a = nextKey(after: a)
            }
        } else {
            var seen = Set<[UInt8]>(minimumCapacity: count)
            var k = node + 1
            while k < end {
                if !seen.insert(keyBytes(k)).inserted { throw duplicate(k) }
                k = nextKey(after: k)
            }
        }
    }

    private func duplicate(_ key: Int) -> ProtocolError {
        // The name goes into the path; a hostile one could be almost a megabyte long.
        var name = doc.string(key)
        if name.unicodeScalars.count > 64 { name = String(name.unicodeScalars.prefix(64)) + "…" }
        return .invalid(name, "member name appears more than once")
    }

    private func keyBytes(_ key: Int) -> [UInt8] {
        let n = doc.nodes[key]
        let raw = UnsafeBufferPointer(rebasing: doc.bytes[Int(n.start)..<Int(n.end)])
        return n.flags & JSONNode.hasEscapes == 0 ? Array(raw) : JSONDocument.unescape(raw)
    }

    private func keysEqual(_ a: Int, _ b: Int) -> Bool {
        let na = doc.nodes[a]
        let nb = doc.nodes[b]
        if (na.flags | nb.flags) & JSONNode.hasEscapes != 0 { return keyBytes(a) == keyBytes(b) }
        let len = Int(na.end - na.start)
        guard len == Int(nb.end - nb.start) else { return false }
        let sa = Int(na.start)
        let sb = Int(nb.start)
        for i in 0..<len where doc.bytes[sa + i] != doc.bytes[sb + i] { return false }
        return true
    }

    /// The value node of member `key`, or nil.
    mutating func find(_ key: StaticString) -> Int? {
        let end = endIndex
        var k = cursor
        while k < end {
            if doc.stringEquals(k, key) {
                cursor = nextKey(after: k)
                return k + 1
            }
            k = nextKey(after: k)
        }
        k = node + 1
        while k < cursor && k < end {
            if doc.stringEquals(k, key) {
                cursor = nextKey(after: k)
                return k + 1
            }
            k = nextKey(after: k)
        }
        return nil
    }

    mutating func required<T: JSONValueDecodable>(_ key: StaticString) throws(ProtocolError) -> T {
        guard let v = find(key) else { throw .invalid("\(key)", "required member is missing") }
        do throws(ProtocolError) {
            return try T.decodeJSON(doc, v)
        } catch {
            var e = error
            e.prepend(key: "\(key)")
            throw e
        }
    }

    /// Absent means nil; `null` is not accepted for an optional member unless T accepts it.
    mutating func optional<T: JSONValueDecodable>(_ key: StaticString) throws(ProtocolError) -> T? {
        guard let v = find(key) else { return nil }
        do throws(ProtocolError) {
            return try T.decodeJSON(doc, v)
        } catch {
            var e = error
            e.prepend(key: "\(key)")
            throw e
        }
    }

    /// A required string checked against a grammar.
    mutating func string(_ key: StaticString, _ grammar: Grammar) throws(ProtocolError) -> String {
        let s: String = try required(key)
        try grammar.check(s, path: "\(key)")
        return s
    }

    mutating func optionalString(_ key: StaticString, _ grammar: Grammar) throws(ProtocolError) -> String? {
        guard let s: String = try optional(key) else { return nil }
        try grammar.check(s, path: "\(key)")
        return s
    }

    /// A list of distinct strings, each checked against a grammar. Absent means empty when
    /// `required` is false.
    mutating func names(
        _ key: StaticString, _ grammar: Grammar, maxCount: Int, required: Bool = true
    ) throws(ProtocolError) -> [String] {
        let list: [String]
        if required {
            list = try self.required(key)
        } else {
            list = try optional(key) ?? []
        }
        if list.count > maxCount {
            throw .limit("\(key)", "\(list.count) entries exceed the limit of \(maxCount)")
        }
        for (i, s) in list.enumerated() {
            try grammar.check(s, path: "\(key)[\(i)]")
        }
        try Self.checkDistinct(list, path: "\(key)")
        return list
    }

    /// Rejects repeated entries. Lists are usually sent sorted, which makes this one linear pass.
    static func checkDistinct(_ list: [String], path: @autoclosure () -> String) throws(ProtocolError) {
        guard list.count > 1 else { return }
        var sorted = true
        for i in 1..<list.count where !(list[i - 1] < list[i]) {
            sorted = false
            break
        }
        if sorted { return }
        let copy = list.sorted()
        for i in 1..<copy.count where copy[i - 1] == copy[i] {
            throw .invalid(path(), "entries must be distinct ('\(copy[i])' repeats)")
        }
    }

    /// A required integer in `range`.
    mutating func int(_ key: StaticString, in range: ClosedRange<Int64>) throws(ProtocolError) -> Int {
        let v: Int64 = try required(key)
        guard range.contains(v) else {
            throw .invalid("\(key)", "\(v) is outside \(range.lowerBound)...\(range.upperBound)")
        }
        return Int(v)
    }

    mutating func optionalInt(_ key: StaticString, in range: ClosedRange<Int64>) throws(ProtocolError) -> Int? {
        guard find(key) != nil else { return nil }
        return try int(key, in: range)
    }

    /// Opaque JSON, kept as text: `object` demands an object. Over `maxBytes`: `limit_exceeded`.
    mutating func raw(_ key: StaticString, object: Bool, maxBytes: Int) throws(ProtocolError) -> RawJSON? {
        guard let v = find(key) else { return nil }
        if object && doc.nodes[v].kind != .object {
            throw .invalid("\(key)", "expected an object, found \(doc.kindName(v))")
        }
        let length = doc.textLength(v)
        if length > maxBytes {
            throw .limit("\(key)", "\(length) bytes exceed the limit of \(maxBytes) bytes")
        }
        return RawJSON(unchecked: doc.text(v))
    }

    /// A list of objects, each decoded by T; errors get the element index in their path.
    mutating func list<T: WireObject>(_ key: StaticString, maxCount: Int, required: Bool = true)
        throws(ProtocolError) -> [T]
    {
        guard let v = find(key) else {
            if required { throw .invalid("\(key)", "required member is missing") }
            return []
        }
        guard doc.nodes[v].kind == .array else {
            throw .invalid("\(key)", "expected an array, found \(doc.kindName(v))")
        }
        let count = Int(doc.nodes[v].count)
        if count > maxCount {
            throw .limit("\(key)", "\(count) entries exceed the limit of \(maxCount)")
        }
        var out: [T] = []
        out.reserveCapacity(count)
        var e = v + 1
        var index = 0
        while e < Int(doc.nodes[v].next) {
            do throws(ProtocolError) {
                out.append(try T.decodeJSON(doc, e))
            } catch {
                var err = error
                err.prepend(index: index)
                err.prepend(key: "\(key)")
                throw err
            }
            e = Int(doc.nodes[e].next)
            index += 1
        }
        return out
    }
}

// MARK: - Grammars

/// The string grammars of the protocol (Protocol/README.md, "Names and limits").
enum Grammar {
    /// `^[a-z][a-z0-9_.-]{0,63}$`: features and job kinds.
    case feature
    /// `^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`: backend and client names.
    case name
    /// `^[a-z][a-z0-9_]{0,63}$`: error codes, goodbye reasons, event names.
    case code
    /// 1 to `max` characters, no control characters (U+0000–U+001F, U+007F).
    case label(max: Int)
    /// 0 to `max` characters, no control characters: credentials, empty when there are none.
    case secret(max: Int)
    /// 0 to `max` characters, anything.
    case text(max: Int)

    static let model = Grammar.label(max: ProtocolLimits.maxModelLength)
    /// ComfyUI node class names such as `RIFE VFI` or `KSampler (Advanced)`.
    static let nodeClass = Grammar.label(max: ProtocolLimits.maxNodeClassLength)
    static let key = Grammar.label(max: ProtocolLimits.maxKeyLength)
    static let token = Grammar.secret(max: ProtocolLimits.maxTokenLength)
    static let message = Grammar.text(max: ProtocolLimits.maxTextLength)

    /// `path` is built only when the check fails: paths are for errors, not for the hot path.
    func check(_ s: String, path: @autoclosure () -> String) throws(ProtocolError) {
        switch self {
        case .feature:
            guard Self.matches(s, first: Self.isLowerAlpha, rest: Self.isFeatureByte) else {
                throw .invalid(path(), "must match ^[a-z][a-z0-9_.-]{0,63}$")
            }
        case .name:
            guard Self.matches(s, first: Self.isAlnum, rest: Self.isNameByte) else {
                throw .invalid(path(), "must match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
            }
        case .code:
            guard Self.matches(s, first: Self.isLowerAlpha, rest: Self.isCodeByte) else {
                throw .invalid(path(), "must match ^[a-z][a-z0-9_]{0,63}$")
            }
        case .label(let max):
            if s.isEmpty { throw .invalid(path(), "must not be empty") }
            if s.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F }) {
                throw .invalid(path(), "must not contain control characters")
            }
            try Self.checkLength(s, max: max, path: path)
        case .secret(let max):
            if s.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F }) {
                throw .invalid(path(), "must not contain control characters")
            }
            try Self.checkLength(s, max: max, path: path)
        case .text(let max):
            try Self.checkLength(s, max: max, path: path)
        }
    }

    /// Lengths count Unicode code points, as JSON Schema's maxLength does.
    private static func checkLength(_ s: String, max: Int, path: () -> String) throws(ProtocolError) {
        if s.utf8.count > max && s.unicodeScalars.count > max {
            throw .limit(path(), "longer than \(max) characters")
        }
    }

    private static func matches(_ s: String, first: (UInt8) -> Bool, rest: (UInt8) -> Bool) -> Bool {
        let u = s.utf8
        guard let f = u.first, u.count <= 64, first(f) else { return false }
        return u.dropFirst().allSatisfy(rest)
    }

    private static func isLowerAlpha(_ b: UInt8) -> Bool { b >= UInt8(ascii: "a") && b <= UInt8(ascii: "z") }
    private static func isDigit(_ b: UInt8) -> Bool { b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") }
    private static func isAlnum(_ b: UInt8) -> Bool {
        isLowerAlpha(b) || isDigit(b) || (b >= UInt8(ascii: "A") && b <= UInt8(ascii: "Z"))
    }
    private static func isFeatureByte(_ b: UInt8) -> Bool {
        isLowerAlpha(b) || isDigit(b) || b == UInt8(ascii: "_") || b == UInt8(ascii: ".") || b == UInt8(ascii: "-")
    }
    private static func isNameByte(_ b: UInt8) -> Bool {
        isAlnum(b) || b == UInt8(ascii: "_") || b == UInt8(ascii: ".") || b == UInt8(ascii: "-")
    }
    private static func isCodeByte(_ b: UInt8) -> Bool { isLowerAlpha(b) || isDigit(b) || b == UInt8(ascii: "_") }
}

// MARK: - Scalar conformances

extension String: JSONValueDecodable, JSONValueEncodable {
    static func decodeJSON(_ doc: JSONDocument, _ i: Int) throws(ProtocolError) -> String {
        guard doc.nodes[i].kind == .string else {
            throw .invalid("", "expected a string, found \(doc.kindName(i))")
        }
        return doc.string(i)
    }
    func encodeJSON(_ w: inout JSONWriter) { w.string(self) }
}

extension Bool: JSONValueDecodable, JSONValueEncodable {
    static func decodeJSON(_ doc: JSONDocument, _ i: Int) throws(ProtocolError) -> Bool {
        guard doc.nodes[i].kind == .bool else {
            throw .invalid("", "expected a boolean, found \(doc.kindName(i))")
        }
        return doc.nodes[i].flags & JSONNode.isTrue != 0
    }
    func encodeJSON(_ w: inout JSONWriter) { w.bool(self) }
}

extension UInt64: JSONValueDecodable, JSONValueEncodable {
    static func decodeJSON(_ doc: JSONDocument, _ i: Int) throws(ProtocolError) -> UInt64 {
        guard doc.nodes[i].kind == .number else {
            throw .invalid("", "expected an integer, found \(doc.kindName(i))")
        }
        guard let v = doc.uint64(i) else {
            throw .invalid("", "expected an integer in 0...\(UInt64.max) without fraction or exponent")
        }
        return v
    }
    func encodeJSON(_ w: inout JSONWriter) { w.uint(self) }
}

extension Int64: JSONValueDecodable, JSONValueEncodable {
    static func decodeJSON(_ doc: JSONDocument, _ i: Int) throws(ProtocolError) -> Int64 {
        guard doc.nodes[i].kind == .number else {
            throw .invalid("", "expected an integer, found \(doc.kindName(i))")
        }
        guard let v = doc.int64(i) else {
            throw .invalid("", "expected a 64-bit integer without fraction or exponent")
        }
        return v
    }
    func encodeJSON(_ w: inout JSONWriter) { w.int(self) }
}

extension Int: JSONValueDecodable, JSONValueEncodable {
    static func decodeJSON(_ doc: JSONDocument, _ i: Int) throws(ProtocolError) -> Int {
        Int(try Int64.decodeJSON(doc, i))
    }
    func encodeJSON(_ w: inout JSONWriter) { w.int(Int64(self)) }
}

extension Double: JSONValueDecodable, JSONValueEncodable {
    static func decodeJSON(_ doc: JSONDocument, _ i: Int) throws(ProtocolError) -> Double {
        guard let v = doc.double(i) else {
            throw .invalid("", "expected a number, found \(doc.kindName(i))")
        }
        guard v.isFinite else { throw .invalid("", "number out of range") }
        return v
    }
    func encodeJSON(_ w: inout JSONWriter) { w.double(self) }
}

extension Array: JSONValueDecodable where Element: JSONValueDecodable {
    static func decodeJSON(_ doc: JSONDocument, _ i: Int) throws(ProtocolError) -> [Element] {
        guard doc.nodes[i].kind == .array else {
            throw .invalid("", "expected an array, found \(doc.kindName(i))")
        }
        var out: [Element] = []
        out.reserveCapacity(Int(doc.nodes[i].count))
        var e = i + 1
        var index = 0
        while e < Int(doc.nodes[i].next) {
            do throws(ProtocolError) {
                out.append(try Element.decodeJSON(doc, e))
            } catch {
                var err = error
                err.prepend(index: index)
                throw err
            }
            e = Int(doc.nodes[e].next)
            index += 1
        }
        return out
    }
}

extension Array: JSONValueEncodable where Element: JSONValueEncodable {
    func encodeJSON(_ w: inout JSONWriter) {
        w.append(UInt8(ascii: "["))
        for (i, e) in enumerated() {
            if i > 0 { w.append(UInt8(ascii: ",")) }
            e.encodeJSON(&w)
        }
        w.append(UInt8(ascii: "]"))
    }
}

extension RawJSON: JSONValueDecodable, JSONValueEncodable {
    static func decodeJSON(_ doc: JSONDocument, _ i: Int) throws(ProtocolError) -> RawJSON {
        RawJSON(unchecked: doc.text(i))
    }
    func encodeJSON(_ w: inout JSONWriter) { w.rawJSON(self) }
}

/// Identifier types travel as JSON integers.
protocol WireUInt64ID: JSONValueDecodable, JSONValueEncodable {
    init(rawValue: UInt64)
    var rawValue: UInt64 { get }
}

extension WireUInt64ID {
    static func decodeJSON(_ doc: JSONDocument, _ i: Int) throws(ProtocolError) -> Self {
        Self(rawValue: try UInt64.decodeJSON(doc, i))
    }
    func encodeJSON(_ w: inout JSONWriter) { w.uint(rawValue) }
}

extension JobID: WireUInt64ID {}
extension BatchID: WireUInt64ID {}
extension Lease: WireUInt64ID {}
extension Incarnation: WireUInt64ID {}

extension BackendID: JSONValueDecodable, JSONValueEncodable {
    static func decodeJSON(_ doc: JSONDocument, _ i: Int) throws(ProtocolError) -> BackendID {
        let v = try Int64.decodeJSON(doc, i)
        guard v != 0 else { throw .invalid("", "backend id 0 is not used") }
        return BackendID(v)
    }
    func encodeJSON(_ w: inout JSONWriter) { w.int(rawValue) }
}

/// Closed string enumerations travel as their raw value.
protocol WireEnum: JSONValueDecodable, JSONValueEncodable, RawRepresentable, CaseIterable
where RawValue == String {}

extension WireEnum {
    static func decodeJSON(_ doc: JSONDocument, _ i: Int) throws(ProtocolError) -> Self {
        let s = try String.decodeJSON(doc, i)
        guard let v = Self(rawValue: s) else {
            let allowed = allCases.map { "'\($0.rawValue)'" }.joined(separator: ", ")
            throw .invalid("", "must be one of \(allowed)")
        }
        return v
    }
    func encodeJSON(_ w: inout JSONWriter) { w.string(rawValue) }
}

extension BackendState: WireEnum {}
extension JobState: WireEnum {}

extension AttemptOutcome: JSONValueDecodable, JSONValueEncodable {
    static func decodeJSON(_ doc: JSONDocument, _ i: Int) throws(ProtocolError) -> AttemptOutcome {
        let s = try String.decodeJSON(doc, i)
        try Grammar.code.check(s, path: "")
        return AttemptOutcome(s)
    }
    func encodeJSON(_ w: inout JSONWriter) { w.string(rawValue) }
}

extension ReleaseCause: JSONValueDecodable, JSONValueEncodable {
    static func decodeJSON(_ doc: JSONDocument, _ i: Int) throws(ProtocolError) -> ReleaseCause {
        let s = try String.decodeJSON(doc, i)
        try Grammar.code.check(s, path: "")
        return ReleaseCause(s)
    }
    func encodeJSON(_ w: inout JSONWriter) { w.string(rawValue) }
}

extension ErrorCode: JSONValueDecodable, JSONValueEncodable {
    static func decodeJSON(_ doc: JSONDocument, _ i: Int) throws(ProtocolError) -> ErrorCode {
        let s = try String.decodeJSON(doc, i)
        try Grammar.code.check(s, path: "")
        return ErrorCode(s)
    }
    func encodeJSON(_ w: inout JSONWriter) { w.string(rawValue) }
}

extension JSONWriter {
    @inline(__always)
    mutating func member<T: JSONValueEncodable>(_ key: StaticString, _ value: T) {
        self.key(key)
        value.encodeJSON(&self)
    }

    /// Omits the member when the value is nil.
    @inline(__always)
    mutating func member<T: JSONValueEncodable>(_ key: StaticString, _ value: T?) {
        guard let value else { return }
        self.key(key)
        value.encodeJSON(&self)
    }
}

extension ProtocolLimits {
    /// Whether `s` is a valid backend or client name (`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`): what a
    /// command checks before it says `hello` with it.
    public static func isValidName(_ s: String) -> Bool {
        (try? Grammar.name.check(s, path: "name")) != nil
    }
}
