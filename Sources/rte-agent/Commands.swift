import AgentClock
import AgentRuntime
import HTTPServer
import BootFlow
import Runs
import ArgumentParser
import Logging
import Configuration
import POSIXIO
#if canImport(Glibc)
import Glibc
#endif

struct RTEAgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rte-agent",
        abstract: "Runs on a 3mdeb RTE and turns the device under test into a shared, self-testing lab machine.",
        subcommands: [Serve.self, RunSpecCommand.self, CheckConfig.self])
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
        // Caught from now on: a SIGTERM during start-up still ends in a clean, safe shutdown.
        guard let signals = TerminationSignals.install() else {
            printToStandardError("rte-agent: cannot install the SIGTERM handler")
            throw ExitCode(1)
        }
        LoggingSystem.bootstrap { JournalLogHandler(label: $0) }
        let logger = Logger(label: "rte-agent")
        let agent: Agent
        do {
            agent = try await Agent.start(config: config, log: { logger.log(level: logLevel(of: $0), "\($0)") })
        } catch {
            logger.critical("cannot start: \(error)")
            throw ExitCode(1)
        }
        // systemd (Type=notify): ready once the API serves; the watchdog is fed while the agent
        // itself answers (its own health endpoint over loopback), so a wedged server gets restarted.
        SystemdNotify.send("READY=1\nSTATUS=serving \(config.dut.name) on port \(agent.port)")
        var watchdog: Task<Void, Never>?
        if let interval = SystemdNotify.watchdogInterval() {
            let router = agent.router
            let host = ["0.0.0.0", "::"].contains(config.http.host) ? "127.0.0.1" : config.http.host
            let plain = config.http.tlsCertificate == nil, port = agent.port
            watchdog = Task {
                while !Task.isCancelled {
                    // Through the real server when it speaks plain HTTP, else through the router.
                    let healthy: Bool
                    if plain {
                        healthy = await Task.detached { HealthProbe.ok(host: host, port: port) }.value
                    } else {
                        healthy = await router.handle(HTTPRequest(method: "GET", path: "/api/v1/health")).status == 200
                    }
                    if healthy { SystemdNotify.send("WATCHDOG=1") }
                    try? await Task.sleep(for: interval)
                }
            }
        }
        await signals.wait()
        watchdog?.cancel()
        SystemdNotify.send("STOPPING=1")
        logger.notice("stopping; outputs back to their safe values")
        let problems = await agent.shutdown()
        problems.forEach { logger.error("shutdown: \($0)") }
    }
}

struct RunSpecCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Runs a boot test spec (YAML or JSON) on this board and prints the result as JSON.",
        discussion: "For a board whose daemon is not running (it owns the serial port and the lines); with the daemon up, POST the spec to /api/v1/runs instead.")
    @OptionGroup var options: ConfigOptions
    @Argument(help: "The run spec file.")
    var spec: String
    @Option(name: .customLong("state-dir"), help: "State directory (overrides state_dir).")
    var stateDir: String?

    func run() async throws {
        var config = try options.load()
        if let stateDir { config.stateDirectory = stateDir }
        // The API still comes up, on loopback and a free port, so the run can be watched.
        config = try config.overridingListen("127.0.0.1:0")
        guard let bytes = readFile(spec) else { throw ValidationError("cannot read \(spec)") }
        let parsed: RunSpec
        do { parsed = try RunSpec.parse(yaml: String(decoding: bytes, as: UTF8.self)) } catch {
            throw ValidationError("\(spec): \(error)")
        }
        let agent = try await Agent.start(config: config, log: { printToStandardError("rte-agent: " + $0) })
        let record: RunRecord
        do { record = try await agent.runs.submit(parsed, user: "cli", leaseToken: nil) } catch {
            _ = await agent.shutdown()
            printToStandardError("rte-agent: run refused: \(error)")
            throw ExitCode(2)
        }
        let events = try await agent.runs.events(record.id)
        for await e in events {
            if e.type == "stage_finished", let r = e.result {
                printToStandardError("[\(e.iteration ?? 0)] \(r.name): \(r.passed ? "ok" : "FAILED") in \(Int(r.durationMs)) ms, \(r.detail)")
            }
        }
        let final = await agent.runs.waitUntilFinished(record.id) ?? record
        print(String(decoding: RunEngine.encode(final), as: UTF8.self))
        _ = await agent.shutdown()
        if final.state != .passed { throw ExitCode(1) }
    }
}
