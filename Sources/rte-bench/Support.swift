import Foundation
import POSIXIO
#if canImport(Glibc)
import Glibc
#endif

/// Where each benchmark writes its figures: plain lines on stdout, one summary line at the end,
/// and (with --table) Markdown rows that `scripts/bench` gathers into Benchmarks/RESULTS.md.
struct Report {
    let name: String
    let tableFile: String?
    private(set) var rows: [String] = []

    init(_ name: String, table: String?) {
        self.name = name
        tableFile = table
        print("== \(name)")
    }

    func line(_ text: String) { print("  \(text)"); fflush(nil) }

    /// One row of the results table: what was measured, the agent's figure, the baseline's
    /// figure (or "—"), the target and whether it was met.
    mutating func row(_ figure: String, agent: String, baseline: String = "—", target: String = "—", met: Bool? = nil) {
        let verdict = met.map { $0 ? "yes" : "**no**" } ?? "—"
        rows.append("| \(name) | \(figure) | \(agent) | \(baseline) | \(target) | \(verdict) |")
    }

    func finish(summary: String) throws {
        print("SUMMARY \(name): \(summary)")
        fflush(nil)
        guard let tableFile else { return }
        let text = rows.map { $0 + "\n" }.joined()
        if let h = FileHandle(forWritingAtPath: tableFile) {
            h.seekToEndOfFile(); h.write(Data(text.utf8)); try h.close()
        } else {
            try text.write(toFile: tableFile, atomically: true, encoding: .utf8)
        }
    }
}

struct Distribution {
    let sorted: [Double]
    init(_ samples: [Double]) { sorted = samples.sorted() }
    func percentile(_ p: Double) -> Double {
        guard !sorted.isEmpty else { return .nan }
        return sorted[min(sorted.count - 1, Int((Double(sorted.count) * p).rounded(.down)))]
    }
    var p50: Double { percentile(0.5) }
    var p99: Double { percentile(0.99) }
    var max: Double { sorted.last ?? .nan }
    var count: Int { sorted.count }
}

func fmt(_ x: Double, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", x) }

func now() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
}

/// Deterministic pseudo-random numbers (the same noise in every run and for every client).
struct SplitMix {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E3779B97F4A7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) &* 0x94D049BB133111EB
        return z ^ (z >> 31)
    }
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
}

/// CPU seconds (user + system) a process has used, from /proc/PID/stat.
func cpuSeconds(pid: Int32 = getpid()) -> Double? {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = text.lastIndex(of: ")") else { return nil }
    let fields = text[text.index(after: close)...].split(separator: " ")
    // After the command name: state is field 3, utime 14 and stime 15 (1-based in proc(5)).
    guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// A field of /proc/PID/status in kB (VmRSS, VmHWM).
func statusKilobytes(_ field: String, pid: Int32 = getpid()) -> Double? {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
    for line in text.split(separator: "\n") where line.hasPrefix(field + ":") {
        return Double(line.split(separator: " ").dropFirst().first ?? "")
    }
    return nil
}

/// A child process whose output is read line by line.
final class Child: @unchecked Sendable {
    let process: Subprocess
    private let reader: LineReader

    /// `input: .pipe` keeps the child's standard input open for as long as this process lives.
    init(_ arguments: [String], environment: [String: String]? = nil, input: Subprocess.Stream = .null,
         error: Subprocess.Stream = .inherit) throws {
        let env = environment.map { ProcessInfo.processInfo.environment.merging($0) { $1 } }
        process = try Subprocess(arguments, environment: env, input: input, output: .pipe, error: error)
        reader = LineReader(process.standardOutput!)
    }

    var pid: Int32 { process.pid }

    /// The next line of output (blocking); nil at end of output.
    func readLine() -> String? { reader.readLine() }

    /// Reads lines until one starts with `prefix`, echoing the others.
    func line(startingWith prefix: String, echo: Bool = true) -> String? {
        while let l = readLine() {
            if l.hasPrefix(prefix) { return l }
            if echo { print("  | \(l)") }
        }
        return nil
    }

    /// The exit code (128 + n when killed by signal n, as a shell reports it).
    func wait() -> Int32 {
        switch process.wait() {
        case .exited(let code): code
        case .signalled(let n): 128 + n
        }
    }

    func stop() {
        process.stop(grace: 5)
        reader.descriptor.close()
        process.standardInput?.close()
    }
}

/// `key=value` fields of a result line.
func fields(_ line: String) -> [String: String] {
    var out: [String: String] = [:]
    for part in line.split(separator: " ") {
        let kv = part.split(separator: "=", maxSplits: 1)
        if kv.count == 2 { out[String(kv[0])] = String(kv[1]) }
    }
    return out
}

/// Runs a blocking piece of work on its own thread (keeps the cooperative pool free).
func onThread<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { c in
        Thread { c.resume(with: Result { try work() }) }.start()
    }
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// This executable's path, to start its helper modes as child processes.
let selfPath = ProcessInfo.processInfo.arguments[0].hasPrefix("/")
    ? ProcessInfo.processInfo.arguments[0]
    : FileManager.default.currentDirectoryPath + "/" + ProcessInfo.processInfo.arguments[0]
