// The public coding surface: every message enum and HTTP body decodes from UTF-8 JSON bytes with
// one entry point and encodes to UTF-8 JSON bytes (`[UInt8]`, ready for a WebSocket text frame or
// an HTTP body). Encoders emit compact JSON, members in the order of the spec.

/// Something that decodes from one JSON text.
public protocol ProtocolDecodable: Sendable {
    /// Decodes one message from UTF-8 JSON bytes, or says precisely why not.
    static func decode(_ bytes: UnsafeBufferPointer<UInt8>, limits: ProtocolLimits) throws(ProtocolError) -> Self
}

/// Something that encodes to one JSON text.
public protocol ProtocolEncodable: Sendable {
    /// The message as compact UTF-8 JSON.
    func encode() -> [UInt8]
}

extension ProtocolDecodable {
    /// Decodes one message from UTF-8 JSON bytes.
    public static func decode(_ bytes: [UInt8], limits: ProtocolLimits = .default) throws(ProtocolError) -> Self {
        let result: Result<Self, ProtocolError> = bytes.withUnsafeBufferPointer { buffer in
            do throws(ProtocolError) { return .success(try decode(buffer, limits: limits)) } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    /// Decodes one message from JSON text.
    public static func decode(_ text: String, limits: ProtocolLimits = .default) throws(ProtocolError) -> Self {
        var text = text
        let result: Result<Self, ProtocolError> = text.withUTF8 { buffer in
            do throws(ProtocolError) { return .success(try decode(buffer, limits: limits)) } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    /// Decodes one message from raw UTF-8 bytes (e.g. a frame buffer).
    public static func decode(_ bytes: UnsafeRawBufferPointer, limits: ProtocolLimits = .default)
        throws(ProtocolError) -> Self
    {
        try decode(bytes.bindMemory(to: UInt8.self), limits: limits)
    }
}

extension ProtocolEncodable {
    /// The message as JSON text.
    public func encodedString() -> String { String(decoding: encode(), as: UTF8.self) }
}

/// A message with a wire `type`.
protocol WireMessage: WireObject {
    static var wireType: StaticString { get }
}

extension WireMessage {
    func encodeMessage() -> [UInt8] {
        var w = JSONWriter(capacity: 512)
        w.raw("{\"type\":\"")
        w.raw(Self.wireType)
        w.append(UInt8(ascii: "\""))
        encodeMembers(&w)
        w.append(UInt8(ascii: "}"))
        return w.finish()
    }
}

/// A JSON object sent as a whole body (HTTP): decodes and encodes as one object, no `type`.
protocol WireBody: WireObject, ProtocolDecodable, ProtocolEncodable {}

extension WireBody {
    static func decodeBody(_ bytes: UnsafeBufferPointer<UInt8>, limits: ProtocolLimits) throws(ProtocolError)
        -> Self
    {
        try JSONDocument.with(bytes, limits: limits) { doc throws(ProtocolError) in
            guard doc.nodes[0].kind == .object else {
                throw .invalid("", "a body must be a JSON object, found \(doc.kindName(0))")
            }
            return try Self.decodeJSON(doc, 0)
        }
    }

    func encodeBody() -> [UInt8] {
        var w = JSONWriter(capacity: 256)
        encodeJSON(&w)
        return w.finish()
    }
}

/// The top-level `id` of a message, when it has a readable one, whatever its `type`: what an
/// error about a message it could not act on echoes (Protocol/README.md section 2), e.g. a
/// `started` sent before `hello`. Parses the text again: meant for rare error paths only.
public func wireRequestID(of text: String, limits: ProtocolLimits = .default) -> String? {
    var text = text
    return text.withUTF8 { bytes in
        try? JSONDocument.with(bytes, limits: limits) { doc throws(ProtocolError) -> String? in
            Envelope.requestID(doc)
        }
    } ?? nil
}

enum Envelope {
    /// The message's `id`, when it is a string of the key grammar.
    static func requestID(_ doc: JSONDocument) -> String? {
        guard doc.nodes[0].kind == .object, let idNode = firstMember(doc, "id"), doc.nodes[idNode].kind == .string
        else { return nil }
        let s = doc.string(idNode)
        return (try? Grammar.key.check(s, path: "id")) != nil ? s : nil
    }

    /// Parses a message, reads its `id` and `type` first (so that every error can echo them), then
    /// hands the object to `dispatch`, which switches on the type.
    static func decode<M>(
        _ bytes: UnsafeBufferPointer<UInt8>, limits: ProtocolLimits,
        dispatch: (String, inout JSONObjectReader) throws(ProtocolError) -> M
    ) throws(ProtocolError) -> M {
        var requestID: String?
        var messageType: String?
        do throws(ProtocolError) {
            return try JSONDocument.with(bytes, limits: limits) { doc throws(ProtocolError) in
                guard doc.nodes[0].kind == .object else {
                    throw .invalid("", "a message must be a JSON object, found \(doc.kindName(0))")
                }
                requestID = Envelope.requestID(doc)
                let typeNode = firstMember(doc, "type")
                // Only a plausible type name is kept: it ends up in logs and answers.
                if let typeNode, doc.nodes[typeNode].kind == .string, doc.textLength(typeNode) <= 66 {
                    messageType = doc.string(typeNode)
                }
                var o = try JSONObjectReader(doc, 0)
                guard let typeNode else { throw .invalid("type", "required member is missing") }
                guard doc.nodes[typeNode].kind == .string else {
                    throw .invalid("type", "expected a string, found \(doc.kindName(typeNode))")
                }
                return try dispatch(messageType ?? doc.string(typeNode), &o)
            }
        } catch {
            var e = error
            e.requestID = requestID ?? e.requestID
            e.messageType = messageType
            throw e
        }
    }

    private static func firstMember(_ doc: JSONDocument, _ key: StaticString) -> Int? {
        var k = 1
        let end = Int(doc.nodes[0].next)
        while k < end {
            if doc.stringEquals(k, key) { return k + 1 }
            k = Int(doc.nodes[k + 1].next)
        }
        return nil
    }

    static func unknownType(_ type: String, known: [StaticString]) -> ProtocolError {
        let list = known.map { "\($0)" }.joined(separator: ", ")
        return ProtocolError(
            code: .unknownType, path: "type", reason: "unknown message type; this link accepts \(list)")
    }
}

extension RawJSON {
    /// Validates `text` as exactly one JSON value (strict: see Protocol/README.md, "Framing").
    public init(validating text: String, limits: ProtocolLimits = .default) throws(ProtocolError) {
        var copy = text
        let result: Result<Void, ProtocolError> = copy.withUTF8 { buffer in
            do throws(ProtocolError) {
                _ = try JSONParser.parse(buffer, maxDepth: limits.maxDepth)
                return .success(())
            } catch {
                return .failure(error)
            }
        }
        try result.get()
        self.init(unchecked: text)
    }

    /// The JSON text of a protocol object.
    init<T: JSONValueEncodable>(encoding value: T) {
        var w = JSONWriter(capacity: 128)
        value.encodeJSON(&w)
        self.init(unchecked: String(decoding: w.finish(), as: UTF8.self))
    }

    /// Decodes this text as a protocol object.
    func decoded<T: JSONValueDecodable>(as type: T.Type, limits: ProtocolLimits = .default) throws(ProtocolError) -> T {
        var copy = text
        let result: Result<T, ProtocolError> = copy.withUTF8 { buffer in
            do throws(ProtocolError) {
                return .success(
                    try JSONDocument.with(buffer, limits: limits) { doc throws(ProtocolError) in
                        try T.decodeJSON(doc, 0)
                    })
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }
}
