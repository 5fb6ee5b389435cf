import MusterProtocol
import Testing

/// Random but reproducible messages: everything the encoders write must decode to the same value.
struct MessageGenerator {
    var rng: SplitMix64

    mutating func int(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &rng) }
    mutating func u64() -> UInt64 {
        switch int(0...3) {
        case 0: UInt64(int(0...9))
        case 1: UInt64.max - UInt64(int(0...9))
        default: rng.next() >> UInt64(int(0...63))
        }
    }
    mutating func bool() -> Bool { int(0...1) == 1 }
    mutating func maybe<T>(_ make: (inout MessageGenerator) -> T) -> T? { bool() ? make(&self) : nil }

    mutating func feature() -> String {
        let first = "abcdefghijklmnopqrstuvwxyz"
        let rest = first + "0123456789_.-"
        var s = String(first.randomElement(using: &rng)!)
        for _ in 0..<int(0...20) { s.append(rest.randomElement(using: &rng)!) }
        return s
    }
    mutating func features(max: Int) -> [String] { Array(Set((0..<int(0...max)).map { _ in feature() })).sorted() }
    mutating func name() -> String { "n" + feature() }
    mutating func code() -> String { String(feature().map { $0 == "." || $0 == "-" ? "_" : $0 }) }
    /// Text with quotes, escapes, controls, non-ASCII and astral characters.
    mutating func text(max: Int = 40) -> String {
        let pool: [Character] = [
            "a", "Z", "0", " ", "\"", "\\", "/", "\n", "\t", "\u{01}", "\u{1F}", "\u{7F}", "é", "漢",
            "😀", "\u{2028}", "{", "}", "[", "]", ":", ",",
        ]
        return String((0..<int(0...max)).map { _ in pool.randomElement(using: &rng)! })
    }
    mutating func label() -> String {
        "m" + text().filter { !($0.isASCII && ($0.asciiValue! < 0x20 || $0.asciiValue! == 0x7F)) }
    }
    mutating func fraction() -> Double {
        [0, 1, 0.5, 0.1, 1e-9, Double(int(0...1000)) / 1000, Double.random(in: 0...1, using: &rng)][int(0...6)]
    }
    mutating func raw(object: Bool) -> RawJSON {
        let objects = [
            #"{}"#, #"{"a":1}"#, #"{"prompt":"x\"y","n":[1,2.5e10,-0,null,true,{"d":{}}]}"#, "{ \"spaced\" : [ ] }",
        ]
        let scalars = ["1", "\"s\"", "null", "[1,\"two\"]", "123456789012345678901234567890.5e-7"]
        return RawJSON(unchecked: object || bool() ? objects[int(0...3)] : scalars[int(0...4)])
    }
    /// Revisions start at 1 (Protocol/README.md section 1).
    mutating func version() -> CapabilityVersion { CapabilityVersion(incarnation: Incarnation(u64()), revision: max(1, u64())) }
    mutating func backendID() -> BackendID {
        let v = Int64(bitPattern: rng.next() >> UInt64(int(0...63)))
        return BackendID(v == 0 ? 1 : (bool() ? v : -Swift.abs(v == Int64.min ? 1 : v)))
    }
    mutating func snapshot() -> CapabilitySnapshot {
        CapabilitySnapshot(
            version: version(), state: BackendState.allCases.randomElement(using: &rng)!, features: features(max: 10),
            modelsAvailable: (0..<int(0...5)).map { _ in label() }, modelsLoaded: (0..<int(0...2)).map { _ in label() },
            slots: int(0...1024), speed: maybe { Double($0.int(1...4000)) / 4 })
    }
    mutating func errorBody() -> Wire.ErrorBody {
        Wire.ErrorBody(code: ErrorCode(code()), message: text(), details: maybe { $0.raw(object: true) })
    }

    mutating func backendIn() -> BackendToCoordinator {
        switch int(0...8) {
        case 0:
            .hello(
                .init(
                    id: maybe { $0.label() }, name: name(), token: label(), versions: [1, int(2...9)],
                    incarnation: Incarnation(u64()), slots: int(0...1024), software: maybe { $0.label() }))
        case 1: .capabilities(snapshot())
        case 2: .started(.init(job: JobID(u64()), lease: Lease(u64())))
        case 3:
            .progress(.init(job: JobID(u64()), lease: Lease(u64()), fraction: fraction(), message: maybe { $0.text() },
                    timed: maybe { $0.bool() }))
        case 4: .completed(.init(job: JobID(u64()), lease: Lease(u64()), result: raw(object: false)))
        case 5:
            .failed(
                .init(
                    job: JobID(u64()), lease: Lease(u64()), code: ErrorCode(code()), message: text(), retryable: bool())
            )
        case 6:
            .loadModelResult(
                .init(
                    id: maybe { $0.label() }, model: label(), ok: bool(), durationMs: maybe { $0.u64() },
                    error: maybe { $0.errorBody() }))
        case 7:
            .error(
                .init(
                    id: maybe { $0.label() }, code: ErrorCode(code()), message: text(),
                    details: maybe { $0.raw(object: true) }))
        default: .goodbye(.init(reason: code(), message: maybe { $0.text() }, reconnectAfterMs: maybe { $0.u64() }))
        }
    }

    mutating func backendOut() -> CoordinatorToBackend {
        switch int(0...8) {
        case 0:
            .welcome(
                .init(
                    id: maybe { $0.label() }, backend: backendID(), version: 1, coordinator: label(),
                    heartbeatMs: u64(), syncMs: u64(), maxMessageBytes: int(1024...1 << 30),
                    known: maybe { $0.version() },
                    bindings: (0..<int(0...3)).map { _ in Wire.Binding(job: JobID(u64()), lease: Lease(u64())) }))
        case 1: .capabilitiesAck(.init(version: version(), applied: bool()))
        case 2: .sync(.init(known: maybe { $0.version() }))
        case 3:
            .assign(
                .init(
                    job: JobID(u64()), lease: Lease(u64()), batch: BatchID(u64()), attempt: int(1...1000),
                    kind: feature(), needs: features(max: 5), model: maybe { $0.label() }, params: raw(object: true)))
        case 4: .cancel(.init(job: JobID(u64()), lease: Lease(u64())))
        case 5: .revoke(.init(job: JobID(u64()), lease: Lease(u64())))
        case 6: .loadModel(.init(id: maybe { $0.label() }, model: label()))
        case 7: .staleLease(.init(job: JobID(u64()), lease: Lease(u64()), about: code()))
        default: .drain(.init(reason: maybe { $0.text() }))
        }
    }

    mutating func clientIn() -> ClientToCoordinator {
        switch int(0...6) {
        case 0: .hello(.init(id: maybe { $0.label() }, name: name(), token: label(), software: maybe { $0.label() }))
        case 1:
            .submit(
                .init(
                    id: maybe { $0.label() },
                    batch: .init(
                        batchKey: maybe { $0.label() }, owner: maybe { $0.label() },
                        jobs: (0..<int(1...4)).map { _ in
                            Wire.JobRequest(
                                kind: feature(), needs: features(max: 3), model: maybe { $0.label() },
                                params: raw(object: true), count: int(1...10), priority: int(-1000...1000),
                                owner: maybe { $0.label() })
                        })))
        case 2: .subscribe(.init(id: maybe { $0.label() }, batch: maybe { BatchID($0.u64()) }))
        case 3: .cancel(.init(id: maybe { $0.label() }, target: bool() ? .job(JobID(u64())) : .batch(BatchID(u64()))))
        case 4: .status(.init(id: maybe { $0.label() }))
        case 5: .drain(.init(id: maybe { $0.label() }, backend: backendID()))
        default: .loadModel(.init(id: maybe { $0.label() }, model: label(), backend: maybe { $0.backendID() }))
        }
    }

    mutating func gateWait() -> Wire.GateWait {
        Wire.GateWait(
            features: features(max: 3), model: maybe { $0.label() },
            backends: (0..<int(0...2)).map { _ in
                Wire.WaitingBackend(id: backendID(), name: name(), reason: code())
            }, untilMs: maybe { $0.u64() }, jobs: maybe { $0.int(0...100) })
    }

    mutating func clientOut() -> CoordinatorToClient {
        switch int(0...6) {
        case 0:
            .accepted(
                .init(
                    id: maybe { $0.label() }, batch: BatchID(u64()), jobs: (0..<int(0...5)).map { _ in JobID(u64()) },
                    duplicate: bool()))
        case 1:
            .job(
                .init(
                    job: JobID(u64()), batch: BatchID(u64()), event: JobEventKind(code()),
                    state: JobState.allCases.randomElement(using: &rng)!, attempt: int(0...1000), atMs: u64(),
                    backend: maybe { $0.backendID() }, progress: maybe { $0.fraction() }, message: maybe { $0.text() },
                    result: maybe { $0.raw(object: false) }, error: maybe { $0.errorBody() },
                    waiting: maybe { $0.gateWait() }, cause: maybe { ReleaseCause($0.code()) }, expectedMs: maybe { $0.u64() },
                    runnerUp: maybe { $0.backendID() }, runnerUpExpectedMs: maybe { $0.u64() }))
        case 2: .canceled(.init(id: maybe { $0.label() }, jobs: (0..<int(0...5)).map { _ in JobID(u64()) }))
        case 3:
            .statusReport(
                .init(
                    id: maybe { $0.label() },
                    readiness: .init(
                        ready: bool(),
                        reasons: features(max: 2).map { String($0.map { $0 == "." || $0 == "-" ? "_" : $0 }) }.sorted(),
                        readyBackends: int(0...9), heldJobs: int(0...9), waiting: [gateWait()]),
                    backends: [
                        Wire.BackendInfo(
                            id: backendID(), name: name(), local: bool(),
                            link: Wire.LinkState.allCases.randomElement(using: &rng)!,
                            capabilities: maybe { $0.snapshot() }, inFlight: int(0...4), running: int(0...4),
                            capacity: int(0...4), registeredMs: u64(), firstAnnouncedMs: maybe { $0.u64() },
                            lastSeenMs: maybe { $0.u64() }, inhibitedUntilMs: maybe { $0.u64() },
                            estimates: maybe { g in
                                Wire.Estimates(
                                    speed: Double(g.int(1...400)) / 4, speedSource: "measured",
                                    modelLoadSeconds: g.maybe { Double($0.int(0...100)) },
                                    jobs: [
                                        Wire.JobEstimate(
                                            kind: "image", model: g.maybe { $0.label() },
                                            seconds: Double(g.int(0...1000)) / 8, measured: g.bool())
                                    ])
                            })
                    ],
                    queue: .init(
                        queued: int(0...9), gated: int(0...9), bound: int(0...9), running: int(0...9),
                        byPriority: [.init(priority: int(-1000...1000), jobs: int(0...9))])))
        case 4: .modelsLoading(.init(id: maybe { $0.label() }, model: label(), backends: [backendID()]))
        case 5: .draining(.init(id: maybe { $0.label() }, backend: backendID()))
        default: .welcome(.init(id: maybe { $0.label() }, coordinator: label(), heartbeatMs: u64()))
        }
    }
}

