import MusterProtocol

/// Who is on the other end of a link or request, once its token is checked, and what it may do.
struct Principal: Sendable, Equatable, CustomStringConvertible {
    enum Kind: Sendable, Equatable {
        /// No credential was needed: this side of the coordinator has none configured.
        case anonymous
        /// The shared `auth.token`: every role, as before roles existed.
        case shared
        case credential(Role)
    }
    var kind: Kind
    /// The credential's name; "anonymous" or "shared-token" otherwise. Who did it, in the audit log.
    var name: String

    static let anonymous = Principal(kind: .anonymous, name: "anonymous")
    static let shared = Principal(kind: .shared, name: "shared-token")

    var description: String { name }

    var role: Role? { if case .credential(let r) = kind { r } else { nil } }

    /// May use the client link and the `/v1/` routes at all.
    var isClientSide: Bool { role != .backend }
    var canSubmit: Bool { role == nil || role == .client || role == .operator }
    /// Drain backends, load models, cancel and see anyone's jobs.
    var canOperate: Bool { role == nil || role == .operator }
    /// Sees every batch (a `client` sees its own only).
    var seesAll: Bool { role != .client && role != .backend }
    /// The only owner whose batches this principal sees and cancels; nil: every owner (or none).
    var ownerScope: String? { role == .client ? name : nil }

    /// `welcome.role` on the client link: what the dashboard shows.
    var wireRole: String {
        switch kind {
        case .anonymous, .shared: "all"
        case .credential(let r): r.rawValue
        }
    }

    /// Whether this principal may look at (or, with `cancel`, cancel) a batch owned by `owner`.
    func may(access owner: String, cancel: Bool) -> Bool {
        if let scope = ownerScope { return scope == owner }
        return cancel ? canOperate : seesAll
    }
}

/// Why a backend may not register.
enum BackendRefusal: Error, Equatable {
    /// The token is missing or matches no credential (4001).
    case badCredentials
    /// The token is a real credential that does not allow this (4007): a client's, or another backend name's.
    case forbidden(String)
}

/// Checks tokens against the configured credentials, in constant time per credential.
///
/// The shared `auth.token` counts as every role, so configurations from before roles keep working.
/// A side (client or backend) with no credential that applies to it is open, as it was before:
/// protected mode (`Configuration.validate`) keeps such a coordinator on loopback.
struct Authenticator: Sendable {
    let shared: String?
    let credentials: [Credential]

    init(shared: String?, credentials: [Credential]) {
        self.shared = shared
        self.credentials = credentials
    }

    /// No shared token and no client, operator or read credential.
    var clientSideOpen: Bool { shared == nil && !credentials.contains { $0.role != .backend } }
    /// No shared token and no backend credential.
    var backendSideOpen: Bool { shared == nil && !credentials.contains { $0.role == .backend } }
    var isEmpty: Bool { shared == nil && credentials.isEmpty }

    /// The credential (or shared token) `token` is, comparing with every one so the time taken
    /// does not tell which matched.
    func match(_ token: String) -> Principal? {
        var found: Principal?
        if let shared, constantTimeEqual(shared, token) { found = .shared }
        for c in credentials {
            guard let t = c.token, constantTimeEqual(t, token) else { continue }
            found = found ?? Principal(kind: .credential(c.role), name: c.name)
        }
        return found
    }

    /// The credential bound to the client certificate whose subject CN is `certificate`, exactly.
    /// Not a secret (the CA vouched for it), so a plain comparison.
    func match(certificate: String?) -> Principal? {
        guard let certificate, let c = credentials.first(where: { $0.certificateName == certificate }) else { return nil }
        return Principal(kind: .credential(c.role), name: c.name)
    }

    /// The principal of a client link or `/v1/` request presenting `token` over a connection whose
    /// verified client certificate has the common name `certificate`; nil: bad credentials. A token,
    /// when one is given, wins: the certificate then only admitted the connection. A backend
    /// credential is returned too: the caller refuses it as `forbidden`.
    func client(token: String, certificate: String? = nil) -> Principal? {
        if clientSideOpen { return .anonymous }
        if token.isEmpty, let principal = match(certificate: certificate) { return principal }
        return match(token)
    }

    /// Whether a backend named `name` presenting `token` (or, with no token, the client certificate
    /// whose common name is `certificate`) may register.
    func backend(name: String, token: String, certificate: String? = nil) -> Result<Principal, BackendRefusal> {
        if token.isEmpty, let principal = match(certificate: certificate) {
            switch principal.role {
            case .backend? where principal.name == name: return .success(principal)
            case .backend?:
                return .failure(.forbidden("this client certificate is backend \(principal.name)'s; it cannot register as \(name)"))
            default:
                return .failure(.forbidden("a \(principal.role?.rawValue ?? "") credential cannot open a backend link"))
            }
        }
        let principal = match(token)
        if let own = credentials.first(where: { $0.role == .backend && $0.name == name }) {
            // Checked first: two backends may share a token in `auth.backend_tokens`.
            if let t = own.token, constantTimeEqual(t, token) { return .success(Principal(kind: .credential(.backend), name: name)) }
            if principal == nil { return .failure(.badCredentials) }
            return .failure(.forbidden("backend \(name) has a credential of its own; present that one"))
        }
        switch principal?.kind {
        case .credential(.backend)? where principal?.name == name:
            return .success(principal!)
        case .credential(.backend)?:
            return .failure(.forbidden("this token is backend \(principal!.name)'s; it cannot register as \(name)"))
        case .credential(let role)?:
            return .failure(.forbidden("a \(role.rawValue) credential cannot open a backend link"))
        case .shared?:
            return .success(.shared)
        case .anonymous?, nil:
            if backendSideOpen { return .success(.anonymous) }
            return .failure(.badCredentials)
        }
    }
}
