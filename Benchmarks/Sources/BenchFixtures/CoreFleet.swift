import MusterCore
import MusterProtocol

/// A core with `backends` ready backends (1 or 2 slots each, 70% of 8 features each, 8 of 50 models
/// available and 2 loaded), and the 1,000 job specs (20 feature sets, 50 models, 7 owners) the
/// workloads submit from. Seeded, so the same numbers give the same fleet and the same jobs.
/// The harness's `core` table and the `CoreDecisions` micro benchmarks start from it.
public struct CoreFleet {
    public static let features = [
        "video", "frameinterps", "upscale", "controlnet", "ipadapter", "lora", "inpaint", "audio",
    ]
    public static let models = (0..<50).map { "model-\($0)" }
    /// The empty set, singles and pairs of `features`: 20 in all.
    public static let featureSets: [[String]] = {
        var sets: [[String]] = [[]]
        for i in features.indices where sets.count < 20 { sets.append([features[i]]) }
        outer: for i in features.indices {
            for j in features.indices where j > i {
                if sets.count == 20 { break outer }
                sets.append([features[i], features[j]])
            }
        }
        return sets
    }()

    public var core: Coordinator
    public var clock = CoreInstant.zero
    public var rng: SplitMix64
    public let specs: [JobSpec]
    /// Slots over the whole fleet.
    public private(set) var slots = 0
    /// Each backend's last announcement, for workloads that announce again.
    public private(set) var announced: [BackendID: CapabilitySnapshot] = [:]

    /// Each backend's configured speed, taken in turn; a single speed configures none (a uniform fleet).
    public let speeds: [Double]

    /// `speeds`: each backend's configured speed, taken in turn (`[1]`: a uniform fleet).
    public init(backends n: Int, policy: CorePolicy = CorePolicy(), seed: UInt64 = 42, speeds: [Double] = [1]) {
        core = Coordinator(policy: policy)
        self.speeds = speeds
        rng = SplitMix64(seed: seed)
        specs = (0..<1000).map { k in
            JobSpec(
                kind: k % 3 == 0 ? "video" : "image", needs: Self.featureSets[k % 20],
                model: Self.models[(k / 20) % 50],
                owner: "owner\(k % 7)")
        }
        for i in 1...max(1, n) {
            let id = BackendID(Int64(i))
            let slots = 1 + Int(rng.next() % 2)
            self.slots += slots
            _ = core.handle(
                .backendRegistered(
                    BackendRegistration(
                        id: id, name: "gpu\(i)", incarnation: Incarnation(1), slots: slots,
                        speed: speed(of: id))),
                at: tick())
            let has = Self.features.filter { _ in rng.next() % 10 < 7 }
            var available: [String] = []
            while available.count < 8 {
                let m = Self.models[Int(rng.next() % 50)]
                if !available.contains(m) { available.append(m) }
            }
            let snapshot = CapabilitySnapshot(
                version: CapabilityVersion(incarnation: Incarnation(1), revision: 1), state: .ready, features: has,
                modelsAvailable: available, modelsLoaded: Array(available.prefix(2)), slots: slots)
            announced[id] = snapshot
            _ = core.handle(.capabilities(id, snapshot), at: tick())
        }
    }

    /// The speed configured for backend `id`: nil in a uniform fleet.
    public func speed(of id: BackendID) -> Double? {
        speeds.count > 1 ? speeds[Int(id.rawValue) % speeds.count] : nil
    }

    /// The clock one microsecond on.
    public mutating func tick() -> CoreInstant {
        clock.nanoseconds += 1000
        return clock
    }

    /// `event` to the core, one tick on.
    public mutating func handle(_ event: CoreEvent) -> [CoreAction] {
        let now = tick()
        return core.handle(event, at: now)
    }

    /// A batch to the core, one tick on; the actions of the submission.
    public mutating func submit(_ entries: [BatchEntry]) throws(CoreError) -> [CoreAction] {
        let now = tick()
        return try core.submit(key: nil, entries: entries, at: now).actions
    }

    public mutating func randomSpec() -> JobSpec { specs[Int(rng.next() % UInt64(specs.count))] }

    /// The next announcement of `backend`: one revision on, with the other of its first two models loaded.
    public mutating func reannounce(_ backend: BackendID) -> CapabilitySnapshot {
        var s = announced[backend]!
        s.version.revision += 1
        let first = s.modelsAvailable[Int(s.version.revision % 2)]
        s.modelsLoaded = [first]
        announced[backend] = s
        return s
    }

    /// The (job, backend, lease) of every `assign` among `actions`.
    public static func assigns(_ actions: [CoreAction]) -> [(JobID, BackendID, Lease)] {
        var out: [(JobID, BackendID, Lease)] = []
        for case .assign(let job, _, _, let backend, let lease, _) in actions { out.append((job, backend, lease)) }
        return out
    }
}
