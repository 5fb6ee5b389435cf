import ArgumentParser
import Foundation

/// `muster-bench NAME`: the benchmarks behind `Scripts/bench` and `Scripts/soak`. Each prints one
/// table and asserts nothing (the soak checks its invariant). The runs that need a coordinator or
/// an agent start the real `muster` binary: ``MusterBinary``.
@main
struct MusterBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "muster-bench",
        abstract: "Run one of Muster's benchmarks and print its table (Scripts/bench runs them all).",
        discussion: """
            transport, protocol, core and store measure the library modules in this process. e2e and soak \
            start `muster serve` and `muster agent` from \(MusterBinary.variable) (Scripts/bench and \
            Scripts/soak set it to the release build of the project root).
            """,
        subcommands: MusterBench.all.map(\.command) + [BenchE2EBackends.self, BenchSoak.self, BenchTakeover.self]
    )

    /// Every benchmark, in the order `Scripts/bench` runs them.
    static let all: [(name: String, command: any ParsableCommand.Type)] = [
        ("transport", BenchTransport.self),
        ("protocol", BenchProtocol.self),
        ("core", BenchCore.self),
        ("e2e", BenchE2E.self),
        ("store", BenchStore.self),
    ]

    @Flag(help: "List the benchmark names, one per line.")
    var list = false

    func run() async throws {
        guard list else { throw CleanExit.helpRequest(self) }
        for bench in MusterBench.all { print(bench.name) }
    }
}

/// Where the runs find the executables they start as child processes.
enum MusterBinary {
    static let variable = "MUSTER_BINARY"

    /// This harness, for its own internal roles (`e2e-backends`, `transport --role client`).
    static var harness: URL { Bundle.main.executableURL! }

    /// The `muster` executable: `$MUSTER_BINARY`, else a `muster` beside this harness.
    static func muster() throws -> URL {
        if let path = ProcessInfo.processInfo.environment[variable], !path.isEmpty {
            guard FileManager.default.isExecutableFile(atPath: path) else {
                throw ValidationError(
                    "\(variable)=\(path): no executable there; build it with `swift build -c release --product muster` in the project root"
                )
            }
            return URL(fileURLWithPath: path)
        }
        let beside = harness.deletingLastPathComponent().appendingPathComponent("muster")
        guard FileManager.default.isExecutableFile(atPath: beside.path) else {
            throw ValidationError(
                "no muster binary: set \(variable) to the one `swift build -c release --product muster` builds in the project root (Scripts/bench and Scripts/soak do)"
            )
        }
        return beside
    }
}
