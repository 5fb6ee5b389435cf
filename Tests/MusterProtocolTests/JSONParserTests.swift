import Foundation
import Testing

@testable import MusterProtocol

/// Parses `text` as one JSON value with the protocol's rules; nil when accepted, else the error.
private func parseError(_ bytes: [UInt8], maxDepth: Int = 64) -> ProtocolError? {
    bytes.withUnsafeBufferPointer { buffer -> ProtocolError? in
        do throws(ProtocolError) {
            _ = try JSONParser.parse(buffer, maxDepth: maxDepth)
            return nil
        } catch {
            return error
        }
    }
}

private func parseError(_ text: String, maxDepth: Int = 64) -> ProtocolError? {
    parseError(Array(text.utf8), maxDepth: maxDepth)
}

@Suite struct JSONParserTests {
    @Test(arguments: [
        "{}", "[]", "0", "-0", "1.5e-3", "1E+2", "123456789012345678901234567890", "1e400", "-1e-400", "true", "false",
        "null", #""""#, #""a\"b\\c\/d\b\f\n\r\t""#, #""\u00e9\u6F22\ud83c\udfa5""#, " \t\r\n{ \"a\" : [ 1 , 2 ] } \n",
        #"{"a":{"b":{"c":[[[]]]}}}"#, "\"\u{7F}\u{80}\u{7FF}\u{800}\u{FFFF}\u{10000}\u{10FFFF}\"",
    ])
    func acceptsValidJSON(_ text: String) {
        #expect(parseError(text) == nil, "rejected \(text)")
    }

    @Test(arguments: [
        "", " ", "{", "}", "[1,]", "{\"a\":1,}", "{\"a\" 1}", "{a:1}", "{'a':1}", "01", "-", "1.", ".5", "1e", "+1",
        "1 2", "NaN", "Infinity", "-Infinity", "tru", "nul", "[1 2]", "\"abc", "\"\\x\"", "\"\\u12\"", "\"\\u12G4\"",
        #""\ud800""#, #""\udc00""#, #""\ud800\u0041""#, #""\ud800x""#, "\"a\u{01}b\"", "\"\t\"", "[1]]", "{\"a\":1}}",
        "//c\n{}", "{\"a\":1 /* c */}",
    ])
    func rejectsMalformedJSON(_ text: String) {
        #expect(parseError(text)?.code == .malformedJSON, "accepted \(text.debugDescription)")
    }

    @Test(
        arguments: [
            [0xEF, 0xBB, 0xBF, 0x7B, 0x7D],  // byte order mark
            [0x22, 0xC0, 0x80, 0x22],  // overlong NUL
            [0x22, 0xE0, 0x80, 0xAF, 0x22],  // overlong '/'
            [0x22, 0xED, 0xA0, 0x80, 0x22],  // encoded surrogate
            [0x22, 0xF4, 0x90, 0x80, 0x80, 0x22],  // above U+10FFFF
            [0x22, 0xF8, 0x88, 0x80, 0x80, 0x80, 0x22],  // five-byte form
            [0x22, 0xC3, 0x22],  // truncated sequence
            [0x22, 0x80, 0x22],  // lone continuation byte
            [0x22, 0xFF, 0x22],
            [0x22, 0xE2, 0x82],  // truncated at end of input
        ] as [[UInt8]])
    func rejectsInvalidUTF8(_ bytes: [UInt8]) {
        #expect(parseError(bytes)?.code == .malformedJSON, "accepted \(bytes)")
    }

    @Test func limitsNesting() {
        let ok = String(repeating: "[", count: 64) + String(repeating: "]", count: 64)
        let deep = String(repeating: "[", count: 65) + String(repeating: "]", count: 65)
        #expect(parseError(ok) == nil)
        #expect(parseError(deep)?.code == .limitExceeded)
        // Far deeper than any stack allows unchecked: still a clean error.
        #expect(parseError(String(repeating: "{\"a\":", count: 100_000))?.code == .limitExceeded)
    }

    @Test func decodesEscapesAndUnicode() throws {
        let text = #"{"type":"progress","job":1,"lease":2,"fraction":0.5,"message":"a\"b\\c\n\u00e9\ud83d\ude00\/"}"#
        guard case .progress(let p) = try BackendToCoordinator.decode(text) else {
            Issue.record("not a progress message")
            return
        }
        #expect(p.message == "a\"b\\c\n\u{E9}\u{1F600}/")
    }

    @Test func escapedMemberNamesMatch() throws {
        let m = try BackendToCoordinator.decode(#"{"t\u0079pe":"started","\u006aob":7,"lease":8}"#)
        #expect(m == .started(.init(job: JobID(7), lease: Lease(8))))
    }

    @Test func writerEscapesEveryControlCharacter() throws {
        let nasty = String((0..<32).map { Character(Unicode.Scalar(UInt8($0))) }) + "\"\\/\u{7F}é\u{2028}😀"
        let message = BackendToCoordinator.progress(.init(job: JobID(1), lease: Lease(2), fraction: 0, message: nasty))
        let bytes = message.encode()
        #expect(!bytes.contains { $0 < 0x20 })
        #expect(try BackendToCoordinator.decode(bytes) == message)
        let object = try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any]
        #expect(object?["message"] as? String == nasty)
    }

