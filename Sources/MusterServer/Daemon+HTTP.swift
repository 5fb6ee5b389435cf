import Foundation
import MusterCore
import MusterDashboard
import MusterProtocol
import MusterTransport

// The HTTP API of Protocol/README.md section 8: the client API mirrored, probes and metrics, and
// its OpenAPI document (Protocol/openapi.yaml bundled by Scripts/openapi) at GET /openapi.json.
extension Daemon {
    func httpRoutes() -> HTTPRoutes {
        var routes = HTTPRoutes()
        func route(
            _ method: HTTPMethod, _ path: String,
            _ body: @escaping @Sendable (isolated Daemon, HTTPRequest, Principal) -> HTTPResponse
        ) {
            routes.add(method, path) { [weak self] _, request in
                guard let self else { return .respond(.error(503, "stopping")) }
                return self.assumeIsolated { d in
                    let response = d.guarded(request) { principal in body(d, request, principal) }
                    // The client API answers behind the durability barrier (Daemon+Store).
                    return request.path.hasPrefix("/v1/") ? d.respondToClient(request, response) : .respond(response)
                }
            }
        }
        let settings = Dashboard.Settings(
            highlightFeatures: configuration.settings.dashboard.highlightFeatures,
            gateWindowMs: configuration.settings.gate.window.configMilliseconds)
        for asset in Dashboard.assets(settings: settings) {
            let response = Dashboard.response(contentType: asset.contentType, body: asset.body)
            // Guarded as every route is: a page under a rebound name (`Host: evil.example`) must
            // not load the dashboard, which then talks to this coordinator.
            route(.get, asset.path) { _, _, _ in response }
        }
        route(.get, "/healthz") { d, _, _ in
            let uptime = UInt64(max(0, (ContinuousClock.now - d.origin).configMilliseconds))
            return d.json(200, Wire.Health(version: Self.version, uptimeMs: uptime))
        }
        route(.get, "/readyz") { d, _, _ in
            let r = d.wireReadiness()
            return d.json(r.ready ? 200 : 503, r)
        }
        let openAPI = HTTPResponse(status: 200, body: PackageResources.openapi_json)
        route(.get, "/openapi.json") { _, _, _ in openAPI }
        route(.get, "/metrics") { d, _, principal in
            // Guarded (with `auth.metrics_open = false`) for the views that see everything.
            if !d.configuration.settings.auth.metricsOpen, !principal.seesAll {
                return d.errorResponse(d.forbidden(principal, "read metrics"))
            }
            d.refreshGauges()
            return HTTPResponse(status: 200, contentType: "text/plain; version=0.0.4; charset=utf-8", body: Array(d.metrics.render().utf8))
        }
        route(.get, "/v1/backends") { d, _, _ in d.json(200, Wire.BackendList(backends: d.core.backendList.map(d.wireBackend))) }
        route(.post, "/v1/batches") { d, request, principal in
            let batch: Wire.BatchRequest
            do throws(ProtocolError) {
                batch = try Wire.BatchRequest.decode(request.body, limits: d.limits)
            } catch {
                return d.errorResponse(RequestError(error))
            }
            do throws(RequestError) {
                let (accepted, actions) = try d.submit(batch, by: principal, defaultOwner: "anonymous")
                var response = d.json(accepted.duplicate ? 200 : 201, accepted)
                response.headers.append((name: "Location", value: "/v1/batches/\(accepted.batch)"))
                d.perform(actions)
                d.pump()
                return response
            } catch {
                return d.errorResponse(error)
            }
        }
        route(.post, "/v1/models/load") { d, request, principal in
            let load: Wire.LoadModelRequest
            do throws(ProtocolError) {
                load = try Wire.LoadModelRequest.decode(request.body, limits: d.limits)
            } catch {
                return d.errorResponse(RequestError(error))
            }
            do throws(RequestError) {
                return d.json(202, try d.loadModel(load.model, backend: load.backend, by: principal))
            } catch {
                return d.errorResponse(error)
            }
        }
        // The errors the transport answers by itself (400, 404, 405, 411, 413, 426), in the error shape and
        // counted like every other HTTP error. The transport calls this on the loop.
        routes.errorResponse = { [weak self] status, message in
            let code: ErrorCode
            switch status {
            case 400: code = .invalidMessage  // an upgrade offering no known subprotocol
            case 404: code = .notFound
            case 405: code = .methodNotAllowed
            case 411: code = .invalidMessage  // a body without Content-Length (chunked)
            case 413: code = .messageTooLarge
            case 426: code = .invalidMessage  // an upgrade asking for a WebSocket version other than 13
            default: code = .internalError
            }
            self?.assumeIsolated { $0.metrics.counter("muster_http_errors_total", ["code": code.rawValue]).increment() }
            return HTTPResponse(status: status, body: Wire.ErrorBody(code: code, message: message).encode())
        }
        routes.fallback = { [weak self] _, request in
            guard let self else { return nil }
            return self.assumeIsolated { d in d.patternRoute(request) }
        }
        return routes
    }

