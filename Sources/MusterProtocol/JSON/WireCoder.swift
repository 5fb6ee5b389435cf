// One member list per wire object. Each object type declares its members once, in `members(_:)`,
// as calls on a `WireCoder`: wire name, grammar or range, and whether the member is required,
// optional or has a default. The decoder (`JSONObjectReader`) reads the members in that order and
// checks them; the encoder (`JSONWriter`) writes them in that order, leaving out what is absent or
// at its default. The tests walk the same list to check it against the JSON Schemas. `members` is
// generic: in the optimised build it is specialised for each coder, so it runs like code written
// for that coder alone.

/// A value that travels as one JSON value both ways.
typealias WireValue = JSONValueDecodable & JSONValueEncodable

/// Where the byte limit of an opaque member comes from.
enum RawLimit {
    /// `ProtocolLimits.maxParamsBytes`.
    case params
    /// `ProtocolLimits.maxResultBytes`.
    case result
    /// `ProtocolLimits.maxMessageBytes`.
    case message

    func bytes(_ limits: ProtocolLimits) -> Int {
        switch self {
        case .params: limits.maxParamsBytes
        case .result: limits.maxResultBytes
        case .message: limits.maxMessageBytes
        }
    }
}

/// What `members(_:)` is written against: one method per kind of member. Decoding reads `value`
/// from the object and stores it; encoding writes it; the schema walk records it. Only the decoder
/// may assign `value`: `WireMembers.encodeMembers` hands `members(_:)` the message in place.
protocol WireCoder: ~Copyable {
    /// A member that must be present.
    mutating func required<T: WireValue>(_ key: StaticString, _ value: inout T) throws(ProtocolError)
    /// Absent means nil, and nil is left out.
    mutating func optional<T: WireValue>(_ key: StaticString, _ value: inout T?) throws(ProtocolError)
    /// A required string of a grammar.
    mutating func string(_ key: StaticString, _ value: inout String, _ grammar: Grammar) throws(ProtocolError)
    /// An optional string of a grammar.
    mutating func string(_ key: StaticString, _ value: inout String?, _ grammar: Grammar) throws(ProtocolError)
    /// A required integer in `range`.
    mutating func int(_ key: StaticString, _ value: inout Int, in range: ClosedRange<Int64>) throws(ProtocolError)
    /// An optional integer in `range`.
    mutating func int(_ key: StaticString, _ value: inout Int?, in range: ClosedRange<Int64>) throws(ProtocolError)
    /// An integer in `range` with a default: absent means `default`, and `default` is left out.
    mutating func int(_ key: StaticString, _ value: inout Int, default: Int, in range: ClosedRange<Int64>)
        throws(ProtocolError)
    /// Distinct strings of a grammar. `optional`: absent means empty, and empty is left out.
    mutating func names(
        _ key: StaticString, _ value: inout [String], _ grammar: Grammar, maxCount: Int, optional: Bool
    ) throws(ProtocolError)
    /// Objects. `optional`: absent means empty, and empty is left out.
    mutating func list<T: WireObject>(_ key: StaticString, _ value: inout [T], maxCount: Int, optional: Bool)
        throws(ProtocolError)
    /// Opaque JSON (`object`: must be an object), absent means nil.
    mutating func raw(_ key: StaticString, _ value: inout RawJSON?, object: Bool, limit: RawLimit)
        throws(ProtocolError)
    /// Opaque JSON. `absent` nil: required. Otherwise absent means `absent`, which is left out
    /// unless `writesAbsent`.
    mutating func raw(
        _ key: StaticString, _ value: inout RawJSON, object: Bool, limit: RawLimit, absent: RawJSON?,
        writesAbsent: Bool
    ) throws(ProtocolError)
    /// A required member that is an object of its own, its members declared by `body`.
    mutating func object(_ key: StaticString, _ body: (inout Self) throws(ProtocolError) -> Void)
        throws(ProtocolError)
    /// `role` of `hello`: must be `role`.
    mutating func role(_ role: PeerRole) throws(ProtocolError)
    /// `versions` of `hello`: at least one protocol major version.
    mutating func versions(_ value: inout [Int]) throws(ProtocolError)
    /// Runs `body` when decoding only, at this point of the member list: checks across members,
    /// values derived from others, normalisation.
    mutating func decoded(_ body: (inout JSONObjectReader) throws(ProtocolError) -> Void) throws(ProtocolError)
}

