import AgentClock
import TestSupport
@testable import Configuration
import GPIO
import Testing

func line(_ role: String, offset: Int, direction: LineDirection = .output, activeLow: Bool = false, safe: Bool = false,
          chip: String = "gpiochip0") -> GPIOLineConfig {
    GPIOLineConfig(role: role, chip: chip, offset: offset, lineName: nil, direction: direction, activeLow: activeLow,
                   drive: .pushPull, bias: .asIs, safeValue: safe, initialValue: safe, consumer: "rte-agent-test",
                   compatNumber: nil, compatOpenCollector: false)
}

@Suite struct GPIOTests {
    let clock = ManualClock()
    let configs = [line("relay", offset: 0), line("reset_button", offset: 8, activeLow: true),
                   line("power_button", offset: 9, activeLow: true), line("power_led", offset: 12, direction: .input)]

    @Test func pulseLastsExactlyTheRequestedTimeOnTheInjectedClock() async throws {
        let bank = InMemoryGPIOBank(clock: clock)
        let gpio = try GPIOController.start(backend: bank, configs: configs, clock: clock)
        let t0 = clock.now()
        let press = Task { try await gpio.pulse("reset_button", for: .milliseconds(200)) }
        await clock.waitForSleepers(1)
        #expect(bank.isActive("reset_button"))
        // A press in progress refuses other writes to the same line.
        await #expect(throws: GPIOError.self) { try await gpio.set("reset_button", active: false) }
        clock.advance(by: .milliseconds(199))
        #expect(bank.isActive("reset_button"))
        clock.advance(by: .milliseconds(1))
        try await press.value
        #expect(!bank.isActive("reset_button"))
        let h = bank.history(of: "reset_button")
        #expect(h.map(\.active) == [true, false])
        #expect(h[1].at - h[0].at == .milliseconds(200))
        #expect(h[0].at == t0)
    }

    /// The legacy API's timed write, on the controller: answered at once, reverted to the opposite
    /// of what was written, cancelled by any later write (native ones too), skipped on an input.
    @Test func timedWritesRevertToTheOppositeUnlessAnotherWriteComesFirst() async throws {
        let bank = InMemoryGPIOBank(clock: clock)
        let gpio = try GPIOController.start(backend: bank, configs: configs, clock: clock)
        try await gpio.write("power_button", active: true, revertAfter: .seconds(6))
        #expect(bank.isActive("power_button"))
        await clock.waitForSleepers(1)
        #expect(await gpio.status().first { $0.role == "power_button" }?.revertInMs == 6000)
        clock.advance(by: .seconds(2))
        #expect(await gpio.status().first { $0.role == "power_button" }?.revertInMs == 4000)
        // A native write wins and the timer is gone.
        try await gpio.set("power_button", active: true)
        #expect(clock.sleeperCount == 0)
        clock.advance(by: .seconds(10))
        #expect(bank.isActive("power_button"))
        // A timer whose line became an input does nothing when it fires... (relay: a plain output)
        try await gpio.write("relay", active: true, revertAfter: .seconds(1))
        await clock.waitForSleepers(1)
        try await gpio.setDirection("relay", .input)
        #expect(clock.sleeperCount == 0, "turning the line into an input cancelled the timer")
        // ...and one that fires reverts exactly once.
        try await gpio.set("power_button", active: false)
        try await gpio.write("power_button", active: false, revertAfter: .seconds(1))
        await clock.waitForSleepers(1)
        let (edges, sink) = AsyncStream<Bool>.makeStream()
        let token = bank.observe { if $0.role == "power_button" { sink.yield($0.active) } }
        clock.advance(by: .seconds(1))
        var iterator = edges.makeAsyncIterator()
        #expect(await iterator.next() == true, "the opposite of the written (inactive) value")
        bank.removeObserver(token)
        #expect(await gpio.status().first { $0.role == "power_button" }?.revertInMs == nil)
        // An input_only input is never made an output.
        var ledConfigs = configs
        ledConfigs[3].inputOnly = true
        let bank2 = InMemoryGPIOBank(clock: clock)
        let gpio2 = try GPIOController.start(backend: bank2, configs: ledConfigs, clock: clock)
        await #expect(throws: GPIOError.self) { try await gpio2.setDirection("power_led", .output, active: true) }
        #expect(try await gpio2.direction(of: "power_led") == .input && !bank2.isActive("power_led"))
    }

