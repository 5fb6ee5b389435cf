import MusterProtocol

// Backend lifecycle: registration, announcements, links, draining, removal, and the indexes that
// keep routing decisions away from full scans.
extension Coordinator {
    /// A backend the coordinator waits for: `configured` when the configuration names it (the
    /// coordinator dials it; never forgotten), else one known from the store that had its link up
    /// when the coordinator stopped (forgotten if it stays away for `CorePolicy.forgetDownAfter`).
    mutating func expect(_ id: BackendID, name: String, configured: Bool) {
        if let b = backends.get(id) {
            // Restored as down, and configured: the coordinator dials it now, so the gate waits
            // for it as for every configured backend. It counts as new when it registers.
            if configured { backends[id].configured = true }
            guard b.link == .down, b.jobs.isEmpty, b.snapshot == nil else { return }
            backends[id].link = .expected
            backends[id].incarnation = nil
            backends[id].registeredAt = now
            scheduleGateWindow(id)
            refresh(id, reindex: true)
            return
        }
        var b = Backend(
            id: id, name: name, priority: 0, link: .expected, incarnation: nil, helloSlots: 1, registeredAt: now)
        b.configured = configured
        backends.put(b)
        if !configured { scheduleForget(id) }
        scheduleGateWindow(id)
        refresh(id, reindex: true)
    }

    mutating func register(_ r: BackendRegistration) {
        var b =
            backends.get(r.id)
            ?? Backend(
                id: r.id, name: r.name, priority: r.priority, link: .expected, incarnation: nil,
                helloSlots: r.slots, registeredAt: now)
        if let known = b.incarnation, r.incarnation < known { return }  // a dead process's late hello
        // `welcome.bindings` lists no backup run: the backend stops it as stale (Protocol 6.6).
        stopBackup(on: r.id, revoke: false)
        b.name = r.name
        b.priority = r.priority
        b.helloSlots = r.slots
        b.configuredSpeed = r.speed.flatMap { $0.isFinite && $0 > 0 ? $0 : nil }
        b.configuredLoadSeconds = r.modelLoadSeconds.flatMap { $0.isFinite && $0 >= 0 ? $0 : nil }
        b.loadPrior = b.configuredLoadSeconds ?? b.snapshot?.modelLoadSeconds
        b.lastSeen = now
        if let known = b.incarnation, r.incarnation == known {
            let wasUp = b.link == .up
            backends.put(b)
            if wasUp {
                // A new link of the same process replaced one that still looked up: as for any
                // link kept, `sync` follows the welcome (Protocol 6.3), since the old link may
                // have lost an announcement.
                out.append(.sync(backend: r.id, held: b.snapshot?.version))
                scheduleSync(r.id)
                refresh(r.id, reindex: true)
            } else {
                linkRestored(r.id)
            }
            claim(r.holding, on: r.id)
            reclaimArrived(r.id)
            return
        }
        let restarted = b.incarnation != nil
        b.incarnation = r.incarnation
        // Draining is one-way for a process: a new one (an agent drained and started again, under
        // its name) comes back by linking (Protocol 7.3).
        b.drainRequested = false
        if policy.persistChanges {
            out.append(.persist(.backendRegistered(id: r.id, name: r.name, incarnation: r.incarnation)))
        }
        b.link = .up
        b.suspectUntil = nil
        b.downSince = nil
        b.registeredAt = now
        b.firstAnnouncedAt = nil
        b.propagated = false
        b.loadRequested = [:]
        // The announcement of this incarnation may have overtaken the hello.
        if let entry = registry.entries[r.id], entry.version.incarnation == r.incarnation {
            b.snapshot = entry
            b.firstAnnouncedAt = now
        } else {
            b.snapshot = nil
        }
        backends.put(b)
        if restarted { requeueAll(on: r.id, .backendRestarted) }
        scheduleGateWindow(r.id)
        scheduleSync(r.id)
        refresh(r.id, reindex: true)
        requestPinned(r.id)
        // Known from the store without an incarnation (it held no stored binding): it may still
        // run a job whose binding the store never got.
        if !restarted { claim(r.holding, on: r.id) }
        reclaimArrived(r.id)
    }

