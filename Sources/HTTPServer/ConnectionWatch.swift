import POSIXIO
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// What libmicrohttpd does not do for us, on one thread of its own:
/// - a request whose handler is still working (its connection suspended, so MHD does not poll it)
///   learns that its client hung up: the handler's task is cancelled, so a long poll such as a
///   wait in the lease queue gives up its place instead of being granted to nobody;
/// - a connection must deliver a request's headers within `headerTimeout`: MHD's own timeout is
///   idle time, which a client sending a byte every few seconds (slowloris) never reaches.
final class ConnectionWatch: Sendable {
    private struct Entry {
        var fd: Int32
        /// Set while the connection waits for request headers.
        var headersDue: Int64?
        /// Set while a suspended handler works: called once if the client hangs up.
        var onHangup: (@Sendable () -> Void)?
    }
    private struct State {
        var entries: [UInt: Entry] = [:]
        var stopped = false
        /// When the thread's current poll ends by itself (nil: never). A new header deadline wakes
        /// it only if it is earlier; a new hang-up watch never does (see `pickUpMs`).
        var sleepingUntil: Int64? = nil
    }
    private let state = Mutex(State())
    private let wake: WakePipe
    private let headerTimeoutMs: Int64
    /// The peer shut its side (Linux POLLRDHUP; Glibc's module does not export the constant).
    private static let peerHungUp: Int16 = 0x2000
    /// How soon a new hang-up watch is polled. Registering one wakes nobody (most handlers answer
    /// in microseconds and unregister first; a wake-up per request cost a quarter of the API's
    /// throughput): while connections are open the thread looks at this interval, which is what a
    /// long poll such as a lease queue wait needs. With no connection open it sleeps.
    private static let pickUpMs: Int64 = 500

    init(headerTimeoutSeconds: Int) throws(Errno) {
        headerTimeoutMs = Int64(headerTimeoutSeconds) * 1000
        wake = try WakePipe()
        startThread(name: "http-watch") { [self] in run() }
    }

    private static func now() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }

    /// A connection opened, or finished a request and may send another: its headers are due.
    func expectHeaders(_ key: UInt, fd: Int32) {
        guard fd >= 0 else { return }
        let earlier = state.withLock { s -> Bool in
            if s.stopped { return false }
            var e = s.entries[key] ?? Entry(fd: fd)
            let due = ConnectionWatch.now() + headerTimeoutMs
            e.headersDue = due
            s.entries[key] = e
            // Deadlines are all the same length, so on a busy server a new one is later than the
            // one the thread waits for: no wake-up per request.
            return s.sleepingUntil.map { due < $0 } ?? true
        }
        if earlier { wake.wake() }
    }

    func headersArrived(_ key: UInt) {
        state.withLock { s in s.entries[key]?.headersDue = nil }
    }

    /// Calls `action` once if the client of `key` hangs up before `unwatchHangup`.
    func watchHangup(_ key: UInt, fd: Int32, _ action: @escaping @Sendable () -> Void) {
        guard fd >= 0 else { return }
        // No wake-up: the thread polls at most `pickUpMs` apart while any connection is open, and
        // this one is open. Most handlers answer and unregister long before that.
        state.withLock { s in
            if s.stopped { return }
            var e = s.entries[key] ?? Entry(fd: fd)
            e.onHangup = action
            s.entries[key] = e
        }
    }

    func unwatchHangup(_ key: UInt) {
        state.withLock { s in s.entries[key]?.onHangup = nil }
    }

    /// The connection is gone (MHD closed it, or it was upgraded and is not HTTP any more).
    /// MHD calls this before it closes the socket, so a number reused later is never touched.
    func forget(_ key: UInt) {
        _ = state.withLock { $0.entries.removeValue(forKey: key) }
    }

    /// From now on nothing is cut or cancelled; the thread ends.
    func stop() {
        state.withLock { s in s.stopped = true; s.entries.removeAll() }
        wake.wake()
    }

    private func run() {
        while true {
            // Hang-up and errors only: data a client pipelines must not wake this thread.
            let (watched, timeout) = state.withLock { s -> ([(UInt, Int32)], Int32) in
                let watched = s.entries.filter { $0.value.onHangup != nil }.map { ($0.key, $0.value.fd) }
                let now = ConnectionWatch.now()
                var due = s.entries.values.compactMap(\.headersDue).min()
                // While connections are open, come back to pick up new hang-up watches.
                if !s.entries.isEmpty { due = min(due ?? .max, now + ConnectionWatch.pickUpMs) }
                s.sleepingUntil = due
                return (watched, due.map { Int32(clamping: max(0, $0 - now)) } ?? -1)
            }
            let entries = [(wake.readEnd, Int16(POLLIN))] + watched.map { (FileDescriptor(rawValue: $0.1), ConnectionWatch.peerHungUp) }
            guard let revents = try? FileDescriptor.poll(entries, timeoutMilliseconds: timeout) else { break }
            var hungUp: [@Sendable () -> Void] = []
            let stopped = state.withLock { s -> Bool in
                if s.stopped { return true }
                for (k, (key, fd)) in watched.enumerated() where revents[k + 1] != 0 {
                    // Only if the entry is still the one polled (same socket, still waiting).
                    guard let e = s.entries[key], e.fd == fd, let action = e.onHangup else { continue }
                    s.entries[key]?.onHangup = nil
                    hungUp.append(action)
                }
                // Headers overdue: end the connection; MHD sees it fail and closes it.
                let now = ConnectionWatch.now()
                for (key, e) in s.entries where (e.headersDue ?? .max) <= now {
                    shutdown(e.fd, Int32(SHUT_RDWR))
                    s.entries[key]?.headersDue = nil
                }
                return false
            }
            if stopped { break }
            if revents[0] != 0 { wake.drain() }
            hungUp.forEach { $0() }
        }
    }

    // The pipe outlives the thread (it holds this object until it ends): a late wake never
    // writes to a descriptor number that was closed and reused.
    deinit { wake.close() }
}
