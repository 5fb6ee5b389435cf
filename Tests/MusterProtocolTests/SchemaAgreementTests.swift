import Foundation
import Testing

@testable import MusterProtocol

/// A member as a message's member list declares it, recorded by walking `members(_:)`.
struct DeclaredMember: Sendable {
    indirect enum Kind: Sendable {
        case string(Grammar?)
        case integer(ClosedRange<Int64>?)
        case number
        case boolean
        /// A closed set of strings (`WireEnum`).
        case enumeration([String])
        /// Opaque JSON; `object`: must be an object.
        case raw(object: Bool)
        case array(Kind, maxItems: Int?)
        case object([DeclaredMember])
        case constant(String)
    }

    var name: String
    var required: Bool
    var kind: Kind
}

/// The third coder: walks a member list and records it, for comparison with the JSON Schemas.
struct SchemaCoder: WireCoder {
    var members: [DeclaredMember] = []

    static func walk<T: WireMembers>(_ type: T.Type) -> [DeclaredMember] {
        var value = T.blank
        var coder = SchemaCoder()
        try? value.members(&coder)
        return coder.members
    }

    static func kind<T>(of type: T.Type) -> DeclaredMember.Kind {
        switch type {
        case is String.Type: return .string(nil)
        case is Bool.Type: return .boolean
        case is Double.Type: return .number
        case is UInt64.Type, is Int64.Type, is Int.Type, is BackendID.Type: return .integer(nil)
        case is any WireUInt64ID.Type: return .integer(nil)
        case let e as any WireEnum.Type: return .enumeration(cases(of: e))
        case is ErrorCode.Type, is JobEventKind.Type, is AttemptOutcome.Type, is ReleaseCause.Type:
            return .string(.code)
        case is RawJSON.Type: return .raw(object: false)
        case let object as any WireMembers.Type: return .object(walk(object))
        case let array as any SchemaArray.Type: return .array(array.elementKind, maxItems: nil)
        default: return .object([])
        }
    }

    static func cases<E: WireEnum>(of type: E.Type) -> [String] { E.allCases.map(\.rawValue) }

    mutating func add(_ key: StaticString, _ required: Bool, _ kind: DeclaredMember.Kind) {
        members.append(DeclaredMember(name: "\(key)", required: required, kind: kind))
    }

    mutating func required<T: WireValue>(_ key: StaticString, _ value: inout T) {
        add(key, true, Self.kind(of: T.self))
    }
    mutating func optional<T: WireValue>(_ key: StaticString, _ value: inout T?) {
        add(key, false, Self.kind(of: T.self))
    }
    mutating func string(_ key: StaticString, _ value: inout String, _ grammar: Grammar) {
        add(key, true, .string(grammar))
    }
    mutating func string(_ key: StaticString, _ value: inout String?, _ grammar: Grammar) {
        add(key, false, .string(grammar))
    }
    mutating func int(_ key: StaticString, _ value: inout Int, in range: ClosedRange<Int64>) {
        add(key, true, .integer(range))
    }
    mutating func int(_ key: StaticString, _ value: inout Int?, in range: ClosedRange<Int64>) {
        add(key, false, .integer(range))
    }
    mutating func int(_ key: StaticString, _ value: inout Int, default: Int, in range: ClosedRange<Int64>) {
        add(key, false, .integer(range))
    }
    mutating func names(
        _ key: StaticString, _ value: inout [String], _ grammar: Grammar, maxCount: Int, optional: Bool
    ) {
        add(key, !optional, .array(.string(grammar), maxItems: maxCount))
    }
    mutating func list<T: WireObject>(_ key: StaticString, _ value: inout [T], maxCount: Int, optional: Bool) {
        add(key, !optional, .array(Self.kind(of: T.self), maxItems: maxCount))
    }
    mutating func raw(_ key: StaticString, _ value: inout RawJSON?, object: Bool, limit: RawLimit) {
        add(key, false, .raw(object: object))
    }
    mutating func raw(
        _ key: StaticString, _ value: inout RawJSON, object: Bool, limit: RawLimit, absent: RawJSON?,
        writesAbsent: Bool
    ) {
        add(key, absent == nil, .raw(object: object))
    }
    mutating func object(_ key: StaticString, _ body: (inout SchemaCoder) throws(ProtocolError) -> Void)
        throws(ProtocolError)
    {
        var inner = SchemaCoder()
        try body(&inner)
        add(key, true, .object(inner.members))
    }
    mutating func role(_ role: PeerRole) {
        add("role", true, .constant(role.rawValue))
    }
    mutating func versions(_ value: inout [Int]) {
        add("versions", true, .array(.integer(1...1000), maxItems: ProtocolLimits.maxVersions))
    }
    mutating func decoded(_ body: (inout JSONObjectReader) throws(ProtocolError) -> Void) {}
}

