import AgentClock
import Auth
import BootFlow
import JSONDocument
import Leases
import POSIXIO
#if canImport(Glibc)
import Glibc
#endif

public enum RunState: String, Codable, Sendable {
    case queued, waitingForDevice = "waiting_for_device", running, passed, failed, cancelled, interrupted, error
    public var isFinished: Bool { ![.queued, .waitingForDevice, .running].contains(self) }
}

/// A run as stored and as the API shows it.
public struct RunRecord: Codable, Sendable, Equatable {
    public var id: String
    public var name: String
    public var user: String
    public var state: RunState
    public var createdAt: Timestamp
    public var startedAt: Timestamp?
    public var endedAt: Timestamp?
    public var leaseId: String?
    public var ownLease: Bool
    public var currentIteration: Int?
    public var currentStage: String?
    public var repeatCount: Int
    public var iterations: [IterationResult]
    public var summary: RunSummary?
    public var message: String?
    public var captureFrom: UInt64?
    public var captureTo: UInt64?
    public var spec: JSONValue
}

/// One line of a run's live progress.
public struct RunEvent: Codable, Sendable, Equatable {
    public var type: String
    public var run: String
    public var at: Timestamp
    public var iteration: Int?
    public var stage: String?
    public var state: RunState?
    public var result: StageResult?
    public var passed: Bool?
    public var message: String?
    /// With iteration_finished: what the iteration's boot log proved booted.
    public var facts: [Fact]? = nil
}

public enum RunError: Error, Sendable {
    case notFound(String)
    case notYours(String)
    case alreadyFinished(String, RunState)
    case lease(LeaseError)
}

