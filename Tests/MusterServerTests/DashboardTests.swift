import Foundation
#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif
import MusterStore
import Testing

/// The dashboard in a real browser against a real `muster serve`: headless Chromium, driven over
/// the DevTools protocol by Tests/Interop/dashboard_browser.py, opens the page, waits until it
/// shows what a person would look for, and clicks its buttons. Nothing asserts a duration.
@Suite(.serialized) struct DashboardTests {
    struct Browse {
        var ok: Bool
        var error: String?
        var dom: [String]
        /// Uncaught exceptions and errors the browser logged while the page ran.
        var problems: [String]
    }

    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Interop/dashboard_browser.py").path

    /// Fails the test (rather than skipping it) when the browser is missing, saying how to get it.
    func requireChromium() throws {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        let found = path.split(separator: ":").contains {
            FileManager.default.isExecutableFile(atPath: "\($0)/chromium")
        }
        try #require(found, "chromium is not installed; Scripts/setup installs it (Debian package chromium)")
    }

    /// Runs the browser script with `steps` (see its usage) against `url`.
    func browse(_ url: String, _ steps: [[String: String]], timeout: Int = 120) async throws -> Browse {
        let stepsJSON = String(decoding: try JSONSerialization.data(withJSONObject: steps), as: UTF8.self)
        let data = try await runChild("/usr/bin/python3", [Self.script, url, stepsJSON, "--timeout", "\(timeout)"]).output
        let json = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:]
        return Browse(
            ok: json["ok"] as? Bool ?? false,
            error: json["error"] as? String
                ?? (json.isEmpty ? "no answer from the browser script: \(String(decoding: data, as: UTF8.self))" : nil),
            dom: json["dom"] as? [String] ?? [], problems: json["problems"] as? [String] ?? [])
    }

    func coordinator(_ extra: [String]) async throws -> (MusterProcess, Int) {
        let p = try MusterProcess(["serve", "--listen", "127.0.0.1:0", "--log-level", "debug"] + extra)
        let line = try await p.waitForLog("muster serving")
        return (p, try #require(Int(line["listen.port"] as? String ?? "")))
    }

    func agent(port: Int, name: String, features: String, announceAfter: String = "0s", jobSeconds: String = "1s")
        async throws -> MusterProcess
    {
        let p = try MusterProcess([
            "agent", "--coordinator", "ws://127.0.0.1:\(port)", "--token", "t", "--name", name, "--features", features,
            "--announce-after", announceAfter, "--job-seconds", jobSeconds, "--log-format", "json", "--log-level",
            "debug",
        ])
        try await p.waitForLog("registered")
        return p
    }

    /// Every match of `pattern`'s first capture group in `text`.
    func captures(_ pattern: String, in text: String) -> [String] {
        let regex = try! NSRegularExpression(pattern: pattern)
        return regex.matches(in: text, range: NSRange(text.startIndex..., in: text)).compactMap { m in
            Range(m.range(at: 1), in: text).map { String(text[$0]) }
        }
    }

    @Test func thePageShowsTheBackendsTheGateAndTheFinishedJobsOfAVideoBatch() async throws {
        try requireChromium()
        let (serve, port) = try await coordinator([
            "--set",
            #"backends=[{"name": "local-video", "kind": "simulated", "features": ["frameinterps", "video"], "job_seconds": {"default": 0.5}}, {"name": "local-image", "kind": "simulated", "features": ["image"], "job_seconds": {"default": 0.5}}]"#,
            "--set", "gate.window_seconds=60",
        ])
        // Links at once, announces a little later: the gate holds the batch until it does.
        let late = try await agent(
            port: port, name: "gpu-late", features: "frameinterps,video", announceAfter: "2s", jobSeconds: "1s")
        let submitted = try await HTTP.post(
            "http://127.0.0.1:\(port)/v1/batches",
            #"{"owner": "e2e", "jobs": [{"kind": "video", "needs": ["frameinterps", "video"], "count": 6}]}"#)
        #expect(submitted.status == 201)
        let jobIDs = (submitted.json["jobs"] as? [Int] ?? []).map(String.init)
        #expect(jobIDs.count == 6)
        try await HTTP.waitFor("http://127.0.0.1:\(port)/v1/batches/1", "batch 1 done") {
            $0.json["done"] as? Bool == true
        }

        let page = try await browse(
            "http://127.0.0.1:\(port)/",
            [
                [
                    "wait": """
                    document.body.dataset.status === 'received'
                    && document.querySelectorAll('#job-rows tr[data-state="completed"]').length === 6
                    && document.querySelectorAll('#gantt .g-bar.completed').length === 6
                    && document.getElementById('count-completed').textContent === '6'
                    """
                ],
                ["dom": "true"],
            ])
        let dom = try #require(page.dom.last, "no page: \(page.error ?? "")")
        #expect(page.ok, "\(page.error ?? ""):\n\(dom.suffix(3000))")
        #expect(page.problems.isEmpty, "the page reported: \(page.problems)")

        // Backends: local ones first (-1, -2), then the remote one, each with its name and state.
        let backendRows = captures(#"<tr data-backend-id="(-?\d+)""#, in: dom)
        #expect(backendRows == ["-1", "-2", "1"], "\(backendRows)")
        for name in ["local-video", "local-image", "gpu-late"] {
            #expect(dom.contains(">\(name)</span>"), "\(name) missing")
        }
        #expect(captures(#"data-backend-id="-?\d+" data-state="(\w+)""#, in: dom) == ["ready", "ready", "ready"])
        #expect(dom.contains(#"<span class="tag hot">frameinterps</span>"#), "frameinterps is highlighted")
        #expect(dom.contains(#"<span class="tag hot">video</span>"#), "video is highlighted")
        // Routing's estimates per backend: a speed, and the video class measured (no asterisk).
        #expect(captures(#"<div class="sub estimates"[^>]*>speed ([0-9.]+)×"#, in: dom).count == 3, "estimates on every backend")
        #expect(!captures(#"(video [0-9.]+ s)(?: ·|</div>)"#, in: dom).isEmpty, "a measured video estimate")

        // The gate has let everything out by now and says so.
        #expect(dom.contains(#"id="gate""#))
        #expect(dom.contains(#"<div class="gate-open" data-held="0">"#), "the gate section says it holds nothing")

        // Every job of the batch appears finished, and on the timeline on the backend that ran it.
        let completedRows = Set(captures(#"<tr data-job-id="(\d+)" data-state="completed""#, in: dom))
        #expect(completedRows == Set(jobIDs))
        let bars = Set(captures(#"class="g-bar completed" data-job="(\d+)""#, in: dom))
        #expect(bars == Set(jobIDs))
        let finished = try await HTTP.get("http://127.0.0.1:\(port)/v1/batches/1")
        let backendsUsed = Set((finished.json["jobs"] as? [[String: Any]] ?? []).compactMap { $0["backend"] as? Int })
        let timelineRows = Set(captures(#"<div class="g-row" data-backend-id="(-?\d+)""#, in: dom).compactMap(Int.init))
        #expect(backendsUsed.isSubset(of: timelineRows), "\(backendsUsed) vs \(timelineRows)")

        try await late.stop()
        #expect(try await serve.stop() == 0)
    }

    /// The page asks for the snapshots of the 400 jobs that ended last (`finished_snapshots`)
    /// and adds the coordinator's count of the others: the counts cover every job it keeps.
    @Test func theCountsCoverEveryKeptJobWhileOnlyTheLatestAreSent() async throws {
        try requireChromium()
        let (serve, port) = try await coordinator([
            "--set", #"backends=[{"name": "local", "kind": "simulated", "slots": 64, "job_seconds": {"default": 0}}]"#,
        ])
        let base = "http://127.0.0.1:\(port)"
        let images = try await HTTP.post("\(base)/v1/batches", #"{"owner": "e2e", "jobs": [{"kind": "image", "count": 900}]}"#)
        #expect(images.status == 201)
        // Nothing can run these: they fail at once, before the last images end.
        let failing = try await HTTP.post("\(base)/v1/batches", #"{"owner": "e2e", "jobs": [{"kind": "video", "needs": ["nowhere"], "count": 3}]}"#)
        #expect(failing.status == 201)
        for batch in [1, 2] {
            try await HTTP.waitFor("\(base)/v1/batches/\(batch)", "batch \(batch) done") { $0.json["done"] as? Bool == true }
        }
        let page = try await browse(
            "http://127.0.0.1:\(port)/",
            [
                [
                    "wait": """
                    document.body.dataset.status === 'received'
                    && document.getElementById('count-completed').textContent === '900'
                    && document.getElementById('count-failed').textContent === '3'
                    """
                ],
                ["dom": "true"],
            ])
        let dom = try #require(page.dom.last, "no page: \(page.error ?? "")")
        #expect(page.ok, "\(page.error ?? ""):\n\(dom.suffix(3000))")
        #expect(page.problems.isEmpty, "the page reported: \(page.problems)")
        #expect(dom.contains(#"id="count-canceled">0<"#), "nothing canceled")
        #expect(try await serve.stop() == 0)
    }

    @Test func theButtonsCancelAJobLoadAModelAndDrainBackends() async throws {
        try requireChromium()
        // No backup runs: a minute into the 600 s job its progress shows it slow, and the idle
        // agent would run a copy and complete it before the page cancels it on a slow machine.
        let (serve, port) = try await coordinator([
            "--set",
            #"backends=[{"name": "slow", "kind": "simulated", "features": ["image"], "models": ["m1"], "job_seconds": {"default": 600}, "model_load_seconds": 0.1}]"#,
            "--set", "routing.backup_runs=0",
        ])
        let remote = try await agent(port: port, name: "gpu-a", features: "video")
        try await HTTP.waitFor("http://127.0.0.1:\(port)/readyz", "ready") { $0.status == 200 }
        let submitted = try await HTTP.post(
            "http://127.0.0.1:\(port)/v1/batches", #"{"jobs": [{"kind": "image", "count": 1}]}"#)
        let job = try #require((submitted.json["jobs"] as? [Int])?.first)

        let page = try await browse(
            "http://127.0.0.1:\(port)/",
            [
                ["wait": "document.querySelector('#job-rows tr[data-job-id=\"\(job)\"] button[data-action=cancel]')"],
                ["click": "#job-rows tr[data-job-id=\"\(job)\"] button[data-action=cancel]"],
                ["wait": "document.querySelector('#job-rows tr[data-job-id=\"\(job)\"][data-state=canceled]')"],
                ["wait": "[...document.querySelectorAll('#load-model option')].some(o => o.value === 'm1')"],
                ["fill": "#load-model", "value": "m1"],
                ["submit": "#load-form"],
                [
                    "wait":
                        "[...document.querySelectorAll('.toast')].some(t => t.textContent.includes('loading m1 on slow'))"
                ],
                // Drain takes two clicks: the first arms the button, the second confirms.
                ["click": "tr[data-backend-id=\"1\"] button[data-action=drain]"],
                ["wait": "document.querySelector('tr[data-backend-id=\"1\"] button.armed')"],
                ["click": "tr[data-backend-id=\"1\"] button[data-action=drain]"],
                [
                    "wait":
                        "[...document.querySelectorAll('.toast')].some(t => t.textContent.includes('gpu-a is draining'))"
                ],
                ["click": "tr[data-backend-id=\"-1\"] button[data-action=drain]"],
                ["click": "tr[data-backend-id=\"-1\"] button[data-action=drain]"],
                ["wait": "document.querySelector('tr[data-backend-id=\"-1\"][data-state=draining]')"],
                ["dom": "true"],
            ])
        #expect(page.ok, "\(page.error ?? ""):\n\(page.dom.last?.suffix(3000) ?? "")")
        #expect(page.problems.isEmpty, "the page reported: \(page.problems)")

        let info = try await HTTP.get("http://127.0.0.1:\(port)/v1/jobs/\(job)")
        #expect(info.json["state"] as? String == "canceled")
        try await serve.waitForLog("load model now", fields: ["model": "m1"])
        // The drained agent finishes (it had no job), says goodbye and exits on its own.
        #expect(try await remote.waitForExit() == 0)
        #expect(remote.findLog("drained: every job is done") != nil)
        let list = try await HTTP.get("http://127.0.0.1:\(port)/v1/backends")
        let local = (list.json["backends"] as? [[String: Any]] ?? []).first { $0["id"] as? Int == -1 }
        #expect((local?["capabilities"] as? [String: Any])?["state"] as? String == "draining")
        #expect(try await serve.stop() == 0)
    }

    @Test func aCoordinatorWithATokenMakesThePageAskForIt() async throws {
        try requireChromium()
        let token = "dashboard-s3cret"
        let (serve, port) = try await coordinator([
            "--set", #"backends=[{"name": "sim", "kind": "simulated", "features": ["image"]}]"#, "--set",
            "auth.token=\(token)",
        ])
        let page = try await browse(
            "http://127.0.0.1:\(port)/",
            [
                ["wait": "!document.getElementById('auth').hidden && document.body.dataset.link === 'auth'"],
                ["fill": "#token-input", "value": "wrong"],
                ["submit": "#token-form"],
                ["wait": "!document.getElementById('auth').hidden && !document.getElementById('token-error').hidden"],
                ["fill": "#token-input", "value": token],
                ["submit": "#token-form"],
                [
                    "wait":
                        "document.body.dataset.status === 'received' && document.querySelector('tr[data-backend-id=\"-1\"]')"
                ],
                [
                    "wait":
                        "sessionStorage.getItem('muster.token') === '\(token)' && document.getElementById('auth').hidden"
                ],
                ["dom": "true"],
            ])
        let dom = try #require(page.dom.last, "no page: \(page.error ?? "")")
        #expect(page.ok, "\(page.error ?? ""):\n\(dom.suffix(3000))")
        #expect(page.problems.isEmpty, "the page reported: \(page.problems)")
        #expect(!dom.contains(token), "the token never lands in the page")
        #expect(try await serve.stop() == 0)
    }

    /// A standby's page says it stands by, names the leader and links to its dashboard; when the
    /// standby takes over, the same page goes live without a reload.
    @Test func aStandbysPageNamesTheLeaderAndGoesLiveWhenItLeads() async throws {
        try requireChromium()
        let standby = try await ElectedCoordinator.start(name: "east")
        standby.election.report(.standby(leader: LeaderInfo(name: "west", address: "ws://10.0.0.9:7460", token: 4)))
        let marker = FileManager.default.temporaryDirectory.appendingPathComponent("muster-standby-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: marker) }
        let steps: [[String: String]] = [
            ["wait": "document.body.dataset.link === 'standby'"],
            ["wait": "document.getElementById('link-pill').textContent === 'standby · leader west'"],
            ["wait": "document.getElementById('leader-link')?.href === 'http://10.0.0.9:7460/'"],
            ["touch": marker],
            ["wait": "document.body.dataset.link === 'live' && document.body.dataset.status === 'received'"],
            ["wait": "!document.getElementById('leader-link')"],
            ["dom": "true"],
        ]
        let url = standby.base + "/"
        let browsing = Task { try await self.browse(url, steps) }
        // The page has shown the standby view: now this coordinator leads.
        try await within(.seconds(150), "the page shows the standby view") {
            while !FileManager.default.fileExists(atPath: marker) {
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        standby.election.report(.leader(token: 5))
        let result = try await browsing.value
        #expect(result.ok, "\(result.error ?? "")")
        #expect(result.problems.isEmpty, "\(result.problems)")
        #expect(result.dom.first?.contains("sim-east") == true, "the leader's page lists its backends")
        await standby.daemon.shutdown()
    }
}

extension DashboardTests {
    @Test func thePageShowsWhatTheCredentialAllowsAndHidesTheRest() async throws {
        try requireChromium()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("muster-dash-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        var entries: [String] = []
        for (name, role) in [("viewer", "read"), ("ops", "operator"), ("gpu", "backend")] {
            try Data("\(name)-token\n".utf8).write(to: dir.appendingPathComponent(name))
            entries.append(#"{"name": "\#(name)", "role": "\#(role)", "token_file": "\#(dir.appendingPathComponent(name).path)"}"#)
        }
        let (serve, port) = try await coordinator([
            "--set", #"backends=[{"name": "sim", "kind": "simulated", "features": ["image"]}]"#, "--set",
            "auth.credentials=[\(entries.joined(separator: ","))]",
        ])
        let backendRow = "document.querySelector('tr[data-backend-id=\"-1\"]')"
        let page = try await browse(
            "http://127.0.0.1:\(port)/",
            [
                ["wait": "!document.getElementById('auth').hidden"],
                // A backend's token is refused with its reason.
                ["fill": "#token-input", "value": "gpu-token"],
                ["submit": "#token-form"],
                ["wait": "!document.getElementById('auth').hidden && document.getElementById('token-error').textContent.includes('backend')"],
                // A read credential sees the backends, and no drain button or load form.
                ["fill": "#token-input", "value": "viewer-token"],
                ["submit": "#token-form"],
                ["wait": "document.body.dataset.role === 'read' && \(backendRow)"],
                ["wait": "!document.querySelector('button[data-action=\"drain\"]') && document.getElementById('load-form').hidden"],
                ["dom": "true"],
            ])
        #expect(page.ok, "\(page.error ?? ""):\n\(page.dom.last?.suffix(3000) ?? "")")
        #expect(page.problems.isEmpty, "the page reported: \(page.problems)")
        let operatorPage = try await browse(
            "http://127.0.0.1:\(port)/",
            [
                ["wait": "!document.getElementById('auth').hidden"],
                ["fill": "#token-input", "value": "ops-token"],
                ["submit": "#token-form"],
                ["wait": "document.body.dataset.role === 'operator' && document.querySelector('button[data-action=\"drain\"]')"],
                ["wait": "!document.getElementById('load-form').hidden"],
            ])
        #expect(operatorPage.ok, "\(operatorPage.error ?? "")")
        #expect(try await serve.stop() == 0)
    }
}

/// What the coordinator sends for the page, without a browser.
@Suite struct DashboardAssetTests {
    @Test func thePageAndItsAssetsAreServedFromTheBinaryAndLoadNothingFromElsewhere() async throws {
        let coordinator = try await TestCoordinator.start(settings: [("auth.token", "s3cret-token")])
        for (path, type) in [("/", "text/html"), ("/dashboard.css", "text/css"), ("/dashboard.js", "text/javascript")] {
            // No token needed for the page itself: the data behind it is what the token guards.
            let (data, response) = try await URLSession.shared.data(
                from: URL(string: "http://127.0.0.1:\(coordinator.port)\(path)")!)
            let http = try #require(response as? HTTPURLResponse)
            #expect(http.statusCode == 200, "\(path)")
            #expect(http.value(forHTTPHeaderField: "Content-Type")?.hasPrefix(type) == true, "\(path)")
            let policy = http.value(forHTTPHeaderField: "Content-Security-Policy") ?? ""
            #expect(
                policy.contains("default-src 'none'") && policy.contains("connect-src 'self'"), "\(path): \(policy)")
            let text = String(decoding: data, as: UTF8.self)
            for external in ["http://", "https://", "@import", "fonts.googleapis"] {
                #expect(!text.contains(external), "\(path) refers to \(external)")
            }
        }
        await coordinator.stop()
    }

    /// What the page highlights and the gate window it counts down come from the coordinator's
    /// configuration, in a JSON data block (not a script, so the policy stays `script-src 'self'`).
    @Test func thePageCarriesTheCoordinatorsSettings() async throws {
        let coordinator = try await TestCoordinator.start(settings: [
            ("dashboard.highlight_features", "upscale.4x, video,upscale.4x"), ("gate.window_seconds", "42"),
        ])
        let (data, _) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(coordinator.port)/")!)
        let page = String(decoding: data, as: UTF8.self)
        #expect(!page.contains("<!-- muster:settings -->"))
        #expect(
            page.contains(
                #"<script type="application/json" id="muster-settings">{"highlight_features":["upscale.4x","video"],"gate_window_ms":42000}</script>"#
            ), "\(page)")
        let (script, _) = try await URLSession.shared.data(
            from: URL(string: "http://127.0.0.1:\(coordinator.port)/dashboard.js")!)
        let js = String(decoding: script, as: UTF8.self)
        #expect(js.contains("muster-settings") && !js.contains(#"["frameinterps", "video"]"#), "no feature list baked into the script")
        await coordinator.stop()
    }
}
