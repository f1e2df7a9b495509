import Glibc
import POSIXIO
import Synchronization

/// What one flashrom run does.
public enum FlashOperation: String, Sendable, Codable, CaseIterable {
    case probe, read, write, erase
}

/// Which part of the chip a write touches (flashrom's layout options).
public enum FlashLayout: Sendable, Equatable {
    /// The Intel firmware descriptor in the chip (`--ifd`).
    case ifd
    /// The FMAP in the image (`--fmap`).
    case fmap
    /// A layout file (`-l FILE`).
    case file(String)
}

/// How far a flashrom run has got, read from what it prints.
public struct FlashromProgress: Sendable, Equatable {
    public var phase: String
    public var percent: Int
}

/// A flashrom run that did not end in success, with flashrom's own words.
public struct FlashromFailure: Error, Sendable, CustomStringConvertible {
    public var reason: String
    public var lastLines: [String]
    public var description: String { reason }
}

/// Drives the `flashrom` command-line tool, as labs do by hand (osfv_cli too). The CLI rather than
/// libflashrom: a child process can be killed at a deadline whatever state a hung programmer
/// leaves it in, and the RTE's images (Yocto, Armbian) ship the tool; its output is parsed for
/// the chip found, the phases and the verdict. SPI itself is never re-implemented here.
public struct Flashrom: Sendable {
    public var binary: String
    public var programmer: String
    public var chip: String?

    public init(binary: String, programmer: String, chip: String?) {
        self.binary = binary; self.programmer = programmer; self.chip = chip
    }

    /// The command line for `operation`; `file` is the image to write or where a read goes.
    public func arguments(_ operation: FlashOperation, file: String?, verify: Bool = true,
                          layout: FlashLayout? = nil, regions: [String] = []) -> [String] {
        var a = [binary, "-p", programmer]
        if let chip { a += ["-c", chip] }
        switch operation {
        case .probe: break
        case .read: a += ["-r", file ?? ""]
        case .write:
            a += ["-w", file ?? ""]
            if !verify { a.append("-n") }
        case .erase: a.append("-E")
        }
        if operation == .write || operation == .read {
            switch layout {
            case .ifd: a.append("--ifd")
            case .fmap: a.append("--fmap")
            case .file(let path): a += ["-l", path]
            case nil: break
            }
            for r in regions { a += ["-i", r] }
        }
        return a
    }

    /// Runs flashrom to its end (or the deadline, when it is killed). Called off the cooperative
    /// pool: it blocks on the child's output.
    public func run(_ operation: FlashOperation, file: String?, verify: Bool = true, layout: FlashLayout? = nil,
                    regions: [String] = [], timeoutSeconds: Int,
                    progress: @Sendable (FlashromProgress) -> Void = { _ in }) throws(FlashromFailure) -> FlashromReport {
        let deadline = monotonicMilliseconds() + Int64(timeoutSeconds) * 1000
        var parser = FlashromOutput(operation: operation, verify: verify)
        try execute(arguments(operation, file: file, verify: verify, layout: layout, regions: regions), parser: &parser,
                    deadline: deadline, timeoutSeconds: timeoutSeconds, progress: progress)
        var verified = parser.verified
        if operation == .write && verify && !verified {
            // flashrom 1.4 and later (Debian trixie, sid) print neither "VERIFIED" nor "identical"
            // when the chip already held the image: they skip the write and its verification. The
            // image is then checked against the chip by flashrom's own verify operation (-v).
            var check = FlashromOutput(operation: .write, verify: true)
            var argv = arguments(.write, file: file, verify: true, layout: layout, regions: regions)
            if let w = argv.firstIndex(of: "-w") { argv[w] = "-v" }
            progress(FlashromProgress(phase: "verifying", percent: 75))
            try execute(argv, parser: &check, deadline: deadline, timeoutSeconds: timeoutSeconds, progress: { _ in })
            guard check.verified else {
                throw FlashromFailure(reason: "flashrom exited 0 but did not report the image VERIFIED, and `flashrom -v` did not either",
                                      lastLines: parser.lastLines + check.lastLines)
            }
            verified = true
            parser.append(check.lastLines)
        }
        return FlashromReport(chip: parser.chip, chipKilobytes: parser.chipKilobytes, verified: verified, lastLines: parser.lastLines)
    }

