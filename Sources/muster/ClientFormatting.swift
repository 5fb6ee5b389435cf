import Foundation
import MusterProtocol

/// Backend names by id, from a status report and from what `gated` events name, so output can
/// say `gpu-box-2 (2)` instead of a bare id.
struct BackendNames {
    private var names: [BackendID: String] = [:]

    init(_ backends: [Wire.BackendInfo] = []) {
        for b in backends { names[b.id] = b.name }
    }

    mutating func learn(_ event: CoordinatorToClient.JobEvent) {
        for b in event.waiting?.backends ?? [] { names[b.id] = b.name }
    }

    func name(_ id: BackendID) -> String? { names[id] }

    /// `name (id)`, or `backend id` for a backend this client has not heard of.
    func label(_ id: BackendID) -> String {
        names[id].map { "\($0) (\(id))" } ?? "backend \(id)"
    }
}

enum Format {
    /// `1.25 s`, `12.5 s`, `3 min 20 s`.
    static func duration(ms: UInt64) -> String {
        let s = Double(ms) / 1000
        if s < 10 { return String(format: "%.2f s", s) }
        if s < 120 { return String(format: "%.1f s", s) }
        return "\(Int(s) / 60) min \(Int(s) % 60) s"
    }

    /// What the gate held a job for: `[frameinterps, video] (model m): gpu-box (2) loading`.
    static func wait(_ w: Wire.GateWait, _ names: BackendNames) -> String {
        // A job that needs no feature (a workflow waiting for node classes) waits for what the
        // backends will announce; "[]" said nothing.
        var s = w.features.isEmpty ? "announcements" : "[\(w.features.joined(separator: ", "))]"
        if let model = w.model { s += " (model \(model))" }
        if !w.backends.isEmpty {
            s += ": " + w.backends.map { "\($0.name) (\($0.id)) \($0.reason)" }.joined(separator: ", ")
        }
        return s
    }

    /// Pads (or leaves) `text` to `width` characters.
    static func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
    }

    /// Lays out rows in columns separated by two spaces; the last column is not padded.
    static func table(_ rows: [[String]], indent: String = "") -> [String] {
        guard let columns = rows.map(\.count).max() else { return [] }
        var widths = [Int](repeating: 0, count: columns)
        for row in rows {
            for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) }
        }
        return rows.map { row in
            var line = indent
            for (i, cell) in row.enumerated() {
                line += i == row.count - 1 ? cell : pad(cell, widths[i]) + "  "
            }
            while line.last == " " { line.removeLast() }
            return line
        }
    }

    /// A JSON value for Foundation's serializer, from a protocol error.
    static func errorObject(_ e: Wire.ErrorBody) -> [String: Any] {
        var o: [String: Any] = ["code": e.code.rawValue, "message": e.message]
        if let details = e.details, let value = try? JSONSerialization.jsonObject(with: Data(details.text.utf8)) {
            o["details"] = value
        }
        return o
    }

    /// One line of compact JSON with sorted keys.
    static func jsonLine(_ object: [String: Any]) -> String {
        let data =
            (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]))
            ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }
}

/// Checks of command-line values against the protocol's grammars (Protocol/README.md, section 4),
/// so that a typo is a usage error naming the flag rather than an `invalid_message` answer.
enum Grammar {
    /// `^[a-z][a-z0-9_.-]{0,63}$`: features and job kinds.
    static func isFeature(_ s: String) -> Bool {
        guard let first = s.utf8.first, first >= 0x61, first <= 0x7a, s.utf8.count <= 64 else { return false }
        return s.utf8.allSatisfy {
            ($0 >= 0x61 && $0 <= 0x7a) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2e || $0 == 0x5f || $0 == 0x2d
        }
    }

    /// 1 to `max` characters, no control characters (models, keys, owners).
    static func isLabel(_ s: String, max: Int) -> Bool {
        !s.isEmpty && s.unicodeScalars.count <= max
            && !s.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7f }
    }
}
