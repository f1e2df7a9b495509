import AgentClient
import ArgumentParser
import Foundation

/// Benchmark 7: the agent's write + verify of an 8 MiB image against flashrom alone, same image,
/// same emulated chip (flashrom's dummy programmer), runs alternated. The agent's figure is the
/// wall time from the API request to the job's end, with the board's deliberate waits (the S5
/// button hold, the CMOS pulse) set to zero: what is left is the agent's own cost.
struct FlashTime: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "flash", abstract: "Write + verify through the agent vs flashrom alone.")
    @Option(help: "The rte-agent binary.") var agent = ".build/release/rte-agent"
    @Option(help: "Writes of each kind.") var runs = 5
    @Option(help: "Append Markdown rows to this file.") var table: String?

    static let chip = "MX25L6436E/MX25L6445E/MX25L6465E/MX25L6473E/MX25L6473F"

    func run() async throws {
        var report = Report("flash", table: table)
        let work = FileManager.default.currentDirectoryPath + "/.build/bench/flash"
        try? FileManager.default.removeItem(atPath: work)
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        // Two images written in turn, so every write really erases and writes (flashrom skips a
        // chip that already holds the image).
        var rng = SplitMix(state: 7)
        var images: [[UInt8]] = []
        for k in 0..<2 {
            var image = [UInt8](repeating: 0, count: 8 << 20)
            for i in stride(from: 0, to: image.count, by: 8) { withUnsafeBytes(of: rng.next()) { for b in 0..<8 { image[i + b] = $0[b] } } }
            try Data(image).write(to: URL(fileURLWithPath: work + "/image\(k).rom"))
            images.append(image)
        }

        let config = try simulatedConfig()
            .replacingOccurrences(of: "s5_press_ms: 200", with: "s5_press_ms: 0")
            .replacingOccurrences(of: "cmos_press_ms: 50", with: "cmos_press_ms: 50\n  cmos_reset_after_write: false")
        let d = try Daemon(binary: agent, config: config, stateDirectory: work + "/state")
        defer { d.stop() }
        let lease = try d.client().call("POST", "/api/v1/leases", json: ["ttl_s": 3600]).object["token"] as? String
        let client = try d.client(leaseToken: lease)

        var alone: [Double] = [], viaAgent: [Double] = [], flashromStep: [Double] = []
        for n in 0..<runs {
            _ = try client.call("PUT", "/api/v1/flash/image", raw: images[n % 2], contentType: "application/octet-stream")
            // flashrom by itself, as a lab runs it by hand.
            let t0 = now()
            let code = try Child(["env", "LC_ALL=C", "flashrom", "-p", "dummy:emulate=MX25L6436,image=\(work)/chip-alone.bin", "-c", FlashTime.chip,
                                  "-w", work + "/image\(n % 2).rom"]).wait()
            guard code == 0 else { throw BenchError("flashrom alone failed (\(code))") }
            alone.append((now() - t0) * 1000)
            // The same through the agent: request → sequence → flashrom → job finished.
            let t1 = now()
            let job = try client.call("POST", "/api/v1/flash/jobs", json: ["operation": "write"]).object
            let id = job["id"] as? String ?? ""
            try client.stream("/api/v1/flash/jobs/\(id)/events") { bytes in !String(decoding: bytes, as: UTF8.self).contains("event: finished") }
            viaAgent.append((now() - t1) * 1000)
            let done = try client.call("GET", "/api/v1/flash/jobs/\(id)").object
            guard done["state"] as? String == "succeeded" else { throw BenchError("the agent's write failed: \(done["failure"] ?? "")") }
            flashromStep.append(done["flashrom_ms"] as? Double ?? 0)
            report.line("write \(n + 1): flashrom alone \(fmt(alone.last!)) ms, through the agent \(fmt(viaAgent.last!)) ms (its flashrom step \(fmt(flashromStep.last!)) ms)")
        }
        let a = Distribution(alone), g = Distribution(viaAgent), f = Distribution(flashromStep)
        let overhead = (g.p50 / a.p50 - 1) * 100
        report.line("median: flashrom alone \(fmt(a.p50)) ms, agent \(fmt(g.p50)) ms (+\(fmt(overhead, 2)) %), the agent's flashrom step \(fmt(f.p50)) ms")
        report.row("write + verify 8 MiB, emulated chip, median of \(runs) (ms)", agent: "\(fmt(g.p50)) (flashrom step \(fmt(f.p50)))",
                   baseline: "flashrom alone: \(fmt(a.p50))", target: "≤ 2 % over flashrom", met: overhead <= 2)
        report.row("agent overhead on write + verify", agent: "\(fmt(overhead, 2)) %", target: "≤ 2 %", met: overhead <= 2)
        try report.finish(summary: "agent \(fmt(g.p50)) ms vs flashrom \(fmt(a.p50)) ms (+\(fmt(overhead, 2)) %)")
    }
}
