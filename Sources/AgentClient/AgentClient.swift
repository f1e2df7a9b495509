import Foundation
import POSIXIO
#if canImport(Glibc)
import Glibc
#endif

/// Why a call to an agent failed: it could not be reached, or it answered with a problem document.
public enum ClientError: Error, CustomStringConvertible, Sendable {
    case unreachable(String)
    case problem(status: Int, title: String, detail: String, holder: String?, expiresAt: String?)
    case badResponse(String)

    public var description: String {
        switch self {
        case .unreachable(let why): return "cannot reach the agent: \(why)"
        case .problem(let status, let title, let detail, _, _): return "\(title) (\(status)): \(detail)"
        case .badResponse(let why): return "unexpected answer from the agent: \(why)"
        }
    }
}

public struct Response: Sendable {
    public var status: Int
    public var headers: [String: String]
    public var body: [UInt8]
    public var json: Any? { try? JSONSerialization.jsonObject(with: Data(body)) }
    public var object: [String: Any] { json as? [String: Any] ?? [:] }
}

/// A small HTTP/1.1 client over a TCP socket for rtectl: JSON calls, streams read as they come,
/// and the console upgrade. No dependency beyond POSIX.
public struct AgentClient: Sendable {
    public let host: String
    public let port: Int
    public var token: String?
    public var leaseToken: String?

    /// `url`: http://HOST:PORT (https is not supported by this client; use an SSH tunnel).
    public init(url: String, token: String?, leaseToken: String? = nil) throws(ClientError) {
        var rest = Substring(url)
        if rest.hasPrefix("http://") { rest = rest.dropFirst(7) } else if rest.hasPrefix("https://") {
            throw .unreachable("https is not supported by rtectl yet; reach the agent over http or an SSH tunnel")
        }
        if let slash = rest.firstIndex(of: "/") { rest = rest[..<slash] }
        let parts = rest.split(separator: ":", maxSplits: 1)
        guard let h = parts.first, !h.isEmpty else { throw .unreachable("bad agent URL \(url)") }
        host = String(h)
        port = parts.count == 2 ? Int(parts[1]) ?? 8000 : 8000
        self.token = token
        self.leaseToken = leaseToken
    }

