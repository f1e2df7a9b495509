import Configuration
import AgentClock
import Synchronization

/// GPIO lines that live in memory: the simulated apu2's wiring and the unit tests' probe.
/// It keeps the physical level of every line and a history of changes with timestamps
/// from the injected clock, so a test can check a press lasted exactly 200 ms.
public final class InMemoryGPIOBank: GPIOBackend {
    public struct Change: Sendable, Equatable {
        public var role: String
        public var active: Bool
        public var at: Timestamp
        public init(role: String, active: Bool, at: Timestamp) { self.role = role; self.active = active; self.at = at }
    }

    private struct State {
        var active: [String: Bool] = [:]
        var held: Set<String> = []
        var history: [Change] = []
        var observers: [UInt64: @Sendable (Change) -> Void] = [:]
        var nextObserver: UInt64 = 0
        /// Roles a test wants to appear busy (held by another consumer).
        var busy: Set<String> = []
    }
    private let state = Mutex(State())
    private let clock: any AgentClock
    public let chipName: String

    public init(clock: any AgentClock, chipName: String = "sim-gpiochip0") {
        self.clock = clock
        self.chipName = chipName
    }

    public func request(_ lines: [GPIOLineConfig]) throws(GPIOError) -> [any GPIOLine] {
        let conflict: GPIOLineConfig? = state.withLock { s in
            for l in lines where s.held.contains(l.role) || s.busy.contains(l.role) { return l }
            for l in lines {
                s.held.insert(l.role)
                if l.direction == .output { s.active[l.role] = l.initialValue } else if s.active[l.role] == nil { s.active[l.role] = false }
            }
            return nil
        }
        if let c = conflict {
            throw GPIOError(kind: .busy, chip: chipName, line: "\(c.offset ?? 0)", role: c.role, detail: "Device or resource busy")
        }
        return lines.map { InMemoryLine(bank: self, config: $0) }
    }

    /// Marks a role as held by someone else, so requesting it fails like a hogged line.
    public func markBusy(_ role: String) { _ = state.withLock { $0.busy.insert(role) } }

    /// Drives an input from "outside" (the DUT's power LED, a test).
    public func drive(_ role: String, active: Bool) { record(role, active) }

    public func isActive(_ role: String) -> Bool { state.withLock { $0.active[role] ?? false } }
    public func history(of role: String? = nil) -> [Change] {
        state.withLock { s in role.map { r in s.history.filter { $0.role == r } } ?? s.history }
    }
    public func isHeld(_ role: String) -> Bool { state.withLock { $0.held.contains(role) } }

    /// Calls `observer` on every level change (from any thread). Returns a token for `removeObserver`.
    @discardableResult
    public func observe(_ observer: @escaping @Sendable (Change) -> Void) -> UInt64 {
        state.withLock { s in s.nextObserver += 1; s.observers[s.nextObserver] = observer; return s.nextObserver }
    }
    public func removeObserver(_ token: UInt64) { _ = state.withLock { $0.observers.removeValue(forKey: token) } }

    fileprivate func record(_ role: String, _ active: Bool) {
        let (change, observers) = state.withLock { s -> (Change?, [@Sendable (Change) -> Void]) in
            if s.active[role] == active { return (nil, []) }
            s.active[role] = active
            let c = Change(role: role, active: active, at: clock.now())
            s.history.append(c)
            return (c, Array(s.observers.values))
        }
        if let change { observers.forEach { $0(change) } }
    }

    fileprivate func release(_ role: String) { _ = state.withLock { $0.held.remove(role) } }
}

final class InMemoryLine: GPIOLine, @unchecked Sendable {
    let config: GPIOLineConfig
    private let bank: InMemoryGPIOBank
    private let released = Mutex(false)
    private let current: Mutex<LineDirection>
    var chipName: String { bank.chipName }
    var resolvedOffset: Int { config.offset ?? 0 }

    init(bank: InMemoryGPIOBank, config: GPIOLineConfig) {
        self.bank = bank; self.config = config
        current = Mutex(config.direction)
    }

    var direction: LineDirection { current.withLock { $0 } }

    func setDirection(_ direction: LineDirection, active: Bool) throws(GPIOError) {
        if released.withLock({ $0 }) { throw error(.system(9), "Bad file descriptor") }
        current.withLock { $0 = direction }
        // An input keeps whatever level the outside world puts on it.
        if direction == .output { bank.record(config.role, active) }
    }

    private func error(_ kind: GPIOError.Kind, _ detail: String) -> GPIOError {
        GPIOError(kind: kind, chip: bank.chipName, line: "\(resolvedOffset)", role: config.role, detail: detail)
    }

    func setValue(_ active: Bool) throws(GPIOError) {
        if released.withLock({ $0 }) { throw error(.system(9), "Bad file descriptor") }
        guard direction == .output else { throw error(.notAnOutput, "is an input line") }
        bank.record(config.role, active)
    }

    func value() throws(GPIOError) -> Bool {
        if released.withLock({ $0 }) { throw error(.system(9), "Bad file descriptor") }
        return bank.isActive(config.role)
    }

    func release() {
        released.withLock { $0 = true }
        bank.release(config.role)
    }
}
