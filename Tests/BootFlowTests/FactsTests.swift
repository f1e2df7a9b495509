import BootFlow
import JSONDocument
import Serial
import Testing

/// Issue 34: what a boot log proves about what booted, read from real boots of the QEMU virtual
/// apu2 (SeaBIOS → iPXE → Xen 4.17 → a Debian 6.1 dom0, recorded byte for byte by the rig) and
/// from the banner lines of a real apu2's coreboot.
@Suite struct FactsTests {
    func facts(_ bytes: [UInt8], rules: [FactRule] = []) -> [Fact] {
        var reader = FactReader(rules: rules)
        reader.feed(bytes)
        return reader.finish()
    }

    @Test func aXenBootOnTheIOMMUMachineNamesEveryLayerAndTheIOMMUEnabled() throws {
        let f = facts(try fixture("qemu-xen-iommu-boot.bin"))
        #expect(f[fact: "firmware"] == "SeaBIOS")
        #expect(f[fact: "firmware_version"] == "1.16.2-debian-1.16.2-1")
        #expect(f[fact: "ipxe_version"] == "1.0.0+git-20190125.36a4c85-5.1")
        #expect(f[fact: "hypervisor"] == "xen")
        #expect(f[fact: "xen_version"] == "4.17.7")
        #expect(f[fact: "xen_cmdline"]?.hasPrefix("dom0_mem=512M loglvl=all guest_loglvl=all com1=115200,8n1 console=com1") == true,
                "\(f)")
        #expect(f[fact: "iommu"] == "enabled")
        #expect(f[fact: "iommu_type"] == "amd-vi")
        #expect(f[fact: "kernel_version"] == "6.1.0-57-amd64")
        #expect(f[fact: "kernel_cmdline"] == "console=hvc0 earlyprintk=xen rte.entry=xen-linux-dev")
        // Built-ins come in a fixed order (a stable record), only those the log gave.
        #expect(f.map(\.name) == ["firmware", "firmware_version", "seabios_version", "ipxe_version", "hypervisor", "xen_version",
                                   "xen_cmdline", "iommu", "iommu_type", "kernel_version", "kernel_cmdline"])
    }

    @Test func withoutTheIOMMUXenSaysItIsDisabled() throws {
        let f = facts(try fixture("qemu-xen-boot.bin"))
        #expect(f[fact: "hypervisor"] == "xen")
        #expect(f[fact: "iommu"] == "disabled")
        #expect(f[fact: "iommu_type"] == nil)
        #expect(f[fact: "kernel_version"] == "6.1.0-57-amd64")
    }

    @Test func aBootThatDiesInXenHasXensFactsAndNoKernel() throws {
        let f = facts(try fixture("qemu-xen-iommu-1g-crash.bin"))
        #expect(f[fact: "hypervisor"] == "xen")
        #expect(f[fact: "iommu"] == "enabled")
        #expect(f[fact: "kernel_version"] == nil, "dom0 crashed before its kernel printed a line: \(f)")
    }

    @Test func aPlainLinuxBootHasNoHypervisorAndProvesNoIOMMUState() throws {
        let f = facts(try fixture("qemu-linux-boot-login.bin"))
        #expect(f[fact: "hypervisor"] == nil)
        #expect(f[fact: "iommu"] == nil)
        #expect(f[fact: "kernel_version"] != nil)
        #expect(f[fact: "kernel_cmdline"]?.contains("rte.entry=") == true, "\(f)")
    }

    @Test func anApu2sCorebootBannerGivesTheBoardAndTheFirmwareRelease() {
        // As a real apu2 prints it (3mdeb's releases), SeaBIOS as coreboot's payload after it.
        let text = "PC Engines apu2\r\ncoreboot build 20202711\r\nBIOS version v4.13.0.1\r\n4080 MB ECC DRAM\r\n\r\n"
            + "SeaBIOS (version rel-1.12.1.3-0-g300e8b70)\r\n\r\nPress F10 key now for boot menu\r\n"
        let f = facts(Array(text.utf8))
        #expect(f[fact: "board"] == "PC Engines apu2")
        #expect(f[fact: "firmware"] == "coreboot")
        #expect(f[fact: "firmware_version"] == "v4.13.0.1")
        #expect(f[fact: "seabios_version"] == "rel-1.12.1.3-0-g300e8b70")
    }

    @Test func aSpecsOwnFactsTakeWhatTheirPatternMatchedOrTheRestOfTheLine() throws {
        let rules = [FactRule(name: "dom0_memory", source: .after("(XEN)  Dom0 alloc.:")),
                     FactRule(name: "cpus", source: .regex("Brought up [0-9]+ CPUs")),
                     FactRule(name: "missing", source: .after("no such line"))]
        let f = facts(try fixture("qemu-xen-iommu-boot.bin"), rules: rules)
        #expect(f[fact: "cpus"] == "Brought up 1 CPUs" || f[fact: "cpus"]?.hasPrefix("Brought up ") == true, "\(f)")
        #expect(f[fact: "dom0_memory"]?.contains("->") == true, "\(f)")
        #expect(f[fact: "missing"] == nil)
        #expect(f.suffix(2).map { $0.name } == ["dom0_memory", "cpus"], "the spec's own come after the built-ins, in its order")
    }

    @Test func factsAreReadFromTheCaptureAcrossChunksAndFromTheIterationsOwnText() throws {
        let bytes = try fixture("qemu-xen-iommu-boot.bin")
        let capture = SerialCapture(capacity: 1 << 20)
        capture.append(Array("(XEN) Xen version 4.8.9 (an earlier boot)\r\n".utf8))
        let from = capture.endOffset
        // Odd-sized pieces: lines split across reads are read whole.
        var i = 0
        while i < bytes.count { let n = min(777, bytes.count - i); capture.append(Array(bytes[i..<(i + n)])); i += n }
        let f = FactReader.read(capture, from: from, to: capture.endOffset, rules: [])
        #expect(f[fact: "xen_version"] == "4.17.7")
        #expect(f[fact: "kernel_cmdline"] == "console=hvc0 earlyprintk=xen rte.entry=xen-linux-dev")
        let earlier = FactReader.read(capture, from: 0, to: from, rules: [])
        #expect(earlier[fact: "xen_version"] == "4.8.9")
    }

    @Test(arguments: [("4.17*", "4.17.7", true), ("4.17*", "4.18.0", false), ("enabled", "enabled", true), ("enabled", "disabled", false),
                      ("6.1.0-?-amd64", "6.1.0-5-amd64", true), ("6.1.0-?-amd64", "6.1.0-57-amd64", false), ("*", "", true),
                      ("*-amd64", "6.1.0-57-amd64", true), ("a*b*c", "aXbYc", true), ("a*b*c", "aXbY", false)])
    func globsMatchAsDocumented(pattern: String, value: String, matches: Bool) {
        #expect(globMatches(pattern, value) == matches)
    }

    @Test func specsNameTheirFactsAndExpectationsAndBadOnesAreRefusedByPath() throws {
        let spec = try RunSpec.parse(yaml: """
        ipxe: {menu_entry: "Xen Linux dev"}
        login: {username: root}
        facts: {dom0_memory: {after: "Dom0 alloc.:"}, cpus: {regex: "Brought up [0-9]+ CPUs"}}
        expect_facts: {xen_version: "4.17*", iommu: enabled, cpus: "*4 CPUs"}
        commands: [{xen_debug_keys: "qi", quiet_ms: 500, expect: "pressed"}]
        """)
        #expect(spec.facts == [FactRule(name: "cpus", source: .regex("Brought up [0-9]+ CPUs")),
                               FactRule(name: "dom0_memory", source: .after("Dom0 alloc.:"))])
        #expect(spec.expectFacts.map(\.name) == ["cpus", "iommu", "xen_version"])
        #expect(spec.commands.first?.xenDebugKeys == "qi")
        #expect(spec.commands.first?.quietMs == 500)
        for (yaml, path) in [("expect_facts: {xen: \"4*\"}", "expect_facts.xen"),
                             ("facts: {xen_version: {after: \"x\"}}", "facts.xen_version"),
                             ("facts: {Bad-Name: {after: \"x\"}}", "facts.Bad-Name"),
                             ("facts: {a: {regex: \"(\"}}", "facts.a.regex"),
                             ("facts: {a: {}}", "facts.a"),
                             ("expect_facts: {iommu: \"\"}", "expect_facts.iommu"),
                             ("login: {username: root}\ncommands: [{xen_debug_keys: \"q\", send: \"ls\"}]", "commands[0].xen_debug_keys"),
                             ("login: {username: root}\ncommands: [{xen_debug_keys: \"\\u0001\"}]", "commands[0].xen_debug_keys"),
                             ("login: {username: root}\ncommands: [{send: \"ls\", quiet_ms: 100}]", "commands[0].quiet_ms")] {
            do { _ = try RunSpec.parse(yaml: yaml); Issue.record("accepted: \(yaml)") } catch {
                #expect(error.path == path, "\(yaml): \(error)")
            }
        }
    }
}
