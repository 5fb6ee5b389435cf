import Foundation
import MusterCore
import MusterProtocol

// What Muster reads from a ComfyUI server and what it turns it into, with no I/O: `/object_info`
// into features, node classes and models; `/system_stats` into device telemetry; `/ws` messages
// into job progress and outcomes; `/history` into a job result; a refused `/prompt` into
// `bad_params`. The ComfyUI engine (ComfyUIRunner) calls these; the unit tests feed them recorded
// messages of a real ComfyUI 0.3.64.

/// Which node classes give which feature. A backend announces a feature when it has at least one
/// of the feature's node classes. The defaults follow SwarmUI (`RIFE VFI` is `frameinterps`);
/// a configured map replaces the default entry of each feature it names and keeps the others.
public struct ComfyUIFeatureMap: Sendable, Equatable {
    /// Feature -> node classes, any one of which gives the feature.
    public var rules: [String: [String]]

    public init(rules: [String: [String]]) { self.rules = rules }

    public static let defaults = ComfyUIFeatureMap(rules: [
        // ComfyUI-Frame-Interpolation's interpolators.
        "frameinterps": [
            "RIFE VFI", "FILM VFI", "AMT VFI", "CAIN VFI", "FLAVR VFI", "GMFSS Fortuna VFI", "IFRNet VFI",
            "IFUnet VFI", "M2M VFI", "Sepconv VFI", "STMFNet VFI",
        ],
        // Nodes that write or make video: core savers and latents of the video models, and
        // VideoHelperSuite's combiner.
        "video": [
            "SaveVideo", "SaveWEBM", "SaveAnimatedWEBP", "CreateVideo", "VHS_VideoCombine", "WanImageToVideo",
            "EmptyHunyuanLatentVideo", "EmptyLTXVLatentVideo", "EmptyMochiLatentVideo",
        ],
        "image": ["SaveImage"],
        "upscale": ["ImageUpscaleWithModel"],
    ])

    /// This map with `overrides` laid over it, feature by feature.
    public func merging(_ overrides: [String: [String]]) -> ComfyUIFeatureMap {
        var r = rules
        for (feature, classes) in overrides { r[feature] = classes }
        return ComfyUIFeatureMap(rules: r)
    }

    /// The features a server with these node classes has, sorted.
    public func features(for classes: Set<String>) -> [String] {
        rules.filter { $0.value.contains(where: classes.contains) }.keys.sorted()
    }
}

/// A ComfyUI server's answer did not have the shape this version of ComfyUI gives.
public struct ComfyUIFormatError: Error, Sendable, Equatable, CustomStringConvertible {
    public var what: String
    public init(_ what: String) { self.what = what }
    public var description: String { what }
}

public enum ComfyUIMapping {
    /// Job failure codes of a ComfyUI backend (Protocol/README.md section 11).
    public static let badParams = ErrorCode("bad_params")
    /// Inputs of loader nodes (category `loaders` or `.../loaders`) whose choices are the models a
    /// job may name (`model`): checkpoints and diffusion models. LoRAs, VAEs and text encoders are
    /// parts of a workflow, not what it is routed by; other nodes' `ckpt_name` (an interpolator's
    /// weights) are not models either.
    public static let modelInputs: Set<String> = ["ckpt_name", "unet_name"]

    /// What `/object_info` says.
    public struct ObjectInfo: Sendable, Equatable {
        public var classes: [String]
        /// Choices of the `modelInputs` of every loader, sorted, distinct.
        public var models: [String]
    }

