import DequeModule
import Foundation
import Logging
import MusterCore
import MusterProtocol
import MusterTransport

/// The shell between a `WorkerEngine` with the external runner and one ComfyUI server: it posts
/// the engine's jobs to `/prompt`, follows them on `/ws`, reads results from `/history`, deletes
/// or interrupts prompts the coordinator takes back, and tells the engine what the server can do
/// (`/object_info`, `/system_stats`). Everything runs on the transport's loop.
package final class ComfyUIRunner: @unchecked Sendable {
    // @unchecked Sendable: every stored property is read and written only on the transport's loop
    // thread (HTTP completions, WebSocket callbacks and timers all run there); entry points check
    // it with `precondition(onLoop)`.

    /// One job handed to the server.
    struct Prompt {
        var job: JobID
        var lease: Lease
        /// nil while the POST is in flight.
        var id: String?
        var progress: ComfyUIMapping.Progress
        /// Node id -> class, for progress messages.
        var classes: [String: String]
        /// The loader models the workflow names (known loaded after it succeeds).
        var models: [String]
        /// The coordinator took the job back while the POST was in flight.
        var stopRequested = false
        /// The coordinator canceled the job: it is being deleted or interrupted, and the engine is
        /// told (`externalStopped`) once the server shows it no longer queues or runs it.
        var canceling = false
        /// Set when this prompt loads a model for `load_model` rather than running a job.
        var loadsModel: String?
        /// Wall-clock ms when the prompt was posted (in the result, for latency measurements); nil
        /// for a prompt taken back after a coordinator restart.
        var postedMs: UInt64?
    }

    let settings: ComfyUISettings
    let transport: Transport
    let logger: Logger
    let name: String
    weak var driver: WorkerDriver?
    /// One ComfyUI client id per link: messages about our prompts come only to our socket. A
    /// local backend of the coordinator derives it from its name and incarnation
    /// (`clientID(name:incarnation:)`), so that after a restart of the coordinator under the
    /// same incarnation its prompts are found again and their messages reach the new socket.
    let clientID: String
    private var ws: ConnectionID?
    private var wsOpen = false
    /// The link's last attempt failed or it closed: it waits out the transport's backoff, and a
    /// probe that finds HTTP answering may dial at once. While an attempt is in flight it is left
    /// alone: closing it and dialling again with the same client id can leave the new socket
    /// without ComfyUI's client-id mapping (the old socket's end removes it), so no prompt
    /// messages would reach it.
    private var wsBackingOff = false
    private var serverUp = false
    private var prompts: [JobID: Prompt] = [:]
    private var byPromptID: [String: JobID] = [:]
    /// Model loads use job ids of their own, above every real job id.
    private var nextLoadKey: UInt64 = .max
    /// The last prompt of this runner that ended on the server (so the server keeps its history;
    /// a pending prompt deleted from the queue leaves none): a server that knows nothing of it
    /// after a reconnect restarted.
    private var lastPromptID: String?
    private var probeTimer: TimerID?
    private var lostTimer: TimerID?
    /// One telemetry refresh pending at a time.
    private var telemetryTimer: TimerID?
    /// Prompts in flight when /ws was reopened, polled by id until they end: ComfyUI may route
    /// their messages to the old socket (it forgets a client id when that socket's close is seen
    /// after the new socket registered it), so their end may never arrive on /ws.
    private var followed: Set<String> = []
    private var followTimer: TimerID?
    /// When /ws last said anything, and the timer that looks prompts up by id when it has been
    /// quiet for `quietLimit` while prompts are in flight: a socket that stays open but stopped
    /// delivering (seen once in CI: a prompt's start and end never came) must not leave a job
    /// bound forever.
    private var lastWsMessage = ContinuousClock.now
    private var quietTimer: TimerID?
    private var quietLogged = false
    private static let quietLimit: Duration = .seconds(5)
    private var stopped = false
    private var probing = false
    /// What the server said last, to announce again after a restart of the incarnation.
    private var lastInfo: ComfyUIMapping.ObjectInfo?
    private var lastDevices: [DeviceTelemetry] = []
    /// Jobs assigned while a canceled prompt is still stopping: posted once every cancel is
    /// confirmed, so a new prompt never lands on a server still busy with an interrupted one.
    private var held: [CoordinatorToBackend.Assign] = []
    /// Prompts built and waiting for the `POST /prompt` before them to be answered (`postNext`).
    private var postQueue = Deque<(job: JobID, lease: Lease, body: [UInt8])>()
    private var posting = false
    /// How a prompt ended (or began) on /ws before the answer to its `POST /prompt` told this
    /// runner its id: a quick prompt can run to its end on the server before that answer is
    /// read. Replayed once the id is known (`posted`); the oldest are forgotten beyond
    /// `earlyLimit` (the server's prompts of other clients land here too).
    private var early: [String: [ComfyUIMapping.Event]] = [:]
    private var earlyOrder: [String] = []
    private static let earlyLimit = 256
    /// /ws dropped: once it is open again, every prompt is looked up by id (`reconcilePrompts`).
    private var reconcileDue = false
    private var reconciling = false

    package init(settings: ComfyUISettings, name: String, transport: Transport, logger: Logger, clientID: String? = nil) {
        self.settings = settings
        self.name = name
        self.clientID = clientID ?? UUID().uuidString.lowercased()
        self.transport = transport
        var l = logger
        l[metadataKey: "comfyui.url"] = "\(settings.url)"
        self.logger = l
    }

    private var onLoop: Bool { transport.executor.isOnLoopThread }

    /// Dials `/ws` (kept up with backoff by the transport) and starts probing the server.
    package func start(driver: WorkerDriver) {
        precondition(onLoop)
        self.driver = driver
        driver.externalRunner = { [weak self] action in self?.perform(action) }
        dialWebSocket()
        probe()
    }

    /// (Re)dials `/ws` at once: the transport's backoff may have grown long while the server was
    /// away, and a server that answers HTTP again should not wait for it.
    private func dialWebSocket() {
        let old = ws
        ws = nil
        wsBackingOff = false
        do {
            ws = try transport.assumeIsolated { t in
                if let old { t.close(old, code: .normal, reason: "redial") }
                return try t.dial(DialConfiguration(url: settings.wsURL(clientID: clientID)), handler: wsHandler())
            }
        } catch {
            logger.error("cannot dial the ComfyUI WebSocket", metadata: ["error": "\(error)"])
            report(.loading, message: "cannot dial \(settings.url)/ws: \(error)")
        }
    }

    package func stop() {
        precondition(onLoop)
        stopped = true
        transport.assumeIsolated { t in
            if let probeTimer { t.cancel(probeTimer) }
            if let lostTimer { t.cancel(lostTimer) }
            if let telemetryTimer { t.cancel(telemetryTimer) }
            if let followTimer { t.cancel(followTimer) }
            if let quietTimer { t.cancel(quietTimer) }
            if let ws { t.close(ws, code: .normal, reason: "stopping") }
        }
    }

    // MARK: - Engine actions

    private func perform(_ action: WorkerEngine.Action) {
        switch action {
        case .run(let assign):
            if prompts.values.contains(where: \.canceling) { held.append(assign) } else { post(assign) }
        case .stop(let job, let lease, _, let confirm): takeBack(job, lease, confirm: confirm)
        case .loadModel(let model): loadModel(model)
        default: break
        }
    }

    private func post(_ a: CoordinatorToBackend.Assign) {
        let built: (body: [UInt8], nodes: Int)
        do {
            built = try ComfyUIMapping.promptBody(
                params: a.params, job: a.job, clientID: clientID, lease: a.lease, attempt: a.attempt)
        } catch {
            finish(a.job, a.lease, .failed(code: ComfyUIMapping.badParams, message: error.description, retryable: false))
            return
        }
        let (classes, models) = Self.graphFacts(a.params)
        let p = Prompt(
            job: a.job, lease: a.lease, progress: ComfyUIMapping.Progress(total: built.nodes), classes: classes, models: models)
        prompts[a.job] = p
        postQueue.append((a.job, a.lease, built.body))
        postNext()
    }

    /// Sends the next `POST /prompt` once the previous one was answered: ComfyUI numbers prompts
    /// as they arrive, and two POSTs in flight at once may arrive in either order, so jobs bound
    /// together (a gate release, a requeue) would run out of the order they were bound in.
    private func postNext() {
        guard !posting, !postQueue.isEmpty else { return }
        let (job, lease, body) = postQueue.removeFirst()
        guard var p = prompts[job], p.lease == lease else { return postNext() }  // taken back meanwhile
        if p.canceling || p.stopRequested {
            // Taken back before it was sent: nothing to delete on the server.
            prompts[job] = nil
            if p.canceling {
                driver?.external { e, now in e.externalStopped(job: job, lease: lease, at: now) }
                postHeld()
            }
            return postNext()
        }
        posting = true
        p.postedMs = Self.wallClockMs()
        prompts[job] = p
        send(.post, "/prompt", body: body) { [weak self] result in
            guard let self else { return }
            self.posting = false
            self.posted(job, lease, result)
            self.postNext()
        }
    }

    private func posted(_ job: JobID, _ lease: Lease, _ result: Result<HTTPClientResponse, HTTPClientError>) {
        guard var p = prompts[job], p.lease == lease else { return }
        switch result {
        case .success(let r) where r.status == 200:
            do {
                let id = try ComfyUIMapping.promptID(r.body)
                p.id = id
                prompts[job] = p
                byPromptID[id] = job
                if p.canceling {
                    stopOnServer(job, id)
                } else if p.stopRequested {
                    cancelOnServer(id)
                }
                logger.debug("prompt queued", metadata: ["job.id": "\(job)", "prompt.id": "\(id)"])
                watchQuiet()
                if let seen = early.removeValue(forKey: id) {
                    earlyOrder.removeAll { $0 == id }
                    for event in seen { handle(event) }
                }
            } catch {
                finish(job, lease, .failed(code: ErrorCode("comfyui_error"), message: error.description, retryable: true))
            }
        case .success(let r) where r.status == 400:
            finish(job, lease, .failed(code: ComfyUIMapping.badParams, message: ComfyUIMapping.promptRejection(r.body), retryable: false))
        case .success(let r):
            let text = ComfyUIMapping.clean(String(decoding: r.body.prefix(300), as: UTF8.self), max: 300)
            finish(job, lease, .failed(
                code: ErrorCode("comfyui_error"), message: "POST /prompt answered HTTP \(r.status): \(text)", retryable: true))
        case .failure(let e):
            finish(job, lease, .failed(
                code: ErrorCode("comfyui_unreachable"), message: "POST \(settings.url)/prompt failed: \(e.message)", retryable: true))
        }
    }

    /// The coordinator took the job back (cancel, revoke, stale lease): delete it from the
    /// server's queue if it is pending, interrupt it if it runs. A cancel (`confirm`) is reported
    /// to the engine once the server no longer queues or runs the prompt.
    private func takeBack(_ job: JobID, _ lease: Lease, confirm: Bool) {
        if let i = held.firstIndex(where: { $0.job == job && $0.lease == lease }) {
            held.remove(at: i)  // never reached the server
            if confirm { driver?.external { e, now in e.externalStopped(job: job, lease: lease, at: now) } }
            return
        }
        guard var p = prompts[job], p.lease == lease else {
            if confirm { driver?.external { e, now in e.externalStopped(job: job, lease: lease, at: now) } }
            return
        }
        if confirm {
            p.canceling = true
            prompts[job] = p
            if let id = p.id { stopOnServer(job, id) }  // else `posted` stops it
            return
        }
        guard let id = p.id else {
            p.stopRequested = true
            prompts[job] = p
            return
        }
        prompts[job] = nil
        byPromptID[id] = nil
        cancelOnServer(id)
    }

    private func cancelOnServer(_ id: String) {
        let quoted = jsonQuoted(id)
        send(.post, "/queue", body: Array("{\"delete\":[\(quoted)]}".utf8)) { [weak self] r in
            self?.logger.debug("prompt deleted from the queue", metadata: ["prompt.id": "\(id)", "result": "\(Self.brief(r))"])
        }
        send(.post, "/interrupt", body: Array("{\"prompt_id\":\(quoted)}".utf8)) { [weak self] r in
            self?.logger.debug("prompt interrupted", metadata: ["prompt.id": "\(id)", "result": "\(Self.brief(r))"])
        }
    }

    /// Stops a canceled prompt: deletes it from the queue, then interrupts it (only a prompt that
    /// runs is interrupted, and only this one), then confirms once the server shows it stopped.
    private func stopOnServer(_ job: JobID, _ id: String) {
        let quoted = jsonQuoted(id)
        send(.post, "/queue", body: Array("{\"delete\":[\(quoted)]}".utf8)) { [weak self] _ in
            self?.send(.post, "/interrupt", body: Array("{\"prompt_id\":\(quoted)}".utf8)) { [weak self] r in
                self?.logger.debug("prompt interrupted", metadata: ["prompt.id": "\(id)", "result": "\(Self.brief(r))"])
                self?.checkStopped(job, id)
            }
        }
    }

    /// A canceled prompt stopped once `/queue` no longer lists it (it was deleted, or it ended:
    /// interrupted, or finished before the interrupt). While it runs, its `execution_interrupted`
    /// on /ws usually says so first; the server is asked again every second meanwhile.
    private func checkStopped(_ job: JobID, _ id: String) {
        guard let p = prompts[job], p.id == id, p.canceling else { return }
        send(.get, "/queue", body: []) { [weak self] result in
            guard let self, let p = self.prompts[job], p.id == id, p.canceling else { return }
            var place: ComfyUIMapping.QueuePlace?
            if case .success(let r) = result, r.status == 200 { place = try? ComfyUIMapping.queuePlace(r.body, prompt: id) }
            switch place {
            case .absent?: self.stopped(job, id)
            case .pending?: self.schedule(after: .milliseconds(500)) { $0.stopOnServer(job, id) }
            case .running?, nil: self.schedule(after: .seconds(1)) { $0.checkStopped(job, id) }
            }
        }
    }

    /// The server confirmed a canceled prompt stopped: the engine confirms the cancel, and the
    /// jobs held meanwhile go to the server.
    private func stopped(_ job: JobID, _ id: String) {
        guard let p = prompts[job], p.id == id, p.canceling else { return }
        end(job, id, hasHistory: false)
        logger.debug("canceled prompt stopped", metadata: ["job.id": "\(job)", "prompt.id": "\(id)"])
        driver?.external { e, now in e.externalStopped(job: job, lease: p.lease, at: now) }
    }

    private func postHeld() {
        guard !held.isEmpty, !prompts.values.contains(where: \.canceling) else { return }
        let waiting = held
        held = []
        for a in waiting { post(a) }
    }

    // MARK: - Taking prompts back after a coordinator restart

    /// The client id of a local backend named `name` in incarnation `incarnation`: the same
    /// after a restart of the coordinator that keeps the incarnation.
    package static func clientID(name: String, incarnation: Incarnation) -> String {
        clientIDPrefix(name: name) + "\(incarnation.rawValue)"
    }

    /// What every client id of a local backend named `name` starts with, whatever its
    /// incarnation: the backend may have taken newer incarnations since it posted a prompt.
    package static func clientIDPrefix(name: String) -> String {
        "muster-" + name.utf8.map { String($0, radix: 16) }.joined() + "-"
    }

    /// The prompts a local backend named like this one posted (any incarnation: the job and
    /// lease they carry say which binding they belong to) that the server still queues or runs,
    /// or lists among its last `historyItems` ended ones. Asked again a second later while the
    /// server does not answer, until `deadline`; nil when it never did.
    package func findPrompts(until deadline: ContinuousClock.Instant, _ done: @escaping ([ComfyUIMapping.PostedPrompt]?) -> Void) {
        precondition(onLoop)
        let again: () -> Void = { [weak self] in
            guard let self else { return }
            if ContinuousClock.now + .seconds(1) < deadline {
                self.schedule(after: .seconds(1)) { $0.findPrompts(until: deadline, done) }
            } else {
                done(nil)
            }
        }
        let left = deadline - ContinuousClock.now
        guard left > .zero else { return done(nil) }
        send(.get, "/queue", body: [], timeout: left) { [weak self] q in
            guard let self else { return }
            guard case .success(let queue) = q, queue.status == 200 else { return again() }
            let left = deadline - ContinuousClock.now
            guard left > .zero else { return done(nil) }
            self.send(.get, "/history?max_items=\(Self.historyItems)", body: [], timeout: left) { [weak self] h in
                guard let self else { return }
                guard case .success(let history) = h, history.status == 200 else { return again() }
                let prefix = Self.clientIDPrefix(name: self.name)
                done(ComfyUIMapping.postedPrompts(queue: queue.body, history: history.body) { $0.hasPrefix(prefix) })
            }
        }
    }

    /// How many of the server's last ended prompts `findPrompts` reads.
    static let historyItems = 256

    /// Follows prompts found by `findPrompts` as if this process had posted them: the engine
    /// holds their jobs under the same leases (`WorkerEngine.adopt`). One still queued or
    /// running is followed; one that ended is read from `/history` and reported.
    package func adopt(_ found: [(assign: CoordinatorToBackend.Assign, prompt: String)]) {
        precondition(onLoop)
        guard !found.isEmpty else { return }
        for (a, id) in found {
            let (classes, models) = Self.graphFacts(a.params)
            var p = Prompt(
                job: a.job, lease: a.lease, progress: ComfyUIMapping.Progress(total: max(1, classes.count)), classes: classes,
                models: models)
            p.id = id
            prompts[a.job] = p
            byPromptID[id] = a.job
        }
        logger.info("took back prompts the server still had", metadata: ["jobs": "\(found.map(\.assign.job).sorted())"])
        watchQuiet()
        reconcilePrompts()
    }

    /// Set when the prompts posted before a coordinator restart could not be looked up: once
    /// the server answers, every prompt of this backend's name still queued or running that no
    /// job here holds is deleted (`sweepOrphans`), so it does not run beside the job's next
    /// attempt.
    private var sweepDue = false

    package func sweepOrphansWhenUp() {
        precondition(onLoop)
        sweepDue = true
        if serverUp { sweepOrphans() }
    }

    private func sweepOrphans() {
        sweepDue = false
        findPrompts(until: .now + .seconds(10)) { [weak self] found in
            guard let self else { return }
            guard let found else {
                self.sweepDue = true  // the next probe that finds the server up tries again
                return
            }
            for p in found where p.queued && self.prompts[p.job].map({ $0.lease != p.lease }) ?? true {
                self.dropOnServer(p.id)
            }
        }
    }

    /// Deletes a prompt found on the server that no job here holds any longer (its job was
    /// requeued): it must not run on beside the job's next attempt.
    package func dropOnServer(_ prompt: String) {
        precondition(onLoop)
        logger.info("deleting a prompt whose job moved on", metadata: ["prompt.id": "\(prompt)"])
        cancelOnServer(prompt)
    }

    /// Makes the server load a checkpoint now: a four-node workflow that loads it, decodes an
    /// empty latent with its VAE and previews the result (ComfyUI runs only what leads to an
    /// output, and keeps the loaded model for the next prompt).
    private func loadModel(_ model: String) {
        let key = JobID(nextLoadKey)
        nextLoadKey -= 1
        let name = jsonQuoted(model)
        let graph = """
            {"1":{"class_type":"CheckpointLoaderSimple","inputs":{"ckpt_name":\(name)}},\
            "2":{"class_type":"EmptyLatentImage","inputs":{"width":64,"height":64,"batch_size":1}},\
            "3":{"class_type":"VAEDecode","inputs":{"samples":["2",0],"vae":["1",2]}},\
            "4":{"class_type":"PreviewImage","inputs":{"images":["3",0]}}}
            """
        let body = "{\"prompt\":\(graph),\"client_id\":\(jsonQuoted(clientID)),\"extra_data\":{\"muster_load_model\":\(name)}}"
        var p = Prompt(job: key, lease: Lease(0), progress: .init(total: 4), classes: [:], models: [model])
        p.loadsModel = model
        prompts[key] = p
        send(.post, "/prompt", body: Array(body.utf8)) { [weak self] result in
            guard let self, var p = self.prompts[key] else { return }
            if case .success(let r) = result, r.status == 200, let id = try? ComfyUIMapping.promptID(r.body) {
                p.id = id
                self.prompts[key] = p
                self.byPromptID[id] = key
                return
            }
            self.prompts[key] = nil
            let why: String
            switch result {
            case .success(let r) where r.status == 400: why = ComfyUIMapping.promptRejection(r.body)
            case .success(let r): why = "POST /prompt answered HTTP \(r.status)"
            case .failure(let e): why = "POST /prompt failed: \(e.message)"
            }
            self.driver?.external { e, now in e.externalModelLoaded(model, ok: false, message: why, at: now) }
        }
    }

    // MARK: - /ws

    private func wsHandler() -> WebSocketHandler {
        WebSocketHandler(
            opened: { [weak self] _, info in
                guard let self, info.id == self.ws else { return }
                self.wsOpened()
            },
            text: { [weak self] _, id, text in
                guard let self, id == self.ws else { return }
                self.wsText(text)
            },
            binary: { _, _, _ in },  // previews: not wanted
            closed: { [weak self] _, event in
                guard let self, event.id == self.ws else { return }
                self.wsClosed(event)
            },
            dialFailed: { [weak self] _, id, reason in
                guard let self, id == self.ws else { return }
                self.wsDialFailed(reason)
            })
    }

    private func wsOpened() {
        wsOpen = true
        wsBackingOff = false
        logger.info("ComfyUI WebSocket open")
        probe()
    }

    /// /ws closed. The server may still be up and running our prompts (a proxy or the network
    /// dropped the socket): they are not failed or posted again. The HTTP probe tells a server
    /// that is gone (`serverLost`) from one that only dropped the socket; in both cases the
    /// prompts are looked up by id once /ws is open again (`reconcilePrompts`).
    private func wsClosed(_ event: CloseEvent) {
        wsBackingOff = true
        guard wsOpen else { return }
        wsOpen = false
        guard !stopped else { return }
        logger.warning(
            "ComfyUI WebSocket closed; following prompts by id until it is back",
            metadata: ["close.code": "\(event.code)", "close.reason": "\(event.reason)"])
        reconcileDue = true
        probe()
    }

    /// The HTTP probe decides whether the server is gone (`serverLost`, after which its prompts
    /// are given up if it does not come back): a /ws that fails while HTTP answers keeps the
    /// backend `loading` and its prompts followed, and is dialled again on the next probe.
    private func wsDialFailed(_ reason: String) {
        wsBackingOff = true
        guard !stopped else { return }
        if serverUp { report(.loading, message: "\(settings.url)/ws does not answer: \(reason)") }
        scheduleProbe()
    }

    private func wsText(_ text: String) {
        lastWsMessage = .now
        quietLogged = false
        guard let event = ComfyUIMapping.event(text) else { return }
        switch event {
        case .executionStart(let id), .success(let id), .error(let id, _), .interrupted(let id, _, _):
            if byPromptID[id] == nil {
                keepEarly(id, event)
                return
            }
        default: break
        }
        handle(event)
    }

    /// Keeps the start or end of a prompt whose id is not known yet (see `early`).
    private func keepEarly(_ id: String, _ event: ComfyUIMapping.Event) {
        if early[id] == nil {
            earlyOrder.append(id)
            if earlyOrder.count > Self.earlyLimit { early[earlyOrder.removeFirst()] = nil }
        }
        early[id, default: []].append(event)
    }

    private func handle(_ event: ComfyUIMapping.Event) {
        switch event {
        case .status: return
        case .executionStart(let id):
            guard let job = byPromptID[id], let p = prompts[job], p.loadsModel == nil, !p.canceling else { return }
            driver?.external { e, now in e.externalStarted(job: job, lease: p.lease, at: now) }
        case .cached(let id, _), .executing(let id, _), .progress(let id, _, _, _):
            guard let job = byPromptID[id], var p = prompts[job] else { return }
            let moved = p.progress.apply(event, classes: p.classes)
            prompts[job] = p
            guard p.loadsModel == nil, let (fraction, message) = moved else { return }
            driver?.external { e, now in
                e.externalProgress(job: job, lease: p.lease, fraction: fraction, message: message, at: now)
            }
        case .executed: return
        case .success(let id):
            guard let job = byPromptID[id] else { return }
            if prompts[job]?.canceling == true { return stopped(job, id) }  // it won the race
            fetchHistory(job, id, attempt: 1)
        case .error(let id, let error):
            guard let job = byPromptID[id], let p = prompts[job] else { return }
            if p.canceling { return stopped(job, id) }
            let f = error.failure
            end(job, id)
            if let model = p.loadsModel {
                driver?.external { e, now in e.externalModelLoaded(model, ok: false, message: f.message, at: now) }
            } else {
                finish(job, p.lease, .failed(code: f.code, message: f.message, retryable: f.retryable))
            }
        case .interrupted(let id, let node, let type):
            // Prompts this runner stopped were forgotten first; this one someone else stopped.
            guard let job = byPromptID[id], let p = prompts[job] else { return }
            if p.canceling { return stopped(job, id) }  // ComfyUI confirms Muster's interrupt
            end(job, id)
            let at = node.map { " at node \($0)" + (type.map { " (\($0))" } ?? "") } ?? ""
            finish(job, p.lease, .failed(
                code: ErrorCode("interrupted"), message: "the prompt was interrupted on the ComfyUI\(at), not by Muster",
                retryable: true))
        }
    }

    private func fetchHistory(_ job: JobID, _ id: String, attempt: Int) {
        send(.get, "/history/\(id)", body: []) { [weak self] result in
            guard let self, let p = self.prompts[job], p.id == id else { return }
            var history: ComfyUIMapping.History?
            var problem = ""
            switch result {
            case .success(let r) where r.status == 200:
                do throws(ComfyUIFormatError) {
                    history = try ComfyUIMapping.history(r.body, prompt: id)
                    if history == nil { problem = "the server has no history of prompt \(id)" }
                } catch {
                    problem = error.description
                }
            case .success(let r): problem = "GET /history answered HTTP \(r.status)"
            case .failure(let e): problem = "GET /history failed: \(e.message)"
            }
            guard let history else {
                if attempt < 3 {
                    self.schedule(after: .milliseconds(200 * attempt)) { $0.fetchHistory(job, id, attempt: attempt + 1) }
                } else {
                    self.end(job, id)
                    if let model = p.loadsModel {
                        self.driver?.external { e, now in e.externalModelLoaded(model, ok: false, message: problem, at: now) }
                    } else {
                        self.finish(job, p.lease, .failed(code: ErrorCode("comfyui_error"), message: problem, retryable: true))
                    }
                }
                return
            }
            self.end(job, id)
            self.completed(p, id, history)
        }
    }

    private func completed(_ p: Prompt, _ id: String, _ h: ComfyUIMapping.History) {
        if let model = p.loadsModel {
            driver?.external { e, now in
                e.externalModelLoaded(model, ok: h.succeeded, message: h.error?.failure.message ?? "the load did not succeed", at: now)
            }
            return
        }
        if h.succeeded {
            let result = ComfyUIMapping.result(
                prompt: id, backend: name, baseURL: settings.url, outputs: h.outputs, postedMs: p.postedMs)
            let models = p.models
            driver?.external { e, now in
                var out = e.execFinished(job: p.job, lease: p.lease, result: .output(result.text), at: now)
                if !models.isEmpty {
                    // ComfyUI keeps what the last prompt loaded.
                    out += e.serverCapabilities(
                        state: e.state, features: e.features, nodes: e.nodes, models: e.models, loaded: Set(models),
                        devices: e.devices, message: e.stateMessage)
                }
                return out
            }
        } else if let error = h.error {
            let f = error.failure
            finish(p.job, p.lease, .failed(code: f.code, message: f.message, retryable: f.retryable))
        } else {
            finish(p.job, p.lease, .failed(
                code: ErrorCode("interrupted"), message: "ComfyUI ended prompt \(id) without success", retryable: true))
        }
    }

    /// Forgets a prompt that ended; `hasHistory`: it ended on the server (not deleted pending).
    private func end(_ job: JobID, _ id: String, hasHistory: Bool = true) {
        prompts[job] = nil
        byPromptID[id] = nil
        if hasHistory { lastPromptID = id }
        postHeld()
    }

    private func finish(_ job: JobID, _ lease: Lease, _ result: WorkerEngine.ExecResult) {
        prompts[job] = nil
        driver?.external { e, now in e.execFinished(job: job, lease: lease, result: result, at: now) }
        postHeld()
    }

    // MARK: - Probing the server

    /// Reads `/object_info` then `/system_stats`; the first answer makes the backend `ready`.
    private func probe() {
        guard !stopped, !probing else { return }
        probing = true
        if let probeTimer { transport.assumeIsolated { $0.cancel(probeTimer) } }
        probeTimer = nil
        send(.get, "/object_info", body: [], timeout: .seconds(30)) { [weak self] result in
            guard let self else { return }
            switch result {
            case .success(let r) where r.status == 200:
                do throws(ComfyUIFormatError) {
                    let info = try ComfyUIMapping.objectInfo(r.body)
                    self.readStats(info)
                } catch {
                    self.probeFailed("\(self.settings.url)/object_info: \(error.description)")
                }
            case .success(let r): self.probeFailed("\(self.settings.url)/object_info answered HTTP \(r.status)")
            case .failure(let e): self.probeFailed("\(self.settings.url) does not answer: \(e.message)")
            }
        }
    }

    private func readStats(_ info: ComfyUIMapping.ObjectInfo) {
        send(.get, "/system_stats", body: []) { [weak self] result in
            guard let self else { return }
            self.probing = false
            var devices: [DeviceTelemetry] = []
            if case .success(let r) = result, r.status == 200, let d = try? ComfyUIMapping.devices(r.body) {
                devices = d.map(Self.rounded)
            }
            guard self.wsOpen else {
                // Jobs report through /ws: not ready until it is open (wsOpened probes again).
                self.report(.loading, message: "\(self.settings.url) answers; waiting for its WebSocket /ws")
                if self.wsBackingOff { self.dialWebSocket() }
                self.scheduleProbe()
                return
            }
            self.lastInfo = info
            self.lastDevices = devices
            let wasUp = self.serverUp
            self.serverUp = true
            if let lostTimer = self.lostTimer { self.transport.assumeIsolated { $0.cancel(lostTimer) } }
            self.lostTimer = nil
            let classes = Set(info.classes)
            let features = Set(self.settings.featureMap.features(for: classes)).union(self.settings.extraFeatures)
            if !wasUp {
                self.logger.info(
                    "ComfyUI answers",
                    metadata: ["node_classes": "\(info.classes.count)", "features": "\(features.sorted().joined(separator: ","))"])
            }
            if !wasUp || self.reconcileDue {
                self.reconcileDue = false
                self.reconcilePrompts()
            }
            if self.sweepDue { self.sweepOrphans() }
            self.driver?.external { e, _ in
                e.serverCapabilities(
                    state: .ready, features: Array(features), nodes: info.classes, models: info.models,
                    loaded: e.loadedModels.intersection(info.models), devices: devices)
            }
            self.scheduleTelemetry(info)
        }
    }

    private func scheduleTelemetry(_ info: ComfyUIMapping.ObjectInfo) {
        if let telemetryTimer { transport.assumeIsolated { $0.cancel(telemetryTimer) } }
        telemetryTimer = schedule(after: settings.telemetryInterval) { r in
            r.telemetryTimer = nil
            r.refreshTelemetry(info)
        }
    }

    /// Telemetry in announcements changes only in steps of 1% of a device's memory, so a busy
    /// GPU does not re-announce on every job.
    static func rounded(_ d: DeviceTelemetry) -> DeviceTelemetry {
        var d = d
        let step = max(1, d.vramTotal / 100)
        d.vramFree = d.vramFree / step * step
        return d
    }

    private func refreshTelemetry(_ info: ComfyUIMapping.ObjectInfo) {
        guard serverUp, !stopped else { return }
        send(.get, "/system_stats", body: []) { [weak self] result in
            guard let self, self.serverUp else { return }
            switch result {
            case .success(let r) where r.status == 200:
                if let d = try? ComfyUIMapping.devices(r.body) {
                    self.driver?.external { e, _ in
                        e.serverCapabilities(
                            state: e.state, features: e.features, nodes: e.nodes, models: e.models, loaded: e.loadedModels,
                            devices: d.map(Self.rounded), message: e.stateMessage)
                    }
                }
                self.scheduleTelemetry(info)
            case .success(let r):
                self.serverLost("\(self.settings.url)/system_stats answered HTTP \(r.status)")
            case .failure(let e):
                self.serverLost("\(self.settings.url) does not answer: \(e.message)")
            }
        }
    }

    private func probeFailed(_ reason: String) {
        probing = false
        if serverUp {
            serverLost(reason)
        } else {
            report(.loading, message: reason)
        }
        scheduleProbe()
    }

    /// One probe pending at a time.
    private func scheduleProbe() {
        if let probeTimer { transport.assumeIsolated { $0.cancel(probeTimer) } }
        probeTimer = schedule(after: settings.retryInterval) { r in
            r.probeTimer = nil
            r.probe()
        }
    }

    /// The server stopped answering: `loading` with the reason; jobs in flight wait `lostAfter`
    /// for it to come back knowing their prompts.
    private func serverLost(_ reason: String) {
        let wasUp = serverUp
        serverUp = false
        report(.loading, message: reason)
        if wasUp { logger.warning("ComfyUI lost", metadata: ["reason": "\(reason)"]) }
        // With prompts in flight, or idle after it was up: a server away that long restarted, or
        // is gone. The new incarnation requeues what it held and makes the warm-up gate wait for
        // this backend again, its window counted anew (an idle backend's first window passed
        // long ago: jobs only it can run would fail at once while it loads).
        if lostTimer == nil, wasUp || !prompts.isEmpty {
            lostTimer = schedule(after: settings.lostAfter) { r in
                r.lostTimer = nil
                guard !r.serverUp else { return }
                r.giveBackJobs("\(r.settings.url) did not come back within \(r.settings.lostAfter)")
            }
        }
        scheduleProbe()
    }

    /// The server lost our prompts (it restarted) or is gone: a new incarnation, so the
    /// coordinator requeues every job this backend held.
    private func giveBackJobs(_ why: String) {
        let loads = prompts.values.compactMap(\.loadsModel)
        let heldJobs = !prompts.isEmpty || !held.isEmpty
        prompts = [:]
        byPromptID = [:]
        held = []
        lastPromptID = nil
        logger.warning(
            !heldJobs
                ? "ComfyUI gone: new incarnation, the warm-up gate waits for it again"
                : "ComfyUI lost its prompts: new incarnation, jobs requeued by the coordinator",
            metadata: ["reason": "\(why)"])
        driver?.external { e, now in
            var out: [WorkerEngine.Action] = []
            for model in loads { out += e.externalModelLoaded(model, ok: false, message: why, at: now) }
            return out + e.serverRestarted(at: now)
        }
        if !serverUp {
            report(.loading, message: why)
        } else if let info = lastInfo {
            // The server answers already (it restarted quickly): the new incarnation is ready.
            let features = Set(settings.featureMap.features(for: Set(info.classes))).union(settings.extraFeatures)
            let devices = lastDevices
            driver?.external { e, _ in
                e.serverCapabilities(
                    state: .ready, features: Array(features), nodes: info.classes, models: info.models, devices: devices)
            }
        }
    }

    /// After /ws was down (the server went away, or only the socket dropped): every prompt is
    /// looked up by id, with /ws already open again so that nothing ends unseen in between. One
    /// the server still queues or runs is followed on the new socket (same client id); one that
    /// ended meanwhile is read from /history; one it knows nothing of (nor of the last prompt
    /// posted, when none is in flight) means the server restarted: a new incarnation.
    private func reconcilePrompts() {
        guard !reconciling, lastPromptID != nil || prompts.values.contains(where: { $0.id != nil }) else { return }
        reconciling = true
        let last = lastPromptID
        send(.get, "/queue", body: []) { [weak self] q in
            guard let self else { return }
            guard case .success(let r) = q, r.status == 200 else {
                self.reconciling = false
                self.reconcileDue = true  // the next probe tries again
                self.scheduleProbe()
                return
            }
            var gone: [(JobID, String)] = []
            var inFlight: Set<String> = []
            for (job, p) in self.prompts.sorted(by: { $0.key < $1.key }) {
                guard let id = p.id else { continue }
                switch (try? ComfyUIMapping.queuePlace(r.body, prompt: id)) ?? .absent {
                case .running:
                    inFlight.insert(id)
                    // Its execution_start may have been missed.
                    if p.loadsModel == nil, !p.canceling {
                        self.driver?.external { e, now in e.externalStarted(job: job, lease: p.lease, at: now) }
                    }
                case .pending: inFlight.insert(id)
                case .absent where p.canceling: self.stopped(job, id)  // deleted or ended: stopped
                case .absent: gone.append((job, id))
                }
            }
            self.follow(inFlight)
            self.lookUpEnded(gone, last: last)
        }
    }

    /// While prompts are in flight, every `quietLimit`: when /ws said nothing for that long, look
    /// them up by id as after a drop (`reconcilePrompts`).
    private func watchQuiet() {
        guard quietTimer == nil, !stopped else { return }
        quietTimer = schedule(after: Self.quietLimit) { r in
            r.quietTimer = nil
            guard r.prompts.values.contains(where: { $0.id != nil }) else { return }
            if r.wsOpen, ContinuousClock.now - r.lastWsMessage >= Self.quietLimit {
                if !r.quietLogged {
                    // Once per quiet stretch: a long step without progress is quiet too.
                    r.quietLogged = true
                    r.logger.info("ComfyUI WebSocket quiet with prompts in flight: looking them up by id")
                }
                r.reconcilePrompts()
            }
            r.watchQuiet()
        }
    }

    /// Looks the prompts `ids` up again after `retryInterval` while any of them is in flight.
    private func follow(_ ids: Set<String>) {
        followed = ids
        guard !ids.isEmpty, followTimer == nil else { return }
        followTimer = schedule(after: settings.retryInterval) { r in
            r.followTimer = nil
            guard r.wsOpen, r.prompts.values.contains(where: { $0.id.map(r.followed.contains) ?? false }) else {
                r.followed = []
                return
            }
            if r.reconciling { return r.follow(r.followed) }
            r.reconcilePrompts()
        }
    }

    /// Reads `/history` of prompts no longer queued: each ended (handled as if its end had come on
    /// /ws), or the server does not know it and restarted.
    private func lookUpEnded(_ gone: [(JobID, String)], last: String?) {
        var ids = gone.map(\.1)
        if let last, !ids.contains(last) { ids.append(last) }
        guard let first = ids.first else {
            reconciling = false
            return
        }
        send(.get, "/history/\(first)", body: []) { [weak self] result in
            guard let self else { return }
            guard case .success(let r) = result, r.status == 200 else {
                self.reconciling = false
                self.reconcileDue = true
                self.scheduleProbe()
                return
            }
            guard let h = (try? ComfyUIMapping.history(r.body, prompt: first)) ?? nil else {
                self.reconciling = false
                self.giveBackJobs("the ComfyUI knows nothing of prompt \(first): it restarted")
                return
            }
            if let (job, _) = gone.first(where: { $0.1 == first }), let p = self.prompts[job], p.id == first {
                if p.canceling {
                    self.stopped(job, first)
                } else {
                    self.end(job, first)
                    self.completed(p, first, h)
                }
            }
            self.lookUpEnded(gone.filter { $0.1 != first }, last: last == first ? nil : last)
        }
    }

    private func report(_ state: BackendState, message: String) {
        driver?.external { e, _ in
            e.serverCapabilities(
                state: state, features: state == .ready ? e.features : [], nodes: state == .ready ? e.nodes : [],
                models: state == .ready ? e.models : [], loaded: state == .ready ? e.loadedModels : [], devices: e.devices,
                message: message)
        }
    }

    // MARK: - Plumbing

    private func send(
        _ method: HTTPMethod, _ path: String, body: [UInt8], timeout: Duration? = nil,
        _ done: @escaping (Result<HTTPClientResponse, HTTPClientError>) -> Void
    ) {
        guard !stopped else { return }
        var headers: [(name: String, value: String)] = []
        if !body.isEmpty { headers.append((name: "Content-Type", value: "application/json")) }
        let request = HTTPClientRequest(
            method: method, url: settings.url + path, headers: headers, body: body,
            timeout: timeout ?? settings.requestTimeout)
        let box = UncheckedBox(done)
        transport.assumeIsolated { t in
            t.request(request) { _, result in box.value(result) }
        }
    }

    @discardableResult
    private func schedule(after delay: Duration, _ body: @escaping (ComfyUIRunner) -> Void) -> TimerID? {
        guard !stopped else { return nil }
        let box = UncheckedBox(body)
        let id = transport.assumeIsolated { t in
            t.schedule(after: delay) { [weak self] _ in
                guard let self, !self.stopped else { return }
                box.value(self)
            }
        }
        return id
    }

    private func jsonQuoted(_ s: String) -> String {
        var out = ""
        appendJSONString(s, to: &out)
        return out
    }

    static func wallClockMs() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return UInt64(now.tv_sec) * 1000 + UInt64(now.tv_nsec / 1_000_000)
    }

    static func brief(_ r: Result<HTTPClientResponse, HTTPClientError>) -> String {
        switch r {
        case .success(let r): "HTTP \(r.status)"
        case .failure(let e): e.message
        }
    }

    /// Node id -> class and the loader models a workflow names.
    static func graphFacts(_ params: RawJSON) -> ([String: String], [String]) {
        guard let p = try? JSONSerialization.jsonObject(with: Data(params.text.utf8)) as? [String: Any],
            let graph = p["workflow"] as? [String: Any]
        else { return ([:], []) }
        var classes: [String: String] = [:]
        var models = Set<String>()
        for (id, v) in graph {
            guard let node = v as? [String: Any], let cls = node["class_type"] as? String else { continue }
            classes[id] = cls
            let inputs = node["inputs"] as? [String: Any] ?? [:]
            for name in ComfyUIMapping.modelInputs { if let m = inputs[name] as? String { models.insert(m) } }
        }
        return (classes, models.sorted())
    }
}

/// Carries a loop-bound closure through a `@Sendable` callback of the transport; it is called
/// only on the loop thread, where it was made.
struct UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
