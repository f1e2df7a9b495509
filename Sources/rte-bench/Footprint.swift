import ArgumentParser
import POSIXIO
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Benchmark 5: size, memory, idle CPU and start-up of the release daemon.
struct Footprint: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Binary size, RSS, idle CPU, start-up time.")
    @Option(help: "The rte-agent binary (built with --static-swift-stdlib).") var agent = ".build/release/rte-agent"
    @Option(help: "Seconds of idling to measure CPU over.") var idleSeconds = 60
    @Option(help: "Append Markdown rows to this file.") var table: String?
    @Option(help: "What this binary is, before each row's text (e.g. the board build).") var label: String?

    func run() async throws {
        var report = Report("footprint", table: table)
        var st = stat()
        guard stat(agent, &st) == 0 else { throw BenchError("no binary at \(agent)") }
        let size = Double(st.st_size) / 1e6
        let linked = try Child(["ldd", agent])
        var libs: [String] = []
        while let l = linked.readLine() { if l.contains("swift") { libs.append(l) } }
        _ = linked.wait()
        let stripped = ".build/bench/rte-agent.stripped"
        try? FileManager.default.removeItem(atPath: stripped)
        try FileManager.default.copyItem(atPath: agent, toPath: stripped)
        guard try Child(["strip", stripped]).wait() == 0, stat(stripped, &st) == 0 else { throw BenchError("strip failed") }
        let strippedSize = Double(st.st_size) / 1e6
        report.line("binary: \(fmt(size)) MB (\(fmt(strippedSize)) MB stripped, as a package would ship it), Swift runtime libraries linked dynamically: \(libs.isEmpty ? "none (static stdlib)" : libs.joined(separator: ", "))")

        var startups: [Double] = []
        for _ in 0..<5 {
            let d = try Daemon(binary: agent, config: try simulatedConfig(), stateDirectory: ".build/bench/footprint-state")
            startups.append(d.startup * 1000)
            d.stop()
        }
        let startup = Distribution(startups)
        report.line("start-up to a listening socket (simulated apu2, 5 starts): median \(fmt(startup.p50)) ms, max \(fmt(startup.max)) ms")

        let d = try Daemon(binary: agent, config: try simulatedConfig(), stateDirectory: ".build/bench/footprint-state")
        defer { d.stop() }
        let rssStart = statusKilobytes("VmRSS", pid: d.pid)! / 1024
        let cpu0 = cpuSeconds(pid: d.pid)!, t0 = now()
        try await Task.sleep(for: .seconds(idleSeconds))
        let idleCPU = (cpuSeconds(pid: d.pid)! - cpu0) / (now() - t0) * 100
        let rssIdle = statusKilobytes("VmRSS", pid: d.pid)! / 1024
        report.line("idle: RSS \(fmt(rssStart)) MB after start, \(fmt(rssIdle)) MB after \(idleSeconds) s; CPU \(fmt(idleCPU, 3)) % over \(idleSeconds) s")
        // Where the idle RSS is: the agent's own heap and stacks, its binary's pages, shared libraries.
        let split = residentSplit(pid: d.pid, binary: agent)
        report.line("idle RSS split: private anonymous \(fmt(split.anonymous)) MB, rte-agent's file pages \(fmt(split.binary)) MB, shared libraries \(fmt(split.libraries)) MB (\(split.largest))")
        var total = 0
        var after: [Double] = []
        for _ in 0..<3 {
            // Enough for 100 000 requests per round at the rates measured here.
            var round = 0
            while round < 100_000 {
                let r = try WrkResult.run("http://127.0.0.1:\(d.port)/api/v1/status", connections: 50, seconds: 4)
                round += r.requests
            }
            total += round
            // Read once the load is over: wrk's last connections close as it exits.
            try await Task.sleep(for: .seconds(1))
            after.append(statusKilobytes("VmRSS", pid: d.pid)! / 1024)
            report.line("RSS after \(total) requests: \(fmt(after.last!)) MB")
        }
        let growth = after.max()! - rssIdle
        let prefix = label.map { "\($0): " } ?? ""
        report.row(prefix + "release binary, --static-swift-stdlib (unstripped / stripped)", agent: "\(fmt(size)) / \(fmt(strippedSize)) MB",
                   target: "stripped ≤ 20 MB, no Swift runtime to install", met: libs.isEmpty && strippedSize <= 20)
        report.row(prefix + "idle RSS / after 100k / after \(total / 1000)k requests", agent: "\(fmt(rssIdle)) / \(fmt(after.first!)) / \(fmt(after.last!)) MB",
                   target: "idle ≤ 12 MB; after load within 2 MB of idle", met: rssIdle <= 12 && growth <= 2)
        report.row(prefix + "idle RSS split: private anonymous / rte-agent's file pages / shared libraries", agent: "\(fmt(split.anonymous)) / \(fmt(split.binary)) / \(fmt(split.libraries)) MB",
                   baseline: split.largest)
        report.row(prefix + "idle CPU over \(idleSeconds) s", agent: "\(fmt(idleCPU, 3)) %", target: "≈ 0 (no busy polling)", met: idleCPU < 0.5)
        report.row(prefix + "start-up to listening socket (median of 5)", agent: "\(fmt(startup.p50)) ms")
        try report.finish(summary: "\(fmt(size)) MB binary (\(fmt(strippedSize)) MB stripped), RSS \(fmt(rssIdle)) MB idle → \(fmt(after.last!)) MB after \(total) requests, idle CPU \(fmt(idleCPU, 3)) %, start-up \(fmt(startup.p50)) ms")
    }
}

/// The resident set of a process split three ways, from /proc/PID/smaps (MB), and the shared
/// libraries that weigh most.
func residentSplit(pid: Int32, binary: String) -> (anonymous: Double, binary: Double, libraries: Double, largest: String) {
    // Read to the end (procfs files report size 0).
    guard let bytes = readFile("/proc/\(pid)/smaps") else { return (0, 0, 0, "") }
    let text = String(decoding: bytes, as: UTF8.self)
    let name = String(binary.split(separator: "/").last ?? "")
    var anonymous = 0.0, own = 0.0, perLibrary: [String: Double] = [:]
    var mapping = ""
    for line in text.split(separator: "\n") {
        let fields = line.split(separator: " ", omittingEmptySubsequences: true)
        if let first = fields.first, first.contains("-"), fields.count >= 5 {
            mapping = fields.count >= 6 ? String(fields[5]) : ""
        } else if fields.first == "Rss:", fields.count >= 2, let kb = Double(fields[1]) {
            if mapping.hasSuffix("/" + name) { own += kb }
            else if mapping.hasPrefix("/") { perLibrary[String(mapping.split(separator: "/").last!), default: 0] += kb }
            else { anonymous += kb }  // heap, stacks, anonymous mappings
        }
    }
    let libraries = perLibrary.values.reduce(0, +)
    let largest = perLibrary.sorted { $0.value > $1.value }.prefix(4).map { "\($0.key) \(fmt($0.value / 1024)) MB" }.joined(separator: ", ")
    // The binary's writable pages (relocated data) count as its own.
    return (anonymous / 1024, own / 1024, libraries / 1024, largest)
}
