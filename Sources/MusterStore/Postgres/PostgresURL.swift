import CLibPQ

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// postgres:// URLs: checked by libpq's own parser, and redacted for logs.
enum PostgresURL {
    /// What libpq finds wrong with the URL; nil when it parses.
    static func problem(_ url: String) -> String? {
        guard !url.utf8.contains(0) else { return "contains a NUL byte" }
        var error: UnsafeMutablePointer<CChar>?
        guard let options = PQconninfoParse(url, &error) else {
            defer { PQfreemem(error) }
            var text = error.map { String(cString: $0) } ?? "does not parse"
            while text.last?.isWhitespace == true { text.removeLast() }
            return redacted(text)
        }
        defer { PQconninfoFree(options) }
        // libpq takes any port text here and fails only when it connects ("invalid integer value").
        var option = options
        while let keyword = option.pointee.keyword {
            if String(cString: keyword) == "port", let value = option.pointee.val {
                let ports = String(cString: value)
                for port in ports.split(separator: ",", omittingEmptySubsequences: false) where !port.isEmpty {
                    guard let n = Int(port), (1...65535).contains(n) else {
                        return "port \(String(port).debugDescription) is not a number from 1 to 65535"
                    }
                }
            }
            option += 1
        }
        return nil
    }

    /// The URL with the password of its user part and any `password=` parameter replaced by `***`.
    static func redacted(_ url: String) -> String {
        var text = url
        if let scheme = text.firstRange(of: "://") {
            let rest = text[scheme.upperBound...]
            let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" } ?? rest.endIndex
            if let at = rest[..<authorityEnd].lastIndex(of: "@"),
                let colon = rest[..<at].firstIndex(of: ":")
            {
                text.replaceSubrange(text.index(after: colon)..<at, with: "***")
            }
        }
        // password=... in the query (or a key=value string), up to the next & or space.
        var out = ""
        var rest = Substring(text)
        while let r = rest.firstRange(of: "password=") {
            out += rest[..<r.upperBound] + "***"
            rest = rest[r.upperBound...]
            let stop = rest.firstIndex { $0 == "&" || $0 == " " } ?? rest.endIndex
            rest = rest[stop...]
        }
        return out + rest
    }
}
