#if canImport(Glibc)
import Glibc
#endif

/// systemd's notification protocol (sd_notify without libsystemd): one datagram to
/// $NOTIFY_SOCKET. A no-op when the daemon is not started by systemd.
public enum SystemdNotify {
    /// Sends e.g. "READY=1", "WATCHDOG=1", "STOPPING=1", "STATUS=...". Returns false when not under systemd.
    @discardableResult
    public static func send(_ state: String, environment: [String: String] = currentEnvironment()) -> Bool {
        guard var path = environment["NOTIFY_SOCKET"], !path.isEmpty else { return false }
        if path.hasPrefix("@") { path = "\0" + path.dropFirst() }  // abstract namespace
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { return false }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in for (i, b) in bytes.enumerated() { raw[i] = b } }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count)
        let message = Array(state.utf8)
        let sent = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                message.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL), sa, length) }
            }
        }
        return sent == message.count
    }

    /// Half the watchdog interval systemd asked for (WATCHDOG_USEC), if it asked and meant us.
    public static func watchdogInterval(environment: [String: String] = currentEnvironment()) -> Duration? {
        guard let usec = environment["WATCHDOG_USEC"].flatMap({ Int64($0) }), usec > 0 else { return nil }
        if let pid = environment["WATCHDOG_PID"].flatMap({ Int32($0) }), pid != getpid() { return nil }
        return .microseconds(usec / 2)
    }

    public static func currentEnvironment() -> [String: String] {
        var env: [String: String] = [:]
        var p = environ
        while let entry = p.pointee {
            let s = String(cString: entry)
            if let eq = s.firstIndex(of: "=") { env[String(s[..<eq])] = String(s[s.index(after: eq)...]) }
            p += 1
        }
        return env
    }
}
