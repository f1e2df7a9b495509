import AgentClock
import Synchronization

/// A clock that only moves when a test says so. Sleepers wake exactly when `advance` passes
/// their deadline, so tests of leases and presses run instantly and deterministically.
public final class ManualClock: AgentClock {
    private struct Sleeper {
        let id: UInt64
        let deadline: Timestamp
        let continuation: CheckedContinuation<Void, any Error>
    }
    private struct State {
        var now: Timestamp
        var nextID: UInt64 = 0
        /// Every `sleep` call so far, ended or not.
        var sleepsStarted = 0
        var sleepers: [Sleeper] = []
        var sleeperWatchers: [(count: Int, continuation: CheckedContinuation<Void, Never>)] = []
    }
    private let state: Mutex<State>

    public init(start: Timestamp = Timestamp(secondsSinceEpoch: 1_800_000_000)) {
        state = Mutex(State(now: start))
    }

    public func now() -> Timestamp { state.withLock { $0.now } }

    public var sleeperCount: Int { state.withLock { $0.sleepers.count } }
    /// `sleep` calls so far: how many timers the code under test started.
    public var sleepsStarted: Int { state.withLock { $0.sleepsStarted } }

    public func sleep(until deadline: Timestamp) async throws {
        let id = state.withLock { s -> UInt64 in s.nextID += 1; s.sleepsStarted += 1; return s.nextID }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
                let (resumeNow, watchers) = state.withLock { s -> (Bool, [CheckedContinuation<Void, Never>]) in
                    if deadline <= s.now { return (true, []) }
                    if Task.isCancelled { return (true, []) }
                    s.sleepers.append(Sleeper(id: id, deadline: deadline, continuation: c))
                    let count = s.sleepers.count
                    var ready: [CheckedContinuation<Void, Never>] = []
                    s.sleeperWatchers.removeAll { w in
                        if count >= w.count { ready.append(w.continuation); return true }
                        return false
                    }
                    return (false, ready)
                }
                watchers.forEach { $0.resume() }
                if resumeNow {
                    if Task.isCancelled { c.resume(throwing: CancellationError()) } else { c.resume() }
                }
            }
        } onCancel: {
            let sleeper = state.withLock { s -> Sleeper? in
                guard let i = s.sleepers.firstIndex(where: { $0.id == id }) else { return nil }
                return s.sleepers.remove(at: i)
            }
            sleeper?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Moves time forward and wakes every sleeper whose deadline has passed, earliest first.
    public func advance(by duration: Duration) {
        let due = state.withLock { s -> [Sleeper] in
            s.now = s.now + duration
            let now = s.now
            let due = s.sleepers.filter { $0.deadline <= now }.sorted { $0.deadline < $1.deadline }
            s.sleepers.removeAll { $0.deadline <= now }
            return due
        }
        due.forEach { $0.continuation.resume() }
    }

    /// Suspends until at least `count` tasks are sleeping on this clock: the deterministic
    /// replacement for "sleep a bit and hope the other task got there".
    public func waitForSleepers(_ count: Int = 1) async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let ready = state.withLock { s -> Bool in
                if s.sleepers.count >= count { return true }
                s.sleeperWatchers.append((count, c))
                return false
            }
            if ready { c.resume() }
        }
    }
}