    /// Routes with an id in the path: `/v1/batches/{id}`, `/v1/jobs/{id}`, `/v1/backends/{id}/drain`.
    private func patternRoute(_ request: HTTPRequest) -> HTTPOutcome? {
        let parts = request.path.split(separator: "/", omittingEmptySubsequences: false)
        if parts.count == 5, parts[0].isEmpty, parts[1] == "v1", parts[2] == "backends", parts[4] == "drain" {
            return respondToClient(request, drainRoute(request, id: parts[3]))
        }
        guard parts.count == 4, parts[0].isEmpty, parts[1] == "v1", parts[2] == "batches" || parts[2] == "jobs" else {
            return .respond(errorResponse(RequestError(.notFound, "no route \(request.path)")))
        }
        let allowed: [HTTPMethod] = parts[2] == "jobs" ? [.get, .delete] : [.get]
        guard allowed.contains(request.method) else {
            var response = errorResponse(RequestError(
                .methodNotAllowed, "\(request.path) takes \(allowed.map(\.rawValue).joined(separator: ", "))"))
            response.headers.append((name: "Allow", value: allowed.map(\.rawValue).joined(separator: ", ")))
            return .respond(response)
        }
        return respondToClient(request, guarded(request) { principal in
            guard let raw = pathID(parts[3], as: UInt64.self) else {
                return errorResponse(RequestError(.invalidMessage, "'\(parts[3])' is not an id (a decimal integer)"))
            }
            switch (parts[2], request.method) {
            case ("batches", _):
                guard let batch = core.batch(BatchID(raw)) else { return errorResponse(notFound(.unknownBatch, "no batch \(raw)")) }
                do throws(RequestError) {
                    try requireAccess(principal, owner: batch.owner, cancel: false, "batch \(raw)")
                } catch {
                    return errorResponse(error)
                }
                let jobs = batch.jobs.compactMap { core.job($0) }
                let info = Wire.BatchInfo(
                    batch: batch.id, batchKey: batch.key, createdMs: ms(batch.submittedAt), done: jobs.allSatisfy { $0.state.isFinal },
                    jobs: jobs.map(wireJob))
                return json(200, info)
            case ("jobs", .get):
                guard let job = core.job(JobID(raw)) else {
                    return errorResponse(notFound(.unknownJob, "no job \(raw) (finished jobs are kept only for a while)"))
                }
                do throws(RequestError) {
                    try requireAccess(principal, owner: try ownerOf(job: job.id), cancel: false, "job \(raw)")
                } catch {
                    return errorResponse(error)
                }
                return json(200, wireJob(job))
            default:
                let id = JobID(raw)
                do throws(RequestError) { try requireMayCancel(principal) } catch { return errorResponse(error) }
                guard let before = core.job(id) else { return errorResponse(notFound(.unknownJob, "no job \(raw)")) }
                do throws(RequestError) {
                    try requireAccess(principal, owner: try ownerOf(job: id), cancel: true, "job \(raw)")
                } catch {
                    return errorResponse(error)
                }
                if before.state.isFinal { return json(200, Wire.CancelResult(job: id, state: before.state, canceled: false)) }
                do throws(RequestError) {
                    let canceled = try cancel(.job(id), by: principal)
                    // A job already canceling is still being canceled: `canceled` is true again.
                    let taken = canceled.contains(id) || before.cancelRequestedAt != nil
                    return json(200, Wire.CancelResult(job: id, state: core.job(id)?.state ?? .canceled, canceled: taken))
                } catch {
                    return errorResponse(error)
                }
            }
        })
    }

