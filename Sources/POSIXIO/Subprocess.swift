import CPOSIXShims
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// How a child ended.
public enum ExitStatus: Equatable, Sendable, CustomStringConvertible {
    case exited(Int32)
    case signalled(Int32)

    public var succeeded: Bool { self == .exited(0) }
    public var description: String {
        switch self {
        case .exited(let code): "exit status \(code)"
        case .signalled(let signal): "killed by signal \(signal)"
        }
    }
}

/// A child process started with posix_spawn. Unlike Foundation's `Process` it hands the child an
/// empty signal mask (a child spawned from a Swift concurrency thread would otherwise inherit
/// blocked SIGTERM and never stop), never polls a run loop while waiting, and keeps its pipes as
/// plain descriptors. Its end is waited for on a pidfd (an event, with or without a timeout);
/// reaping happens only under the status lock, so a pid is never signalled after it was reaped.
public final class Subprocess: Sendable {
    /// Where one of the child's standard streams goes.
    public enum Stream: Sendable {
        case null
        case inherit
        /// A new pipe; this side's end is `standardInput` / `standardOutput`.
        case pipe
        /// Shares the child's standard output pipe (only for standard error).
        case standardOutput
        case descriptor(FileDescriptor)
    }

    public let pid: Int32
    /// Our end of the child's standard input, with `.pipe`.
    public let standardInput: FileDescriptor?
    /// Our end of the child's standard output (and error, with `.standardOutput`), with `.pipe`.
    public let standardOutput: FileDescriptor?
    private let status = Mutex<ExitStatus?>(nil)
    /// Readable once the child has ended.
    /// A pidfd, readable once the child ends; nil where the kernel has none (Linux < 5.3, or
    /// valgrind, which does not know the call): then the end is polled for without reaping.
    private let exitEvent: FileDescriptor?

    /// Starts `arguments[0]` (searched in PATH) with the rest as its arguments.
    public init(_ arguments: [String], environment: [String: String]? = nil, directory: String? = nil,
                input: Stream = .null, output: Stream = .inherit, error: Stream = .inherit,
                newProcessGroup: Bool = false) throws(Errno) {
        precondition(!arguments.isEmpty, "Subprocess needs a program")
        var closeAfterSpawn: [FileDescriptor] = []
        defer { for fd in closeAfterSpawn { fd.close() } }
        var ours: [FileDescriptor] = []
        func pipeEnds() throws(Errno) -> (read: FileDescriptor, write: FileDescriptor) {
            var fds: [Int32] = [0, 0]
            if rte_pipe_cloexec(&fds) != 0 {
                let e = Errno.current
                for fd in ours { fd.close() }
                throw e
            }
            return (FileDescriptor(rawValue: fds[0]), FileDescriptor(rawValue: fds[1]))
        }
        /// The child's descriptor for one of its streams and, with `.pipe`, this side's end.
        func connect(_ stream: Stream, standard: Int32, childReads: Bool) throws(Errno) -> (child: Int32, ours: FileDescriptor?) {
            switch stream {
            case .null, .standardOutput: return (-1, nil)
            case .inherit: return (standard, nil)
            case .descriptor(let fd): return (fd.rawValue, nil)
            case .pipe:
                let p = try pipeEnds()
                let (childEnd, ourEnd) = childReads ? (p.read, p.write) : (p.write, p.read)
                closeAfterSpawn.append(childEnd)
                ours.append(ourEnd)
                return (childEnd.rawValue, ourEnd)
            }
        }
        let (inputFD, inputEnd) = try connect(input, standard: 0, childReads: true)
        let (outputFD, outputEnd) = try connect(output, standard: 1, childReads: false)
        let errorFD: Int32
        switch error {
        case .null, .pipe: errorFD = -1
        case .inherit: errorFD = 2
        case .standardOutput: errorFD = outputFD
        case .descriptor(let fd): errorFD = fd.rawValue
        }
        let argv = arguments.map { strdup($0) } + [nil]
        defer { for a in argv { free(a) } }
        let envp: [UnsafeMutablePointer<CChar>?]? = environment.map { $0.map { strdup("\($0.key)=\($0.value)") } + [nil] }
        defer { for e in envp ?? [] { free(e) } }
        var child: Int32 = 0
        let r: Int32 = argv.withUnsafeBufferPointer { a in
            let spawn = { (e: UnsafePointer<UnsafeMutablePointer<CChar>?>?) in
                rte_spawn(arguments[0], a.baseAddress, e, directory, inputFD, outputFD, errorFD, newProcessGroup ? 1 : 0, &child)
            }
            return envp.map { $0.withUnsafeBufferPointer { spawn($0.baseAddress) } } ?? spawn(nil)
        }
        if r != 0 {
            for fd in ours { fd.close() }
            throw Errno(r)
        }
        let pidfd = rte_pidfd_open(child)
        if pidfd < 0 && errno != ENOSYS {
            let e = Errno.current
            kill(child, SIGKILL)
            var raw: Int32 = 0
            _ = retryingOnInterrupt { waitpid(child, &raw, 0) }
            for fd in ours { fd.close() }
            throw e
        }
        pid = child
        exitEvent = pidfd >= 0 ? FileDescriptor(rawValue: pidfd) : nil
        standardInput = inputEnd
        standardOutput = outputEnd
    }