    @Test func rejectsDuplicateMembers() {
        let cases: [(String, String)] = [
            (#"{"type":"started","job":1,"lease":2,"lease":3}"#, "lease"),
            (#"{"type":"started","job":1,"lease":2,"t\u0079pe":"started"}"#, "type"),
            (#"{"type":"started","job":1,"lease":2,"x":1,"x":2}"#, "x"),
            (
                #"{"type":"capabilities","incarnation":1,"revision":1,"state":"ready","features":[],"slots":1,"#
                    + #""models":{"available":[],"loaded":[],"available":[]}}"#,
                "models.available"
            ),
        ]
        for (text, path) in cases {
            do {
                _ = try BackendToCoordinator.decode(text)
                Issue.record("accepted \(text)")
            } catch {
                #expect(error.code == .invalidMessage && error.path == path, "\(error)")
            }
        }
        // Many members: the hashed check finds the repeat too.
        var members = (0..<40).map { "\"m\($0)\":\($0)" }
        members.append("\"m7\":0")
        let big = "{\"type\":\"started\",\"job\":1,\"lease\":2," + members.joined(separator: ",") + "}"
        #expect(throws: ProtocolError.self) { try BackendToCoordinator.decode(big) }
    }

    @Test func hostileNamesStayOutOfErrors() {
        let long = String(repeating: "k", count: 10_000)
        do {
            _ = try BackendToCoordinator.decode("{\"type\":\"\(long)\",\"\(long)\":1,\"\(long)\":2}")
            Issue.record("accepted duplicate members")
        } catch {
            #expect(error.code == .invalidMessage)
            #expect(error.path.count == 65)
            #expect(error.messageType == nil)
        }
        do {
            _ = try BackendToCoordinator.decode("{\"type\":\"\(long)\"}")
            Issue.record("accepted an unknown type")
        } catch {
            #expect(error.code == .unknownType)
            #expect(error.description.count < 400)
        }
    }

    @Test func ignoresUnknownMembers() throws {
        let m = try BackendToCoordinator.decode(
            #"{"future":{"deep":[1,{"x":null}]},"type":"started","lease":8,"job":7,"also":"ignored"}"#)
        #expect(m == .started(.init(job: JobID(7), lease: Lease(8))))
    }

    @Test func integerRanges() throws {
        let max = try CoordinatorToBackend.decode(#"{"type":"cancel","job":18446744073709551615,"lease":0}"#)
        #expect(max == .cancel(.init(job: JobID(UInt64.max), lease: Lease(0))))
        let negativeZero = try CoordinatorToBackend.decode(#"{"type":"cancel","job":-0,"lease":0}"#)
        #expect(negativeZero == .cancel(.init(job: JobID(0), lease: Lease(0))))
        for bad in ["18446744073709551616", "-1", "-18446744073709551615", "1.0", "1e2", "\"1\"", "true", "null"] {
            #expect(throws: ProtocolError.self) {
                try CoordinatorToBackend.decode(#"{"type":"cancel","job":"# + bad + #","lease":0}"#)
            }
        }
        let low = try ClientToCoordinator.decode(#"{"type":"load_model","model":"m","backend":-9223372036854775808}"#)
        #expect(low == .loadModel(.init(model: "m", backend: BackendID(Int64.min))))
    }

    @Test func fastDoubleParsingMatchesTheStandardLibrary() throws {
        var rng = SplitMix64(seed: 7)
        for _ in 0..<20_000 {
            let digits = Int(rng.next() % 19) + 1
            var text = String(rng.next() % 10)
            for _ in 1..<digits { text += String(rng.next() % 10) }
            let point = Int(rng.next() % UInt64(digits + 1))
            if point < digits { text.insert(".", at: text.index(text.startIndex, offsetBy: max(point, 1))) }
            if text.hasSuffix(".") { text += "0" }
            if rng.next() % 4 == 0 { text += "e\(Int(rng.next() % 40) - 20)" }
            if rng.next() % 2 == 0 { text = "-" + text }
            if text.hasPrefix("0") && text.count > 1 && !text.hasPrefix("0.") { continue }
            if text.hasPrefix("-0") && text.count > 2 && !text.hasPrefix("-0.") { continue }
            let bytes = Array(text.utf8)
            let parsed: Double? = bytes.withUnsafeBufferPointer { buffer -> Double? in
                do throws(ProtocolError) {
                    return try JSONDocument.with(buffer, limits: .default) { doc -> Double? in doc.double(0) }
                } catch {
                    return nil
                }
            }
            #expect(parsed == Double(text), "\(text)")
        }
    }

    @Test func nonFiniteNumbersAreWrittenAsNull() {
        let m = BackendToCoordinator.progress(.init(job: JobID(1), lease: Lease(2), fraction: .nan))
        #expect(m.encodedString().contains(#""fraction":null"#))
        #expect(throws: ProtocolError.self) { try BackendToCoordinator.decode(m.encode()) }
    }

    @Test func rawJSONValidation() {
        #expect((try? RawJSON(validating: #"{"a":[1,2,{"b":null}]}"#))?.text == #"{"a":[1,2,{"b":null}]}"#)
        #expect(throws: ProtocolError.self) { try RawJSON(validating: "{") }
        #expect(throws: ProtocolError.self) { try RawJSON(validating: "{} {}") }
    }
}

/// A small deterministic generator for reproducible random tests.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
