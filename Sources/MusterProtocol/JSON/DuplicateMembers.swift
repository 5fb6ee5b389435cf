// Checks a JSON text read elsewhere than the wire against the wire's grammar and finds an object
// member named twice anywhere in it. The wire decoders reject such objects as they read them;
// configuration is read with Foundation, which keeps the last value silently, so the loader asks
// this first.

public enum DuplicateMembers {
    /// The path of the first member named a second time below `node`, as `routing.policy` or
    /// `backends[1].name`, or nil when there is none.
    private static func find(_ doc: JSONDocument, _ node: Int, path: String) -> String? {
        let end = Int(doc.nodes[node].next)
        switch doc.nodes[node].kind {
        case .object:
            var seen = Set<String>()
            var key = node + 1
            while key < end {
                let name = doc.string(key)
                let member = path.isEmpty ? name : "\(path).\(name)"
                if !seen.insert(name).inserted { return member }
                if let found = find(doc, key + 1, path: member) { return found }
                key = Int(doc.nodes[key + 1].next)
            }
        case .array:
            var element = node + 1
            var index = 0
            while element < end {
                if let found = find(doc, element, path: "\(path)[\(index)]") { return found }
                element = Int(doc.nodes[element].next)
                index += 1
            }
        default:
            break
        }
        return nil
    }

    /// What is wrong with a JSON text read elsewhere than the wire, such as a configuration file
    /// (Foundation's parser is more lenient and explains less), from one parse: it breaks the
    /// wire's grammar (RFC 8259, strictly: no comments, no trailing commas, no leading zeros;
    /// the reason gives the offset), or names a member twice (its path); nil when neither.
    public static func problem(in bytes: [UInt8], maxDepth: Int = 64) -> Problem? {
        bytes.withUnsafeBufferPointer { buffer -> Problem? in
            let nodes: [JSONNode]
            do throws(ProtocolError) {
                nodes = try JSONParser.parse(buffer, maxDepth: maxDepth)
            } catch {
                return .syntax(error.reason)
            }
            return nodes.withUnsafeBufferPointer { nodeBuffer in
                let doc = JSONDocument(bytes: buffer, nodes: nodeBuffer, limits: .default)
                return find(doc, 0, path: "").map(Problem.twice)
            }
        }
    }

    public enum Problem: Equatable, Sendable {
        case syntax(String)
        case twice(String)
    }
}
