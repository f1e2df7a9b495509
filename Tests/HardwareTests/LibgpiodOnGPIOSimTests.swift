import AgentClock
@testable import Configuration
import Flashing
import Foundation
import GPIO
import Power
import Synchronization
import TestSupport
import Testing

/// Set by scripts/rig/gpio-sim-init's caller: these tests run inside the gpio-sim VM only.
let inGPIOSimVM = ProcessInfo.processInfo.environment["RTE_IN_GPIO_SIM_VM"] == "1"

/// The gpio-sim line's sysfs directory (what the "wire" sees).
func simLine(_ offset: Int) -> String {
    let platform = "/sys/devices/platform"
    let sim = (try? FileManager.default.contentsOfDirectory(atPath: platform))?.first { $0.hasPrefix("gpio-sim.") } ?? "gpio-sim.0"
    let chip = (try? FileManager.default.contentsOfDirectory(atPath: "\(platform)/\(sim)"))?.first { $0.hasPrefix("gpiochip") } ?? "gpiochip0"
    return "\(platform)/\(sim)/\(chip)/sim_gpio\(offset)"
}

func wire(_ offset: Int) -> Int {
    Int((try? String(contentsOfFile: simLine(offset) + "/value", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? -1
}

func setPull(_ offset: Int, _ pull: String) throws {
    try pull.write(toFile: simLine(offset) + "/pull", atomically: false, encoding: .utf8)
}

func rteLines(chip: String = "rte-sim") -> [GPIOLineConfig] {
    func l(_ role: String, _ offset: Int?, name: String? = nil, direction: LineDirection = .output, activeLow: Bool = false) -> GPIOLineConfig {
        GPIOLineConfig(role: role, chip: chip, offset: offset, lineName: name, direction: direction, activeLow: activeLow,
                       drive: .pushPull, bias: .asIs, safeValue: false, initialValue: false, consumer: "rte-agent-test",
                       compatNumber: nil, compatOpenCollector: false)
    }
    return [l("relay", nil, name: "relay"), l("reset_button", 8, activeLow: true), l("power_button", 9, activeLow: true),
            l("power_led", 12, direction: .input)]
}

@Suite(.serialized, .enabled(if: inGPIOSimVM, "runs inside the gpio-sim VM (scripts/rig/gpio-sim-run)"))
struct LibgpiodOnGPIOSimTests {
    @Test func linesAreRequestedByNameAndDriveTheWireWithTheirPolarity() async throws {
        // The rig says which libgpiod it built against (1.6 on bookworm, 2.x in the trixie root).
        print("gpio-sim: libgpiod \(LibgpiodBackend.libraryVersion), API \(LibgpiodBackend.apiMajor)")
        if let want = ProcessInfo.processInfo.environment["RTE_EXPECT_GPIOD_API"] {
            #expect("\(LibgpiodBackend.apiMajor)" == want, "built against the wrong libgpiod")
        }
        let gpio = try GPIOController.start(backend: LibgpiodBackend(), configs: rteLines(), clock: SystemClock())
        // Requested at their safe values: relay off (low), buttons released (active-low: high).
        #expect(wire(0) == 0 && wire(8) == 1 && wire(9) == 1)
        try await gpio.set("relay", active: true)
        try await gpio.set("power_button", active: true)
        #expect(wire(0) == 1, "relay active = high")
        #expect(wire(9) == 0, "power_button active = pulled low")
        #expect(try await gpio.get("power_button"))
        let status = await gpio.status()
        #expect(status.first { $0.role == "relay" }?.offset == 0, "found by its name")
        #expect(await gpio.restoreSafeState().isEmpty)
        #expect(wire(0) == 0 && wire(9) == 1, "safe state on the wire")
        _ = await gpio.shutdown()
    }

    @Test func pulseAndLongPressLastAsLongAsAskedOnTheWire() async throws {
        let gpio = try GPIOController.start(backend: LibgpiodBackend(), configs: rteLines(), clock: SystemClock())
        defer { Task { _ = await gpio.shutdown() } }
        for (ms, long) in [(200, false), (1000, true)] {
            // Sample the wire on its own thread and time the low (pressed) period.
            // Each edge as the interval it happened in: (last sample before it, first sample after it, new value).
            let samples = Mutex<[(UInt64, UInt64, Int)]>([])
            let stop = Mutex(false)
            let finished = DispatchSemaphore(value: 0)
            let sampler = Thread {
                var last = -1
                var fell = false
                var previous = monotonicNanoseconds()
                // Runs until told to stop and the release edge has been seen (the press is over by then).
                while !(stop.withLock({ $0 }) && fell && last == 1) {
                    let v = wire(9)
                    let t = monotonicNanoseconds()
                    if v != last { last = v; if v == 0 { fell = true }; let before = previous; samples.withLock { $0.append((before, t, v)) } }
                    previous = t
                }
                finished.signal()
            }
            sampler.start()
            if long { try await gpio.longPress("power_button", for: .milliseconds(ms)) } else { try await gpio.pulse("power_button", for: .milliseconds(ms)) }
            stop.withLock { $0 = true }
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in Thread { finished.wait(); c.resume() }.start() }
            let edges = samples.withLock { $0 }
            let fall = try #require(edges.first { $0.2 == 0 })
            let rise = try #require(edges.last { $0.2 == 1 })
            // What the wire did lies between these two bounds, however late the sampler ran (a
            // loaded one-vCPU VM can leave it unscheduled for milliseconds).
            let atLeast = Double(rise.0 - fall.1) / 1e6, atMost = Double(rise.1 - fall.0) / 1e6
            print("gpio-sim: \(long ? "long press" : "pulse") of \(ms) ms held the line low for \(String(format: "%.1f", atLeast))–\(String(format: "%.1f", atMost)) ms")
            #expect(atMost >= Double(ms) - 5 && atLeast <= Double(ms) + 100, "\(atLeast)–\(atMost) ms")
        }
    }

    @Test func missingChipUnknownLineAndBusyLineSayWhatFailed() {
        do {
            _ = try LibgpiodBackend().request(rteLines(chip: "gpiochip9"))
            Issue.record("a missing chip was accepted")
        } catch {
            #expect(error.kind == .chipNotFound && error.description.contains("gpiochip9"), "\(error)")
        }
        var unknown = rteLines()
        unknown[0].lineName = "warp_drive"
        do {
            _ = try LibgpiodBackend().request(unknown)
            Issue.record("an unknown line name was accepted")
        } catch {
            #expect(error.kind == .lineNotFound && error.description.contains("warp_drive"), "\(error)")
        }
        var busy = rteLines()
        busy.append(GPIOLineConfig(role: "spi_vcc", chip: "rte-sim", offset: 3, lineName: nil, direction: .output, activeLow: false,
                                   drive: .pushPull, bias: .asIs, safeValue: false, initialValue: false, consumer: "rte-agent-test",
                                   compatNumber: nil, compatOpenCollector: false))
        do {
            _ = try LibgpiodBackend().request(busy)
            Issue.record("a line held by the kernel was handed out")
        } catch {
            #expect(error.kind == .busy, "\(error)")
            #expect(error.description.contains("line 3 (spi_vcc)") && error.description.contains("Device or resource busy"), "\(error)")
        }
        // All or nothing: the lines requested before the failure were given back.
        #expect((try? LibgpiodBackend().request(rteLines()))?.count == 4)
    }

    @Test func thePowerLEDInputFollowsThePull() async throws {
        let gpio = try GPIOController.start(backend: LibgpiodBackend(), configs: rteLines(), clock: SystemClock())
        try setPull(12, "pull-up")
        #expect(try await gpio.get("power_led"))
        try setPull(12, "pull-down")
        #expect(try await !gpio.get("power_led"))
        do {
            try await gpio.set("power_led", active: true)
            Issue.record("an input was driven")
        } catch {
            #expect(error.kind == .notAnOutput)
        }
        _ = await gpio.shutdown()
    }

    /// The RteCtrl API's `direction` on real kernel lines: an output becomes an input (the wire
    /// then follows the pull), an input becomes an output driven at once, and the safe state turns
    /// a configured output back into one.
    @Test func directionChangesReachTheKernelLine() async throws {
        var configs = rteLines()
        configs.append(GPIOLineConfig(role: "ext1", chip: "rte-sim", offset: 14, lineName: nil, direction: .input, activeLow: false,
                                      drive: .pushPull, bias: .asIs, safeValue: false, initialValue: false, consumer: "rte-agent-test",
                                      compatNumber: 14, compatOpenCollector: false))
        var ledOnly = configs[3]
        ledOnly.inputOnly = true
        configs[3] = ledOnly
        let gpio = try GPIOController.start(backend: LibgpiodBackend(), configs: configs, clock: SystemClock())
        // Output → input: the line stops driving; the wire follows the simulated pull.
        try await gpio.set("relay", active: true)
        #expect(wire(0) == 1)
        try await gpio.setDirection("relay", .input)
        #expect(try await gpio.direction(of: "relay") == .input)
        try setPull(0, "pull-down")
        #expect(wire(0) == 0, "no longer driven")
        #expect(try await !gpio.get("relay"))
        do { try await gpio.set("relay", active: true); Issue.record("an input was driven") } catch { #expect(error.kind == .notAnOutput) }
        // Input → output, driven high at once.
        try setPull(14, "pull-down")
        try await gpio.setDirection("ext1", .output, active: true)
        #expect(wire(14) == 1)
        // input_only lines refuse.
        do { try await gpio.setDirection("power_led", .output, active: true); Issue.record("input_only driven") } catch {
            #expect(error.kind == .inputOnly)
        }
        // A timed write on the wire: active now, the opposite after the time (real clock, 300 ms).
        try await gpio.write("power_button", active: true, revertAfter: .milliseconds(300))
        #expect(wire(9) == 0, "pressed (active-low)")
        // Safe state: relay is an output again, at its safe value.
        #expect(await gpio.restoreSafeState().isEmpty)
        #expect(try await gpio.direction(of: "relay") == .output && wire(0) == 0)
        #expect(wire(9) == 1, "the safe state released the button and cancelled its timer")
        _ = await gpio.shutdown()
    }

    @Test func theDaemonRestoresSafeValuesAndGivesTheLinesBackOnSIGTERM() async throws {
        let dir = NSTemporaryDirectory() + "rte-gpio-sim-daemon"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let yaml = """
        dut: {name: apu2-gpio-sim, board: apu2, backend: gpio}
        serial: {device: /dev/null}
        gpio:
          chip: rte-sim
          lines:
            relay: {name: relay}
            reset_button: {offset: 8, active_low: true}
            power_button: {offset: 9, active_low: true}
        http: {listen: "127.0.0.1:18555"}
        state_dir: \(dir)
        auth: {enabled: false}
        """
        try yaml.write(toFile: dir + "/agent.yaml", atomically: true, encoding: .utf8)
        // Through POSIXIO.Subprocess: Foundation's Process needs a CFSocket wake-up pair, which the
        // VM's busybox system could not give it ("Could not create wakeup socket pair") — the hang.
        let p = try TestChild([builtProduct("rte-agent"), "serve", "--config", dir + "/agent.yaml"], deadlineSeconds: 60)
        #expect(await p.waitForOutput(containing: "API on http://"), "\(p.output)")
        #expect(wire(0) == 0 && wire(9) == 1, "requested at safe values")
        p.process.signal(SIGTERM)
        let (status, text) = await p.waitForEnd()
        #expect(status == .exited(0), "\(text)")
        #expect(text.contains("outputs back to their safe values"))
        #expect(text.contains("GPIO through libgpiod \(LibgpiodBackend.libraryVersion) (API \(LibgpiodBackend.apiMajor).x)"), "\(text)")
        // Given back: another program can take them now.
        #expect((try? LibgpiodBackend().request(rteLines()))?.count == 4)
    }
}

extension LibgpiodOnGPIOSimTests {
    /// Issue 19 on real kernel GPIO lines: while flashrom runs, the wire shows the SPI lines taken
    /// (read by the "flashrom" itself, a wrapper that samples gpio-sim and then runs the real one);
    /// afterwards they are released; on a failure every line is back at its safe value.
    @Test func theFlashSequenceDrivesTheSPILinesOnTheWire() async throws {
        func l(_ role: String, _ offset: Int) -> GPIOLineConfig {
            GPIOLineConfig(role: role, chip: "rte-sim", offset: offset, lineName: nil, direction: .output, activeLow: role != "relay",
                           drive: .pushPull, bias: .asIs, safeValue: false, initialValue: false, consumer: "rte-agent-test",
                           compatNumber: nil, compatOpenCollector: false)
        }
        // spi_vcc's usual offset (3) is held by the kernel in this rig: it is wired to 4 here.
        let lines = [l("relay", 0), l("spi_enable", 1), l("spi_voltage", 2), l("spi_vcc", 4), l("reset_button", 8), l("power_button", 9), l("cmos_clear", 11)]
        let gpio = try GPIOController.start(backend: LibgpiodBackend(), configs: lines, clock: SystemClock())
        defer { Task { _ = await gpio.shutdown() } }
        let dir = NSTemporaryDirectory() + "flash-\(UUID().uuidString.prefix(6))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let wrapper = dir + "/flashrom"
        try """
        #!/bin/sh
        echo "$(cat \(simLine(1))/value) $(cat \(simLine(2))/value) $(cat \(simLine(4))/value)" > \(dir)/wire-during
        exec flashrom "$@"
        """.write(toFile: wrapper, atomically: true, encoding: .utf8)
        chmod(wrapper, 0o755)
        var config = FlashConfig()
        config.flashrom = wrapper
        config.programmer = "dummy:emulate=MX25L6436,image=\(dir)/chip.bin"
        config.chip = EmulatedChip.name
        config.s5PressMilliseconds = 100
        config.cmosPressMilliseconds = 50
        let power = await GPIOPowerController(gpio: gpio, profile: PowerProfile(pressPowerButtonOnPowerOn: false, pressMilliseconds: 50,
            softOffPressMilliseconds: 100, resetPressMilliseconds: 50, cycleOffMilliseconds: 50, settleMilliseconds: 0), clock: SystemClock())
        let flasher = Flasher(config: config, gpio: gpio, power: power, clock: SystemClock(), stateDirectory: dir)
        let image = (0..<(8 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 5 &+ 1) }
        _ = try await flasher.storeImage(image, user: "vm")
        let job = try await flasher.perform(.write, user: "vm")
        #expect(job.state == .succeeded, "\(job.failure?.description ?? "")")
        // Active-low: enable and vcc pulled low while flashrom ran; 3.3 V leaves spi_voltage released.
        #expect(try String(contentsOfFile: dir + "/wire-during", encoding: .utf8) == "0 1 0\n")
        #expect(wire(1) == 1 && wire(2) == 1 && wire(4) == 1, "released after flashing")
        // Compared first: a failing #expect on megabytes spends minutes describing them.
        do { let same = FileManager.default.contents(atPath: dir + "/chip.bin").map(Array.init) == image; #expect(same) }
        // A chip that is not there: the relay (turned on for S5) goes back to its safe value too.
        var missing = config
        missing.chip = "W25Q64BV/W25Q64CV/W25Q64FV"
        let failing = Flasher(config: missing, gpio: gpio, power: power, clock: SystemClock(), stateDirectory: dir + "/2")
        _ = try await failing.storeImage(image, user: "vm")
        let failed = try await failing.perform(.write, user: "vm")
        #expect(failed.failure?.step == "flashrom")
        #expect(wire(0) == 0 && wire(1) == 1 && wire(4) == 1 && wire(11) == 1, "every line at its safe value on the wire")
        print("gpio-sim: flash write on the wire: SPI lines during flashrom \((try? String(contentsOfFile: dir + "/wire-during", encoding: .utf8))?.trimmingCharacters(in: .newlines) ?? "?"), flashrom step \(Int(job.flashromMs ?? 0)) ms")
    }
}

/// On the host: boot the gpio-sim VM and run the tests above inside it.
@Suite(.serialized, .enabled(if: !inGPIOSimVM && ProcessInfo.processInfo.environment["RTE_SKIP_RIG"] != "1", "boots the gpio-sim VM from the host; RTE_SKIP_RIG=1 skips the QEMU rigs"))
struct GPIOSimRigTests {
    @Test func theLibgpiodBackendPassesAgainstRealKernelGPIOLines() async throws {
        let testBinary = CommandLine.arguments[0]
        // The rig has its own deadline (timeout -s KILL inside); this one is the last resort.
        let (status, text) = try await runChild([packageRoot + "/scripts/rig/gpio-sim-run",
            "cd \(packageRoot) && RTE_IN_GPIO_SIM_VM=1 RTE_EXPECT_GPIOD_API=1 \(testBinary) --testing-library swift-testing --filter LibgpiodOnGPIOSimTests"],
            deadlineSeconds: 900)
        try checkVMRun(status: status, text: text, label: "libgpiod 1.6")
    }

    /// libgpiod 2.x: the same tests built in an amd64 Debian trixie root (libgpiod 2.2,
    /// libmicrohttpd 1.0) with this machine's toolchain, run on the same gpio-sim chip. The
    /// flashing and child-process suites run there too: trixie's flashrom is 1.4, which words its
    /// results differently from bookworm's 1.3 (an unchanged chip is not reported VERIFIED).
    @Test func theSameTestsPassWithLibgpiod2BuiltInATrixieRoot() async throws {
        let (made, rootText) = try await runChild([packageRoot + "/scripts/rig/trixie-root"], deadlineSeconds: 1300)
        try #require(made == 0, "\(rootText.suffix(3000))")
        let root = try #require(rootText.split(separator: "\n").last.map(String.init))
        let (built, buildText) = try await runChild([packageRoot + "/scripts/rig/in-root", root,
            "swift build --build-tests --scratch-path .build-trixie 2>&1 | grep -vE '^\\[[0-9]+/[0-9]+\\] (Compiling|Emitting|Wrapping)'; exit ${PIPESTATUS[0]}"],
            deadlineSeconds: 2400)
        try #require(built == 0, "\(buildText.suffix(4000))")
        let (flashed, flashText) = try await runChild([packageRoot + "/scripts/rig/in-root", root,
            "flashrom --version | head -1; .build-trixie/debug/rte-agentPackageTests.xctest --testing-library swift-testing --filter 'FlashTests|SubprocessTests|GPIOTests'"],
            deadlineSeconds: 600)
        for line in flashText.split(separator: "\n") where line.hasPrefix("flashrom ") || line.contains("Test run with") { print("trixie root: " + line) }
        #expect(flashed == 0, "\(flashText.suffix(4000))")
        #expect(flashText.contains("flashrom 1.4"), "the root has trixie's flashrom: \(flashText.prefix(500))")
        #expect(flashText.contains("Suite FlashTests passed"), "\(flashText.suffix(4000))")
        let (status, text) = try await runChild([packageRoot + "/scripts/rig/gpio-sim-run",
            "cd \(packageRoot) && scripts/rig/in-root \(root) 'RTE_IN_GPIO_SIM_VM=1 RTE_EXPECT_GPIOD_API=2 .build-trixie/debug/rte-agentPackageTests.xctest --testing-library swift-testing --filter LibgpiodOnGPIOSimTests'"],
            deadlineSeconds: 900)
        try checkVMRun(status: status, text: text, label: "libgpiod 2.x (trixie)")
    }

    private func checkVMRun(status: Int32, text: String, label: String) throws {
        for line in text.split(separator: "\n") where line.contains("gpio-sim:") || line.contains("Test run with") || line.contains("directionChanges") {
            print("in the VM, \(label): " + line)
        }
        #expect(text.contains("theFlashSequenceDrivesTheSPILinesOnTheWire() passed"), "\(text.suffix(2000))")
        #expect(status == 0, "\(text.suffix(4000))")
        #expect(text.contains("Suite LibgpiodOnGPIOSimTests passed"), "\(text.suffix(4000))")
    }
}
