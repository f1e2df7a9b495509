import BootFlow
import Foundation
import JSONDocument
import Testing

@Suite struct RunSpecTests {
    /// The examples in deploy/specs are what newcomers copy: each must be a valid spec.
    @Test(arguments: ["xen-dev.yaml", "qemu-xen-dev.yaml"])
    func shippedSpecsParse(name: String) throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let text = try String(contentsOf: root.appendingPathComponent("deploy/specs/\(name)"), encoding: .utf8)
        let spec = try RunSpec.parse(yaml: text)
        #expect(spec.ipxe?.menuEntry == "Xen Linux dev")
        #expect(spec.commands.contains { $0.expect == .literal("rte.entry=xen-linux-dev") })
    }

    @Test func theShippedXenHuntParses() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let spec = try RunSpec.parse(yaml: try String(contentsOf: root.appendingPathComponent("deploy/specs/xen-iommu.yaml"), encoding: .utf8))
        #expect(spec.ipxe?.menuEntry == "Xen Linux dev")
        #expect(spec.failOn.contains(.literal("AMD-Vi: Error")) && spec.watch == [.literal("AMD-Vi:"), .literal("I/O virtualisation")])
        #expect(spec.expectFacts.map { "\($0.name)=\($0.pattern)" } == ["hypervisor=xen", "iommu=enabled"])
        #expect(spec.commands.map(\.xenDebugKeys) == [nil, "q", nil])
        #expect(spec.repeatCount == 3)
    }

    /// Issue 16 D8: a spec nested thousands of levels deep is refused by name, not by a crash.
    @Test func deeplyNestedSpecsAreRefusedByName() {
        let deep = "name: " + String(repeating: "[", count: 20_000) + String(repeating: "]", count: 20_000)
        do { _ = try RunSpec.parse(yaml: deep); Issue.record("parsed") } catch {
            #expect("\(error)".contains("nested 20001 levels deep at line 1; at most 64 are accepted"), "\(error)")
        }
    }

    @Test func theIssuesExampleParses() throws {
        let spec = try RunSpec.parse(yaml: """
        power: cycle
        firmware:
          boot_menu: {key: F10, entry: "iPXE (PCI 00:00.0)"}
        ipxe:
          interrupt: true
          commands: ["dhcp net0", "chain http://192.168.4.2:8000/menu.ipxe"]
          menu_entry: "Xen Linux dev"
        login: {prompt: "login:", username: root, password: debian, shell_prompt: "# "}
        commands:
          - {send: "uname -r", expect: "4.14", timeout_s: 10}
        timeouts: {firmware: 60, ipxe: 60, kernel: 300, login: 60}
        repeat: 1
        """)
        #expect(spec.power == .cycle)
        #expect(spec.firmware.bootMenu?.key == .f10)
        #expect(spec.ipxe?.commands.count == 2 && spec.ipxe?.menuEntry == "Xen Linux dev")
        #expect(spec.login?.password == "debian")
        #expect(spec.commands.first?.expect == .literal("4.14"))
        #expect(spec.timeouts.kernel == 300 && spec.repeatCount == 1)
    }

    @Test func mistakesNameTheirField() {
        let cases: [(String, String)] = [
            ("powr: on", "unknown field \"powr\""),
            ("power: sideways", "power: must be one of"),
            ("ipxe: {commands: [dhcp], interrupt: false}", "ipxe.interrupt: commands and script are typed at iPXE>"),
            ("ipxe: {script: [boot], menu_entry: x}", "ipxe.script: give either a script"),
            ("ipxe: {menu_entry: x, interrupt: true, skip_banner_wait: true}", "ipxe.skip_banner_wait: skip_banner_wait lets iPXE autoboot at once"),
            ("power: none\nipxe: {menu_entry: x, skip_banner_wait: true}", "power: \"none\" cannot catch firmware or iPXE prompts"),
            ("login: {username: root}\ncommands: [{send: ls, expect_regex: 'a$'}]", "commands[0].expect_regex"),
            ("commands: [ls]", "shell commands need a login section"),
            ("repeat: 0", "repeat: must be between 1 and 10000"),
            ("timeouts: {kernel: soon}", "timeouts.kernel: must be a number"),
            ("firmware: {boot_menu: {key: F13, entry: iPXE}}", "unknown key \"F13\""),
            ("login: {username: root, shell_prompt: \"\"}", "login.shell_prompt: must not be empty"),
            ("login: {username: root}\ncommands: [{send: ls, expect: \"\"}]", "commands[0].expect: must not be empty"),
            ("firmware: {banner: [\"\"]}", "firmware.banner: needs at least one non-empty text"),
        ]
        for (yaml, message) in cases {
            do {
                _ = try RunSpec.parse(yaml: yaml)
                Issue.record("accepted: \(yaml)")
            } catch {
                #expect(error.description.contains(message), "\(yaml) → \(error)")
            }
        }
    }
}
