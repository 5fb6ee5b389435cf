import Foundation
import MusterStore
import MusterTransport

// Two coordinators on one database (README "Running two coordinators"): the keys `ha.*`.
extension Configuration {
    /// True when the store is shared by several coordinators, so one leads by election and the
    /// others stand by: a postgres store. With SQLite or memory there is one coordinator, always
    /// the leader.
    public var electsLeader: Bool {
        if case .postgres = settings.store.url { return true }
        return false
    }

    /// `ha.name`, else the host name.
    public var haName: String {
        if let name = settings.ha.name { return name }
        let host = ProcessInfo.processInfo.hostName
        return host.isEmpty ? "muster" : host
    }

    /// `ha.advertise`, else the URL of `listen` (nil when `listen` cannot be dialled from
    /// elsewhere: a wildcard address or port 0).
    public var haAdvertise: String? {
        if let advertise = settings.ha.advertise { return advertise }
        let l = settings.listen
        guard l.port != 0, !["0.0.0.0", "::", "*", ""].contains(l.host) else { return nil }
        return "\(settings.tls.cert == nil ? "ws" : "wss")://\(l)"
    }

    func validateHA() throws(ConfigError) {
        if let advertise = settings.ha.advertise {
            let scheme = advertise.hasPrefix("ws://") ? 5 : advertise.hasPrefix("wss://") ? 6 : 0
            let authority = advertise.dropFirst(scheme).prefix { $0 != "/" && $0 != "?" }
            guard scheme > 0, !authority.isEmpty, !advertise.contains(","), advertise.utf8.count <= 128 else {
                throw ConfigError(
                    source: origins.of("ha.advertise"), key: "ha.advertise",
                    reason: "'\(advertise)' is not a coordinator URL; expected ws://HOST:PORT or wss://HOST:PORT (at most 128 characters)")
            }
        }
        if let name = settings.ha.name, name.utf8.count > 128 || name.contains(where: { $0.isNewline || $0 == "," }) {
            throw ConfigError(source: origins.of("ha.name"), key: "ha.name", reason: "expected a node name of at most 128 characters")
        }
        if electsLeader, haAdvertise == nil {
            throw ConfigError(
                source: origins.of("store.url", "listen"), key: "ha.advertise",
                reason: "listen \(settings.listen) is not an address agents and clients can dial, and with a postgres store a standby "
                    + "names the leader by it; set ha.advertise to this coordinator's ws://HOST:PORT")
        }
    }
}
