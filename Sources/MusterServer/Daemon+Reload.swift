import Logging
import MusterProtocol
import MusterTransport

// Reload on SIGHUP (README "Security"): credentials are read again and the TLS certificate, key
// and client CA loaded again, without dropping a link whose credential still holds. Runs on the loop, like
// everything else the daemon does.
extension Daemon {
    /// What a reload did, for the caller and the tests.
    public struct ReloadOutcome: Sendable, Equatable {
        /// Links closed with 4001 because their token is no longer accepted (or now means another
        /// credential).
        public var revokedLinks: Int
        /// Whether the listener's certificate was loaded again (false without TLS).
        public var certificateReloaded: Bool
    }

    /// Takes the credentials (and TLS files) of `configuration`, read again by the caller; other
    /// keys need a restart and are left as they were. A credential that no longer accepts a link's
    /// token closes that link with `bad_credentials` and 4001. Throws when the credentials do not
    /// load (the old ones stay in force) or the certificate does not (the old one stays in use).
    @discardableResult
    public func reload(_ configuration: Configuration) throws -> ReloadOutcome {
        let next: Authenticator
        do {
            next = try configuration.authenticator()
        } catch {
            reloadRefused(error)
            throw error
        }
        auth = next
        var revoked = 0
        for (id, session) in clients where session.name != nil {
            guard auth.client(token: session.token, certificate: session.certificate) != session.principal else { continue }
            revoked += 1
            revoke(id, backendSide: false, who: session.principal.name)
        }
        for (id, link) in backendLinks {
            guard let token = link.token, case .registered(let backend) = link.phase,
                let name = namesByID[backend] ?? core.backend(backend)?.name
            else { continue }
            if case .success = auth.backend(name: name, token: token, certificate: link.certificate) { continue }
            revoked += 1
            revoke(id, backendSide: true, who: name)
        }
        audit.notice(
            "credentials reloaded",
            metadata: [
                "audit.action": "reload_credentials", "audit.by": "SIGHUP", "credentials": "\(auth.credentials.count)",
                "shared_token": "\(auth.shared != nil)", "links.revoked": "\(revoked)",
            ])
        var certificate = false
        if configuration.settings.tls.cert != nil, let listener {
            // A Result, not a throwing closure: the 6.3 compiler crashes on a typed throw through assumeIsolated.
            let loaded: Result<Void, TransportError> = transport.assumeIsolated { t in
                do throws(TransportError) {
                    try t.reloadCertificate(listener)
                    return .success(())
                } catch {
                    return .failure(error)
                }
            }
            if case .failure(let error) = loaded {
                audit.error(
                    "TLS certificate reload refused: the old one stays in use",
                    metadata: ["audit.action": "reload_certificate", "audit.by": "SIGHUP", "error": "\(error)"])
                throw error
            }
            certificate = true
            audit.notice(
                "certificate reloaded",
                metadata: [
                    "audit.action": "reload_certificate", "audit.by": "SIGHUP",
                    "tls.client_ca": "\(configuration.settings.tls.clientCA != nil)",
                ])
        }
        return ReloadOutcome(revokedLinks: revoked, certificateReloaded: certificate)
    }

    /// A reload whose configuration did not load (a token file emptied, bad JSON): nothing changes.
    public func reloadRefused(_ error: any Error) {
        audit.error(
            "credentials reload refused: the old ones stay in force",
            metadata: ["audit.action": "reload_credentials", "audit.by": "SIGHUP", "error": "\(error)"])
    }

    private func revoke(_ id: ConnectionID, backendSide: Bool, who: String) {
        logger.notice("link closed: its credential was revoked", metadata: ["link.id": "\(id)", "credential": "\(who)"])
        refuse(
            id, backendSide: backendSide, code: .badCredentials,
            message: "the credential of this link was revoked or changed; reconnect with a valid token", close: 4001)
    }
}
