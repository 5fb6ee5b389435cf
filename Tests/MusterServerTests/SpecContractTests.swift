import Foundation
import MusterProtocol
import MusterServer
import Testing

/// The daemon against Protocol/README.md on real sockets: what an independent backend and client
/// written from the spec alone expect, message by message (acks, ids on errors, closes, job
/// events and attempt histories).
@Suite struct SpecContractTests {
    static let backendV1 = "muster.backend.v1"
    static let clientV1 = "muster.client.v1"

    func hello(_ name: String, incarnation: Int, id: String = "h1") -> String {
        #"{"type":"hello","id":"\#(id)","role":"backend","name":"\#(name)","token":"","versions":[1],"incarnation":\#(incarnation),"slots":1}"#
    }

    func clientHello(id: String = "c1") -> String {
        #"{"type":"hello","id":"\#(id)","role":"client","name":"tester","token":"","versions":[1]}"#
    }

    func capabilities(_ incarnation: Int, _ revision: Int, _ state: String, features: [String] = ["frameinterps", "video"]) -> String {
        let list = features.map { "\"\($0)\"" }.joined(separator: ",")
        return #"{"type":"capabilities","incarnation":\#(incarnation),"revision":\#(revision),"state":"\#(state)","features":[\#(list)],"models":{"available":[],"loaded":[]},"slots":1}"#
    }

    func backend(_ c: TestCoordinator, _ name: String, incarnation: Int) async throws -> (WirePeer, [String: Any]) {
        let peer = try await WirePeer(port: c.port, subprotocol: Self.backendV1)
        await peer.send(hello(name, incarnation: incarnation))
        return (peer, try await peer.next(type: "welcome"))
    }

