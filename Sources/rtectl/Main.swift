import AgentClient
import ArgumentParser
import Foundation
import JSONDocument

/// Exit statuses scripts can rely on.
enum Status: Int32 { case ok = 0, failed = 1, usage = 2, busy = 3, unreachable = 4 }

@main
enum Main {
    static func main() async {
        do {
            var command = try RTECtl.parseAsRoot()
            if var async = command as? AsyncParsableCommand { try await async.run() } else { try command.run() }
            exit(Status.ok.rawValue)
        } catch let e as ClientError {
            printError(render(e))
            switch e {
            case .unreachable: exit(Status.unreachable.rawValue)
            case .problem(let status, _, _, _, _) where status == 409 || status == 423: exit(Status.busy.rawValue)
            default: exit(Status.failed.rawValue)
            }
        } catch let e as ExitCode {
            exit(e.rawValue)
        } catch {
            let code = RTECtl.exitCode(for: error)
            if code == .success { RTECtl.exit(withError: error) }  // --help, --version
            printError(RTECtl.fullMessage(for: error))
            exit(code == .validationFailure ? Status.usage.rawValue : Status.failed.rawValue)
        }
    }
}

func printError(_ s: String) { FileHandle.standardError.write(Data((s + "\n").utf8)) }

func render(_ e: ClientError) -> String {
    switch e {
    case .problem(let status, let title, let detail, let holder, let expiresAt):
        var s = "rtectl: \(title) (HTTP \(status))\n  \(detail)"
        if let holder { s += "\n  holder: \(holder)" + (expiresAt.map { ", until \($0) (\(timeLeft($0)))" } ?? "") }
        return s
    default:
        return "rtectl: \(e)"
    }
}

/// "in 12m 3s" for an ISO-8601 time.
func timeLeft(_ iso: String) -> String {
    let f = ISO8601DateFormatter()
    f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    guard let d = f.date(from: iso) ?? ISO8601DateFormatter().date(from: iso) else { return iso }
    let s = Int(d.timeIntervalSinceNow.rounded())
    if s <= 0 { return "expired" }
    return "in " + (s >= 3600 ? "\(s / 3600)h \(s % 3600 / 60)m" : s >= 60 ? "\(s / 60)m \(s % 60)s" : "\(s)s")
}

/// "90", "90s", "15m", "2h" → seconds.
func seconds(_ text: String) throws -> Int {
    let units: [Character: Int] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
    if let unit = text.last, let mult = units[unit], let n = Int(text.dropLast()) { return n * mult }
    guard let n = Int(text) else { throw ValidationError("\"\(text)\" is not a duration (e.g. 90s, 15m, 2h)") }
    return n
}

struct RTECtl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rtectl",
        abstract: "Use an RTE and its device under test from a workstation, through rte-agent.",
        discussion: """
        Exit status: 0 ok, 1 failed (a test or a call), 2 usage, 3 device busy, 4 agent unreachable.
        The agent comes from --agent or RTE_AGENT, the token from --token or RTE_TOKEN; a lease taken with
        `rtectl reserve` is remembered for later commands.
        """,
        subcommands: [StatusCommand.self, Reserve.self, Renew.self, Release.self, Power.self, GPIOCommand.self, FlashCommand.self, Log.self,
                      Console.self, RunCommand.self, Runs.self])
}

struct Connection: ParsableArguments {
    @Option(name: .long, help: "Agent URL (default: the device's, $RTE_AGENT, or http://127.0.0.1:8000).")
    var agent: String?
    @Option(name: .long, help: "API token (default: the device's, or $RTE_TOKEN).")
    var token: String?
    @Option(name: .long, help: "Read the API token from this file (its first line; or $RTE_TOKEN_FILE): keeps it out of command lines that fleet engines log.")
    var tokenFile: String?
    @Option(name: .long, help: "A device named in ~/.config/rtectl/devices.yaml (default: $RTE_DEVICE).")
    var device: String?
    @Flag(name: .long, help: "Print JSON instead of text.")
    var json = false

    /// `devices: {lab1: {agent: http://rte-lab1:8000, token: ...}}` in $XDG_CONFIG_HOME/rtectl/devices.yaml.
    var named: (agent: String?, token: String?) {
        let env = ProcessInfo.processInfo.environment
        guard let name = device ?? env["RTE_DEVICE"] else { return (nil, nil) }
        let path = (env["XDG_CONFIG_HOME"] ?? NSHomeDirectory() + "/.config") + "/rtectl/devices.yaml"
        guard let text = try? String(contentsOfFile: path, encoding: .utf8), let doc = try? JSONValue.parse(yaml: text),
              case .object(let root) = doc, case .object(let devices)? = root["devices"], case .object(let d)? = devices[name] else {
            return (nil, nil)
        }
        func string(_ k: String) -> String? { if case .string(let s)? = d[k] { return s }; return nil }
        return (string("agent"), string("token"))
    }

    var agentURL: String { agent ?? named.agent ?? ProcessInfo.processInfo.environment["RTE_AGENT"] ?? "http://127.0.0.1:8000" }

    /// Where the lease token for this agent is kept between commands.
    var leaseFile: String {
        let env = ProcessInfo.processInfo.environment
        let dir = env["RTECTL_STATE_DIR"] ?? (env["XDG_STATE_HOME"] ?? (NSHomeDirectory() + "/.local/state")) + "/rtectl"
        let key = agentURL.replacingOccurrences(of: "http://", with: "").map { $0.isLetter || $0.isNumber ? $0 : "_" }
        return "\(dir)/lease-\(String(key)).json"
    }

    var savedLease: [String: Any]? {
        guard let d = FileManager.default.contents(atPath: leaseFile) else { return nil }
        return (try? JSONSerialization.jsonObject(with: d)) as? [String: Any]
    }

    func client(withLease: Bool = true) throws -> AgentClient {
        if let device = device ?? ProcessInfo.processInfo.environment["RTE_DEVICE"], named.agent == nil && agent == nil {
            throw ValidationError("no device \"\(device)\" in ~/.config/rtectl/devices.yaml")
        }
        return try AgentClient(url: agentURL, token: token ?? fileToken() ?? named.token ?? ProcessInfo.processInfo.environment["RTE_TOKEN"],
                        leaseToken: withLease ? savedLease?["token"] as? String : nil)
    }

    func fileToken() throws -> String? {
        guard let path = tokenFile ?? ProcessInfo.processInfo.environment["RTE_TOKEN_FILE"] else { return nil }
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw ValidationError("cannot read the token file \(path)") }
        let line = text.split(whereSeparator: \.isNewline).first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
        guard !line.isEmpty else { throw ValidationError("the token file \(path) is empty") }
        return line
    }

    func printJSON(_ r: Response) { print(String(decoding: r.body, as: UTF8.self)) }
}
