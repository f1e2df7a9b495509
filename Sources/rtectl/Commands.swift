import AgentClient
import ArgumentParser
import Foundation
import JSONDocument

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "The DUT, its power, the lease and the serial port.")
    @OptionGroup var c: Connection

    func run() async throws {
        let r = try c.client().call("GET", "/api/v1/status")
        if c.json { return c.printJSON(r) }
        let o = r.object
        let serial = o["serial"] as? [String: Any] ?? [:]
        print("\(o["dut"] ?? "?") (\(o["board"] ?? "?"), \(o["backend"] ?? "?")) — power \(o["power"] ?? "?")")
        if let lease = o["lease"] as? [String: Any] {
            print("leased by \(lease["holder"] ?? "?") until \(lease["expires_at"] ?? "?") (\(timeLeft(lease["expires_at"] as? String ?? ""))): \(lease["purpose"] ?? "")")
        } else {
            print("free")
        }
        if let q = o["queue_length"] as? Int, q > 0 { print("\(q) waiting") }
        print("serial \(serial["device"] ?? "?") \(serial["state"] ?? "?"), \(serial["bytes_read"] ?? 0) bytes read")
    }
}

struct Reserve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Take the device (a lease); later commands use it.")
    @OptionGroup var c: Connection
    @Option(help: "How long to hold it (e.g. 30m, 2h).") var ttl = "1h"
    @Option(help: "Wait in the queue this long if it is taken (e.g. 10m).") var wait: String?
    @Option(help: "What it is for (shown to others).") var purpose = ""
    @Flag(help: "Bind the lease to this machine's address: its connections to the console port may type.") var bind = false
    @Flag(name: .customLong("or-renew"), help: "If the lease this machine remembers is still the current one, renew it instead (for a fleet engine's power commands, which run more than once per job).")
    var orRenew = false

    func run() async throws {
        if orRenew, let saved = c.savedLease?["token"] as? String {
            let client = try AgentClient(url: c.agentURL, token: try c.client(withLease: false).token, leaseToken: saved)
            if let r = try? client.call("POST", "/api/v1/leases/current/renew", json: ["ttl_s": try seconds(ttl)]) {
                if c.json { return c.printJSON(r) }
                print("renewed \(c.savedLease?["id"] ?? "") until \(r.object["expires_at"] ?? "") (\(timeLeft(r.object["expires_at"] as? String ?? "")))")
                return
            }
        }
        var body: [String: Any] = ["ttl_s": try seconds(ttl), "purpose": purpose]
        if let wait { body["wait_s"] = try seconds(wait) }
        if bind { body["bind_address"] = true }
        let r = try c.client(withLease: false).call("POST", "/api/v1/leases", json: body)
        try FileManager.default.createDirectory(atPath: (c.leaseFile as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: c.leaseFile, contents: Data(r.body), attributes: [.posixPermissions: 0o600])
        if c.json { return c.printJSON(r) }
        let o = r.object
        print("reserved \(o["id"] ?? "") until \(o["expires_at"] ?? "") (\(timeLeft(o["expires_at"] as? String ?? "")))")
    }
}

struct Renew: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Extend the lease.")
    @OptionGroup var c: Connection
    @Option(help: "New time left (e.g. 1h).") var ttl = "1h"

    func run() async throws {
        let r = try c.client().call("POST", "/api/v1/leases/current/renew", json: ["ttl_s": try seconds(ttl)])
        if c.json { return c.printJSON(r) }
        print("renewed until \(r.object["expires_at"] ?? "")")
    }
}

