@testable import Configuration
import Foundation
import JSONDocument
import Testing

@Suite struct ConfigTests {
    let minimal = """
    dut: {name: t, backend: simulated}
    serial: {device: /dev/null}
    auth: {enabled: false}
    gpio:
      chip: gpiochip0
      lines:
        relay: {offset: 0}
        reset_button: {offset: 8, active_low: true}
    """

    func error(_ yaml: String) -> String {
        do { _ = try AgentConfig.parse(yaml: yaml, file: "lab.yaml"); return "no error" } catch { return error.description }
    }

    @Test func minimalConfigLoadsWithDefaults() throws {
        let c = try AgentConfig.parse(yaml: minimal, file: "lab.yaml")
        #expect(c.serial.baud == 115200)
        #expect(c.gpio.line("reset_button")?.activeLow == true)
        #expect(c.gpio.line("relay")?.chip == "gpiochip0")
        #expect(c.power.softOffPressMilliseconds == 4000)
        #expect(c.power.resetPressMilliseconds == 200)
        #expect(c.power.cycleOffMilliseconds == 3000)
        #expect(c.http.host == "127.0.0.1")
    }

    @Test func engineTokensAndTheRawConsolePort() throws {
        let hash = String(repeating: "a", count: 64)
        let yaml = minimal.replacingOccurrences(of: "auth: {enabled: false}", with: """
        auth: {tokens: [{user: alice, sha256: \(hash)}, {user: labgrid, sha256: \(hash), engine: true}]}
        http: {listen: "127.0.0.1:8000", console_port: 13541, console_raw_port: 13542}
        """)
        let c = try AgentConfig.parse(yaml: yaml, file: "lab.yaml")
        #expect(c.auth.tokens.map(\.engine) == [false, true])
        #expect(c.http.consoleRawPort == 13542 && c.http.consolePort == 13541)
        #expect(try AgentConfig.parse(yaml: minimal, file: "lab.yaml").http.consoleRawPort == nil)
        #expect(error(yaml.replacingOccurrences(of: "engine: true", with: "engine: yes please")).contains("auth.tokens[1].engine"))
        #expect(error(yaml.replacingOccurrences(of: "console_raw_port: 13542", with: "console_raw_port: 70000"))
                .contains("http.console_raw_port: must be between 0 and 65535"))
    }

    @Test func realtimePriorityOfTheSerialReader() throws {
        #expect(try AgentConfig.parse(yaml: minimal, file: "lab.yaml").serial.realtimePriority == nil)
        let yaml = minimal.replacingOccurrences(of: "serial: {device: /dev/null}", with: "serial: {device: /dev/null, realtime_priority: 10}")
        #expect(try AgentConfig.parse(yaml: yaml, file: "lab.yaml").serial.realtimePriority == 10)
        #expect(error(yaml.replacingOccurrences(of: "realtime_priority: 10", with: "realtime_priority: 100"))
                .contains("serial.realtime_priority: must be between 1 and 99, got 100"))
        #expect(try AgentConfig.parse(yaml: String(contentsOfFile: packageRoot + "/deploy/rte-agent.yaml", encoding: .utf8), file: "rte-agent.yaml")
                .serial.realtimePriority == 10, "the shipped config asks for it (the unit allows LimitRTPRIO=10)")
    }

    @Test func offsetThatIsNotAnIntegerNamesFileKeyAndValue() {
        let yaml = minimal.replacingOccurrences(of: "reset_button: {offset: 8", with: "reset_button: {offset: x")
        #expect(error(yaml) == "lab.yaml:8: gpio.lines.reset_button.offset: expected an integer, got \"x\"")
    }

    @Test func quotedNumberIsNotAnInteger() {
        let yaml = minimal.replacingOccurrences(of: "relay: {offset: 0}", with: "relay: {offset: \"0\"}")
        #expect(error(yaml).hasSuffix("gpio.lines.relay.offset: expected an integer, got \"0\""))
    }

    @Test func unknownKeyIsRejected() {
        let yaml = minimal.replacingOccurrences(of: "active_low: true", with: "activelow: true")
        #expect(error(yaml).contains("gpio.lines.reset_button.activelow: unknown key"))
    }

    @Test func nonStandardBaudIsRejected() {
        let yaml = minimal.replacingOccurrences(of: "device: /dev/null", with: "device: /dev/null, baud: 115201")
        #expect(error(yaml).contains("serial.baud: 115201 is not a standard rate"))
    }

    @Test func badEnumListsChoices() {
        let yaml = minimal.replacingOccurrences(of: "backend: simulated", with: "backend: kvm")
        #expect(error(yaml).contains("dut.backend: expected one of gpio, simulated, qemu, got \"kvm\""))
    }

    @Test func brokenYAMLGivesLineAndColumn() {
        #expect(error("serial: {device: [\n").contains("not valid YAML: line"))
    }

    @Test func authOffOnlyOnLoopback() {
        let yaml = minimal + "\nhttp: {listen: 0.0.0.0:8000}\n"
        #expect(error(yaml).contains("auth.enabled: auth may only be off when http.listen is a loopback address"))
    }

    @Test func missingSerialSection() {
        #expect(error("dut: {name: x}\n") == "lab.yaml:1: serial: is required")
    }

    @Test func duplicateCompatNumbers() {
        let yaml = minimal.replacingOccurrences(of: "relay: {offset: 0}", with: "relay: {offset: 0, compat_number: 8}")
            .replacingOccurrences(of: "active_low: true}", with: "active_low: true, compat_number: 8}")
        #expect(error(yaml).contains("compat_number: 8 is already used by relay"))
    }

    @Test func tokenHashMustBeSHA256() {
        let yaml = minimal.replacingOccurrences(of: "auth: {enabled: false}", with: "auth: {tokens: [{user: a, sha256: abc}]}")
        #expect(error(yaml).contains("auth.tokens[0].sha256: expected 64 hex digits"))
    }

    @Test func missingFileSaysSo() {
        do { _ = try AgentConfig.load(path: "/nonexistent/rte.yaml"); Issue.record("loaded") } catch {
            #expect(error.description == "/nonexistent/rte.yaml: cannot read the file (No such file or directory)")
        }
    }

    @Test(arguments: ["deploy/simulated.yaml", "deploy/rte-agent.yaml"])
    func shippedConfigsLoad(path: String) throws {
        let c = try AgentConfig.load(path: packageRoot + "/" + path)
        #expect(c.gpio.line("reset_button")?.compatNumber == 8)
        #expect(c.gpio.line("power_button")?.compatNumber == 9)
        #expect(c.gpio.line("relay")?.compatNumber == 0)
        // The RTE's whole pin map, numbered and named as RteCtrl does (issue 17: cmos_clear was 4).
        let names = ["relay", "oc3", "oc2", "oc1", "oc6", "oc5", "oc4", "apu_wdt", "apu_rst", "apu_pwr", "apu_modesw",
                     "apu_clr_cmos", "apu_wp", "ext0", "ext1", "ext2", "ext3", "led1", "led2", "led3"]
        let numbered = c.gpio.lines.filter { $0.compatNumber != nil }.sorted { $0.compatNumber! < $1.compatNumber! }
        #expect(numbered.map { $0.compatNumber! } == Array(0..<20))
        #expect(numbered.map { $0.compatName ?? $0.role } == names)
        #expect(numbered.map(\.direction) == Array(repeating: .output, count: 13) + Array(repeating: .input, count: 7))
        #expect(c.gpio.line("cmos_clear")?.compatNumber == 11)
        #expect(c.gpio.line("power_led")?.compatNumber == 13 && c.gpio.line("power_led")?.inputOnly == true)
    }

    /// Issue 16 D8: `[[[[…]]]]` 20,000 deep crashed check-config (stack overflow in the YAML parser).
    @Test func deepNestingIsRefusedByNameBeforeParsing() {
        let flow = "dut: " + String(repeating: "[", count: 20_000) + String(repeating: "]", count: 20_000) + "\n"
        #expect(error(flow) == "lab.yaml:1: nested 20001 levels deep; at most 64 are accepted")
        var block = "dut:\n"
        for i in 0..<3000 { block += String(repeating: " ", count: i + 1) + "k\(i):\n" }
        #expect(error(block).contains("levels deep; at most 64 are accepted"))
        let dashes = "dut: x\nlist:\n" + String(repeating: "- ", count: 100) + "x\n"
        #expect(error(dashes).contains("levels deep; at most 64 are accepted"))
        // Quotes, comments and block scalars are text, not nesting.
        let text = minimal + "\n# [[[[[[ a comment\nsimulator: {timing: \"[[[[{{{{\"}\nqemu:\n  args: |\n    [[[[[[ ${artifact:x} {{{{\n"
        #expect(YAMLNesting.deepest(in: text).depth < 5)
    }

    @Test func aDirectoryOrADuplicateKeyIsNamed() throws {
        let dir = NSTemporaryDirectory() + "rte-config-dir-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        do { _ = try AgentConfig.load(path: dir); Issue.record("a directory loaded") } catch {
            #expect(error.description.contains("\(dir): is a directory; give the config file itself"), "\(error)")
        }
        let dup = minimal.replacingOccurrences(of: "    reset_button: {offset: 8, active_low: true}", with: "    relay: {offset: 8}")
        #expect(error(dup) == "lab.yaml:8: gpio.lines.relay: appears twice (lines 7 and 8); keep one", "\(error(dup))")
        #expect(error("dut: {name: a}\ndut: {name: b}\n").contains("dut: appears twice (lines 1 and 2)"))
    }

    /// Issue 16 D11: with auth off the console listened on every interface while the log said "loopback only".
    @Test func authOffKeepsEveryListenerOnLoopback() {
        let yaml = minimal.replacingOccurrences(of: "auth: {enabled: false}", with: "auth: {enabled: false}\nhttp: {listen: \"127.0.0.1:8000\", console_port: 13541, console_host: 0.0.0.0}")
        #expect(error(yaml).contains("http.console_host: auth is off, so the console may only listen on a loopback address, got \"0.0.0.0\""), "\(error(yaml))")
        let fine = yaml.replacingOccurrences(of: "console_host: 0.0.0.0", with: "console_host: 127.0.0.1")
        #expect(error(fine) == "no error")
    }

    @Test func compatNameAndInputOnlyAreChecked() {
        #expect(error(minimal.replacingOccurrences(of: "relay: {offset: 0}", with: "relay: {offset: 0, input_only: true}"))
            .contains("gpio.lines.relay.input_only: is only for input lines"))
        #expect(error(minimal.replacingOccurrences(of: "relay: {offset: 0}", with: "relay: {offset: 0, compat_name: \"\"}"))
            .contains("gpio.lines.relay.compat_name: must be 1 to 64 characters"))
        let ok = try? AgentConfig.parse(yaml: minimal.replacingOccurrences(of: "relay: {offset: 0}",
            with: "relay: {offset: 0, compat_name: relay}\n    led: {offset: 3, direction: input, input_only: true}"), file: "lab.yaml")
        #expect(ok?.gpio.line("led")?.inputOnly == true && ok?.gpio.line("relay")?.compatName == "relay")
    }

    @Test func theShippedQEMUConfigLoads() throws {
        let c = try AgentConfig.load(path: packageRoot + "/deploy/qemu-apu2.yaml")
        #expect(c.dut.backend == .qemu)
        #expect(c.qemu.arguments.contains("user,id=n0,tftp=/opt/rte-rig,bootfile=menu.ipxe"))
    }

    /// Issue 18 (32-bit safety): limits that can pass 2^31 are parsed and held as 64-bit values,
    /// whatever the board's word size (on armv7 `Int` is 32 bits: `4096...(1 << 40)` as Int trapped).
    @Test func limitsPastTwoToThe31AreSixtyFourBitAtTheirExtremes() throws {
        let yaml = minimal.replacingOccurrences(of: "serial: {device: /dev/null}", with: "serial: {device: /dev/null, ring_bytes: 1073741824, log: {max_file_bytes: 1099511627776}}")
            + "\nartifacts: {listen: \"0.0.0.0:8080\", url: \"http://192.168.4.1:8080\", max_mib: 65536, quota_mib: 1048576, max_age_h: 87600}\nruns: {iteration_log_max_mib: 4096}\nflash: {chip_mib: 128}\n"
        let c = try AgentConfig.parse(yaml: yaml, file: "lab.yaml")
        #expect(c.serial.logMaxFileBytes == Int64(1) << 40 && MemoryLayout.size(ofValue: c.serial.logMaxFileBytes) == 8)
        #expect(c.serial.ringBytes == 1 << 30 && Int32(exactly: c.serial.ringBytes) != nil, "the in-memory ring fits a 32-bit Int")
        #expect(c.artifacts.maxBytes == Int64(65536) << 20 && c.artifacts.quotaBytes == Int64(1) << 40)
        #expect(c.artifacts.maxAgeSeconds == Int64(87600) * 3600)
        #expect(c.iterationLogMaxBytes == Int64(4096) << 20)
        #expect(c.flash.chipBytes == Int64(128) << 20 && Int32(exactly: c.flash.chipBytes + (1 << 20)) != nil, "the flash body limit fits a 32-bit Int")
        // The arithmetic the agent does with them stays in Int64 (no wrap): quota checks, limits + 1.
        #expect(c.artifacts.quotaBytes + c.artifacts.maxBytes > c.artifacts.quotaBytes)
        #expect(Int32(clamping: c.artifacts.maxBytes + 1) == Int32.max, "a 32-bit route limit clamps instead of wrapping")
        // Past the extremes: named errors, not traps.
        #expect(error(minimal.replacingOccurrences(of: "serial: {device: /dev/null}", with: "serial: {device: /dev/null, log: {max_file_bytes: 1099511627777}}"))
                .contains("serial.log.max_file_bytes: must be between 4096 and 1099511627776"))
        #expect(error(minimal.replacingOccurrences(of: "serial: {device: /dev/null}", with: "serial: {device: /dev/null, ring_bytes: 2147483648}"))
                .contains("serial.ring_bytes: must be between 4096 and 1073741824"))
        #expect(error(minimal + "\nartifacts: {quota_mib: 1048577}\n").contains("artifacts.quota_mib: must be 1 to 1048576"))
    }
}
