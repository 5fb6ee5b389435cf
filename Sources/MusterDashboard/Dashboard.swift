import Foundation
import MusterTransport

/// The operator dashboard served at `GET /`: one page, one stylesheet, one script. They are real
/// files in `Dashboard/Resources/`, compiled into the binary by SwiftPM (`embedInCode`), so the
/// binary stays single and needs no CDN. The page is a plain `muster.client.v1` client: it says
/// `hello`, subscribes to every job, asks for `status` every second, and sends `cancel`,
/// `load_model` and `drain` when an operator clicks. Data needs the client token when one is
/// configured; the page itself does not.
package enum Dashboard {
    /// What the coordinator tells the page about itself, rendered into the page as a JSON data
    /// block (`<script type="application/json" id="muster-settings">`): not executed, so the
    /// Content-Security-Policy stays `script-src 'self'`.
    package struct Settings: Sendable, Equatable {
        /// Features shown highlighted on backends and held jobs (`dashboard.highlight_features`).
        var highlightFeatures: [String]
        /// The warm-up gate's window (`gate.window_seconds`), for the countdown bar.
        var gateWindowMs: Int64

        package init(highlightFeatures: [String], gateWindowMs: Int64) {
            self.highlightFeatures = highlightFeatures
            self.gateWindowMs = gateWindowMs
        }

        /// Feature names are checked against the feature grammar (`a-z 0-9 _ . -`) when the
        /// configuration loads, so they need no escaping and cannot close the block.
        var json: String {
            let features = highlightFeatures.map { "\"\($0)\"" }.joined(separator: ",")
            return "{\"highlight_features\":[\(features)],\"gate_window_ms\":\(gateWindowMs)}"
        }
    }

    package static let settingsMarker = "<!-- muster:settings -->"

    /// Path and asset for every route the dashboard adds; the page carries `settings`.
    package static func assets(settings: Settings) -> [(path: String, contentType: String, body: [UInt8])] {
        [
            ("/", "text/html; charset=utf-8", page(settings: settings)),
            ("/dashboard.css", "text/css; charset=utf-8", PackageResources.dashboard_css),
            ("/dashboard.js", "text/javascript; charset=utf-8", PackageResources.dashboard_js),
        ]
    }

    /// The page with the settings block in place of its marker.
    package static func page(settings: Settings) -> [UInt8] {
        let html = String(decoding: PackageResources.dashboard_html, as: UTF8.self)
        let block = "<script type=\"application/json\" id=\"muster-settings\">\(settings.json)</script>"
        precondition(html.contains(settingsMarker), "dashboard.html lost its settings marker")
        return Array(html.replacingOccurrences(of: settingsMarker, with: block).utf8)
    }

    /// Only this origin: the page may load its own two assets and talk to its own coordinator.
    package static let contentSecurityPolicy =
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        + "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

    package static func response(contentType: String, body: [UInt8]) -> HTTPResponse {
        HTTPResponse(
            status: 200, contentType: contentType,
            headers: [
                (name: "Cache-Control", value: "no-cache"),
                (name: "Content-Security-Policy", value: contentSecurityPolicy),
                (name: "X-Content-Type-Options", value: "nosniff"),
                (name: "Referrer-Policy", value: "no-referrer"),
            ],
            body: body)
    }
}
