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
    @Option(help: "Boots of each kind (the median is reported).") var boots = 11
    @Option(help: "Append Markdown rows to this file.") var table: String?
    @Flag(help: "Boot \"Xen Linux dev\" (Xen + a Linux dom0) instead of the plain \"Linux dev\": to dom0's login.") var xen = false
    @Flag(help: "Leave out the boots with `dhcp` and `chain` typed (more autoboot/floor pairs in the same time).") var skipTyped = false

    func run() async throws {
        var report = Report("boot", table: table)
        let prepare = try Child(["scripts/rig/prepare"])
        while let l = prepare.readLine() { report.line("| \(l)") }
        guard prepare.wait() == 0 else { throw BenchError("scripts/rig/prepare failed") }
        let root = FileManager.default.currentDirectoryPath
        // The agent picks the entry by its label from a menu whose default is another entry; the
        // floor's menu boots that entry by itself after 1 ms.
        let (label, slug) = xen ? ("Xen Linux dev", "xen-linux-dev") : ("Linux dev", "linux-dev")
        let what = xen ? "QEMU apu2 Xen + dom0 boot, power-on → dom0's login prompt" : "QEMU apu2 boot, power-on → login prompt"
        let web = root + "/.build/bench/rig-web", floorDir = root + "/.build/bench/rig-floor"
        let server = try Child(["scripts/rig/serve", web, "--exit-with-stdin"], input: .pipe)
        defer { server.stop() }
        let floorServer = try Child(["scripts/rig/serve", floorDir, "--exit-with-stdin", "--default", slug, "--timeout-ms", "1"], input: .pipe)
        defer { floorServer.stop() }
        guard let portLine = server.readLine(), portLine.hasPrefix("port "), let port = Int(portLine.dropFirst(5)),
              let floorLine = floorServer.readLine(), floorLine.hasPrefix("port "), let floorPort = Int(floorLine.dropFirst(5))
        else { throw BenchError("scripts/rig/serve did not start") }
        // The shipped QEMU config, pointed at the served directory (the daemon gets its own
        // --listen and --state-dir). The floor's DHCP names the menu by its HTTP URL, so iPXE's
        // autoboot fetches it the way the agent's `chain` does.
        let shipped = try String(contentsOfFile: "deploy/qemu-apu2.yaml", encoding: .utf8)
        guard shipped.contains("/opt/rte-rig"), shipped.contains("bootfile=menu.ipxe") else {
            throw BenchError("deploy/qemu-apu2.yaml no longer serves /opt/rte-rig/menu.ipxe")
        }
        // The agent's DHCP names its menu (default: another entry) by HTTP URL too, for its autoboot runs.
        let agentDaemon = try Daemon(binary: agent, config: shipped.replacingOccurrences(of: "/opt/rte-rig", with: web)
                                        .replacingOccurrences(of: "bootfile=menu.ipxe", with: "bootfile=http://10.0.2.2:\(port)/menu.ipxe"),
                                     stateDirectory: ".build/bench/boot-agent")
        defer { agentDaemon.stop() }
        let floorDaemon = try Daemon(binary: agent, config: shipped.replacingOccurrences(of: "/opt/rte-rig", with: floorDir)
                                        .replacingOccurrences(of: "bootfile=menu.ipxe", with: "bootfile=http://10.0.2.2:\(floorPort)/menu.ipxe"),
                                     stateDirectory: ".build/bench/boot-floor")
        defer { floorDaemon.stop() }
        func leased(_ d: Daemon) throws -> AgentClient {
            let lease = try d.client().call("POST", "/api/v1/leases", json: ["ttl_s": 3600]).object["token"] as! String
            return try d.client(leaseToken: lease)
        }
        let agentClient = try leased(agentDaemon), floorClient = try leased(floorDaemon)

        /// The agent's boot test, watched on the console like the floor's; also the run's own stage times.
        /// `typed`: Ctrl-B, then `dhcp` and `chain URL` typed at iPXE>; else iPXE's own autoboot
        /// (DHCP names the menu), its Ctrl-B wait ended by a key (`skip_banner_wait`).
        func agentBoot(_ c: AgentClient, typed: Bool) async throws -> (trace: ConsoleTrace, stages: String) {
            let ipxe: [String: Any] = typed ? ["commands": ["dhcp", "chain http://10.0.2.2:\(port)/menu.ipxe"], "menu_entry": label]
                                             : ["skip_banner_wait": true, "menu_entry": label]
            let spec: [String: Any] = [
                "name": "qemu apu2: \(label)", "power": "on",
                "ipxe": ipxe,
                "login": ["username": "root", "password": "debian", "shell_prompt": "# "],
                "commands": [["send": "cat /proc/cmdline", "expect": "rte.entry=\(slug)", "timeout_s": 20]],
                "timeouts": ["firmware": 60, "ipxe": 90, "kernel": 240, "login": 60],
            ]
            let from = try captureEnd(c), t0 = now()
            async let watched = onThread { try ConsoleTrace(following: c, from: from, since: t0) }
            let posted = try c.call("POST", "/api/v1/runs", json: spec)
            guard let id = posted.object["id"] as? String else { throw BenchError("run refused: \(posted.status)") }
            // The run's own event stream says when it is over.
            let ended = try await onThread { () throws -> Bool in
                var events: [UInt8] = []
                try c.stream("/api/v1/runs/\(id)/events") { bytes in
                    events += bytes
                    return events.firstRange(of: Array("event: run_finished".utf8)) == nil
                }
                return events.firstRange(of: Array("event: run_finished".utf8)) != nil
            }
            guard ended else { throw BenchError("the run's event stream ended before the run did") }
            let run = try c.call("GET", "/api/v1/runs/\(id)").object
            defer { _ = try? c.call("POST", "/api/v1/power", json: ["action": "hard_off"]) }
            guard run["state"] as? String == "passed" else {
                let detail = (try? JSONSerialization.data(withJSONObject: run["iterations"] ?? [], options: [.prettyPrinted])).map { String(decoding: $0, as: UTF8.self) } ?? ""
                throw BenchError("the boot run failed: \(run["message"] ?? "")\n\(detail)")
            }
            let stages = ((run["iterations"] as? [[String: Any]])?.first?["stages"] as? [[String: Any]]) ?? []
            let trace = try await watched
            guard trace.loginPrompt != nil else { throw BenchError("the agent's boot: no login prompt seen on the console") }
            let menu = stages.first { $0["name"] as? String == "ipxe_menu" }?["detail"] as? String
            return (trace, stages.map { "\($0["name"] as! String) \(Int(($0["duration_ms"] as? Double) ?? 0)) ms" }.joined(separator: ", ")
                        + (menu.map { "; menu: \($0)" } ?? ""))
        }

        /// The floor: power on and watch the console; nobody types.
        func floorBoot(_ c: AgentClient) async throws -> ConsoleTrace {
            let from = try captureEnd(c), t0 = now()
            _ = try c.call("POST", "/api/v1/power", json: ["action": "on"])
            defer { _ = try? c.call("POST", "/api/v1/power", json: ["action": "hard_off"]) }
            let trace = try await onThread { try ConsoleTrace(following: c, from: from, since: t0) }
            guard trace.loginPrompt != nil else { throw BenchError("the floor boot did not reach the login prompt") }
            return trace
        }

        // Alternated, so that drift in the host's speed weighs on all alike.
        var agentTraces: [ConsoleTrace] = [], typedTraces: [ConsoleTrace] = [], floorTraces: [ConsoleTrace] = []
        for k in 1...boots {
            let a = try await agentBoot(agentClient, typed: false)
            agentTraces.append(a.trace)
            report.line("agent boot \(k) (autoboot, Ctrl-B wait skipped): \(a.trace.summary)")
            report.line("  run stages: \(a.stages)")
            if !skipTyped {
                let t = try await agentBoot(agentClient, typed: true)
                typedTraces.append(t.trace)
                report.line("agent boot \(k) (Ctrl-B, dhcp and chain typed): \(t.trace.summary)")
                report.line("  run stages: \(t.stages)")
            }
            let f = try await floorBoot(floorClient)
            floorTraces.append(f)
            report.line("floor boot \(k): \(f.summary); iPXE's Ctrl-B wait \(fmt(f.ctrlBWait, 2)) s")
        }
        // Where the time goes: each phase's median, agent vs floor (the floor's Ctrl-B wait taken out).
        func phases(_ traces: [ConsoleTrace], _ label: String) -> (text: String, sum: Double, floorSum: Double) {
            var out: [String] = [], sum = 0.0, floorSum = 0.0
            for (i, name) in ConsoleTrace.milestones.map(\.name).enumerated() {
                let a = Distribution(traces.compactMap { $0.phase(i) }).p50, f = Distribution(floorTraces.compactMap { $0.phase(i, withoutCtrlBWait: true) }).p50
                report.line("phase → \(name): \(label) \(fmt(a, 2)) s, floor \(fmt(f, 2)) s")
                out.append("\(name) \(fmt(a, 2)) / \(fmt(f, 2))")
                sum += a
                floorSum += f
            }
            return (out.joined(separator: "; "), sum, floorSum)
        }
        func floorTotal(_ f: ConsoleTrace) -> Double? { f.loginPrompt.map { $0 - f.ctrlBWait } }
        let autoPhases = phases(agentTraces, "agent (autoboot)")
        let agentMedian = Distribution(agentTraces.compactMap(\.loginPrompt)).p50
        let floorMedian = Distribution(floorTraces.compactMap(floorTotal)).p50
        // Each round's agent boot against the floor boot right after it: drift in the host's speed
        // cancels within a pair, and the median of the pairs' ratios is the paired view of the same.
        let pairRatios = zip(agentTraces, floorTraces).compactMap { a, f -> Double? in
            guard let at = a.loginPrompt, let ft = floorTotal(f) else { return nil }
            return at / ft
        }
        let pairs = Distribution(pairRatios)
        report.line("agent: power-on → login prompt median \(fmt(agentMedian, 2)) s (autoboot); floor median \(fmt(floorMedian, 2)) s")
        report.line("per-round ratios: " + pairRatios.map { fmt($0, 3) }.joined(separator: ", "))
        report.row("\(what) (median of \(boots)): iPXE's autoboot, Ctrl-B wait skipped, menu entry by label",
                   agent: "\(fmt(agentMedian, 2)) s", baseline: "DUT floor \(fmt(floorMedian, 2)) s", target: "ratio ≤ 1.05")
        report.row("agent / floor ratio (autoboot\(xen ? ", Xen" : ""))", agent: "\(fmt(agentMedian / floorMedian, 2))", target: "≤ 1.05", met: agentMedian / floorMedian <= 1.05)
        report.row("the same, paired: median of each round's agent / floor ratio (\(pairs.count) rounds; lowest – highest)",
                   agent: "\(fmt(pairs.p50, 2)) (\(fmt(pairs.sorted.first ?? .nan, 2)) – \(fmt(pairs.max, 2)))")
        report.row("the same, by phase: sum of the phase medians, agent / floor",
                   agent: "\(fmt(autoPhases.sum, 2)) / \(fmt(autoPhases.floorSum, 2)) s, ratio \(fmt(autoPhases.sum / autoPhases.floorSum, 2))")
        if !typedTraces.isEmpty {
            let typedMedian = Distribution(typedTraces.compactMap(\.loginPrompt)).p50
            let typedPhases = phases(typedTraces, "agent (typed)")
            report.line("agent (typed): power-on → login prompt median \(fmt(typedMedian, 2)) s")
            report.row("the same with Ctrl-B, `dhcp` and `chain URL` typed at iPXE>", agent: "\(fmt(typedMedian, 2)) s, ratio \(fmt(typedMedian / floorMedian, 2))",
                       baseline: "42 keys through SeaBIOS's serial console, 1–15 per 55 ms tick")
            report.row("each phase, median agent (typed) / floor (s)", agent: typedPhases.text)
        }
        report.row("each phase, median agent (autoboot) / floor (s)", agent: autoPhases.text,
                   baseline: "the agent presses space at the Ctrl-B prompt and the menu keys; the floor types nothing")
        try report.finish(summary: "agent \(fmt(agentMedian, 2)) s (autoboot) vs floor \(fmt(floorMedian, 2)) s to the login prompt: ratio \(fmt(agentMedian / floorMedian, 2))")
    }
}

