import MusterCore
import MusterProtocol
import PropertyBased
import Testing

/// The capability registry is a join-semilattice: proven over random announcement histories
/// delivered in random orders with duplicates.
@Suite struct RegistryPropertyTests {
    /// Decodes one random number into an announcement. Small ranges make equal versions (and
    /// equal versions with different content) common, which is where a sloppy merge breaks.
    static func announcement(_ n: Int) -> (BackendID, CapabilitySnapshot) {
        let pool = ["video", "frameinterps", "upscale", "image"]
        let models = ["sdxl", "flux", "wan"]
        var x = n
        func take(_ k: Int) -> Int {
            defer { x /= k }
            return x % k
        }
        let backend = BackendID(Int64(take(4)) - 1)  // -1 ... 2, local and remote
        let version = CapabilityVersion(incarnation: Incarnation(UInt64(take(3))), revision: UInt64(take(4)))
        let state = BackendState.allCases[take(4)]
        let featureBits = take(16), modelBits = take(8), loadedBits = take(8)
        let snapshot = CapabilitySnapshot(
            version: version, state: state,
            features: pool.indices.filter { featureBits & (1 << $0) != 0 }.map { pool[$0] },
            modelsAvailable: models.indices.filter { modelBits & (1 << $0) != 0 }.map { models[$0] },
            modelsLoaded: models.indices.filter { loadedBits & (1 << $0) != 0 }.map { models[$0] },
            slots: 1 + take(2))
        return (backend, snapshot)
    }

    static func registry(_ history: some Sequence<Int>) -> CapabilityRegistry {
        var r = CapabilityRegistry()
        for n in history {
            let (b, s) = announcement(n)
            r.apply(s, from: b)
        }
        return r
    }

    static let histories = Gen.int(in: 0...Int(Int32.max)).array(of: 0...40)
    static let seeds = Gen.int(in: 0...Int(Int32.max))

    @Test func everyDeliveryOrderWithDuplicatesConverges() async {
        await propertyCheck(input: Self.histories, Self.seeds) { history, seed in
            var rng = SplitMix64(seed: UInt64(seed))
            var delivery = history
            // Duplicate a random part of the history, then deliver everything in a random order.
            for _ in 0..<(history.isEmpty ? 0 : Int(rng.next() % 10)) {
                delivery.append(history[Int(rng.next() % UInt64(history.count))])
            }
            delivery.shuffle(using: &rng)
            #expect(Self.registry(delivery) == Self.registry(history))
        }
    }

    @Test func mergeIsCommutativeAssociativeAndIdempotent() async {
        await propertyCheck(input: Self.histories, Self.histories, Self.histories) { a, b, c in
            let (ra, rb, rc) = (Self.registry(a), Self.registry(b), Self.registry(c))
            #expect(ra.merged(with: rb) == rb.merged(with: ra))
            #expect(ra.merged(with: rb).merged(with: rc) == ra.merged(with: rb.merged(with: rc)))
            #expect(ra.merged(with: ra) == ra)
            // The join of two replicas equals one replica that saw both histories.
            #expect(ra.merged(with: rb) == Self.registry(a + b))
        }
    }

    @Test func theEntryIsTheGreatestAnnouncement() async {
        await propertyCheck(input: Self.histories) { history in
            let r = Self.registry(history)
            for n in history {
                let (b, s) = Self.announcement(n)
                let held = r.entries[b]!
                #expect(held == s || CapabilityRegistry.precedes(s, held))
                #expect(held.version >= s.version)
            }
        }
    }

    /// The coordinator's routing view is derived from the registry, so it converges too, for
    /// backends that follow the protocol: one content per version (Protocol/README.md 6.3 rule 3;
    /// a violation keeps whatever was held first).
    @Test func coordinatorViewIsIndependentOfDeliveryOrder() async {
        await propertyCheck(count: 50, input: Self.histories, Self.seeds) { raw, seed in
            var first: [String: Int] = [:]
            let history = raw.map { n in
                let (b, s) = Self.announcement(n)
                let key = "\(b).\(s.version)"
                if let n0 = first[key] { return n0 }
                first[key] = n
                return n
            }
            func play(_ delivery: [Int]) -> [BackendInfo] {
                var core = Coordinator()
                for id in Int64(-1)...2 {
                    _ = core.handle(
                        .backendRegistered(
                            BackendRegistration(id: BackendID(id), name: "b\(id)", incarnation: Incarnation(0))),
                        at: .zero)
                }
                for n in delivery {
                    let (b, s) = Self.announcement(n)
                    _ = core.handle(.capabilities(b, s), at: .zero)
                }
                return core.backendList
            }
            var rng = SplitMix64(seed: UInt64(seed))
            var delivery = history + history.prefix(5)
            delivery.shuffle(using: &rng)
            let a = play(history), b = play(delivery)
            #expect(a.map(\.version) == b.map(\.version))
            #expect(a.map(\.announced) == b.map(\.announced))
            #expect(a.map(\.features) == b.map(\.features))
            #expect(a.map(\.modelsLoaded) == b.map(\.modelsLoaded))
            #expect(a.map(\.incarnation) == b.map(\.incarnation))
        }
    }
}
