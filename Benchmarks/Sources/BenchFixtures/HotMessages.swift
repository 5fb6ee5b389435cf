import MusterProtocol

/// The messages that cross the links most often, as a busy coordinator sees them. The harness's
/// `protocol` table and the `ProtocolCodecs` micro benchmarks measure the same values.
public enum HotMessages {
    public static let params = RawJSON(
        unchecked: #"{"prompt":"a lighthouse at dusk, cinematic","seed":1234,"frames":48,"fps":24}"#)

    /// Coordinator to backend: a job bound under a lease.
    public static let assign = CoordinatorToBackend.assign(
        .init(
            job: JobID(1_000_017), lease: Lease(73), batch: BatchID(4211), attempt: 1, kind: "video",
            needs: ["frameinterps", "video"], model: "wan2.1-t2v-14b", params: params))

    /// Backend to coordinator: a progress report.
    public static let progress = BackendToCoordinator.progress(
        .init(job: JobID(1_000_017), lease: Lease(73), fraction: 0.375, message: "step 18/48"))

    /// Backend to coordinator: a job's result.
    public static let completed = BackendToCoordinator.completed(
        .init(
            job: JobID(1_000_017), lease: Lease(73),
            result: RawJSON(unchecked: #"{"files":["out/1000017.mp4"],"seconds":61.2}"#)))

    /// Backend to coordinator: an announcement (a capability snapshot).
    public static let capabilities = BackendToCoordinator.capabilities(
        CapabilitySnapshot(
            version: CapabilityVersion(incarnation: Incarnation(1_763_700_000_000), revision: 3),
            state: .ready, features: ["frameinterps", "image", "video"],
            modelsAvailable: ["flux1-dev", "sdxl-base-1.0", "wan2.1-t2v-14b"],
            modelsLoaded: ["wan2.1-t2v-14b"], slots: 1))

    /// Client to coordinator: a batch of four jobs. (No seed: that belongs to a ComfyUI workflow,
    /// and a submit with one but no workflow is rejected.)
    public static let submit = ClientToCoordinator.submit(
        .init(
            id: "r1",
            batch: .init(
                batchKey: "render-2026-11-21-001",
                jobs: [
                    .init(
                        kind: "video", needs: ["frameinterps", "video"], model: "wan2.1-t2v-14b",
                        params: RawJSON(
                            unchecked: #"{"prompt":"a lighthouse at dusk, cinematic","frames":48,"fps":24}"#),
                        count: 4, priority: 0, owner: "alice")
                ])))

    /// Coordinator to client: a job event, the message every subscriber gets for every change.
    public static let jobEvent = CoordinatorToClient.job(
        .init(
            job: JobID(1_000_017), batch: BatchID(4211), event: .bound, state: .bound, attempt: 1,
            atMs: 1_763_700_061_200, backend: BackendID(12), expectedMs: 61_000, runnerUp: BackendID(7),
            runnerUpExpectedMs: 64_500))
}
