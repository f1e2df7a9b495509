import AgentClock
import AgentRuntime
@testable import Configuration
import Foundation
import Power
import Serial
import Testing

func simulatedConfig(stateDir: String, timing: String = "fast", extra: String = "") throws -> AgentConfig {
    var yaml = try String(contentsOfFile: packageRoot + "/deploy/simulated.yaml", encoding: .utf8)
    yaml = yaml.replacingOccurrences(of: "timing: realistic", with: "timing: \(timing)")
    var c = try AgentConfig.parse(yaml: yaml + extra, file: "simulated.yaml")
    c.stateDirectory = stateDir
    c.power.cycleOffMilliseconds = 50
    return c
}

@Suite(.serialized) struct SimulatorTests {
    @Test func simulatedApu2BootsToLoginWhenItsRelayTurnsOn() async throws {
        let hw = try await Hardware.start(config: simulatedConfig(stateDir: scratchDirectory()))
        await hw.serial.waitUntilOpen()
        let sub = hw.capture.subscribe()
        #expect(await hw.simulator?.powered == false)
        #expect(try await hw.power.perform(.on) == .on)
        let (_, bytes) = try await collect(sub, timeout: .seconds(30)) { _, b in b.contains(text: "apu2 login: ") }
        let text = String(decoding: bytes, as: UTF8.self)
        #expect(text.contains("SeaBIOS (version"))
        #expect(text.contains("Press Ctrl-B for the iPXE command line..."))
        #expect(text.contains("\u{1b}[0;41;1m  Debian stable netboot"), "the default entry is drawn selected, as iPXE draws it")
        #expect(text.contains("rte.entry=debian-stable-netboot"))
        #expect(await hw.simulator?.phase == "login")
        // Hard off silences it.
        #expect(try await hw.power.perform(.hardOff) == .off)
        await hw.simulator?.sync()
        #expect(await hw.simulator?.powered == false)
        #expect(await hw.power.state() == .off, "the power LED follows")
        _ = await hw.shutdown()
    }

    @Test func consoleInputReachesTheSimulatorAndItAnswers() async throws {
        let hw = try await Hardware.start(config: simulatedConfig(stateDir: scratchDirectory()))
        await hw.serial.waitUntilOpen()
        let sub = hw.capture.subscribe()
        _ = try await hw.power.perform(.on)
        _ = try await collect(sub) { _, b in b.contains(text: "Press Ctrl-B") }
        try hw.serial.write([0x02])
        _ = try await collect(sub) { _, b in b.contains(text: "iPXE> ") }
        try hw.serial.write(Array("dhcp net0\r".utf8))
        let (_, bytes) = try await collect(sub) { _, b in b.contains(text: " ok\r\niPXE> ") }
        #expect(String(decoding: bytes, as: UTF8.self).contains("Configuring (net0 00:0d:b9:4b:49:60)"))
        _ = await hw.shutdown()
    }
}