/// Lets the schema walk see an array's element type.
protocol SchemaArray {
    static var elementKind: DeclaredMember.Kind { get }
}

extension Array: SchemaArray {
    static var elementKind: DeclaredMember.Kind { SchemaCoder.kind(of: Element.self) }
}

/// The JSON Schemas of Protocol/schemas, with `$ref` and `allOf` resolved.
struct SchemaFiles {
    let root = repositoryRoot.appendingPathComponent("Protocol/schemas")
    /// Documents to use instead of the files, by path under Protocol/schemas.
    var replaced: [String: [String: Any]] = [:]

    func document(_ path: String) throws -> [String: Any] {
        if let doc = replaced[path] { return doc }
        let data = try Data(contentsOf: root.appendingPathComponent(path))
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any], "\(path)")
    }

    /// Follows `ref` (`file#/pointer`, relative to `base`, the path of the file holding it).
    func resolve(_ ref: String, from base: String) throws -> (node: [String: Any], file: String) {
        let parts = ref.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        var file = base
        if !parts[0].isEmpty {
            var components = base.split(separator: "/").dropLast().map(String.init)
            for component in parts[0].split(separator: "/") {
                if component == ".." { components.removeLast() } else if component != "." { components.append(String(component)) }
            }
            file = components.joined(separator: "/")
        }
        var node = try document(file)
        if parts.count > 1 {
            for token in parts[1].split(separator: "/") {
                node = try #require(node[String(token)] as? [String: Any], "\(ref) from \(base)")
            }
        }
        return (node, file)
    }

    /// `node` with its `$ref`s and `allOf`s merged in: properties and required united, local
    /// keywords over referenced ones. Properties keep the file they are written in.
    func flatten(_ node: [String: Any], in file: String) throws -> Flat {
        var flat = Flat(file: file)
        if let ref = node["$ref"] as? String {
            let (target, targetFile) = try resolve(ref, from: file)
            flat = try flatten(target, in: targetFile)
        }
        for part in node["allOf"] as? [[String: Any]] ?? [] {
            flat.merge(try flatten(part, in: file))
        }
        for (key, value) in node where key != "$ref" && key != "allOf" && key != "properties" && key != "required" {
            flat.keywords[key] = value
        }
        for (name, property) in node["properties"] as? [String: Any] ?? [:] {
            flat.properties[name] = (try #require(property as? [String: Any]), file)
        }
        flat.required.formUnion(node["required"] as? [String] ?? [])
        return flat
    }

    struct Flat {
        var file: String
        var keywords: [String: Any] = [:]
        var properties: [String: ([String: Any], String)] = [:]
        var required: Set<String> = []

        mutating func merge(_ other: Flat) {
            keywords.merge(other.keywords) { mine, _ in mine }
            properties.merge(other.properties) { mine, _ in mine }
            required.formUnion(other.required)
        }
    }

    /// Where the declaration and the schema disagree, one line each; empty when they agree.
    /// `messageType`: the wire `type` the schema must fix, for messages.
    func disagreements(_ declared: [DeclaredMember], schema path: String, messageType: String? = nil) throws
        -> [String]
    {
        let (node, file) = try resolve(path.contains("#") ? path : path + "#", from: "")
        var problems: [String] = []
        try compareObject(declared, try flatten(node, in: file), at: path, messageType: messageType, &problems)
        return problems
    }

    private func compareObject(
        _ declared: [DeclaredMember], _ schema: Flat, at path: String, messageType: String?,
        _ problems: inout [String]
    ) throws {
        var expected = declared
        if let messageType {
            expected.insert(DeclaredMember(name: "type", required: true, kind: .constant(messageType)), at: 0)
        }
        for member in expected {
            let at = "\(path): '\(member.name)'"
            guard let (property, file) = schema.properties[member.name].map({ ($0.0, $0.1) }) else {
                problems.append("\(at) is declared but not in the schema's properties")
                continue
            }
            if member.required != schema.required.contains(member.name) {
                problems.append(
                    "\(at) is \(member.required ? "required" : "optional") in the code, "
                        + "\(member.required ? "optional" : "required") in the schema")
            }
            try compareValue(member.kind, try flatten(property, in: file), at: at, &problems)
        }
        let names = Set(expected.map(\.name))
        for name in schema.properties.keys.sorted() where !names.contains(name) {
            problems.append("\(path): '\(name)' is in the schema but not declared")
        }
    }

    private func compareValue(_ kind: DeclaredMember.Kind, _ schema: Flat, at: String, _ problems: inout [String])
        throws
    {
        let type = schema.keywords["type"] as? String
        func expect(_ jsonType: String) {
            if type != jsonType { problems.append("\(at): the code reads \(jsonType), the schema says \(type ?? "any")") }
        }
        switch kind {
        case .string(let grammar):
            // A schema may name the values it expects (`const`, `enum`) where the code reads an
            // open set; each of them must pass the code's grammar.
            if let values = schema.keywords["enum"] as? [String] ?? (schema.keywords["const"] as? String).map({ [$0] }) {
                for value in values where (try? grammar?.check(value, path: "")) == nil {
                    problems.append("\(at): the schema allows '\(value)', which the code rejects")
                }
                return
            }
            expect("string")
            if let grammar, let problem = Self.mismatch(grammar, schema.keywords) { problems.append("\(at): \(problem)") }
        case .integer(let range):
            expect("integer")
            if let range {
                let minimum = (schema.keywords["minimum"] as? NSNumber)?.int64Value
                let maximum = (schema.keywords["maximum"] as? NSNumber)?.int64Value
                if minimum != range.lowerBound || maximum != range.upperBound {
                    problems.append(
                        "\(at): the code accepts \(range), the schema \(minimum.map(String.init) ?? "-")..."
                            + "\(maximum.map(String.init) ?? "-")")
                }
            }
        case .number: expect("number")
        case .boolean: expect("boolean")
        case .enumeration(let cases):
            let values = schema.keywords["enum"] as? [String]
            if values.map(Set.init) != Set(cases) {
                problems.append("\(at): the code accepts \(cases.sorted()), the schema \(values ?? [])")
            }
        case .raw(let object):
            if object { expect("object") } else if type != nil { problems.append("\(at): opaque in the code, \(type!) in the schema") }
        case .constant(let value):
            if schema.keywords["const"] as? String != value {
                problems.append("\(at): the code requires '\(value)', the schema \(schema.keywords["const"] ?? "any value")")
            }
        case .array(let element, let maxItems):
            expect("array")
            if let maxItems, let max = schema.keywords["maxItems"] as? Int, max != maxItems {
                problems.append("\(at): the code accepts \(maxItems) entries, the schema \(max)")
            }
            if let items = schema.keywords["items"] as? [String: Any] {
                try compareValue(element, try flatten(items, in: schema.file), at: at + "[]", &problems)
            } else {
                problems.append("\(at): the schema does not say what the entries are")
            }
        case .object(let members):
            expect("object")
            try compareObject(members, schema, at: at, messageType: nil, &problems)
        }
    }

    /// How a grammar shows in a schema: its pattern, or its length bounds.
    static func mismatch(_ grammar: Grammar, _ keywords: [String: Any]) -> String? {
        let pattern = keywords["pattern"] as? String
        let minLength = keywords["minLength"] as? Int ?? 0
        let maxLength = keywords["maxLength"] as? Int
        switch grammar {
        case .feature: return pattern == "^[a-z][a-z0-9_.-]{0,63}$" ? nil : "the code checks a feature name, the schema \(pattern ?? "-")"
        case .name: return pattern == "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$" ? nil : "the code checks a name, the schema \(pattern ?? "-")"
        case .code: return pattern == "^[a-z][a-z0-9_]{0,63}$" ? nil : "the code checks a code, the schema \(pattern ?? "-")"
        case .label(let max):
            return minLength == 1 && maxLength == max ? nil : "the code checks 1...\(max) characters, the schema \(minLength)...\(maxLength ?? -1)"
        case .secret(let max), .text(let max):
            return minLength == 0 && maxLength == max ? nil : "the code checks 0...\(max) characters, the schema \(minLength)...\(maxLength ?? -1)"
        }
    }
}

