import MusterCore
import MusterProtocol

/// How a job's attempt history is stored (the `history` column): one JSON array, one object per
/// attempt, with short member names since every requeued or finished job has one,
///
///     [{"a":1,"b":2,"l":4294967297,"bd":1733000000000000000,"st":1733000000500000000,
///       "en":1733000003000000000,"o":"requeued","ec":"backend_lost","em":"link lost"}]
///
/// `a` attempt, `b` backend, `l` lease (bit pattern), `bd`/`st`/`en` bound, started and ended
/// instants in nanoseconds (`st`, `en` absent when unknown), `o` outcome, `ec`/`em` the error's
/// code and message when it ended with one. Read with `JSONCursor` like `EntriesJSON`; unknown
/// members are skipped so later versions can add some.
enum HistoryJSON {
    static func encode(_ history: [AttemptRecord]) -> [UInt8] {
        var w: [UInt8] = []
        w.reserveCapacity(2 + history.count * 160)
        w.append(UInt8(ascii: "["))
        for (n, a) in history.enumerated() {
            if n > 0 { w.append(UInt8(ascii: ",")) }
            w.append(contentsOf: #"{"a":"#.utf8)
            w.append(contentsOf: String(a.attempt).utf8)
            w.append(contentsOf: #","b":"#.utf8)
            w.append(contentsOf: String(a.backend.rawValue).utf8)
            w.append(contentsOf: #","l":"#.utf8)
            w.append(contentsOf: String(Int64(bitPattern: a.lease.rawValue)).utf8)
            w.append(contentsOf: #","bd":"#.utf8)
            w.append(contentsOf: String(Int64(bitPattern: a.boundAt.nanoseconds)).utf8)
            if let st = a.startedAt {
                w.append(contentsOf: #","st":"#.utf8)
                w.append(contentsOf: String(Int64(bitPattern: st.nanoseconds)).utf8)
            }
            if let en = a.endedAt {
                w.append(contentsOf: #","en":"#.utf8)
                w.append(contentsOf: String(Int64(bitPattern: en.nanoseconds)).utf8)
            }
            w.append(contentsOf: #","o":"#.utf8)
            EntriesJSON.appendString(a.outcome.rawValue, to: &w)
            if let error = a.error {
                w.append(contentsOf: #","ec":"#.utf8)
                EntriesJSON.appendString(error.code.rawValue, to: &w)
                w.append(contentsOf: #","em":"#.utf8)
                EntriesJSON.appendString(error.message, to: &w)
            }
            w.append(UInt8(ascii: "}"))
        }
        w.append(UInt8(ascii: "]"))
        return w
    }

    /// Decodes what `encode` wrote; the error says what is wrong and at which byte.
    static func decode(_ bytes: UnsafeBufferPointer<UInt8>) throws(JSONCursor.Failure) -> [AttemptRecord] {
        try JSONCursor.array(bytes, decodeAttempt)
    }

    private static func decodeAttempt(_ c: inout JSONCursor) throws(JSONCursor.Failure) -> AttemptRecord {
        var attempt: Int?
        var backend: Int?
        var lease: Int?
        var bound: Int?
        var started: Int?
        var ended: Int?
        var outcome: String?
        var code: String?
        var message = ""
        let start = c.at
        try c.members { c, key throws(JSONCursor.Failure) in
            if key.equals("a") {
                attempt = try c.integer()
            } else if key.equals("b") {
                backend = try c.integer()
            } else if key.equals("l") {
                lease = try c.integer()
            } else if key.equals("bd") {
                bound = try c.integer()
            } else if key.equals("st") {
                started = try c.integer()
            } else if key.equals("en") {
                ended = try c.integer()
            } else if key.equals("o") {
                outcome = try c.string()
            } else if key.equals("ec") {
                code = try c.string()
            } else if key.equals("em") {
                message = try c.string()
            } else {
                try c.skipValue()
            }
        }
        guard let attempt, let backend, let lease, let bound, let outcome else {
            throw JSONCursor.Failure(offset: start, reason: "an attempt lacks a, b, l, bd or o")
        }
        func instant(_ ns: Int) -> CoreInstant { CoreInstant(nanoseconds: UInt64(bitPattern: Int64(ns))) }
        return AttemptRecord(
            attempt: attempt, backend: BackendID(Int64(backend)), lease: Lease(UInt64(bitPattern: Int64(lease))),
            boundAt: instant(bound), startedAt: started.map(instant), endedAt: ended.map(instant),
            outcome: AttemptOutcome(rawValue: outcome), error: code.map { JobFailure(code: ErrorCode($0), message: message) })
    }
}
