#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// A point in wall-clock time with nanosecond resolution.
/// Leases and run records need wall time (they survive restarts); sleeping is done
/// through an `AgentClock` so tests can drive time by hand.
public struct Timestamp: Comparable, Hashable, Sendable, Codable, CustomStringConvertible {
    public var nanosecondsSinceEpoch: Int64

    public init(nanosecondsSinceEpoch: Int64) { self.nanosecondsSinceEpoch = nanosecondsSinceEpoch }
    public init(secondsSinceEpoch: Double) { self.nanosecondsSinceEpoch = Int64(secondsSinceEpoch * 1e9) }

    public var secondsSinceEpoch: Double { Double(nanosecondsSinceEpoch) / 1e9 }

    public static func < (a: Timestamp, b: Timestamp) -> Bool { a.nanosecondsSinceEpoch < b.nanosecondsSinceEpoch }
    public static func + (a: Timestamp, d: Duration) -> Timestamp {
        Timestamp(nanosecondsSinceEpoch: a.nanosecondsSinceEpoch &+ d.nanoseconds)
    }
    public static func - (a: Timestamp, d: Duration) -> Timestamp {
        Timestamp(nanosecondsSinceEpoch: a.nanosecondsSinceEpoch &- d.nanoseconds)
    }
    public static func - (a: Timestamp, b: Timestamp) -> Duration {
        .nanoseconds(a.nanosecondsSinceEpoch &- b.nanosecondsSinceEpoch)
    }

    /// RFC 3339 UTC with milliseconds, e.g. `2026-11-25T10:00:00.123Z`.
    public var iso8601: String {
        var secs = time_t(nanosecondsSinceEpoch / 1_000_000_000)
        let millis = Int((nanosecondsSinceEpoch % 1_000_000_000) / 1_000_000)
        var tm = tm()
        gmtime_r(&secs, &tm)
        func pad(_ v: Int32, _ w: Int) -> String {
            let s = String(v); return String(repeating: "0", count: max(0, w - s.count)) + s
        }
        let ms = String(millis); let msPadded = String(repeating: "0", count: 3 - ms.count) + ms
        return "\(pad(tm.tm_year + 1900, 4))-\(pad(tm.tm_mon + 1, 2))-\(pad(tm.tm_mday, 2))T"
            + "\(pad(tm.tm_hour, 2)):\(pad(tm.tm_min, 2)):\(pad(tm.tm_sec, 2)).\(msPadded)Z"
    }

    public var description: String { iso8601 }

    public init(from decoder: any Decoder) throws {
        nanosecondsSinceEpoch = try decoder.singleValueContainer().decode(Int64.self)
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer(); try c.encode(nanosecondsSinceEpoch)
    }
}

extension Duration {
    public var nanoseconds: Int64 {
        let (s, atto) = components
        return s &* 1_000_000_000 &+ atto / 1_000_000_000
    }
    public var seconds: Double { Double(nanoseconds) / 1e9 }
    public var milliseconds: Double { Double(nanoseconds) / 1e6 }
}

/// Where timeouts, presses and leases get their time. Injected everywhere a decision depends on time.
public protocol AgentClock: Sendable {
    func now() -> Timestamp
    /// Suspends until `deadline`; throws `CancellationError` when the task is cancelled.
    func sleep(until deadline: Timestamp) async throws
}

extension AgentClock {
    public func sleep(for duration: Duration) async throws {
        try await sleep(until: now() + duration)
    }
}

/// The real clock: CLOCK_REALTIME for timestamps, the Swift runtime for sleeping.
public struct SystemClock: AgentClock {
    public init() {}
    public func now() -> Timestamp {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Timestamp(nanosecondsSinceEpoch: Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec))
    }
    public func sleep(until deadline: Timestamp) async throws {
        let remaining = deadline - now()
        if remaining > .zero { try await Task.sleep(for: remaining) } else { try Task.checkCancellation() }
    }
}

/// Monotonic nanoseconds, for measuring latencies (not wall time).
public func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

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
        var sleepers: [Sleeper] = []
        var sleeperWatchers: [(count: Int, continuation: CheckedContinuation<Void, Never>)] = []
    }
    private let state: Mutex<State>

    public init(start: Timestamp = Timestamp(secondsSinceEpoch: 1_800_000_000)) {
        state = Mutex(State(now: start))
    }

    public func now() -> Timestamp { state.withLock { $0.now } }

    public var sleeperCount: Int { state.withLock { $0.sleepers.count } }

    public func sleep(until deadline: Timestamp) async throws {
        let id = state.withLock { s -> UInt64 in s.nextID += 1; return s.nextID }
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
