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

let reactionPrompt = "Press Ctrl-B for the iPXE command line..."

/// Benchmark 1: a DUT process on a real pty prints the iPXE prompt at random moments inside
/// kernel-log noise and times, from the prompt's last byte to the Ctrl-B's arrival, how fast
/// the client answers. The same DUT program serves the agent and the pexpect script.
struct Reaction: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Prompt → key reaction: rte-agent vs pexpect on a real pty.")
    @Option(help: "Samples per client.") var samples = 10_000
    @Option(help: "Python with pexpect installed.") var python = "python3"
    @Option(help: "Append Markdown rows to this file.") var table: String?

    @Flag(help: "Only the idle machine (no second round with a CPU hog on every core).") var idleOnly = false

    func run() async throws {
        var report = Report("reaction", table: table)
        // Twice: on an idle machine, then with a busy loop on every core (started and stopped
        // here), since a path that needs several threads scheduled per prompt shows under load.
        for busy in idleOnly ? [false] : [false, true] {
            let hogs = busy ? try (0..<Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))).map { _ in try Child(["sh", "-c", "while :; do :; done"]) } : []
            defer { hogs.forEach { $0.stop() } }
            let when = busy ? "busy (\(hogs.count) CPU hogs)" : "idle"
            let agent = try await measureAgent()
            report.line("\(when): rte-agent (termios + capture + terminal model + matcher): p50 \(fmt(agent.p50)) µs, p99 \(fmt(agent.p99)) µs, max \(fmt(agent.max)) µs, \(agent.count) samples")
            let bare = try await measureBareLoop()
            report.line("\(when): a bare blocking read/scan/write loop on its own thread (the pty round trip floor): p50 \(fmt(bare.p50)) µs, p99 \(fmt(bare.p99)) µs, max \(fmt(bare.max)) µs")
            let pex = try measurePexpect()
            report.line("\(when): pexpect 4.9 fdspawn expect() on the same pty: p50 \(fmt(pex.p50)) µs, p99 \(fmt(pex.p99)) µs, max \(fmt(pex.max)) µs, \(pex.count) samples")
            report.row("\(when): prompt → key p50 / p99 / max (µs), \(samples) samples",
                       agent: "\(fmt(agent.p50)) / \(fmt(agent.p99)) / \(fmt(agent.max))",
                       baseline: "bare loop \(fmt(bare.p50)) / \(fmt(bare.p99)) / \(fmt(bare.max)); pexpect \(fmt(pex.p50)) / \(fmt(pex.p99)) / \(fmt(pex.max))",
                       target: "p50 and p99 ≤ 2× the bare loop", met: agent.p50 <= 2 * bare.p50 && agent.p99 <= 2 * bare.p99)
            report.row("\(when): agent / bare loop, p50 and p99", agent: "\(fmt(agent.p50 / bare.p50))× / \(fmt(agent.p99 / bare.p99))×",
                       baseline: "pexpect / bare loop: \(fmt(pex.p50 / bare.p50))× / \(fmt(pex.p99 / bare.p99))×")
            if busy || idleOnly { try report.finish(summary: "last round (\(when)): agent p50/p99 \(fmt(agent.p50))/\(fmt(agent.p99)) µs, bare loop \(fmt(bare.p50))/\(fmt(bare.p99)) µs, pexpect \(fmt(pex.p50))/\(fmt(pex.p99)) µs") }
        }
    }

    /// The agent's own path: SerialPort (termios, reader thread) → capture → ConsoleSession.expect → write.
    func measureAgent() async throws -> Distribution {
        let dut = try Child([selfPath, "dut-prompter", "--samples", String(samples)], input: .pipe)
        defer { dut.stop() }
        guard let ptyLine = dut.line(startingWith: "pty ") else { throw BenchError("the DUT did not start") }
        let path = String(ptyLine.dropFirst(4))
        let capture = SerialCapture(capacity: 16 << 20)
        let port = try SerialPort(config: SerialConfig(device: path, logMaxFileBytes: 1 << 20, logMaxFiles: 1, reopenInitialMilliseconds: 5, reopenMaxMilliseconds: 50),
                                  capture: capture)
        port.start()
        await port.waitUntilOpen()
        let session = ConsoleSession(capture: capture, clock: SystemClock(), from: capture.endOffset) { bytes in
            try port.write(bytes)
        }
        try session.send("R")
        for _ in 0..<samples {
            // As the boot strategy does it: the key is written by the serial reader thread.
            _ = try await session.expect([Pattern.literal("Ctrl-B")], thenSend: [0x02], timeout: .seconds(10))
        }
        let result = try await onThread { dut.line(startingWith: "RESULT") }
        await port.stop()
        return try samplesFrom(result)
    }

    /// The floor of this machine's pty round trip: no terminal model, no capture, one thread
    /// blocked in read(2), a byte-by-byte scan, write(2).
    func measureBareLoop() async throws -> Distribution {
        let dut = try Child([selfPath, "dut-prompter", "--samples", String(samples)], input: .pipe)
        defer { dut.stop() }
        guard let ptyLine = dut.line(startingWith: "pty ") else { throw BenchError("the DUT did not start") }
        let path = String(ptyLine.dropFirst(4)), count = samples
        return try await onThread {
            let fd = open(path, O_RDWR | O_NOCTTY)
            guard fd >= 0 else { throw BenchError("cannot open \(path)") }
            defer { close(fd) }
            var t = termios()
            tcgetattr(fd, &t); cfmakeraw(&t); tcsetattr(fd, TCSANOW, &t)
            var key: [UInt8] = Array("R".utf8)
            _ = write(fd, &key, 1)
            key = [0x02]
            let needle = Array("Ctrl-B".utf8)
            var state = 0, answered = 0
            var buffer = [UInt8](repeating: 0, count: 8192)
            while answered < count {
                let n = read(fd, &buffer, buffer.count)
                guard n > 0 else { throw BenchError("read failed") }
                for i in 0..<n {
                    state = buffer[i] == needle[state] ? state + 1 : (buffer[i] == needle[0] ? 1 : 0)
                    if state == needle.count { _ = write(fd, &key, 1); state = 0; answered += 1 }
                }
            }
            return try samplesFrom(dut.line(startingWith: "RESULT"))
        }
    }

    func measurePexpect() throws -> Distribution {
        let dut = try Child([selfPath, "dut-prompter", "--samples", String(samples)], input: .pipe)
        defer { dut.stop() }
        guard let ptyLine = dut.line(startingWith: "pty ") else { throw BenchError("the DUT did not start") }
        let client = try Child([python, "Benchmarks/pexpect_reaction.py", String(ptyLine.dropFirst(4)), String(samples)])
        defer { client.stop() }
        let result = dut.line(startingWith: "RESULT")
        guard client.wait() == 0 else { throw BenchError("the pexpect client failed") }
        return try samplesFrom(result)
    }

    func samplesFrom(_ line: String?) throws -> Distribution {
        guard let line, let path = fields(line)["samples"] else { throw BenchError("the DUT gave no result") }
        let values = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").compactMap { Double($0) }
        try? FileManager.default.removeItem(atPath: path)
        guard values.count == samples else { throw BenchError("\(values.count) of \(samples) prompts were answered") }
        return Distribution(values)
    }
}