/// The member lists of the code (`members(_:)`) and the JSON Schemas of Protocol/schemas must
/// declare the same members: names, required or optional, types, grammars, ranges and sizes.
@Suite struct SchemaAgreementTests {
    struct Entry: CustomStringConvertible, Sendable {
        var schema: String
        var declared: [DeclaredMember]
        var messageType: String?
        var description: String { schema }

        init<T: WireMembers>(_ type: T.Type, _ schema: String) {
            self.schema = schema
            declared = SchemaCoder.walk(type)
            messageType = (type as? any WireMessage.Type).map { "\($0.wireType)" }
        }

        /// An HTTP body: the same members without `type`.
        init<T: WireMembers>(body type: T.Type, _ schema: String) {
            self.schema = schema
            declared = SchemaCoder.walk(type)
        }
    }

    static let backendIn: [Entry] = [
        Entry(BackendToCoordinator.Hello.self, "backend/hello.json"),
        Entry(CapabilitySnapshot.self, "backend/capabilities.json"),
        Entry(BackendToCoordinator.Started.self, "backend/started.json"),
        Entry(BackendToCoordinator.Progress.self, "backend/progress.json"),
        Entry(BackendToCoordinator.Completed.self, "backend/completed.json"),
        Entry(BackendToCoordinator.Failed.self, "backend/failed.json"),
        Entry(BackendToCoordinator.LoadModelResult.self, "backend/load_model_result.json"),
        Entry(Wire.ErrorMessage.self, "common/error.json"),
        Entry(Wire.Goodbye.self, "common/goodbye.json"),
    ]