    /// A backend with `video` and `count` slots, and a batch of `count` videos bound to it (their
    /// ids, and each one's lease): they stay unfinished until the test reports them.
    func videosHeldBy(_ c: TestCoordinator, _ name: String, incarnation: Int, count: Int) async throws
        -> (WirePeer, [Int], [Int: Int])
    {
        let (b, _) = try await backend(c, name, incarnation: incarnation)
        await b.send(
            capabilities(incarnation, 1, "ready", features: ["video"]).replacingOccurrences(of: #""slots":1"#, with: #""slots":\#(count)"#))
        _ = try await b.next(type: "capabilities_ack")
        let videos = try await HTTP.post(
            "http://127.0.0.1:\(c.port)/v1/batches", #"{"jobs": [{"kind": "video", "needs": ["video"], "count": \#(count)}]}"#)
        let ids = try #require(videos.json["jobs"] as? [Int])
        var leases: [Int: Int] = [:]
        while leases.count < count {
            let assign = try await b.next(type: "assign")
            leases[try #require(assign["job"] as? Int)] = try #require(assign["lease"] as? Int)
        }
        return (b, ids, leases)
    }

    /// A client link past its `welcome`.
    func welcomedClient(_ c: TestCoordinator) async throws -> WirePeer {
        let peer = try await WirePeer(port: c.port, subprotocol: Self.clientV1)
        await peer.send(clientHello())
        _ = try await peer.next(type: "welcome")
        return peer
    }

    @Test func everyAnnouncementGetsExactlyOneAck() async throws {
        let c = try await TestCoordinator.start(backends: "[]")
        let (b, welcome) = try await backend(c, "gpu-a", incarnation: 5)
        // heartbeat_ms is what the transport does: half of links.keepalive_seconds (10 s).
        #expect(welcome["heartbeat_ms"] as? Int == 5000)
        #expect(welcome["known"] == nil)
        let sends: [(String, Bool, Int)] = [
            (capabilities(5, 1, "ready"), true, 1),
            (capabilities(5, 1, "ready"), false, 1),  // duplicate
            (capabilities(5, 1, "loading"), false, 1),  // same version, other content
            (capabilities(5, 2, "ready"), true, 2),
            (capabilities(5, 1, "ready"), false, 2),  // older
        ]
        for (json, applied, revision) in sends {
            await b.send(json)
            let ack = try await b.next(type: "capabilities_ack")
            #expect(ack["applied"] as? Bool == applied, "\(json) -> \(ack)")
            #expect(ack["revision"] as? Int == revision && ack["incarnation"] as? Int == 5, "\(ack)")
        }
        // A round trip after the last one: no second ack is on its way for any of them.
        await b.send(capabilities(5, 3, "ready"))
        _ = try await b.next(type: "capabilities_ack")
        #expect(b.all { $0["type"] as? String == "capabilities_ack" }.count == sends.count + 1)
        await b.close()
        await c.stop()
    }

    /// A remote `hello` under a local backend's name took over its id (-1): the local backend's
    /// running job was requeued as if it restarted, and the name kept pointing at a link that was
    /// gone. It is refused (`forbidden`, close 4007), and the local backend runs on.
    @Test func aRemoteBackendCannotTakeALocalBackendsName() async throws {
        let c = try await TestCoordinator.start(
            backends: #"[{"name": "local-gpu", "kind": "simulated", "features": ["image"], "job_seconds": {"default": 600}}]"#)
        let job = try await HTTP.post(
            "http://127.0.0.1:\(c.port)/v1/batches", #"{"jobs":[{"kind":"image","count":1}]}"#)
        let jobID = ((job.json["jobs"] as? [Any])?.first as? Int) ?? -1
        try await HTTP.waitFor("http://127.0.0.1:\(c.port)/v1/jobs/\(jobID)", "running on -1") { r in
            r.json["state"] as? String == "running" && r.json["backend"] as? Int == -1
        }
        let impostor = try await WirePeer(port: c.port, subprotocol: Self.backendV1)
        await impostor.send(hello("local-gpu", incarnation: 99, id: "h1"))
        let refused = try await impostor.next(type: "error")
        #expect(refused["code"] as? String == "forbidden" && refused["id"] as? String == "h1", "\(refused)")
        #expect(try await impostor.closed() == 4007)
        let after = try await HTTP.get("http://127.0.0.1:\(c.port)/v1/jobs/\(jobID)")
        #expect(after.json["state"] as? String == "running" && after.json["backend"] as? Int == -1, "\(after.json)")
        #expect(after.json["attempt"] as? Int == 1)
        await c.stop()
    }

    @Test func errorsEchoTheRequestIDAndCloseAsTheSpecSays() async throws {
        let c = try await TestCoordinator.start(backends: "[]")
        // A request before hello.
        let early = try await WirePeer(port: c.port, subprotocol: Self.clientV1)
        await early.send(#"{"type":"status","id":"early"}"#)
        let notRegistered = try await early.next(type: "error")
        #expect(notRegistered["code"] as? String == "not_registered" && notRegistered["id"] as? String == "early")
        #expect(try await early.closed() == 1008)

        // A hello that fails validation ends the link at once (the hello timeout is 120 s here).
        let bad = try await WirePeer(port: c.port, subprotocol: Self.backendV1)
        await bad.send(#"{"type":"hello","id":"hx","role":"backend","name":"x","token":"","versions":[],"incarnation":1,"slots":1}"#)
        let invalid = try await bad.next(type: "error")
        #expect(invalid["code"] as? String == "invalid_message" && invalid["id"] as? String == "hx", "\(invalid)")
        #expect(try await bad.closed() == 1008)

        // A second hello.
        let (first, _) = try await backend(c, "gpu-b", incarnation: 10)
        await first.send(hello("gpu-b", incarnation: 10, id: "h2"))
        let second = try await first.next(type: "error")
        #expect(second["code"] as? String == "unexpected_message" && second["id"] as? String == "h2")
        #expect(try await first.closed() == 1008)

        // An older incarnation than the one linked.
        let (current, _) = try await backend(c, "gpu-c", incarnation: 10)
        let stale = try await WirePeer(port: c.port, subprotocol: Self.backendV1)
        await stale.send(hello("gpu-c", incarnation: 9, id: "h9"))
        let staleError = try await stale.next(type: "error")
        #expect(staleError["code"] as? String == "stale_incarnation" && staleError["id"] as? String == "h9")
        #expect((staleError["details"] as? [String: Any])?["incarnation"] as? Int == 10, "\(staleError)")
        #expect(try await stale.closed() == 1008)
        // Not linked any more, still known: refused the same (6.2), so a backend whose clock
        // went backwards learns the incarnation to pass.
        let (gone, _) = try await backend(c, "gpu-g", incarnation: 20)
        await gone.send(#"{"type":"goodbye","reason":"shutdown"}"#)
        await gone.close()
        try await HTTP.waitFor("http://127.0.0.1:\(c.port)/v1/backends", "gpu-g down") { r in
            (r.json["backends"] as? [[String: Any]] ?? []).contains { $0["name"] as? String == "gpu-g" && $0["link"] as? String == "down" }
        }
        let behind = try await WirePeer(port: c.port, subprotocol: Self.backendV1)
        await behind.send(hello("gpu-g", incarnation: 19, id: "h19"))
        let behindError = try await behind.next(type: "error")
        #expect(behindError["code"] as? String == "stale_incarnation", "\(behindError)")
        #expect((behindError["details"] as? [String: Any])?["incarnation"] as? Int == 20, "\(behindError)")
        #expect(try await behind.closed() == 1008)

        // A newer link with the same name replaces the old one: goodbye, no error, then 4005.
        let (replacement, _) = try await backend(c, "gpu-c", incarnation: 10)
        // `sync` may come first: the coordinator sends one every `sync_ms` (spec 6.3), and a
        // loaded machine can take that long to get here.
        var goodbye = try await current.next("the goodbye")
        while goodbye["type"] as? String == "sync" { goodbye = try await current.next("the goodbye") }
        #expect(goodbye["type"] as? String == "goodbye" && goodbye["reason"] as? String == "replaced", "\(goodbye)")
        #expect(try await current.closed() == 4005)
        #expect(current.all { $0["type"] as? String == "error" }.isEmpty)

        // Nesting too deep after the id: the error still names the request.
        let client = try await WirePeer(port: c.port, subprotocol: Self.clientV1)
        await client.send(clientHello())
        _ = try await client.next(type: "welcome")
        let deep = String(repeating: "[", count: 80) + String(repeating: "]", count: 80)
        await client.send(#"{"type":"submit","id":"deep","jobs":[{"kind":"image","params":{"p":\#(deep)}}]}"#)
        let depth = try await client.next(type: "error")
        #expect(depth["code"] as? String == "limit_exceeded" && depth["id"] as? String == "deep", "\(depth)")

        for peer in [early, bad, first, current, stale, replacement, client] { await peer.close() }
        await c.stop()
    }

    @Test func jobEventsAndHistoryCarryWhatTheSpecPromises() async throws {
        // The local backend is busy for a long time with the first job; the raw backend is
        // registered but has not announced, so the gate holds the second.
        // Nothing expires while the test reads (its process may stall on a loaded machine): the
        // gate waits for gpu-d, and gpu-d, inhibited after its failure, does not steal the job
        // back from local before the history is read.
        let c = try await TestCoordinator.start(
            backends: #"[{"name": "local", "kind": "simulated", "features": ["frameinterps", "video"], "job_seconds": {"default": 600}}]"#,
            settings: [("gate.window_seconds", "600"), ("routing.inhibit_after_failure_seconds", "600")])
        let (b, welcome) = try await backend(c, "gpu-d", incarnation: 7)
        let remoteID = try #require(welcome["backend"] as? Int)
        let client = try await WirePeer(port: c.port, subprotocol: Self.clientV1)
        await client.send(clientHello())
        _ = try await client.next(type: "welcome")
        await client.send(#"{"type":"subscribe","id":"s1"}"#)
        _ = try await client.next(type: "subscribed")
        await client.send(#"{"type":"submit","id":"r1","jobs":[{"kind":"video","needs":["frameinterps","video"],"count":2}]}"#)
        // `accepted` comes before any event of the batch.
        let accepted = try await client.next("accepted")
        #expect(accepted["type"] as? String == "accepted", "\(accepted)")
        let ids = try #require(accepted["jobs"] as? [Int])
        // Events of both jobs interleave: each job's are kept until asked for.
        var pending: [Int: [[String: Any]]] = [:]
        func events(_ job: Int, _ count: Int) async throws -> [[String: Any]] {
            while pending[job, default: []].count < count {
                let m = try await client.next(type: "job")
                pending[m["job"] as? Int ?? 0, default: []].append(m)
            }
            let out = Array(pending[job, default: []].prefix(count))
            pending[job]?.removeFirst(count)
            return out
        }
        func summary(_ e: [[String: Any]]) -> [String] {
            e.map { m in
                "\(m["event"] ?? "?") a\(m["attempt"] ?? "?")" + ((m["backend"] as? Int).map { " b\($0)" } ?? "")
                    + ((m["cause"] as? String).map { " \($0)" } ?? "")
            }
        }
        let first = try await events(ids[0], 4)
        #expect(summary(first) == ["queued a0", "gated a0", "released a0 b-1 idle_backend", "bound a1 b-1"])
        let second = try await events(ids[1], 2)
        #expect(summary(second) == ["queued a0", "gated a0"])

        await b.send(capabilities(7, 1, "ready"))
        let assign = try await b.next(type: "assign")
        #expect(assign["job"] as? Int == ids[1] && assign["attempt"] as? Int == 1)
        #expect(summary(try await events(ids[1], 2)) == ["released a0 b\(remoteID) announced", "bound a1 b\(remoteID)"])

        // A retryable failure: requeued with the backend's own code, then bound again (attempt 2).
        let lease = try #require(assign["lease"] as? Int)
        await b.send(#"{"type":"failed","job":\#(ids[1]),"lease":\#(lease),"code":"out_of_memory","message":"CUDA out of memory","retryable":true}"#)
        let requeued = try await events(ids[1], 2)
        #expect(summary(requeued) == ["requeued a1 b\(remoteID)", "bound a2 b-1"])
        let error = requeued[0]["error"] as? [String: Any]
        #expect(error?["code"] as? String == "out_of_memory" && error?["message"] as? String == "CUDA out of memory")

        // A late report under the dead lease: stale_lease naming the report, nothing else.
        await b.send(#"{"type":"completed","job":\#(ids[1]),"lease":\#(lease),"result":{}}"#)
        let staleLease = try await b.next(type: "stale_lease")
        #expect(staleLease["about"] as? String == "completed" && staleLease["lease"] as? Int == lease)
        #expect(b.all { $0["type"] as? String == "revoke" }.isEmpty)

        // The history: outcome codes, the error apart.
        let info = try await HTTP.get("http://127.0.0.1:\(c.port)/v1/jobs/\(ids[1])").json
        let history = try #require(info["history"] as? [[String: Any]])
        #expect(history.map { $0["outcome"] as? String } == ["requeued", "bound"])
        #expect((history[0]["error"] as? [String: Any])?["code"] as? String == "out_of_memory")
        #expect(info["attempt"] as? Int == 2)

        await client.close()
        await b.close()
        await c.stop()
    }

    @Test func aSubscriptionSendsTheEventsItNamesOnceEach() async throws {
        let c = try await TestCoordinator.start(backends: "[]")
        let (b, _) = try await backend(c, "gpu-e", incarnation: 3)
        await b.send(capabilities(3, 1, "ready"))
        _ = try await b.next(type: "capabilities_ack")
        let a = try await WirePeer(port: c.port, subprotocol: Self.clientV1)
        await a.send(clientHello())
        _ = try await a.next(type: "welcome")
        await a.send(#"{"type":"subscribe","id":"s1","events":["bound","completed","no_such_event"]}"#)
        _ = try await a.next(type: "subscribed")

        // Runs one job on the raw backend: assign, started, completed.
        func run() async throws -> Int {
            let assign = try await b.next(type: "assign")
            let job = try #require(assign["job"] as? Int), lease = try #require(assign["lease"] as? Int)
            await b.send(#"{"type":"started","job":\#(job),"lease":\#(lease)}"#)
            await b.send(#"{"type":"completed","job":\#(job),"lease":\#(lease),"result":{}}"#)
            return job
        }
        func events(_ peer: WirePeer, job: Int) -> [String] {
            peer.all { $0["type"] as? String == "job" && $0["job"] as? Int == job }.map { $0["event"] as? String ?? "?" }
        }
        await a.send(#"{"type":"submit","id":"r1","jobs":[{"kind":"video","needs":["video"]}]}"#)
        let first = try await run()
        _ = try await a.next(type: "job")
        let end = try await a.next(type: "job")
        #expect(end["event"] as? String == "completed")
        #expect(events(a, job: first) == ["bound", "completed"], "no queued, no started")

        // The same link follows the next batch for `started` too: each event once.
        await a.send(#"{"type":"submit","id":"r2","jobs":[{"kind":"video","needs":["video"]}]}"#)
        let accepted = try await a.next(type: "accepted")
        let batch = try #require(accepted["batch"] as? Int)
        await a.send(#"{"type":"subscribe","id":"s2","batch":\#(batch),"events":["started"]}"#)
        _ = try await a.next(type: "subscribed")
        let second = try await run()
        while try await a.next(type: "job")["event"] as? String != "completed" {}
        #expect(events(a, job: second) == ["bound", "started", "completed"])

        // Snapshots only when named; a second subscription of a scope adds its names.
        let late = try await WirePeer(port: c.port, subprotocol: Self.clientV1)
        await late.send(clientHello(id: "c2"))
        _ = try await late.next(type: "welcome")
        await late.send(#"{"type":"subscribe","id":"s3","batch":\#(batch),"events":["completed"]}"#)
        _ = try await late.next(type: "subscribed")
        await late.send(#"{"type":"subscribe","id":"s4","batch":\#(batch),"events":["snapshot"]}"#)
        _ = try await late.next(type: "subscribed")
        await late.send(#"{"type":"status","id":"q"}"#)
        _ = try await late.next(type: "status_report")
        let seen = late.all { $0["type"] as? String == "job" }
        #expect(seen.map { "\($0["event"] ?? "?") \($0["state"] ?? "?")" } == ["snapshot completed"], "\(seen)")

        // A repeated name is an invalid message.
        await late.send(#"{"type":"subscribe","id":"s5","events":["bound","bound"]}"#)
        let invalid = try await late.next(type: "error")
        #expect(invalid["code"] as? String == "invalid_message" && invalid["id"] as? String == "s5", "\(invalid)")

        for peer in [a, late, b] { await peer.close() }
        await c.stop()
    }

    @Test func aLargeSnapshotIsPacedToTheReaderAndEachJobStillEndsOnce() async throws {
        // 4,000 finished jobs: their snapshots (about 600 KB) are 40 times the high-water mark,
        // which closed the link as a slow peer when they were all queued at once.
        let c = try await TestCoordinator.start(
            backends: #"[{"name": "local", "kind": "simulated", "slots": 64, "job_seconds": {"default": 0}}]"#,
            settings: [("links.outbound_high_water_bytes", "16384"), ("jobs.retain_finished", "10000")])
        let base = "http://127.0.0.1:\(c.port)"
        let images = try await HTTP.post("\(base)/v1/batches", #"{"jobs": [\#(Array(repeating: #"{"kind": "image", "count": 1000}"#, count: 4).joined(separator: ","))]}"#)
        #expect(images.status == 201, "\(images.json)")
        try await HTTP.waitFor("\(base)/v1/batches/1", "batch 1 done") { $0.json["done"] as? Bool == true }
        // Then 20 videos, bound to the one backend with `video` (ids above every image's), so
        // their snapshots come last, and they end while the snapshots are on their way.
        let (b, videoIDs, leases) = try await videosHeldBy(c, "gpu-s", incarnation: 2, count: 20)
        let watcher = try await welcomedClient(c)
        await watcher.send(#"{"type":"subscribe","id":"all"}"#)
        _ = try await watcher.next(type: "subscribed")
        await b.sendAll(videoIDs.map { #"{"type":"completed","job":\#($0),"lease":\#(leases[$0]!),"result":{}}"# })

        // Every job's snapshot arrives, and every video's end: its `completed`, or a snapshot
        // that says completed.
        func isEnd(_ m: [String: Any]) -> Bool {
            m["event"] as? String == "completed" || (m["event"] as? String == "snapshot" && m["state"] as? String == "completed")
        }
        var seen: [[String: Any]] = []
        while true {
            seen = watcher.all { $0["type"] as? String == "job" }
            let snapshots = Set(seen.filter { $0["event"] as? String == "snapshot" }.compactMap { $0["job"] as? Int })
            let ended = Set(seen.filter(isEnd).compactMap { $0["job"] as? Int })
            if snapshots.count == 4020 && Set(videoIDs).isSubset(of: ended) { break }
            _ = try await watcher.next(type: "job")
        }
        #expect(try await HTTP.get("\(base)/healthz").status == 200)
        var firstEvent: [Int: String] = [:]
        var snapshots: [Int: Int] = [:]
        var ends: [Int: Int] = [:]
        for m in seen {
            let job = m["job"] as? Int ?? 0
            if firstEvent[job] == nil { firstEvent[job] = m["event"] as? String }
            if m["event"] as? String == "snapshot" { snapshots[job, default: 0] += 1 }
            if isEnd(m) { ends[job, default: 0] += 1 }
        }
        #expect(firstEvent.count == 4020 && firstEvent.values.allSatisfy { $0 == "snapshot" }, "a job's snapshot comes first")
        #expect(snapshots.values.allSatisfy { $0 == 1 }, "one snapshot per job")
        #expect(videoIDs.allSatisfy { ends[$0] == 1 }, "each video ends once on the link: \(videoIDs.map { ends[$0] ?? 0 })")
        let early = seen.filter { m in m["event"] as? String == "snapshot" && m["state"] as? String == "completed" && videoIDs.contains(m["job"] as? Int ?? 0) }
        print("snapshot stream: \(early.count) of 20 videos got a snapshot in place of their completed")

        for peer in [watcher, b] { await peer.close() }
        await c.stop()
    }

    /// `finished_snapshots`: of the jobs that had ended, only the most recently ended get a
    /// snapshot; `subscribed.omitted` counts the others; unfinished jobs all get theirs.
    @Test func finishedSnapshotsKeepsTheMostRecentlyEndedAndCountsTheRest() async throws {
        let c = try await TestCoordinator.start(
            backends: #"[{"name": "local", "kind": "simulated", "slots": 64, "job_seconds": {"default": 0}}]"#)
        let base = "http://127.0.0.1:\(c.port)"
        let old = try await HTTP.post("\(base)/v1/batches", #"{"jobs": [{"kind": "image", "count": 300}]}"#)
        let oldBatch = try #require(old.json["batch"] as? Int)
        try await HTTP.waitFor("\(base)/v1/batches/\(oldBatch)", "old images done") { $0.json["done"] as? Bool == true }
        // Nothing has `nowhere`: these fail at once.
        let failing = try await HTTP.post("\(base)/v1/batches", #"{"jobs": [{"kind": "video", "needs": ["nowhere"], "count": 5}]}"#)
        let failingIDs = try #require(failing.json["jobs"] as? [Int])
        try await HTTP.waitFor("\(base)/v1/batches/\(failing.json["batch"] as? Int ?? 0)", "failed") { $0.json["done"] as? Bool == true }
        let recent = try await HTTP.post("\(base)/v1/batches", #"{"jobs": [{"kind": "image", "count": 50}]}"#)
        let recentIDs = try #require(recent.json["jobs"] as? [Int])
        try await HTTP.waitFor("\(base)/v1/batches/\(recent.json["batch"] as? Int ?? 0)", "recent done") { $0.json["done"] as? Bool == true }
        // Two videos that stay unfinished until the backend says so.
        let (b, videoIDs, leases) = try await videosHeldBy(c, "gpu-f", incarnation: 3, count: 2)
        let watcher = try await welcomedClient(c)
        await watcher.send(#"{"type":"subscribe","id":"recent","finished_snapshots":60}"#)
        let subscribed = try await watcher.next(type: "subscribed")
        let omitted = subscribed["omitted"] as? [String: Any]
        #expect(omitted?["completed"] as? Int == 295 && omitted?["failed"] as? Int == 0 && omitted?["canceled"] as? Int == 0, "\(subscribed)")
        var snapshots: [[String: Any]] = []
        while snapshots.count < 62 { snapshots.append(try await watcher.next(type: "job")) }
        let ids = snapshots.compactMap { $0["job"] as? Int }
        #expect(snapshots.allSatisfy { $0["event"] as? String == "snapshot" })
        #expect(ids == ids.sorted() && Set(ids).count == 62, "one snapshot per job, in id order")
        #expect(Set(recentIDs + failingIDs + videoIDs).isSubset(of: Set(ids)), "the most recently ended, and every unfinished job")
        #expect(ids.filter { $0 <= 300 }.count == 5, "the 5 images of the first batch that ended last")
        // The videos end: once each, as events.
        await b.sendAll(videoIDs.map { #"{"type":"completed","job":\#($0),"lease":\#(leases[$0]!),"result":{}}"# })
        let ends = [try await watcher.next(type: "job"), try await watcher.next(type: "job")]
        #expect(Set(ends.compactMap { $0["job"] as? Int }) == Set(videoIDs) && ends.allSatisfy { $0["event"] as? String == "completed" })

        // One batch, none of its ended jobs: no snapshot at all.
        await watcher.send(#"{"type":"subscribe","id":"none","batch":\#(oldBatch),"finished_snapshots":0}"#)
        let none = try await watcher.next(type: "subscribed")
        #expect((none["omitted"] as? [String: Any])?["completed"] as? Int == 300, "\(none)")
        // Without snapshots, nothing is omitted: no count.
        await watcher.send(#"{"type":"subscribe","id":"ends","finished_snapshots":5,"events":["completed"]}"#)
        let ends2 = try await watcher.next(type: "subscribed")
        #expect(ends2["omitted"] == nil, "\(ends2)")
        await watcher.send(#"{"type":"subscribe","id":"bad","finished_snapshots":-1}"#)
        let invalid = try await watcher.next(type: "error")
        #expect(invalid["code"] as? String == "invalid_message" && invalid["id"] as? String == "bad", "\(invalid)")
        await watcher.send(#"{"type":"status","id":"q"}"#)
        _ = try await watcher.next(type: "status_report")
        #expect(watcher.all { $0["type"] as? String == "job" }.count == 64, "no snapshot after a subscription with 0")

        for peer in [watcher, b] { await peer.close() }
        await c.stop()
    }

    /// A backend that links again (same incarnation) while a job waits for it: the job is bound
    /// as it registers, and its `assign` follows `welcome`. `welcome.bindings` does not list it,
    /// or a backend following 6.6 would answer `unknown_job` (it does not hold it yet) and the job
    /// would lose an attempt.
    @Test func aJobBoundAsTheBackendRegistersComesAsAnAssignNotAsABinding() async throws {
        let c = try await TestCoordinator.start(backends: "[]", settings: [("links.suspect_grace_seconds", "600")])
        let base = "http://127.0.0.1:\(c.port)"
        let (first, _) = try await backend(c, "gpu-w", incarnation: 5)
        await first.send(capabilities(5, 1, "ready"))
        _ = try await first.next(type: "capabilities_ack")
        await first.close()
        try await HTTP.waitFor("\(base)/v1/backends", "gpu-w suspect") { r in
            (r.json["backends"] as? [[String: Any]])?.first?["link"] as? String == "suspect"
        }
        let submitted = try await HTTP.post("\(base)/v1/batches", #"{"jobs": [{"kind": "video", "needs": ["video"]}]}"#)
        let job = try #require((submitted.json["jobs"] as? [Int])?.first)
        let waiting = try await HTTP.get("\(base)/v1/jobs/\(job)")
        #expect(["queued", "gated"].contains(waiting.json["state"] as? String ?? ""), "\(waiting.text)")

        let (again, welcome) = try await backend(c, "gpu-w", incarnation: 5)
        #expect((welcome["bindings"] as? [Any])?.isEmpty ?? true, "\(welcome)")
        let assign = try await again.next(type: "assign")
        #expect(assign["job"] as? Int == job && assign["attempt"] as? Int == 1, "\(assign)")
        await again.send(#"{"type":"completed","job":\#(job),"lease":\#(assign["lease"] as? Int ?? 0),"result":{}}"#)
        let done = try await HTTP.waitFor("\(base)/v1/jobs/\(job)", "job done") { $0.json["state"] as? String == "completed" }
        #expect(done.json["attempt"] as? Int == 1, "no attempt lost: \(done.text)")
        await again.close()
        await c.stop()
    }

    @Test func anUpgradeOfferingNoKnownSubprotocolGetsHTTP400() async throws {
        let c = try await TestCoordinator.start(backends: "[]")
        for offer in ["muster.worker.v7", nil] {
            var headers = [
                "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            ]
            if let offer { headers["Sec-WebSocket-Protocol"] = offer }
            let r = try await HTTP.get("http://127.0.0.1:\(c.port)/v1/ws", headers: headers)
            #expect(r.status == 400, "\(offer ?? "none"): \(r.status) \(r.text)")
            #expect(r.json["code"] as? String == "invalid_message", "\(r.text)")
        }
        await c.stop()
    }

    @Test func aNewIncarnationHidesTheOldSnapshot() async throws {
        let c = try await TestCoordinator.start(backends: "[]")
        let (old, _) = try await backend(c, "gpu-e", incarnation: 100)
        await old.send(capabilities(100, 1, "ready"))
        _ = try await old.next(type: "capabilities_ack")
        let (restarted, welcome) = try await backend(c, "gpu-e", incarnation: 200)
        #expect(welcome["known"] == nil, "\(welcome)")
        let list = try await HTTP.get("http://127.0.0.1:\(c.port)/v1/backends").json
        let entry = (list["backends"] as? [[String: Any]])?.first { $0["name"] as? String == "gpu-e" }
        #expect(entry != nil && entry?["capabilities"] == nil, "\(list)")
        await restarted.send(capabilities(200, 1, "ready"))
        let ack = try await restarted.next(type: "capabilities_ack")
        #expect(ack["applied"] as? Bool == true && ack["incarnation"] as? Int == 200)
        await old.close()
        await restarted.close()
        await c.stop()
    }
}
