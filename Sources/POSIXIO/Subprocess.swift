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
/// plain descriptors.
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
        var inputFD: Int32 = -1, outputFD: Int32 = 1, errorFD: Int32 = 2
        var inputEnd: FileDescriptor?, outputEnd: FileDescriptor?
        switch input {
        case .null, .standardOutput: inputFD = -1
        case .inherit: inputFD = 0
        case .descriptor(let fd): inputFD = fd.rawValue
        case .pipe:
            let p = try pipeEnds()
            inputFD = p.read.rawValue; inputEnd = p.write
            closeAfterSpawn.append(p.read); ours.append(p.write)
        }
        switch output {
        case .null, .standardOutput: outputFD = -1
        case .inherit: outputFD = 1
        case .descriptor(let fd): outputFD = fd.rawValue
        case .pipe:
            let p = try pipeEnds()
            outputFD = p.write.rawValue; outputEnd = p.read
            closeAfterSpawn.append(p.write); ours.append(p.read)
        }
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
        pid = child
        standardInput = inputEnd
        standardOutput = outputEnd
    }

    public func signal(_ number: Int32) {
        // A reaped pid may already belong to someone else: only signal a child not yet waited for.
        status.withLock { if $0 == nil { _ = kill(pid, number) } }
    }

    public func terminate() { signal(SIGTERM) }

    /// The exit status if the child has ended (reaps it), nil while it runs.
    public func poll() -> ExitStatus? { reap(blocking: false) }

    public var isRunning: Bool { poll() == nil }

    /// Blocks until the child ends.
    public func wait() -> ExitStatus { reap(blocking: true)! }

    /// SIGTERM, then SIGKILL if it is still there after `grace` seconds; waits for it either way.
    @discardableResult
    public func stop(grace: Double = 5) -> ExitStatus {
        terminate()
        let deadline = monotonicSeconds() + grace
        while monotonicSeconds() < deadline {
            if let s = poll() { return s }
            usleep(2000)
        }
        signal(SIGKILL)
        return wait()
    }

    private func reap(blocking: Bool) -> ExitStatus? {
        if let known = status.withLock({ $0 }) { return known }
        var raw: Int32 = 0
        let r = retryingOnInterrupt { waitpid(pid, &raw, blocking ? 0 : WNOHANG) }
        guard case .success(let got) = r, got == pid else {
            if case .failure(let e) = r, e.rawValue == ECHILD {
                // Another thread's waitpid got it first and is about to record the status.
                for _ in 0..<10_000 {
                    if let s = status.withLock({ $0 }) { return s }
                    usleep(100)
                }
                return .exited(-1)
            }
            return status.withLock { $0 }
        }
        // WIFEXITED / WEXITSTATUS / WTERMSIG are macros Swift does not import.
        let ended: ExitStatus = (raw & 0x7f) == 0 ? .exited((raw >> 8) & 0xff) : .signalled(raw & 0x7f)
        return status.withLock { s in
            if s == nil { s = ended }
            return s
        }
    }
}

private func monotonicSeconds() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
}
