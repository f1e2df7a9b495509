import AgentClock
import AgentRuntime
@testable import Configuration
import Foundation
import POSIXIO
import TestSupport
import Testing

/// Issue 32: round three of attacks. Each test fails on the code before its fix.
@Suite(.serialized) struct AttackTests {
    /// (1) A banner or prompt over the matcher's limits was accepted (202) and killed the daemon
    /// ~1.5 s later (a precondition in the console's matcher). (4) fail_on and watch patterns
    /// fine one by one but too big together posted fine, and then nothing was watched.
    @Test func specsThatCannotBeMatchedAreRefusedAtPostNamingTheField() async throws {
        try await withAgent(apiConfig(stateDir: scratchDirectory())) { _, c in
            let carol = c["carol"]!
            let long = String(repeating: "x", count: 5000), mid = String(repeating: "y", count: 3000)
            let login: [String: Any] = ["username": "root", "password": "debian"]
            let cases: [(String, [String: Any], String)] = [
                ("firmware.banner", spec { $0["firmware"] = ["banner": [long]] }, "limited to 4096 bytes"),
                ("firmware.banner", spec { $0["firmware"] = ["banner": Array(repeating: mid, count: 8)] }, "compiled together"),
                ("login.prompt", spec { $0["login"] = login.merging(["prompt": long]) { $1 } }, "limited to 4096 bytes"),
                ("login.shell_prompt", spec { $0["login"] = login.merging(["shell_prompt": long]) { $1 } }, "limited to 4096 bytes"),
                ("firmware.boot_menu.prompt", spec { $0["firmware"] = ["boot_menu": ["entry": "iPXE", "prompt": long]] }, "limited to 4096 bytes"),
                ("fail_on", spec { $0["fail_on"] = Array(repeating: mid, count: 4); $0["watch"] = Array(repeating: mid + "w", count: 4) },
                 "compiled together"),
            ]
            for (field, body, detail) in cases {
                let r = try await carol.request("POST", "/api/v1/runs", json: body)
                #expect(r.status == 422, "\(field): \(r.status) \(r.text.prefix(300))")
                #expect(r.json["field"] as? String == field || (r.json["detail"] as? String ?? "").contains(field), "\(r.text.prefix(300))")
                #expect((r.json["detail"] as? String ?? "").contains(detail), "\(field): \(r.text.prefix(300))")
            }
            // Nothing was started, the daemon lives, and a good run still passes.
            #expect(try await c["nobody"]!.request("GET", "/api/v1/health").status == 200)
            let id = try await carol.request("POST", "/api/v1/runs", json: thirdOfFive).json["id"] as! String
            let run = try await finishedRun(carol, id)
            #expect(run["state"] as? String == "passed", "\(failure(run))")
        }
    }
}

extension AttackTests {
    /// (9) `expiry_action: power_off`, documented as the soft off (the power-button hold), cut the
    /// supply like `hard_off`. Now the button is held (the relay stays on, the board goes off), and
    /// `hard_off` cuts the relay. (The hold was also cut short: the expiry timer cancelled its own
    /// task, whose sleep through the hold then ended at once.)
    @Test(arguments: [ExpiryAction.powerOff, .hardOff])
    func theExpiryActionDoesWhatItsNameSays(_ action: ExpiryAction) async throws {
        var config = try apiConfig(stateDir: scratchDirectory())
        config.leases.expiryAction = action
        try await withAgent(config) { agent, c in
            let alice = c["alice"]!
            let token = try await alice.request("POST", "/api/v1/leases", json: ["ttl_s": 1]).json["token"] as! String
            #expect(try await alice.request("POST", "/api/v1/power", json: ["action": "on"], leaseToken: token).status == 200)
            let sim = agent.hardware.simulator!, bank = agent.hardware.simulatedBank!
            await sim.sync()
            #expect(await sim.powered)
            // The lease runs out after 1 s; the next holder is granted only once the action is done
            // (the soft off holds the button for the profile's 4 s).
            let next = try await c["bob"]!.request("POST", "/api/v1/leases", json: ["ttl_s": 60, "wait_s": 30])
            #expect(next.status == 201, "\(next.text)")
            await sim.sync()
            #expect(!(await sim.powered), "the DUT is off")
            #expect(bank.isActive("relay") == (action == .powerOff), "relay \(bank.isActive("relay") ? "on" : "off") after \(action.rawValue)")
            #expect(!bank.isActive("power_button"))
        }
    }
}