    func connect() throws(ClientError) -> Int32 {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &result) == 0, let first = result else {
            throw .unreachable("cannot resolve \(host)")
        }
        defer { freeaddrinfo(result) }
        var ai: UnsafeMutablePointer<addrinfo>? = first
        var lastError = "no address"
        while let a = ai {
            let fd = socket(a.pointee.ai_family, a.pointee.ai_socktype, a.pointee.ai_protocol)
            if fd >= 0 {
                if Glibc.connect(fd, a.pointee.ai_addr, a.pointee.ai_addrlen) == 0 { return fd }
                lastError = String(cString: strerror(errno))
                close(fd)
            }
            ai = a.pointee.ai_next
        }
        throw .unreachable("\(host):\(port): \(lastError)")
    }

    func head(_ method: String, _ path: String, body: [UInt8]?, contentType: String = "application/json", extra: [String: String] = [:], version: String = "1.1") -> [UInt8] {
        var h = "\(method) \(path) HTTP/\(version)\r\nHost: \(host):\(port)\r\nUser-Agent: rtectl\r\n"
        if version == "1.1" && extra["Connection"] == nil { h += "Connection: close\r\n" }
        if let token { h += "Authorization: Bearer \(token)\r\n" }
        if let leaseToken { h += "X-Lease-Token: \(leaseToken)\r\n" }
        for (k, v) in extra { h += "\(k): \(v)\r\n" }
        if let body { h += "Content-Type: \(contentType)\r\nContent-Length: \(body.count)\r\n" }
        return Array((h + "\r\n").utf8) + (body ?? [])
    }

    static func sendAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + done, $0.count - done, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { if errno == EINTR { continue }; return false }
            done += n
        }
        return true
    }

    /// One request and its whole answer. Problem documents become `ClientError.problem`.
    public func call(_ method: String, _ path: String, json: Any? = nil, raw: [UInt8]? = nil,
                     contentType: String = "application/json") throws(ClientError) -> Response {
        var body: [UInt8]? = raw
        if let json {
            do { body = Array(try JSONSerialization.data(withJSONObject: json)) } catch { throw .badResponse("cannot encode the request") }
        }
        let fd = try connect()
        defer { close(fd) }
        guard AgentClient.sendAll(fd, head(method, path, body: body, contentType: contentType)) else { throw .unreachable("the connection closed while sending") }
        return try AgentClient.answer(fd)
    }

    /// PUTs a body of `size` bytes read piece by piece (`read` returns nil at the end), never
    /// holding it whole; `progress` gets the bytes sent so far.
    public func upload(_ path: String, size: Int64, read: () -> [UInt8]?, progress: (Int64) -> Void) throws(ClientError) -> Response {
        let fd = try connect()
        defer { close(fd) }
        guard AgentClient.sendAll(fd, head("PUT", path, body: nil, extra: ["Content-Type": "application/octet-stream", "Content-Length": String(size)]))
        else { throw .unreachable("the connection closed while sending") }
        var sent: Int64 = 0
        while sent < size, let chunk = read() {
            // A refusal (413, 423…) may close the connection early: its answer is read below.
            guard AgentClient.sendAll(fd, chunk) else { break }
            sent += Int64(chunk.count)
            progress(sent)
        }
        return try AgentClient.answer(fd)
    }

    /// Reads the whole answer; a problem document becomes `ClientError.problem`.
    static func answer(_ fd: Int32) throws(ClientError) -> Response {
        var raw: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            raw += buf[0..<n]
        }
        let response = try AgentClient.parse(raw)
        if response.status >= 400 {
            let o = response.object
            throw .problem(status: response.status, title: o["title"] as? String ?? "HTTP \(response.status)",
                           detail: o["detail"] as? String ?? String(decoding: response.body, as: UTF8.self),
                           holder: o["holder"] as? String, expiresAt: o["expires_at"] as? String)
        }
        return response
    }

    static func parse(_ raw: [UInt8]) throws(ClientError) -> Response {
        guard let split = raw.firstRange(of: Array("\r\n\r\n".utf8)) else { throw .badResponse("no HTTP header") }
        let lines = String(decoding: raw[..<split.lowerBound], as: UTF8.self).components(separatedBy: "\r\n")
        let fields = lines[0].split(separator: " ")
        guard fields.count >= 2, let status = Int(fields[1]) else { throw .badResponse(lines[0]) }
        var headers: [String: String] = [:]
        for l in lines.dropFirst() {
            if let c = l.firstIndex(of: ":") { headers[l[..<c].lowercased()] = l[l.index(after: c)...].trimmingCharacters(in: .whitespaces) }
        }
        var body = Array(raw[split.upperBound...])
        if headers["transfer-encoding"]?.lowercased() == "chunked" { body = dechunk(body) }
        return Response(status: status, headers: headers, body: body)
    }

    static func dechunk(_ b: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var i = 0
        while i < b.count {
            guard let eol = b[i...].firstRange(of: Array("\r\n".utf8)) else { break }
            let size = Int(String(decoding: b[i..<eol.lowerBound], as: UTF8.self).split(separator: ";").first ?? "", radix: 16) ?? 0
            if size == 0 { break }
            out += b[eol.upperBound..<min(b.count, eol.upperBound + size)]
            i = eol.upperBound + size + 2
        }
        return out
    }

    /// Follows a streaming endpoint (HTTP/1.0, so the body comes unframed) and hands each piece
    /// to `onData` until the server ends it or `onData` returns false.
    public func stream(_ path: String, onData: ([UInt8]) -> Bool) throws(ClientError) {
        let fd = try connect()
        defer { close(fd) }
        guard AgentClient.sendAll(fd, head("GET", path, body: nil, version: "1.0")) else { throw .unreachable("send failed") }
        var pending: [UInt8] = []
        var inBody = false
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            if inBody {
                if !onData(Array(buf[0..<n])) { return }
                continue
            }
            pending += buf[0..<n]
            guard let split = pending.firstRange(of: Array("\r\n\r\n".utf8)) else { continue }
            let header = try AgentClient.parse(Array(pending[..<split.upperBound]))
            if header.status >= 400 {
                var all = pending
                while true {
                    let m = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                    if m <= 0 { break }
                    all += buf[0..<m]
                }
                let r = try AgentClient.parse(all)
                throw .problem(status: r.status, title: r.object["title"] as? String ?? "HTTP \(r.status)",
                               detail: r.object["detail"] as? String ?? "", holder: r.object["holder"] as? String,
                               expiresAt: r.object["expires_at"] as? String)
            }
            inBody = true
            let rest = Array(pending[split.upperBound...])
            if !rest.isEmpty && !onData(rest) { return }
        }
    }

    /// Opens the interactive console (HTTP Upgrade); returns the raw socket after "101".
    public func openConsole() throws(ClientError) -> (socket: Int32, initial: [UInt8]) {
        let fd = try connect()
        guard AgentClient.sendAll(fd, head("GET", "/api/v1/console", body: nil, extra: ["Connection": "Upgrade", "Upgrade": "rte-console"])) else {
            close(fd); throw .unreachable("send failed")
        }
        var raw: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while raw.firstRange(of: Array("\r\n\r\n".utf8)) == nil {
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { close(fd); throw .unreachable("the agent closed the console") }
            raw += buf[0..<n]
        }
        let split = raw.firstRange(of: Array("\r\n\r\n".utf8))!
        let r = try AgentClient.parse(Array(raw[..<split.upperBound]))
        guard r.status == 101 else {
            close(fd)
            throw .problem(status: r.status, title: "console refused", detail: "HTTP \(r.status)", holder: nil, expiresAt: nil)
        }
        return (fd, Array(raw[split.upperBound...]))
    }
}