    /// One flashrom child, read to its end; throws unless it exits 0 within the deadline.
    private func execute(_ argv: [String], parser: inout FlashromOutput, deadline: Int64, timeoutSeconds: Int,
                         progress: @Sendable (FlashromProgress) -> Void) throws(FlashromFailure) {
        let child: Subprocess
        do {
            // C locale: the phrases parsed below are flashrom's English ones.
            child = try Subprocess(argv, environment: ["LC_ALL": "C", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"], output: .pipe, error: .standardOutput)
        } catch {
            throw FlashromFailure(reason: "\(binary) could not be started: \(error) (install flashrom, or set flash.flashrom)", lastLines: [])
        }
        var buffer = [UInt8](repeating: 0, count: 4096)
        var timedOut = false
        let out = child.standardOutput!
        while true {
            let left = deadline - monotonicMilliseconds()
            if left <= 0 { timedOut = true; break }
            let ready = (try? out.poll(events: Int16(POLLIN), timeoutMilliseconds: Int32(min(left, 1000)))) ?? 0
            if ready == 0 { continue }
            let n = (try? buffer.withUnsafeMutableBytes { try out.read(into: $0) }) ?? 0
            if n <= 0 { break }
            for p in parser.feed(buffer[0..<n]) { progress(p) }
        }
        if timedOut {
            _ = child.stop(grace: 2)
            out.close()
            throw FlashromFailure(reason: "flashrom did not finish within \(timeoutSeconds) s and was stopped", lastLines: parser.lastLines)
        }
        let status = child.wait()
        out.close()
        parser.finish()
        guard status.succeeded else {
            throw FlashromFailure(reason: parser.failureReason ?? "flashrom \(status)", lastLines: parser.lastLines)
        }
    }
}

/// What a successful run reported.
public struct FlashromReport: Sendable, Equatable {
    public var chip: String?
    public var chipKilobytes: Int?
    public var verified: Bool
    public var lastLines: [String]
}

/// Reads flashrom's output as it comes: the chip it found, the phase it is in (it prints
/// "Reading old flash chip contents... done." with the verdict on the same line, later), and
/// what went wrong.
struct FlashromOutput {
    let operation: FlashOperation
    let verify: Bool
    private var line: [UInt8] = []
    private var pending = ""
    private(set) var lines: [String] = []
    private(set) var chip: String?
    private(set) var chipKilobytes: Int?
    private(set) var verified = false
    private(set) var failureReason: String?

    init(operation: FlashOperation, verify: Bool) { self.operation = operation; self.verify = verify }

    var lastLines: [String] { Array(lines.suffix(30)) }

    /// Phases in the order flashrom prints them, with the share of the run done when each starts.
    static let phases: [(text: String, phase: String, percent: [FlashOperation: Int])] = [
        ("Reading old flash chip contents...", "reading the chip's old contents", [.write: 10]),
        ("Erasing and writing flash chip...", "erasing and writing", [.write: 30]),
        ("Verifying flash...", "verifying", [.write: 75]),
        ("Reading flash...", "reading", [.read: 10]),
        ("Erasing flash chip...", "erasing", [.erase: 10]),
    ]

    mutating func feed(_ bytes: ArraySlice<UInt8>) -> [FlashromProgress] {
        var events: [FlashromProgress] = []
        for b in bytes {
            if b == 0x0a || b == 0x0d {
                if !line.isEmpty { events += take(String(decoding: line, as: UTF8.self)) }
                line.removeAll(keepingCapacity: true)
            } else if line.count < 4096 {
                line.append(b)
                // A phase is announced before its "done": report it as soon as it is printed.
                if b == UInt8(ascii: "."), let p = phase(in: String(decoding: line, as: UTF8.self)) { events.append(p) }
            }
        }
        return events
    }

    /// Lines of a follow-up run (the verify pass), kept with this run's.
    mutating func append(_ more: [String]) {
        lines += more
        if lines.count > 200 { lines.removeFirst(lines.count - 200) }
    }

    mutating func finish() {
        if !line.isEmpty { _ = take(String(decoding: line, as: UTF8.self)); line.removeAll() }
    }

    private mutating func phase(in text: String) -> FlashromProgress? {
        for p in FlashromOutput.phases where text.hasSuffix(p.text) && pending != p.text {
            pending = p.text
            return FlashromProgress(phase: p.phase, percent: p.percent[operation] ?? 50)
        }
        return nil
    }

    private mutating func take(_ text: String) -> [FlashromProgress] {
        lines.append(text)
        if lines.count > 200 { lines.removeFirst(100) }
        var events: [FlashromProgress] = []
        if text.hasPrefix("Found "), let open = text.firstIndex(of: "\""), let close = text[text.index(after: open)...].firstIndex(of: "\"") {
            chip = String(text[text.index(after: open)..<close])
            if let paren = text[close...].firstIndex(of: "("), let kb = Int(text[text.index(after: paren)...].prefix { $0.isNumber }) { chipKilobytes = kb }
            events.append(FlashromProgress(phase: "found \(chip!)", percent: 5))
        }
        if text.contains("VERIFIED") { verified = true }
        // flashrom read the whole chip, found it equal to the image and wrote nothing: that
        // comparison is the verification.
        if text.contains("Chip content is identical to the requested image") { verified = true }
        let lower = text.lowercased()
        if failureReason == nil, lower.contains("no eeprom/flash device found") || lower.hasPrefix("error") || lower.contains("failed")
            || lower.contains("multiple flash chip definitions match") || lower.contains("doesn't match") || lower.contains("does not match") {
            failureReason = text
        }
        return events
    }
}
