#if canImport(Glibc)
import Glibc
#endif
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

/// Suspends until SIGTERM or SIGINT arrives. The signals are blocked and taken with sigwait on a
/// dedicated thread, so no async-signal-unsafe code ever runs in a handler.
public func waitForTerminationSignal() async {
    var set = sigset_t()
    sigemptyset(&set)
    sigaddset(&set, SIGTERM)
    sigaddset(&set, SIGINT)
    let blocked = set
    await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
        startThread(name: "signals") {
            var s = blocked
            var signal: Int32 = 0
            sigwait(&s, &signal)
            c.resume()
        }
    }
}