    /// A backend the pause after a restore waits for registered again or went down: the pause
    /// ends when it was the last one.
    mutating func reclaimArrived(_ id: BackendID) {
        guard !reclaimAwaited.isEmpty, reclaimAwaited.remove(id) != nil else { return }
        readinessDirty = true
        if reclaimAwaited.isEmpty { endReclaim() }
    }

    /// Binding resumes: every free backend looks at the queue again.
    mutating func endReclaim() {
        reclaimUntil = .zero
        reclaimAwaited = []
        readinessDirty = true
        routingEpoch &+= 1
        for id in free { dirty.insert(id) }
    }

    /// After a restart, binds to `backend` the queued jobs it says it holds from before: those
    /// whose binding was sent but never stored (Protocol/README.md 6.5), so the work it has done
    /// is kept. A claim counts only for a lease issued before the restore (`claimBelow`; ones
    /// issued since are known and larger) and the attempt right after the job's last stored one
    /// (an older attempt was requeued or revoked, and the store knew it); the job must be queued
    /// or held by the gate, so it never takes a job bound elsewhere or ended. Each claimed job is
    /// `bound` (after `released`, `claimed`, when the gate held it) without an `assign`.
    mutating func claim(_ held: [Wire.HeldJob], on backend: BackendID) {
        guard claimBelow > 0, !held.isEmpty, backends.get(backend)?.link == .up else { return }
        for h in held.sorted(by: { $0.job < $1.job }) where h.lease.rawValue < claimBelow {
            guard let j = jobs.get(h.job), j.state == .queued || j.state == .gated, j.attempt + 1 == h.attempt else {
                continue
            }
            dequeued(h.job, popped: false)  // (a held job: out of the gate, its class woken)
            if j.state == .gated { leaveGate(h.job, .claimed, backend: backend) }
            bind(h.job, to: backend, fromQueue: false, claimed: h.lease)
            counters.claimed += 1
            out.append(.observe(.claimed(h.job, backend)))
        }
    }

