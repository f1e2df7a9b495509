#if canImport(Glibc)
import Glibc
#endif

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
