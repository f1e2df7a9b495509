import AgentClock
import Configuration
import GPIO
import Power

/// One step of a flash, as reported: what it did, when, for how long, and how it ended.
public struct FlashStepRecord: Sendable, Codable, Equatable {
    public var name: String
    public var startedAt: Timestamp
    public var durationMs: Double
    public var passed: Bool
    public var detail: String
}

/// A flash that failed: the step, and what went wrong in it.
public struct FlashFailure: Error, Sendable, Codable, Equatable, CustomStringConvertible {
    public var step: String
    public var message: String
    public var lastLines: [String]
    public var description: String { "\(step): \(message)" }
}

/// What to do with the chip.
public struct FlashRequest: Sendable, Equatable {
    public var operation: FlashOperation
    /// The image to write (`write`), or where a `read` goes.
    public var file: String?
    public var verify = true
    public var layout: FlashLayout?
    public var regions: [String] = []
    /// flashrom's `-p` for this run, when it differs from the config's (a changed SPI speed).
    public var programmer: String?

    public init(operation: FlashOperation, file: String? = nil, verify: Bool = true, layout: FlashLayout? = nil, regions: [String] = []) {
        self.operation = operation; self.file = file; self.verify = verify; self.layout = layout; self.regions = regions
    }
}

/// The whole flashing sequence on the RTE as an explicit state machine (the osfv_cli order for
/// the apu2): power to S5 → SPI lines on → flashrom → SPI lines off → CMOS reset (after a write
/// or erase) → power as configured. Every step is logged and timed. Whatever fails, the SPI
/// lines go back to their safe values and the power step still runs; the error names the step.
public struct FlashSequence: Sendable {
    public enum Step: String, Sendable, CaseIterable {
        case powerToS5 = "power_s5", spiOn = "spi_on", flashrom, spiOff = "spi_off", cmosReset = "cmos_reset", powerAfter = "power_after"
    }

    public let config: FlashConfig
    public let gpio: GPIOController
    public let power: any DUTPower
    public let clock: any AgentClock
    /// Runs flashrom (off the cooperative pool); a test may put the real tool behind a wrapper.
    public let flashrom: @Sendable (FlashRequest, @escaping @Sendable (FlashromProgress) -> Void) async throws(FlashromFailure) -> FlashromReport

    public init(config: FlashConfig, gpio: GPIOController, power: any DUTPower, clock: any AgentClock,
                flashrom: @escaping @Sendable (FlashRequest, @escaping @Sendable (FlashromProgress) -> Void) async throws(FlashromFailure) -> FlashromReport) {
        self.config = config; self.gpio = gpio; self.power = power; self.clock = clock; self.flashrom = flashrom
    }

    /// The SPI lines in the order they are switched on (off in reverse).
    static let spiLines = ["spi_voltage", "spi_vcc", "spi_enable"]

    public func run(_ request: FlashRequest, onStep: @escaping @Sendable (FlashStepRecord) -> Void = { _ in },
                    onProgress: @escaping @Sendable (FlashromProgress) -> Void = { _ in }) async -> (report: FlashromReport?, steps: [FlashStepRecord], failure: FlashFailure?) {
        var steps: [FlashStepRecord] = []
        var failure: FlashFailure?
        var report: FlashromReport?

        func step(_ s: Step, _ body: () async throws -> String) async -> Bool {
            let start = clock.now()
            do {
                let detail = try await body()
                let r = FlashStepRecord(name: s.rawValue, startedAt: start, durationMs: (clock.now() - start).milliseconds, passed: true, detail: detail)
                steps.append(r); onStep(r)
                return true
            } catch {
                let f = error as? FlashFailure ?? FlashFailure(step: s.rawValue, message: "\(error)", lastLines: [])
                let r = FlashStepRecord(name: s.rawValue, startedAt: start, durationMs: (clock.now() - start).milliseconds, passed: false, detail: f.message)
                steps.append(r); onStep(r)
                if failure == nil { failure = FlashFailure(step: s.rawValue, message: f.message, lastLines: f.lastLines) }
                return false
            }
        }

        let has = await (relay: gpio.has("relay"), button: gpio.has("power_button"), cmos: gpio.has("cmos_clear"))
        for line in FlashSequence.spiLines where !(await gpio.has(line)) {
            let r = FlashStepRecord(name: Step.spiOn.rawValue, startedAt: clock.now(), durationMs: 0, passed: false,
                                    detail: "no \(line) line is configured: flashing needs spi_voltage, spi_vcc and spi_enable")
            return (nil, [r], FlashFailure(step: r.name, message: r.detail, lastLines: []))
        }
        // 1. Off with standby power: the chipset must not drive the SPI bus while the RTE does.
        var ok = await step(.powerToS5) {
            var did: [String] = []
            if has.relay, !(try await gpio.get("relay")) { try await gpio.set("relay", active: true); did.append("relay on") }
            if has.button, config.s5PressMilliseconds > 0 {
                try await gpio.longPress("power_button", for: .milliseconds(config.s5PressMilliseconds))
                did.append("power button held \(config.s5PressMilliseconds) ms")
            }
            return did.isEmpty ? "nothing to do (no relay or power button)" : did.joined(separator: ", ")
        }
        // 2. The RTE takes the bus: voltage first, then the chip's supply, then the switch.
        if ok {
            ok = await step(.spiOn) {
                try await gpio.set("spi_voltage", active: config.voltage == .v1_8)
                try await gpio.set("spi_vcc", active: true)
                try await gpio.set("spi_enable", active: true)
                return "\(config.voltage.rawValue) V, vcc on, enabled"
            }
        }
        if ok {
            ok = await step(.flashrom) {
                do {
                    let r = try await flashrom(request, onProgress)
                    report = r
                    var detail = "\(request.operation.rawValue) ok"
                    if let chip = r.chip { detail += ", chip \(chip)" + (r.chipKilobytes.map { " (\($0) kB)" } ?? "") }
                    if request.operation == .write { detail += request.verify ? (r.verified ? ", VERIFIED" : "") : ", not verified" }
                    return detail
                } catch let e as FlashromFailure {
                    throw FlashFailure(step: Step.flashrom.rawValue, message: e.reason, lastLines: e.lastLines)
                }
            }
        }
        // 3. Always: the bus back to the board, every line to its safe value on a failure.
        _ = await step(.spiOff) {
            if ok {
                for line in FlashSequence.spiLines.reversed() { try await gpio.set(line, active: false) }
                return "enable, vcc, voltage off"
            }
            let errors = await gpio.restoreSafeState()
            if let e = errors.first { throw FlashFailure(step: Step.spiOff.rawValue, message: "restoring safe line values: \(e)", lastLines: []) }
            return "every line back to its safe value"
        }
        if ok && config.cmosResetAfterWrite && has.cmos && (request.operation == .write || request.operation == .erase) {
            ok = await step(.cmosReset) {
                try await gpio.pulse("cmos_clear", for: .milliseconds(config.cmosPressMilliseconds))
                return "cmos_clear pulsed \(config.cmosPressMilliseconds) ms"
            }
        }
        _ = await step(.powerAfter) {
            switch config.powerAfter {
            case .off: return "left off"
            case .on:
                do { return "on: \(try await power.perform(.on).rawValue)" } catch {
                    throw FlashFailure(step: Step.powerAfter.rawValue, message: "powering on after flashing: \(error)", lastLines: [])
                }
            }
        }
        return (report, steps, failure)
    }
}
