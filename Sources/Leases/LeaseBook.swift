import AgentClock
import Auth
import JSONDocument
import POSIXIO
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// What a request presents to act under the current lease: the lease's token, or — for a fleet
/// engine's identity (labgrid, LAVA), whose stock clients cannot send a header — being its holder.
public enum LeaseCredential: Sendable, Equatable {
    case token(String?)
    case holder(String)
}

/// Prints without the token (credentials end up in error messages and logs).
extension LeaseCredential: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public var description: String {
        switch self {
        case .token(let t): t == nil ? "no lease token" : "a lease token"
        case .holder(let user): "the holder \(user)"
        }
    }
    public var debugDescription: String { description }
    public var customMirror: Mirror { Mirror(self, children: ["credential": description], displayStyle: .enum) }
}

/// One holder of the device.
public struct Lease: Codable, Sendable, Equatable {
    public var id: String
    public var holder: String
    public var purpose: String
    /// Secret that authorizes changes to the DUT. Held in memory only, for the answer to whoever was
    /// just granted the lease; empty for a lease read back after a restart.
    public var token: String
    /// SHA-256 (hex) of the token: what is persisted and what a presented token is checked against,
    /// so the state directory holds no secret and a restart keeps the token valid.
    public var tokenHash: String
    public var grantedAt: Timestamp
    public var expiresAt: Timestamp
    /// Client address allowed to use the legacy (token-less) API and the TCP console as the holder.
    public var boundAddress: String?
    /// The client's idempotency key: the same request after a restart finds its lease again.
    public var requestID: String?
    /// Set when a run took this lease for itself.
    public var run: String?

    init(id: String, holder: String, purpose: String, token: String, grantedAt: Timestamp, expiresAt: Timestamp,
         boundAddress: String?, requestID: String?, run: String?) {
        self.id = id; self.holder = holder; self.purpose = purpose; self.token = token; self.tokenHash = SHA256.hex(token)
        self.grantedAt = grantedAt; self.expiresAt = expiresAt; self.boundAddress = boundAddress; self.requestID = requestID
        self.run = run
    }

    enum CodingKeys: String, CodingKey {
        case id, holder, purpose, tokenHash, grantedAt, expiresAt, boundAddress, requestID, run
        case legacyToken = "token"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(String.self, forKey: .id)
        holder = try c.decode(String.self, forKey: .holder)
        purpose = try c.decode(String.self, forKey: .purpose)
        token = ""
        // Files written before tokens were hashed carry the token itself: hashed on reading, and
        // the next write drops it.
        if let hash = try c.decodeIfPresent(String.self, forKey: .tokenHash) {
            tokenHash = hash
        } else {
            tokenHash = SHA256.hex(try c.decode(String.self, forKey: .legacyToken))
        }
        grantedAt = try c.decode(Timestamp.self, forKey: .grantedAt)
        expiresAt = try c.decode(Timestamp.self, forKey: .expiresAt)
        boundAddress = try c.decodeIfPresent(String.self, forKey: .boundAddress)
        requestID = try c.decodeIfPresent(String.self, forKey: .requestID)
        run = try c.decodeIfPresent(String.self, forKey: .run)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id); try c.encode(holder, forKey: .holder); try c.encode(purpose, forKey: .purpose)
        try c.encode(tokenHash, forKey: .tokenHash); try c.encode(grantedAt, forKey: .grantedAt); try c.encode(expiresAt, forKey: .expiresAt)
        try c.encodeIfPresent(boundAddress, forKey: .boundAddress); try c.encodeIfPresent(requestID, forKey: .requestID)
        try c.encodeIfPresent(run, forKey: .run)
    }

    /// Whether `presented` is this lease's token (hashes compared in constant time).
    func accepts(_ presented: String) -> Bool {
        constantTimeEquals(Array(SHA256.hex(presented).utf8), Array(tokenHash.utf8))
    }
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
public struct QueueEntry: Codable, Sendable, Equatable, CustomStringConvertible {
    /// Random, public: what the queue listing shows.
    public var id: String
    public var user: String
    public var purpose: String
    public var ttlSeconds: Int
    public var enqueuedAt: Timestamp
    public var waitUntil: Timestamp
    /// The client's idempotency key, scoped to `user` and never shown to anyone else: whoever
    /// knows it could otherwise claim the lease this entry becomes.
    public var requestID: String? = nil
    /// The run that waits here for a lease of its own: the lease it is granted names it, so the
    /// run's end releases it as a run's (no end action) and a restart that interrupted the run
    /// gives it back.
    public var run: String? = nil