    /// `/object_info`: node class -> `{"input": {"required": {NAME: SPEC}, "optional": {...}}, ...}`.
    /// A SPEC of a choice input is `[[choice, ...], {...}]` (classic nodes) or
    /// `["COMBO", {"options": [choice, ...]}]` (nodes of ComfyUI's v3 schema).
    public static func objectInfo(_ body: [UInt8]) throws(ComfyUIFormatError) -> ObjectInfo {
        guard let root = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else {
            throw ComfyUIFormatError("/object_info is not a JSON object of node classes")
        }
        var models = Set<String>()
        for (_, value) in root {
            guard let info = value as? [String: Any], let input = info["input"] as? [String: Any],
                let category = info["category"] as? String, category.split(separator: "/").contains("loaders")
            else { continue }
            for section in ["required", "optional"] {
                guard let inputs = input[section] as? [String: Any] else { continue }
                for (name, spec) in inputs where modelInputs.contains(name) {
                    models.formUnion(choices(spec))
                }
            }
        }
        return ObjectInfo(classes: root.keys.sorted(), models: models.sorted())
    }

    static func choices(_ spec: Any) -> [String] {
        guard let s = spec as? [Any], let first = s.first else { return [] }
        if let list = first as? [Any] { return list.compactMap { $0 as? String } }
        if first as? String == "COMBO", s.count > 1, let opts = s[1] as? [String: Any],
            let list = opts["options"] as? [Any]
        {
            return list.compactMap { $0 as? String }
        }
        return []
    }

