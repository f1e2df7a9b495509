import AgentClient
import AgentClock
import ArgumentParser
import BootFlow
import Configuration
import Foundation
import Matching
import POSIXIO
import Serial
#if canImport(Glibc)
import Glibc
#endif

/// Instruction counts from valgrind's callgrind: unlike wall-clock figures on a shared machine,
/// they repeat run after run whatever else the machine does, so a regression shows in one run.
/// Each figure is the difference of two runs doing N and 3N operations, divided by 2N: start-up
/// and tear-down cancel out.
struct Instructions: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Instructions per prompt answered, per MB captured, per GET /api/v1/status (callgrind).")
    @Option(help: "The rte-agent binary (for GET /api/v1/status).") var agent = ".build/release/rte-agent"
    @Option(help: "Append Markdown rows to this file.") var table: String?

    func run() async throws {
        guard access("/usr/bin/valgrind", X_OK) == 0 else { throw BenchError("valgrind is not installed (apt-get install valgrind)") }
        var report = Report("instructions", table: table)
        // valgrind 3.19 cannot read the DWARF this toolchain writes: run copies without it
        // (symbols stay, so callgrind_annotate still names functions). Release builds: the debug
        // build's dynamic runtime crashes valgrind 3.19.
        let bench = try withoutDebugInfo(selfPath, as: "rte-bench"), daemon = try withoutDebugInfo(agent, as: "rte-agent")
        let prompt = try perOperation(50) { n in [bench, "instruction-op", "prompt", "--count", "\(n)"] }
        report.line("one prompt answered (termios read → capture → terminal model → matcher → key write, kernel-log noise between prompts): \(prompt.text)")
        let capture = try perOperation(8) { n in [bench, "instruction-op", "capture", "--count", "\(n)"] }
        report.line("one MB of serial through the capture (4 KiB chunks into the memory ring, no followers): \(capture.text)")
        let status = try statusPerRequest(200, agent: daemon)
        report.line("one GET /api/v1/status through the daemon (libmicrohttpd, auth, JSON), simulated apu2 idle: \(status.text)")
        report.row("instructions per prompt / per MB captured / per GET /status (callgrind Ir)",
                   agent: "\(prompt.value) / \(capture.value) / \(status.value)",
                   baseline: "repeat to ±\(max(prompt.spread, capture.spread, status.spread)) % between two measurements")
        try report.finish(summary: "Ir per prompt \(prompt.value), per MB \(capture.value), per GET /status \(status.value)")
    }

    struct Figure {
        var value: Int
        var spread: Int
        var text: String { "\(value) instructions (two measurements within \(spread) %)" }
    }

    /// Measured twice, so the README can say how repeatable the figure is.
    func perOperation(_ n: Int, _ command: (Int) -> [String]) throws -> Figure {
        var values: [Int] = []
        for _ in 0..<2 {
            let small = try callgrind(command(n)), large = try callgrind(command(3 * n))
            values.append(Int((large - small) / Double(2 * n)))
        }
        return figure(values)
    }

    func figure(_ values: [Int]) -> Figure {
        let spread = values.max()! == 0 ? 0 : Int((Double(values.max()! - values.min()!) / Double(values.max()!) * 100).rounded(.up))
        return Figure(value: values.reduce(0, +) / values.count, spread: spread)
    }

    /// Total instructions (Ir) of one process run under callgrind (its children not traced).
    func callgrind(_ command: [String], whileRunning: ((Child) throws -> Void)? = nil) throws -> Double {
        let out = NSTemporaryDirectory() + "rte-callgrind-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).out"
        defer { try? FileManager.default.removeItem(atPath: out) }
        // The daemon says where it listens on standard error: read both there.
        let child = try Child(["valgrind", "--tool=callgrind", "--callgrind-out-file=\(out)", "--trace-children=no"] + command,
                              error: whileRunning == nil ? .null : .standardOutput)
        if let whileRunning { try whileRunning(child) }
        // Drained, so a chatty child never blocks on a full pipe.
        while child.readLine() != nil {}
        guard child.wait() == 0 else { throw BenchError("\(command.joined(separator: " ")) failed under callgrind") }
        let text = try String(contentsOfFile: out, encoding: .utf8)
        for line in text.split(separator: "\n") where line.hasPrefix("summary:") || line.hasPrefix("totals:") {
            if let v = Double(line.split(separator: " ").last ?? "") { return v }
        }
        throw BenchError("no totals in \(out)")
    }

    /// The daemon under callgrind, N or 3N sequential requests from this (untraced) process.
    func withoutDebugInfo(_ binary: String, as name: String) throws -> String {
        let copy = ".build/bench/\(name).nodebug"
        try? FileManager.default.createDirectory(atPath: ".build/bench", withIntermediateDirectories: true)
        guard try Child(["strip", "--strip-debug", "-o", copy, binary]).wait() == 0 else { throw BenchError("strip failed on \(binary)") }
        return copy
    }

    func statusPerRequest(_ n: Int, agent: String) throws -> Figure {
        var values: [Int] = []
        let state = NSTemporaryDirectory() + "rte-callgrind-state-\(getpid())"
        let config = state + ".yaml"
        try simulatedConfig().write(toFile: config, atomically: true, encoding: .utf8)
        for _ in 0..<2 {
            var totals: [Double] = []
            for count in [n, 3 * n] {
                try? FileManager.default.removeItem(atPath: state)
                totals.append(try callgrind([agent, "serve", "--config", config, "--listen", "127.0.0.1:0", "--state-dir", state]) { child in
                    var port = 0
                    while let line = child.readLine() {
                        if let r = line.range(of: "API on http://127.0.0.1:") { port = Int(line[r.upperBound...].prefix { $0.isNumber }) ?? 0; break }
                    }
                    guard port > 0 else { throw BenchError("the daemon did not start under callgrind") }
                    let client = try AgentClient(url: "http://127.0.0.1:\(port)", token: nil, leaseToken: nil)
                    for _ in 0..<count {
                        guard try client.call("GET", "/api/v1/status").status == 200 else { throw BenchError("GET /api/v1/status failed under callgrind") }
                    }
                    child.process.signal(SIGTERM)
                })
            }
            values.append(Int((totals[1] - totals[0]) / Double(2 * n)))
        }
        return figure(values)
    }
}

/// Helper run under callgrind: does one kind of operation `count` times.
struct InstructionOperation: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "instruction-op", abstract: "Helper for `instructions`.", shouldDisplay: false)
    @Argument(help: "prompt | capture") var operation: String
    @Option(help: "Prompts answered, or MB captured.") var count = 50

    func run() async throws {
        switch operation {
        case "capture":
            // The serial reader's path: 4 KiB chunks into the ring (no file log: its writes are the kernel's).
            let capture = SerialCapture(capacity: 16 << 20)
            var chunk = [UInt8](repeating: 0, count: 4096)
            for i in 0..<chunk.count { chunk[i] = UInt8(truncatingIfNeeded: i &* 31 &+ 7) }
            for _ in 0..<(count * 256) { capture.append(chunk) }
        case "prompt":
            // The same path and DUT as the reaction benchmark (the DUT child is not traced).
            let reaction = try Reaction.parse(["--samples", String(count)])
            _ = try await reaction.measureAgent()
        default:
            throw BenchError("unknown operation \(operation)")
        }
    }
}
