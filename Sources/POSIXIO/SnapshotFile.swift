import Synchronization

/// A file that follows the newest snapshot given to it: written atomically and durably
/// (`writeFileAtomically`) on a thread of its own, never on the caller's. Snapshots that arrive
/// while a write is under way are coalesced: a burst costs one write of the newest, so the
/// callers' fsyncs do not queue up behind each other. A caller that must not acknowledge a
/// change before it is on disk awaits `waitUntilWritten(version)`.
public final class SnapshotFile: Sendable {
    public let path: String
    private let onError: @Sendable (Errno) -> Void
    private struct State {
        var pending: (version: UInt64, bytes: [UInt8])?
        var submitted: UInt64 = 0
        var written: UInt64 = 0
        /// Whether the newest write (version `written`) reached the disk.
        var writtenOK = true
        var writing = false
        var writes = 0
        var waiters: [(version: UInt64, continuation: CheckedContinuation<Bool, Never>)] = []
    }
    private let state = Mutex(State())

    /// `onError` hears of a failed write (the snapshot counts as handled: the next one retries).
    public init(path: String, onError: @escaping @Sendable (Errno) -> Void) {
        self.path = path
        self.onError = onError
    }

    /// Queues `bytes` as the file's new content; returns its version.
    @discardableResult
    public func submit(_ bytes: [UInt8]) -> UInt64 {
        let (version, startWriter) = state.withLock { s -> (UInt64, Bool) in
            s.submitted += 1
            s.pending = (s.submitted, bytes)
            defer { s.writing = true }
            return (s.submitted, !s.writing)
        }
        if startWriter { startThread(name: "snapshot-write") { self.writeUntilIdle() } }
        return version
    }

    /// How many writes the snapshots have cost so far.
    public var writeCount: Int { state.withLock { $0.writes } }

    /// The newest version handed to `submit`.
    public var latestVersion: UInt64 { state.withLock { $0.submitted } }

    /// Returns once a snapshot at least as new as `version` has been written: true when that
    /// write reached the disk, false when it failed (the caller must not acknowledge the change).
    @discardableResult
    public func waitUntilWritten(_ version: UInt64) async -> Bool {
        await withCheckedContinuation { (c: CheckedContinuation<Bool, Never>) in
            let done = state.withLock { s -> Bool? in
                if s.written >= version { return s.writtenOK }
                s.waiters.append((version, c))
                return nil
            }
            if let done { c.resume(returning: done) }
        }
    }

    private func writeUntilIdle() {
        while true {
            let next = state.withLock { s -> (version: UInt64, bytes: [UInt8])? in
                guard let p = s.pending else { s.writing = false; return nil }
                s.pending = nil
                return p
            }
            guard let (version, bytes) = next else { return }
            var ok = true
            do { try writeFileAtomically(path, bytes) } catch { ok = false; onError(error) }
            let ready = state.withLock { s -> [CheckedContinuation<Bool, Never>] in
                s.written = version
                s.writtenOK = ok
                s.writes += 1
                let ready = s.waiters.filter { $0.version <= version }.map(\.continuation)
                s.waiters.removeAll { $0.version <= version }
                return ready
            }
            ready.forEach { $0.resume(returning: ok) }
        }
    }
}
