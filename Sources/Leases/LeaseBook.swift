import AgentClock
import Auth
import FoundationEssentials
import POSIXIO

/// One holder of the device.
public struct Lease: Codable, Sendable, Equatable {
    public var id: String
    public var holder: String
    public var purpose: String
    /// Secret that authorizes changes to the DUT. Persisted (state file is 0600) so a restart keeps it valid.
    public var token: String
    public var grantedAt: Timestamp
    public var expiresAt: Timestamp
    /// Client address allowed to use the legacy (token-less) API and the TCP console as the holder.
    public var boundAddress: String?
    /// The client's idempotency key: the same request after a restart finds its lease again.
    public var requestID: String?
    /// Set when a run took this lease for itself.
    public var run: String?
}

/// A lease prints without its token (and without the client's idempotency key): lease values end
/// up in error messages, run records and logs, and whoever reads those must not get the secret.
extension Lease: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public var description: String {
        "lease \(id) of \(holder) (\(purpose)) until \(expiresAt.iso8601)" + (run.map { " for run \($0)" } ?? "")
    }
    public var debugDescription: String { description }
    public var customMirror: Mirror {
        Mirror(self, children: ["id": id, "holder": holder, "purpose": purpose, "expiresAt": expiresAt.iso8601,
                                "token": "<redacted>"], displayStyle: .struct)
    }
}

/// Someone waiting for the device.
public struct QueueEntry: Codable, Sendable, Equatable {
    public var id: String
    public var user: String
    public var purpose: String
    public var ttlSeconds: Int
    public var enqueuedAt: Timestamp
    public var waitUntil: Timestamp
}

public enum LeaseEndReason: String, Sendable, Codable { case released, expired, broken }

public enum LeaseError: Error, Sendable, Equatable {
    /// The device is held by someone else.
    case busy(Lease?, queueLength: Int)
    /// Waited `wait_s` without getting the device.
    case waitTimedOut(Lease?)
    /// A change needs the lease token of the current lease.
    case leaseRequired(current: Lease?)
    case invalidLeaseToken(current: Lease?)
    case ttlOutOfRange(max: Int)
    case notAdmin
    case noSuchLease
}

extension LeaseError: CustomStringConvertible {
    /// What went wrong, naming the holder but never a token.
    public var description: String {
        switch self {
        case .busy(let l, let n): return "the device is busy" + (l.map { ": \($0)" } ?? "") + " (\(n) waiting)"
        case .waitTimedOut(let l): return "waited without getting the device" + (l.map { "; \($0)" } ?? "")
        case .leaseRequired(let l): return "this change needs the current lease" + (l.map { " (\($0))" } ?? " and nobody holds the device")
        case .invalidLeaseToken(let l): return "the lease token is not valid" + (l.map { "; the device is held by \($0)" } ?? "; the lease ended")
        case .ttlOutOfRange(let max): return "ttl_s must be between 1 and \(max) seconds"
        case .notAdmin: return "this needs an admin token"
        case .noSuchLease: return "nobody holds the device"
        }
    }
}

