#if canImport(Glibc)
import Glibc
#endif
import CPOSIXShims
import POSIXIO

/// Blocks SIGTERM/SIGINT in the calling thread and every thread it starts later.
/// Call first thing in main, before any other thread exists.
public func blockTerminationSignals() {
    var set = sigset_t()
    sigemptyset(&set)
    sigaddset(&set, SIGTERM)
    sigaddset(&set, SIGINT)
    pthread_sigmask(SIG_BLOCK, &set, nil)
    signal(SIGPIPE, SIG_IGN)
}

/// Suspends until SIGTERM, SIGINT or SIGHUP arrives. A C handler writes the signal to a pipe and
/// a dedicated thread reads it, so no Swift code runs in signal context.
public func waitForTerminationSignal() async {
    guard let pipe = try? WakePipe() else { return }
    _ = rte_install_termination_pipe(pipe.writeEnd.rawValue)
    // The signals were blocked so nothing could kill the daemon before the handler existed.
    var set = sigset_t()
    sigemptyset(&set)
    sigaddset(&set, SIGTERM)
    sigaddset(&set, SIGINT)
    pthread_sigmask(SIG_UNBLOCK, &set, nil)
    await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
        startThread(name: "signals") {
            while true {
                guard let ev = try? FileDescriptor.poll([(pipe.readEnd, Int16(POLLIN))], timeoutMilliseconds: -1), ev[0] != 0 else { continue }
                break
            }
            c.resume()
        }
    }
}
