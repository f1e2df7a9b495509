import TestSupport
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A deliberately small HTTP/1.1 client over a real TCP socket, so tests control every byte
/// (malformed bodies, huge uploads, Upgrade) and see exactly what the server sends.
struct RawHTTPResponse {
    var status: Int
    var headers: [String: String]
    var body: [UInt8]
    var text: String { String(decoding: body, as: UTF8.self) }
    var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] ?? [:] }
    var jsonArray: [[String: Any]] { (try? JSONSerialization.jsonObject(with: Data(body))) as? [[String: Any]] ?? [] }
}

struct TestSocket: Sendable {
    let fd: Int32

    /// `from` picks the local address (another 127.x.y.z stands for another client machine).
    static func connect(port: Int, from source: String? = nil) throws -> TestSocket {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        if let source {
            var local = sockaddr_in()
            local.sin_family = sa_family_t(AF_INET)
            local.sin_addr.s_addr = inet_addr(source)
            let b = withUnsafePointer(to: &local) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            guard b == 0 else { Glibc.close(fd); throw TimeoutError(what: "bind to \(source) failed: errno \(errno)") }
        }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let r = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard r == 0 else { Glibc.close(fd); throw TimeoutError(what: "connect to port \(port) failed: errno \(errno)") }
        var tv = timeval(tv_sec: 60, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        return TestSocket(fd: fd)
    }

    func send(_ bytes: [UInt8]) {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + done, $0.count - done, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            done += n
        }
    }

    func receive(max: Int = 65536) -> [UInt8] {
        var buf = [UInt8](repeating: 0, count: max)
        let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        return n > 0 ? Array(buf[0..<n]) : []
    }

    /// Reads until `text` has appeared in everything read so far (or the peer closes / times out).
    func receive(until text: String, into acc: inout [UInt8]) async -> Bool {
        let start = acc
        let (found, all) = try! await onThread { () -> (Bool, [UInt8]) in
            var a = start
            let f = self.receiveBlocking(until: text, into: &a)
            return (f, a)
        }
        acc = all
        return found
    }

    func receiveBlocking(until text: String, into acc: inout [UInt8]) -> Bool {
        while !acc.contains(text: text) {
            let chunk = receive()
            if chunk.isEmpty { return false }
            acc += chunk
        }
        return true
    }

    func close() { Glibc.close(fd) }
}

struct HTTP: Sendable {
    var port: Int
    var token: String?
    /// Local address to connect from (another 127.x address plays another machine).
    var source: String? = nil

    /// Runs on its own thread: a blocking socket read on the cooperative pool (2 threads on a
    /// 2-core CI machine) would starve the very server tasks it is waiting for.
    func request(_ method: String, _ path: String, body: [UInt8]? = nil, json: Any? = nil, leaseToken: String? = nil,
                 headers: [String: String] = [:], bearer: String?? = .none) async throws -> RawHTTPResponse {
        var payload = body
        if let json { payload = Array(try JSONSerialization.data(withJSONObject: json)) }
        let fixed = payload
        return try await onThread { try self.requestBlocking(method, path, body: fixed, leaseToken: leaseToken, headers: headers, bearer: bearer) }
    }

    func requestBlocking(_ method: String, _ path: String, body: [UInt8]? = nil, leaseToken: String? = nil,
                         headers: [String: String] = [:], bearer: String?? = .none) throws -> RawHTTPResponse {
        let payload = body
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        let auth: String? = bearer ?? token
        if let auth { head += "Authorization: Bearer \(auth)\r\n" }
        if let leaseToken { head += "X-Lease-Token: \(leaseToken)\r\n" }
        for (k, v) in headers where !v.isEmpty { head += "\(k): \(v)\r\n" }
        if let payload {
            // A caller's own Content-Type (or "" for none) replaces the JSON default.
            if !headers.keys.contains(where: { $0.lowercased() == "content-type" }) { head += "Content-Type: application/json\r\n" }
            head += "Content-Length: \(payload.count)\r\n"
        }
        head += "\r\n"
        let s = try TestSocket.connect(port: port, from: source)
        defer { s.close() }
        s.send(Array(head.utf8) + (payload ?? []))
        var raw: [UInt8] = []
        while true {
            let chunk = s.receive()
            if chunk.isEmpty { break }
            raw += chunk
        }
        return try HTTP.parse(raw)
    }

    static func parse(_ raw: [UInt8]) throws -> RawHTTPResponse {
        guard let split = raw.firstRange(of: Array("\r\n\r\n".utf8)) else { throw TimeoutError(what: "no HTTP response: \(String(decoding: raw, as: UTF8.self))") }
        let head = String(decoding: raw[..<split.lowerBound], as: UTF8.self).components(separatedBy: "\r\n")
        let status = Int(head[0].split(separator: " ")[1]) ?? 0
        var headers: [String: String] = [:]
        for line in head.dropFirst() {
            if let c = line.firstIndex(of: ":") { headers[line[..<c].lowercased()] = line[line.index(after: c)...].trimmingCharacters(in: .whitespaces) }
        }
        var body = Array(raw[split.upperBound...])
        if headers["transfer-encoding"]?.lowercased() == "chunked" { body = dechunk(body) }
        return RawHTTPResponse(status: status, headers: headers, body: body)
    }

    static func dechunk(_ b: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var i = 0
        while i < b.count {
            guard let eol = b[i...].firstRange(of: Array("\r\n".utf8)) else { break }
            let size = Int(String(decoding: b[i..<eol.lowerBound], as: UTF8.self).split(separator: ";")[0], radix: 16) ?? 0
            if size == 0 { break }
            let start = eol.upperBound
            out += b[start..<min(b.count, start + size)]
            i = start + size + 2
        }
        return out
    }
}

extension Array where Element == UInt8 {
    func contains(text: String) -> Bool {
        let needle = Array(text.utf8)
        guard needle.count <= count else { return false }
        return (0...(count - needle.count)).contains { i in self[i..<(i + needle.count)].elementsEqual(needle) }
    }
}

/// Runs blocking work on a dedicated thread and awaits its result.
func onThread<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, Error>) in
        let t = Thread { c.resume(with: Result { try work() }) }
        t.start()
    }
}

struct TimeoutError: Error, CustomStringConvertible { var what: String; var description: String { what } }

let packageRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    while url.path != "/" {
        url.deleteLastPathComponent()
        if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { return url.path }
    }
    return FileManager.default.currentDirectoryPath
}()

func scratchDirectory(_ name: String = #function) -> String {
    let path = NSTemporaryDirectory() + "rte-api-\(name.filter { $0.isLetter })-\(UUID().uuidString.prefix(8))"
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// Runs a program (PATH finds it) to its end, with a clean signal mask and a deadline; returns
/// its exit status and output.
func run(_ args: [String], env: [String: String]? = nil, deadlineSeconds: Double = 300) async throws -> (Int32, String) {
    try await runChild(args, environment: env, deadlineSeconds: deadlineSeconds)
}