    /// `POST /v1/backends/{id}/drain`: 202 `draining`.
    private func drainRoute(_ request: HTTPRequest, id: Substring) -> HTTPResponse {
        guard request.method == .post else {
            var response = errorResponse(RequestError(.methodNotAllowed, "\(request.path) takes POST"))
            response.headers.append((name: "Allow", value: "POST"))
            return response
        }
        return guarded(request) { principal in
            guard let raw = pathID(id, as: Int64.self), raw != 0 else {
                return errorResponse(RequestError(.invalidMessage, "'\(id)' is not a backend id (a non-zero decimal integer)"))
            }
            do throws(RequestError) {
                try drain(BackendID(raw), by: principal)
                return json(202, CoordinatorToClient.Draining(backend: BackendID(raw)))
            } catch {
                return errorResponse(error)
            }
        }
    }

    /// Checks the bearer token on `/v1/` routes (and `/metrics` unless `auth.metrics_open`) and
    /// hands the body who presented it. Other routes run as `anonymous`.
    private func guarded(_ request: HTTPRequest, _ body: (Principal) -> HTTPResponse) -> HTTPResponse {
        let reads = [HTTPMethod.get, .head, .options].contains(request.method)
        if let refusal = browserGuard.refusal(origin: request.headers["origin"], host: request.headers["host"], changes: !reads) {
            return errorResponse(RequestError(.forbidden, refusal))
        }
        let needsToken = request.path.hasPrefix("/v1/") || (request.path == "/metrics" && !configuration.settings.auth.metricsOpen)
        // A standby answers no client API request: the client goes to the leader.
        if request.path.hasPrefix("/v1/"), let refusal = leaderRefusal { return errorResponse(refusal) }
        guard needsToken else { return body(.anonymous) }
        let header = request.headers["authorization"] ?? ""
        let presented = Authorization.bearerToken(header) ?? ""
        guard let principal = auth.client(token: presented, certificate: request.peerCertificateName) else {
            // errorResponse counts it in muster_http_errors_total.
            var response = errorResponse(RequestError(.badCredentials, "send Authorization: Bearer <token>"))
            response.headers.append((name: "WWW-Authenticate", value: "Bearer"))
            return response
        }
        guard principal.isClientSide else {
            return errorResponse(RequestError(
                .forbidden, "credential \(principal.name) is a backend credential: it opens the backend link only"))
        }
        return body(principal)
    }

    func json(_ status: Int, _ body: some ProtocolEncodable) -> HTTPResponse {
        HTTPResponse(status: status, body: body.encode())
    }

    func errorResponse(_ e: RequestError) -> HTTPResponse {
        metrics.counter("muster_http_errors_total", ["code": e.code.rawValue]).increment()
        return json(e.status, Wire.ErrorBody(code: e.code, message: e.message, details: e.details))
    }