private func captureEnd(_ c: AgentClient) throws -> Int {
    (try c.call("GET", "/api/v1/status").object["serial"] as? [String: Any])?["capture_end"] as? Int ?? 0
}

/// When each step of a network boot first showed on the console (arrival at a stream client,
/// seconds after power-on was asked for): the same yardstick for the agent's run and the floor.
struct ConsoleTrace: Sendable {
    /// Each milestone is its texts appearing in this order after the previous milestone.
    static let milestones: [(name: String, texts: [String])] = [
        ("iPXE's Ctrl-B prompt", ["Press Ctrl-B for the iPXE command line..."]),
        ("DHCP done", ["Configuring (net0", " ok"]),
        ("menu fetched", ["menu.ipxe", " ok"]),
        ("menu drawn", ["iPXE shell"]),
        // iPXE prints the kernel's URL as it starts fetching it: the menu's choice is made.
        ("kernel fetch started", ["vmlinuz"]),
        ("kernel + initrd fetched", ["initrd.img", " ok"]),
        ("Linux started", ["Linux version"]),
        ("login prompt", ["login: "]),
    ]
    private(set) var times: [Double] = []
    /// From the Ctrl-B prompt to the next byte: iPXE waiting for a human (2 s when nobody types).
    private(set) var ctrlBWait = 0.0