    /// `/system_stats`: `{"system": {...}, "devices": [{"name", "type", "vram_total", "vram_free", ...}]}`.
    public static func devices(_ body: [UInt8]) throws(ComfyUIFormatError) -> [DeviceTelemetry] {
        guard let root = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any],
            let list = root["devices"] as? [Any]
        else {
            throw ComfyUIFormatError("/system_stats has no devices list")
        }
        return list.prefix(ProtocolLimits.maxDevices).compactMap { item in
            guard let d = item as? [String: Any] else { return nil }
            func bytes(_ key: String) -> UInt64 {
                guard let n = d[key] as? NSNumber, n.doubleValue >= 0 else { return 0 }
                return n.uint64Value
            }
            return DeviceTelemetry(
                name: clean(d["name"] as? String ?? "unknown", max: ProtocolLimits.maxKeyLength),
                type: clean(d["type"] as? String ?? "unknown", max: ProtocolLimits.maxKeyLength),
                vramTotal: bytes("vram_total"), vramFree: bytes("vram_free"))
        }
    }

    /// Text from a foreign server made fit for a `key` member: no control characters, not empty,
    /// not too long.
    static func clean(_ s: String, max: Int) -> String {
        let scalars = s.unicodeScalars.filter { $0.value >= 0x20 && $0.value != 0x7F }.prefix(max)
        let out = String(String.UnicodeScalarView(scalars))
        return out.isEmpty ? "unknown" : out
    }

    // MARK: - /ws

    /// One `/ws` text message, as far as Muster cares.
    public enum Event: Sendable, Equatable {
        /// `status`: prompts left in the server's queue (sent to every client).
        case status(queueRemaining: Int)
        case executionStart(prompt: String)
        /// Nodes taken from the cache (they will not run).
        case cached(prompt: String, nodes: [String])
        /// A node began; nil when the whole prompt is done.
        case executing(prompt: String, node: String?)
        case progress(prompt: String, node: String?, value: Double, max: Double)
        case executed(prompt: String, node: String)
        case success(prompt: String)
        case error(prompt: String, ExecutionError)
        case interrupted(prompt: String, node: String?, nodeType: String?)
    }

    /// `execution_error`'s data.
    public struct ExecutionError: Sendable, Equatable {
        public var node: String?
        public var nodeType: String?
        public var exceptionType: String
        public var exceptionMessage: String

        /// Out of memory is worth a try on another backend (a bigger or emptier GPU); any other
        /// exception is the workflow's own and would fail anywhere.
        public var isOutOfMemory: Bool {
            let t = exceptionType.lowercased()
            let m = exceptionMessage.lowercased()
            return t.contains("outofmemory") || m.contains("out of memory") || m.contains("allocation on device")
        }

        /// The job failure: `out_of_memory` (retryable) or `execution_error` (not), with
        /// ComfyUI's exception type and message.
        public var failure: (code: ErrorCode, message: String, retryable: Bool) {
            var where_ = ""
            if let node { where_ = "node \(node)" + (nodeType.map { " (\($0))" } ?? "") + " raised " }
            let text = "\(where_)\(exceptionType): \(exceptionMessage.trimmingWhitespace())"
            return isOutOfMemory
                ? (ErrorCode("out_of_memory"), text, true) : (ErrorCode("execution_error"), text, false)
        }
    }

    /// Parses one `/ws` text message; nil for messages Muster ignores (`progress_state`,
    /// `executed` of other clients, unknown types) and for text that is not such a message.
    public static func event(_ text: String) -> Event? {
        guard let root = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
            let type = root["type"] as? String, let data = root["data"] as? [String: Any]
        else { return nil }
        if type == "status" {
            let status = data["status"] as? [String: Any]
            let info = status?["exec_info"] as? [String: Any]
            guard let n = info?["queue_remaining"] as? NSNumber else { return nil }
            return .status(queueRemaining: n.intValue)
        }
        guard let prompt = data["prompt_id"] as? String else { return nil }
        switch type {
        case "execution_start": return .executionStart(prompt: prompt)
        case "execution_cached": return .cached(prompt: prompt, nodes: (data["nodes"] as? [Any] ?? []).compactMap { $0 as? String })
        case "executing": return .executing(prompt: prompt, node: data["node"] as? String)
        case "progress":
            guard let v = data["value"] as? NSNumber, let m = data["max"] as? NSNumber else { return nil }
            return .progress(prompt: prompt, node: data["node"] as? String, value: v.doubleValue, max: m.doubleValue)
        case "executed":
            guard let node = data["node"] as? String else { return nil }
            return .executed(prompt: prompt, node: node)
        case "execution_success": return .success(prompt: prompt)
        case "execution_error":
            return .error(
                prompt: prompt,
                ExecutionError(
                    node: data["node_id"] as? String, nodeType: data["node_type"] as? String,
                    exceptionType: data["exception_type"] as? String ?? "Exception",
                    exceptionMessage: data["exception_message"] as? String ?? ""))
        case "execution_interrupted":
            return .interrupted(prompt: prompt, node: data["node_id"] as? String, nodeType: data["node_type"] as? String)
        default: return nil
        }
    }

    // MARK: - /prompt

    /// A 200 answer to `POST /prompt`: the prompt id.
    public static func promptID(_ body: [UInt8]) throws(ComfyUIFormatError) -> String {
        guard let root = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any],
            let id = root["prompt_id"] as? String, !id.isEmpty
        else {
            throw ComfyUIFormatError("POST /prompt answered 200 without a prompt_id")
        }
        return id
    }

    /// A 400 answer to `POST /prompt`: what is wrong with the workflow, naming each node and
    /// error, for a `bad_params` failure.
    public static func promptRejection(_ body: [UInt8]) -> String {
        guard let root = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else {
            return "ComfyUI refused the workflow: " + clean(String(decoding: body.prefix(512), as: UTF8.self), max: 512)
        }
        var parts: [String] = []
        if let nodeErrors = root["node_errors"] as? [String: Any] {
            for id in nodeErrors.keys.sorted(by: nodeOrder) {
                guard let n = nodeErrors[id] as? [String: Any] else { continue }
                let cls = n["class_type"] as? String
                for e in n["errors"] as? [Any] ?? [] {
                    guard let e = e as? [String: Any] else { continue }
                    var text = e["message"] as? String ?? "error"
                    if let d = e["details"] as? String, !d.isEmpty { text += ": \(d)" }
                    parts.append("node \(id)" + (cls.map { " (\($0))" } ?? "") + ": \(text)")
                }
            }
        }
        if parts.isEmpty, let e = root["error"] as? [String: Any] {
            var text = e["message"] as? String ?? "invalid prompt"
            if let d = e["details"] as? String, !d.isEmpty { text += " (\(d))" }
            parts.append(text)
        }
        return "ComfyUI refused the workflow: " + (parts.isEmpty ? "no reason given" : parts.joined(separator: "; "))
    }

    /// Node ids are usually integers: order them numerically, others after, by text.
    static func nodeOrder(_ a: String, _ b: String) -> Bool {
        switch (Int(a), Int(b)) {
        case let (x?, y?): return x < y
        case (_?, nil): return true
        case (nil, _?): return false
        default: return a < b
        }
    }

    // MARK: - /history

    /// One file a prompt produced.
    public struct Output: Sendable, Equatable {
        public var node: String
        /// The output list it came in: `images`, `gifs`, `videos`, `audio`, ...
        public var kind: String
        public var filename: String
        public var subfolder: String
        public var type: String
    }

    /// How a prompt ended, from `/history/{prompt_id}`. nil when the server has no history for
    /// it (pending and deleted, or not finished).
    public struct History: Sendable, Equatable {
        public var succeeded: Bool
        public var outputs: [Output]
        /// The `execution_error` message when the status lists one.
        public var error: ExecutionError?
        public var interrupted: Bool
    }

    public static func history(_ body: [UInt8], prompt: String) throws(ComfyUIFormatError) -> History? {
        guard let root = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else {
            throw ComfyUIFormatError("/history is not a JSON object")
        }
        guard let entry = root[prompt] as? [String: Any] else { return nil }
        var outputs: [Output] = []
        let all = entry["outputs"] as? [String: Any] ?? [:]
        for node in all.keys.sorted(by: nodeOrder) {
            guard let o = all[node] as? [String: Any] else { continue }
            for kind in o.keys.sorted() {
                for item in o[kind] as? [Any] ?? [] {
                    guard let f = item as? [String: Any], let name = f["filename"] as? String else { continue }
                    outputs.append(Output(
                        node: node, kind: kind, filename: name, subfolder: f["subfolder"] as? String ?? "",
                        type: f["type"] as? String ?? "output"))
                }
            }
        }
        let status = entry["status"] as? [String: Any] ?? [:]
        var error: ExecutionError?
        var interrupted = false
        for m in status["messages"] as? [Any] ?? [] {
            guard let pair = m as? [Any], pair.count == 2, let type = pair[0] as? String,
                let data = pair[1] as? [String: Any]
            else { continue }
            if type == "execution_error" {
                error = ExecutionError(
                    node: data["node_id"] as? String, nodeType: data["node_type"] as? String,
                    exceptionType: data["exception_type"] as? String ?? "Exception",
                    exceptionMessage: data["exception_message"] as? String ?? "")
            } else if type == "execution_interrupted" {
                interrupted = true
            }
        }
        let succeeded = (status["status_str"] as? String) == "success" || (status.isEmpty && !all.isEmpty)
        return History(succeeded: succeeded, outputs: outputs, error: error, interrupted: interrupted)
    }

    /// A prompt of a job that a backend posted, as the server lists it: queued, running, or
    /// ended (in its history).
    public struct PostedPrompt: Sendable, Equatable {
        public var id: String
        public var job: JobID
        public var lease: Lease
        public var attempt: Int
        /// Still queued or running (listed by `/queue`), not ended.
        public var queued: Bool
    }

    /// The prompts in a `GET /queue` answer and a `GET /history` answer that were posted with
    /// a client id for which `mine` holds and carry a job, lease and attempt in `extra_data`
    /// (`promptBody`). A queue entry and a history entry are `[number, prompt_id, graph,
    /// extra_data, outputs]` (ComfyUI keeps `client_id` in `extra_data`).
    public static func postedPrompts(queue: [UInt8], history: [UInt8], mine: (String) -> Bool) -> [PostedPrompt] {
        func prompt(_ entry: Any?, queued: Bool) -> PostedPrompt? {
            guard let e = entry as? [Any], e.count > 3, let id = e[1] as? String, let extra = e[3] as? [String: Any],
                let client = extra["client_id"] as? String, mine(client),
                let job = (extra["muster_job"] as? NSNumber)?.uint64Value, let lease = (extra["muster_lease"] as? NSNumber)?.uint64Value,
                let attempt = (extra["muster_attempt"] as? NSNumber)?.intValue
            else { return nil }
            return PostedPrompt(id: id, job: JobID(job), lease: Lease(lease), attempt: attempt, queued: queued)
        }
        var out: [PostedPrompt] = []
        if let q = try? JSONSerialization.jsonObject(with: Data(queue)) as? [String: Any] {
            for key in ["queue_running", "queue_pending"] {
                for entry in q[key] as? [Any] ?? [] { if let p = prompt(entry, queued: true) { out.append(p) } }
            }
        }
        if let h = try? JSONSerialization.jsonObject(with: Data(history)) as? [String: Any] {
            for (_, value) in h {
                if let p = prompt((value as? [String: Any])?["prompt"], queued: false), !out.contains(where: { $0.id == p.id }) {
                    out.append(p)
                }
            }
        }
        return out.sorted { ($0.job, $0.lease.rawValue) < ($1.job, $1.lease.rawValue) }
    }

    /// Where a prompt is in the server's queue (`GET /queue`).
    public enum QueuePlace: Sendable, Equatable {
        case running, pending
        /// In neither list: it finished (see `/history`), was deleted, or the server never had it.
        case absent
    }

    /// Where `prompt` is in a `GET /queue` answer: `{"queue_running": [[number, prompt_id, ...]],
    /// "queue_pending": [...]}`.
    public static func queuePlace(_ body: [UInt8], prompt: String) throws(ComfyUIFormatError) -> QueuePlace {
        guard let root = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else {
            throw ComfyUIFormatError("/queue is not a JSON object")
        }
        func has(_ key: String) -> Bool {
            (root[key] as? [Any] ?? []).contains { ($0 as? [Any]).map { $0.count > 1 && $0[1] as? String == prompt } ?? false }
        }
        if has("queue_running") { return .running }
        if has("queue_pending") { return .pending }
        return .absent
    }

    /// The job result for a finished prompt: every output with the URL to fetch it from that
    /// server (`/view`).
    public static func result(
        prompt: String, backend: String, baseURL: String, outputs: [Output], postedMs: UInt64? = nil
    ) -> RawJSON {
        var s = "{\"prompt_id\":"
        appendJSONString(prompt, to: &s)
        s += ",\"backend\":"
        appendJSONString(backend, to: &s)
        if let postedMs { s += ",\"posted_ms\":\(postedMs)" }
        s += ",\"outputs\":["
        for (i, o) in outputs.enumerated() {
            if i > 0 { s += "," }
            s += "{\"node\":"
            appendJSONString(o.node, to: &s)
            s += ",\"kind\":"
            appendJSONString(o.kind, to: &s)
            s += ",\"filename\":"
            appendJSONString(o.filename, to: &s)
            s += ",\"subfolder\":"
            appendJSONString(o.subfolder, to: &s)
            s += ",\"type\":"
            appendJSONString(o.type, to: &s)
            s += ",\"url\":"
            appendJSONString(viewURL(baseURL: baseURL, o), to: &s)
            s += "}"
        }
        s += "]}"
        return RawJSON(unchecked: s)
    }

    public static func viewURL(baseURL: String, _ o: Output) -> String {
        "\(baseURL)/view?filename=\(queryEscaped(o.filename))&subfolder=\(queryEscaped(o.subfolder))&type=\(queryEscaped(o.type))"
    }

    static func queryEscaped(_ s: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return s.addingPercentEncoding(withAllowedCharacters: allowed) ?? s
    }
}