/// The DUT side of benchmark 1 (a child process): owns the pty master, writes noise and prompts,
/// times each answer. Prints `pty PATH`, waits for "R", then `RESULT samples=FILE` at the end.
struct DUTPrompter: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "dut-prompter", abstract: "Helper: the DUT for the reaction benchmark.", shouldDisplay: false)
    @Option var samples = 10_000
    @Option var seed: UInt64 = 7

    func run() throws {
        let pty = try PseudoTerminal.open()
        print("pty \(pty.slavePath)")
        fflush(nil)
        let master = pty.master
        var buffer = [UInt8](repeating: 0, count: 4096)
        func readSome() throws -> ArraySlice<UInt8> {
            guard try master.poll(events: Int16(POLLIN), timeoutMilliseconds: 30_000) != 0 else { throw BenchError("no answer in 30 s") }
            let n = try buffer.withUnsafeMutableBytes { try master.read(into: $0) }
            return buffer[..<n]
        }
        while !(try readSome().contains(UInt8(ascii: "R"))) {}
        var rng = SplitMix(state: seed)
        var kernel = KernelLog(seed: seed)
        let prompt = Array("\r\niPXE (http://ipxe.org) 00:12.0 C000 PCI2.10 PnP PMM+CFF7F000+CFE7F000 C000\r\n\(reactionPrompt)".utf8)
        var latencies: [Double] = []
        latencies.reserveCapacity(samples)
        for _ in 0..<samples {
            try master.writeAll(kernel.bytes(atLeast: 200 + rng.below(3000)))
            // The prompt comes at a random moment: sometimes in the same read as the noise, sometimes alone.
            let pause = rng.below(500)
            if pause > 0 { usleep(UInt32(pause)) }
            try master.writeAll(prompt)
            let sent = monotonicNanoseconds()
            while !(try readSome().contains(0x02)) {}
            latencies.append(Double(monotonicNanoseconds() - sent) / 1000)
        }
        let file = NSTemporaryDirectory() + "rte-bench-reaction-\(getpid()).txt"
        try latencies.map { String($0) }.joined(separator: "\n").write(toFile: file, atomically: true, encoding: .utf8)
        print("RESULT samples=\(file)")
        fflush(nil)
        // Stay until the parent is done with the pty.
        _ = FileHandle.standardInput.readDataToEndOfFile()
    }
}
