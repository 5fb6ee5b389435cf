import Foundation
@testable import MusterBackends
import MusterProtocol
@testable import MusterServer
import Testing


/// The ComfyUI mapping on messages recorded from a real ComfyUI 0.3.64 (Fixtures/ComfyUI).
@Suite struct ComfyUIMappingTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/ComfyUI")

    static func bytes(_ name: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: fixtures.appendingPathComponent(name)))
    }

    static func lines(_ name: String) throws -> [String] {
        String(decoding: try bytes(name), as: UTF8.self).split(separator: "\n").map(String.init)
    }

    @Test func objectInfoGivesClassesFeaturesAndModels() throws {
        let info = try ComfyUIMapping.objectInfo(try Self.bytes("object_info-trimmed.json"))
        #expect(info.classes.contains("RIFE VFI") && info.classes.contains("SaveImage"))
        #expect(info.classes.contains("MusterSlowPassthrough"))
        #expect(info.models == ["sd_xl_base_1.0.safetensors", "wan2.1_t2v_14B_fp16.safetensors"])
        let features = ComfyUIFeatureMap.defaults.features(for: Set(info.classes))
        #expect(features.contains("frameinterps") && features.contains("image") && features.contains("video"))
        // Without the custom node pack, no frameinterps.
        let core = Set(info.classes).subtracting(["RIFE VFI", "FILM VFI", "MusterSlowPassthrough"])
        #expect(!ComfyUIFeatureMap.defaults.features(for: core).contains("frameinterps"))
    }

    /// `GET /queue` in the shape the transcript (`scenarios.txt`, C) recorded: where a canceled
    /// prompt is tells whether it stopped.
    @Test func queuePlaceFindsRunningPendingAndGonePrompts() throws {
        let q = try Self.bytes("queue.json")
        #expect(try ComfyUIMapping.queuePlace(q, prompt: "a47537bd-b66d-4f65-bc6e-155c2acc3ea9") == .running)
        #expect(try ComfyUIMapping.queuePlace(q, prompt: "889054bd-77fb-42cf-acda-2c8d11eb43de") == .pending)
        #expect(try ComfyUIMapping.queuePlace(q, prompt: "ee184246-3ad1-4ae1-b8a6-425c0b2c35ca") == .absent)
        #expect(try ComfyUIMapping.queuePlace(Array(#"{"queue_running": [], "queue_pending": []}"#.utf8), prompt: "x") == .absent)
        #expect(throws: ComfyUIFormatError.self) { try ComfyUIMapping.queuePlace(Array("<html>".utf8), prompt: "x") }
    }

    @Test func theFeatureMapIsConfigurableFeatureByFeature() {
        let map = ComfyUIFeatureMap.defaults.merging(["frameinterps": ["MyInterpolator"], "slowmo": ["MusterSlowPassthrough"]])
        #expect(map.features(for: ["RIFE VFI"]) == [])
        #expect(map.features(for: ["MyInterpolator", "MusterSlowPassthrough", "SaveImage"]) == ["frameinterps", "image", "slowmo"])
    }

    @Test func aServerThatAnswersGarbageIsAFormatError() {
        #expect(throws: ComfyUIFormatError.self) { try ComfyUIMapping.objectInfo(Array("<html>".utf8)) }
        #expect(throws: ComfyUIFormatError.self) { try ComfyUIMapping.devices(Array("[]".utf8)) }
        #expect(throws: ComfyUIFormatError.self) { try ComfyUIMapping.promptID(Array("{}".utf8)) }
    }

    @Test func systemStatsGiveDeviceTelemetry() throws {
        let devices = try ComfyUIMapping.devices(try Self.bytes("system_stats.json"))
        #expect(devices == [DeviceTelemetry(name: "cpu", type: "cpu", vramTotal: 25_275_990_016, vramFree: 24_393_216_000)])
    }

    @Test func wsMessagesOfTheCoreWorkflow() throws {
        let events = try Self.lines("ws-core.jsonl").compactMap(ComfyUIMapping.event)
        let prompt = "ee184246-3ad1-4ae1-b8a6-425c0b2c35ca"
        #expect(events.first == .status(queueRemaining: 0))
        #expect(events.contains(.executionStart(prompt: prompt)))
        #expect(events.contains(.executing(prompt: prompt, node: "4")))
        #expect(events.contains(.executed(prompt: prompt, node: "4")))
        #expect(events.last == .success(prompt: prompt))
    }

    @Test func progressOfTheSlowWorkflowRisesToTheEnd() throws {
        var progress = ComfyUIMapping.Progress(total: 4)
        var fractions: [Double] = []
        var messages: [String] = []
        for case let e? in try Self.lines("ws-slow.jsonl").map(ComfyUIMapping.event) {
            if let (f, m) = progress.apply(e, classes: ["2": "MusterSlowPassthrough"]) {
                fractions.append(f)
                if let m { messages.append(m) }
            }
        }
        #expect(fractions == fractions.sorted())
        #expect(fractions.first! > 0.2 && fractions.last! < 1)  // node 1 was cached
        #expect(messages.contains("node 2 MusterSlowPassthrough: step 3/4"))
    }

    @Test func executionErrorKeepsTheExceptionAndIsNotRetryable() throws {
        let text = String(decoding: try Self.bytes("ws-execution-error.json"), as: UTF8.self)
        guard case .error(_, let e)? = ComfyUIMapping.event(text) else {
            Issue.record("not an execution_error")
            return
        }
        let f = e.failure
        #expect(f.code == ErrorCode("execution_error") && !f.retryable)
        #expect(f.message == "node 2 (MusterSlowPassthrough) raised RuntimeError: muster test failure at step 2")
        let oom = ComfyUIMapping.ExecutionError(
            node: "3", nodeType: "KSampler", exceptionType: "torch.OutOfMemoryError",
            exceptionMessage: "Allocation on device 0 would exceed allowed memory.")
        #expect(oom.failure.code == ErrorCode("out_of_memory") && oom.failure.retryable)
    }

    @Test func interruptionAndDeletionAsRecorded() throws {
        let events = try Self.lines("ws-scenarios.jsonl").compactMap(ComfyUIMapping.event)
        #expect(events.contains(.interrupted(prompt: "a47537bd-b66d-4f65-bc6e-155c2acc3ea9", node: "2", nodeType: "MusterSlowPassthrough")))
    }

    @Test func historyGivesEveryOutputWithItsViewURL() throws {
        let prompt = "ee184246-3ad1-4ae1-b8a6-425c0b2c35ca"
        let h = try #require(try ComfyUIMapping.history(try Self.bytes("history-core.json"), prompt: prompt))
        #expect(h.succeeded && !h.interrupted && h.error == nil)
        #expect(h.outputs == [.init(node: "4", kind: "images", filename: "muster_test_00004_.png", subfolder: "", type: "output")])
        let result = ComfyUIMapping.result(prompt: prompt, backend: "comfy-a", baseURL: "http://127.0.0.1:8188", outputs: h.outputs)
        #expect(result.text == #"{"prompt_id":"ee184246-3ad1-4ae1-b8a6-425c0b2c35ca","backend":"comfy-a","outputs":[{"node":"4","kind":"images","filename":"muster_test_00004_.png","subfolder":"","type":"output","url":"http://127.0.0.1:8188/view?filename=muster_test_00004_.png&subfolder=&type=output"}]}"#)
        _ = try RawJSON(validating: result.text)
        // A pending prompt deleted from the queue has no history.
        #expect(try ComfyUIMapping.history(Array("{}".utf8), prompt: prompt) == nil)
    }

    @Test func refusedPromptsNameNodeAndError() throws {
        let values = ComfyUIMapping.promptRejection(try Self.bytes("prompt-400-node-errors.json"))
        #expect(values == "ComfyUI refused the workflow: node 3 (ImageScale): Value not in list: upscale_method: 'magic' not in ['nearest-exact', 'bilinear', 'area', 'bicubic', 'lanczos']")
        let unknown = ComfyUIMapping.promptRejection(try Self.bytes("prompt-400-invalid-prompt.json"))
        #expect(unknown == "ComfyUI refused the workflow: Cannot execute because node NoSuchNode does not exist. (Node ID '#1')")
    }

    /// After a coordinator restart, a local ComfyUI backend finds its prompts by client id, with
    /// the job, lease and attempt its prompt body carries, in the queue (running or pending) and
    /// in the history; another client's prompts and prompts without a lease are left out.
    @Test func postedPromptsAreFoundByClientIDWithTheirLease() throws {
        let (body, _) = try ComfyUIMapping.promptBody(
            params: RawJSON(unchecked: #"{"workflow": {"1": {"class_type": "EmptyImage", "inputs": {}}}}"#), job: JobID(7),
            clientID: "muster-61-5", lease: Lease(42), attempt: 2)
        let extra = try #require((try JSONSerialization.jsonObject(with: Data(body)) as? [String: Any])?["extra_data"] as? [String: Any])
        #expect(extra["muster_lease"] as? Int == 42 && extra["muster_attempt"] as? Int == 2 && extra["muster_job"] as? Int == 7)
        let graph = #"{"1": {"class_type": "EmptyImage", "inputs": {}}}"#
        func entry(_ n: Int, _ id: String, client: String, job: Int, lease: Int?) -> String {
            let l = lease.map { #", "muster_lease": \#($0), "muster_attempt": 1"# } ?? ""
            return #"[\#(n), "\#(id)", \#(graph), {"client_id": "\#(client)", "muster_job": \#(job)\#(l)}, ["1"]]"#
        }
        let queue = #"{"queue_running": [\#(entry(3, "p-run", client: "me", job: 7, lease: 42))], "queue_pending": [\#(entry(4, "p-wait", client: "me", job: 8, lease: 43)), \#(entry(5, "p-other", client: "them", job: 9, lease: 44))]}"#
        let history = #"{"p-done": {"prompt": \#(entry(1, "p-done", client: "me", job: 6, lease: 41)), "outputs": {}, "status": {"status_str": "success"}}, "p-old": {"prompt": \#(entry(0, "p-old", client: "me", job: 5, lease: nil)), "outputs": {}}}"#
        let found = ComfyUIMapping.postedPrompts(queue: Array(queue.utf8), history: Array(history.utf8)) { $0 == "me" }
        #expect(found.map(\.id) == ["p-done", "p-run", "p-wait"])
        #expect(found.map(\.queued) == [false, true, true])
        #expect(found.map(\.lease) == [Lease(41), Lease(42), Lease(43)])
        #expect(ComfyUIRunner.clientID(name: "ab", incarnation: Incarnation(5)) == "muster-6162-5")
    }

    @Test func promptBodySetsSeedsAndInputsPerJob() throws {
        let params = RawJSON(unchecked: #"{"workflow": {"3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 20, "model": ["4", 0]}}, "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat"}}}, "inputs": {"6.text": "a lighthouse"}}"#)
        func graph(_ job: UInt64, _ p: RawJSON = params) throws -> [String: Any] {
            let (body, nodes) = try ComfyUIMapping.promptBody(params: p, job: JobID(job), clientID: "cid")
            #expect(nodes == 2)
            let o = try #require(try JSONSerialization.jsonObject(with: Data(body)) as? [String: Any])
            #expect(o["client_id"] as? String == "cid")
            #expect((o["extra_data"] as? [String: Any])?["muster_job"] as? Int == Int(job))
            return try #require(o["prompt"] as? [String: Any])
        }
        func input(_ g: [String: Any], _ node: String, _ name: String) -> Any? {
            ((g[node] as? [String: Any])?["inputs"] as? [String: Any])?[name]
        }
        let a = try graph(10), b = try graph(11)
        #expect(input(a, "6", "text") as? String == "a lighthouse")
        let seedA = try #require(input(a, "3", "seed") as? UInt64), seedB = try #require(input(b, "3", "seed") as? UInt64)
        #expect(seedA != seedB && seedA <= WorkflowParams.maxSeed)
        #expect(try #require(input(try graph(10), "3", "seed") as? UInt64) == seedA)  // a retry draws the same seed
        #expect(input(a, "3", "model") as? [Any] != nil)  // links are left alone
        let fixed = RawJSON(unchecked: #"{"workflow": {"3": {"class_type": "KSampler", "inputs": {"seed": 1}}, "6": {"class_type": "X", "inputs": {}}}, "seed": 42}"#)
        #expect(input(try graph(10, fixed), "3", "seed") as? Int == 42)
    }
}
