@testable import MusterCore
import MusterProtocol
import Testing

/// The per-class speed index the expected-completion rule reads (`Coordinator.admits`).
@Suite struct SpeedIndexTests {
    @Test func fasterListsStrictlyFasterMembersFastestFirst() {
        var index = SpeedIndex()
        index.insert(BackendID(1), speed: 1)
        index.insert(BackendID(2), speed: 3)
        index.insert(BackendID(3), speed: 2)
        index.insert(BackendID(4), speed: 3)
        #expect(index.speeds == [3, 2, 1])
        #expect(Set(index.faster(than: 2)) == [BackendID(2), BackendID(4)])
        #expect(Array(index.faster(than: 1)).suffix(1) == [BackendID(3)], "speed 2 after speed 3")
        #expect(Array(index.faster(than: 3)).isEmpty)
    }

    @Test func removingTheLastMemberOfASpeedDropsTheSpeed() {
        var index = SpeedIndex()
        index.insert(BackendID(1), speed: 2)
        index.insert(BackendID(2), speed: 2)
        index.insert(BackendID(3), speed: 1)
        index.remove(BackendID(1), speed: 2)
        #expect(index.speeds == [2, 1])
        #expect(Array(index.faster(than: 1)) == [BackendID(2)])
        index.remove(BackendID(2), speed: 2)
        #expect(index.speeds == [1])
        #expect(Array(index.faster(than: 0.5)) == [BackendID(3)])
        // Removing what is not there (another speed, or already gone) changes nothing.
        index.remove(BackendID(3), speed: 2)
        index.remove(BackendID(2), speed: 2)
        #expect(index.speeds == [1])
    }
}
