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
/// The agent's figures and what explains them: prompts that came before the wait was armed
/// again, and how its serial reader was scheduled.
struct AgentReaction {
    var samples: [Double]
    var lateAnswers: Int
    var scheduling: String
}

/// The channel by which a client tells the DUT it waits for the next prompt: a FIFO the DUT
/// reads one byte from before each prompt. Held open for writing here, so the DUT's open
/// never blocks and a client's own writer can come and go.
final class ArmedFIFO: @unchecked Sendable {
    let path: String
    let fd: Int32
    init() throws {
        path = NSTemporaryDirectory() + "rte-bench-armed-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        guard mkfifo(path, 0o600) == 0 else { throw BenchError("mkfifo \(path) failed") }
        fd = open(path, O_RDWR)
        guard fd >= 0 else { throw BenchError("cannot open \(path)") }
    }
    func signal() { var b: UInt8 = 0x61; _ = write(fd, &b, 1) }
    func close() { Glibc.close(fd); unlink(path) }
}

/// Benchmark 1: a DUT process on a real pty prints the iPXE prompt at random moments inside
/// kernel-log noise and times, from the prompt's last byte to the Ctrl-B's arrival, how fast
/// the client answers. The same DUT program serves the agent and the pexpect script.
struct Reaction: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Prompt → key reaction: rte-agent vs pexpect on a real pty.")
    @Option(help: "Samples per client.") var samples = 10_000
    @Option(help: "Python with pexpect installed.") var python = "python3"
    @Option(help: "Append Markdown rows to this file.") var table: String?

    @Flag(help: "Only the idle machine (no second round with a CPU hog on every core).") var idleOnly = false
    @Option(help: "SCHED_FIFO priority of the agent's serial reader (serial.realtime_priority) and of the bare loop's thread; 0: normal scheduling for both.")
    var readerPriority = 10
    @Option(help: "Blocks each client's samples are split into, measured agent, bare loop, pexpect in turn.")
    var blocks = 5

    func run() async throws {
        var report = Report("reaction", table: table)
        var summary = ""
        // Twice: on an idle machine, then with a busy loop on every core (started and stopped
        // here), since a path that needs several threads scheduled per prompt shows under load.
        // Each round twice more: prompts that come only once the client waits for them (as
        // firmware's do: a boot strategy arms its answer long before), the target; and prompts
        // back to back, whose figures include how fast a client is waiting again.
        for busy in idleOnly ? [false] : [false, true] {
            let hogs = busy ? try (0..<Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))).map { _ in try Child(["sh", "-c", "while :; do :; done"]) } : []
            defer { hogs.forEach { $0.stop() } }
            for armed in [true, false] {
                let when = (busy ? "busy (\(hogs.count) CPU hogs)" : "idle") + (armed ? "" : ", back to back")
                // The clients take turns, a block each: this machine (a VM) goes between states
                // that last seconds — the pty round trip is ~7 µs in one, ~18 µs in the other —
                // and two clients measured one after the other could each get a different one.
                var agentSamples: [Double] = [], bareSamples: [Double] = [], pexSamples: [Double] = []
                var lateAnswers = 0, scheduling = ""
                let blockCount = max(1, min(blocks, samples))
                for block in 0..<blockCount {
                    let count = samples / blockCount + (block < samples % blockCount ? 1 : 0), seed = UInt64(7 + block)
                    // A FIFO each: a client's signal after its last answer must not prompt the next client's DUT.
                    func fifo() throws -> ArmedFIFO? { armed ? try ArmedFIFO() : nil }
                    let agentFIFO = try fifo(), bareFIFO = try fifo(), pexFIFO = try fifo()
                    defer { [agentFIFO, bareFIFO, pexFIFO].forEach { $0?.close() } }
                    let measured = try await measureAgent(agentFIFO, count: count, seed: seed)
                    agentSamples += measured.samples
                    lateAnswers += measured.lateAnswers
                    scheduling = measured.scheduling
                    bareSamples += try await measureBareLoop(bareFIFO, count: count, seed: seed)
                    pexSamples += try measurePexpect(pexFIFO, count: count, seed: seed)
                }
                let agent = Distribution(agentSamples), bare = Distribution(bareSamples), pex = Distribution(pexSamples)
                report.line("\(when): rte-agent (termios + capture + terminal model + matcher): p50 \(fmt(agent.p50)) µs, p99 \(fmt(agent.p99)) µs, max \(fmt(agent.max)) µs, \(agent.count) samples in \(blockCount) blocks, serial reader \(scheduling); \(lateAnswers) prompts came before the next wait was armed")
                report.line("\(when): a bare blocking read/scan/write loop on its own thread (the pty round trip floor\(readerPriority > 0 ? ", SCHED_FIFO \(readerPriority) like the agent's reader" : "")): p50 \(fmt(bare.p50)) µs, p99 \(fmt(bare.p99)) µs, max \(fmt(bare.max)) µs")
                report.line("\(when): pexpect 4.9 fdspawn expect() on the same pty: p50 \(fmt(pex.p50)) µs, p99 \(fmt(pex.p99)) µs, max \(fmt(pex.max)) µs, \(pex.count) samples")
                if armed {
                    report.row("\(when): prompt → key p50 / p99 / max (µs), \(samples) samples",
                               agent: "\(fmt(agent.p50)) / \(fmt(agent.p99)) / \(fmt(agent.max))",
                               baseline: "bare loop \(fmt(bare.p50)) / \(fmt(bare.p99)) / \(fmt(bare.max)); pexpect \(fmt(pex.p50)) / \(fmt(pex.p99)) / \(fmt(pex.max))",
                               target: "p50 and p99 ≤ 2× the bare loop", met: agent.p50 <= 2 * bare.p50 && agent.p99 <= 2 * bare.p99)
                    report.row("\(when): agent / bare loop, p50 and p99", agent: "\(fmt(agent.p50 / bare.p50))× / \(fmt(agent.p99 / bare.p99))×",
                               baseline: "pexpect / bare loop: \(fmt(pex.p50 / bare.p50))× / \(fmt(pex.p99 / bare.p99))×")
                } else {
                    report.row("\(when): prompt → key p50 / p99 / max (µs), re-arming included (\(lateAnswers) of \(samples) prompts came first)",
                               agent: "\(fmt(agent.p50)) / \(fmt(agent.p99)) / \(fmt(agent.max))",
                               baseline: "bare loop \(fmt(bare.p50)) / \(fmt(bare.p99)) / \(fmt(bare.max)); pexpect \(fmt(pex.p50)) / \(fmt(pex.p99)) / \(fmt(pex.max))")
                }
                if armed && (busy || idleOnly) { summary = "\(when): agent p50/p99 \(fmt(agent.p50))/\(fmt(agent.p99)) µs, bare loop \(fmt(bare.p50))/\(fmt(bare.p99)) µs, pexpect \(fmt(pex.p50))/\(fmt(pex.p99)) µs" }
            }
        }
        try report.finish(summary: summary)
    }

    /// The agent's own path: SerialPort (termios, reader thread) → capture → ConsoleSession.expect → write.
    func measureAgent(_ fifo: ArmedFIFO? = nil, count: Int? = nil, seed: UInt64 = 7) async throws -> AgentReaction {
        let samples = count ?? self.samples
        let (dut, path) = try startDUT(fifo, count: samples, seed: seed)
        defer { dut.stop() }
        let capture = SerialCapture(capacity: 16 << 20)
        var serial = SerialConfig(device: path, logMaxFileBytes: 1 << 20, logMaxFiles: 1, reopenInitialMilliseconds: 5, reopenMaxMilliseconds: 50)
        serial.realtimePriority = readerPriority > 0 ? readerPriority : nil
        let port = try SerialPort(config: serial, capture: capture)
        port.start()
        await port.waitUntilOpen()
        let session = ConsoleSession(capture: capture, clock: SystemClock(), from: capture.endOffset) { bytes in
            try port.write(bytes)
        }
        if let fifo { session.onArmed = { fifo.signal() } }
        try session.send("R")
        for _ in 0..<samples {
            // As the boot strategy does it: the key is written by the serial reader thread.
            _ = try await session.expect([Pattern.literal("Ctrl-B")], thenSend: [0x02], timeout: .seconds(10))
        }
        let result = try await onThread { dut.line(startingWith: "RESULT") }
        let scheduling = port.status.readerScheduling
        await port.stop()
        return AgentReaction(samples: try samplesFrom(result, count: samples), lateAnswers: session.answeredLate, scheduling: scheduling)
    }

    /// The floor of this machine's pty round trip: no terminal model, no capture, one thread
    /// blocked in read(2), a byte-by-byte scan, write(2).
    func measureBareLoop(_ fifo: ArmedFIFO? = nil, count: Int, seed: UInt64) async throws -> [Double] {
        let (dut, path) = try startDUT(fifo, count: count, seed: seed)
        defer { dut.stop() }
        let priority = readerPriority
        return try await onThread {
            // Scheduled as the agent's reader is: the same floor under load.
            if priority > 0 { try setCurrentThreadRealtime(priority: Int32(priority)) }
            let fd = open(path, O_RDWR | O_NOCTTY)
            guard fd >= 0 else { throw BenchError("cannot open \(path)") }
            defer { close(fd) }
            var t = termios()
            tcgetattr(fd, &t); cfmakeraw(&t); tcsetattr(fd, TCSANOW, &t)
            var key: [UInt8] = Array("R".utf8)
            _ = write(fd, &key, 1)
            fifo?.signal()
            key = [0x02]
            let needle = Array("Ctrl-B".utf8)
            var state = 0, answered = 0
            var buffer = [UInt8](repeating: 0, count: 8192)
            while answered < count {
                let n = read(fd, &buffer, buffer.count)
                guard n > 0 else { throw BenchError("read failed") }
                for i in 0..<n {
                    state = buffer[i] == needle[state] ? state + 1 : (buffer[i] == needle[0] ? 1 : 0)
                    if state == needle.count { _ = write(fd, &key, 1); state = 0; answered += 1; fifo?.signal() }
                }
            }
            return try samplesFrom(dut.line(startingWith: "RESULT"), count: count)
        }
    }

    func measurePexpect(_ fifo: ArmedFIFO? = nil, count: Int, seed: UInt64) throws -> [Double] {
        let (dut, path) = try startDUT(fifo, count: count, seed: seed)
        defer { dut.stop() }
        let client = try Child([python, "Benchmarks/pexpect_reaction.py", path, String(count)] + (fifo.map { [$0.path] } ?? []))
        defer { client.stop() }
        let result = dut.line(startingWith: "RESULT")
        guard client.wait() == 0 else { throw BenchError("the pexpect client failed") }
        return try samplesFrom(result, count: count)
    }

    /// One measurement's DUT (`count` prompts, noise from `seed`) and the pty it prompts on.
    func startDUT(_ fifo: ArmedFIFO?, count: Int, seed: UInt64) throws -> (dut: Child, pty: String) {
        let dut = try Child([selfPath, "dut-prompter", "--samples", String(count), "--seed", String(seed)] + (fifo.map { ["--armed-fifo", $0.path] } ?? []), input: .pipe)
        guard let line = dut.line(startingWith: "pty ") else { dut.stop(); throw BenchError("the DUT did not start") }
        return (dut, String(line.dropFirst(4).prefix { $0 != " " }))
    }

    func samplesFrom(_ line: String?, count: Int) throws -> [Double] {
        guard let line, let path = fields(line)["samples"] else { throw BenchError("the DUT gave no result") }
        let values = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").compactMap { Double($0) }
        try? FileManager.default.removeItem(atPath: path)
        guard values.count == count else { throw BenchError("\(values.count) of \(count) prompts were answered") }
        return values
    }
}

