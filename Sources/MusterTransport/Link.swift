import CLibWebSockets
import DequeModule

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Loop-side state of one WebSocket: a server connection or a client link (which outlives its
/// individual TCP connections). Only touched on the loop thread.
final class Link {
    let id: ConnectionID
    let handler: WebSocketHandler
    var info: ConnectionInfo
    /// The current lws connection; nil while a client link is down.
    var wsi: OpaquePointer?
    /// Handshake complete and not yet closed.
    var open = false

    // Receive side: reassembly of fragments and lws' chunks.
    var rx: [UInt8] = []
    var inMessage = false
    var rxBinary = false

    // Send side: frames with LWS_PRE headroom, and their payload bytes.
    var queue = Deque<OutFrame>()
    var queuedBytes = 0
    /// Call the handler's `drained` once `queuedBytes` is at or below this (`notifyWhenDrained`).
    var drainMark: Int?

    // Keepalive (Transport+Keepalive.swift).
    /// Coarse monotonic nanoseconds when anything (a chunk of a message, a PONG) last arrived,
    /// or when the WebSocket opened.
    var lastReceived: Int64 = 0
    /// A PING was asked for since `lastReceived`; no other one goes out until something arrives.
    var pingAwaited = false
    /// Write a PING at the next writable callback, before any queued message.
    var pingDue = false

    /// Set when this side decided to close; sent from the next writable callback.
    var pendingClose: (code: CloseCode, reason: String)?
    var peerClose: (code: CloseCode, reason: String)?

    // Client links only.
    let dial: ClientDial?
    var retryCount: UInt16 = 0
    var retryTimer: TimerID?
    var closedByUser = false
    /// A dial of this link is in flight (counts against the concurrent-dial limit).
    var dialing = false
    /// Waiting in the dial queue for a free slot.
    var awaitingDialSlot = false

    init(id: ConnectionID, handler: WebSocketHandler, info: ConnectionInfo, dial: ClientDial?) {
        self.id = id
        self.handler = handler
        self.info = info
        self.dial = dial
    }

    var isClient: Bool { dial != nil }

    func resetReceive() {
        inMessage = false
        if rx.capacity > 64 << 10 { rx = [] } else { rx.removeAll(keepingCapacity: true) }
    }
}

/// A message ready for `lws_write`: LWS_PRE bytes of headroom, then the payload.
struct OutFrame {
    var bytes: [UInt8]
    var binary: Bool
    var payloadCount: Int { bytes.count - lwsPre }
}

let lwsPre = Int(clws_pre())

/// Most bytes one `send` may carry, lws' `tx_packet_size`. Without it lws limits every send to
/// the receive chunk size (1 KiB) and trickles the rest out one chunk per loop pass, which with
/// thousands of sockets polled per pass made a 100 KB burst take seconds. Writes batch at most
/// this much (``Transport/writable``), so lws rarely buffers any of it.
let maxSendBytes = 512 << 10

/// What a client link needs to dial again.
final class ClientDial {
    let url: String
    let secure: Bool
    let host: String
    let port: Int32
    let path: String
    let subprotocol: String?
    let headers: [(name: String, value: String)]
    let tls: ClientTLS?
    let vhost: OpaquePointer
    /// C copies for lws_client_connect_info, alive as long as the link.
    let cHost: UnsafeMutablePointer<CChar>
    let cPath: UnsafeMutablePointer<CChar>
    let cProtocol: UnsafeMutablePointer<CChar>?
    let cALPN: UnsafeMutablePointer<CChar>

    init(
        url: String, secure: Bool, host: String, port: Int32, path: String, subprotocol: String?,
        headers: [(name: String, value: String)], tls: ClientTLS?, vhost: OpaquePointer
    ) {
        self.url = url
        self.secure = secure
        self.host = host
        self.port = port
        self.path = path
        self.subprotocol = subprotocol
        self.headers = headers
        self.tls = tls
        self.vhost = vhost
        self.cHost = strdup(host)!
        self.cPath = strdup(path)!
        self.cProtocol = subprotocol.map { strdup($0)! }
        self.cALPN = strdup("http/1.1")!
    }

    deinit {
        free(cHost)
        free(cPath)
        free(cProtocol)
        free(cALPN)
    }
}

/// One listener: its vhost, its handlers by lws protocol index, its HTTP routes.
final class ListenerState {
    let index: Int
    let configuration: ServerConfiguration
    /// Index 0 is the HTTP protocol (and WebSockets without subprotocol); then the subprotocols.
    let handlers: [WebSocketHandler?]
    let protocols: UnsafeMutablePointer<lws_protocols>
    var vhost: OpaquePointer?
    var port = 0
    /// The vhost's SSL_CTX with TLS, for `reloadCertificate`.
    var sslContext: SSLContextPointer?

    init(index: Int, configuration: ServerConfiguration, protocols: UnsafeMutablePointer<lws_protocols>) {
        self.index = index
        self.configuration = configuration
        self.handlers = [configuration.defaultWebSocket] + configuration.subprotocols.map { $0.handler }
        self.protocols = protocols
    }
}

/// Client vhosts differ only in the certificate files they load.
struct ClientVhostKey: Hashable {
    var caFile: String?
    var certificateFile: String?
    var privateKeyFile: String?
}

/// One HTTP request being read or answered.
final class HTTPExchange {
    var request: HTTPRequest
    var expectedBody: Int
    var response: HTTPResponse?
    var closeAfter = false
    /// Refused for its size (413): its body is drained, not kept.
    var rejected = false
    /// A rejected request's body is read and thrown away after the answer (a lingering close):
    /// closing with unread input makes the kernel reset the connection, and a client still
    /// sending would see a broken pipe instead of the 413.
    var draining = false
    /// Bytes of a rejected body thrown away so far.
    var drained = 0
    /// lws reported the end of the body.
    var bodyComplete = false
    /// Handed to the routes already. lws reports the end of a body even when `Content-Length: 0`
    /// said there is none (and the request went to the routes at once), so without this a POST
    /// with an empty body ran twice.
    var dispatched = false
    /// Times lws reported the end of the body again while the answer was not ready (see
    /// `Transport.httpBodyComplete`).
    var completionRepeats = 0
    /// The connection carrying it (cleared when lws destroys it).
    var wsi: OpaquePointer?

    init(request: HTTPRequest, expectedBody: Int) {
        self.request = request
        self.expectedBody = expectedBody
    }
}
