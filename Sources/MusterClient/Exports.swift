// The wire types a client speaks (`Wire.Submit`, `JobSpec`, `ClientEvent`, ...) come with the
// client library: `import MusterClient` is the one import a Swift program needs.
@_exported import MusterProtocol
import MusterTransport

/// How the client checks the coordinator's certificate on `wss://` and presents its own
/// (`MusterClient.Options.tls`), from the transport.
public typealias ClientTLS = MusterTransport.ClientTLS
