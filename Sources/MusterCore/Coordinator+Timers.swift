// The single timer: the shell arms it for `nextDeadline` and feeds `.tick`.
extension Coordinator {
    mutating func fireTimers() {
        while let t = timers.min, t.at <= now {
            timers.removeMin()
            switch t.kind {
            case .gateWindow(let id): refreshUnknown(id)
            case .suspect(let id): suspectExpired(id)
            case .forget(let id): forgetDue(id)
            case .sync(let id): syncDue(id, t.at)
            case .inhibit(let id): refreshLoad(id)
            case .retention: retentionDue()
            case .routeWait(let c): routeWaitDue(c, t.at)
            case .cancelGrace(let job): cancelGraceDue(job)
            case .overrun(let job, let lease): overrunDue(job, lease)
            case .relook(let id):
                guard backends.get(id)?.relookAt == t.at else { break }  // replaced by a sooner one
                backends[id].relookAt = nil
                backends[id].relookDelay = backends[id].relookArmed
                if free.contains(id) {
                    routingEpoch &+= 1
                    dirty.insert(id)
                }
            case .reclaimed:
                guard t.at == reclaimUntil else { break }  // ended early: every backend came back
                endReclaim()
            case .settled:
                guard t.at == settleUntil else { break }  // a later pause replaced it
                // Every free backend looks again, whether or not something changed meanwhile.
                routingEpoch &+= 1
                for id in free { dirty.insert(id) }
            }
        }
    }
}
