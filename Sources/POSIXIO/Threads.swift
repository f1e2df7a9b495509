import CPOSIXShims
#if canImport(Glibc)
import Glibc
#endif

private final class ThreadBody {
    let body: () -> Void
    let name: String
    init(_ body: @escaping () -> Void, name: String) { self.body = body; self.name = name }
}

/// Starts a detached OS thread. Used where a blocking loop must not occupy the
/// cooperative pool (serial reader, device emulators).
public func startThread(name: String, _ body: @escaping @Sendable () -> Void) {
    let box = Unmanaged.passRetained(ThreadBody(body, name: String(name.prefix(15)))).toOpaque()
    var tid = pthread_t()
    let r = pthread_create(&tid, nil, { arg in
        let b = Unmanaged<ThreadBody>.fromOpaque(arg!).takeRetainedValue()
        rte_set_current_thread_name(b.name)
        b.body()
        return nil
    }, box)
    precondition(r == 0, "pthread_create failed: \(r)")
    pthread_detach(tid)
}

/// Puts the calling thread in the SCHED_FIFO class at `priority` (1–99): a thread that must
/// answer within microseconds while other work loads the CPU. Needs CAP_SYS_NICE or an
/// RLIMIT_RTPRIO at least `priority` (systemd: LimitRTPRIO=); the error says which was missing.
public func setCurrentThreadRealtime(priority: Int32) throws(Errno) {
    var param = sched_param()
    param.sched_priority = priority
    let r = pthread_setschedparam(pthread_self(), SCHED_FIFO, &param)
    if r != 0 { throw Errno(r) }
}

/// A pipe used to wake a thread blocked in poll().
public struct WakePipe: Sendable {
    public let readEnd: FileDescriptor
    public let writeEnd: FileDescriptor

    public init() throws(Errno) {
        var fds: [Int32] = [0, 0]
        if rte_pipe_cloexec_nonblock(&fds) != 0 { throw Errno.current }
        readEnd = FileDescriptor(rawValue: fds[0]); writeEnd = FileDescriptor(rawValue: fds[1])
    }
    public func wake() { var b: UInt8 = 1; _ = Glibc.write(writeEnd.rawValue, &b, 1) }
    public func drain() {
        var buf = [UInt8](repeating: 0, count: 64)
        while Glibc.read(readEnd.rawValue, &buf, buf.count) > 0 {}
    }
    public func close() { readEnd.close(); writeEnd.close() }
}

extension FileDescriptor {
    /// poll() on several descriptors; returns each one's returned events in order (all 0 on timeout).
    public static func poll(_ entries: [(FileDescriptor, Int16)], timeoutMilliseconds: Int32) throws(Errno) -> [Int16] {
        var fds = entries.map { pollfd(fd: $0.0.rawValue, events: $0.1, revents: 0) }
        let n = fds.count
        let r = retryingOnInterrupt { fds.withUnsafeMutableBufferPointer { Glibc.poll($0.baseAddress, nfds_t(n), timeoutMilliseconds) } }
        switch r {
        case .success: return fds.map { $0.revents }
        case .failure(let e): throw e
        }
    }
}

/// Gives the heap's free pages back to the kernel (glibc's malloc_trim): after a burst of requests
/// the allocator keeps what it used, which on a 256 MB board is worth returning. A no-op elsewhere.
public func releaseFreeHeapMemory() {
    rte_release_free_heap()
}

/// Runs `work` on a thread of its own and returns its result: CPU-heavy work on a client's input
/// (parsing a spec, a multipart body) must not hold one of the cooperative pool's threads, which
/// serve every other request (two on a 2-core board).
public func onOwnThread<T: Sendable>(name: String, _ work: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { (c: CheckedContinuation<T, Never>) in
        startThread(name: name) { c.resume(returning: work()) }
    }
}
