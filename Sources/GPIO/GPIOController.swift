import Configuration
import AgentClock

/// The state of one line as the API lists it.
public struct GPIOLineStatus: Sendable, Codable, Equatable {
    public var role: String
    public var chip: String
    public var offset: Int
    public var direction: String
    public var activeLow: Bool
    /// Logical value: true = active.
    public var active: Bool?
    public var safe: Bool
    public var compatNumber: Int?
    public var pressing: Bool

    enum CodingKeys: String, CodingKey {
        case role, chip, offset, direction, active, safe, pressing
        case activeLow = "active_low"
        case compatNumber = "compat_number"
    }
}

/// Owns every requested line by role. Presses are timed with the injected clock, and a line
/// that is being pressed refuses other writes until the press ends (no tangled pulses).
public actor GPIOController {
    private var lines: [String: any GPIOLine]
    private let order: [String]
    private let clock: any AgentClock
    private var pressing: Set<String> = []
    private var released = false

    public init(lines: [any GPIOLine], clock: any AgentClock) {
        var byRole: [String: any GPIOLine] = [:]
        for l in lines { byRole[l.config.role] = l }
        self.lines = byRole
        self.order = lines.map { $0.config.role }
        self.clock = clock
    }

    /// Requests `configs` from `backend` (all or nothing) and puts outputs at their initial values.
    public static func start(backend: any GPIOBackend, configs: [GPIOLineConfig], clock: any AgentClock) throws(GPIOError) -> GPIOController {
        GPIOController(lines: try backend.request(configs), clock: clock)
    }

    public var roles: [String] { order }
    public nonisolated func hasRole(_ role: String, in configs: [GPIOLineConfig]) -> Bool { configs.contains { $0.role == role } }
    public func has(_ role: String) -> Bool { lines[role] != nil }
    public func config(of role: String) -> GPIOLineConfig? { lines[role]?.config }
    public func isPressing(_ role: String) -> Bool { pressing.contains(role) }

    private func line(_ role: String) throws(GPIOError) -> any GPIOLine {
        guard let l = lines[role] else { throw GPIOError.unknownRole(role) }
        return l
    }

    private func refuseWhilePressed(_ l: any GPIOLine) throws(GPIOError) {
        if pressing.contains(l.config.role) {
            throw GPIOError(kind: .pressInProgress, chip: l.chipName, line: "\(l.resolvedOffset)", role: l.config.role,
                            detail: "a press is in progress; try again when it ends")
        }
    }

    public func set(_ role: String, active: Bool) throws(GPIOError) {
        let l = try line(role)
        try refuseWhilePressed(l)
        try l.setValue(active)
    }

    public func get(_ role: String) throws(GPIOError) -> Bool {
        try line(role).value()
    }

    /// Drives the line active for `duration`, then back to inactive. Cancelling the
    /// calling task still releases the button.
    public func pulse(_ role: String, for duration: Duration) async throws(GPIOError) {
        let l = try line(role)
        try refuseWhilePressed(l)
        try l.setValue(true)
        pressing.insert(role)
        defer { pressing.remove(role) }
        do { try await clock.sleep(for: duration) } catch {}
        try l.setValue(false)
    }

    /// Holds the line at `active` for `duration`, then puts back the value it had (the legacy
    /// RTE API's timed writes). Timed here, not by a client sleeping.
    public func hold(_ role: String, active: Bool, for duration: Duration) async throws(GPIOError) {
        let l = try line(role)
        try refuseWhilePressed(l)
        let before = try l.value()
        try l.setValue(active)
        pressing.insert(role)
        defer { pressing.remove(role) }
        do { try await clock.sleep(for: duration) } catch {}
        try l.setValue(before)
    }

    /// Holds a button long enough for the board to force power off (default 4 s on an apu2).
    public func longPress(_ role: String, for duration: Duration = .seconds(4)) async throws(GPIOError) {
        try await pulse(role, for: duration)
    }

    public func status() -> [GPIOLineStatus] {
        order.compactMap { role in
            guard let l = lines[role] else { return nil }
            return GPIOLineStatus(
                role: role, chip: l.chipName, offset: l.resolvedOffset, direction: l.config.direction.rawValue,
                activeLow: l.config.activeLow, active: try? l.value(), safe: l.config.safeValue,
                compatNumber: l.config.compatNumber, pressing: pressing.contains(role))
        }
    }

    /// Puts every output back to its safe value. Called on shutdown and on SIGTERM.
    /// Returns the errors of lines it could not set (it still tries all of them).
    @discardableResult
    public func restoreSafeState() -> [GPIOError] {
        var errors: [GPIOError] = []
        for role in order {
            guard let l = lines[role], l.config.direction == .output else { continue }
            do { try l.setValue(l.config.safeValue) } catch { errors.append(error) }
        }
        return errors
    }

    /// Safe state, then give every line back.
    public func shutdown() -> [GPIOError] {
        guard !released else { return [] }
        let errors = restoreSafeState()
        for role in order { lines[role]?.release() }
        released = true
        return errors
    }
}
