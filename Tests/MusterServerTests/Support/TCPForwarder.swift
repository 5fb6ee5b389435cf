import Foundation
import MusterTransport

/// A TCP forwarder on 127.0.0.1 (port picked by the kernel) to `target`, which a test can cut: a
/// coordinator that reaches its database through it can be cut off from the database while it
/// still talks to agents and clients on its own port.
///
/// `cut()` turns it into a black hole, as a failed network does: connections stay open but
/// nothing passes either way, and new ones are accepted and never answered. No reset tells the
/// peer; it finds out by its own timeouts.
final class TCPForwarder: Sendable {
    let port: Int
    private let listener: Int32
    private let targetPort: UInt16
    private let state = Locked(State())

    private struct State {
        var cut = false
        var closed = false
        var sockets: [Int32] = []
    }

    init(to targetHost: String = "127.0.0.1", port targetPort: Int) throws {
        self.targetPort = UInt16(targetPort)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = Self.address(targetHost, 0)
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { p -> Bool in
                bind(fd, p, len) == 0 && getsockname(fd, p, &len) == 0
            }
        }
        guard bound, listen(fd, 64) == 0 else {
            Foundation.close(fd)
            throw MusterProcess.Failure(description: "forwarder: cannot listen (errno \(errno))")
        }
        listener = fd
        port = Int(UInt16(bigEndian: addr.sin_port))
        let thread = Thread { [self] in acceptLoop() }
        thread.start()
    }

    /// From now on nothing passes, in either direction, on old or new connections.
    func cut() { state.withLock { $0.cut = true } }

    /// Closes everything (the test is over).
    func close() {
        let sockets = state.withLock { s -> [Int32] in
            s.closed = true
            defer { s.sockets = [] }
            return s.sockets
        }
        shutdown(listener, Int32(SHUT_RDWR))
        Foundation.close(listener)
        for fd in sockets {
            shutdown(fd, Int32(SHUT_RDWR))
            Foundation.close(fd)
        }
    }

    private static func address(_ host: String, _ port: UInt16) -> sockaddr_in {
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        addr.sin_addr.s_addr = inet_addr(host)
        return addr
    }

    private func acceptLoop() {
        while true {
            let client = accept(listener, nil, nil)
            if client < 0 {
                if state.withLock({ $0.closed }) { return }
                continue
            }
            if state.withLock({ $0.cut || $0.closed }) {
                // Accepted and never answered: a dial into the black hole hangs.
                state.withLock { $0.sockets.append(client) }
                continue
            }
            let upstream = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var addr = Self.address("127.0.0.1", targetPort)
            let connected = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(upstream, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
            }
            guard connected else {
                Foundation.close(upstream)
                Foundation.close(client)
                continue
            }
            state.withLock { $0.sockets += [client, upstream] }
            Thread { [self] in pump(from: client, to: upstream) }.start()
            Thread { [self] in pump(from: upstream, to: client) }.start()
        }
    }

    private func pump(from source: Int32, to sink: Int32) {
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(source, $0.baseAddress, $0.count) }
            if n <= 0 {
                if !state.withLock({ $0.cut }) { shutdown(sink, Int32(SHUT_WR)) }
                return
            }
            // Cut: what arrives is dropped, nothing is answered.
            if state.withLock({ $0.cut }) { continue }
            var sent = 0
            while sent < n {
                let w = buffer.withUnsafeBytes { write(sink, $0.baseAddress! + sent, n - sent) }
                if w <= 0 { return }
                sent += w
            }
        }
    }
}
