import Logging
import MusterCore
import MusterProtocol

// Access control (README "Security"): what each principal may do, checked where a request is
// handled, with the same answer on the client link (an `error`, the link stays up) and over HTTP
// (403 `forbidden`).
extension Daemon {
    /// A `forbidden` error saying who was refused what.
    func forbidden(_ p: Principal, _ what: String) -> RequestError {
        let role = p.role.map { "a \($0.rawValue) credential" } ?? "this credential"
        return RequestError(.forbidden, "credential \(p.name) is \(role) and may not \(what)")
    }

    /// Throws `forbidden` unless `allowed`.
    func require(_ allowed: Bool, _ p: Principal, _ what: String) throws(RequestError) {
        if !allowed { throw forbidden(p, what) }
    }

    /// The owner of the batch a job belongs to, or `unknown_job`.
    func ownerOf(job: JobID) throws(RequestError) -> String {
        guard let record = core.job(job) else {
            throw notFound(.unknownJob, "no job \(job) (finished jobs are kept only for a while)")
        }
        return core.batch(record.batch)?.owner ?? record.spec.owner
    }

    /// The owner of a batch, or `unknown_batch`.
    func ownerOf(batch: BatchID) throws(RequestError) -> String {
        guard let record = core.batch(batch) else { throw notFound(.unknownBatch, "no batch \(batch)") }
        return record.owner
    }

    /// Refuses a role that may cancel nothing at all before the record is looked for (Protocol
    /// 8: only a check that needs the record comes after 404).
    func requireMayCancel(_ p: Principal) throws(RequestError) {
        if p.ownerScope == nil, !p.canOperate { throw forbidden(p, "cancel jobs") }
    }

    /// Refuses looking at (or canceling) another owner's batch.
    func requireAccess(_ p: Principal, owner: String, cancel: Bool, _ what: @autoclosure () -> String) throws(RequestError) {
        guard p.may(access: owner, cancel: cancel) else {
            if let scope = p.ownerScope {
                throw RequestError(
                    .forbidden, "credential \(p.name) may \(cancel ? "cancel" : "see") only batches of owner \(scope); \(what()) is another owner's")
            }
            throw forbidden(p, cancel ? "cancel jobs" : "see jobs")
        }
    }

    /// One line of the audit log (`muster.audit`): what an operator action did and who did it
    /// (the credential's name and role; never a token).
    func audited(_ message: Logger.Message, action: String, by p: Principal, _ metadata: Logger.Metadata = [:]) {
        var m = metadata
        m["audit.action"] = "\(action)"
        m["audit.by"] = "\(p.name)"
        m["audit.role"] = "\(p.wireRole)"
        audit.notice(message, metadata: m)
    }
}
