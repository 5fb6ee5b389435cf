import MusterTransport

/// The operator dashboard served at `GET /`: one page, one stylesheet, one script, all compiled
/// into the binary (no build step, no CDN, works offline). The page is a plain
/// `muster.client.v1` client: it says `hello`, subscribes to every job, asks for `status` every
/// second, and sends `cancel`, `load_model` and `drain` when an operator clicks. Data needs the
/// client token when one is configured; the page itself does not.
enum Dashboard {
    /// Path and asset for every route the dashboard adds.
    static let assets: [(path: String, contentType: String, body: String)] = [
        ("/", "text/html; charset=utf-8", page),
        ("/dashboard.css", "text/css; charset=utf-8", style),
        ("/dashboard.js", "text/javascript; charset=utf-8", script),
    ]

    /// Only this origin: the page may load its own two assets and talk to its own coordinator.
    static let contentSecurityPolicy =
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        + "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

    static func response(contentType: String, body: String) -> HTTPResponse {
        HTTPResponse(
            status: 200, contentType: contentType,
            headers: [
                (name: "Cache-Control", value: "no-cache"),
                (name: "Content-Security-Policy", value: contentSecurityPolicy),
                (name: "X-Content-Type-Options", value: "nosniff"),
                (name: "Referrer-Policy", value: "no-referrer"),
            ],
            body: Array(body.utf8))
    }
}
