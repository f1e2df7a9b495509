import ArgumentParser
import Foundation
import Matching
import Terminal

/// Benchmark 2: the terminal model and the matcher over a 64 MB serial log whose awaited prompt
/// is only at the end, fed in 4 KiB reads like the serial reader's; pexpect expect() on the same bytes.
struct Throughput: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Matcher + screen model throughput vs pexpect expect().")
    @Option(help: "Size of the log in MiB.") var megabytes = 64
    @Option(help: "Where the real iPXE captures are.") var fixtures = "Tests/BootFlowTests/Fixtures"
    @Option(help: "Where to write the log for pexpect.") var logFile = ".build/bench/serial-log.bin"
    @Option var python = "python3"
    @Option(help: "Seconds after which pexpect expect() runs on longer prefixes stop.") var pexpectBudget = 30.0
    @Option(help: "Append Markdown rows to this file.") var table: String?

    static let prompt = "apu2 login: "

    func run() async throws {
        var report = Report("throughput", table: table)
        let log = try benchmarkLog(megabytes: megabytes, fixtures: fixtures, prompt: Throughput.prompt)
        let mb = Double(log.count) / 1e6
        report.line("log: \(fmt(mb)) MB (kernel log with debug messages, firmware setup screens, real iPXE menu and shell captures), prompt at offset \(log.count - Throughput.prompt.utf8.count)")

        // Best of three: the first pass also warms the page cache and allocator.
        var combined = 0.0, screenOnly = 0.0, matcherOnly = 0.0, withRegex = 0.0
        var found: Match?
        for _ in 0..<3 {
            var texts: [TextChunk] = []
            texts.reserveCapacity(log.count / 4096 + 1)
            let t0 = now()
            var terminal = Terminal()
            var i = 0
            while i < log.count {
                texts.append(terminal.feed(log[i..<min(log.count, i + 4096)]))
                i += 4096
            }
            let t1 = now()
            var matcher = try StreamMatcher([.literal(Throughput.prompt)])
            for t in texts { if let m = matcher.scan(t) { found = m.match } }
            let t2 = now()
            var regex = try StreamMatcher([.regex("(?i)kernel panic|end trace [0-9a-f]+"), .regex("^apu2 login: ")])
            for t in texts { _ = regex.scan(t) }
            let t3 = now()
            // Both together as ConsoleSession does it, read by read.
            var terminal2 = Terminal()
            var matcher2 = try StreamMatcher([.literal(Throughput.prompt)])
            i = 0
            var hit = false
            while i < log.count {
                let text = terminal2.feed(log[i..<min(log.count, i + 4096)])
                if matcher2.scan(text) != nil { hit = true }
                i += 4096
            }
            let t4 = now()
            guard hit, found?.end == UInt64(log.count) else { throw BenchError("the prompt was not found at the end") }
            screenOnly = max(screenOnly, mb / (t1 - t0))
            matcherOnly = max(matcherOnly, mb / (t2 - t1))
            withRegex = max(withRegex, mb / (t3 - t2))
            combined = max(combined, mb / (t4 - t3))
        }
        report.line("rte-agent screen model (VT100 screen + text stream + line log): \(fmt(screenOnly)) MB/s")
        report.line("rte-agent matcher (lazy DFA), literal prompt: \(fmt(matcherOnly)) MB/s; two regexes incl. (?i) and ^: \(fmt(withRegex)) MB/s")
        report.line("rte-agent screen model + matcher, read by read: \(fmt(combined)) MB/s, matched at \(found!.start)")

        try FileManager.default.createDirectory(atPath: (logFile as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try Data(log).write(to: URL(fileURLWithPath: logFile))
        // pexpect: expect_exact() on the whole log (it searches only new bytes), expect() on
        // growing prefixes (it searches the whole buffer on every read: quadratic).
        let exact = try runPexpect(["--mode", "expect_exact"])
        let pexExact = exact.last!
        report.line("pexpect expect_exact() on \(fmt(pexExact.mb)) MB: \(fmt(pexExact.seconds, 2)) s = \(fmt(pexExact.rate, 2)) MB/s")
        let prefixes = try runPexpect(["--mode", "expect", "--budget", String(pexpectBudget)])
        for r in prefixes { report.line("pexpect expect() on the first \(fmt(r.mb, 2)) MB: \(fmt(r.seconds, 2)) s = \(fmt(r.rate, 2)) MB/s") }
        let largest = prefixes.last!
        let onWhole = largest.mb >= mb * 0.99
        report.row("screen model + matcher (MB/s), \(fmt(mb, 0)) MB log", agent: fmt(combined),
                   baseline: "pexpect expect(): \(fmt(largest.rate, 2))\(onWhole ? "" : " (on the first \(fmt(largest.mb, 1)) MB, falling)")",
                   target: "≥ 200 MB/s, ≥ 50× pexpect", met: combined >= 200 && combined / largest.rate >= 50)
        report.row("screen model alone / matcher alone (MB/s)", agent: "\(fmt(screenOnly)) / \(fmt(matcherOnly))",
                   baseline: "pexpect expect_exact(): \(fmt(pexExact.rate, 2))")
        try report.finish(summary: "agent \(fmt(combined)) MB/s vs pexpect expect() \(fmt(largest.rate, 2)) MB/s (\(fmt(combined / largest.rate, 0))×), expect_exact() \(fmt(pexExact.rate, 2)) MB/s")
    }

    struct PexpectRun { var mb: Double; var seconds: Double; var rate: Double }

    func runPexpect(_ args: [String]) throws -> [PexpectRun] {
        let child = try Child([python, "Benchmarks/pexpect_throughput.py", logFile, Throughput.prompt] + args)
        var runs: [PexpectRun] = []
        while let line = child.line(startingWith: "RESULT") {
            let f = fields(line)
            runs.append(PexpectRun(mb: Double(f["mb"]!)!, seconds: Double(f["seconds"]!)!, rate: Double(f["mbps"]!)!))
        }
        guard child.wait() == 0, !runs.isEmpty else { throw BenchError("pexpect_throughput.py failed") }
        return runs
    }
}
