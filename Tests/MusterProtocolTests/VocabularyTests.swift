import MusterProtocol
import Testing

@Test func capabilityVersionsOrderByIncarnationThenRevision() {
    let a = CapabilityVersion(incarnation: Incarnation(1), revision: 9)
    let b = CapabilityVersion(incarnation: Incarnation(2), revision: 1)
    #expect(a < b)
    #expect(CapabilityVersion(incarnation: Incarnation(2), revision: 2) > b)
}
