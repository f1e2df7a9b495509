import AgentRuntime
import POSIXIO
#if canImport(Glibc)
import Glibc
#endif

@main
enum Entry {
    static func main() async {
        blockTerminationSignals()
        do {
            try await Invocation.parse(Array(CommandLine.arguments.dropFirst())).execute()
        } catch {
            if let message = error.message { printToStandardError(message) }
            exit(error.status)
        }
    }
}
