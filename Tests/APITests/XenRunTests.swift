import AgentRuntime
import Foundation
import TestSupport
import Testing

/// Issue 34 on the simulated apu2 (whose "Xen Linux dev" boots a short Xen as the real board's
/// logs show it): the hypervisor stage, facts, expect_facts, fail_on in Xen's lines, Xen's debug
/// keys. The QEMU rig proves the same on real Xen (XenRigTests).
@Suite(.serialized) struct XenRunTests {
    func facts(_ run: [String: Any]) -> [String: String] {
        var out: [String: String] = [:]
        let it = (run["iterations"] as? [[String: Any]])?.first ?? [:]
        for f in it["facts"] as? [[String: Any]] ?? [] { out[f["name"] as! String] = f["value"] as? String }
        return out
    }

    func stages(_ run: [String: Any]) -> [[String: Any]] {
        ((run["iterations"] as? [[String: Any]])?.first?["stages"] as? [[String: Any]]) ?? []
    }

    @Test func aXenBootHasItsOwnStageItsFactsAndXensConsoleBetweenTwoShellCommands() async throws {
        try await withAgent(apiConfig(stateDir: scratchDirectory())) { _, c in
            let a = c["alice"]!
            let posted = try await a.request("POST", "/api/v1/runs", json: spec { s in
                s["expect_facts"] = ["hypervisor": "xen", "xen_version": "4.17*", "iommu": "enabled", "kernel_version": "6.1.*"]
                s["facts"] = ["dom0_alloc": ["after": "Dom0 alloc.:"], "cpus": ["regex": "Brought up [0-9]+ CPUs"]]
                s["commands"] = [["send": "cat /proc/xen/capabilities", "expect": "control_d"],
                                 ["xen_debug_keys": "hq", "quiet_ms": 300, "expect": "'q' pressed"],
                                 ["send": "cat /proc/cmdline", "expect": "rte.entry=xen-linux-dev"]]
            })
            #expect(posted.status == 202, "\(posted.text)")
            let run = try await finishedRun(a, posted.json["id"] as! String)
            #expect(run["state"] as? String == "passed", "\(run["message"] ?? "") \(failure(run))")
            let s = stages(run)
            #expect(s.map { $0["name"] as? String ?? "" } == ["power", "firmware", "ipxe_interrupt", "ipxe_command", "ipxe_command", "ipxe_menu",
                                                               "hypervisor", "kernel", "facts", "login", "command", "command", "command"])
            let hypervisor = s.first { $0["name"] as? String == "hypervisor" } ?? [:]
            let kernel = s.first { $0["name"] as? String == "kernel" } ?? [:]
            #expect(hypervisor["detail"] as? String == "Xen 4.17.7 booted; dom0's kernel started")
            #expect(hypervisor["ended_at"] as? String == kernel["started_at"] as? String)
            #expect((hypervisor["capture_to"] as? Int ?? 0) == (kernel["capture_from"] as? Int ?? -1))
            let f = facts(run)
            #expect(f["hypervisor"] == "xen")
            #expect(f["xen_version"] == "4.17.7")
            #expect(f["xen_cmdline"] == "dom0_mem=512M loglvl=all guest_loglvl=all com1=115200,8n1 console=com1")
            #expect(f["iommu"] == "enabled")
            #expect(f["kernel_cmdline"] == nil, "the simulated kernel prints no \"Kernel command line\"")
            #expect(f["firmware"] == "coreboot", "\(f)")
            #expect(f["cpus"] == "Brought up 4 CPUs")
            #expect(f["dom0_alloc"]?.hasPrefix("0000000018000000->") == true, "\(f)")
            let commands = ((run["iterations"] as? [[String: Any]])?.first?["commands"] as? [[String: Any]]) ?? []
            let keys = commands.dropFirst().first ?? [:]
            #expect(keys["command"] as? String == "xen debug keys hq")
            let output = keys["output"] as? String ?? ""
            #expect(output.contains("(XEN) 'h' pressed -> showing installed handlers") && output.contains("(XEN) 'q' pressed"), "\(output)")
            #expect(!output.contains("Serial input to"), "the switch messages are not the keys' answer: \(output)")
            #expect(commands.last?["passed"] as? Bool == true, "dom0's shell types again after Xen's console")
        }
    }

    @Test func anUnmetFactFailsAtTheFactsStageNamingWhatWasSeenAndNothingAfterItRuns() async throws {
        try await withAgent(apiConfig(stateDir: scratchDirectory())) { _, c in
            let a = c["alice"]!
            let posted = try await a.request("POST", "/api/v1/runs", json: spec { s in
                s["expect_facts"] = ["xen_version": "4.18*", "iommu": "enabled", "kernel_cmdline": "*"]
            })
            let run = try await finishedRun(a, posted.json["id"] as! String)
            #expect(run["state"] as? String == "failed")
            let f = failure(run)
            #expect(f["stage"] as? String == "facts")
            #expect(f["message"] as? String == "facts: kernel_cmdline was not in the boot log (expected \"*\"); xen_version is \"4.17.7\", expected \"4.18*\"",
                    "\(f)")
            #expect(stages(run).last?["name"] as? String == "facts", "no login, no commands after it")
        }
    }

    @Test func aFailOnMatchInXensLinesFailsTheHypervisorStage() async throws {
        try await withAgent(apiConfig(stateDir: scratchDirectory())) { _, c in
            let a = c["alice"]!
            let posted = try await a.request("POST", "/api/v1/runs", json: spec { s in s["fail_on"] = ["Interrupt remapping enabled"] })
            let run = try await finishedRun(a, posted.json["id"] as! String)
            #expect(run["state"] as? String == "failed")
            let f = failure(run)
            #expect(f["stage"] as? String == "hypervisor", "\(f)")
            #expect((f["message"] as? String ?? "").contains("fail_on \"Interrupt remapping enabled\" matched during hypervisor"), "\(f)")
            #expect((f["message"] as? String ?? "").contains("(XEN) Interrupt remapping enabled"), "\(f)")
        }
    }

    @Test func aPlainLinuxEntryHasNoHypervisorStage() async throws {
        try await withAgent(apiConfig(stateDir: scratchDirectory())) { _, c in
            let a = c["alice"]!
            let posted = try await a.request("POST", "/api/v1/runs", json: spec { s in
                s["ipxe"] = ["commands": ["dhcp net0", "chain http://192.168.4.2:8000/menu.ipxe"], "menu_entry": "Linux dev"]
                s["commands"] = [["send": "cat /proc/cmdline", "expect": "rte.entry=linux-dev"]]
                s["expect_facts"] = ["kernel_version": "6.1.0-*"]
            })
            let run = try await finishedRun(a, posted.json["id"] as! String)
            #expect(run["state"] as? String == "passed", "\(run["message"] ?? "") \(failure(run))")
            #expect(stages(run).map { $0["name"] as? String ?? "" }.contains("hypervisor") == false)
            #expect(facts(run)["hypervisor"] == nil)
        }
    }
}
