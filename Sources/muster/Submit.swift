import ArgumentParser
import Foundation
import Logging
import MusterClient
import MusterProtocol

/// `muster submit`: submits one batch and, with `--wait`, follows it to the end.
struct Submit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Submit one batch of jobs to a coordinator.",
        discussion: """
            Without --wait it prints the batch id and the job ids and exits 0. With --wait it \
            follows every job until it is final: a live display on a terminal, one line per event \
            otherwise, the job events as JSON lines with --json; then a summary of where each job \
            ran, for how long, why any job waited and how any failed. With --wait the exit status is \
            1 when a job failed or was canceled. Interrupting --wait stops following; the jobs keep \
            running (cancel them with the HTTP API: DELETE /v1/jobs/ID). With --wait a lost link \
            (the coordinator restarting) is redialled for up to --reconnect-seconds: the batch is \
            followed again from the coordinator's job store and every job still gets exactly one \
            final line; the batch gets a batch key of its own unless --batch-key gives one, so a \
            submission whose answer was lost is sent again without running twice.

            --workflow FILE submits ComfyUI jobs: FILE is a workflow in API format (ComfyUI's \
            "Export (API)"), sent as params.workflow; only backends with every node class of the graph \
            run them. The jobs of a batch differ by seed: without --seed each job gets one derived \
            from its job id; with --seed S the jobs get S, S+1, ... --inputs-json sets inputs per job: \
            an object ("NODE.INPUT": value, e.g. '{"6.text": "a lighthouse"}') for every job, or an \
            array of such objects, one job each.
            """)

    @OptionGroup var client: ClientOptions

    @Option(name: .customLong("kind"), help: "Kind of job, e.g. image or video (a-z 0-9 _ . -, starting with a letter); with --workflow, default workflow.")
    var kindOption: String?

    @Option(help: ArgumentHelp("A ComfyUI workflow in API format to run (params.workflow).", valueName: "FILE"))
    var workflow: String?

    @Option(parsing: .unconditional, help: "With --workflow: the seed of the first job; the next jobs get the next seeds (each at most 2^53-1).")
    var seed: UInt64?

    @Option(help: ArgumentHelp(
        "With --workflow: input overrides, an object of \"NODE.INPUT\": value, or an array of them (one job each).",
        valueName: "JSON"))
    var inputsJson: String?

    var kind: String { kindOption ?? "workflow" }

    @Option(help: "Number of jobs (1...1000).")
    var count = 1

    @Option(
        parsing: .singleValue,
        help: ArgumentHelp(
            "Features every backend running the jobs must announce, comma-separated, e.g. frameinterps,video.",
            valueName: "FEATURES"))
    var needs: [String] = []

    @Option(help: "Model the jobs use.")
    var model: String?

    // Unconditional: a negative priority would otherwise read as a flag.
    @Option(parsing: .unconditional, help: "Priority, -1000...1000; higher runs first.")
    var priority = 0

    @Option(help: "Owner of the jobs (fairness is round-robin between owners); default: the login name (USER, LOGNAME or the user database), else muster-cli.")
    var owner: String?

    @Option(help: ArgumentHelp("Job parameters: a JSON object, handed to the backend as is.", valueName: "JSON"))
    var params: String?

    @Option(help: "Idempotency key: a retry with the same key and content gets the original batch back.")
    var batchKey: String?

    @Flag(help: "Follow the jobs until every one is final, then summarise; rides through a coordinator restart (the first dial retried for up to --timeout, a lost link redialled for --reconnect-seconds).")
    var wait = false

    @Flag(
        help:
            "Print JSON lines: the accepted answer (as the HTTP API's body: batch, jobs, duplicate), or with --wait every job event and a final summary."
    )
    var json = false

    @Option(
        help: ArgumentHelp(
            "With --wait: how long to keep redialling a lost coordinator (a restart) before giving up; 0: never.",
            valueName: "SECONDS"))
    var reconnectSeconds: Double = 300

    /// The names given to --needs, in order (repeats and empty names kept: `validate` refuses them).
    var neededNames: [String] {
        needs.flatMap { $0.split(separator: ",", omittingEmptySubsequences: false) }.map { $0.trimmingCharacters(in: .whitespaces) }
    }

    /// `--needs`, split on commas, sorted (`validate` refused repeats).
    var neededFeatures: [String] { neededNames.sorted() }

    func validate() throws {
        guard kindOption != nil || workflow != nil else { throw ValidationError("give --kind KIND or --workflow FILE") }
        guard reconnectSeconds >= 0, reconnectSeconds <= 86_400 else {
            throw ValidationError("--reconnect-seconds must lie in 0...86400, got \(reconnectSeconds)")
        }
        if workflow == nil, seed != nil || inputsJson != nil {
            throw ValidationError("--seed and --inputs-json apply to --workflow")
        }
        if workflow != nil, params != nil {
            throw ValidationError("give --params or --workflow, not both (a workflow's params are built from the file)")
        }
        guard Grammar.isFeature(kind) else {
            throw ValidationError("--kind '\(kind)' is not a job kind: lowercase a-z 0-9 _ . -, starting with a letter")
        }
        guard (1...ProtocolLimits.maxCount).contains(count) else {
            throw ValidationError("--count must lie in 1...\(ProtocolLimits.maxCount), got \(count)")
        }
        var seen = Set<String>()
        for feature in neededNames {
            guard Grammar.isFeature(feature) else {
                throw ValidationError(
                    "--needs: '\(feature)' is not a feature name: lowercase a-z 0-9 _ . -, starting with a letter")
            }
            // As the wire refuses a feature named twice in `needs`.
            guard seen.insert(feature).inserted else { throw ValidationError("--needs names '\(feature)' twice") }
        }
        if let seed {
            // `count` is at least 1 (checked above).
            let last = seed.addingReportingOverflow(UInt64(count - 1))
            guard !last.overflow, last.partialValue <= WorkflowParams.maxSeed else {
                throw ValidationError(
                    "--seed \(seed) with --count \(count): the jobs' seeds run to \(seed)+\(count - 1), past "
                        + "\(WorkflowParams.maxSeed) (2^53-1), the largest seed")
            }
        }
        guard neededFeatures.count <= ProtocolLimits.maxNeeds else {
            throw ValidationError("--needs names \(neededFeatures.count) features; at most \(ProtocolLimits.maxNeeds)")
        }
        if let model, !Grammar.isLabel(model, max: ProtocolLimits.maxModelLength) {
            throw ValidationError(
                "--model must be 1...\(ProtocolLimits.maxModelLength) characters without control characters")
        }
        guard ProtocolLimits.priorityRange.contains(priority) else {
            throw ValidationError("--priority must lie in \(ProtocolLimits.priorityRange), got \(priority)")
        }
        for (flag, value) in [("--owner", owner), ("--batch-key", batchKey)] {
            if let value, !Grammar.isLabel(value, max: ProtocolLimits.maxKeyLength) {
                throw ValidationError(
                    "\(flag) must be 1...\(ProtocolLimits.maxKeyLength) characters without control characters")
            }
        }
        if workflow == nil { _ = try parsedParams() }
    }

    /// `--params` as validated JSON text, which must be an object.
    func parsedParams() throws -> RawJSON {
        guard let params else { return .emptyObject }
        let raw: RawJSON
        do {
            raw = try RawJSON(validating: params)
        } catch {
            throw ValidationError("--params is not valid JSON: \(error.description)")
        }
        guard params.drop(while: { $0.isWhitespace }).first == "{" else {
            throw ValidationError(
                "--params must be a JSON object, e.g. '{\"prompt\": \"a lighthouse\"}', got \(params)")
        }
        return raw
    }

    func batchRequest() throws -> Wire.BatchRequest {
        if let workflow { return try workflowBatch(file: workflow) }
        let job = Wire.JobRequest(
            kind: kind, needs: neededFeatures, model: model, params: try parsedParams(), count: count,
            priority: priority,
            owner: owner)
        return Wire.BatchRequest(batchKey: batchKey, jobs: [job])
    }

    /// The jobs of `--workflow`: one entry of `count` jobs when they differ only by the derived
    /// seed, else one entry per job with its own `seed` and `inputs`. The workflow is checked
    /// here as the coordinator would, so a bad file queues nothing.
    func workflowBatch(file: String) throws -> Wire.BatchRequest {
        guard let data = FileManager.default.contents(atPath: file) else {
            throw ValidationError("--workflow: cannot read '\(file)'")
        }
        let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        do {
            _ = try RawJSON(validating: text)
        } catch {
            throw ValidationError("--workflow: '\(file)' is not JSON: \(error.description)")
        }
        if let o = try? JSONSerialization.jsonObject(with: data) as? [String: Any], o["nodes"] is [Any], o["links"] != nil {
            throw ValidationError(
                "--workflow: '\(file)' is a workflow in ComfyUI's UI format; save it with \"Export (API)\" instead")
        }
        var perJob: [String?] = Array(repeating: nil, count: count)
        if let inputsJson {
            guard let value = try? JSONSerialization.jsonObject(with: Data(inputsJson.utf8), options: [.fragmentsAllowed]) else {
                throw ValidationError("--inputs-json is not JSON: \(inputsJson)")
            }
            if let list = value as? [Any] {
                guard list.allSatisfy({ $0 is [String: Any] }), !list.isEmpty else {
                    throw ValidationError("--inputs-json: an array must hold objects of \"NODE.INPUT\": value")
                }
                guard count == 1 || count == list.count else {
                    throw ValidationError("--inputs-json has \(list.count) entries, one job each; leave out --count or make it \(list.count)")
                }
                perJob = try list.map { String(decoding: try JSONSerialization.data(withJSONObject: $0, options: [.sortedKeys]), as: UTF8.self) }
            } else if value is [String: Any] {
                let one = String(decoding: try JSONSerialization.data(withJSONObject: value, options: [.sortedKeys]), as: UTF8.self)
                perJob = Array(repeating: one, count: count)
            } else {
                throw ValidationError("--inputs-json must be an object of \"NODE.INPUT\": value, or an array of them")
            }
        }
        func params(seed: UInt64?, inputs: String?) -> RawJSON {
            var s = "{\"workflow\":" + text
            if let seed { s += ",\"seed\":\(seed)" }
            if let inputs { s += ",\"inputs\":" + inputs }
            return RawJSON(unchecked: s + "}")
        }
        var jobs: [Wire.JobRequest] = []
        if seed == nil, Set(perJob.map { $0 ?? "" }).count == 1 {
            jobs = [Wire.JobRequest(
                kind: kind, needs: neededFeatures, model: model, params: params(seed: nil, inputs: perJob[0]),
                count: perJob.count, priority: priority, owner: owner)]
        } else {
            for (i, inputs) in perJob.enumerated() {
                jobs.append(Wire.JobRequest(
                    kind: kind, needs: neededFeatures, model: model,
                    params: params(seed: seed.map { $0 &+ UInt64(i) }, inputs: inputs), priority: priority, owner: owner))
            }
        }
        for job in jobs {
            do {
                _ = try WorkflowParams.nodeClasses(of: job.params)
            } catch {
                throw ValidationError("--workflow '\(file)': \(error.path.replacingOccurrences(of: "params.", with: "")): \(error.reason)")
            }
            if job.params.text.utf8.count > ProtocolLimits.default.maxParamsBytes {
                throw ValidationError("--workflow: '\(file)' is over the \(ProtocolLimits.default.maxParamsBytes)-byte params limit")
            }
        }
        return Wire.BatchRequest(batchKey: batchKey, jobs: jobs)
    }

    func run() async throws {
        var request = try batchRequest()
        if wait, request.batchKey == nil {
            // A key of its own makes a resubmission after a lost answer idempotent.
            request.batchKey = "muster-submit-\(UUID().uuidString.lowercased())"
        }
        // A waiting submitter rides through a restart from its first dial on, as it does later.
        let allCompleted = try await client.withClient(retrying: wait && reconnectSeconds > 0) { c -> Bool in
            // `redialled`: the link the batch was submitted again on, when the first one was lost
            // before its answer; the batch is followed there.
            let (accepted, redialled) = try await submit(request, on: c)
            guard wait else {
                printAccepted(accepted)
                await redialled?.close()
                return true
            }
            do {
                let completed = try await follow(accepted, on: redialled ?? c)
                await redialled?.close()
                return completed
            } catch {
                await redialled?.close()
                throw error
            }
        }
        if !allCompleted { throw ExitCode(1) }
    }

    /// Submits; with --wait, a link lost before the answer is redialled and the batch (its key
    /// makes that idempotent) submitted again on the new link, which is returned to follow the
    /// batch on (the caller closes it).
    private func submit(
        _ request: Wire.BatchRequest, on c: MusterClient
    ) async throws -> (Wire.Accepted, redialled: MusterClient?) {
        do {
            return (try await c.submit(request), nil)
        } catch {
            guard wait, reconnectSeconds > 0, MusterClient.isTransient(error), request.batchKey != nil else { throw error }
            let deadline = ContinuousClock.now + .milliseconds(Int64(reconnectSeconds * 1000))
            while true {
                let next = try await MusterClient.connect(
                    client.clientOptions(), logger: Logger(label: "muster.client"), retryingUntil: deadline)
                do {
                    return (try await next.submit(request), next)
                } catch {
                    await next.close()
                    guard MusterClient.isTransient(error), ContinuousClock.now < deadline else { throw error }
                    try await Task.sleep(for: .seconds(1))
                }
            }
        }
    }

    private func printAccepted(_ accepted: Wire.Accepted) {
        if json {
            // As `POST /v1/batches` gives it: without the WebSocket request's `id`.
            var body = accepted
            body.id = nil
            print(String(decoding: body.encode(), as: UTF8.self))
            return
        }
        let note = accepted.duplicate ? " (duplicate: this batch_key was submitted before; nothing new was queued)" : ""
        print(
            "batch \(accepted.batch): \(accepted.jobs.count) job\(accepted.jobs.count == 1 ? "" : "s") accepted\(note)")
        print("jobs: \(accepted.jobs.map(\.description).joined(separator: " "))")
    }

    /// Follows the batch until every job is final; returns whether all completed. A lost link
    /// (the coordinator restarting, say) is redialled for up to `--reconnect-seconds`; the batch
    /// is subscribed again and its snapshot fills in what happened meanwhile. Each job's final
    /// line is printed once, whatever the coordinator resends.
    private func follow(_ accepted: Wire.Accepted, on c: MusterClient) async throws -> Bool {
        // Names for the display; a link lost meanwhile is redialled by the follow below, and the
        // names then come from the events alone.
        var names = BackendNames((try? await c.status().backends) ?? [])
        let mode: SubmitDisplay.Mode = json ? .json : (isatty(STDOUT_FILENO) != 0 ? .terminal : .lines)
        var display = SubmitDisplay(mode: mode, batch: accepted.batch, jobs: accepted.jobs)
        display.start(BatchProgress(batch: accepted.batch, jobs: accepted.jobs))
        let progress = try await MusterClient.follow(
            batch: accepted.batch, jobs: accepted.jobs, on: c, options: client.clientOptions(),
            logger: Logger(label: "muster.client"), reconnectFor: .milliseconds(Int64(reconnectSeconds * 1000)),
            onReconnect: { error in
                FileHandle.standardError.write(
                    Data("muster: \(error.message); reconnecting (up to \(Int(reconnectSeconds)) s)\n".utf8))
            },
            onEvent: { event, progress, newFinal in
                names.learn(event)
                // A job already final is not shown again (a snapshot after a reconnect resends it).
                if !event.state.isFinal || newFinal { display.show(event, progress, names) }
            })
        display.summary(progress, names)
        return progress.orderedJobs.allSatisfy { $0.state == .completed }
    }
}
