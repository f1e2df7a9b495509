import AgentClock
import Configuration
import GPIO
import POSIXIO
import Power
import Serial
import SimulatedDUT
import QEMUDUT

/// Everything the agent drives, assembled from the config: GPIO lines, DUT power, the serial
/// port and its capture, and (for the demo backend) the simulated apu2 behind them.
public final class Hardware: Sendable {
    public let config: AgentConfig
    public let clock: any AgentClock
    public let gpio: GPIOController?
    public let power: any DUTPower
    public let serial: SerialPort
    public let capture: SerialCapture
    public let simulator: SimulatedAPU2?
    public let simulatedBank: InMemoryGPIOBank?
    public let machine: QEMUMachine?

    public struct StartError: Error, CustomStringConvertible {
        public var description: String
    }

    init(config: AgentConfig, clock: any AgentClock, gpio: GPIOController?, power: any DUTPower, serial: SerialPort,
         capture: SerialCapture, simulator: SimulatedAPU2?, simulatedBank: InMemoryGPIOBank?, machine: QEMUMachine?) {
        self.config = config; self.clock = clock; self.gpio = gpio; self.power = power; self.serial = serial
        self.capture = capture; self.simulator = simulator; self.simulatedBank = simulatedBank; self.machine = machine
    }

    /// Requests the lines, opens the port, starts the simulator when configured.
    /// `extraPower` lets another backend (QEMU) supply power control.
    public static func start(config: AgentConfig, clock: any AgentClock = SystemClock(),
                             powerOverride: (any DUTPower)? = nil) async throws -> Hardware {
        var config = config
        config.stateDirectory = absolutePath(config.stateDirectory)
        do { try makeDirectories(config.stateDirectory) } catch {
            throw StartError(description: "state directory \(config.stateDirectory): \(error)")
        }
        var simulator: SimulatedAPU2?
        var bank: InMemoryGPIOBank?
        let gpio: GPIOController?
        switch config.dut.backend {
        case .simulated:
            let b = InMemoryGPIOBank(clock: clock)
            bank = b
            gpio = try GPIOController.start(backend: b, configs: config.gpio.lines, clock: clock)
            let sim = try SimulatedAPU2(bank: b, config: config.simulator)
            simulator = sim
            // The agent opens the simulated board's UART by a stable path, like /dev/rte-dut-serial.
            let link = config.serial.device.hasPrefix("/") ? config.serial.device : "\(config.stateDirectory)/\(config.serial.device)"
            try replaceSymlink(link, pointingTo: sim.slavePath)
            config.serial.device = link
        case .gpio:
            gpio = try GPIOController.start(backend: LibgpiodBackend(), configs: config.gpio.lines, clock: clock)
        case .qemu:
            gpio = config.gpio.lines.isEmpty ? nil
                : try GPIOController.start(backend: InMemoryGPIOBank(clock: clock), configs: config.gpio.lines, clock: clock)
            // QEMU's serial pty changes at every start; the agent follows it through this link.
            config.serial.device = config.serial.device.hasPrefix("/") ? config.serial.device : "\(config.stateDirectory)/\(config.serial.device)"
        }
        let log = try CaptureLog(directory: "\(config.stateDirectory)/serial", maxFileBytes: config.serial.logMaxFileBytes,
                                 maxFiles: config.serial.logMaxFiles)
        let capture = SerialCapture(capacity: config.serial.ringBytes, log: log, clock: clock)
        let serial = try SerialPort(config: config.serial, capture: capture)
        serial.start()
        let power: any DUTPower
        var machine: QEMUMachine?
        if let powerOverride {
            power = powerOverride
        } else if config.dut.backend == .qemu {
            let m = QEMUMachine(config: config.qemu, stateDirectory: config.stateDirectory, serialLink: config.serial.device,
                                serial: serial, clock: clock, cycleOffMilliseconds: config.power.cycleOffMilliseconds)
            machine = m
            power = m
        } else if let gpio {
            power = await GPIOPowerController(gpio: gpio, profile: config.power, clock: clock)
        } else {
            await serial.stop()
            throw StartError(description: "\(config.sourceFile): dut.backend \(config.dut.backend.rawValue) has no power control")
        }
        return Hardware(config: config, clock: clock, gpio: gpio, power: power, serial: serial, capture: capture,
                        simulator: simulator, simulatedBank: bank, machine: machine)
    }

    /// Outputs to their safe values, simulator stopped, port closed. Safe to call twice.
    public func shutdown() async -> [String] {
        var problems: [String] = []
        if let gpio { problems += await gpio.shutdown().map { $0.description } }
        await simulator?.stop()
        await machine?.shutdown()
        await serial.stop()
        return problems
    }
}
