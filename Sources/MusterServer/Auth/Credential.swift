import Foundation
import MusterProtocol

/// What a credential may do (README "Security").
public enum Role: String, Sendable, CaseIterable, Equatable {
    /// Opens a backend link under one backend name (the credential's `name`), nothing else.
    case backend
    /// Submits, follows and cancels its own jobs: batches whose owner is the credential's `name`.
    case client
    /// Everything a client does, for every owner, and drains backends and loads models.
    case `operator`
    /// Looks: the dashboard's view, `status`, `subscribe`, and the `/v1/` GET routes.
    case read
}

/// One entry of `auth.credentials`: a name, a role and either a token read from a file or the
/// environment, or the common name of a client certificate (mTLS, `tls.client_ca`). The token is
/// never printed: `description` and `--print-config` redact it.
public struct Credential: Sendable, Equatable, CustomStringConvertible {
    /// For a `client`: the owner of its batches. For a `backend`: the backend name it may register.
    /// In every case: who did it, in logs.
    public var name: String
    public var role: Role
    /// Where the token comes from: `token_file PATH` or `token_env NAME`; or `certificate_cn CN`.
    public var origin: String
    /// nil for a credential bound to a client certificate.
    var token: String?
    /// The exact subject common name of the verified client certificate that presents this
    /// credential (`certificate_cn`); nil for a token credential.
    public var certificateName: String? = nil

    public var description: String {
        "credential \(name) (\(role.rawValue), \(certificateName == nil ? "token from " : "")\(origin))"
    }
}

extension Configuration {
    /// Parses `auth.credentials`: `[{"name": "alice", "role": "client", "token_file": "/etc/muster/alice"}]`,
    /// each with exactly one of `token_file` (first line), `token_env` (a variable of `environment`)
    /// and `certificate_cn` (the subject CN of a client certificate, exactly).
    static func parseCredentials(
        _ json: Any, source: String, environment: [String: String]
    ) throws(ConfigError) -> [Credential] {
        let key = "auth.credentials"
        guard let array = json as? [Any] else {
            throw ConfigError(source: source, key: key, reason: #"expected an array of {"name", "role", "token_file" or "token_env" or "certificate_cn"}"#)
        }
        var out: [Credential] = []
        for (i, item) in array.enumerated() {
            let at = "\(key)[\(i)]"
            guard let o = item as? [String: Any] else { throw ConfigError(source: source, key: at, reason: "expected an object") }
            for k in o.keys where !["name", "role", "token_file", "token_env", "certificate_cn"].contains(k) {
                let hint = k == "token" ? "; a token is never written inline: use token_file or token_env" : ""
                throw ConfigError(source: source, key: "\(at).\(k)", reason: "unknown key\(hint)")
            }
            guard let name = o["name"] as? String, !name.isEmpty, name.count <= 128,
                !name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control })
            else {
                throw ConfigError(source: source, key: "\(at).name", reason: "expected a non-empty name of at most 128 characters")
            }
            guard let roleText = o["role"] as? String, let role = Role(rawValue: roleText) else {
                throw ConfigError(
                    source: source, key: "\(at).role",
                    reason: "expected one of \(Role.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            if out.contains(where: { $0.name == name && $0.role == role }) {
                throw ConfigError(source: source, key: "\(at).name", reason: "\(role.rawValue) credential '\(name)' is given twice")
            }
            let token: String?
            let origin: String
            var certificateName: String?
            let given = ["token_file", "token_env", "certificate_cn"].filter { o[$0] != nil }
            switch (o["token_file"] as? String, o["token_env"] as? String) {
            case _ where given.count != 1:
                throw ConfigError(source: source, key: at, reason: "give exactly one of token_file, token_env and certificate_cn")
            case (nil, nil) where o["certificate_cn"] != nil:
                guard let cn = o["certificate_cn"] as? String, !cn.isEmpty, cn.utf8.count <= 64,
                    !cn.unicodeScalars.contains(where: { $0.properties.generalCategory == .control })
                else {
                    throw ConfigError(
                        source: source, key: "\(at).certificate_cn",
                        reason: "expected the client certificate's subject common name: 1 to 64 bytes, matched exactly")
                }
                if let other = out.first(where: { $0.certificateName == cn }) {
                    throw ConfigError(
                        source: source, key: "\(at).certificate_cn",
                        reason: "credential \(other.name) is bound to certificate CN \(cn) already; one certificate names one credential")
                }
                certificateName = cn
                origin = "certificate_cn \(cn)"
                token = nil
            case (let path?, nil):
                origin = "token_file \(path)"
                token = try readTokenFile(path, source: source, key: "\(at).token_file")
            case (nil, let variable?):
                origin = "token_env \(variable)"
                guard let value = environment[variable]?.trimmingCharacters(in: .whitespacesAndNewlines), !value.isEmpty else {
                    throw ConfigError(source: source, key: "\(at).token_env", reason: "the environment variable \(variable) is not set or empty")
                }
                token = value
            default:
                throw ConfigError(source: source, key: at, reason: "token_file and token_env take a path and a variable name (text)")
            }
            out.append(Credential(name: name, role: role, origin: origin, token: token, certificateName: certificateName))
        }
        // Two credentials with one token could not be told apart.
        for (i, a) in out.enumerated() {
            guard let ta = a.token else { continue }
            for b in out[(i + 1)...] where b.token.map({ constantTimeEqual(ta, $0) }) == true {
                throw ConfigError(source: source, key: key, reason: "credentials \(a.name) and \(b.name) have the same token; give each its own")
            }
        }
        return out
    }

    /// The first line of a token file, trimmed.
    static func readTokenFile(_ path: String, source: String, key: String) throws(ConfigError) -> String {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigError(source: source, key: key, reason: "cannot read '\(path)'")
        }
        let token = String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline).first.map {
            $0.trimmingCharacters(in: .whitespaces)
        }
        guard let token, !token.isEmpty else {
            throw ConfigError(source: source, key: key, reason: "'\(path)' holds no token on its first line")
        }
        return token
    }
}
