import AgentClient
import Foundation
import POSIXIO
#if canImport(Glibc)
import Glibc
#endif

/// A real `rte-agent serve` process for the benchmarks that measure the daemon as deployed.
final class Daemon: @unchecked Sendable {
    let process: Subprocess
    let port: Int
    let stateDirectory: String
    /// Seconds from exec to the first accepted TCP connection.
    let startup: Double

    init(binary: String, config: String, stateDirectory: String) throws {
        self.stateDirectory = stateDirectory
        try? FileManager.default.removeItem(atPath: stateDirectory)
        try FileManager.default.createDirectory(atPath: stateDirectory, withIntermediateDirectories: true)
        let file = stateDirectory + "/agent.yaml"
        try config.write(toFile: file, atomically: true, encoding: .utf8)
        port = try freePort()
        let t0 = now()
        process = try Subprocess([binary, "serve", "--config", file, "--listen", "127.0.0.1:\(port)", "--state-dir", stateDirectory],
                                 output: .null, error: .null)
        while !canConnect(port) {
            if let ended = process.poll() { throw BenchError("rte-agent ended during start-up (\(ended))") }
            guard now() - t0 < 30 else { process.stop(); throw BenchError("rte-agent did not listen within 30 s") }
            usleep(200)
        }
        startup = now() - t0
    }

    var pid: Int32 { process.pid }
    func client(leaseToken: String? = nil) throws -> AgentClient { try AgentClient(url: "http://127.0.0.1:\(port)", token: nil, leaseToken: leaseToken) }

    func stop() {
        process.stop(grace: 10)
        try? FileManager.default.removeItem(atPath: stateDirectory)
    }
}

func freePort() throws -> Int {
    let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(s) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, len) == 0 && getsockname(s, $0, &len) == 0 }
    }
    guard ok else { throw BenchError("no free port") }
    return Int(UInt16(bigEndian: addr.sin_port))
}

func canConnect(_ port: Int) -> Bool {
    let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(s) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = UInt16(port).bigEndian
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    return withUnsafePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
}

/// The simulated apu2 config (deploy/simulated.yaml) with the console port moved out of the way.
func simulatedConfig() throws -> String {
    try String(contentsOfFile: "deploy/simulated.yaml", encoding: .utf8)
        .replacingOccurrences(of: "console_port: 13541", with: "console_port: 0")
}

/// wrk's figures: requests/s, latency percentiles, total requests, non-2xx count.
struct WrkResult {
    var requestsPerSecond: Double
    var p50: Double, p99: Double  // milliseconds
    var requests: Int
    var errors: Int

    static func run(_ url: String, connections: Int, seconds: Int, script: String? = nil, headers: [String] = []) throws -> WrkResult {
        var args = ["wrk", "-t2", "-c\(connections)", "-d\(seconds)s", "--latency"]
        for h in headers { args += ["-H", h] }
        if let script { args += ["-s", script] }
        let child = try Child(args + [url])
        var out: [String] = []
        while let l = child.readLine() { out.append(l) }
        guard child.wait() == 0 else { throw BenchError("wrk failed: \(out.joined(separator: "\n"))") }
        func ms(_ s: Substring) -> Double {
            let v = Double(s.dropLast(s.hasSuffix("ms") || s.hasSuffix("us") ? 2 : 1)) ?? .nan
            return s.hasSuffix("us") ? v / 1000 : s.hasSuffix("ms") ? v : v * 1000
        }
        var r = WrkResult(requestsPerSecond: 0, p50: .nan, p99: .nan, requests: 0, errors: 0)
        for l in out {
            let f = l.split(separator: " ", omittingEmptySubsequences: true)
            if l.hasPrefix("Requests/sec:") { r.requestsPerSecond = Double(f[1]) ?? 0 }
            if f.first == "50%" { r.p50 = ms(f[1]) }
            if f.first == "99%" { r.p99 = ms(f[1]) }
            if l.contains("requests in") { r.requests = Int(f[0]) ?? 0 }
            if l.contains("Non-2xx or 3xx responses:") { r.errors = Int(f.last!) ?? 0 }
            if l.contains("Socket errors:") { r.errors += l.split(separator: ",").compactMap { Int($0.split(separator: " ").last ?? "") }.reduce(0, +) }
        }
        return r
    }
}