    public var description: String { "\(id) of \(user) (\(purpose)) waiting until \(waitUntil.iso8601)" }
}

public enum LeaseEndReason: String, Sendable, Codable {
    case released, expired, broken
    /// The run that took the lease did not survive an agent restart.
    case interrupted
}

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
    /// A break named a lease that is no longer the current one (it ended, someone else holds the device now).
    case notCurrent(expected: String, current: Lease?)
    /// The change could not be written to the state file, so it was not made (it would not
    /// survive a restart).
    case notDurable
    /// The caller stopped waiting (its client went away or its run was cancelled).
    case waitCancelled
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
        case .notCurrent(let expected, _): return "lease \(expected) is no longer the current one"
        case .notDurable: return "the lease state could not be written to disk; the change was not made"
        case .waitCancelled: return "stopped waiting for the device"
        }
    }
}

/// The current lease, readable without the lease book's actor: the HTTP server decides from a
/// request's headers, on its own thread and before any byte of the body, whether the caller holds
/// the board (a firmware image or an artifact is only for the holder).
public final class CurrentLease: Sendable {
    private let lease = Mutex<Lease?>(nil)
    private let clock: any AgentClock
    init(clock: any AgentClock) { self.clock = clock }
    func set(_ l: Lease?) { lease.withLock { $0 = l } }

    /// The lease while it has not expired.
    public var current: Lease? {
        let now = clock.now()
        return lease.withLock { l in l.flatMap { now < $0.expiresAt ? $0 : nil } }
    }

