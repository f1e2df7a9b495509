import AgentRuntime

@main
enum Entry {
    static func main() async {
        // Before any other thread exists, so every thread inherits the blocked mask.
        blockTerminationSignals()
        await RTEAgentCommand.main(nil)
    }
}
