import MusterCore
import MusterProtocol

/// How a failure's details are stored (the `error_details` column), only when it has some: the
/// refusals and the missing features, model and node classes of a `no_eligible_backend`. Short
/// member names, empty arrays left out:
///
///     {"mf":["frameinterps"],"mm":"wan-2.1","mn":["RIFE VFI"],
///      "r":[{"b":2,"n":"gpu-box-2","y":"announced loading","rs":["loading"]}]}
///
/// `mf` missing features, `mm` missing model, `mn` missing node classes, `r` the refusals, each:
/// `b` backend, `n` its name, `y` the reason for people, `rs` the reason tokens, `mf`/`mn` what
/// that backend lacks. An `attempts_exhausted` failure's attempts are the job's history, stored
/// in its own column. Unknown members are skipped so later versions can add some.
enum DetailsJSON {
    /// Nil when the failure has no details to keep.
    static func encode(_ f: JobFailure) -> [UInt8]? {
        guard !f.refusals.isEmpty || !f.missingFeatures.isEmpty || f.missingModel != nil || !f.missingNodes.isEmpty
        else { return nil }
        var w: [UInt8] = []
        w.reserveCapacity(64 + f.refusals.count * 80)
        var first = true
        func member(_ name: StaticString) {
            w.append(UInt8(ascii: first ? "{" : ","))
            first = false
            w.append(UInt8(ascii: "\""))
            w.append(contentsOf: UnsafeBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount))
            w.append(contentsOf: #"":"#.utf8)
        }
        if !f.missingFeatures.isEmpty {
            member("mf")
            EntriesJSON.appendStrings(f.missingFeatures, to: &w)
        }
        if let model = f.missingModel {
            member("mm")
            EntriesJSON.appendString(model, to: &w)
        }
        if !f.missingNodes.isEmpty {
            member("mn")
            EntriesJSON.appendStrings(f.missingNodes, to: &w)
        }
        if !f.refusals.isEmpty {
            member("r")
            w.append(UInt8(ascii: "["))
            for (n, r) in f.refusals.enumerated() {
                if n > 0 { w.append(UInt8(ascii: ",")) }
                w.append(contentsOf: #"{"b":"#.utf8)
                w.append(contentsOf: String(r.backend.rawValue).utf8)
                w.append(contentsOf: #","n":"#.utf8)
                EntriesJSON.appendString(r.name, to: &w)
                w.append(contentsOf: #","y":"#.utf8)
                EntriesJSON.appendString(r.reason, to: &w)
                if !r.reasons.isEmpty {
                    w.append(contentsOf: #","rs":"#.utf8)
                    EntriesJSON.appendStrings(r.reasons, to: &w)
                }
                if !r.missingFeatures.isEmpty {
                    w.append(contentsOf: #","mf":"#.utf8)
                    EntriesJSON.appendStrings(r.missingFeatures, to: &w)
                }
                if !r.missingNodes.isEmpty {
                    w.append(contentsOf: #","mn":"#.utf8)
                    EntriesJSON.appendStrings(r.missingNodes, to: &w)
                }
                w.append(UInt8(ascii: "}"))
            }
            w.append(UInt8(ascii: "]"))
        }
        w.append(UInt8(ascii: "}"))
        return w
    }

    /// `failure` with the details `encode` wrote; the error says what is wrong and where.
    static func decode(_ bytes: UnsafeBufferPointer<UInt8>, into failure: JobFailure) throws(JSONCursor.Failure)
        -> JobFailure
    {
        var failure = failure
        var c = JSONCursor(bytes)
        try c.members { c, key throws(JSONCursor.Failure) in
            if key.equals("mf") {
                failure.missingFeatures = try c.strings()
            } else if key.equals("mm") {
                failure.missingModel = try c.string()
            } else if key.equals("mn") {
                failure.missingNodes = try c.strings()
            } else if key.equals("r") {
                failure.refusals = try c.elements(decodeRefusal)
            } else {
                try c.skipValue()
            }
        }
        return try c.end(failure)
    }

    private static func decodeRefusal(_ c: inout JSONCursor) throws(JSONCursor.Failure) -> BackendRefusal {
        var backend: Int?
        var name: String?
        var refusal = BackendRefusal(backend: BackendID(0), name: "", reason: "")
        let start = c.at
        try c.members { c, key throws(JSONCursor.Failure) in
            if key.equals("b") {
                backend = try c.integer()
            } else if key.equals("n") {
                name = try c.string()
            } else if key.equals("y") {
                refusal.reason = try c.string()
            } else if key.equals("rs") {
                refusal.reasons = try c.strings()
            } else if key.equals("mf") {
                refusal.missingFeatures = try c.strings()
            } else if key.equals("mn") {
                refusal.missingNodes = try c.strings()
            } else {
                try c.skipValue()
            }
        }
        guard let backend, let name else { throw JSONCursor.Failure(offset: start, reason: "a refusal lacks b or n") }
        refusal.backend = BackendID(Int64(backend))
        refusal.name = name
        return refusal
    }
}