    /// Sets the state gauges from the core before `/metrics` is rendered.
    func refreshGauges() {
        var jobStates: [String: Int] = [:]
        for (state, count) in core.jobsByState { jobStates[state.rawValue] = count }
        for state in JobState.allCases where jobStates[state.rawValue] == nil { jobStates[state.rawValue] = 0 }
        metrics.setGauges("muster_jobs", label: "state", counts: jobStates)
        var backendStates: [String: Int] = ["ready": 0, "loading": 0, "starting": 0, "draining": 0, "unknown": 0, "suspect": 0, "down": 0]
        for b in core.backendList {
            let key: String
            switch b.link {
            case .suspect: key = "suspect"
            case .down, .expected: key = "down"
            case .up: key = b.announced?.rawValue ?? "unknown"
            }
            backendStates[key, default: 0] += 1
        }
        metrics.setGauges("muster_backends", label: "state", counts: backendStates)
        // Device telemetry (ComfyUI backends): one series per backend and device.
        for b in core.backendList {
            for (i, d) in b.devices.enumerated() {
                let labels: KeyValuePairs<String, String> = ["backend": b.name, "device": "\(i)", "type": d.type]
                metrics.gauge("muster_backend_vram_total_bytes", labels).record(Int64(clamping: d.vramTotal))
                metrics.gauge("muster_backend_vram_free_bytes", labels).record(Int64(clamping: d.vramFree))
            }
        }
        metrics.setGauges(
            "muster_queue_depth", label: "priority",
            counts: Dictionary(uniqueKeysWithValues: core.queueDepthByPriority.map { ("\($0.key)", $0.value) }))
        metrics.gauge("muster_gate_held_jobs").record(core.readiness.heldJobs)
        // Routing estimates: each backend's speed, and each job class's expected seconds at 1.0.
        for b in core.backendList {
            if let e = core.estimates(for: b.id) { metrics.gauge("muster_backend_speed", ["backend": b.name]).record(e.speed) }
        }
        for j in core.jobClassEstimates {
            metrics.gauge(
                "muster_expected_job_seconds", ["kind": j.kind, "model": j.model ?? "", "nodes": Self.fingerprint(j.nodes)]
            ).record(j.seconds)
        }
        metrics.gauge("muster_ready").record(wireReadiness().ready ? 1 : 0)
        refreshLeadershipGauges()
        if let store {
            let s = store.statistics
            metrics.gauge("muster_store_available").record(storeRefusal == nil ? 1 : 0)
            metrics.gauge("muster_store_bytes").record(Int64(clamping: s.bytesOnDisk))
            metrics.gauge("muster_store_jobs").record(s.jobsStored)
            metrics.gauge("muster_store_bytes_per_job").record(s.bytesPerJob ?? 0)
            metrics.gauge("muster_store_pending_changes").record(Int64(clamping: s.pending))
            metrics.gauge("muster_store_commits").record(Int64(clamping: s.commits))
            metrics.gauge("muster_store_failed_commits").record(Int64(clamping: s.failedCommits))
            metrics.gauge("muster_store_changes_written").record(Int64(clamping: s.changesWritten))
            metrics.gauge("muster_store_last_commit_seconds").record(s.lastCommitSeconds)
        }
        let counters = transport.assumeIsolated { $0.counters }
        metrics.gauge("muster_bytes", ["direction": "in"]).record(counters.bytesIn)
        metrics.gauge("muster_bytes", ["direction": "out"]).record(counters.bytesOut)
        metrics.gauge("muster_messages", ["direction": "in"]).record(counters.messagesIn)
        metrics.gauge("muster_messages", ["direction": "out"]).record(counters.messagesOut)
        metrics.gauge("muster_slow_peer_closes").record(counters.slowPeerDrops)
        metrics.gauge("muster_handshake_timeouts").record(counters.handshakeTimeouts)
        metrics.gauge("muster_handshakes_refused").record(counters.handshakesRefused)
        metrics.gauge("muster_keepalive_pings").record(counters.keepalivePings)
        metrics.gauge("muster_keepalive_timeouts").record(counters.keepaliveTimeouts)
        metrics.gauge("muster_links_open").record(transport.assumeIsolated { $0.connectionCount })
        for (code, count) in counters.closesByCode {
            metrics.gauge("muster_link_closes", ["code": "\(code)"]).record(count)
        }
    }
}

/// An id in a path: a decimal integer written as JSON writes one (digits, a `-` only where the
/// type is signed, no `+`, no leading zeros), within the type's range; nil otherwise.
func pathID<T: FixedWidthInteger>(_ text: Substring, as: T.Type) -> T? {
    let digits = T.isSigned && text.hasPrefix("-") ? text.dropFirst() : text
    guard let first = digits.first, digits.allSatisfy({ $0.isASCII && $0.isNumber }),
        first != "0" || digits.count == 1
    else { return nil }
    return T(text)
}

extension Daemon {
    /// A short name of a job class's node classes for a metric label (`nodes` of
    /// `muster_expected_job_seconds`): the FNV-1a 64-bit hash of them joined by newlines, in 16
    /// hex digits; empty for a class without a workflow.
    static func fingerprint(_ nodes: [String]) -> String {
        guard !nodes.isEmpty else { return "" }
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in nodes.joined(separator: "\n").utf8 {
            h ^= UInt64(byte)
            h = h &* 0x100_0000_01b3
        }
        let hex = String(h, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }
}