    init(following c: AgentClient, from offset: Int, since t0: Double) throws {
        var text: [UInt8] = [], searchFrom = 0, textIndex = 0
        var promptAt: Double?
        try c.stream("/api/v1/serial/stream?from=\(offset)") { bytes in
            let t = now()
            if let p = promptAt, ctrlBWait == 0 { ctrlBWait = t - p }
            text += bytes
            while times.count < Self.milestones.count {
                let wanted = Array(Self.milestones[times.count].texts[textIndex].utf8)
                guard let r = text[searchFrom...].firstRange(of: wanted) else { break }
                searchFrom = r.upperBound
                textIndex += 1
                if textIndex == Self.milestones[times.count].texts.count {
                    if times.isEmpty { promptAt = t }
                    times.append(t - t0)
                    textIndex = 0
                }
            }
            return times.count < Self.milestones.count && t - t0 < 300
        }
    }

    var loginPrompt: Double? { times.count == Self.milestones.count ? times.last : nil }

    /// Seconds from the previous milestone (power-on for the first) to milestone `i`.
    func phase(_ i: Int, withoutCtrlBWait: Bool = false) -> Double? {
        guard i < times.count else { return nil }
        let d = times[i] - (i == 0 ? 0 : times[i - 1])
        return withoutCtrlBWait && i == 1 ? d - ctrlBWait : d
    }

    var summary: String {
        zip(Self.milestones, times).map { "\($0.0.name) \(fmt($0.1, 2))" }.joined(separator: ", ") + " s"
    }
}
