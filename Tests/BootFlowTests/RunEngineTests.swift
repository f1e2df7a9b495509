import AgentClock
import Auth
import BootFlow
import Foundation
import Leases
import Power
import Runs
import Serial
import Synchronization
import Testing

/// A power controller that is always on at once (the run under test never gets past firmware).
struct InstantPower: DUTPower {
    func perform(_ action: PowerAction) async throws(PowerError) -> PowerState { action == .hardOff ? .off : .on }
    func state() async -> PowerState { .on }
    var stateSource: String { "last_action" }
}

/// Something a test opens once: waiters before and after the opening all go on.
final class Gate: Sendable {
    private let state = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))
    func wait() async {
        await withCheckedContinuation { c in
            let now = state.withLock { s -> Bool in
                if s.open { return true }
                s.waiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }
    func open() {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.open = true
            defer { s.waiters = [] }
            return s.waiters
        }
        waiters.forEach { $0.resume() }
    }
}

@Suite struct RunEngineTests {
    /// Issue 39: a run whose stages had all ended but that never ended stayed `running` with
    /// nobody told. Here the safe state after a cancel never returns: the watchdog reports the
    /// run (an event the observer counts and logs) and ends it as `error`, naming why.
    @Test func aRunStuckAfterItsLastStageIsReportedAndEnded() async throws {
        let capture = SerialCapture(capacity: 1 << 16)
        let clock = SystemClock()
        let dir = NSTemporaryDirectory() + "rte-run-engine-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let leases = try LeaseBook(clock: clock, stateDirectory: dir, maxTTLSeconds: 3600, maxWaitSeconds: 3600)
        await leases.start { _, _ in }
        let devices = BootDevices(power: InstantPower(), capture: capture, clock: clock) { _ in }
        let seen = Mutex<[String]>([])
        // What the disk says when the end is announced (the observer runs as it is published): a
        // client that sees `run_finished` and reads the lease book must find the board free.
        let leaseOnDiskAtFinish = Mutex<Bool?>(nil)
        let leaseFile = dir + "/leases.json"
        let record: @Sendable (RunEvent) -> Void = { e in
            seen.withLock { $0.append(e.type) }
            guard e.type == "run_finished" else { return }
            let persisted = FileManager.default.contents(atPath: leaseFile).flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] }
            leaseOnDiskAtFinish.withLock { $0 = persisted.map { $0["current"].map { !($0 is NSNull) } ?? false } }
        }
        let safeStateEntered = Gate(), safeStateMayReturn = Gate()
        let engine = try RunEngine(clock: clock, leases: leases, devices: devices, stateDirectory: nil, maxLeaseSeconds: 3600,
                                   endingBound: .milliseconds(200), observer: record,
                                   safeState: { safeStateEntered.open(); await safeStateMayReturn.wait() })
        let spec = try RunSpec.parse(yaml: "power: on\nfirmware: {banner: [never printed]}\ntimeouts: {firmware: 600}")
        let id = try await engine.submit(spec, user: "alice", leaseToken: nil).id
        let events = try await engine.events(id)
        var started = false
        for await e in events where e.type == "stage_started" && e.stage == "firmware" { started = true; break }
        #expect(started)
        // Cancelling waits for the run's end; the run hangs in its safe state.
        let cancel = Task { try? await engine.cancel(id, by: Identity(user: "alice", admin: false)) }
        await safeStateEntered.wait()
        var finished: RunEvent?
        for await e in try await engine.events(id) where e.type == "run_finished" { finished = e; break }
        let run = try await engine.get(id)
        #expect(run.state == .error && finished?.state == .error)
        #expect(run.message?.contains("the run's stages ended but the run did not end within 200 ms") == true, "\(run.message ?? "")")
        #expect(seen.withLock { $0.contains("run_stuck") })
        // Its own lease does not stay with a run that ended.
        #expect(await leases.snapshot.current == nil)
        #expect(leaseOnDiskAtFinish.withLock { $0 } == false, "the run's lease was still on disk when its end was announced")
        safeStateMayReturn.open()
        _ = await cancel.value
        #expect(try await engine.get(id).state == .error, "the late end does not rewrite the verdict")
    }
}
