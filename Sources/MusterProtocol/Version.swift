/// The software version every Muster program reports: in `welcome`, `hello.software`, `/healthz`
/// and logs.
public enum MusterVersion {
    public static let current = "0.1.0"
}
