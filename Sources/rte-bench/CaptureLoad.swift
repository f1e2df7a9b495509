import ArgumentParser
import Configuration
import Foundation
import POSIXIO
import Serial
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The byte stream the pty writer sends: 64-byte records "<16 hex digits of the record number> "
/// + 45 letters + CR LF, so any byte can be checked against its offset.
enum RecordStream {
    static let size = 64

    static func record(_ k: UInt64) -> [UInt8] {
        var r = [UInt8](repeating: 0, count: size)
        r.withUnsafeMutableBufferPointer { write(k, to: $0.baseAddress!) }
        return r
    }

    static func write(_ k: UInt64, to r: UnsafeMutablePointer<UInt8>) {
        let hex: StaticString = "0123456789abcdef"
        for i in 0..<16 { r[i] = hex.utf8Start[Int((k >> UInt64(60 - 4 * i)) & 0xf)] }
        r[16] = 0x20
        let first = UInt8((k &+ 17) % 26)
        for i in 17..<62 { r[i] = UInt8(ascii: "a") + (first + UInt8(i - 17)) % 26 }
        r[62] = 0x0d; r[63] = 0x0a
    }

    /// The first offset in `bytes` (which start at `offset`) that is not what was sent, if any.
    static func firstMismatch(_ bytes: [UInt8], at offset: UInt64) -> UInt64? {
        var k = offset / UInt64(size)
        var rec = record(k)
        for (i, b) in bytes.enumerated() {
            let o = offset + UInt64(i)
            if o / UInt64(size) != k { k = o / UInt64(size); rec = record(k) }
            if rec[Int(o % UInt64(size))] != b { return o }
        }
        return nil
    }
}

