@testable import MusterCore
import MusterProtocol
import Testing

/// The fleet's speed index (work stealing, backups) and the per-class band index the
/// expected-completion rule reads (`Coordinator.admits`).
@Suite struct SpeedIndexTests {
    @Test func slowerListsStrictlySlowerMembersSlowestFirst() {
        var index = SpeedIndex()
        index.insert(BackendID(1), speed: 1)
        index.insert(BackendID(2), speed: 3)
        index.insert(BackendID(3), speed: 2)
        index.insert(BackendID(4), speed: 1)
        #expect(index.speeds == [3, 2, 1])
        #expect(Set(index.slower(than: 2)) == [BackendID(1), BackendID(4)])
        #expect(Array(index.slower(than: 3)).suffix(1) == [BackendID(3)], "speed 2 after speed 1")
        #expect(Array(index.slower(than: 1)).isEmpty)
        #expect(index.hasSlower(than: 1.5) && !index.hasSlower(than: 1))
    }

    @Test func removingTheLastMemberOfASpeedDropsTheSpeed() {
        var index = SpeedIndex()
        index.insert(BackendID(1), speed: 1)
        index.insert(BackendID(2), speed: 1)
        index.insert(BackendID(3), speed: 2)
        index.remove(BackendID(1), speed: 1)
        #expect(index.speeds == [2, 1])
        #expect(Array(index.slower(than: 2)) == [BackendID(2)])
        index.remove(BackendID(2), speed: 1)
        #expect(index.speeds == [2])
        #expect(Array(index.slower(than: 3)) == [BackendID(3)])
        // Removing what is not there (another speed, or already gone) changes nothing.
        index.remove(BackendID(3), speed: 1)
        index.remove(BackendID(2), speed: 1)
        #expect(index.speeds == [2])
    }

    /// The per-class band index: speeds drift (learned after every measured job) and a backend
    /// keeps its band while its speed stays near it, yet `candidates(fasterThan:)` always yields
    /// every member that is faster, and `allExceed` bands hold only faster ones.
    @Test func bandsYieldEveryFasterMemberWhileSpeedsDrift() {
        var rng = SplitMix64(seed: 7)
        var index = BandIndex()
        var speed: [BackendID: Double] = [:]
        var band: [BackendID: Int] = [:]
        for i in 1...200 {
            let id = BackendID(Int64(i))
            let s = [0.5, 1, 1.5, 2, 3][i % 5] * (0.9 + Double(rng.next() % 200) / 1000)
            speed[id] = s
            band[id] = SpeedBand.next(s, current: nil)
            index.insert(id, band: band[id]!)
        }
        var moves = 0
        for _ in 0..<20_000 {
            // A learned speed moves by up to 3% either way.
            let id = BackendID(Int64(1 + rng.next() % 200))
            let s = min(1000, max(0.01, speed[id]! * (0.97 + Double(rng.next() % 600) / 10_000)))
            speed[id] = s
            let next = SpeedBand.next(s, current: band[id])
            if next != band[id] {
                index.remove(id, band: band[id]!)
                index.insert(id, band: next)
                band[id] = next
                moves += 1
            }
            let probe = [0.5, 1, 1.5, 2, 3, speed[id]!][Int(rng.next() % 6)]
            let faster = Set(speed.filter { $0.value > probe }.keys)
            let candidates = Set(index.candidates(fasterThan: probe))
            #expect(candidates.isSuperset(of: faster))
            for b in index.bands(mayExceed: probe) where SpeedBand.allExceed(b, probe) {
                #expect(index.members(of: b).allSatisfy { speed[$0]! > probe })
            }
        }
        // Most drift stays inside a band: the classes' indexes are rarely touched.
        #expect(moves < 2_000, "\(moves) moves for 20,000 changes")
        #expect(SpeedBand.of(1) == 0 && SpeedBand.of(1.0999) == 0 && SpeedBand.of(1.1001) == 1 && SpeedBand.of(0.95) == -1)
    }
}