    mutating func announce(_ id: BackendID, _ snapshot: CapabilitySnapshot) {
        guard var b = backends.get(id) else {
            // Kept in the registry (it is a lattice); routing starts when the backend registers.
            _ = registry.apply(snapshot, from: id)
            return
        }
        b.lastSeen = now
        if let known = b.incarnation, snapshot.version.incarnation < known {
            // From a process that has since restarted: never applied, whatever the registry holds.
            backends.put(b)
            counters.announcementsStale += 1
            out.append(.observe(.staleAnnouncement(id, snapshot.version)))
            out.append(.ackCapabilities(backend: id, version: b.snapshot?.version ?? registry.entries[id]?.version ?? snapshot.version, applied: false))
            return
        }
        if let held = registry.entries[id], held.version == snapshot.version {
            // A version is applied once; other content under it is a protocol violation, and the
            // held snapshot stays (Protocol/README.md 6.3 rule 3).
            backends.put(b)
            counters.announcementsStale += 1
            if held != snapshot {
                counters.announcementConflicts += 1
                out.append(.observe(.announcementConflict(id, snapshot.version)))
            } else {
                out.append(.observe(.staleAnnouncement(id, snapshot.version)))
            }
            out.append(.ackCapabilities(backend: id, version: held.version, applied: false))
            return
        }
        let outcome = registry.apply(snapshot, from: id)
        // One ack per announcement, with the verdict (Protocol/README.md 6.3).
        guard case .applied(let previous) = outcome else {
            backends.put(b)
            counters.announcementsStale += 1
            out.append(.observe(.staleAnnouncement(id, snapshot.version)))
            out.append(.ackCapabilities(backend: id, version: registry.entries[id]!.version, applied: false))
            return
        }
        out.append(.ackCapabilities(backend: id, version: snapshot.version, applied: true))
        announcing = id
        counters.announcementsApplied += 1
        out.append(.observe(.announcementApplied(id, snapshot.version)))
        if let previous, previous.incarnation == snapshot.version.incarnation,
            snapshot.version.revision > previous.revision + 1
        {
            // Announcements were lost on the way: ask for the current state right away.
            out.append(.sync(backend: id, held: snapshot.version))
        }
        let restarted = b.incarnation.map { snapshot.version.incarnation > $0 } ?? false
        if b.incarnation == nil || restarted {
            b.incarnation = snapshot.version.incarnation
            if policy.persistChanges {
                out.append(.persist(.backendRegistered(id: id, name: b.name, incarnation: snapshot.version.incarnation)))
            }
        }
        if restarted {
            b.registeredAt = now
            b.firstAnnouncedAt = nil
            b.propagated = false
            b.loadRequested = [:]
        }
        if b.firstAnnouncedAt == nil { b.firstAnnouncedAt = now }
        if snapshot.state == .ready && !b.propagated {
            if policy.routing == .expectedCompletion && policy.gateSettle > .zero && gateClosed && !held.isEmpty
                && settleUntil <= now
            {
                // Held jobs are placed once backends announcing at nearly this moment are known
                // too. Only a backend's first `ready` (per incarnation) pauses, and a `ready`
                // during a pause does not extend it: binding resumes at least every `gateSettle`,
                // however often backends announce or restart.
                settleUntil = now + policy.gateSettle
                schedule(settleUntil, .settled)
            }
            b.propagated = true
            out.append(.observe(.propagation(id, now - b.registeredAt)))
        }
        for model in snapshot.modelsLoaded {
            if let requested = modelIDs[model], let asked = b.loadRequested.removeValue(forKey: requested)?.at {
                b.modelReadyAt[model] = now
                // A backend left idle may now take (or steal) a job that waited for this model.
                routingEpoch &+= 1
                // Its jobs waiting for the load can work from now on, also when the load took
                // longer than expected (their work did not start at the expected end: progress
                // is projected from now).
                let landed = modelID(model)
                for (k, job) in b.jobs.enumerated() where b.jobReadyAt[k] > 0 && b.jobReadyAt[k] >= asked.seconds && b.jobReadyAt[k] != now.seconds {
                    if let j = jobs.index(job), classes[jobs[slot: j].classIndex].modelID == landed {
                        b.jobReadyAt[k] = now.seconds
                    }
                }
                b.loadSeconds = Estimates.blend(b.loadSeconds, (now - asked).secondsValue, policy.estimateSmoothing)
                let m = Int(landed)
                estimates.loadSeconds[m] = Estimates.blend(
                    estimates.loadSeconds[m], (now - asked).secondsValue, policy.estimateSmoothing)
            }
        }
        b.snapshot = snapshot
        b.loadPrior = b.configuredLoadSeconds ?? snapshot.modelLoadSeconds
        backends.put(b)
        announceKindSeconds(id, snapshot.jobSeconds)
        if restarted {
            requeueAll(on: id, .backendRestarted)
            // A new process (a ComfyUI that restarted or went away) is waited for again from
            // now, and no longer than the window: without the timer a backend that announces
            // nothing more would keep the gate closed for good.
            scheduleGateWindow(id)
        }
        refresh(id, reindex: true)
        if snapshot.state == .ready { requestPinned(id) }
    }

    mutating func linkLost(_ id: BackendID) {
        guard var b = backends.get(id), b.link == .up else { return }
        b.link = .suspect
        b.suspectUntil = now + policy.suspectGrace
        backends.put(b)
        schedule(b.suspectUntil!, .suspect(id))
        // Jobs it was told to stop: no confirmation can come over a dead link, and a backend that
        // reconnects finds them gone from `welcome.bindings` and stops them as stale.
        for job in b.jobs where jobs[job].cancelRequestedAt != nil { settleCancel(job, .linkLost) }
        refresh(id, reindex: true)
    }

