import AgentClock
import Synchronization

/// Failed authentications per client address: each is logged (address and user-agent, never the
/// token) until a burst, then the address is refused for a while (429) without its tokens being
/// checked at all, so guessing gets nowhere and the log is not flooded.
public final class FailedLogins: Sendable {
    /// This many failures within `window` lock the address out for `lockout`.
    public static let burst = 10
    public static let window: Duration = .seconds(60)
    public static let lockout: Duration = .seconds(60)
    /// Addresses remembered at most (a spray from many addresses forgets the oldest first).
    static let maxAddresses = 1024

    struct Record { var failures: [Timestamp] = []; var lockedUntil: Timestamp?; var lastSeen: Timestamp }
    private let records = Mutex<[String: Record]>([:])
    private let clock: any AgentClock

    public init(clock: any AgentClock) { self.clock = clock }

    /// When the address may try again, if it is locked out now.
    public func lockedUntil(_ address: String) -> Timestamp? {
        let now = clock.now()
        return records.withLock { r in r[address]?.lockedUntil.flatMap { $0 > now ? $0 : nil } }
    }

    /// Counts a failure; returns the line to log (a locked-out address is refused before its
    /// token is checked, so it records nothing).
    public func record(_ address: String, userAgent: String?, reason: String) -> String {
        let now = clock.now()
        return records.withLock { r -> String in
            if r[address] == nil, r.count >= FailedLogins.maxAddresses,
               let oldest = r.min(by: { $0.value.lastSeen < $1.value.lastSeen })?.key {
                r[oldest] = nil
            }
            var rec = r[address] ?? Record(lastSeen: now)
            rec.lastSeen = now
            rec.failures = rec.failures.filter { now - $0 < FailedLogins.window } + [now]
            let agent = userAgent.map { " (user-agent \(String($0.prefix(120)).debugDescription))" } ?? ""
            var line = "authentication failed from \(address)\(agent): \(reason)"
            if rec.failures.count >= FailedLogins.burst {
                rec.lockedUntil = now + FailedLogins.lockout
                rec.failures = []
                line = "authentication failed \(FailedLogins.burst) times in \(Int(FailedLogins.window.seconds)) s from \(address)\(agent): "
                    + "refusing it for \(Int(FailedLogins.lockout.seconds)) s"
            }
            r[address] = rec
            return line
        }
    }
}
