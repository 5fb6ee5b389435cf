import ArgumentParser
import MusterClient
import MusterProtocol

/// `muster models`: commands about models on the backends.
struct Models: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage models on the backends.",
        subcommands: [Load.self])

    /// `muster models load MODEL [--backend ID]`.
    struct Load: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Load a model now, instead of when the first job needs it.",
            discussion: """
                With --backend, that backend loads it. Without, every eligible backend loads it at \
                once, and so does every backend that joins later. Prints the backends told now. A \
                model no backend offers (unknown_model) or an unknown backend id (unknown_backend) \
                exits with status 1.
                """)

        @OptionGroup var client: ClientOptions

        @Argument(help: "The model, as backends list it, e.g. sdxl.")
        var model: String

        // Unconditional: local backends have negative ids, which would otherwise read as flags.
        @Option(
            parsing: .unconditional,
            help: ArgumentHelp(
                "Load it on this backend only (an id from muster status; local ones are negative).", valueName: "ID"))
        var backend: Int64?

        @Flag(help: "Print the models_loading answer as JSON.")
        var json = false

        func validate() throws {
            guard Grammar.isLabel(model, max: ProtocolLimits.maxModelLength) else {
                throw ValidationError(
                    "MODEL must be 1...\(ProtocolLimits.maxModelLength) characters without control characters")
            }
        }

        func run() async throws {
            let (loading, names) = try await client.withClient { c in
                let loading = try await c.loadModel(model, backend: backend.map { BackendID($0) })
                let names = BackendNames(try await c.status().backends)
                return (loading, names)
            }
            if json {
                print(String(decoding: loading.encode(), as: UTF8.self))
            } else if loading.backends.isEmpty {
                print(
                    "no backend was told to load \(loading.model) now; "
                        + "backends that join later and offer it will load it"
                )
            } else {
                print(
                    "loading \(loading.model) on: \(loading.backends.map { names.label($0) }.joined(separator: ", "))")
            }
        }
    }
}
