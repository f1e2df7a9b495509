#if canImport(Glibc)
import Glibc
#endif

/// A listening TCP socket (IPv4 or IPv6 literal host), in the same thin typed style as
/// FileDescriptor: one method per call, errors as values.
public struct TCPListener: Sendable {
    public let descriptor: FileDescriptor
    public let port: Int

    public static func listen(host: String, port: Int, backlog: Int32 = 16) throws(Errno) -> TCPListener {
        let v6 = host.contains(":")
        let fd = socket(v6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Errno.current }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var storage = sockaddr_storage()
        var length: socklen_t
        if v6 {
            var a = sockaddr_in6()
            a.sin6_family = sa_family_t(AF_INET6)
            a.sin6_port = in_port_t(UInt16(port).bigEndian)
            guard inet_pton(AF_INET6, host, &a.sin6_addr) == 1 else { Glibc.close(fd); throw Errno(EINVAL) }
            withUnsafeBytes(of: a) { src in withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: src) } }
            length = socklen_t(MemoryLayout<sockaddr_in6>.size)
        } else {
            var a = sockaddr_in()
            a.sin_family = sa_family_t(AF_INET)
            a.sin_port = in_port_t(UInt16(port).bigEndian)
            guard inet_pton(AF_INET, host, &a.sin_addr) == 1 else { Glibc.close(fd); throw Errno(EINVAL) }
            withUnsafeBytes(of: a) { src in withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: src) } }
            length = socklen_t(MemoryLayout<sockaddr_in>.size)
        }
        let bound = withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        guard bound == 0, Glibc.listen(fd, backlog) == 0 else { let e = Errno.current; Glibc.close(fd); throw e }
        var actual = sockaddr_storage()
        var actualLength = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &actual) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &actualLength) } }
        let boundPort = withUnsafeBytes(of: actual) { raw -> UInt16 in
            // sin_port and sin6_port sit at the same offset, right after the family.
            UInt16(bigEndian: raw.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
        }
        return TCPListener(descriptor: FileDescriptor(rawValue: fd), port: Int(boundPort))
    }

    /// Waits for a connection; returns it and the peer's address as text.
    public func accept() throws(Errno) -> (FileDescriptor, String) {
        var peer = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let r = retryingOnInterrupt {
            withUnsafeMutablePointer(to: &peer) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.accept(descriptor.rawValue, $0, &length) } }
        }
        switch r {
        case .failure(let e): throw e
        case .success(let fd):
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
            withUnsafeBytes(of: peer) { raw in
                let family = raw.load(as: sa_family_t.self)
                if Int32(family) == AF_INET6 {
                    var a = raw.load(as: sockaddr_in6.self).sin6_addr
                    inet_ntop(AF_INET6, &a, &text, socklen_t(text.count))
                } else {
                    var a = raw.load(as: sockaddr_in.self).sin_addr
                    inet_ntop(AF_INET, &a, &text, socklen_t(text.count))
                }
            }
            return (FileDescriptor(rawValue: fd), String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
    }

    /// Makes a blocked `accept` return (EINVAL) and closes the socket.
    public func close() {
        shutdown(descriptor.rawValue, Int32(SHUT_RDWR))
        Glibc.close(descriptor.rawValue)
    }
}

/// A connected unix-domain stream socket.
public enum UnixSocket {
    /// Connects to `path`, retrying while the server has not created it yet (one try per 10 ms).
    public static func connect(path: String, attempts: Int = 1) throws(Errno) -> FileDescriptor {
        var last = Errno(ENOENT)
        for attempt in 0..<max(1, attempts) {
            if attempt > 0 { usleep(10_000) }
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw Errno.current }
            var addr = sockaddr_un()
            addr.sun_family = sa_family_t(AF_UNIX)
            let bytes = Array(path.utf8)
            guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { Glibc.close(fd); throw Errno(ENAMETOOLONG) }
            withUnsafeMutableBytes(of: &addr.sun_path) { raw in
                for (i, b) in bytes.enumerated() { raw[i] = b }
                raw[bytes.count] = 0
            }
            let r = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
            if r == 0 { return FileDescriptor(rawValue: fd) }
            last = Errno.current
            Glibc.close(fd)
        }
        throw last
    }
}
