// ComfyUI workflows in job params (Protocol/README.md section 11). `params` stays opaque and is
// re-emitted byte for byte; the coordinator only reads it to learn which node classes a job needs
// and to refuse, at submission, a workflow no backend could ever take.

/// What the coordinator reads from a job's `params` when it carries a ComfyUI workflow.
public enum WorkflowParams {
    /// The node classes of `params.workflow` (sorted, distinct), or `[]` when `params` has no
    /// `workflow`. Checks the members section 11 defines: `workflow` is an API-format graph (an
    /// object of node id to `{"class_type": ..., "inputs": {...}}`), `seed` an integer, `inputs`
    /// an object whose keys name `NODE.INPUT` of a node in the graph.
    static func nodeClasses(_ doc: JSONDocument, params node: Int) throws(ProtocolError) -> [String] {
        var o = try JSONObjectReader(doc, node)
        guard let graph = o.find("workflow") else {
            if o.find("seed") != nil || o.find("inputs") != nil {
                throw .invalid("workflow", "seed and inputs apply to a ComfyUI workflow; add params.workflow")
            }
            return []
        }
        let classes = try graphClasses(doc, graph)
        if let node = o.find("seed") {
            // One message for every seed out of range: negative, fractional and too large alike.
            guard doc.nodes[node].kind == .number, let seed = doc.uint64(node), seed <= maxSeed else {
                throw .invalid("seed", "expected an integer from 0 to \(maxSeed)")
            }
        }
        if let inputs = o.find("inputs") {
            try checkInputs(doc, inputs, graph: graph)
        }
        return classes
    }

    /// The node classes of the workflow in `params` (see above); paths in errors start at
    /// `params`. For clients that check a workflow before they submit it.
    public static func nodeClasses(of params: RawJSON) throws(ProtocolError) -> [String] {
        do throws(ProtocolError) {
            return try params.decoded(as: Classes.self).classes
        } catch {
            var e = error
            e.prepend(key: "params")
            throw e
        }
    }

    private struct Classes: JSONValueDecodable {
        var classes: [String]
        static func decodeJSON(_ doc: JSONDocument, _ i: Int) throws(ProtocolError) -> Classes {
            guard doc.nodes[i].kind == .object else { throw .invalid("", "expected an object, found \(doc.kindName(i))") }
            return Classes(classes: try nodeClasses(doc, params: i))
        }
    }

    /// Seeds are kept below 2^53 so that every JSON implementation holds them exactly.
    public static let maxSeed: UInt64 = (1 << 53) - 1

    private static func graphClasses(_ doc: JSONDocument, _ graph: Int) throws(ProtocolError) -> [String] {
        let shape = "must be a ComfyUI workflow in API format: an object of node id to {\"class_type\", \"inputs\"}"
        guard doc.nodes[graph].kind == .object else {
            throw .invalid("workflow", "\(shape), found \(doc.kindName(graph))")
        }
        let count = Int(doc.nodes[graph].count)
        guard count > 0 else { throw .invalid("workflow", "\(shape); this one has no nodes") }
        guard count <= ProtocolLimits.maxNodes else {
            throw .limit("workflow", "\(count) nodes exceed the limit of \(ProtocolLimits.maxNodes)")
        }
        do throws(ProtocolError) {
            _ = try JSONObjectReader(doc, graph)  // duplicate node ids
        } catch {
            var e = error
            e.prepend(key: "workflow")
            throw e
        }
        var classes = Set<String>()
        var k = graph + 1
        let end = Int(doc.nodes[graph].next)
        while k < end {
            let id = doc.string(k)
            let value = k + 1
            do throws(ProtocolError) {
                guard doc.nodes[value].kind == .object else {
                    throw .invalid("", "a node must be an object with class_type and inputs, found \(doc.kindName(value))")
                }
                var n = try JSONObjectReader(doc, value)
                let cls = try n.string("class_type", .nodeClass)
                guard let inputs = n.find("inputs") else { throw .invalid("inputs", "required member is missing") }
                guard doc.nodes[inputs].kind == .object else {
                    throw .invalid("inputs", "expected an object, found \(doc.kindName(inputs))")
                }
                classes.insert(cls)
            } catch {
                var e = error
                e.prepend(key: Self.pathKey(id))
                e.prepend(key: "workflow")
                throw e
            }
            k = Int(doc.nodes[value].next)
        }
        return classes.sorted()
    }

    private static func checkInputs(_ doc: JSONDocument, _ inputs: Int, graph: Int) throws(ProtocolError) {
        guard doc.nodes[inputs].kind == .object else {
            throw .invalid("inputs", "expected an object of \"NODE.INPUT\" to value, found \(doc.kindName(inputs))")
        }
        do throws(ProtocolError) {
            _ = try JSONObjectReader(doc, inputs)
        } catch {
            var e = error
            e.prepend(key: "inputs")
            throw e
        }
        var ids = Set<String>()
        var k = graph + 1
        while k < Int(doc.nodes[graph].next) {
            ids.insert(doc.string(k))
            k = Int(doc.nodes[k + 1].next)
        }
        k = inputs + 1
        while k < Int(doc.nodes[inputs].next) {
            let key = doc.string(k)
            guard let dot = key.firstIndex(of: "."), dot != key.startIndex, key.index(after: dot) != key.endIndex else {
                throw .invalid("inputs", "'\(Self.pathKey(key))' must be NODE.INPUT, e.g. \"6.text\"")
            }
            let node = String(key[..<dot])
            guard ids.contains(node) else {
                throw .invalid("inputs", "'\(Self.pathKey(key))' names node \(node), which the workflow does not have")
            }
            k = Int(doc.nodes[k + 1].next)
        }
    }

    /// A node id as a path segment, shortened: ids are chosen by whoever wrote the workflow.
    private static func pathKey(_ s: String) -> String {
        s.unicodeScalars.count > 64 ? String(s.unicodeScalars.prefix(64)) + "…" : s
    }
}