    /// Whether `credential` acts under the current lease (`LeaseBook.authorize` decides the same way).
    public func admits(_ credential: LeaseCredential) -> Bool {
        guard let c = current else { return false }
        switch credential {
        case .token(let t): return t.map { !$0.isEmpty && c.accepts($0) } ?? false
        case .holder(let user): return c.holder == user
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
    private var current: Lease? { didSet { currentLease.set(current) } }
    public nonisolated let currentLease: CurrentLease
    private var queue: [QueueEntry] = []
    /// Callers waiting on each queue entry. Several, when a client re-sends its request (same user,
    /// same request_id) while the first is still waiting: every one is answered exactly once.
    private var waiters: [String: [(key: UInt64, continuation: CheckedContinuation<Result<Lease, LeaseError>, Never>)]] = [:]
    private var nextWaiterKey: UInt64 = 0
    /// Between a lease's end and the next grant: the end action (power off) runs, and nobody may
    /// be granted the device before it is done.
    private var handingOver = false
    private var expiryTask: Task<Void, Never>?
    private var onEnd: (@Sendable (Lease, LeaseEndReason) async -> Void)?
    public private(set) var grantedCount = 0
    public private(set) var expiredCount = 0

    public init(clock: any AgentClock, stateDirectory: String?, maxTTLSeconds: Int, maxWaitSeconds: Int) throws {
        self.clock = clock
        currentLease = CurrentLease(clock: clock)
        self.maxTTLSeconds = maxTTLSeconds
        self.maxWaitSeconds = maxWaitSeconds
        let path = stateDirectory.map { "\($0)/leases.json" }
        // Temporary files of writes a crash interrupted: the rename never happened, so they are not state.
        if let dir = stateDirectory, let names = try? listDirectory(dir) {
            for name in names where name.hasPrefix("leases.json.tmp-") { unlink("\(dir)/\(name)") }
        }
        // A failed write must not pass silently: it would lose a lease on restart.
        file = path.map { path in SnapshotFile(path: path) { printToStandardError("rte-agent: cannot persist leases to \(path): \($0)") } }
        if let path, let bytes = readFile(path) {
            let p = try JSONCoding.decode(Persisted.self, from: bytes)
            current = p.current
            currentLease.set(p.current)  // observers do not run in an initializer
            queue = p.queue
            grantedCount = p.granted
            expiredCount = p.expired
        }
    }

    /// What happens when a lease ends (the configured expiry action, metrics). Also starts expiry timing.
    public func start(onEnd: @escaping @Sendable (Lease, LeaseEndReason) async -> Void) async {
        self.onEnd = onEnd
        await checkExpiry()
        // Nobody from before the restart is waiting any more. Entries without a request_id can never
        // be claimed again; the others are served in order (their clients re-send the request_id
        // and find the lease). A file that a crash left with a queue but no holder heals here.
        let before = queue.count
        queue.removeAll { $0.requestID == nil }
        if current == nil { grantNext() } else if queue.count != before { persist() }
        scheduleExpiry()
        await written()
    }

    public var snapshot: (current: Lease?, queue: [QueueEntry]) { (current, queue) }

    /// Queues the state for writing; mutators then `await written()` before they answer.
    private func persist() {
        guard let file else { return }
        let p = Persisted(current: current, queue: queue, granted: grantedCount, expired: expiredCount)
        do { file.submit(try JSONCoding.encode(p, pretty: true)) } catch {
            printToStandardError("rte-agent: cannot encode the leases: \(error)")
        }
    }

    /// Returns once every change made so far is on disk: true, or false when the write failed.
    @discardableResult
    public func written() async -> Bool {
        guard let file else { return true }
        return await file.waitUntilWritten(file.latestVersion)
    }

    private func newLease(user: String, purpose: String, ttlSeconds: Int, requestID: String?, run: String? = nil) -> Lease {
        let now = clock.now()
        grantedCount += 1
        return Lease(id: "lease-" + randomHex(bytes: 6), holder: user, purpose: purpose, token: randomHex(bytes: 24),
                     grantedAt: now, expiresAt: now + .seconds(ttlSeconds), boundAddress: nil, requestID: requestID, run: run)
    }

    /// Takes the device. Without `waitSeconds` (or 0) it fails at once when the device is held;
    /// with it, the caller joins the FIFO queue and this call returns when granted or when the wait ends.
    /// A `requestID` is the client's idempotency key, scoped to `user`: re-sent by the same user it
    /// finds the lease or the queue entry it made; another user's identical key is a different request.
    public func acquire(user: String, purpose: String, ttlSeconds: Int, waitSeconds: Int = 0, requestID: String? = nil,
                        run: String? = nil) async throws(LeaseError) -> Lease {
        guard (1...maxTTLSeconds).contains(ttlSeconds) else { throw .ttlOutOfRange(max: maxTTLSeconds) }
        await checkExpiry()
        if let requestID {
            if var c = current, c.requestID == requestID, c.holder == user {
                if c.token.isEmpty {
                    // Granted before a restart: only the token's hash survived, so the client that
                    // proves it made the request (same user, same key) gets a new token for the lease.
                    c.token = randomHex(bytes: 24)
                    c.tokenHash = SHA256.hex(c.token)
                    current = c
                    persist()
                }
                guard await written() else { throw .notDurable }
                return c
            }
            if let entry = queue.first(where: { $0.requestID == requestID && $0.user == user }) {
                return try await waitFor(entry)
            }
        }
        if current == nil && queue.isEmpty && !handingOver {
            let lease = newLease(user: user, purpose: purpose, ttlSeconds: ttlSeconds, requestID: requestID, run: run)
            current = lease
            persist()
            scheduleExpiry()
            guard await written() else {
                // Not on disk, so not granted: a restart would not know this lease.
                if current?.id == lease.id {
                    current = nil
                    grantedCount -= 1
                    expiryTask?.cancel()
                    expiryTask = nil
                    persist()
                    grantNext()
                }
                throw .notDurable
            }
            return lease
        }
        guard waitSeconds > 0 else { throw .busy(current, queueLength: queue.count) }
        let wait = min(waitSeconds, maxWaitSeconds)
        let now = clock.now()
        let entry = QueueEntry(id: "wait-" + randomHex(bytes: 6), user: user, purpose: purpose, ttlSeconds: ttlSeconds,
                               enqueuedAt: now, waitUntil: now + .seconds(wait), requestID: requestID, run: run)
        queue.append(entry)
        persist()
        // A queue with nobody holding the device (a crash between an end and a grant) is served now.
        if current == nil && !handingOver { grantNext() }
        return try await waitFor(entry)
    }

    /// Waits until `entry` is granted or its time is up. A cancelled caller (its client went away,
    /// its run was cancelled) stops waiting at once; an entry nobody waits on any more leaves the queue.
    private func waitFor(_ entry: QueueEntry) async throws(LeaseError) -> Lease {
        let id = entry.id
        let clock = self.clock
        let timer = Task { [weak self] in
            do { try await clock.sleep(until: entry.waitUntil) } catch { return }
            await self?.waitEnded(id)
        }
        nextWaiterKey += 1
        let key = nextWaiterKey
        let result = await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Result<Lease, LeaseError>, Never>) in
                // Granted, dropped or cancelled while this caller was getting here: answer at once.
                if Task.isCancelled {
                    c.resume(returning: .failure(.waitCancelled))
                } else if queue.contains(where: { $0.id == id }) {
                    waiters[id, default: []].append((key, c))
                } else if let lease = current, lease.requestID != nil, lease.requestID == entry.requestID, lease.holder == entry.user {
                    c.resume(returning: .success(lease))
                } else {
                    c.resume(returning: .failure(.waitTimedOut(current)))
                }
            }
        } onCancel: {
            Task { await self.waitCancelled(id, key: key) }
        }
        timer.cancel()
        if Task.isCancelled, queue.contains(where: { $0.id == id }), waiters[id]?.isEmpty ?? true {
            queue.removeAll { $0.id == id }
            persist()
        }
        let durable = await written()
        let lease = try result.get()
        if Task.isCancelled {
            // Granted in the instant its caller went away: nobody would hold it, so it is handed on.
            if current?.id == lease.id { await end(lease, .released); await written() }
            throw .waitCancelled
        }
        guard durable else {
            if current?.id == lease.id { await end(lease, .released) }
            throw .notDurable
        }
        return lease
    }

    private func waitCancelled(_ id: String, key: UInt64) {
        guard let i = waiters[id]?.firstIndex(where: { $0.key == key }) else { return }
        let c = waiters[id]!.remove(at: i).continuation
        if waiters[id]!.isEmpty {
            waiters[id] = nil
            queue.removeAll { $0.id == id }
            persist()
        }
        c.resume(returning: .failure(.waitCancelled))
    }

    private func waitEnded(_ id: String) {
        guard queue.contains(where: { $0.id == id }) else { return }
        queue.removeAll { $0.id == id }
        persist()
        for w in waiters.removeValue(forKey: id) ?? [] { w.continuation.resume(returning: .failure(.waitTimedOut(current))) }
    }

    /// Checks a lease token for a change to the DUT.
    public func authorize(token: String?) async throws(LeaseError) -> Lease {
        try await authorize(.token(token))
    }

    /// Checks what a request presents for a change to the DUT: a lease token, or (a fleet
    /// engine's identity) being the current lease's holder.
    public func authorize(_ credential: LeaseCredential) async throws(LeaseError) -> Lease {
        await checkExpiry()
        switch credential {
        case .token(let token):
            guard let token, !token.isEmpty else { throw .leaseRequired(current: current) }
            guard let c = current, c.accepts(token) else {
                throw .invalidLeaseToken(current: current)
            }
            return c
        case .holder(let user):
            guard let c = current, c.holder == user else { throw .leaseRequired(current: current) }
            return c
        }
    }

    /// The lease bound to a client address (legacy API and TCP console have no tokens).
    public func lease(boundTo address: String) async -> Lease? {
        await checkExpiry()
        guard let c = current, let bound = c.boundAddress, bound == address else { return nil }
        return c
    }

    public func isLeased() async -> Bool { await checkExpiry(); return current != nil }

    /// A run's check between stages that its lease is still the current one. It never ends a
    /// lease itself: ending one waits for the runs under it to stop, and the caller is such a
    /// run (it would wait for itself). A lease past its expiry is refused here and ended by its
    /// timer, which then waits for the run to stop.
    public func check(token: String) throws(LeaseError) -> Lease {
        guard let c = current, c.accepts(token) else { throw .invalidLeaseToken(current: current) }
        guard clock.now() < c.expiresAt else { throw .invalidLeaseToken(current: nil) }
        return c
    }

    /// The same look for a run under its caller's lease, which may have been presented without a
    /// token (an engine identity acting as the holder): that very lease must still be current.
    public func check(leaseID: String) throws(LeaseError) -> Lease {
        guard let c = current, c.id == leaseID, clock.now() < c.expiresAt else { throw .invalidLeaseToken(current: current) }
        return c
    }

    /// A run's renewal of the lease it took for itself; like `check`, it never ends a lease.
    public func renewRunLease(token: String, ttlSeconds: Int) async throws(LeaseError) -> Lease {
        guard (1...maxTTLSeconds).contains(ttlSeconds) else { throw .ttlOutOfRange(max: maxTTLSeconds) }
        return try await extend(try check(token: token), by: ttlSeconds)
    }

    /// The current lease `before`, now expiring `ttlSeconds` from now, on disk before it is returned.
    private func extend(_ before: Lease, by ttlSeconds: Int) async throws(LeaseError) -> Lease {
        var lease = before
        lease.expiresAt = clock.now() + .seconds(ttlSeconds)
        current = lease
        persist()
        scheduleExpiry()
        try await durableOrUndo(lease, back: before)
        return lease
    }

    public func renew(token: String?, ttlSeconds: Int) async throws(LeaseError) -> Lease {
        try await renew(.token(token), ttlSeconds: ttlSeconds)
    }

    public func renew(_ credential: LeaseCredential, ttlSeconds: Int) async throws(LeaseError) -> Lease {
        guard (1...maxTTLSeconds).contains(ttlSeconds) else { throw .ttlOutOfRange(max: maxTTLSeconds) }
        return try await extend(try await authorize(credential), by: ttlSeconds)
    }

    public func bind(token: String?, address: String?) async throws(LeaseError) -> Lease {
        try await bind(.token(token), address: address)
    }

    public func bind(_ credential: LeaseCredential, address: String?) async throws(LeaseError) -> Lease {
        let before = try await authorize(credential)
        var lease = before
        lease.boundAddress = address
        current = lease
        persist()
        try await durableOrUndo(lease, back: before)
        return lease
    }

    /// A change to the current lease that did not reach the disk is taken back (if nothing changed
    /// it since) and answered as not made.
    private func durableOrUndo(_ changed: Lease, back previous: Lease) async throws(LeaseError) {
        guard await written() else {
            if current == changed {
                current = previous
                persist()
                scheduleExpiry()
            }
            throw .notDurable
        }
    }

    public func release(token: String?) async throws(LeaseError) {
        try await release(.token(token))
    }

    public func release(_ credential: LeaseCredential) async throws(LeaseError) {
        let lease = try await authorize(credential)
        await end(lease, .released)
        guard await written() else {
            // Still on disk as held: held it stays, unless the device already went to someone else.
            if current == nil && !handingOver {
                current = lease
                persist()
                scheduleExpiry()
            }
            throw .notDurable
        }
    }

    /// Admin only: takes the device away from its holder. With nobody holding it, it serves a
    /// queue a crash left without a holder (and still answers that there was no lease).
    /// Ends the current lease for an admin. With `expected`, only if that lease is still the
    /// current one: an admin who looked at lease A must not break B, granted in between.
    public func breakLease(by identity: Identity, expected: String? = nil) async throws(LeaseError) -> Lease {
        guard identity.admin else { throw .notAdmin }
        await checkExpiry()
        if let expected, current?.id != expected { throw .notCurrent(expected: expected, current: current) }
        guard let c = current else {
            if !queue.isEmpty && !handingOver {
                // Entries nobody in this process waits on were left by a crash: nobody will answer them.
                queue.removeAll { waiters[$0.id] == nil }
                grantNext()
                await written()
            }
            throw .noSuchLease
        }
        await end(c, .broken)
        guard await written() else { throw .notDurable }
        return c
    }

    /// Releases a lease a run took for itself.
    public func releaseRunLease(_ lease: Lease) async {
        if current?.id == lease.id { await end(lease, .released) }
        await written()
    }

    /// At start-up: the lease a run took for itself, when that run did not survive the restart.
    public func releaseLease(ofInterruptedRun run: String) async {
        guard let c = current, c.run == run else { return }
        await end(c, .interrupted)
        await written()
    }

    private func checkExpiry() async {
        if let c = current, clock.now() >= c.expiresAt {
            expiredCount += 1
            await end(c, .expired)
        }
    }

    /// Ends `lease`: the end action runs (the expiry action powers the DUT off) before anyone else
    /// is granted the device, and the end and the next grant are written to disk as one change, so
    /// a crash can never leave a queue without a holder on disk from this path.
    private func end(_ lease: Lease, _ reason: LeaseEndReason) async {
        guard current?.id == lease.id, !handingOver else { return }
        current = nil
        handingOver = true
        expiryTask?.cancel()
        expiryTask = nil
        // In a task of its own: the caller may be cancelled (the expiry timer cancels itself just
        // above, a client hangs up on its release), and a cancelled sleep would cut the end
        // action short (a power-button hold released after no time at all).
        if reason != .released || lease.run == nil, let onEnd { await Task { await onEnd(lease, reason) }.value }
        handingOver = false
        grantNext()
    }

    /// Hands the device to the first in the queue still waiting (entries whose time is up are
    /// dropped on the way), then writes the state once.
    private func grantNext() {
        let now = clock.now()
        while current == nil, !handingOver, !queue.isEmpty {
            let entry = queue.removeFirst()
            if entry.waitUntil <= now {
                for w in waiters.removeValue(forKey: entry.id) ?? [] { w.continuation.resume(returning: .failure(.waitTimedOut(nil))) }
                continue
            }
            let lease = newLease(user: entry.user, purpose: entry.purpose, ttlSeconds: entry.ttlSeconds, requestID: entry.requestID,
                                 run: entry.run)
            current = lease
            scheduleExpiry()
            for w in waiters.removeValue(forKey: entry.id) ?? [] { w.continuation.resume(returning: .success(lease)) }
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