    /// The backend said `goodbye` and its link closed: down without the suspect grace, its
    /// bound jobs requeued now (a drained backend has none left).
    mutating func backendLeft(_ id: BackendID) {
        guard let b = backends.get(id), b.link == .up || b.link == .suspect else { return }
        for job in b.jobs where jobs[job].cancelRequestedAt != nil { settleCancel(job, .linkLost) }
        markDown(id, saidGoodbye: true)
    }

    mutating func linkRestored(_ id: BackendID) {
        guard var b = backends.get(id), b.link == .suspect || b.link == .down else { return }
        if b.link == .down, policy.persistChanges, let incarnation = b.incarnation {
            // Up again under the same incarnation: stored as up before anything is bound to it.
            out.append(.persist(.backendRegistered(id: id, name: b.name, incarnation: incarnation)))
        }
        b.link = .up
        b.suspectUntil = nil
        b.downSince = nil
        b.lastSeen = now
        backends.put(b)
        // Whatever changed while the link was down comes back with the answer.
        out.append(.sync(backend: id, held: b.snapshot?.version))
        scheduleSync(id)
        refresh(id, reindex: true)
    }

    mutating func suspectExpired(_ id: BackendID) {
        guard let b = backends.get(id), b.link == .suspect, let until = b.suspectUntil, until <= now else { return }
        markDown(id)
    }

    /// The backend is down: no timers left for it, its bound jobs requeued, and stored as down
    /// after them (a restart lists it down and does not hold the gate for it).
    private mutating func markDown(_ id: BackendID, saidGoodbye: Bool = false) {
        backends[id].lostWhileUnannounced = !saidGoodbye && backends[id].unannounced
        backends[id].link = .down
        backends[id].suspectUntil = nil
        backends[id].nextSync = nil
        requeueAll(on: id, .linkLost, saidGoodbye: saidGoodbye)
        if policy.persistChanges { out.append(.persist(.backendDown(id: id, at: now))) }
        reclaimArrived(id)
        scheduleForget(id)
        refresh(id, reindex: true)
    }

    /// Down (or expected and not connected) from now: forgotten after `CorePolicy.forgetDownAfter`
    /// unless it links again before. Neither a configured backend nor a local one.
    mutating func scheduleForget(_ id: BackendID) {
        backends[id].downSince = now
        armForget(id, at: now + policy.forgetDownAfter)
    }

    /// At most one pending `.forget` per backend: a backend that flaps does not pile up timers
    /// for the whole window; the one pending looks again when it fires (`forgetDue`).
    private mutating func armForget(_ id: BackendID, at deadline: CoreInstant) {
        guard policy.forgetDownAfter > .zero, !id.isLocal, !backends[id].configured, !backends[id].forgetArmed
        else { return }
        backends[id].forgetArmed = true
        schedule(deadline, .forget(id))
    }

    /// A backend down for `CorePolicy.forgetDownAfter`: gone from the listing, the indexes and
    /// the registry; the store deletes it, and the shell frees its name (`forgetBackend`). A
    /// backend of that name that links later is a new one, with a new id.
    mutating func forgetDue(_ id: BackendID) {
        guard let b = backends.get(id) else { return }
        backends[id].forgetArmed = false
        guard b.link == .down || b.link == .expected, b.jobs.isEmpty, !b.configured, let since = b.downSince
        else { return }  // up (or suspect) again: its next fall arms a new timer
        guard since + policy.forgetDownAfter <= now else {
            // It came back and fell again since this timer was armed: wait for the later fall's end.
            armForget(id, at: since + policy.forgetDownAfter)
            return
        }
        remove(id)
        registry.forget(id)
        if policy.persistChanges { out.append(.persist(.backendForgotten(id: id))) }
        out.append(.forgetBackend(id, name: b.name))
    }

