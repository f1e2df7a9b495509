import AgentClock
import AgentRuntime
import HTTPServer
import BootFlow
import Runs
import Logging
import Configuration
import POSIXIO
#if canImport(Glibc)
import Glibc
#endif

// The command line is parsed by hand: three commands and three options do not need an argument
// parsing library, and the one we used brings FoundationEssentials (~3 MB resident) into the daemon.

/// How the process ends: 0 done, 1 failed, 2 a run refused, 64 a usage error (as sysexits' EX_USAGE).
struct Exit: Error { var status: Int32; var message: String? = nil }

struct Invocation: Equatable {
    enum Command: String { case serve, run, checkConfig = "check-config", help }
    var command: Command
    var config = "/etc/rte-agent/rte-agent.yaml"
    var listen: String?
    var stateDir: String?
    var spec: String?

    static let usage = """
    rte-agent — runs on a 3mdeb RTE and turns the device under test into a shared, self-testing lab machine.

    USAGE: rte-agent serve [--config FILE] [--listen HOST:PORT] [--state-dir DIR]
           rte-agent run [--config FILE] [--state-dir DIR] SPEC
           rte-agent check-config [--config FILE]

      serve          Runs the agent.
      run SPEC       Runs a boot test spec (YAML or JSON) on this board and prints the result as JSON;
                     for a board whose daemon is not running (it owns the serial port and the lines).
                     With the daemon up, POST the spec to /api/v1/runs instead.
      check-config   Loads the configuration and reports the first problem.

      --config FILE        the YAML configuration (default /etc/rte-agent/rte-agent.yaml)
      --listen HOST:PORT   where the API listens (overrides http.listen)
      --state-dir DIR      the state directory (overrides state_dir)
    """

    static func parse(_ arguments: [String]) throws(Exit) -> Invocation {
        func usageError(_ message: String) -> Exit { Exit(status: 64, message: "rte-agent: \(message)\n\n\(usage)") }
        guard let first = arguments.first else { throw usageError("give a command") }
        if ["help", "-h", "--help"].contains(first) { return Invocation(command: .help) }
        guard let command = Command(rawValue: first), command != .help else { throw usageError("unknown command \"\(first)\"") }
        var result = Invocation(command: command)
        var rest = arguments.dropFirst()
        while let arg = rest.popFirst() {
            if arg == "-h" || arg == "--help" { return Invocation(command: .help) }
            var name = arg, value: String?
            if arg.hasPrefix("--"), let eq = arg.firstIndex(of: "=") {
                name = String(arg[..<eq]); value = String(arg[arg.index(after: eq)...])
            }
            func take() throws(Exit) -> String {
                if let value { return value }
                guard let v = rest.popFirst(), !v.hasPrefix("--") else { throw usageError("\(name) needs a value") }
                return v
            }
            switch name {
            case "--config": result.config = try take()
            case "--state-dir" where command != .checkConfig: result.stateDir = try take()
            case "--listen" where command == .serve: result.listen = try take()
            default:
                if name.hasPrefix("-") || command != .run || result.spec != nil { throw usageError("unexpected argument \"\(arg)\" for \(command.rawValue)") }
                result.spec = arg
            }
        }
        if command == .run && result.spec == nil { throw usageError("run needs the spec file") }
        return result
    }

    func loadConfig() throws(Exit) -> AgentConfig {
        do { return try AgentConfig.load(path: config) } catch { throw Exit(status: 64, message: "rte-agent: \(error.description)") }
    }

    func execute() async throws(Exit) {
        switch command {
        case .help: print(Invocation.usage)
        case .checkConfig:
            let c = try loadConfig()
            print("\(config): ok (dut \(c.dut.name), backend \(c.dut.backend.rawValue), \(c.gpio.lines.count) GPIO lines, serial \(c.serial.device) at \(c.serial.baud))")
        case .serve: try await Serve(invocation: self).run()
        case .run: try await RunSpecCommand(invocation: self).run()
        }
    }
}

struct Serve {
    let invocation: Invocation

    func run() async throws(Exit) {
        var config = try invocation.loadConfig()
        if let listen = invocation.listen {
            do { config = try config.overridingListen(listen) } catch { throw Exit(status: 64, message: "rte-agent: \(error.description)") }
        }
        if let stateDir = invocation.stateDir { config.stateDirectory = stateDir }
        // Caught from now on: a SIGTERM during start-up still ends in a clean, safe shutdown.
        guard let signals = TerminationSignals.install() else {
            throw Exit(status: 1, message: "rte-agent: cannot install the SIGTERM handler")
        }
        LoggingSystem.bootstrap { JournalLogHandler(label: $0) }
        let logger = Logger(label: "rte-agent")
        let agent: Agent
        do {
            agent = try await Agent.start(config: config, logger: logger)
        } catch {
            logger.critical("cannot start: \(error)")
            throw Exit(status: 1)
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

struct RunSpecCommand {
    let invocation: Invocation

    func run() async throws(Exit) {
        var config = try invocation.loadConfig()
        let spec = invocation.spec ?? ""
        if let stateDir = invocation.stateDir { config.stateDirectory = stateDir }
        // The API still comes up, on loopback and a free port, so the run can be watched.
        do { config = try config.overridingListen("127.0.0.1:0") } catch { throw Exit(status: 64, message: "rte-agent: \(error)") }
        guard let bytes = readFile(spec) else { throw Exit(status: 64, message: "rte-agent: cannot read \(spec)") }
        let parsed: RunSpec
        do { parsed = try RunSpec.parse(yaml: String(decoding: bytes, as: UTF8.self)) } catch {
            throw Exit(status: 64, message: "rte-agent: \(spec): \(error)")
        }
        let agent: Agent
        do { agent = try await Agent.start(config: config) } catch {
            throw Exit(status: 1, message: "rte-agent: cannot start: \(error)")
        }
        let record: RunRecord
        do { record = try await agent.runs.submit(parsed, user: "cli", leaseToken: nil) } catch {
            _ = await agent.shutdown()
            throw Exit(status: 2, message: "rte-agent: run refused: \(error)")
        }
        let events: AsyncStream<RunEvent>
        do { events = try await agent.runs.events(record.id) } catch {
            _ = await agent.shutdown()
            throw Exit(status: 1, message: "rte-agent: \(error)")
        }
        for await e in events {
            if e.type == "stage_finished", let r = e.result {
                printToStandardError("[\(e.iteration ?? 0)] \(r.name): \(r.passed ? "ok" : "FAILED") in \(Int(r.durationMs)) ms, \(r.detail)")
            }
        }
        let final = await agent.runs.waitUntilFinished(record.id) ?? record
        print(String(decoding: RunEngine.encode(final), as: UTF8.self))
        _ = await agent.shutdown()
        if final.state != .passed { throw Exit(status: 1) }
    }
}
