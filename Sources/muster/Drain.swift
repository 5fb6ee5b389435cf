import ArgumentParser
import MusterClient
import MusterProtocol

/// `muster drain ID`: stop sending a backend new jobs and let it finish what it runs.
struct Drain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Drain a backend: no new jobs, the jobs it has run to the end.",
        // One id (the argument takes what is not an option, so that `-1` is an id, not a flag).
        usage: "muster drain <ID> [<options>]",
        discussion: """
            A remote backend is told to drain, announces draining, and once its jobs are done says \
            goodbye and closes its link (a drained agent exits 0); it comes back by linking again. A \
            local backend announces draining and stays idle until the coordinator restarts. \
            Idempotent. An unknown backend id (unknown_backend) exits with status 1.
            """)

    @OptionGroup var client: ClientOptions

    // Unconditional: local backends have negative ids, which would otherwise read as flags.
    @Argument(
        parsing: .allUnrecognized,
        help: ArgumentHelp("The backend, an id from muster status (local ones are negative).", valueName: "ID"))
    var backendArguments: [String] = []

    @Flag(help: "Print the draining answer as JSON.")
    var json = false

    func validate() throws {
        guard backendArguments.count == 1, Int64(backendArguments[0]) != nil else {
            throw ValidationError("expected one backend id (an integer from muster status), e.g. muster drain -1")
        }
    }

    func run() async throws {
        let backend = BackendID(Int64(backendArguments[0])!)
        let names = try await client.withClient { c in
            try await c.drain(backend: backend)
            return BackendNames(try await c.status().backends)
        }
        if json {
            print(String(decoding: CoordinatorToClient.Draining(backend: backend).encode(), as: UTF8.self))
        } else {
            print("draining \(names.label(backend)): it takes no new jobs and finishes the ones it has")
        }
    }
}