/// Runs boot tests on the board, one at a time, to completion whether or not anyone watches.
/// A run uses its caller's lease, or takes its own (waiting in the lease queue) and gives it back.
/// Every change of a run is written to `state_dir/runs/<id>.json` before anyone is told.
public actor RunEngine {
    private let clock: any AgentClock
    private let leases: LeaseBook
    private let devices: BootDevices
    private let directory: String?
    /// An iteration's serial log kept with the run at most this big (head and tail when longer).
    let iterationLogMaxBytes: Int64
    private let maxLeaseSeconds: Int
    private let safeState: @Sendable () async -> Void
    /// Sees every event as it is published (metrics).
    private let observer: (@Sendable (RunEvent) -> Void)?
    private var runs: [String: RunRecord] = [:]
    private var order: [String] = []
    private var tasks: [String: Task<Void, Never>] = [:]
    private var subscribers: [String: [UInt64: AsyncStream<RunEvent>.Continuation]] = [:]
    private var nextSubscriber: UInt64 = 0
    private var history: [String: [RunEvent]] = [:]
    /// The DUT does one run at a time, in submission order.
    private var deviceBusy = false
    private var deviceWaiters: [(key: UInt64, continuation: CheckedContinuation<Void, Never>)] = []
    private var nextDeviceWaiter: UInt64 = 0
    /// The lease each started run works under, so the end of that lease stops the run.
    private var runLeases: [String: String] = [:]
    /// Why a run was stopped from outside (its lease ended), for its record.
    private var abortReasons: [String: String] = [:]
    /// Runs this start found unfinished (marked interrupted): their own leases are given back.
    private var interruptedAtStart: [String] = []
    public static let keepFinished = 200
    /// How long a run may take from its last stage to its end (safe state, giving its lease back)
    /// before it is called stuck: a few seconds of work at most, so past this it is a bug, said out loud.
    private let endingBound: Duration
    private var stopping = false

    public init(clock: any AgentClock, leases: LeaseBook, devices: BootDevices, stateDirectory: String?, maxLeaseSeconds: Int,
                iterationLogMaxBytes: Int64 = 64 << 20, endingBound: Duration = .seconds(15),
                observer: (@Sendable (RunEvent) -> Void)? = nil, safeState: @escaping @Sendable () async -> Void) throws {
        self.endingBound = endingBound
        self.clock = clock; self.leases = leases; self.devices = devices; self.maxLeaseSeconds = maxLeaseSeconds
        self.iterationLogMaxBytes = iterationLogMaxBytes
        self.safeState = safeState
        self.observer = observer
        let directory = stateDirectory.map { $0 + "/runs" }
        self.directory = directory
        var restored: [RunRecord] = []
        if let directory {
            try makeDirectories(directory)
            var loaded: [RunRecord] = []
            for name in (try? listDirectory(directory)) ?? [] where name.hasSuffix(".json") {
                guard let bytes = readFile(directory + "/" + name), let r = try? JSONCoding.decode(RunRecord.self, from: bytes, keys: .snakeCase) else {
                    printToStandardError("rte-agent: ignoring unreadable run file \(directory)/\(name)")
                    continue
                }
                loaded.append(r)
            }
            loaded.sort { $0.createdAt < $1.createdAt }
            for var r in loaded {
                if !r.state.isFinished {
                    // The agent stopped under this run: say so instead of losing it.
                    r.state = .interrupted
                    r.endedAt = r.endedAt ?? clock.now()
                    r.message = "the agent stopped while this run was \(r.currentStage.map { "in stage \($0)" } ?? "waiting"); it did not finish"
                    RunEngine.store(r, in: directory)
                    interruptedAtStart.append(r.id)
                }
                restored.append(r)
            }
        }
        runs = Dictionary(uniqueKeysWithValues: restored.map { ($0.id, $0) })
        order = restored.map(\.id)
    }

    /// At start-up: a run the last agent left unfinished holds no lease any more.
    public func releaseInterruptedLeases() async {
        for id in interruptedAtStart { await leases.releaseLease(ofInterruptedRun: id) }
        interruptedAtStart = []
    }

    /// A lease ended (released, expired, broken): every run working under it stops, and this
    /// returns only when they have stopped touching the DUT, so the next holder, granted after
    /// this returns, never sees an edge from them.
    public func leaseEnded(_ lease: Lease, _ reason: LeaseEndReason) async {
        let affected = runLeases.filter { $0.value == lease.id }.map(\.key)
        for id in affected {
            abortReasons[id] = "the lease \(lease.id) was \(reason.rawValue); the run stopped before the device went to anyone else"
            tasks[id]?.cancel()
        }
        for id in affected { await tasks[id]?.value }
    }

    private nonisolated func write(_ r: RunRecord) {
        guard let directory else { return }
        RunEngine.store(r, in: directory)
    }

    private static func store(_ r: RunRecord, in directory: String) {
        do { try writeFileAtomically("\(directory)/\(r.id).json", RunEngine.encode(r)) } catch {
            printToStandardError("rte-agent: cannot persist run \(r.id): \(error)")
        }
    }

    /// The run driving the DUT now, if any.
    public var activeRun: String? { runs.values.first { $0.state == .running }?.id }

    public static func encode<T: Encodable>(_ value: T) -> [UInt8] {
        (try? JSONCoding.encode(value, keys: .snakeCase)) ?? Array("{}".utf8)
    }

    private func update(_ id: String, _ change: (inout RunRecord) -> Void) {
        guard var r = runs[id] else { return }
        change(&r)
        runs[id] = r
        write(r)
    }

    public func list() -> [RunRecord] { order.compactMap { runs[$0] }.reversed() }

    public func get(_ id: String) throws(RunError) -> RunRecord {
        guard let r = runs[id] else { throw .notFound(id) }
        return r
    }

    /// Accepts a run; it starts as soon as the device is free for it.
    public func submit(_ spec: RunSpec, user: String, leaseToken: String?) async throws(RunError) -> RunRecord {
        try await submit(spec, user: user, under: leaseToken.map { .token($0) })
    }

    /// Accepts a run under the caller's lease (`credential`: its token, or an engine identity that
    /// holds it, the rule every other change follows), or, with nil, under a lease of its own.
    public func submit(_ spec: RunSpec, user: String, under credential: LeaseCredential?) async throws(RunError) -> RunRecord {
        var callerLease: Lease?
        if let credential {
            do { callerLease = try await leases.authorize(credential) } catch { throw .lease(error) }
        } else if spec.waitSeconds == 0, await leases.isLeased() {
            let snap = await leases.snapshot
            throw .lease(.busy(snap.current, queueLength: snap.queue.count))
        }
        let id = "run-" + randomHex(bytes: 6)
        let record = RunRecord(id: id, name: spec.name, user: user, state: .queued, createdAt: clock.now(), leaseId: callerLease?.id,
                               ownLease: callerLease == nil, repeatCount: spec.repeatCount, iterations: [], spec: spec.source)
        runs[id] = record
        order.append(id)
        write(record)
        prune()
        tasks[id] = Task { await self.execute(id, spec: spec, credential: credential, user: user) }
        return record
    }

    /// Cancels a run that has not finished; the DUT is left in the safe state.
    public func cancel(_ id: String, by identity: Identity) async throws(RunError) -> RunRecord {
        guard let r = runs[id] else { throw .notFound(id) }
        guard r.user == identity.user || identity.admin else { throw .notYours(r.user) }
        guard !r.state.isFinished else { throw .alreadyFinished(id, r.state) }
        tasks[id]?.cancel()
        await tasks[id]?.value
        return runs[id]!
    }

    /// Live progress of a run: past events first, then new ones until the run ends.
    public func events(_ id: String) throws(RunError) -> AsyncStream<RunEvent> {
        guard let r = runs[id] else { throw .notFound(id) }
        let (stream, continuation) = AsyncStream<RunEvent>.makeStream()
        for e in history[id] ?? [] { continuation.yield(e) }
        if r.state.isFinished {
            if history[id]?.last?.type != "run_finished" {
                continuation.yield(RunEvent(type: "run_finished", run: id, at: r.endedAt ?? clock.now(), state: r.state,
                                            passed: r.state == .passed, message: r.message))
            }
            continuation.finish()
        } else {
            nextSubscriber += 1
            let key = nextSubscriber
            subscribers[id, default: [:]][key] = continuation
            continuation.onTermination = { [weak self] _ in Task { await self?.unsubscribe(id, key) } }
        }
        return stream
    }

    private func unsubscribe(_ id: String, _ key: UInt64) { subscribers[id]?.removeValue(forKey: key) }

    private func publish(_ e: RunEvent) {
        observer?(e)
        history[e.run, default: []].append(e)
        if history[e.run]!.count > 10_000 { history[e.run]!.removeFirst(1000) }
        for c in subscribers[e.run]?.values ?? [:].values { c.yield(e) }
        if e.type == "run_finished" {
            for c in subscribers[e.run]?.values ?? [:].values { c.finish() }
            subscribers[e.run] = nil
        }
    }

    /// Waits until every run accepted so far has finished (tests, `rte-agent run`).
    public func waitUntilFinished(_ id: String) async -> RunRecord? {
        await tasks[id]?.value
        return runs[id]
    }

    /// Where iteration `n`'s serial log is kept (nil: no state directory).
    public nonisolated func iterationLogPath(_ id: String, _ n: Int) -> String? {
        directory.map { "\($0)/\(id).iteration-\(n).log" }
    }

    /// Copies the iteration's bytes from the capture to a file of the run's, so the log stays
    /// downloadable after the capture ring (and its file log) moved on. Off the actor (it may be
    /// MBs), and done before the iteration is reported: a listed iteration has its log.
    private func keepLog(_ id: String, _ result: IterationResult) async {
        guard let path = iterationLogPath(id, result.index) else { return }
        let capture = devices.capture, max = iterationLogMaxBytes
        let from = result.captureFrom, to = result.captureTo
        await Task.detached {
            func read(_ a: UInt64, _ b: UInt64) -> [UInt8] {
                var out: [UInt8] = [], offset = a
                while offset < b {
                    switch capture.readPersisted(from: offset, limit: Int(min(b - offset, 1 << 20))) {
                    case .data(_, let chunk, let next):
                        if chunk.isEmpty { return out }
                        out += chunk; offset = next
                    case .lost(_, let resume):
                        out += Array("\n[rte-agent: \(resume - offset) bytes no longer in the capture]\n".utf8); offset = resume
                    }
                }
                return out
            }
            let bytes: [UInt8]
            if Int64(to - from) <= max { bytes = read(from, to) } else {
                let half = UInt64(max / 2)
                bytes = read(from, from + half) + Array("\n[rte-agent: \(to - from - 2 * half) bytes left out: iteration logs keep \(max) bytes]\n".utf8) + read(to - half, to)
            }
            try? writeFileAtomically(path, bytes)
        }.value
    }

    private func prune() {
        let finished = order.filter { runs[$0]?.state.isFinished ?? false }
        guard finished.count > RunEngine.keepFinished else { return }
        for id in finished.prefix(finished.count - RunEngine.keepFinished) {
            runs[id] = nil
            history[id] = nil
            order.removeAll { $0 == id }
            if let directory {
                unlink("\(directory)/\(id).json")
                for name in (try? listDirectory(directory)) ?? [] where name.hasPrefix("\(id).iteration-") { unlink("\(directory)/\(name)") }
            }
        }
    }

    private func acquireDevice() async throws(RunAborted) {
        if !deviceBusy { deviceBusy = true; return }
        nextDeviceWaiter += 1
        let key = nextDeviceWaiter
        // Cancelling a run that waits for another run's end answers at once.
        await withTaskCancellationHandler {
            await withCheckedContinuation { c in
                if Task.isCancelled { c.resume() } else { deviceWaiters.append((key, c)) }
            }
        } onCancel: {
            Task { await self.stopWaitingForDevice(key) }
        }
        if Task.isCancelled {
            // Handed the device just as it was cancelled: pass it on.
            if deviceBusyFor == key { releaseDevice() }
            throw RunAborted(reason: "cancelled before it started")
        }
    }

    /// Which waiter the device was last handed to (0: a run that found it free).
    private var deviceBusyFor: UInt64 = 0

    private func stopWaitingForDevice(_ key: UInt64) {
        guard let i = deviceWaiters.firstIndex(where: { $0.key == key }) else { return }
        deviceWaiters.remove(at: i).continuation.resume()
    }

    private func releaseDevice() {
        if deviceWaiters.isEmpty { deviceBusy = false; deviceBusyFor = 0 } else {
            let next = deviceWaiters.removeFirst()
            deviceBusyFor = next.key
            next.continuation.resume()
        }
    }

    /// The agent is stopping: runs end as interrupted (not failed or cancelled by anyone).
    public func shutdown() async {
        stopping = true
        let running = Array(tasks.values)
        for t in running { t.cancel() }
        for t in running { await t.value }
    }

    private func finish(_ id: String, _ state: RunState, message: String?) {
        // The stuck-run watchdog may have ended it already.
        guard let r = runs[id], !r.state.isFinished else { tasks[id] = nil; return }
        let (state, message) = stopping && state != .passed && state != .failed
            ? (RunState.interrupted, "the agent stopped during this run") : (state, message)
        update(id) { r in
            r.state = state
            r.endedAt = clock.now()
            r.message = message
            r.captureTo = devices.capture.endOffset
            r.currentStage = nil
            if !r.iterations.isEmpty { r.summary = RunSummary(r.iterations) }
        }
        publish(RunEvent(type: "run_finished", run: id, at: clock.now(), state: state, passed: state == .passed, message: message))
        tasks[id] = nil
    }

    private func progress(_ id: String, _ p: RunProgress) {
        switch p {
        case .stageStarted(let i, let stage):
            update(id) { $0.currentStage = stage; $0.currentIteration = i }
            publish(RunEvent(type: "stage_started", run: id, at: clock.now(), iteration: i, stage: stage))
        case .stageFinished(let i, let result):
            publish(RunEvent(type: "stage_finished", run: id, at: clock.now(), iteration: i, stage: result.name, result: result, passed: result.passed))
        case .iterationFinished(let result):
            update(id) { r in r.iterations.append(result); r.summary = RunSummary(r.iterations) }
            publish(RunEvent(type: "iteration_finished", run: id, at: clock.now(), iteration: result.index, passed: result.passed,
                             message: result.failure.map { "\($0.stage): \($0.message)" }, facts: result.facts))
        }
    }

    private func execute(_ id: String, spec: RunSpec, credential: LeaseCredential?, user: String) async {
        do {
            try await acquireDevice()
        } catch {
            finish(id, .cancelled, message: "cancelled before it started")
            return
        }
        defer { releaseDevice() }
        // The device: the caller's lease, or one of the run's own from the lease queue.
        var lease: Lease
        if let credential {
            do { lease = try await leases.authorize(credential) } catch {
                finish(id, .error, message: "the caller's lease ended before the run could start: \(error)")
                return
            }
        } else {
            update(id) { $0.state = .waitingForDevice }
            do {
                lease = try await leases.acquire(user: user, purpose: "run \(id)\(spec.name.isEmpty ? "" : " (\(spec.name))")",
                                                 ttlSeconds: maxLeaseSeconds, waitSeconds: spec.waitSeconds, run: id)
            } catch {
                finish(id, Task.isCancelled ? .cancelled : .error, message: "the device did not become free: \(error)")
                return
            }
            update(id) { $0.leaseId = lease.id }
        }
        let ownLease = credential == nil
        // The run's own lease is fresh (it carries its token); a caller's is followed by its id.
        let token = lease.token, leaseID = lease.id
        runLeases[id] = lease.id
        defer { runLeases[id] = nil; abortReasons[id] = nil }
        // A flash job of the holder's may still be writing the chip: the run waits for it.
        await devices.idle?()
        var spec = spec
        if let resolve = devices.resolve {
            do { spec = try await resolve(spec, lease.id) } catch {
                finish(id, .error, message: "the spec could not be prepared: \(error)")
                return
            }
        }
        update(id) { r in r.state = .running; r.startedAt = clock.now(); r.captureFrom = devices.capture.endOffset }
        publish(RunEvent(type: "state", run: id, at: clock.now(), state: .running))

        let (progressStream, progressSink) = AsyncStream<RunProgress>.makeStream()
        let applier = Task { for await p in progressStream { self.progress(id, p) } }
        let leases = self.leases
        let maxLease = maxLeaseSeconds
        let checkpoint: @Sendable () async throws -> Void = {
            if Task.isCancelled { throw RunAborted(reason: "cancelled") }
            do {
                // A run of its own keeps its lease fresh; a caller's lease must still be theirs. Both
                // only look: ending a lease waits for the runs under it, this one included.
                if ownLease { _ = try await leases.renewRunLease(token: token, ttlSeconds: maxLease) } else { _ = try await leases.check(leaseID: leaseID) }
            } catch {
                throw RunAborted(reason: "the lease ended (\(error)); the run stopped so nobody else's device is touched")
            }
        }
        var strategy = BootStrategy(spec: spec, devices: devices)
        strategy.user = user
        var outcome: (RunState, String?) = (.passed, nil)
        for i in 1...spec.repeatCount {
            do {
                let result = try await strategy.runIteration(i, progress: { progressSink.yield($0) }, checkpoint: checkpoint)
                await keepLog(id, result)
                progressSink.yield(.iterationFinished(result))
            } catch let abort as RunAborted {
                outcome = (abort.reason.hasPrefix("cancelled") || Task.isCancelled ? .cancelled : .error, abort.reason)
                break
            } catch {
                outcome = (.error, "\(error)")
                break
            }
        }
        progressSink.finish()
        await applier.value
        let watchdog = watchEnding(id)
        defer { watchdog.cancel() }
        if let reason = abortReasons[id] { outcome = (.error, reason) }
        if outcome.0 == .cancelled || outcome.0 == .error {
            await safeState()
        } else {
            let failed = runs[id]?.iterations.filter { !$0.passed }.count ?? 0
            outcome = failed == 0 ? (.passed, nil) : (.failed, "\(failed) of \(spec.repeatCount) iteration(s) failed")
        }
        // Done with the DUT: the end of its lease no longer waits for this run (the release below
        // ends it, from this very task).
        runLeases[id] = nil
        if ownLease { await releaseOwnLease(lease, of: id) }
        finish(id, outcome.0, message: outcome.1)
    }

    /// Gives back the lease a run took for itself, and checks that it is gone: a run that ended
    /// never leaves its lease current.
    private func releaseOwnLease(_ lease: Lease, of id: String) async {
        await leases.releaseRunLease(lease)
        if let c = await leases.snapshot.current, c.id == lease.id {
            report(id, "its lease \(c.id) was still current after the release; releasing it again")
            await leases.releaseRunLease(c)
        }
    }

    /// Watches a run whose stages have all ended: one not finished within `endingBound` is
    /// reported (log, `/metrics` through the observer, its own record) and ended as `error`,
    /// instead of staying `running` with nobody told.
    private func watchEnding(_ id: String) -> Task<Void, Never> {
        let clock = self.clock, bound = endingBound
        return Task { [weak self] in
            do { try await clock.sleep(for: bound) } catch { return }
            await self?.endStuck(id)
        }
    }

    private func endStuck(_ id: String) async {
        guard let r = runs[id], !r.state.isFinished else { return }
        let message = "the run's stages ended but the run did not end within \(Int(endingBound.milliseconds)) ms "
            + "(stuck giving the board back: a bug in rte-agent, please report it with the log)"
        report(id, message)
        // The lease goes back before the end is announced: whoever sees `run_finished` finds the
        // board free. The stuck task is abandoned first, so the lease's end does not wait for it.
        tasks[id] = nil
        runLeases[id] = nil
        if r.ownLease, let c = await leases.snapshot.current, c.run == id || c.id == r.leaseId {
            await leases.releaseRunLease(c)
        }
        finish(id, .error, message: message)
    }

    /// A fault in the engine itself: logged and counted by the observer, kept in the run's events.
    private func report(_ id: String, _ message: String) {
        if observer == nil { printToStandardError("rte-agent: run \(id): \(message)") }
        publish(RunEvent(type: "run_stuck", run: id, at: clock.now(), message: message))
    }
}