// MARK: - Building a prompt, following its progress

extension ComfyUIMapping {
    /// Inputs that take a sampler seed.
    public static let seedInputs: Set<String> = ["seed", "noise_seed"]

    /// The seed a job's workflow runs with: `params.seed` when given, else one derived from the
    /// job id (so the jobs of a batch differ, and a retry of a job draws the same seed).
    public static func seed(params: [String: Any], job: JobID) -> UInt64 {
        if let n = params["seed"] as? NSNumber, n.int64Value >= 0 { return n.uint64Value }
        var r = SplitMix64(seed: job.rawValue)
        return r.next() & WorkflowParams.maxSeed
    }

    /// The body of `POST /prompt` for a job: `params.workflow` with every `seed`/`noise_seed`
    /// input set to the job's seed, then `params.inputs` (`"NODE.INPUT": value`) applied, sent
    /// with this link's `client_id` and the job id in `extra_data.muster_job`. Also returns the
    /// number of nodes (for progress).
    public static func promptBody(
        params: RawJSON, job: JobID, clientID: String, lease: Lease? = nil, attempt: Int? = nil
    ) throws(ComfyUIFormatError) -> (body: [UInt8], nodes: Int) {
        guard let p = try? JSONSerialization.jsonObject(with: Data(params.text.utf8)) as? [String: Any],
            var graph = p["workflow"] as? [String: Any], !graph.isEmpty
        else {
            throw ComfyUIFormatError("the job's params have no workflow (params.workflow: a ComfyUI API-format graph)")
        }
        let seed = seed(params: p, job: job)
        for (id, value) in graph {
            guard var node = value as? [String: Any], var inputs = node["inputs"] as? [String: Any] else { continue }
            var changed = false
            for name in seedInputs where inputs[name] is NSNumber {
                inputs[name] = NSNumber(value: seed)
                changed = true
            }
            if changed {
                node["inputs"] = inputs
                graph[id] = node
            }
        }
        for (key, value) in p["inputs"] as? [String: Any] ?? [:] {
            guard let dot = key.firstIndex(of: ".") else { continue }
            let id = String(key[..<dot]), name = String(key[key.index(after: dot)...])
            guard var node = graph[id] as? [String: Any] else { continue }
            var inputs = node["inputs"] as? [String: Any] ?? [:]
            inputs[name] = value
            node["inputs"] = inputs
            graph[id] = node
        }
        // The lease and attempt let a coordinator that restarted under this backend find the
        // prompt again and take it back instead of posting it twice (`ourPrompts`).
        var extra: [String: Any] = ["muster_job": NSNumber(value: job.rawValue)]
        if let lease { extra["muster_lease"] = NSNumber(value: lease.rawValue) }
        if let attempt { extra["muster_attempt"] = NSNumber(value: attempt) }
        let body: [String: Any] = ["prompt": graph, "client_id": clientID, "extra_data": extra]
        guard let data = try? JSONSerialization.data(withJSONObject: body, options: [.sortedKeys]) else {
            throw ComfyUIFormatError("the workflow could not be written as JSON")
        }
        return ([UInt8](data), graph.count)
    }

