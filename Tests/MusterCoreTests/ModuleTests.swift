import MusterProtocol
import Testing

@Test func localBackendsHaveNegativeIDs() {
    #expect(BackendID(-1).isLocal)
    #expect(!BackendID(1).isLocal)
}
