import CTestShims
import POSIXIO

/// Why `withoutPidfdOpen` could not run its body.
public struct SeccompUnavailable: Error, CustomStringConvertible {
    public let errno: Int32
    public var description: String { "a seccomp filter for pidfd_open could not be set (errno \(errno))" }
}

private final class Job {
    let body: () -> Void
    init(_ body: @escaping () -> Void) { self.body = body }
}

/// Runs `body` on a thread whose kernel answers pidfd_open with ENOSYS, as Linux before 5.3 (and
/// valgrind) does: code there takes its no-pidfd path for real, and the rest of the test process
/// keeps its pidfds.
public func withoutPidfdOpen<T>(_ body: () throws -> T) throws -> T {
    var result: Result<T, any Error>?
    let status = withoutActuallyEscaping(body) { body -> Int32 in
        let job = Job { result = Result { try body() } }
        // The thread is joined before this returns, so the job outlives every use of it.
        return withExtendedLifetime(job) {
            rte_test_without_pidfd_open({ context in
                Unmanaged<Job>.fromOpaque(context!).takeUnretainedValue().body()
            }, Unmanaged.passUnretained(job).toOpaque())
        }
    }
    guard status == 0, let result else { throw SeccompUnavailable(errno: status) }
    return try result.get()
}
