import CPOSIXShims
#if canImport(Glibc)
import Glibc
#endif

/// mkdir -p.
public func makeDirectories(_ path: String) throws(Errno) {
    var current = path.hasPrefix("/") ? "" : "."
    for part in path.split(separator: "/") {
        current += "/" + part
        if mkdir(current, 0o755) != 0 && errno != EEXIST { throw Errno.current }
    }
}

/// `path` made absolute against the working directory (a child started in another directory,
/// such as QEMU in the state directory, must not resolve it again).
public func absolutePath(_ path: String) -> String {
    if path.hasPrefix("/") { return path }
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    guard getcwd(&buffer, buffer.count) != nil else { return path }
    let cwd = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    let rest = path.hasPrefix("./") ? String(path.dropFirst(2)) : path
    return cwd == "/" ? "/" + rest : cwd + "/" + rest
}

public func listDirectory(_ path: String) throws(Errno) -> [String] {
    guard let dir = opendir(path) else { throw Errno.current }
    defer { closedir(dir) }
    var names: [String] = []
    while let entry = readdir(dir) {
        let name = withUnsafePointer(to: entry.pointee.d_name) {
            $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
        }
        if name != "." && name != ".." { names.append(name) }
    }
    return names
}

public func fileExists(_ path: String) -> Bool { access(path, F_OK) == 0 }

/// Whole file contents, or nil when it cannot be read.
public func readFile(_ path: String) -> [UInt8]? {
    guard let fd = try? FileDescriptor.open(path, [.readOnly]) else { return nil }
    defer { fd.close() }
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n: Int
        do { n = try buf.withUnsafeMutableBytes { (b) throws(Errno) -> Int in try fd.read(into: b) } } catch { return nil }
        if n == 0 { return out }
        out.append(contentsOf: buf[0..<n])
    }
}

/// Replaces `path` atomically and durably: write a temporary file, fsync it, rename it over
/// the old one, fsync the directory. A crash leaves either the old or the new file, never half.
public func writeFileAtomically(_ path: String, _ bytes: [UInt8]) throws(Errno) {
    let tmp = "\(path).tmp-\(getpid())"
    let fd = try FileDescriptor.open(tmp, [.writeOnly, .create, .truncate], permissions: 0o600)
    do {
        try fd.writeAll(bytes)
        try fd.fsync()
        fd.close()
    } catch {
        fd.close(); unlink(tmp); throw error
    }
    if rename(tmp, path) != 0 { let e = Errno.current; unlink(tmp); throw e }
    let dir = path.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
    if let d = try? FileDescriptor.open(dir.isEmpty ? "." : dir, [.readOnly]) { try? d.fsync(); d.close() }
}

/// Where `needle` first occurs in `haystack[from..<to]` (glibc's memmem: linear time, whatever the
/// bytes, where a naive search of an attacker's body is quadratic).
public func firstOffset(of needle: [UInt8], in haystack: [UInt8], from: Int = 0, to: Int? = nil) -> Int? {
    let end = Swift.min(to ?? haystack.count, haystack.count)
    guard from >= 0, from <= end, !needle.isEmpty else { return nil }
    let offset = haystack.withUnsafeBytes { h in
        needle.withUnsafeBytes { n in rte_find_bytes(h.baseAddress! + from, end - from, n.baseAddress, n.count) }
    }
    return offset < 0 ? nil : from + offset
}
