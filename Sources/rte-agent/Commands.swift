import AgentClock
import AgentRuntime
import ArgumentParser
import Configuration
import POSIXIO
#if canImport(Glibc)
import Glibc
#endif

struct RTEAgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rte-agent",
        abstract: "Runs on a 3mdeb RTE and turns the device under test into a shared, self-testing lab machine.",
        subcommands: [Serve.self, CheckConfig.self])
}

struct ConfigOptions: ParsableArguments {
    @Option(name: .long, help: "Path of the YAML configuration.")
    var config: String = "/etc/rte-agent/rte-agent.yaml"

    func load() throws -> AgentConfig {
        do { return try AgentConfig.load(path: config) } catch {
            throw ValidationError(error.description)
        }
    }
}

struct CheckConfig: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "check-config", abstract: "Loads the configuration and reports the first problem.")
    @OptionGroup var options: ConfigOptions

    func run() async throws {
        let c = try options.load()
        print("\(options.config): ok (dut \(c.dut.name), backend \(c.dut.backend.rawValue), \(c.gpio.lines.count) GPIO lines, serial \(c.serial.device) at \(c.serial.baud))")
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Runs the agent.")
    @OptionGroup var options: ConfigOptions
    @Option(name: .long, help: "HOST:PORT to listen on (overrides http.listen).")
    var listen: String?
    @Option(name: .customLong("state-dir"), help: "State directory (overrides state_dir).")
    var stateDir: String?

    func run() async throws {
        var config = try options.load()
        if let listen { do { config = try config.overridingListen(listen) } catch { throw ValidationError(error.description) } }
        if let stateDir { config.stateDirectory = stateDir }
        let agent: Agent
        do {
            agent = try await Agent.start(config: config)
        } catch {
            printToStandardError("rte-agent: cannot start: \(error)")
            throw ExitCode(1)
        }
        await waitForTerminationSignal()
        printToStandardError("rte-agent: stopping; outputs back to their safe values")
        let problems = await agent.shutdown()
        problems.forEach { printToStandardError("rte-agent: shutdown: \($0)") }
    }
}