/// The DUT side of benchmark 1 (a child process): owns the pty master, writes noise and prompts,
/// times each answer. Prints `pty PATH`, waits for "R", then `RESULT samples=FILE` at the end.
struct DUTPrompter: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "dut-prompter", abstract: "Helper: the DUT for the reaction benchmark.", shouldDisplay: false)
    @Option var samples = 10_000
    @Option var seed: UInt64 = 7
    @Option(help: "A FIFO the client writes a byte to each time it waits for the prompt; each prompt waits for one.") var armedFifo: String?

    func run() throws {
        // The DUT is another machine: the load on this one must not delay its timing. Above the
        // client's reader, so the timestamps are taken the moment the bytes move.
        let realtime = (try? setCurrentThreadRealtime(priority: 20)) != nil
        let armed = try armedFifo.map { path in
            let fd = open(path, O_RDONLY)
            guard fd >= 0 else { throw BenchError("cannot open \(path)") }
            return fd
        }
        let pty = try PseudoTerminal.open()
        print("pty \(pty.slavePath)\(realtime ? "" : " (DUT timing at normal priority: SCHED_FIFO refused)")")
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
            if let armed {
                var b: UInt8 = 0
                var p = pollfd(fd: armed, events: Int16(POLLIN), revents: 0)
                guard poll(&p, 1, 30_000) == 1, read(armed, &b, 1) == 1 else { throw BenchError("the client never armed") }
            }
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