    static let backendOut: [Entry] = [
        Entry(CoordinatorToBackend.Welcome.self, "backend/welcome.json"),
        Entry(CoordinatorToBackend.CapabilitiesAck.self, "backend/capabilities_ack.json"),
        Entry(CoordinatorToBackend.Sync.self, "backend/sync.json"),
        Entry(CoordinatorToBackend.Assign.self, "backend/assign.json"),
        Entry(CoordinatorToBackend.Cancel.self, "backend/cancel.json"),
        Entry(CoordinatorToBackend.Revoke.self, "backend/revoke.json"),
        Entry(CoordinatorToBackend.LoadModel.self, "backend/load_model.json"),
        Entry(CoordinatorToBackend.StaleLease.self, "backend/stale_lease.json"),
        Entry(CoordinatorToBackend.Drain.self, "backend/drain.json"),
        Entry(Wire.ErrorMessage.self, "common/error.json"),
        Entry(Wire.Goodbye.self, "common/goodbye.json"),
    ]

    static let clientIn: [Entry] = [
        Entry(ClientToCoordinator.Hello.self, "client/hello.json"),
        Entry(ClientToCoordinator.Submit.self, "client/submit.json"),
        Entry(ClientToCoordinator.Subscribe.self, "client/subscribe.json"),
        Entry(ClientToCoordinator.Cancel.self, "client/cancel.json"),
        Entry(ClientToCoordinator.Status.self, "client/status.json"),
        Entry(Wire.LoadModelRequest.self, "client/load_model.json"),
        Entry(ClientToCoordinator.Drain.self, "client/drain.json"),
        Entry(Wire.ErrorMessage.self, "common/error.json"),
        Entry(Wire.Goodbye.self, "common/goodbye.json"),
    ]

