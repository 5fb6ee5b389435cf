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
    public var jobIDs: [JobID] { jobs.all.map(\.id).sorted() }
}
