import AgentClock
import BootFlow
import Matching
import Serial
import Synchronization
import Terminal

// Figures for the closing notes and for regressions: prints, never asserts.
// Run with: swift run -c release rte-bench

func seconds(_ work: () -> Void) -> Double {
    let start = monotonicNanoseconds()
    work()
    return Double(monotonicNanoseconds() - start) / 1e9
}

/// A kernel log with debug options on: long, varied, no prompt until the very end.
func kernelLog(megabytes: Int) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(megabytes << 20)
    var i = 0
    while out.count < megabytes << 20 {
        out += Array("[\(i / 1000).\(i % 1000)] pci 0000:00:02.\(i % 8): [1022:1439] type 00 class 0x060000 debug: probe \(i)\r\n".utf8)
        i += 1
    }
    return out + Array("\r\nDebian GNU/Linux 12 apu2 ttyS0\r\n\r\napu2 login: ".utf8)
}

let log = kernelLog(megabytes: 32)
let megabytes = Double(log.count) / 1_048_576

// Terminal model: screen + text stream + line log, fed 4 KiB at a time like serial reads.
var terminal = Terminal()
var textChunks: [TextChunk] = []
let terminalTime = seconds {
    var i = 0
    while i < log.count {
        textChunks.append(terminal.feed(log[i..<min(log.count, i + 4096)]))
        i += 4096
    }
}
print("terminal model: \(format2(megabytes / terminalTime)) MB/s (\(format2(megabytes)) MB kernel log)")

// Matcher alone, on the text stream: literals (KMP) and an expression (NFA).
for (label, patterns) in [("3 literals", [Pattern.literal("login:"), .literal("Kernel panic"), .literal("iPXE> ")]),
                          ("literals + regex", [Pattern.literal("login:"), .regex("(?i)kernel panic|end trace [0-9a-f]+")])] {
    var matcher = try! StreamMatcher(patterns)
    var found: Match?
    let t = seconds {
        for c in textChunks { if let m = matcher.scan(c) { found = m.match } }
    }
    print("matcher (\(label)): \(format2(megabytes / t)) MB/s, matched \(found?.text.debugDescription ?? "nothing") at \(found?.start ?? 0)")
}

// Prompt-to-key reaction: bytes land in the capture (as the serial reader thread puts them),
// the boot console matches "Ctrl-B" and writes the key; the time is taken in the writer.
final class Stamp: Sendable { let value = Mutex<UInt64>(0) }
let capture = SerialCapture(capacity: 1 << 20)
let wrote = Stamp()
var samples: [Double] = []
for _ in 0..<2000 {
    let start = capture.endOffset
    let waiter = Task {
        let session = ConsoleSession(capture: capture, clock: SystemClock(), from: start) { _ in
            wrote.value.withLock { $0 = monotonicNanoseconds() }
        }
        let m = try await session.expect([.literal("Ctrl-B")], timeout: .seconds(5))
        try session.send([0x02])
        return m
    }
    // Let the waiter park first, as it does during a real boot.
    try await Task.sleep(for: .microseconds(200))
    let before = monotonicNanoseconds()
    capture.append(Array("iPXE (http://ipxe.org) 00:00.0\r\nPress Ctrl-B for the iPXE command line...".utf8))
    _ = try await waiter.value
    samples.append(Double(wrote.value.withLock { $0 } - before) / 1000)
}
samples.sort()
let sorted = samples
@MainActor func pct(_ p: Double) -> Double { sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
print("prompt-to-key reaction (capture → key written, \(samples.count) samples): p50 \(format2(pct(0.5))) µs, p99 \(format2(pct(0.99))) µs, max \(format2(samples.last!)) µs")

nonisolated func format2(_ x: Double) -> String {
    let r = (x * 100).rounded() / 100
    return String(r)
}
