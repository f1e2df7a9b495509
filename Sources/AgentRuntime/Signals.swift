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

/// SIGTERM, SIGINT and SIGHUP, caught from the moment `install` returns: a C handler writes the
/// signal to a pipe and `wait` reads it on a dedicated thread, so no Swift code runs in signal
/// context and a signal that comes during start-up is not lost (nor fatal).
public final class TerminationSignals: Sendable {
    let pipe: WakePipe

    init(pipe: WakePipe) { self.pipe = pipe }

    public static func install() -> TerminationSignals? {
        guard let pipe = try? WakePipe() else { return nil }
        guard rte_install_termination_pipe(pipe.writeEnd.rawValue) == 0 else { return nil }
        return TerminationSignals(pipe: pipe)
    }

    /// Returns when one of the signals has arrived (at once if one already did).
    public func wait() async {
        let readEnd = pipe.readEnd
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            startThread(name: "signals") {
                while true {
                    guard let ev = try? FileDescriptor.poll([(readEnd, Int16(POLLIN))], timeoutMilliseconds: -1), ev[0] != 0 else { continue }
                    break
                }
                c.resume()
            }
        }
    }
}