extension WireCoder where Self: ~Copyable {
    /// The members of `value` as members of this object (e.g. `submit` is `id` plus a batch request).
    @inline(__always)
    mutating func inline<T: WireMembers>(_ value: inout T) throws(ProtocolError) {
        try value.members(&self)
    }

    /// When decoding: `invalid_message` at `key` unless `ok`.
    @inline(__always)
    mutating func check(_ key: StaticString, _ ok: Bool, _ reason: @autoclosure () -> String)
        throws(ProtocolError)
    {
        try decoded { _ throws(ProtocolError) in
            if !ok { throw .invalid("\(key)", reason()) }
        }
    }
}

/// A protocol object whose members are declared once, in `members(_:)`.
protocol WireMembers: WireObject {
    /// A value to decode into: `members` overwrites every member (placeholder values otherwise).
    static var blank: Self { get }
    /// The members in wire order. Implementations are `@inline(__always)`: each coder's
    /// specialisation then folds into that coder's `decode` or `encodeMembers`, as the
    /// hand-written code did (the small messages encoded up to 10% slower without it).
    mutating func members<C: WireCoder & ~Copyable>(_ c: inout C) throws(ProtocolError)
}

extension WireMembers {
    @inline(__always)
    static func decode(_ o: inout JSONObjectReader) throws(ProtocolError) -> Self {
        var value = blank
        try value.members(&o)
        return value
    }

    @inline(__always)
    func encodeMembers(_ w: inout JSONWriter) {
        // `members` is mutating for the decoder's sake; JSONWriter's WireCoder methods only read
        // the values they are handed and never assign them, and `decoded` bodies do not run when
        // encoding. So the encoder walks this value in place: a mutable copy would retain and
        // release every reference it holds (arrays, long strings, params), 10-15% of an encode.
        withUnsafePointer(to: self) { value in
            do throws(ProtocolError) {
                try UnsafeMutablePointer(mutating: value).pointee.members(&w)
            } catch {
                preconditionFailure("encoding does not fail")
            }
        }
    }
}

// MARK: - Decoding

extension JSONObjectReader: WireCoder {
    @inline(__always)
    mutating func required<T: WireValue>(_ key: StaticString, _ value: inout T) throws(ProtocolError) {
        value = try required(key)
    }

    @inline(__always)
    mutating func optional<T: WireValue>(_ key: StaticString, _ value: inout T?) throws(ProtocolError) {
        value = try optional(key)
    }

    @inline(__always)
    mutating func string(_ key: StaticString, _ value: inout String, _ grammar: Grammar) throws(ProtocolError) {
        value = try string(key, grammar)
    }

    @inline(__always)
    mutating func string(_ key: StaticString, _ value: inout String?, _ grammar: Grammar) throws(ProtocolError) {
        value = try optionalString(key, grammar)
    }

    @inline(__always)
    mutating func int(_ key: StaticString, _ value: inout Int, in range: ClosedRange<Int64>) throws(ProtocolError) {
        value = try int(key, in: range)
    }

    @inline(__always)
    mutating func int(_ key: StaticString, _ value: inout Int?, in range: ClosedRange<Int64>) throws(ProtocolError) {
        value = try optionalInt(key, in: range)
    }

    @inline(__always)
    mutating func int(_ key: StaticString, _ value: inout Int, default: Int, in range: ClosedRange<Int64>)
        throws(ProtocolError)
    {
        value = try optionalInt(key, in: range) ?? `default`
    }

    @inline(__always)
    mutating func names(
        _ key: StaticString, _ value: inout [String], _ grammar: Grammar, maxCount: Int, optional: Bool
    ) throws(ProtocolError) {
        value = try names(key, grammar, maxCount: maxCount, required: !optional)
    }

    @inline(__always)
    mutating func list<T: WireObject>(_ key: StaticString, _ value: inout [T], maxCount: Int, optional: Bool)
        throws(ProtocolError)
    {
        value = try list(key, maxCount: maxCount, required: !optional)
    }