/// Decides who holds the device: grants, renewals, releases, the FIFO queue, expiry.
/// Every change is written to `leases.json` atomically before it is acknowledged; the writes
/// happen off the actor, and changes that come while one is under way share the next.
public actor LeaseBook {
    struct Persisted: Codable {
        var current: Lease?
        var queue: [QueueEntry]
        var granted: Int
        var expired: Int
    }
    private let clock: any AgentClock
    private let file: SnapshotFile?
    private let maxTTLSeconds: Int
    private let maxWaitSeconds: Int
    private var current: Lease?
    private var queue: [QueueEntry] = []
    private var waiters: [String: CheckedContinuation<Result<Lease, LeaseError>, Never>] = [:]
    private var expiryTask: Task<Void, Never>?
    private var onEnd: (@Sendable (Lease, LeaseEndReason) async -> Void)?
    public private(set) var grantedCount = 0
    public private(set) var expiredCount = 0

    public init(clock: any AgentClock, stateDirectory: String?, maxTTLSeconds: Int, maxWaitSeconds: Int) throws {
        self.clock = clock
        self.maxTTLSeconds = maxTTLSeconds
        self.maxWaitSeconds = maxWaitSeconds
        let path = stateDirectory.map { "\($0)/leases.json" }
        // A failed write must not pass silently: it would lose a lease on restart.
        file = path.map { path in SnapshotFile(path: path) { printToStandardError("rte-agent: cannot persist leases to \(path): \($0)") } }
        if let path, let bytes = readFile(path) {
            let p = try JSONDecoder().decode(Persisted.self, from: Data(bytes))
            current = p.current
            queue = p.queue
            grantedCount = p.granted
            expiredCount = p.expired
        }
    }

    /// What happens when a lease ends (the configured expiry action, metrics). Also starts expiry timing.
    public func start(onEnd: @escaping @Sendable (Lease, LeaseEndReason) async -> Void) async {
        self.onEnd = onEnd
        await checkExpiry()
        scheduleExpiry()
    }

    public var snapshot: (current: Lease?, queue: [QueueEntry]) { (current, queue) }

    /// Queues the state for writing; mutators then `await written()` before they answer.
    private func persist() {
        guard let file else { return }
        let p = Persisted(current: current, queue: queue, granted: grantedCount, expired: expiredCount)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        do { file.submit(Array(try encoder.encode(p))) } catch {
            printToStandardError("rte-agent: cannot encode the leases: \(error)")
        }
    }

    /// Returns once every change made so far is on disk.
    public func written() async {
        guard let file else { return }
        await file.waitUntilWritten(file.latestVersion)
    }

    private func newLease(user: String, purpose: String, ttlSeconds: Int, requestID: String?, run: String? = nil) -> Lease {
        let now = clock.now()
        grantedCount += 1
        return Lease(id: "lease-" + randomHex(bytes: 6), holder: user, purpose: purpose, token: randomHex(bytes: 24),
                     grantedAt: now, expiresAt: now + .seconds(ttlSeconds), boundAddress: nil, requestID: requestID, run: run)
    }

    /// Takes the device. Without `waitSeconds` (or 0) it fails at once when the device is held;
    /// with it, the caller joins the FIFO queue and this call returns when granted or when the wait ends.
    public func acquire(user: String, purpose: String, ttlSeconds: Int, waitSeconds: Int = 0, requestID: String? = nil,
                        run: String? = nil) async throws(LeaseError) -> Lease {
        guard (1...maxTTLSeconds).contains(ttlSeconds) else { throw .ttlOutOfRange(max: maxTTLSeconds) }
        await checkExpiry()
        if let requestID, let c = current, c.requestID == requestID, c.holder == user { await written(); return c }
        if current == nil && queue.isEmpty {
            let lease = newLease(user: user, purpose: purpose, ttlSeconds: ttlSeconds, requestID: requestID, run: run)
            current = lease
            persist()
            scheduleExpiry()
            await written()
            return lease
        }
        guard waitSeconds > 0 else { throw .busy(current, queueLength: queue.count) }
        let wait = min(waitSeconds, maxWaitSeconds)
        let id = requestID ?? "wait-" + randomHex(bytes: 6)
        if !queue.contains(where: { $0.id == id }) {
            let now = clock.now()
            queue.append(QueueEntry(id: id, user: user, purpose: purpose, ttlSeconds: ttlSeconds, enqueuedAt: now,
                                    waitUntil: now + .seconds(wait)))
            persist()
        }
        let deadline = queue.first { $0.id == id }!.waitUntil
        let clock = self.clock
        let timer = Task { [weak self] in
            do { try await clock.sleep(until: deadline) } catch { return }
            await self?.waitEnded(id)
        }
        let result = await withCheckedContinuation { (c: CheckedContinuation<Result<Lease, LeaseError>, Never>) in
            waiters[id] = c
        }
        timer.cancel()
        await written()
        return try result.get()
    }

    private func waitEnded(_ id: String) {
        guard let c = waiters.removeValue(forKey: id) else { return }
        queue.removeAll { $0.id == id }
        persist()
        c.resume(returning: .failure(.waitTimedOut(current)))
    }

    /// Checks a lease token for a change to the DUT.
    public func authorize(token: String?) async throws(LeaseError) -> Lease {
        await checkExpiry()
        guard let token, !token.isEmpty else { throw .leaseRequired(current: current) }
        guard let c = current, constantTimeEquals(Array(c.token.utf8), Array(token.utf8)) else {
            throw .invalidLeaseToken(current: current)
        }
        return c
    }

    /// The lease bound to a client address (legacy API and TCP console have no tokens).
    public func lease(boundTo address: String) async -> Lease? {
        await checkExpiry()
        guard let c = current, let bound = c.boundAddress, bound == address else { return nil }
        return c
    }

    public func isLeased() async -> Bool { await checkExpiry(); return current != nil }

    public func renew(token: String?, ttlSeconds: Int) async throws(LeaseError) -> Lease {
        guard (1...maxTTLSeconds).contains(ttlSeconds) else { throw .ttlOutOfRange(max: maxTTLSeconds) }
        var lease = try await authorize(token: token)
        lease.expiresAt = clock.now() + .seconds(ttlSeconds)
        current = lease
        persist()
        scheduleExpiry()
        await written()
        return lease
    }

    public func bind(token: String?, address: String?) async throws(LeaseError) -> Lease {
        var lease = try await authorize(token: token)
        lease.boundAddress = address
        current = lease
        persist()
        await written()
        return lease
    }

    public func release(token: String?) async throws(LeaseError) {
        let lease = try await authorize(token: token)
        await end(lease, .released)
        await written()
    }

    /// Admin only: takes the device away from its holder.
    public func breakLease(by identity: Identity) async throws(LeaseError) -> Lease {
        guard identity.admin else { throw .notAdmin }
        await checkExpiry()
        guard let c = current else { throw .noSuchLease }
        await end(c, .broken)
        await written()
        return c
    }

    /// Releases a lease a run took for itself.
    public func releaseRunLease(_ lease: Lease) async {
        if current?.id == lease.id { await end(lease, .released) }
        await written()
    }

    private func checkExpiry() async {
        if let c = current, clock.now() >= c.expiresAt {
            expiredCount += 1
            await end(c, .expired)
        }
    }

    private func end(_ lease: Lease, _ reason: LeaseEndReason) async {
        guard current?.id == lease.id else { return }
        current = nil
        expiryTask?.cancel()
        expiryTask = nil
        persist()
        if reason != .released || lease.run == nil { await onEnd?(lease, reason) }
        grantNext()
    }

    /// Hands the device to the first in the queue still waiting.
    private func grantNext() {
        let now = clock.now()
        while current == nil, !queue.isEmpty {
            let entry = queue.removeFirst()
            if entry.waitUntil <= now { waiters.removeValue(forKey: entry.id)?.resume(returning: .failure(.waitTimedOut(nil))); continue }
            let lease = newLease(user: entry.user, purpose: entry.purpose, ttlSeconds: entry.ttlSeconds, requestID: entry.id)
            current = lease
            persist()
            scheduleExpiry()
            waiters.removeValue(forKey: entry.id)?.resume(returning: .success(lease))
        }
        persist()
    }

    private func scheduleExpiry() {
        expiryTask?.cancel()
        guard let c = current else { return }
        let clock = self.clock
        let id = c.id
        expiryTask = Task { [weak self] in
            do { try await clock.sleep(until: c.expiresAt) } catch { return }
            await self?.expireIfStill(id)
        }
    }

    private func expireIfStill(_ id: String) async {
        guard current?.id == id else { return }
        await checkExpiry()
    }
}