    /// A backend the store last knew as down: listed down, with the incarnation it had, so a
    /// reconnect under that incarnation brings it up and a new one counts as a restart. No gate
    /// window: it held no announcement back before the restart either.
    mutating func restoreDown(_ stored: StoredBackend) {
        guard !backends.contains(stored.id) else { return }
        backends.put(
            Backend(
                id: stored.id, name: stored.name, priority: 0, link: .down, incarnation: stored.incarnation,
                helloSlots: 1, registeredAt: now))
        if let fell = stored.downAt, fell <= now {
            // Forgotten a window after its fall, not after this restart.
            backends[stored.id].downSince = fell
            armForget(stored.id, at: fell + policy.forgetDownAfter)
        } else {
            scheduleForget(stored.id)
        }
        refresh(stored.id, reindex: true)
    }

    mutating func drain(_ id: BackendID) {
        guard backends.contains(id) else { return }
        backends[id].drainRequested = true
        stopBackup(on: id, revoke: true)
        refresh(id, reindex: true)
    }

    mutating func remove(_ id: BackendID) {
        guard backends.contains(id) else { return }
        requeueAll(on: id, .backendRemoved)
        backends[id].link = .down
        backends[id].drainRequested = true
        refresh(id, reindex: true)
        dropUnknown(id)
        reclaimArrived(id)  // removed from the configuration during the pause after a restore
        free.remove(id)
        stealable.remove(id)
        loadingModels.remove(id)
        if let b = backends.get(id), b.inFleetBySpeed { fleetBySpeed.remove(id, speed: b.speed) }
        dirty.remove(id)
        backends.remove(id)
    }

    /// A backend's `job_seconds`. The first backend to announce a kind sets the kind's
    /// announced duration at speed 1.0 (its seconds times its speed: configured, else announced,
    /// else 1.0), which later announcements do not move; a backend without a configured or
    /// announced speed gets the speed its durations show against those (`durationSpeed`, the
    /// mean over its kinds), so backends that only announce durations compare as they said.
    mutating func announceKindSeconds(_ id: BackendID, _ list: [KindSeconds]) {
        guard let bi = backends.index(id) else { return }
        let explicit = backends.records[bi].configuredSpeed ?? backends.records[bi].snapshot?.speed
        var ratios = 0.0
        let list = list.filter { $0.seconds.isFinite && $0.seconds > 0 }
        for entry in list {
            let k = estimates.kindIndex(entry.kind)
            if estimates.announcedKind[k] == nil {
                estimates.announcedKind[k] = entry.seconds * (explicit ?? 1)
                routingEpoch &+= 1
                shownAt = nextSeq
            }
            ratios += estimates.announcedKind[k]! / entry.seconds
        }
        let derived = explicit == nil && !list.isEmpty ? ratios / Double(list.count) : nil
        if backends.records[bi].durationSpeed != derived {
            backends[id].durationSpeed = derived
            recountSpeed(bi)
        }
    }

    mutating func requeueAll(on id: BackendID, _ cause: RequeueCause, saidGoodbye: Bool = false) {
        guard let b = backends.get(id) else { return }
        stopBackup(on: id, revoke: false)  // its leases died with the link or incarnation
        let error: JobFailure
        switch cause {
        case .backendRestarted:
            error = JobFailure(
                code: .backendRestarted,
                message: "backend \(id) (\(b.name)) restarted with a new incarnation: its leases died")
        case .backendRemoved:
            error = JobFailure(code: .backendLost, message: "backend \(id) (\(b.name)) was removed")
        case .linkLost where saidGoodbye:
            error = JobFailure(code: .backendLost, message: "backend \(id) (\(b.name)) said goodbye and its link closed")
        case .linkLost, .backendFailed:
            error = JobFailure(
                code: .backendLost,
                message: "backend \(id) (\(b.name)): link down for longer than the \(policy.suspectGrace) grace")
        }
        for job in b.jobs {
            if jobs[job].cancelRequestedAt != nil {
                settleCancel(job, .linkLost)  // canceled by a client: never run again
                continue
            }
            if adoptBackup(job, cause, error: error, from: id) { continue }
            unbind(job, outcome: .requeued, error: error)
            requeueOrFail(job, cause, error: error, from: id)
        }
    }

