// The wire types a client speaks (`Wire.Submit`, `JobSpec`, `ClientEvent`, ...) come with the
// client library: `import MusterClient` is the one import a Swift program needs.
@_exported import MusterProtocol
