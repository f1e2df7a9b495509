#if canImport(Glibc)
import Glibc
#endif

/// An error number from a failed system call, with the C library's own words for it.
public struct Errno: Error, Equatable, Sendable, CustomStringConvertible {
    public let rawValue: Int32
    public init(_ rawValue: Int32) { self.rawValue = rawValue }
    public static var current: Errno { Errno(errno) }
    public var description: String { String(cString: strerror(rawValue)) }

    public static let interrupted = Errno(EINTR)
    public static let wouldBlock = Errno(EAGAIN)
    public static let ioError = Errno(EIO)
    public static let busy = Errno(EBUSY)
    public static let noEntry = Errno(ENOENT)
    public static let noDevice = Errno(ENXIO)
    public static let badFileDescriptor = Errno(EBADF)
    public static let timedOut = Errno(ETIMEDOUT)
}

/// Runs `body` again while it fails with EINTR: the one place where interrupted calls are retried.
@inline(__always)
func retryingOnInterrupt<T: BinaryInteger>(_ body: () -> T) -> Result<T, Errno> {
    while true {
        let r = body()
        if r >= 0 { return .success(r) }
        let e = Errno.current
        if e != .interrupted { return .failure(e) }
    }
}

/// A thin typed wrapper around a POSIX file descriptor, modelled on swift-system's:
/// one small method per system call, errors as values, EINTR handled in one place.
public struct FileDescriptor: Hashable, Sendable {
    public let rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }

    public struct OpenOptions: OptionSet, Sendable {
        public let rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }
        public static let readOnly = OpenOptions(rawValue: O_RDONLY)
        public static let writeOnly = OpenOptions(rawValue: O_WRONLY)
        public static let readWrite = OpenOptions(rawValue: O_RDWR)
        public static let create = OpenOptions(rawValue: O_CREAT)
        public static let append = OpenOptions(rawValue: O_APPEND)
        public static let truncate = OpenOptions(rawValue: O_TRUNC)
        public static let noControllingTerminal = OpenOptions(rawValue: O_NOCTTY)
        public static let nonBlocking = OpenOptions(rawValue: O_NONBLOCK)
        public static let closeOnExec = OpenOptions(rawValue: O_CLOEXEC)
    }

    public static func open(_ path: String, _ options: OpenOptions, permissions: mode_t = 0o644) throws(Errno) -> FileDescriptor {
        let flags = options.union(.closeOnExec).rawValue
        let r = retryingOnInterrupt { Glibc.open(path, flags, permissions) }
        switch r {
        case .success(let fd): return FileDescriptor(rawValue: fd)
        case .failure(let e): throw e
        }
    }

    public func close() {
        // Never retry close on EINTR: on Linux the descriptor is already gone.
        _ = Glibc.close(rawValue)
    }

    /// Reads up to `buffer.count` bytes; returns 0 at end of file.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
        let r = retryingOnInterrupt { Glibc.read(rawValue, buffer.baseAddress, buffer.count) }
        switch r {
        case .success(let n): return n
        case .failure(let e): throw e
        }
    }

    /// One write call; may write fewer bytes than given.
    public func write(_ buffer: UnsafeRawBufferPointer) throws(Errno) -> Int {
        let r = retryingOnInterrupt { Glibc.write(rawValue, buffer.baseAddress, buffer.count) }
        switch r {
        case .success(let n): return n
        case .failure(let e): throw e
        }
    }

    /// Writes every byte, waiting for the descriptor to become writable when it is non-blocking.
    /// With `timeoutMilliseconds`, a reader that stops taking bytes for that long ends the write
    /// with `.timedOut` instead of holding the writer for ever.
    public func writeAll<C: Collection>(_ bytes: C, timeoutMilliseconds: Int? = nil) throws(Errno) where C.Element == UInt8 {
        let array = Array(bytes)
        var done = 0
        let deadline = timeoutMilliseconds.map { monotonicMilliseconds() + Int64($0) }
        while done < array.count {
            let result: Result<Int, Errno> = array.withUnsafeBytes { raw in
                let r = retryingOnInterrupt { Glibc.write(rawValue, raw.baseAddress! + done, raw.count - done) }
                return r
            }
            switch result {
            case .success(let n): done += n
            case .failure(let e) where e == .wouldBlock:
                try waitWritable(until: deadline)
            case .failure(let e): throw e
            }
        }
    }

    /// Sends every byte on a socket without blocking in send(2) (MSG_DONTWAIT) and without SIGPIPE;
    /// waits for room at most until `timeoutMilliseconds` from now, then throws `.timedOut`.
    public func sendAll(_ bytes: [UInt8], timeoutMilliseconds: Int) throws(Errno) {
        var done = 0
        let deadline = monotonicMilliseconds() + Int64(timeoutMilliseconds)
        while done < bytes.count {
            let r = bytes.withUnsafeBytes { raw in
                retryingOnInterrupt { Glibc.send(rawValue, raw.baseAddress! + done, raw.count - done, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
            }
            switch r {
            case .success(let n): done += n
            case .failure(let e) where e == .wouldBlock: try waitWritable(until: deadline)
            case .failure(let e): throw e
            }
        }
    }

    /// recv(2), retried on EINTR; on a non-blocking socket (libmicrohttpd hands over upgraded
    /// connections that way) it waits for data. 0 means the peer closed its side.
    public func receive(into buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
        while true {
            switch retryingOnInterrupt({ Glibc.recv(rawValue, buffer.baseAddress, buffer.count, 0) }) {
            case .success(let n): return n
            case .failure(let e) where e == .wouldBlock: _ = try poll(events: Int16(POLLIN), timeoutMilliseconds: -1)
            case .failure(let e): throw e
            }
        }
    }

    private func waitWritable(until deadline: Int64?) throws(Errno) {
        let left = deadline.map { $0 - monotonicMilliseconds() }
        if let left, left <= 0 { throw .timedOut }
        let ev = try poll(events: Int16(POLLOUT), timeoutMilliseconds: Int32(clamping: min(left ?? 1000, 1000)))
        if ev & Int16(POLLERR | POLLHUP | POLLNVAL) != 0 && ev & Int16(POLLOUT) == 0 { throw Errno(EPIPE) }
    }

    /// Waits for `events`; returns the returned events (0 on timeout).
    public func poll(events: Int16, timeoutMilliseconds: Int32) throws(Errno) -> Int16 {
        var p = pollfd(fd: rawValue, events: events, revents: 0)
        // One pointer for the whole retry loop: `&p` inside the closure overlapped the caller's access.
        let r = withUnsafeMutablePointer(to: &p) { ptr in retryingOnInterrupt { Glibc.poll(ptr, 1, timeoutMilliseconds) } }
        switch r {
        case .success(let n): return n == 0 ? 0 : p.revents
        case .failure(let e): throw e
        }
    }

    public func fsync() throws(Errno) {
        if case .failure(let e) = retryingOnInterrupt({ Glibc.fsync(rawValue) }) { throw e }
    }

    public func setNonBlocking(_ on: Bool) throws(Errno) {
        let flags = fcntl(rawValue, F_GETFL)
        if flags < 0 { throw Errno.current }
        if fcntl(rawValue, F_SETFL, on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK) < 0 { throw Errno.current }
    }

    /// Size of the file behind the descriptor.
    public func size() throws(Errno) -> Int {
        var st = stat()
        if fstat(rawValue, &st) != 0 { throw Errno.current }
        return Int(st.st_size)
    }
}

extension FileDescriptor {
    public static let standardInput = FileDescriptor(rawValue: 0)
    public static let standardOutput = FileDescriptor(rawValue: 1)
    public static let standardError = FileDescriptor(rawValue: 2)
}

/// Writes a line to standard error (no stdio buffering, safe from any thread).
/// CLOCK_MONOTONIC in milliseconds, for I/O deadlines.
public func monotonicMilliseconds() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
}

public func printToStandardError(_ line: String) {
    try? FileDescriptor.standardError.writeAll(Array((line + "\n").utf8))
}