    mutating func requestPinned(_ id: BackendID, only: String? = nil) {
        guard !pinnedModels.isEmpty, let b = backends.get(id), b.link == .up, b.announcedReady else { return }
        for model in pinnedModels.sorted()
        where (only == nil || model == only) && b.available.contains(model) && !b.loaded.contains(model) {
            requestLoad(id, model, force: false, .client)
        }
    }

    mutating func requestLoad(_ id: BackendID, _ model: String, force: Bool, _ reason: LoadReason, behind: Bool = false) {
        guard let i = backends.index(id) else { return }
        let m = modelID(model)
        if !force && (backends.records[i].loaded.contains(model) || backends.records[i].loadRequested[m] != nil) {
            return
        }
        backends[id].loadRequested[m] = LoadRequest(at: now, reason: reason, behind: behind)
        counters.modelLoadsRequested += 1
        out.append(.loadModel(backend: id, model: model))
        out.append(.observe(.modelLoadRequested(id, model: model, reason)))
    }

    /// A load the backend reported failed is no longer under way: routing stops waiting for it,
    /// and the model may be requested there again.
    mutating func loadFailed(_ id: BackendID, _ model: String) {
        guard let m = modelIDs[model], let i = backends.index(id), backends.records[i].loadRequested[m] != nil else { return }
        backends[id].loadRequested[m] = nil
        routingEpoch &+= 1
        refreshLoad(id)
    }

    mutating func scheduleGateWindow(_ id: BackendID) {
        guard policy.gateWindow > .zero, let b = backends.get(id) else { return }
        schedule(b.registeredAt + policy.gateWindow, .gateWindow(id))
    }

    /// Sync deadlines are rounded up to a whole `syncGranule` (at most 1 s, at most a tenth of
    /// the interval), so that a large fleet's periodic syncs go out together, a few wakeups a
    /// second, instead of each backend waking the loop at its own instant. With 10,000 links,
    /// every wakeup costs the event loop a pass over all of them.
    mutating func scheduleSync(_ id: BackendID) {
        guard policy.syncInterval > .zero else { return }
        let granule = UInt64(max(1, min(1_000_000_000, policy.syncInterval.nanoseconds / 10)))
        let due = (now + policy.syncInterval).nanoseconds
        let at = CoreInstant(nanoseconds: (due + granule - 1) / granule * granule)
        backends[id].nextSync = at
        schedule(at, .sync(id))
    }

    mutating func syncDue(_ id: BackendID, _ at: CoreInstant) {
        guard let b = backends.get(id), b.nextSync == at, b.link == .up else { return }
        out.append(.sync(backend: id, held: b.snapshot?.version))
        scheduleSync(id)
    }

    // MARK: - Indexes

