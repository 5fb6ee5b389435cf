import ArgumentParser

/// `muster bench NAME`: the benchmarks behind `Scripts/bench`. Each prints one table and asserts nothing.
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a benchmark and print its table.",
        subcommands: Bench.all.map(\.command) + [BenchE2EBackends.self, BenchSoak.self]
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
        for bench in Bench.all { print(bench.name) }
    }
}
