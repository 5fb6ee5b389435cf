import MusterProtocol
import Testing

/// Section 11: a job's `params.workflow` is a ComfyUI API-format graph; the coordinator derives
/// the node classes the job needs from it and refuses a graph no backend could run.
@Suite struct WorkflowTests {
    static let core = #"""
        {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 16711680}},
         "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 3, "sigma": 1.0}},
         "4": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "muster_test"}},
         "5": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "plain"}}}
        """#

    func submit(_ params: String) throws(ProtocolError) -> Wire.JobRequest {
        let m = try ClientToCoordinator.decode(#"{"type":"submit","id":"w1","jobs":[{"kind":"workflow","params":"# + params + "}]}")
        guard case .submit(let s) = m else { fatalError("decoded \(m.type)") }
        return s.batch.jobs[0]
    }

    func refusal(_ params: String) -> ProtocolError? {
        do {
            _ = try submit(params)
            return nil
        } catch {
            return error
        }
    }

    @Test func nodeClassesComeFromTheGraph() throws {
        let job = try submit(#"{"workflow": \#(Self.core), "seed": 7, "inputs": {"4.filename_prefix": "a"}}"#)
        #expect(job.nodes == ["EmptyImage", "ImageBlur", "SaveImage"])
        #expect(job.spec(batchOwner: nil, defaultOwner: "x").nodes == job.nodes)
        // params stay opaque: re-emitted as received.
        #expect(job.params.text.hasPrefix(#"{"workflow": {"1": "#))
        // Built in code, the same request derives the same classes.
        #expect(Wire.JobRequest(kind: "workflow", params: job.params) == job)
    }

    @Test func paramsWithoutAWorkflowNeedNoNodes() throws {
        #expect(try submit(#"{"prompt": "a lighthouse"}"#).nodes == [])
    }

    @Test func aBadWorkflowIsRefusedWithItsPath() {
        let cases: [(String, String, String)] = [
            (#"{"workflow": "graph.json"}"#, "jobs[0].params.workflow", "API format"),
            (#"{"workflow": {}}"#, "jobs[0].params.workflow", "no nodes"),
            (#"{"workflow": {"1": [1, 2]}}"#, "jobs[0].params.workflow.1", "class_type and inputs"),
            (#"{"workflow": {"1": {"inputs": {}}}}"#, "jobs[0].params.workflow.1.class_type", "missing"),
            (#"{"workflow": {"1": {"class_type": "A"}}}"#, "jobs[0].params.workflow.1.inputs", "missing"),
            (#"{"workflow": {"1": {"class_type": "A", "inputs": 3}}}"#, "jobs[0].params.workflow.1.inputs", "object"),
            (#"{"workflow": {"1": {"class_type": "", "inputs": {}}}}"#, "jobs[0].params.workflow.1.class_type", "empty"),
            (#"{"workflow": {"1": {"class_type": "A", "inputs": {}}, "1": {"class_type": "B", "inputs": {}}}}"#, "jobs[0].params.workflow.1", "more than once"),
            (#"{"workflow": {"1": {"class_type": "A", "inputs": {}}}, "seed": -1}"#, "jobs[0].params.seed", "from 0 to 9007199254740991"),
            (#"{"workflow": {"1": {"class_type": "A", "inputs": {}}}, "seed": 1.5}"#, "jobs[0].params.seed", "from 0 to 9007199254740991"),
            (#"{"workflow": {"1": {"class_type": "A", "inputs": {}}}, "seed": 9007199254740992}"#, "jobs[0].params.seed", "from 0 to 9007199254740991"),
            (#"{"workflow": {"1": {"class_type": "A", "inputs": {}}}, "seed": "7"}"#, "jobs[0].params.seed", "from 0 to 9007199254740991"),
            (#"{"workflow": {"1": {"class_type": "A", "inputs": {}}}, "inputs": {"9.text": "x"}}"#, "jobs[0].params.inputs", "node 9"),
            (#"{"workflow": {"1": {"class_type": "A", "inputs": {}}}, "inputs": {"text": "x"}}"#, "jobs[0].params.inputs", "NODE.INPUT"),
            (#"{"seed": 3}"#, "jobs[0].params.workflow", "add params.workflow"),
        ]
        for (params, path, words) in cases {
            let e = refusal(params)
            #expect(e?.code == .invalidMessage, "\(params)")
            #expect(e?.path == path, "\(params): \(String(describing: e))")
            #expect(words.isEmpty || e?.reason.contains(words) == true, "\(params): \(String(describing: e))")
            #expect(e?.requestID == "w1")
        }
    }

    @Test func capabilitiesCarryNodeClassesAndDevices() throws {
        let text = #"{"type":"capabilities","incarnation":5,"revision":2,"state":"ready","features":["frameinterps"],"models":{"available":[],"loaded":[]},"slots":1,"nodes":["RIFE VFI","EmptyImage"],"devices":[{"name":"cuda:0 NVIDIA RTX 4090","type":"cuda","vram_total":25757220864,"vram_free":24000000000}]}"#
        guard case .capabilities(let s) = try BackendToCoordinator.decode(text) else {
            Issue.record("not capabilities")
            return
        }
        #expect(s.nodes == ["EmptyImage", "RIFE VFI"])
        #expect(s.devices == [DeviceTelemetry(name: "cuda:0 NVIDIA RTX 4090", type: "cuda", vramTotal: 25_757_220_864, vramFree: 24_000_000_000)])
        guard case .capabilities(let again) = try BackendToCoordinator.decode(BackendToCoordinator.capabilities(s).encodedString()) else {
            Issue.record("not capabilities")
            return
        }
        #expect(again == s)
    }
}