    /// Recomputes everything derived from one backend's record. `reindex` when its capabilities,
    /// link or draining changed (class membership); otherwise only load-derived sets change.
    mutating func refresh(_ id: BackendID, reindex: Bool) {
        guard var b = backends.get(id) else { return }
        if reindex {
            let (features, available, nodes) = (b.features, b.available, b.nodes)
            b.features = Set(b.snapshot?.features ?? [])
            b.available = Set(b.snapshot?.modelsAvailable ?? [])
            b.loaded = Set(b.snapshot?.modelsLoaded ?? [])
            b.nodes = Set(b.snapshot?.nodes ?? [])
            b.available.formUnion(b.loaded)
            b.loadedIDs = b.loaded.map { modelID($0) }.sorted()
            b.cachedSlots = max(1, b.snapshot?.slots ?? b.helloSlots)
            b.takesWork = b.link == .up && b.announcedReady && !b.drainRequested
            // Membership changes only with what decides it; a model load landing (the common
            // announcement) keeps it, and then no class is looked at.
            if b.capable != b.indexedCapable || b.features != features || b.available != available || b.nodes != nodes {
                var member: [Int] = []
                if b.capable {
                    // Through the buffer: `classes[c]` as an argument copied each class (its
                    // queue, sets and arrays retained and released), the bulk of an announcement.
                    classes.withUnsafeBufferPointer { all in
                        for c in all.indices where Self.matches(b, all[c]) { member.append(c) }
                    }
                }
                let old = Set(b.classes)
                let new = Set(member)
                for c in old.subtracting(new) {
                    classes[c].capable.remove(id)
                    classes[c].bySpeed.remove(id, band: b.band)
                    classesToCheck.insert(c)
                }
                for c in new.subtracting(old) {
                    classes[c].capable.insert(id)
                    classes[c].bySpeed.insert(id, band: b.band)
                    classesToCheck.insert(c)
                }
                b.classes = member
                b.indexedCapable = b.capable
            }
            let member = b.classes
            // Capable backends that have each class's model loaded (the affinity rule must never
            // refuse the only way a job can run).
            let loadedNow = member.filter { classes[$0].modelID >= 0 && b.loadedIDs.contains(classes[$0].modelID) }
            if loadedNow != b.loadedClasses {
                for c in b.loadedClasses { classes[c].loadedCapable -= 1 }
                for c in loadedNow { classes[c].loadedCapable += 1 }
                b.loadedClasses = loadedNow
            }
            // Ready count and per-model totals (for the affinity rule).
            let counts = b.link == .up && b.announcedReady && !b.drainRequested
            let models = counts ? b.loadedIDs : []
            if b.counted != counts || b.countedModels != models {
                if b.counted {
                    readyCount -= 1
                    for m in b.countedModels {
                        modelLoad[Int(m)].slots -= b.countedSlots
                        modelLoad[Int(m)].inFlight -= b.jobs.count
                    }
                }
                if counts {
                    readyCount += 1
                    for m in models {
                        modelLoad[Int(m)].slots += b.slots
                        modelLoad[Int(m)].inFlight += b.jobs.count
                    }
                }
                b.counted = counts
                b.countedModels = models
                b.countedSlots = b.slots
                readinessDirty = true
            }
        }
        backends.put(b)
        if reindex, let bi = backends.index(id) { recountSpeed(bi) }
        refreshUnknown(id)
        refreshLoad(id)
    }

    /// Takes a backend out of the set the gate waits for, and out of `unknownSorted`; false when
    /// it was not in it.
    @discardableResult
    mutating func dropUnknown(_ id: BackendID) -> Bool {
        guard unknown.remove(id) != nil else { return false }
        if let i = unknownSorted.firstIndex(of: id) { unknownSorted.remove(at: i) }
        readinessDirty = true
        return true
    }

    /// Gate membership: unannounced, window still open, and its link up, suspect, or lost
    /// without `goodbye` (a backend that crashed while loading may be restarting; one that said
    /// goodbye is not coming back).
    mutating func refreshUnknown(_ id: BackendID) {
        guard let i = backends.index(id) else { return }
        let unannounced = backends.records[i].unannounced
        let left = backends.records[i].link == .down && !backends.records[i].lostWhileUnannounced
        let windowOpen = now < backends.records[i].registeredAt + policy.gateWindow
        let isUnknown = unannounced && !left && policy.gateWindow > .zero && windowOpen
        if isUnknown {
            if unknown.insert(id).inserted {
                unknownSorted.insert(id, at: unknownSorted.firstIndex { $0 > id } ?? unknownSorted.endIndex)
                readinessDirty = true
            }
        } else if dropUnknown(id) {
            lastGateOpenCause = !unannounced ? .announced : windowOpen && left ? .backendLeft : .windowElapsed
            if !unannounced { gateOpener = id }
        }
    }

