import ArgumentParser
import MusterTransport

@main
struct Muster: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "muster",
        abstract: "Coordinator that spreads image and video jobs across GPU backends.",
        version: "0.1.0",
        subcommands: [Serve.self, AgentCommand.self, Submit.self, Status.self, Models.self, Drain.self]
    )
}
