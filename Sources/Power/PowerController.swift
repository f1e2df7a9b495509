import AgentClock
import Configuration
import GPIO

public enum PowerState: String, Sendable, Codable { case on, off, unknown }

public enum PowerAction: String, Sendable, Codable, CaseIterable {
    /// Apply power (relay on, plus a power-button press if the board needs one).
    case on
    /// Soft off: hold the power button (the board's forced-off press, 4 s on an apu2).
    case off
    /// Cut the supply (relay off).
    case hardOff = "hard_off"
    /// Pulse the reset button.
    case reset
    /// Hard off, wait, on.
    case cycle
    /// Short power-button press (ACPI power button: the OS shuts down or the board starts).
    case press
    /// Long power-button press.
    case longPress = "long_press"
}

public struct PowerError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable { case refused, notWired, hardware }
    public var kind: Kind
    public var detail: String
    public var description: String { detail }
    public init(kind: Kind, detail: String) { self.kind = kind; self.detail = detail }
}

/// Power for a device under test, whatever drives it (GPIO lines of an RTE, a QEMU process).
public protocol DUTPower: Sendable {
    func perform(_ action: PowerAction) async throws(PowerError) -> PowerState
    func state() async -> PowerState
    /// Where the state comes from: `power_led`, `last_action`, `process`.
    var stateSource: String { get async }
}

/// Counts of what was done, for status and metrics.
public struct PowerCounters: Sendable, Codable, Equatable {
    public var actions: [String: Int] = [:]
    public init() {}
}

/// An apu2 (or similar board) on an RTE: relay = supply, power and reset buttons through
/// open-collector outputs, optional power LED input. It refuses what makes no sense.
public actor GPIOPowerController: DUTPower {
    private let gpio: GPIOController
    private let profile: PowerProfile
    private let clock: any AgentClock
    private var lastKnown: PowerState
    private let hasRelay: Bool
    private let hasPowerButton: Bool
    private let hasResetButton: Bool
    private let hasLED: Bool
    private var busy = false
    public private(set) var counters = PowerCounters()

    public init(gpio: GPIOController, profile: PowerProfile, clock: any AgentClock) async {
        self.gpio = gpio
        self.profile = profile
        self.clock = clock
        hasRelay = await gpio.has("relay")
        hasPowerButton = await gpio.has("power_button")
        hasResetButton = await gpio.has("reset_button")
        hasLED = await gpio.has("power_led")
        if hasRelay, let relayOn = try? await gpio.get("relay") { lastKnown = relayOn ? .on : .off } else { lastKnown = .unknown }
    }

    public var stateSource: String { hasLED ? "power_led" : "last_action" }

    public func state() async -> PowerState {
        if hasLED, let led = try? await gpio.get("power_led") { return led ? .on : .off }
        if hasRelay, let relay = try? await gpio.get("relay"), !relay { return .off }
        return lastKnown
    }

    private func require(_ role: String, _ present: Bool, for action: PowerAction) throws(PowerError) {
        if !present { throw PowerError(kind: .notWired, detail: "cannot \(action.rawValue): no \(role) line is configured for this DUT") }
    }

    private func gpioCall(_ body: () async throws(GPIOError) -> Void) async throws(PowerError) {
        do { try await body() } catch { throw PowerError(kind: .hardware, detail: error.description) }
    }

    public func perform(_ action: PowerAction) async throws(PowerError) -> PowerState {
        guard !busy else { throw PowerError(kind: .refused, detail: "another power action is in progress; try again when it ends") }
        busy = true
        defer { busy = false }
        let before = await state()
        switch action {
        case .on:
            if before == .on { throw PowerError(kind: .refused, detail: "the DUT is already on; use reset or cycle to restart it") }
            try await powerOn()
        case .hardOff:
            try require("relay", hasRelay, for: action)
            try await gpioCall { () async throws(GPIOError) in try await gpio.set("relay", active: false) }
            lastKnown = .off
        case .off:
            if before == .off { throw PowerError(kind: .refused, detail: "the DUT is already off") }
            if hasPowerButton {
                let press = Duration.milliseconds(profile.softOffPressMilliseconds)
                try await gpioCall { () async throws(GPIOError) in try await gpio.longPress("power_button", for: press) }
            } else {
                try require("relay", hasRelay, for: action)
                try await gpioCall { () async throws(GPIOError) in try await gpio.set("relay", active: false) }
            }
            lastKnown = .off
        case .reset:
            if before == .off { throw PowerError(kind: .refused, detail: "the DUT is off; reset needs it on (use on or cycle)") }
            try require("reset_button", hasResetButton, for: action)
            let press = Duration.milliseconds(profile.resetPressMilliseconds)
            try await gpioCall { () async throws(GPIOError) in try await gpio.pulse("reset_button", for: press) }
            lastKnown = .on
        case .cycle:
            try require("relay", hasRelay, for: action)
            try await gpioCall { () async throws(GPIOError) in try await gpio.set("relay", active: false) }
            lastKnown = .off
            do { try await clock.sleep(for: .milliseconds(profile.cycleOffMilliseconds)) } catch {
                throw PowerError(kind: .refused, detail: "power cycle cancelled while off")
            }
            try await powerOn()
        case .press:
            try require("power_button", hasPowerButton, for: action)
            let press = Duration.milliseconds(profile.pressMilliseconds)
            try await gpioCall { () async throws(GPIOError) in try await gpio.pulse("power_button", for: press) }
            if before == .off { lastKnown = .on }
        case .longPress:
            try require("power_button", hasPowerButton, for: action)
            let press = Duration.milliseconds(profile.softOffPressMilliseconds)
            try await gpioCall { () async throws(GPIOError) in try await gpio.longPress("power_button", for: press) }
            lastKnown = .off
        }
        counters.actions[action.rawValue, default: 0] += 1
        // What the action did; a power LED may take a moment to follow, `state()` reads it.
        return lastKnown
    }

    private func powerOn() async throws(PowerError) {
        if hasRelay {
            try await gpioCall { () async throws(GPIOError) in try await gpio.set("relay", active: true) }
        }
        if profile.pressPowerButtonOnPowerOn || !hasRelay {
            try require("power_button", hasPowerButton, for: .on)
            if hasRelay {
                do { try await clock.sleep(for: .milliseconds(profile.settleMilliseconds)) } catch {
                    throw PowerError(kind: .refused, detail: "power on cancelled")
                }
            }
            let press = Duration.milliseconds(profile.pressMilliseconds)
            try await gpioCall { () async throws(GPIOError) in try await gpio.pulse("power_button", for: press) }
        }
        lastKnown = .on
    }
}
