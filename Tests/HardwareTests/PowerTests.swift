import AgentClock
import TestSupport
@testable import Configuration
import GPIO
import Power
import Testing

@Suite struct PowerTests {
    let clock = ManualClock()
    let profile = PowerProfile(pressPowerButtonOnPowerOn: false, pressMilliseconds: 200, softOffPressMilliseconds: 4000,
                               resetPressMilliseconds: 200, cycleOffMilliseconds: 3000, settleMilliseconds: 500)

    func make(led: Bool = false) async throws -> (InMemoryGPIOBank, GPIOPowerController) {
        var lines = [line("relay", offset: 0), line("reset_button", offset: 8, activeLow: true), line("power_button", offset: 9, activeLow: true)]
        if led { lines.append(line("power_led", offset: 12, direction: .input)) }
        let bank = InMemoryGPIOBank(clock: clock)
        let gpio = try GPIOController.start(backend: bank, configs: lines, clock: clock)
        return (bank, await GPIOPowerController(gpio: gpio, profile: profile, clock: clock))
    }

    @Test func onAppliesTheRelayAndResetWhileOffIsRefused() async throws {
        let (bank, power) = try await make()
        #expect(await power.state() == .off)
        do { _ = try await power.perform(.reset); Issue.record("reset while off") } catch {
            #expect(error.kind == .refused)
            #expect(error.description.contains("the DUT is off"))
        }
        #expect(try await power.perform(.on) == .on)
        #expect(bank.isActive("relay"))
        #expect(bank.history(of: "power_button").isEmpty)
        do { _ = try await power.perform(.on); Issue.record("on while on") } catch { #expect(error.kind == .refused) }
    }

    @Test func resetPulsesTheResetButtonFor200ms() async throws {
        let (bank, power) = try await make()
        _ = try await power.perform(.on)
        let reset = Task { try await power.perform(.reset) }
        await clock.waitForSleepers(1)
        clock.advance(by: .milliseconds(200))
        #expect(try await reset.value == .on)
        let h = bank.history(of: "reset_button")
        #expect(h.count == 2 && h[1].at - h[0].at == .milliseconds(200))
    }

    @Test func cycleIsOffWaitOn() async throws {
        let (bank, power) = try await make()
        _ = try await power.perform(.on)
        let cycle = Task { try await power.perform(.cycle) }
        await clock.waitForSleepers(1)
        #expect(!bank.isActive("relay"))
        // A second action during the cycle is refused, not interleaved.
        await #expect(throws: PowerError.self) { try await power.perform(.hardOff) }
        clock.advance(by: .seconds(3))
        #expect(try await cycle.value == .on)
        let relay = bank.history(of: "relay")
        #expect(relay.map(\.active) == [true, false, true])
        #expect(relay[2].at - relay[1].at == .seconds(3))
    }

    @Test func softOffHoldsThePowerButtonAndHardOffCutsTheRelay() async throws {
        let (bank, power) = try await make()
        _ = try await power.perform(.on)
        let off = Task { try await power.perform(.off) }
        await clock.waitForSleepers(1)
        clock.advance(by: .seconds(4))
        _ = try await off.value
        let h = bank.history(of: "power_button")
        #expect(h.count == 2 && h[1].at - h[0].at == .seconds(4))
        #expect(try await power.perform(.hardOff) == .off)
        #expect(!bank.isActive("relay"))
    }

    @Test func stateComesFromThePowerLEDWhenWired() async throws {
        let (bank, power) = try await make(led: true)
        #expect(await power.stateSource == "power_led")
        bank.drive("power_led", active: true)
        #expect(await power.state() == .on)
        bank.drive("power_led", active: false)
        #expect(await power.state() == .off)
    }
}