struct Release: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Give the device back.")
    @OptionGroup var c: Connection

    @Option(help: "A power action first (e.g. hard_off), while the lease still holds the board.") var power: String?
    @Flag(name: .customLong("if-held"), help: "If the lease this machine remembers is no longer the current one, do nothing and exit 0 (a fleet engine's clean-up must not touch a board someone else holds).")
    var ifHeld = false

    func run() async throws {
        let client = try c.client()
        if ifHeld {
            let saved = c.savedLease?["id"] as? String
            // 404: nobody holds it. Any other failure (the agent unreachable) is reported as such.
            var current: [String: Any]?
            do { current = try client.call("GET", "/api/v1/leases/current").object } catch {
                guard case .problem(let status, _, _, _, _) = error as? ClientError, status == 404 else { throw error }
            }
            guard let saved, let current, current["id"] as? String == saved else {
                let who = (current?["holder"] as? String).map { "held by \($0)" } ?? "free"
                if !c.json { print("not holding the board (it is \(who)); nothing done") }
                try? FileManager.default.removeItem(atPath: c.leaseFile)
                return
            }
        }
        if let power {
            let r = try client.call("POST", "/api/v1/power", json: ["action": power])
            if !c.json { print("power \(r.object["state"] ?? "?")") }
        }
        _ = try client.call("DELETE", "/api/v1/leases/current")
        try? FileManager.default.removeItem(atPath: c.leaseFile)
        if !c.json { print("released") }
    }
}

struct Power: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "on | off | hard_off | reset | cycle | press | long_press")
    @OptionGroup var c: Connection
    @Argument var action: String

    func run() async throws {
        let r = try c.client().call("POST", "/api/v1/power", json: ["action": action])
        if c.json { return c.printJSON(r) }
        print("power \(r.object["state"] ?? "?")")
    }
}

struct GPIOCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "gpio", abstract: "list | get NAME | set NAME on|off | pulse NAME MS")
    @OptionGroup var c: Connection
    @Argument var verb: String
    @Argument var name: String?
    @Argument var value: String?

    func run() async throws {
        let client = try c.client()
        let r: Response
        switch (verb, name, value) {
        case ("list", nil, nil): r = try client.call("GET", "/api/v1/lines")
        case ("get", let n?, nil): r = try client.call("GET", "/api/v1/lines/\(n)")
        case ("set", let n?, let v?):
            guard ["on", "off", "1", "0", "true", "false"].contains(v) else { throw ValidationError("set takes on or off") }
            r = try client.call("POST", "/api/v1/lines/\(n)", json: ["active": ["on", "1", "true"].contains(v)])
        case ("pulse", let n?, let ms?):
            guard let m = Int(ms) else { throw ValidationError("pulse takes milliseconds") }
            r = try client.call("POST", "/api/v1/lines/\(n)", json: ["pulse_ms": m])
        default: throw ValidationError("usage: rtectl gpio list | get NAME | set NAME on|off | pulse NAME MS")
        }
        if c.json { return c.printJSON(r) }
        let lines = (r.json as? [[String: Any]]) ?? (r.json as? [String: Any]).map { [$0] } ?? []
        for l in lines {
            let active = (l["active"] as? Bool).map { $0 ? "active" : "inactive" } ?? "?"
            print("\(l["role"] ?? "?")\t\(l["direction"] ?? "")\t\(active)\t\(l["chip"] ?? "") line \(l["offset"] ?? "")")
        }
    }
}

struct Log: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "The DUT's serial output (captured by the agent).")
    @OptionGroup var c: Connection
    @Option(help: "Capture offset to start at.") var from: UInt64 = 0
    @Flag(help: "Keep following new output.") var follow = false

    func run() async throws {
        let client = try c.client()
        var offset = from
        while true {
            let r = try client.call("GET", "/api/v1/serial/log?from=\(offset)&limit=1048576")
            let data = Data(base64Encoded: r.object["data"] as? String ?? "") ?? Data()
            FileHandle.standardOutput.write(data)
            let next = UInt64(r.object["next"] as? Int ?? Int(offset))
            if next == offset { break }
            offset = next
        }
        guard follow else { return }
        try client.stream("/api/v1/serial/stream?from=\(offset)") { bytes in
            FileHandle.standardOutput.write(Data(bytes))
            return true
        }
    }
}

struct Runs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Boot test runs on this agent, newest first.")
    @OptionGroup var c: Connection

    func run() async throws {
        let r = try c.client().call("GET", "/api/v1/runs")
        if c.json { return c.printJSON(r) }
        for run in r.object["runs"] as? [[String: Any]] ?? [] {
            let counts = (run["passed"] as? Int).map { " \($0)/\(run["repeat_count"] ?? 1) passed" } ?? ""
            print("\(run["id"] ?? "")\t\(run["state"] ?? "")\t\(run["user"] ?? "")\t\(run["name"] ?? "")\(counts)")
        }
    }
}
