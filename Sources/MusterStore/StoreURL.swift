/// Where the daemon keeps its jobs: `memory:` (nowhere), `sqlite:///absolute/path` (also
/// `sqlite:relative/path`, relative to the working directory; paths are taken literally: no
/// percent-decoding, no `~` expansion), or `postgres://USER:PASSWORD@HOST:PORT/DATABASE` (also
/// `postgresql://`; query parameters such as `?sslmode=require` go to libpq as they are).
public enum StoreURL: Hashable, Sendable, CustomStringConvertible {
    case memory
    case sqlite(path: String)
    /// The URL as written (libpq parses it, percent-decoding included).
    case postgres(url: String)

    public init(parsing text: String) throws(StoreURLError) {
        if text == "memory:" || text == "memory" {
            self = .memory
            return
        }
        if text.hasPrefix("postgres://") || text.hasPrefix("postgresql://") {
            if let problem = PostgresURL.problem(text) {
                throw StoreURLError("store \(PostgresURL.redacted(text).debugDescription): \(problem)")
            }
            self = .postgres(url: text)
            return
        }
        guard text.hasPrefix("sqlite:") else {
            throw StoreURLError(
                "unknown store \(text.debugDescription): use memory:, sqlite:///absolute/path or postgres://USER:PASSWORD@HOST:PORT/DATABASE"
            )
        }
        let rest = text.dropFirst("sqlite:".count)
        let path: Substring
        if rest.hasPrefix("//") {
            // sqlite:///abs/path: an empty authority, then the absolute path.
            let afterSlashes = rest.dropFirst(2)
            guard afterSlashes.hasPrefix("/") else {
                throw StoreURLError(
                    "store \(text.debugDescription) names a host; use sqlite:///absolute/path (three slashes) or sqlite:relative/path"
                )
            }
            path = afterSlashes
        } else {
            path = rest
        }
        guard !path.isEmpty, path.last != "/" else {
            throw StoreURLError(
                "store \(text.debugDescription) names no file; e.g. sqlite:///var/lib/muster/muster.sqlite")
        }
        guard !path.utf8.contains(0) else { throw StoreURLError("store path contains a NUL byte") }
        self = .sqlite(path: String(path))
    }

    /// `$XDG_STATE_HOME/muster/muster.sqlite`, else `$HOME/.local/state/muster/muster.sqlite`.
    /// XDG_STATE_HOME counts only when absolute (the XDG base directory rules).
    public static func defaultSQLitePath(environment: [String: String]) -> String {
        if let state = environment["XDG_STATE_HOME"], state.hasPrefix("/") {
            return "\(trimmingSlashes(state))/muster/muster.sqlite"
        }
        let home = environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? "/"
        return "\(trimmingSlashes(home))/.local/state/muster/muster.sqlite"
    }

    /// A new, unopened store for this URL. `fencingToken`: the token of the leader's term
    /// (`Leadership.leader(token:)`) under which a PostgreSQL store commits; nil: no fencing (a
    /// single coordinator). The other stores have no fencing and ignore it. `commitInterval`: the
    /// least time from one commit's start to the next (`store.commit_interval_seconds`).
    public func makeStore(
        retryInterval: Duration = .seconds(1), fencingToken: Int64? = nil, commitInterval: Duration = .zero
    ) -> any JobStore {
        switch self {
        case .memory: MemoryJobStore()
        case .sqlite(let path): SQLiteJobStore(path: path, retryInterval: retryInterval, commitInterval: commitInterval)
        case .postgres(let url):
            PostgresJobStore(
                url: url, retryInterval: retryInterval, fencingToken: fencingToken, commitInterval: commitInterval)
        }
    }

    /// `memory:`, `sqlite:///abs/path` (`sqlite:relative/path`), or the postgres URL with its
    /// password replaced by `***` (this text is logged).
    public var description: String {
        switch self {
        case .memory: "memory:"
        case .sqlite(let path): path.hasPrefix("/") ? "sqlite://\(path)" : "sqlite:\(path)"
        case .postgres(let url): PostgresURL.redacted(url)
        }
    }

    private static func trimmingSlashes(_ path: String) -> String {
        var p = Substring(path)
        while p.count > 1 && p.hasSuffix("/") { p = p.dropLast() }
        return p == "/" ? "" : String(p)
    }
}

/// A store URL that does not parse; the message says what to write instead.
public struct StoreURLError: Error, Hashable, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
