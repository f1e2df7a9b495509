import AgentClient
import ArgumentParser
import Foundation

/// Benchmark 6: a whole boot test on the QEMU virtual apu2 (real SeaBIOS, iPXE, Linux) driven by
/// the agent, against the DUT's own floor: the same firmware and kernel booting the same menu
/// entry with nobody typing (iPXE autoboot, the entry as the menu default), minus iPXE's
/// 2-second "Press Ctrl-B" wait, which exists only for a human.
struct BootTime: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "boot", abstract: "Boot wall time on QEMU: agent run vs the DUT's floor.")
    @Option(help: "The rte-agent binary.") var agent = ".build/release/rte-agent"
    @Option var boots = 3
    @Option(help: "Append Markdown rows to this file.") var table: String?

    func run() async throws {
        var report = Report("boot", table: table)
        let prepare = try Child(["scripts/rig/prepare"])
        while let l = prepare.readLine() { report.line("| \(l)") }
        guard prepare.wait() == 0 else { throw BenchError("scripts/rig/prepare failed") }
        let root = FileManager.default.currentDirectoryPath
        let web = root + "/.build/bench/rig-web", floorDir = root + "/.build/bench/rig-floor"
        for dir in [web, floorDir] {
            try? FileManager.default.removeItem(atPath: dir)
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            for f in ["vmlinuz", "initrd.img", "sercon-port"] {
                try FileManager.default.createSymbolicLink(atPath: "\(dir)/\(f)", withDestinationPath: "\(root)/.rig-cache/\(f)")
            }
        }
        let server = try Child(["python3", "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", web], quietErrors: true)
        defer { server.stop() }
        // "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ..."
        guard let serving = server.output(containing: [" port ", "("]), let portText = serving.components(separatedBy: " port ").last?.split(separator: " ").first,
              let port = Int(portText) else { throw BenchError("http.server did not start") }
        let entries = [("netboot", "Debian stable netboot"), ("netinst", "Debian stable netinst"), ("xen-linux-dev", "Xen Linux dev"), ("linux-dev", "Linux dev")]
        func menu(default entry: String, timeoutMs: Int) -> String {
            var m = ["#!ipxe", "menu 3mdeb lab boot menu", "item --gap -- --- Boot options ---"]
            m += entries.map { "item \($0.0) \($0.1)" } + ["item shell iPXE shell", "choose --default \(entry) --timeout \(timeoutMs) target && goto ${target}", ":shell", "shell"]
            for (slug, _) in entries {
                m += [":\(slug)", "kernel http://10.0.2.2:\(port)/vmlinuz console=ttyS0,115200 rte.entry=\(slug)", "initrd http://10.0.2.2:\(port)/initrd.img", "boot"]
            }
            return m.joined(separator: "\n") + "\n"
        }
        // The agent picks "Xen Linux dev" by its label from a menu whose default is another entry.
        try menu(default: "netboot", timeoutMs: 3000).write(toFile: web + "/menu.ipxe", atomically: true, encoding: .utf8)
        try menu(default: "xen-linux-dev", timeoutMs: 1).write(toFile: floorDir + "/menu.ipxe", atomically: true, encoding: .utf8)
        func config(tftp: String) -> String {
            """
            dut: {name: apu2-qemu, board: apu2, backend: qemu}
            serial: {device: dut-serial, baud: 115200}
            qemu:
              args: ["-machine", "pc,accel=tcg", "-cpu", "max", "-m", "512", "-display", "none", "-nodefaults",
                     "-fw_cfg", "name=etc/sercon-port,file=\(tftp)/sercon-port",
                     "-netdev", "user,id=n0,tftp=\(tftp),bootfile=menu.ipxe", "-device", "e1000,netdev=n0", "-boot", "n"]
            power: {cycle_off_ms: 200}
            http: {listen: "127.0.0.1:0"}
            state_dir: /tmp/unused
            auth: {enabled: false}
            """
        }

        // The agent's boot tests.
        var toLogin: [Double] = [], whole: [Double] = []
        var stageLines: [String] = []
        do {
            let d = try Daemon(binary: agent, config: config(tftp: web), stateDirectory: ".build/bench/boot-agent")
            defer { d.stop() }
            let lease = try d.client().call("POST", "/api/v1/leases", json: ["ttl_s": 3600]).object["token"] as! String
            let c = try d.client(leaseToken: lease)
            for _ in 0..<boots {
                let spec: [String: Any] = [
                    "name": "qemu apu2: Xen Linux dev", "power": "on",
                    "ipxe": ["commands": ["dhcp", "chain http://10.0.2.2:\(port)/menu.ipxe"], "menu_entry": "Xen Linux dev"],
                    "login": ["username": "root", "password": "debian", "shell_prompt": "# "],
                    "commands": [["send": "cat /proc/cmdline", "expect": "rte.entry=xen-linux-dev", "timeout_s": 20]],
                    "timeouts": ["firmware": 60, "ipxe": 90, "kernel": 240, "login": 60],
                ]
                let posted = try c.call("POST", "/api/v1/runs", json: spec)
                guard let id = posted.object["id"] as? String else { throw BenchError("run refused: \(posted.status)") }
                var run: [String: Any] = [:]
                repeat {
                    try await Task.sleep(for: .milliseconds(200))
                    run = try c.call("GET", "/api/v1/runs/\(id)").object
                } while ["queued", "running"].contains(run["state"] as? String ?? "")
                guard run["state"] as? String == "passed" else { throw BenchError("the boot run failed: \(run["message"] ?? "")") }
                let stages = ((run["iterations"] as? [[String: Any]])?.first?["stages"] as? [[String: Any]]) ?? []
                let durations = stages.map { ($0["name"] as! String, ($0["duration_ms"] as? Double) ?? 0) }
                let loginIndex = durations.firstIndex { $0.0 == "login" } ?? durations.count
                toLogin.append(durations[..<loginIndex].reduce(0) { $0 + $1.1 } / 1000)
                whole.append(durations.reduce(0) { $0 + $1.1 } / 1000)
                stageLines.append(durations.map { "\($0.0) \(Int($0.1)) ms" }.joined(separator: ", "))
                _ = try c.call("POST", "/api/v1/power", json: ["action": "hard_off"])
            }
        }
        for (k, l) in stageLines.enumerated() { report.line("agent boot \(k + 1): \(l)") }

        // The floor: power on and watch; nobody types.
        var floors: [Double] = [], waits: [Double] = []
        do {
            let d = try Daemon(binary: agent, config: config(tftp: floorDir), stateDirectory: ".build/bench/boot-floor")
            defer { d.stop() }
            let lease = try d.client().call("POST", "/api/v1/leases", json: ["ttl_s": 3600]).object["token"] as! String
            let c = try d.client(leaseToken: lease)
            for _ in 0..<boots {
                let from = (try c.call("GET", "/api/v1/status").object["serial"] as? [String: Any])?["capture_end"] as? Int ?? 0
                let t0 = now()
                _ = try c.call("POST", "/api/v1/power", json: ["action": "on"])
                let (login, wait) = try await onThread { () throws -> (Double, Double) in
                    var text = "", promptSeenAt: Double?, promptWait = 0.0
                    var loginAt = 0.0
                    try c.stream("/api/v1/serial/stream?from=\(from)") { bytes in
                        let t = now()
                        if let p = promptSeenAt, promptWait == 0 { promptWait = t - p }
                        text += String(decoding: bytes, as: UTF8.self)
                        if promptSeenAt == nil, text.contains("Press Ctrl-B for the iPXE command line...") { promptSeenAt = t }
                        if text.contains("login: ") { loginAt = t; return false }
                        return now() - t0 < 300
                    }
                    return (loginAt - t0, promptWait)
                }
                guard login > 0 else { throw BenchError("the floor boot did not reach the login prompt") }
                floors.append(login - wait)
                waits.append(wait)
                report.line("floor boot: login prompt after \(fmt(login, 2)) s, of which iPXE's Ctrl-B wait \(fmt(wait, 2)) s → floor \(fmt(login - wait, 2)) s")
                _ = try c.call("POST", "/api/v1/power", json: ["action": "hard_off"])
            }
        }
        let agentMedian = Distribution(toLogin).p50, floorMedian = Distribution(floors).p50, wholeMedian = Distribution(whole).p50
        report.line("agent: power-on → login prompt median \(fmt(agentMedian, 2)) s (whole run incl. login and a command \(fmt(wholeMedian, 2)) s); floor median \(fmt(floorMedian, 2)) s")
        report.row("QEMU apu2 boot, power-on → login prompt (median of \(boots))", agent: "\(fmt(agentMedian, 2)) s",
                   baseline: "DUT floor \(fmt(floorMedian, 2)) s", target: "ratio close to 1")
        report.row("agent / floor ratio", agent: "\(fmt(agentMedian / floorMedian, 2))")
        try report.finish(summary: "agent \(fmt(agentMedian, 2)) s vs floor \(fmt(floorMedian, 2)) s to the login prompt: ratio \(fmt(agentMedian / floorMedian, 2))")
    }
}
