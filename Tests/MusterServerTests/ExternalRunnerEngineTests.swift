@testable import MusterBackends
import MusterCore
import MusterProtocol
import MusterServer
import Testing

/// The worker engine with an external runner (a ComfyUI): the server queues every job, reports
/// start, progress and outcome, and says what it can do; a server restart is a new incarnation.
@Suite struct ExternalRunnerEngineTests {
    let inc = Incarnation(1_763_712_000_000)

    func engine() -> WorkerEngine {
        WorkerEngine(spec: WorkerSpec(name: "comfy-a", runner: .external), incarnation: inc, epochMs: 1_763_712_000_000, at: .zero)
    }

    func welcome(bindings: [Wire.Binding] = []) -> CoordinatorToBackend {
        .welcome(.init(backend: BackendID(3), coordinator: "test", heartbeatMs: 5000, syncMs: 15000, bindings: bindings))
    }

    func assign(_ job: UInt64, lease: UInt64) -> CoordinatorToBackend {
        .assign(.init(job: JobID(job), lease: Lease(lease), batch: BatchID(1), attempt: 1, kind: "workflow",
            params: RawJSON(unchecked: #"{"workflow":{"1":{"class_type":"SaveImage","inputs":{}}}}"#)))
    }

    func sent(_ actions: [WorkerEngine.Action]) -> [BackendToCoordinator] {
        actions.compactMap { if case .send(let m) = $0 { m } else { nil } }
    }

    func snapshots(_ actions: [WorkerEngine.Action]) -> [CapabilitySnapshot] {
        sent(actions).compactMap { if case .capabilities(let s) = $0 { s } else { nil } }
    }

    @Test func loadingUntilTheServerAnswersThenItsCapabilities() {
        var e = engine()
        let first = snapshots(e.receive(welcome(), at: .zero))
        #expect(first.map(\.state) == [.loading])
        let down = snapshots(e.serverCapabilities(state: .loading, features: [], nodes: [], models: [], devices: [], message: "http://x does not answer"))
        #expect(down.first?.message == "http://x does not answer")
        let dev = DeviceTelemetry(name: "cpu", type: "cpu", vramTotal: 100, vramFree: 50)
        let ready = snapshots(e.serverCapabilities(
            state: .ready, features: ["frameinterps"], nodes: ["SaveImage", "RIFE VFI"], models: ["sdxl.safetensors"], devices: [dev]))
        #expect(ready.count == 1)
        #expect(ready.first?.state == .ready && ready.first?.nodes == ["RIFE VFI", "SaveImage"] && ready.first?.devices == [dev])
        #expect(ready.first?.message == nil)
        // Nothing changed: no announcement.
        #expect(e.serverCapabilities(
            state: .ready, features: ["frameinterps"], nodes: ["SaveImage", "RIFE VFI"], models: ["sdxl.safetensors"], devices: [dev]).isEmpty)
    }

    @Test func jobsGoToTheServerAtOnceAndStartWhenItSays() {
        var e = engine()
        _ = e.receive(welcome(), at: .zero)
        _ = e.serverCapabilities(state: .ready, features: [], nodes: ["SaveImage"], models: [], devices: [])
        let a1 = e.receive(assign(1, lease: 10), at: .zero)
        let a2 = e.receive(assign(2, lease: 11), at: .zero)
        // Both handed over: the server's queue holds the second one.
        #expect(a1.contains { if case .run(let a) = $0 { a.job == JobID(1) } else { false } })
        #expect(a2.contains { if case .run(let a) = $0 { a.job == JobID(2) } else { false } })
        #expect(sent(a1 + a2).isEmpty)  // no `started` before the server starts it
        #expect(sent(e.externalStarted(job: JobID(1), lease: Lease(10), at: .seconds(1))) == [.started(.init(job: JobID(1), lease: Lease(10)))])
        let p = sent(e.externalProgress(job: JobID(1), lease: Lease(10), fraction: 0.5, message: "node 2: step 2/4", at: .seconds(2)))
        #expect(p == [.progress(.init(job: JobID(1), lease: Lease(10), fraction: 0.5, message: "node 2: step 2/4"))])
        // Progress implies started.
        let p2 = sent(e.externalProgress(job: JobID(2), lease: Lease(11), fraction: 0.1, message: nil, at: .seconds(2)))
        #expect(p2.first == .started(.init(job: JobID(2), lease: Lease(11))))
        let done = sent(e.execFinished(job: JobID(1), lease: Lease(10), result: .output(#"{"outputs":[]}"#), at: .seconds(3)))
        #expect(done == [.completed(.init(job: JobID(1), lease: Lease(10), result: RawJSON(unchecked: #"{"outputs":[]}"#)))])
        // A stale lease changes nothing.
        #expect(e.externalStarted(job: JobID(2), lease: Lease(99), at: .seconds(3)).isEmpty)
    }

    @Test func cancelAndRevokeTakeThePromptBack() {
        var e = engine()
        _ = e.receive(welcome(), at: .zero)
        _ = e.receive(assign(1, lease: 10), at: .zero)
        _ = e.receive(assign(2, lease: 11), at: .zero)
        _ = e.externalStarted(job: JobID(1), lease: Lease(10), at: .seconds(1))
        let c = e.receive(.cancel(.init(job: JobID(1), lease: Lease(10))), at: .seconds(2))
        #expect(c == [.stop(job: JobID(1), lease: Lease(10), started: true, confirm: true)])
        #expect(e.externalStopping == 1)
        let r = e.receive(.revoke(.init(job: JobID(2), lease: Lease(11))), at: .seconds(2))
        #expect(r.contains(.stop(job: JobID(2), lease: Lease(11), started: false, confirm: false)))
        // A revoked job is forgotten: the server's late report about it is ignored.
        #expect(e.execFinished(job: JobID(2), lease: Lease(11), result: .output("{}"), at: .seconds(3)).isEmpty)
        // The canceled one is confirmed only once the server says it stopped, and only once.
        #expect(e.externalStopped(job: JobID(1), lease: Lease(99), at: .seconds(3)).isEmpty)
        let stopped = sent(e.externalStopped(job: JobID(1), lease: Lease(10), at: .seconds(3)))
        #expect(stopped.count == 1)
        if case .failed(let f) = stopped.first {
            #expect(f.job == JobID(1) && f.lease == Lease(10) && f.code == .canceled && !f.retryable)
        } else {
            Issue.record("expected failed canceled, got \(stopped)")
        }
        #expect(e.externalStopped(job: JobID(1), lease: Lease(10), at: .seconds(4)).isEmpty)
        #expect(e.externalJobs.isEmpty && e.externalStopping == 0)
    }

    @Test func aCanceledPromptThatFinishedAnywayConfirmsTheCancel() {
        var e = engine()
        _ = e.receive(welcome(), at: .zero)
        _ = e.receive(assign(1, lease: 10), at: .zero)
        _ = e.externalStarted(job: JobID(1), lease: Lease(10), at: .seconds(1))
        _ = e.receive(.cancel(.init(job: JobID(1), lease: Lease(10))), at: .seconds(2))
        // Progress and start of a job being stopped are not reported.
        #expect(e.externalProgress(job: JobID(1), lease: Lease(10), fraction: 0.9, message: nil, at: .seconds(2)).isEmpty)
        let done = sent(e.execFinished(job: JobID(1), lease: Lease(10), result: .output("{}"), at: .seconds(3)))
        guard case .failed(let f)? = done.first, done.count == 1 else {
            Issue.record("expected one failed canceled, got \(done)")
            return
        }
        #expect(f.code == .canceled)
    }

    @Test func aServerRestartIsANewIncarnationThatForgetsItsJobs() {
        var e = engine()
        _ = e.receive(welcome(), at: .zero)
        _ = e.serverCapabilities(state: .ready, features: [], nodes: ["SaveImage"], models: [], devices: [])
        _ = e.receive(assign(1, lease: 10), at: .zero)
        _ = e.externalStarted(job: JobID(1), lease: Lease(10), at: .seconds(1))
        let restarted = snapshots(e.serverRestarted(at: .seconds(5)))
        #expect(restarted.count == 1)
        #expect(restarted[0].version.incarnation > inc && restarted[0].version.revision == 1)
        #expect(restarted[0].state == .loading)
        #expect(e.externalJobs.isEmpty)
        #expect(e.hello(token: "", software: "t") == .hello(.init(name: "comfy-a", token: "", incarnation: restarted[0].version.incarnation, slots: 1, software: "t")))
    }

    @Test func loadModelGoesToTheServerAndAnswersWhenItIsDone() {
        var e = engine()
        _ = e.receive(welcome(), at: .zero)
        _ = e.serverCapabilities(state: .ready, features: [], nodes: [], models: ["sdxl.safetensors"], devices: [])
        let asked = e.receive(.loadModel(.init(id: "lm-1", model: "sdxl.safetensors")), at: .seconds(1))
        #expect(asked.contains(.loadModel("sdxl.safetensors")))
        #expect(e.nextDeadline == nil)
        let done = e.externalModelLoaded("sdxl.safetensors", ok: true, message: "", at: .seconds(4))
        #expect(snapshots(done).first?.modelsLoaded == ["sdxl.safetensors"])
        #expect(sent(done).contains(.loadModelResult(.init(id: "lm-1", model: "sdxl.safetensors", ok: true, durationMs: 3000))))
    }
}
