import AgentRuntime

@main
enum Entry {
    static func main() async {
        blockTerminationSignals()
        await RTEAgentCommand.main(nil)
    }
}