@Suite struct RoundTripTests {
    @Test func generatedMessagesRoundTrip() throws {
        var g = MessageGenerator(rng: SplitMix64(seed: 2026))
        for _ in 0..<3000 {
            let a = g.backendIn()
            #expect(try BackendToCoordinator.decode(a.encode()) == a, "\(a.encodedString())")
            let b = g.backendOut()
            #expect(try CoordinatorToBackend.decode(b.encode()) == b, "\(b.encodedString())")
            let c = g.clientIn()
            #expect(try ClientToCoordinator.decode(c.encode()) == c, "\(c.encodedString())")
            let d = g.clientOut()
            #expect(try CoordinatorToClient.decode(d.encode()) == d, "\(d.encodedString())")
        }
    }

    @Test func decodingIsIndependentOfMemberOrder() throws {
        let a = try CoordinatorToBackend.decode(
            #"{"params":{"p":1},"needs":["video"],"kind":"video","attempt":2,"batch":3,"lease":4,"job":5,"type":"assign"}"#
        )
        #expect(
            a
                == .assign(
                    .init(
                        job: JobID(5), lease: Lease(4), batch: BatchID(3), attempt: 2, kind: "video", needs: ["video"],
                        params: RawJSON(unchecked: #"{"p":1}"#))))
    }

    @Test func opaqueValuesPassThroughVerbatim() throws {
        let params = #"{ "z" : 1e999, "a" : [ 123456789012345678901234567890 ], "s": "\u00e9" }"#
        let text =
            #"{"type":"assign","job":1,"lease":2,"batch":3,"attempt":1,"kind":"image","needs":[],"params":"# + params
            + "}"
        guard case .assign(let a) = try CoordinatorToBackend.decode(text) else {
            Issue.record("not an assign")
            return
        }
        #expect(a.params.text == params)
        #expect(CoordinatorToBackend.assign(a).encodedString().contains(params))
    }

    @Test func capabilityListsAreNormalised() throws {
        let m = try BackendToCoordinator.decode(
            #"{"type":"capabilities","incarnation":5,"revision":1,"state":"ready","features":["video","frameinterps"],"#
                + #""models":{"available":["b","a"],"loaded":[]},"slots":1}"#)
        guard case .capabilities(let s) = m else {
            Issue.record("not capabilities")
            return
        }
        #expect(s.features == ["frameinterps", "video"])
        #expect(s.modelsAvailable == ["a", "b"])
    }
}

@Suite struct LimitTests {
    @Test func oversizeMessagesAreRefusedBeforeParsing() {
        let limits = ProtocolLimits(maxMessageBytes: 64)
        let text =
            #"{"type":"progress","job":1,"lease":2,"fraction":0.5,"message":"# + "\""
            + String(repeating: "x", count: 64) + "\"}"
        do {
            _ = try BackendToCoordinator.decode(text, limits: limits)
            Issue.record("accepted an oversize message")
        } catch {
            #expect(error.code == .messageTooLarge)
            #expect(error.closeCode == .messageTooBig)
        }
    }

    @Test func paramsResultAndBatchLimits() {
        let limits = ProtocolLimits(maxParamsBytes: 16, maxResultBytes: 8, maxBatchJobs: 5)
        let big = #"{"prompt":"0123456789"}"#
        let cases: [(() throws(ProtocolError) -> Void, String)] = [
            (
                { () throws(ProtocolError) in
                    _ = try CoordinatorToBackend.decode(
                        #"{"type":"assign","job":1,"lease":2,"batch":3,"attempt":1,"kind":"image","needs":[],"params":"#
                            + big + "}",
                        limits: limits)
                }, "params"
            ),
            (
                { () throws(ProtocolError) in
                    _ = try BackendToCoordinator.decode(
                        #"{"type":"completed","job":1,"lease":2,"result":"0123456789"}"#, limits: limits)
                }, "result"
            ),
            (
                { () throws(ProtocolError) in
                    _ = try ClientToCoordinator.decode(
                        #"{"type":"submit","jobs":[{"kind":"image","count":3},{"kind":"image","count":3}]}"#,
                        limits: limits)
                }, "jobs"
            ),
            (
                { () throws(ProtocolError) in
                    _ = try ClientToCoordinator.decode(
                        #"{"type":"submit","jobs":[{"kind":"image","params":"# + big + "}]}", limits: limits)
                }, "jobs[0].params"
            ),
        ]
        for (decode, path) in cases {
            do throws(ProtocolError) {
                try decode()
                Issue.record("accepted past the \(path) limit")
            } catch {
                #expect(error.code == .limitExceeded && error.path == path, "\(error)")
            }
        }
    }

    @Test func wrongRoleClosesWith4003() {
        do {
            _ = try ClientToCoordinator.decode(
                #"{"type":"hello","role":"backend","name":"b","token":"t","versions":[1]}"#)
            Issue.record("accepted a backend hello on the client link")
        } catch {
            #expect(error.code == .wrongRole && error.closeCode == .wrongRole)
        }
    }

    @Test func typesOfTheOtherDirectionAreUnknown() {
        #expect(throws: ProtocolError.self) { try BackendToCoordinator.decode(#"{"type":"assign"}"#) }
        do {
            _ = try BackendToCoordinator.decode(#"{"type":"assign","id":"q1"}"#)
        } catch {
            #expect(error.code == .unknownType && error.requestID == "q1" && error.closeCode == nil)
        }
    }

    @Test func typedDetailsRoundTrip() throws {
        let details = Wire.NoEligibleBackend(
            missingFeatures: ["frameinterps"], missingModel: "m",
            refusals: [
                .init(
                    backend: BackendID(-1), name: "local", reasons: ["missing_features"],
                    missingFeatures: ["frameinterps"])
            ])
        #expect(try Wire.NoEligibleBackend(details: details.details) == details)
        let versions = Wire.NoCommonVersion(supported: [1])
        #expect(try Wire.NoCommonVersion(details: versions.details) == versions)
    }
}