    static let clientOut: [Entry] = [
        Entry(CoordinatorToClient.Welcome.self, "client/welcome.json"),
        Entry(Wire.Accepted.self, "client/accepted.json"),
        Entry(CoordinatorToClient.Subscribed.self, "client/subscribed.json"),
        Entry(CoordinatorToClient.JobEvent.self, "client/job.json"),
        Entry(CoordinatorToClient.Canceled.self, "client/canceled.json"),
        Entry(CoordinatorToClient.StatusReport.self, "client/status_report.json"),
        Entry(Wire.ModelsLoading.self, "client/models_loading.json"),
        Entry(CoordinatorToClient.Draining.self, "client/draining.json"),
        Entry(Wire.ErrorMessage.self, "common/error.json"),
        Entry(Wire.Goodbye.self, "common/goodbye.json"),
    ]

    /// HTTP bodies and error details: every schema file of http/ and the details objects of defs.json.
    static let bodies: [Entry] = [
        Entry(body: Wire.Accepted.self, "http/accepted.json"),
        Entry(body: Wire.BackendList.self, "http/backend_list.json"),
        Entry(body: Wire.BatchInfo.self, "http/batch_info.json"),
        Entry(body: Wire.BatchRequest.self, "http/batch_request.json"),
        Entry(body: Wire.CancelResult.self, "http/cancel_result.json"),
        Entry(body: CoordinatorToClient.Draining.self, "http/draining.json"),
        Entry(body: Wire.ErrorBody.self, "http/error_body.json"),
        Entry(body: Wire.Health.self, "http/health.json"),
        Entry(body: Wire.JobInfo.self, "http/job_info.json"),
        Entry(body: Wire.LoadModelRequest.self, "http/load_model_request.json"),
        Entry(body: Wire.ModelsLoading.self, "http/models_loading.json"),
        Entry(body: Wire.Readiness.self, "http/readiness.json"),
        Entry(body: Wire.NoEligibleBackend.self, "defs.json#/$defs/noEligibleBackend"),
        Entry(body: Wire.NoCommonVersion.self, "defs.json#/$defs/noCommonVersion"),
        Entry(body: Wire.AttemptsExhausted.self, "defs.json#/$defs/attemptsExhausted"),
        Entry(body: Wire.NotLeader.self, "defs.json#/$defs/notLeader"),
    ]

    static let all = backendIn + backendOut + clientIn + clientOut + bodies

    @Test func everyMessageTypeOfEveryLinkIsCompared() throws {
        let links: [([StaticString], [Entry], String)] = [
            (BackendToCoordinator.types, Self.backendIn, "backend-in"),
            (CoordinatorToBackend.types, Self.backendOut, "backend-out"),
            (ClientToCoordinator.types, Self.clientIn, "client-in"),
            (CoordinatorToClient.types, Self.clientOut, "client-out"),
        ]
        for (types, entries, link) in links {
            #expect(Set(types.map { "\($0)" }) == Set(entries.compactMap(\.messageType)), "\(link)")
            // The link's schema lists the same message schemas.
            let files = SchemaFiles()
            let oneOf = try #require(try files.document("\(link).json")["oneOf"] as? [[String: Any]])
            #expect(Set(oneOf.compactMap { $0["$ref"] as? String }) == Set(entries.map(\.schema)), "\(link).json")
        }
        let httpSchemas = try FileManager.default.contentsOfDirectory(
            atPath: repositoryRoot.appendingPathComponent("Protocol/schemas/http").path)
        let compared = Set(Self.bodies.map(\.schema).filter { $0.hasPrefix("http/") })
        let expected = Set(httpSchemas.filter { $0.hasSuffix(".json") }.map { "http/" + $0 })
        #expect(expected == compared)
    }