    /// Turns a prompt's `/ws` messages into one fraction for the whole prompt: nodes finished
    /// (run or cached) over nodes in the graph, plus the running node's own `progress`.
    public struct Progress: Sendable {
        public let total: Int
        var finished = Set<String>()
        var current: String?
        var currentClass: String?
        var step: (value: Double, max: Double)?

        public init(total: Int) { self.total = max(1, total) }

        /// The fraction (0-0.99: completion is `completed`) and a message, when the event moves
        /// the prompt on.
        public mutating func apply(_ event: Event, classes: [String: String] = [:]) -> (Double, String?)? {
            switch event {
            case .cached(_, let nodes):
                finished.formUnion(nodes)
                return nil
            case .executing(_, let node?):
                if let current { finished.insert(current) }
                current = node
                currentClass = classes[node]
                step = nil
                return (fraction, "node \(node)" + (currentClass.map { " \($0)" } ?? ""))
            case .progress(_, let node, let value, let max):
                if let node, node != current {
                    if let current { finished.insert(current) }
                    current = node
                    currentClass = classes[node]
                }
                step = (value, max)
                let label = current.map { "node \($0)" + (currentClass.map { " \($0)" } ?? "") } ?? "node"
                return (fraction, "\(label): step \(Int(value))/\(Int(max))")
            default:
                return nil
            }
        }

        public var fraction: Double {
            var done = Double(finished.count)
            if let step, step.max > 0 { done += min(1, step.value / step.max) }
            return min(0.99, max(0, done / Double(total)))
        }
    }
}
