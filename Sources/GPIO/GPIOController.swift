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
    /// A legacy timed write will put the line back when this many ms have passed.
    public var revertInMs: Int64? = nil

    enum CodingKeys: String, CodingKey {
        case role, chip, offset, direction, active, safe, pressing
        case activeLow = "active_low"
        case compatNumber = "compat_number"
        case revertInMs = "revert_in_ms"
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
    /// Pending reverts of legacy timed writes, by role. The generation tells a timer that fired
    /// late (after a newer write replaced it) to do nothing.
    private var reverts: [String: (generation: UInt64, due: Timestamp, task: Task<Void, Never>)] = [:]
    private var revertGeneration: UInt64 = 0

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

    public func has(_ role: String) -> Bool { lines[role] != nil }
    public func config(of role: String) -> GPIOLineConfig? { lines[role]?.config }

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
        cancelRevert(role)
        try l.setValue(active)
    }

    public func direction(of role: String) throws(GPIOError) -> LineDirection { try line(role).direction }

    /// Makes the line an input, or an output at `active`. A line the config marks `input_only`
    /// is never made an output: it is wired to sense the DUT.
    public func setDirection(_ role: String, _ direction: LineDirection, active: Bool = false) throws(GPIOError) {
        let l = try line(role)
        try refuseWhilePressed(l)
        if direction == .output && l.config.inputOnly {
            throw GPIOError(kind: .inputOnly, chip: l.chipName, line: "\(l.resolvedOffset)", role: role,
                            detail: "is input_only in the config (it senses the DUT); it is never driven")
        }
        cancelRevert(role)
        if l.direction == direction {
            if direction == .output { try l.setValue(active) }
            return
        }
        try l.setDirection(direction, active: active)
    }

    /// The legacy API's timed write (RteCtrl's PATCH with `time`): `active` now, and the opposite
    /// of `active` after `duration` — not the value the line had before, so a press on a line
    /// that was already pressed still ends released. Returns at once; a later write to the line
    /// (timed or not) cancels the pending revert. The revert is skipped if the line became an input.
    public func write(_ role: String, active: Bool, revertAfter duration: Duration) throws(GPIOError) {
        try set(role, active: active)
        revertGeneration += 1
        let generation = revertGeneration
        let clock = self.clock
        let due = clock.now() + duration
        let task = Task { [weak self] in
            do { try await clock.sleep(until: due) } catch { return }
            await self?.revert(role, to: !active, generation: generation)
        }
        reverts[role] = (generation, due, task)
    }

    private func revert(_ role: String, to active: Bool, generation: UInt64) {
        guard reverts[role]?.generation == generation else { return }
        reverts[role] = nil
        guard let l = lines[role], !released, l.direction == .output else { return }
        try? l.setValue(active)
    }

    private func cancelRevert(_ role: String) {
        reverts.removeValue(forKey: role)?.task.cancel()
    }

    public func get(_ role: String) throws(GPIOError) -> Bool {
        try line(role).value()
    }

    /// Drives the line active for `duration`, then back to inactive. Cancelling the
    /// calling task still releases the button.
    public func pulse(_ role: String, for duration: Duration) async throws(GPIOError) {
        let l = try line(role)
        try refuseWhilePressed(l)
        cancelRevert(role)
        try l.setValue(true)
        pressing.insert(role)
        defer { pressing.remove(role) }
        do { try await clock.sleep(for: duration) } catch {}
        try l.setValue(false)
    }

    /// Holds a button long enough for the board to force power off (default 4 s on an apu2).
    public func longPress(_ role: String, for duration: Duration = .seconds(4)) async throws(GPIOError) {
        try await pulse(role, for: duration)
    }

    public func status() -> [GPIOLineStatus] {
        let now = clock.now()
        return order.compactMap { role in
            guard let l = lines[role] else { return nil }
            return GPIOLineStatus(
                role: role, chip: l.chipName, offset: l.resolvedOffset, direction: l.direction.rawValue,
                activeLow: l.config.activeLow, active: try? l.value(), safe: l.config.safeValue,
                compatNumber: l.config.compatNumber, pressing: pressing.contains(role),
                revertInMs: reverts[role].map { Int64(max(0, ($0.due - now).milliseconds).rounded(.up)) })
        }
    }

    /// Puts every output back to its safe value. Called on shutdown and on SIGTERM.
    /// Returns the errors of lines it could not set (it still tries all of them).
    @discardableResult
    public func restoreSafeState() -> [GPIOError] {
        var errors: [GPIOError] = []
        for role in order {
            cancelRevert(role)
            guard let l = lines[role], l.config.direction == .output else { continue }
            do {
                // A configured output the legacy API turned into an input is an output again.
                if l.direction != .output { try l.setDirection(.output, active: l.config.safeValue) }
                try l.setValue(l.config.safeValue)
            } catch { errors.append(error) }
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