    @Test(arguments: SchemaAgreementTests.all)
    func theMemberListAgreesWithTheSchema(_ entry: Entry) throws {
        let problems = try SchemaFiles().disagreements(entry.declared, schema: entry.schema, messageType: entry.messageType)
        #expect(problems.isEmpty, "\(entry.schema):\n\(problems.joined(separator: "\n"))")
    }

    /// The comparison sees a member missing from a schema, a member the schema adds, a required
    /// member made optional, and a changed grammar, including in nested objects.
    @Test func theComparisonCatchesDisagreements() throws {
        let progress = Entry(BackendToCoordinator.Progress.self, "backend/progress.json")
        let assign = Entry(CoordinatorToBackend.Assign.self, "backend/assign.json")
        let welcome = Entry(CoordinatorToBackend.Welcome.self, "backend/welcome.json")
        let clean = SchemaFiles()
        for entry in [progress, assign, welcome] {
            #expect(try clean.disagreements(entry.declared, schema: entry.schema, messageType: entry.messageType).isEmpty)
        }

        func edited(_ path: String, _ edit: (inout [String: Any]) -> Void) throws -> SchemaFiles {
            var files = SchemaFiles()
            var doc = try files.document(path)
            edit(&doc)
            files.replaced[path] = doc
            return files
        }
        func problems(_ files: SchemaFiles, _ entry: Entry) throws -> [String] {
            try files.disagreements(entry.declared, schema: entry.schema, messageType: entry.messageType)
        }

        let withoutMessage = try edited("backend/progress.json") { doc in
            var properties = doc["properties"] as! [String: Any]
            properties["message"] = nil
            doc["properties"] = properties
        }
        #expect(try problems(withoutMessage, progress).contains { $0.contains("'message' is declared but not") })

        let extra = try edited("backend/progress.json") { doc in
            var properties = doc["properties"] as! [String: Any]
            properties["eta_ms"] = ["$ref": "../defs.json#/$defs/millis"]
            doc["properties"] = properties
        }
        #expect(try problems(extra, progress).contains { $0.contains("'eta_ms' is in the schema but not declared") })

        let optionalLease = try edited("backend/progress.json") { doc in
            doc["required"] = (doc["required"] as! [String]).filter { $0 != "lease" }
        }
        #expect(try problems(optionalLease, progress).contains { $0.contains("'lease' is required in the code") })

        let loosePattern = try edited("defs.json") { doc in
            var defs = doc["$defs"] as! [String: Any]
            var feature = defs["feature"] as! [String: Any]
            feature["pattern"] = "^[a-z]+$"
            defs["feature"] = feature
            doc["$defs"] = defs
        }
        #expect(try problems(loosePattern, assign).contains { $0.contains("'kind': the code checks a feature name") })
        #expect(try problems(loosePattern, assign).contains { $0.contains("'needs'[]: the code checks a feature name") })

        let bindingWithoutLease = try edited("defs.json") { doc in
            var defs = doc["$defs"] as! [String: Any]
            var binding = defs["binding"] as! [String: Any]
            binding["required"] = ["job"]
            defs["binding"] = binding
            doc["$defs"] = defs
        }
        #expect(try problems(bindingWithoutLease, welcome).contains { $0.contains("'bindings'[]: 'lease' is required") })
    }
}
