/// The optimal makespan of a small `Scenario`, exactly, by branch and bound: the yardstick the
/// routing suite divides by.
///
/// The model is the simulator's, seen with full knowledge of the future: every backend slot is a
/// machine that becomes usable when its backend announces `ready`; a job runs on one slot of an
/// eligible backend (features, model available or loaded) for that backend's duration of its
/// kind, never before it was submitted; a model that is not loaded is loaded once per backend,
/// taking that backend's load time, starting no earlier than the backend is ready and the first
/// job that needs it was submitted (a coordinator cannot load for a job it has not seen, but may
/// load for one that then runs elsewhere, ahead of later jobs that run here: a hedge), and while
/// it loads the slots may run other jobs. Links that drop are not modelled.
///
/// Jobs are placed in submission order; each placement tries every backend and, of its slots, the
/// distinct ones (all empty slots of a backend are the same). Once the set of jobs on a slot is
/// fixed, running them in order of their earliest start (submission, readiness, model loaded) is
/// optimal for that slot, so a schedule is a partition of the jobs over slots and the search is
/// exact. Children are tried best first (the first leaf is the greedy earliest-completion list
/// schedule) and a branch is cut when it cannot beat the best schedule found: its makespan so far,
/// or a job still to place that cannot finish earlier anywhere, is already as late.
public enum ExactOptimum {
    /// The answer, and whether it is proven optimal.
    public struct Result: Sendable, Hashable {
        /// The optimal latest completion, in seconds on the scenario's clock (not relative to the
        /// first submission); 0 when there is nothing to run.
        public var end: Double
        /// Search nodes visited.
        public var nodes: Int
        /// False when the node budget ran out: `end` is then the best schedule found, an upper bound.
        public var exact: Bool
    }

    /// Solves a scenario. Jobs no backend can ever run are left out (the coordinator fails them).
    public static func solve(_ s: Scenario, nodeLimit: Int = 2_000_000) -> Result {
        var search = Search(s)
        search.nodeLimit = nodeLimit
        search.run()
        return Result(end: search.best, nodes: search.nodes, exact: !search.exhausted)
    }

    struct Job {
        var arrival: Double
        /// Seconds on each backend; nil where it is not eligible.
        var seconds: [Double?]
        var model: Int
    }

    struct Slot {
        var backend: Int
        /// (earliest start, duration), sorted by earliest start.
        var work: [(release: Double, seconds: Double)] = []
        var end = 0.0
    }

    struct Search {
        var jobs: [Job] = []
        var ready: [Double] = []
        var loadSeconds: [Double] = []
        /// Per model: when the first job that needs it was submitted.
        var firstNeeded: [Double] = []
        /// Per backend, per model: when the model is loaded (nil: not yet).
        var loadedAt: [[Double?]] = []
        var slots: [Slot] = []
        var slotsOf: [[Int]] = []
        /// The latest "earliest possible end" among jobs i..<n.
        var suffixBound: [Double] = []
        var best = Double.infinity
        var nodes = 0
        var nodeLimit = 2_000_000
        var exhausted = false

