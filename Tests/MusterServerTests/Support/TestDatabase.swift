import Foundation
import Testing

/// A database of its own on the PostgreSQL server Scripts/test runs the suite beside
/// (Scripts/with-postgres: `MUSTER_TEST_POSTGRES_URL`). Without it the test fails, never skips.
enum TestDatabase {
    /// A new, empty database; its URL.
    static func fresh() async throws -> URLComponents {
        guard let text = ProcessInfo.processInfo.environment["MUSTER_TEST_POSTGRES_URL"], var url = URLComponents(string: text),
            let host = url.host, let port = url.port
        else {
            throw MusterProcess.Failure(
                description: "MUSTER_TEST_POSTGRES_URL is not set: run the tests through Scripts/with-postgres (Scripts/test does)")
        }
        let name = "muster_ha_\(UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(16).lowercased())"
        var env = ProcessInfo.processInfo.environment
        if let password = url.password { env["PGPASSWORD"] = password }
        let createdb = try await runChild(
            "/usr/bin/createdb", ["-h", host, "-p", "\(port)"] + (url.user.map { ["-U", $0] } ?? []) + [name], environment: env)
        guard createdb.status == 0 else {
            throw MusterProcess.Failure(
                description: "createdb \(name) exited \(createdb.status): \(String(decoding: createdb.errors, as: UTF8.self))")
        }
        url.path = "/\(name)"
        return url
    }

    /// A port nothing listens on now, for a coordinator that must know its port before it starts
    /// (it names its own address to another) or that restarts on the same one.
    ///
    /// Below the kernel's ephemeral range, not port 0's pick: that range is where outgoing
    /// connections take their local port, and while a coordinator is down between restarts one
    /// of the many connections other tests open could take its port.
    static func freePort() throws -> Int {
        let range = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8)) ?? ""
        let low = range.split(whereSeparator: \.isWhitespace).first.flatMap { Int($0) } ?? 32768
        for _ in 0..<200 {
            let candidate = Int.random(in: 10000..<max(low, 10001))
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(fd) }
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            addr.sin_port = UInt16(candidate).bigEndian
            let bound = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
                }
            }
            if bound { return candidate }
        }
        throw MusterProcess.Failure(description: "no free port below the ephemeral range")
    }
}