    @Test func longPressHoldsFourSecondsByDefault() async throws {
        let bank = InMemoryGPIOBank(clock: clock)
        let gpio = try GPIOController.start(backend: bank, configs: configs, clock: clock)
        let press = Task { try await gpio.longPress("power_button") }
        await clock.waitForSleepers(1)
        clock.advance(by: .seconds(4))
        try await press.value
        let h = bank.history(of: "power_button")
        #expect(h.count == 2 && h[1].at - h[0].at == .seconds(4))
    }

    @Test func safeStateIsRestoredOnShutdownAndLinesAreReleased() async throws {
        let bank = InMemoryGPIOBank(clock: clock)
        let safeOn = [line("relay", offset: 0), line("spi_vcc", offset: 3, safe: true)]
        let gpio = try GPIOController.start(backend: bank, configs: safeOn, clock: clock)
        #expect(bank.isActive("spi_vcc"))
        try await gpio.set("relay", active: true)
        try await gpio.set("spi_vcc", active: false)
        let problems = await gpio.shutdown()
        #expect(problems.isEmpty)
        #expect(!bank.isActive("relay"))
        #expect(bank.isActive("spi_vcc"))
        #expect(!bank.isHeld("relay"))
        await #expect(throws: GPIOError.self) { try await gpio.get("relay") }
    }

    @Test func cancelledPressStillReleasesTheButton() async throws {
        let bank = InMemoryGPIOBank(clock: clock)
        let gpio = try GPIOController.start(backend: bank, configs: configs, clock: clock)
        let press = Task { try await gpio.pulse("reset_button", for: .seconds(10)) }
        await clock.waitForSleepers(1)
        press.cancel()
        try await press.value
        #expect(!bank.isActive("reset_button"))
    }

    @Test func inputsCannotBeDrivenAndUnknownRolesAreNamed() async throws {
        let bank = InMemoryGPIOBank(clock: clock)
        let gpio = try GPIOController.start(backend: bank, configs: configs, clock: clock)
        do { try await gpio.set("power_led", active: true); Issue.record("set an input") } catch {
            #expect(error.description == "sim-gpiochip0 line 12 (power_led): is an input line")
        }
        do { try await gpio.set("nonexistent", active: true); Issue.record("set unknown") } catch {
            #expect(error.description == "no GPIO line has the role \"nonexistent\"")
        }
        bank.drive("power_led", active: true)
        #expect(try await gpio.get("power_led"))
    }

    @Test func busyLineErrorNamesChipLineAndRole() throws {
        let bank = InMemoryGPIOBank(clock: clock, chipName: "gpiochip1")
        bank.markBusy("reset_button")
        do { _ = try bank.request(configs); Issue.record("requested a busy line") } catch {
            #expect(error.description == "gpiochip1 line 8 (reset_button): Device or resource busy")
            #expect(error.kind == .busy)
        }
        // All or nothing: nothing stays held after the failure.
        #expect(!bank.isHeld("relay"))
    }

    @Test func libgpiodReportsAMissingChipClearly() throws {
        // The library loaded at run time is the major version the wrapper was compiled for
        // (1.6 on bookworm, 2.x on trixie/sid).
        #expect(LibgpiodBackend.libraryVersion.hasPrefix("\(LibgpiodBackend.apiMajor)."))
        let missing = [line("relay", offset: 0, chip: "gpiochip-that-does-not-exist")]
        do { _ = try LibgpiodBackend().request(missing); Issue.record("opened a missing chip") } catch {
            #expect(error.kind == .chipNotFound)
            #expect(error.description.hasPrefix("gpiochip-that-does-not-exist line 0 (relay): no such GPIO chip"))
        }
    }

    @Test func libgpiodReportsAMissingDevicePath() throws {
        let missing = [line("reset_button", offset: 8, chip: "/dev/gpiochip99")]
        do { _ = try LibgpiodBackend().request(missing); Issue.record("opened a missing chip") } catch {
            #expect(error.role == "reset_button")
            #expect(error.description.contains("/dev/gpiochip99"))
        }
    }
}