    deinit { exitEvent?.close() }

    /// True when the end is polled for (no pidfd on this kernel).
    public var pollsForExit: Bool { exitEvent == nil }

    public func signal(_ number: Int32) {
        // Reaping happens under this lock too: a pid not yet waited for is still this child's.
        status.withLock { if $0 == nil { _ = kill(pid, number) } }
    }

    public func terminate() { signal(SIGTERM) }

    /// The exit status if the child has ended (reaps it), nil while it runs.
    public func poll() -> ExitStatus? {
        status.withLock { s in
            if let s { return s }
            var raw: Int32 = 0
            switch retryingOnInterrupt({ waitpid(pid, &raw, WNOHANG) }) {
            case .success(let got) where got == pid: break
            case .failure(let e) where e.rawValue == ECHILD:
                // Reaped behind our back (a process-wide SIGCHLD reaper): ended, status unknown.
                s = .exited(-1)
                return s
            default: return nil
            }
            // WIFEXITED / WEXITSTATUS / WTERMSIG are macros Swift does not import.
            s = (raw & 0x7f) == 0 ? .exited((raw >> 8) & 0xff) : .signalled(raw & 0x7f)
            return s
        }
    }

    public var isRunning: Bool { poll() == nil }

    /// Blocks until the child ends.
    public func wait() -> ExitStatus {
        while true {
            if let s = poll() { return s }
            _ = waitForExit(timeoutMilliseconds: -1)
        }
    }

    /// SIGTERM, then SIGKILL if it is still there after `grace` seconds; waits for it either way.
    @discardableResult
    public func stop(grace: Double = 5) -> ExitStatus {
        terminate()
        if waitForExit(timeoutMilliseconds: Int32(grace * 1000)), let s = poll() { return s }
        signal(SIGKILL)
        return wait()
    }

    /// True once the child has ended (not yet reaped, perhaps), false when the time ran out.
    public func waitForExit(timeoutMilliseconds: Int32) -> Bool {
        if let exitEvent {
            return ((try? exitEvent.poll(events: Int16(POLLIN), timeoutMilliseconds: timeoutMilliseconds)) ?? 0) != 0
        }
        // No pidfd: look every 5 ms (only on kernels older than 5.3 and under valgrind).
        let deadline = timeoutMilliseconds < 0 ? Int64.max : monotonicMilliseconds() + Int64(timeoutMilliseconds)
        while true {
            let ended = status.withLock { $0 != nil } || rte_child_ended(pid) != 0
            if ended || monotonicMilliseconds() >= deadline { return ended }
            usleep(5000)
        }
    }
}