        init(_ s: Scenario) {
            var models: [String: Int] = [:]
            func modelIndex(_ m: String) -> Int {
                if let i = models[m] { return i }
                models[m] = models.count
                return models.count - 1
            }
            for sub in s.submissions {
                for entry in sub.entries { if let m = entry.spec.model { _ = modelIndex(m) } }
            }
            for (i, b) in s.backends.enumerated() {
                let r = b.announceAfter.map { b.registerAt + $0 } ?? .infinity
                ready.append(r)
                loadSeconds.append(b.loadSeconds)
                var loaded = [Double?](repeating: nil, count: models.count)
                for m in b.modelsLoaded { if let k = models[m] { loaded[k] = r } }
                loadedAt.append(loaded)
                var mine: [Int] = []
                for _ in 0..<max(1, b.slots) {
                    mine.append(slots.count)
                    slots.append(Slot(backend: i))
                }
                slotsOf.append(mine)
            }
            let ordered = s.submissions.enumerated().sorted { ($0.element.at, $0.offset) < ($1.element.at, $1.offset) }
            for (_, sub) in ordered {
                for entry in sub.entries {
                    var seconds: [Double?] = []
                    for (i, b) in s.backends.enumerated() {
                        let eligible =
                            ready[i].isFinite && Set(entry.spec.needs).isSubset(of: b.features)
                            && (entry.spec.model.map { b.modelsAvailable.contains($0) || b.modelsLoaded.contains($0) }
                                ?? true)
                        seconds.append(eligible ? b.seconds(for: entry.spec.kind) : nil)
                    }
                    guard seconds.contains(where: { $0 != nil }) else { continue }
                    let job = Job(arrival: sub.at, seconds: seconds, model: entry.spec.model.map { models[$0]! } ?? -1)
                    for _ in 0..<entry.count { jobs.append(job) }
                }
            }
            firstNeeded = [Double](repeating: .infinity, count: models.count)
            for job in jobs where job.model >= 0 { firstNeeded[job.model] = min(firstNeeded[job.model], job.arrival) }
            suffixBound = [Double](repeating: 0, count: jobs.count + 1)
            for i in stride(from: jobs.count - 1, through: 0, by: -1) {
                var earliest = Double.infinity
                for (b, p) in jobs[i].seconds.enumerated() {
                    guard let p else { continue }
                    earliest = min(earliest, max(jobs[i].arrival, ready[b]) + p)
                }
                suffixBound[i] = max(earliest, suffixBound[i + 1])
            }
            if jobs.isEmpty { best = 0 }
        }

        mutating func run() {
            guard !jobs.isEmpty else { return }
            place(0, 0)
        }

        /// The end of a slot's work run in order of earliest start.
        static func end(_ work: [(release: Double, seconds: Double)]) -> Double {
            var t = 0.0
            for w in work { t = max(t, w.release) + w.seconds }
            return t
        }

        mutating func place(_ i: Int, _ makespan: Double) {
            nodes += 1
            if i == jobs.count {
                best = min(best, makespan)
                return
            }
            if nodes > nodeLimit {
                exhausted = true
                return
            }
            // Tolerance: equal makespans computed in different orders may differ in the last bit.
            if max(makespan, suffixBound[i]) >= best - 1e-9 { return }
            let job = jobs[i]
            var children: [(value: Double, slot: Int, release: Double, loads: Bool)] = []
            for (b, p) in job.seconds.enumerated() {
                guard let p else { continue }
                var release = max(job.arrival, ready[b])
                var loads = false
                if job.model >= 0 {
                    if let at = loadedAt[b][job.model] {
                        release = max(release, at)
                    } else {
                        release = max(release, max(ready[b], firstNeeded[job.model]) + loadSeconds[b])
                        loads = true
                    }
                }
                var triedEmpty = false
                for s in slotsOf[b] {
                    if slots[s].work.isEmpty {
                        if triedEmpty { continue }
                        triedEmpty = true
                    }
                    var work = slots[s].work
                    let at = work.firstIndex { $0.release > release } ?? work.count
                    work.insert((release, p), at: at)
                    children.append((max(makespan, Self.end(work)), s, release, loads))
                }
            }
            children.sort { ($0.value, $0.slot) < ($1.value, $1.slot) }
            for child in children {
                if child.value >= best - 1e-9 { break }
                let s = child.slot
                let b = slots[s].backend
                let saved = slots[s]
                let at = slots[s].work.firstIndex { $0.release > child.release } ?? slots[s].work.count
                slots[s].work.insert((child.release, job.seconds[b]!), at: at)
                slots[s].end = Self.end(slots[s].work)
                if child.loads { loadedAt[b][job.model] = child.release }
                place(i + 1, child.value)
                if child.loads { loadedAt[b][job.model] = nil }
                slots[s] = saved
                if exhausted { return }
            }
        }
    }
}
