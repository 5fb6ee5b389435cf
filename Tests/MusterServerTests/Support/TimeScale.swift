import Foundation

/// A few end-to-end tests hold a job for a backend that is still loading and check the hold
/// before the backend announces, so they need the loading to outlast a couple of requests.
/// Under a sanitizer every `muster` child runs several times slower and the whole suite starts
/// at once on few cores; `Scripts/test-sanitizers` sets `MUSTER_TEST_TIME_SCALE` so those tests
/// stretch every duration of their scenario by the same factor (which leaves its outcome alone).
enum TimeScale {
    static let factor: Int = {
        let raw = ProcessInfo.processInfo.environment["MUSTER_TEST_TIME_SCALE"] ?? ""
        return max(1, Int(raw) ?? 1)
    }()

    /// `seconds` stretched by the factor.
    static func seconds(_ seconds: Int) -> Int { seconds * factor }
}
