import MusterProtocol

extension Coordinator {
    /// The jobs bound to `backend` right now (bound or running) with their leases, by job id:
    /// what `welcome.bindings` tells a backend that reconnects (Protocol/README.md 6.6).
    public func bindings(of backend: BackendID) -> [(job: JobID, lease: Lease)] {
        guard let b = backends.get(backend) else { return [] }
        return b.jobs.sorted().compactMap { id in
            guard let job = jobs.get(id), let lease = job.lease, job.backend == backend, !job.state.isFinal else { return nil }
            return (id, lease)
        }
    }

    /// Every job the core still knows (finished ones within the retention bounds), by id.
    public var jobIDs: [JobID] { jobs.ids }

    /// The smallest id at or above `id` of a job the core still knows, if any: walks the jobs in
    /// id order a step at a time (a snapshot sent in chunks) without listing them all.
    public func firstJobID(atLeast id: JobID) -> JobID? { jobs.firstID(atLeast: id) }

    /// The smallest id from `next` through `last` of a job the core still knows that `skip`
    /// does not pass by (it gets the job's end time, nil while it has not ended), looking at
    /// `steps` jobs at most (each one looked at counts down one). `next` moves past the jobs
    /// looked at: past `last` once the stretch is done. One call for a whole stretch: a call
    /// into the core from the daemon may copy the core's fields (a retain each), which made a
    /// walk over 100,000 ended jobs cost a microsecond per job.
    public func nextJobID(
        from next: inout JobID, through last: JobID, steps: inout Int, skip: (JobID, CoreInstant?) -> Bool
    ) -> JobID? {
        while steps > 0 {
            guard let job = jobs.firstID(atLeast: next), job <= last else {
                next = JobID(last.rawValue &+ 1)
                return nil
            }
            steps -= 1
            next = JobID(job.rawValue + 1)
            if !skip(job, jobs.ended(job)?.at) { return job }
        }
        return nil
    }

    /// The largest id given to a job so far that the core may still know (nil when it knows none):
    /// every job submitted later has a larger id.
    public var lastJobID: JobID? { jobs.lastID }
}
