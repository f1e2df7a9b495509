import CPOSIXShims
#if canImport(Glibc)
import Glibc
#endif

/// A pseudo-terminal pair: the master side (the "device" end) and the path of its slave
/// (what a serial port opener sees, just like `/dev/ttyS1`).
public struct PseudoTerminal: Sendable {
    public let master: FileDescriptor
    public let slavePath: String

    /// Opens a new master. The slave stays open-able by path until the master is closed.
    public static func open() throws(Errno) -> PseudoTerminal {
        var name = [CChar](repeating: 0, count: 128)
        let fd = rte_open_pty_master(&name, name.count)
        if fd < 0 { throw Errno.current }
        let path = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let master = FileDescriptor(rawValue: fd)
        // Raw on the master too so bytes pass through untouched in both directions.
        var t = termios()
        if tcgetattr(fd, &t) == 0 { cfmakeraw(&t); _ = tcsetattr(fd, TCSANOW, &t) }
        return PseudoTerminal(master: master, slavePath: path)
    }

    public func close() { master.close() }
}

/// Atomically points `link` at `target` (symlink to a temporary name, then rename).
public func replaceSymlink(_ link: String, pointingTo target: String) throws(Errno) {
    let tmp = link + ".tmp\(getpid())"
    unlink(tmp)
    if symlink(target, tmp) != 0 { throw Errno.current }
    if rename(tmp, link) != 0 { let e = Errno.current; unlink(tmp); throw e }
}

/// Where a symbolic link points, or nil if `link` is not one.
public func symlinkTarget(_ link: String) -> String? {
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    let n = readlink(link, &buffer, buffer.count - 1)
    guard n >= 0 else { return nil }
    return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// Removes `link` only while it still points at `target` (another owner may have replaced it).
public func removeSymlink(_ link: String, ifPointingTo target: String) {
    if symlinkTarget(link) == target { unlink(link) }
}