    @inline(__always)
    mutating func raw(_ key: StaticString, _ value: inout RawJSON?, object: Bool, limit: RawLimit)
        throws(ProtocolError)
    {
        value = try raw(key, object: object, maxBytes: limit.bytes(doc.limits))
    }

    @inline(__always)
    mutating func raw(
        _ key: StaticString, _ value: inout RawJSON, object: Bool, limit: RawLimit, absent: RawJSON?,
        writesAbsent: Bool
    ) throws(ProtocolError) {
        if let v = try raw(key, object: object, maxBytes: limit.bytes(doc.limits)) {
            value = v
        } else if let absent {
            value = absent
        } else {
            throw .invalid("\(key)", "required member is missing")
        }
    }

    mutating func object(_ key: StaticString, _ body: (inout JSONObjectReader) throws(ProtocolError) -> Void)
        throws(ProtocolError)
    {
        guard let v = find(key) else { throw .invalid("\(key)", "required member is missing") }
        do throws(ProtocolError) {
            var inner = try JSONObjectReader(doc, v)
            try body(&inner)
        } catch {
            var e = error
            e.prepend(key: "\(key)")
            throw e
        }
    }

    @inline(__always)
    mutating func role(_ role: PeerRole) throws(ProtocolError) {
        try PeerRole.expect(role, in: &self)
    }

    @inline(__always)
    mutating func versions(_ value: inout [Int]) throws(ProtocolError) {
        value = try PeerRole.versions(&self)
    }

    @inline(__always)
    mutating func decoded(_ body: (inout JSONObjectReader) throws(ProtocolError) -> Void) throws(ProtocolError) {
        try body(&self)
    }
}

// MARK: - Encoding

extension JSONWriter: WireCoder {
    @inline(__always)
    mutating func required<T: WireValue>(_ key: StaticString, _ value: inout T) {
        member(key, value)
    }

    @inline(__always)
    mutating func optional<T: WireValue>(_ key: StaticString, _ value: inout T?) {
        member(key, value)
    }

    @inline(__always)
    mutating func string(_ key: StaticString, _ value: inout String, _ grammar: Grammar) {
        member(key, value)
    }

    @inline(__always)
    mutating func string(_ key: StaticString, _ value: inout String?, _ grammar: Grammar) {
        member(key, value)
    }

    @inline(__always)
    mutating func int(_ key: StaticString, _ value: inout Int, in range: ClosedRange<Int64>) {
        member(key, value)
    }

    @inline(__always)
    mutating func int(_ key: StaticString, _ value: inout Int?, in range: ClosedRange<Int64>) {
        member(key, value)
    }

    @inline(__always)
    mutating func int(_ key: StaticString, _ value: inout Int, default: Int, in range: ClosedRange<Int64>) {
        if value != `default` { member(key, value) }
    }

    @inline(__always)
    mutating func names(
        _ key: StaticString, _ value: inout [String], _ grammar: Grammar, maxCount: Int, optional: Bool
    ) {
        if !optional || !value.isEmpty { member(key, value) }
    }

    @inline(__always)
    mutating func list<T: WireObject>(_ key: StaticString, _ value: inout [T], maxCount: Int, optional: Bool) {
        if !optional || !value.isEmpty { member(key, value) }
    }

    @inline(__always)
    mutating func raw(_ key: StaticString, _ value: inout RawJSON?, object: Bool, limit: RawLimit) {
        member(key, value)
    }

    @inline(__always)
    mutating func raw(
        _ key: StaticString, _ value: inout RawJSON, object: Bool, limit: RawLimit, absent: RawJSON?,
        writesAbsent: Bool
    ) {
        if writesAbsent || absent == nil || value != absent { member(key, value) }
    }

    @inline(__always)
    mutating func object(_ key: StaticString, _ body: (inout JSONWriter) throws(ProtocolError) -> Void)
        throws(ProtocolError)
    {
        self.key(key)
        append(UInt8(ascii: "{"))
        try body(&self)
        append(UInt8(ascii: "}"))
    }

    @inline(__always)
    mutating func role(_ role: PeerRole) {
        member("role", role.rawValue)
    }

    @inline(__always)
    mutating func versions(_ value: inout [Int]) {
        member("versions", value)
    }

    @inline(__always)
    mutating func decoded(_ body: (inout JSONObjectReader) throws(ProtocolError) -> Void) {}
}
