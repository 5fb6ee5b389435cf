import CLibWebSockets

/// The libwebsockets version this process runs on, as lws reports it.
public func libwebsocketsVersion() -> String {
    String(cString: lws_get_library_version())
}