/// Benchmark 3: a pty writer at full speed for 30 s; the agent's serial reader, capture ring and
/// file log take everything while 20 followers (5 of them slow) read the capture.
struct CaptureLoad: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "capture", abstract: "Serial capture under load: bytes lost, CPU.")
    @Option var seconds = 30
    @Option var followers = 20
    @Option(help: "How many of the followers read slowly (10 ms pause per chunk).") var slow = 5
    @Option(help: "Directory for the capture log (removed afterwards).") var directory = ".build/bench/capture"
    @Option(help: "Append Markdown rows to this file.") var table: String?

    final class Tally: Sendable {
        struct Counts { var bytes: UInt64 = 0; var lost: UInt64 = 0; var gaps = 0; var corrupt = 0 }
        let counts = Mutex(Counts())
    }

    func run() async throws {
        var report = Report("capture", table: table)
        try? FileManager.default.removeItem(atPath: directory)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let writer = try Child([selfPath, "pty-writer", "--seconds", String(seconds)], input: .pipe)
        defer { writer.stop() }
        guard let ptyLine = writer.line(startingWith: "pty ") else { throw BenchError("the writer did not start") }
        let log = try CaptureLog(directory: directory, maxFileBytes: 64 << 20, maxFiles: 100_000)
        let capture = SerialCapture(capacity: 16 << 20, log: log)
        let port = try SerialPort(config: SerialConfig(device: String(ptyLine.dropFirst(4)), logMaxFileBytes: 64 << 20, logMaxFiles: 100_000, reopenInitialMilliseconds: 5, reopenMaxMilliseconds: 50),
                                  capture: capture)
        port.start()
        await port.waitUntilOpen()
        let base = capture.endOffset
        let tallies = (0..<followers).map { _ in Tally() }
        var tasks: [Task<Void, Never>] = []
        for (k, tally) in tallies.enumerated() {
            let isSlow = k < slow
            tasks.append(Task.detached {
                for await item in capture.subscribe(from: base) {
                    switch item {
                    case .data(_, let bytes, _):
                        tally.counts.withLock { $0.bytes += UInt64(bytes.count) }
                        if isSlow { try? await Task.sleep(for: .milliseconds(10)) }
                    case .lost(let from, let resume):
                        tally.counts.withLock { $0.lost += resume - from; $0.gaps += 1 }
                    case .event: break
                    }
                }
            })
        }
        let cpu0 = cpuSeconds()!, t0 = now()
        try port.write(Array("R".utf8))
        guard let result = try await onThread({ writer.line(startingWith: "RESULT") }) else { throw BenchError("the writer gave no result") }
        let written = UInt64(fields(result)["bytes"]!)!
        // Everything written is in the pty; wait (at most 30 s) for the reader to take the rest.
        await capture.waitUntilEnd(reaches: base + written, within: .seconds(30))
        let cpu1 = cpuSeconds()!, t1 = now()
        let captured = capture.endOffset - base
        tasks.forEach { $0.cancel() }
        await port.stop()
        let rate = Double(written) / 1e6 / Double(fields(result)["seconds"]!)!
        report.line("writer: \(written) bytes in \(fields(result)["seconds"]!) s = \(fmt(rate)) MB/s through the pty")
        report.line("agent CPU: \(fmt((cpu1 - cpu0) / (t1 - t0) * 100)) % of one core over \(fmt(t1 - t0)) s (serial reader, capture, file log, \(followers) followers)")

        // Memory ring: the newest bytes, checked against what was sent.
        var ringBad: UInt64 = 0
        if case .data(let from, let bytes, _) = capture.read(from: max(base, capture.startOffset), limit: 16 << 20) {
            if let m = RecordStream.firstMismatch(bytes, at: from - base) { ringBad = UInt64(bytes.count) - (m - (from - base)) }
        }
        // File log: every byte from the start, in 4 MiB pages.
        var fileBytes: UInt64 = 0, fileBad: UInt64 = 0
        var offset = base
        while offset < base + written {
            guard let page = log.read(from: offset, limit: 4 << 20), !page.isEmpty else { break }
            if fileBad == 0, let m = RecordStream.firstMismatch(page, at: offset - base) { fileBad = m + 1 }
            fileBytes += UInt64(page.count)
            offset += UInt64(page.count)
        }
        let lostCapture = written - min(written, captured)
        let lostFile = written - fileBytes
        report.line("capture: \(captured) bytes, lost \(lostCapture), ring contents \(ringBad == 0 ? "match" : "DIFFER") what was sent")
        report.line("file log: \(fileBytes) bytes in \(log.fileCount) files, lost \(lostFile), \(fileBad == 0 ? "every byte matches" : "first difference at \(fileBad - 1)")")
        for (k, t) in tallies.enumerated() {
            let c = t.counts.withLock { $0 }
            report.line("follower \(k + 1)\(k < slow ? " (slow)" : ""): \(c.bytes) bytes, \(c.gaps) gaps (\(c.lost) bytes skipped, still in the file log)")
        }
        let fastGaps = tallies.dropFirst(slow).reduce(0) { $0 + $1.counts.withLock { $0.gaps } }
        let ok = lostCapture == 0 && lostFile == 0 && ringBad == 0 && fileBad == 0
        report.row("bytes lost at \(fmt(rate)) MB/s for \(seconds) s, \(followers) followers (\(slow) slow): capture / file log",
                   agent: "\(lostCapture) / \(lostFile) of \(written)", target: "0 / 0", met: ok)
        report.row("agent CPU during that load", agent: "\(fmt((cpu1 - cpu0) / (t1 - t0) * 100)) % of a core",
                   baseline: "fast followers' gaps: \(fastGaps)")
        try report.finish(summary: "\(written) bytes at \(fmt(rate)) MB/s, lost \(lostCapture) (capture) / \(lostFile) (file log), CPU \(fmt((cpu1 - cpu0) / (t1 - t0) * 100)) %")
    }
}

/// The writer side of benchmark 3 (a child process): owns the pty master and writes the record
/// stream as fast as the pty takes it.
struct PTYWriter: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "pty-writer", abstract: "Helper: the pty writer for the capture benchmark.", shouldDisplay: false)
    @Option var seconds = 30

    func run() throws {
        let pty = try PseudoTerminal.open()
        print("pty \(pty.slavePath)")
        fflush(nil)
        var one = [UInt8](repeating: 0, count: 16)
        repeat {
            _ = try pty.master.poll(events: Int16(POLLIN), timeoutMilliseconds: 30_000)
        } while try one.withUnsafeMutableBytes({ try pty.master.read(into: $0) }) == 0
        let recordsPerBlock = 1024
        var block = [UInt8](repeating: 0, count: recordsPerBlock * RecordStream.size)
        var k: UInt64 = 0
        var written: UInt64 = 0
        let start = now()
        while now() - start < Double(seconds) {
            block.withUnsafeMutableBufferPointer { b in
                for r in 0..<recordsPerBlock { RecordStream.write(k + UInt64(r), to: b.baseAddress! + r * RecordStream.size) }
            }
            k += UInt64(recordsPerBlock)
            try pty.master.writeAll(block)
            written += UInt64(block.count)
        }
        print("RESULT bytes=\(written) seconds=\(fmt(now() - start, 3))")
        fflush(nil)
        _ = FileHandle.standardInput.readDataToEndOfFile()
    }
}
