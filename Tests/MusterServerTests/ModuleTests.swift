import MusterProtocol
import Testing

@Test func finalJobStates() {
    #expect(JobState.allCases.filter(\.isFinal) == [.completed, .failed, .canceled])
}