    /// Free and stealable membership after a change of load or routability.
    mutating func refreshLoad(_ id: BackendID) {
        guard let i = backends.index(id) else { return }
        let inFlight = backends.records[i].jobs.count, slots = backends.records[i].slots
        let running = backends.records[i].running
        let isFree =
            backends.records[i].takesWork && backends.records[i].inhibitedUntil <= now
            && inFlight < slots + policy.overqueue
        // The flags mirror set membership so that unchanged states cost no hashing.
        if isFree {
            if !backends.records[i].inFree {
                backends[id].inFree = true
                free.insert(id)
            }
            dirty.insert(id)
        } else if backends.records[i].inFree {
            backends[id].inFree = false
            free.remove(id)
        }
        let isStealable = running >= slots && inFlight > running
        if isStealable != backends.records[i].inStealable {
            backends[id].inStealable = isStealable
            if isStealable { stealable.insert(id) } else { stealable.remove(id) }
        }
    }

    static func matches(_ b: borrowing Backend, _ c: borrowing JobClass) -> Bool {
        matches(features: b.features, available: b.available, nodes: b.nodes, needs: c.needs, model: c.model, nodeClasses: c.nodes)
    }

    /// Whether a backend offering `features`, `available` models and `nodes` can run a class
    /// that needs `needs`, `model` and `nodeClasses`.
    static func matches(
        features: borrowing Set<String>, available: borrowing Set<String>, nodes: borrowing Set<String>,
        needs: [String], model: String?, nodeClasses: [String]
    ) -> Bool {
        if let model, !available.contains(model) { return false }
        for f in needs where !features.contains(f) { return false }
        for n in nodeClasses where !nodes.contains(n) { return false }
        return true
    }

    mutating func adjustModelInFlight(_ id: BackendID, _ delta: Int) {
        guard let i = backends.index(id), backends.records[i].counted else { return }
        for m in backends.records[i].countedModels { modelLoad[Int(m)].inFlight += delta }
    }

    /// Why a backend cannot run a job of class `c`, or nil if it could.
    func refusal(_ b: Backend, _ c: JobClass) -> String? { refusalDetail(b, c)?.reason }

    /// Why a backend cannot run a job of class `c`, in words and in the wire's tokens.
    func refusalDetail(_ b: Backend, _ c: JobClass) -> BackendRefusal? {
        func refuse(_ reason: String, _ tokens: [String], missing: [String] = [], nodes: [String] = []) -> BackendRefusal {
            BackendRefusal(
                backend: b.id, name: b.name, reason: reason, reasons: tokens, missingFeatures: missing, missingNodes: nodes)
        }
        switch b.link {
        case .expected: return refuse("not connected since the coordinator started", ["not_connected"])
        case .down: return refuse("link down", ["link_down"])
        case .suspect: return refuse("link suspect", ["link_suspect"])
        case .up: break
        }
        guard let snapshot = b.snapshot else { return refuse("has not announced", ["not_announced"]) }
        if snapshot.state != .ready { return refuse("announced \(snapshot.state.rawValue)", [snapshot.state.rawValue]) }
        if b.drainRequested { return refuse("draining", ["draining"]) }
        let missing = c.needs.filter { !b.features.contains($0) }
        var parts: [String] = []
        var tokens: [String] = []
        if !missing.isEmpty {
            parts.append("missing features \(missing.joined(separator: ","))")
            tokens.append("missing_features")
        }
        if let model = c.model, !b.available.contains(model) {
            parts.append("missing model \(model)")
            tokens.append("missing_model")
        }
        let missingNodes = c.nodes.filter { !b.nodes.contains($0) }
        if !missingNodes.isEmpty {
            parts.append("missing node classes \(missingNodes.joined(separator: ", "))")
            tokens.append("missing_nodes")
        }
        return parts.isEmpty
            ? nil : refuse(parts.joined(separator: "; "), tokens, missing: missing, nodes: missingNodes)
    }
}
