import AgentClock
import TestSupport
import AgentRuntime
@testable import Configuration
import Foundation
import GPIO
import Synchronization
import Testing

/// RteCtrl's pin map (3mdeb/RteCtrl config/RteCtrl.cfg): id → description, direction.
let rteCtrlPins: [(Int, String, String)] = [
    (0, "relay", "out"), (1, "oc3", "out"), (2, "oc2", "out"), (3, "oc1", "out"), (4, "oc6", "out"), (5, "oc5", "out"),
    (6, "oc4", "out"), (7, "apu_wdt", "out"), (8, "apu_rst", "out"), (9, "apu_pwr", "out"), (10, "apu_modesw", "out"),
    (11, "apu_clr_cmos", "out"), (12, "apu_wp", "out"), (13, "ext0", "in"), (14, "ext1", "in"), (15, "ext2", "in"),
    (16, "ext3", "in"), (17, "led1", "in"), (18, "led2", "in"), (19, "led3", "in"),
]

/// Waits until `role` is at `active` in the simulated bank: the edge itself, not a guess of when
/// it happened. Gives up after 10 s of real time (a deadline, so a broken timer fails the test).
func waitForLevel(_ bank: InMemoryGPIOBank, _ role: String, _ active: Bool) async -> Bool {
    let (stream, sink) = AsyncStream<Bool>.makeStream()
    let token = bank.observe { change in if change.role == role { sink.yield(change.active) } }
    defer { bank.removeObserver(token) }
    if bank.isActive(role) == active { return true }
    return await withTaskGroup(of: Bool.self) { group in
        group.addTask {
            for await level in stream where level == active { return true }
            return false
        }
        group.addTask {
            try? await Task.sleep(for: .seconds(10))
            return false
        }
        let first = await group.next() ?? false
        group.cancelAll()
        sink.finish()
        return first
    }
}

@Suite(.serialized) struct CompatTests {
    func manualClock() -> ManualClock { ManualClock(start: Timestamp(secondsSinceEpoch: Double(Int(Date().timeIntervalSince1970)))) }

    @Test func theFullPinMapIsListedAsRteCtrlListsIt() async throws {
        try await withAgent(apiConfig(stateDir: scratchDirectory())) { agent, _ async throws in
            let legacy = HTTP(port: agent.port, token: nil)  // rtectrl sends no token
            let list = try await legacy.request("GET", "/api/v1/gpio").jsonArray
            #expect(list.count == 20)
            for (line, (id, description, direction)) in zip(list, rteCtrlPins) {
                #expect(line["id"] as? Int == id && line["description"] as? String == description && line["direction"] as? String == direction,
                        "\(line)")
                #expect(line["state"] as? Int == 0, "\(line)")
            }
            let one = try await legacy.request("GET", "/api/v1/gpio/9")
            #expect(one.status == 200)
            #expect(one.json["id"] as? Int == 9 && one.json["state"] as? Int == 0 && one.json["description"] as? String == "apu_pwr"
                    && one.json["direction"] as? String == "out")
            for missing in ["20", "-1", "abc", "9x"] {
                let r = try await legacy.request("GET", "/api/v1/gpio/\(missing)")
                #expect(r.status == 404 && r.json["error"] as? String == "id not found", "gpio/\(missing): \(r.text)")
                #expect(r.headers["content-type"] == "application/problem+json")
            }
        }
    }

    @Test func aTimedWriteAnswersAtOnceAndWritesTheOppositeStateWhenItsTimeIsUp() async throws {
        let clock = manualClock()
        try await withAgent(apiConfig(stateDir: scratchDirectory()), clock: clock) { agent, _ async throws in
            let legacy = HTTP(port: agent.port, token: nil)
            let bank = agent.hardware.simulatedBank!
            let sleepers = clock.sleeperCount
            // osfv power_off: a 6 s press. The answer comes before any time passes on the agent's clock.
            let start = clock.now()
            let r = try await legacy.request("PATCH", "/api/v1/gpio/9", json: ["state": 1, "direction": "out", "time": 6])
            #expect(r.status == 200 && r.json["state"] as? Int == 1 && r.json["description"] as? String == "apu_pwr")
            #expect(bank.isActive("power_button"))
            await clock.waitForSleepers(sleepers + 1)
            clock.advance(by: .milliseconds(5999))
            #expect(try await legacy.request("GET", "/api/v1/gpio/9").json["state"] as? Int == 1, "still pressed at 5.999 s")
            clock.advance(by: .milliseconds(1))
            #expect(await waitForLevel(bank, "power_button", false))
            #expect(try await legacy.request("GET", "/api/v1/gpio/9").json["state"] as? Int == 0)
            let edges = bank.history(of: "power_button").filter { $0.at >= start }
            #expect(edges.map(\.active) == [true, false])
            #expect(edges.count == 2 && edges[1].at - edges[0].at == .seconds(6), "a 6 s press: \(edges)")
        }
    }

    @Test func aPressOnAnAlreadyPressedLineEndsReleased() async throws {
        let clock = manualClock()
        try await withAgent(apiConfig(stateDir: scratchDirectory()), clock: clock) { agent, _ async throws in
            let legacy = HTTP(port: agent.port, token: nil)
            let bank = agent.hardware.simulatedBank!
            #expect(try await legacy.request("PATCH", "/api/v1/gpio/11", json: ["state": 1]).json["state"] as? Int == 1)
            let sleepers = clock.sleeperCount
            #expect(try await legacy.request("PATCH", "/api/v1/gpio/11", json: ["state": 1, "time": 2]).status == 200)
            await clock.waitForSleepers(sleepers + 1)
            clock.advance(by: .seconds(2))
            // The opposite of the requested state, not the value before (which was pressed too).
            #expect(await waitForLevel(bank, "cmos_clear", false))
            // And the other way round: a timed 0 becomes 1.
            #expect(try await legacy.request("PATCH", "/api/v1/gpio/11", json: ["state": 0, "time": 3]).json["state"] as? Int == 0)
            await clock.waitForSleepers(sleepers + 1)
            clock.advance(by: .seconds(3))
            #expect(await waitForLevel(bank, "cmos_clear", true))
        }
    }

    @Test func aLaterWriteCancelsThePendingTimer() async throws {
        let clock = manualClock()
        try await withAgent(apiConfig(stateDir: scratchDirectory()), clock: clock) { agent, _ async throws in
            let legacy = HTTP(port: agent.port, token: nil)
            let bank = agent.hardware.simulatedBank!
            let sleepers = clock.sleeperCount
            let start = clock.now()
            // A long press released early: the release applies at once and the timer never fires.
            #expect(try await legacy.request("PATCH", "/api/v1/gpio/8", json: ["state": 1, "time": 6]).status == 200)
            await clock.waitForSleepers(sleepers + 1)
            clock.advance(by: .seconds(1))
            let early = try await legacy.request("PATCH", "/api/v1/gpio/8", json: ["state": 0])
            #expect(early.status == 200 && early.json["state"] as? Int == 0 && !bank.isActive("reset_button"))
            #expect(clock.sleeperCount == sleepers, "the pending revert was cancelled")
            // Pressed again by hand after the first timer's time: nothing releases it behind the caller's back.
            clock.advance(by: .seconds(10))
            #expect(try await legacy.request("PATCH", "/api/v1/gpio/8", json: ["state": 1]).status == 200)
            clock.advance(by: .seconds(10))
            #expect(bank.isActive("reset_button"))
            let edges = bank.history(of: "reset_button").filter { $0.at >= start }
            #expect(edges.map(\.active) == [true, false, true])
            #expect(edges.count == 3 && edges[1].at - edges[0].at == .seconds(1))
            // A second timed write replaces the first: released 6 s after the second, not the first.
            #expect(try await legacy.request("PATCH", "/api/v1/gpio/8", json: ["state": 0]).status == 200)
            #expect(try await legacy.request("PATCH", "/api/v1/gpio/8", json: ["state": 1, "time": 6]).status == 200)
            await clock.waitForSleepers(sleepers + 1)
            clock.advance(by: .seconds(2))
            #expect(try await legacy.request("PATCH", "/api/v1/gpio/8", json: ["state": 1, "time": 6]).status == 200)
            await clock.waitForSleepers(sleepers + 1)
            #expect(clock.sleeperCount == sleepers + 1, "one timer per line")
            clock.advance(by: .seconds(5))
            #expect(bank.isActive("reset_button"), "the first timer was cancelled")
            clock.advance(by: .seconds(1))
            #expect(await waitForLevel(bank, "reset_button", false))
        }
    }

    @Test func bodiesAreReadAsRteCtrlReadsThem() async throws {
        let logged = Mutex<[String]>([])
        try await withAgent(apiConfig(stateDir: scratchDirectory()), log: { line in logged.withLock { $0.append(line) } }) { agent, _ in
        let legacy = HTTP(port: agent.port, token: nil)
        let bank = agent.hardware.simulatedBank!
        func patch(_ n: Int, _ body: String, type: String = "application/json") async throws -> RawHTTPResponse {
            try await legacy.request("PATCH", "/api/v1/gpio/\(n)", body: Array(body.utf8), headers: ["Content-Type": type])
        }
        // Any Content-Type (JSON, text/plain, curl -d's form type, none); unknown fields ignored.
        for (i, type) in ["application/json", "text/plain", "application/x-www-form-urlencoded", ""].enumerated() {
            let r = try await patch(0, "{\"state\": \(i % 2 == 0 ? 1 : 0), \"extra\": [1, {\"x\": \"}\"}]}", type: type)
            #expect(r.status == 200 && r.json["state"] as? Int == (i % 2 == 0 ? 1 : 0), "\(type): \(r.text)")
        }
        // Any non-zero integer writes 1; a missing or null state writes 0; keys in any case.
        #expect(try await patch(0, "{\"state\": 7}").json["state"] as? Int == 1)
        #expect(try await patch(0, "{}").json["state"] as? Int == 0)
        #expect(try await patch(0, "{\"STATE\": 1}").json["state"] as? Int == 1)
        #expect(try await patch(0, "{\"state\": null, \"time\": null}").json["state"] as? Int == 0)
        #expect(!bank.isActive("relay"))
        // Wrong types, floats, negatives, not JSON: 403 bad parameters, nothing written.
        for bad in ["{\"state\": \"1\"}", "{\"state\": 1.0}", "{\"state\": 1e0}", "{\"state\": -1}", "{\"state\": true}",
                    "{\"state\": 1, \"time\": 1.5}", "{\"state\": 1, \"time\": \"6\"}", "{\"state\": 1, \"time\": 86401}",
                    "{\"state\": 1, \"direction\": 1}", "{\"state\": 1, \"direction\": \"sideways\"}", "state=1", "", "[1]",
                    "{\"state\": 18446744073709551616}"] {
            let r = try await patch(0, bad)
            #expect(r.status == 403 && r.json["error"] as? String == "bad parameters", "\(bad) → \(r.status) \(r.text)")
            #expect(r.headers["content-type"] == "application/problem+json")
        }
        #expect(!bank.isActive("relay"), "no bad request wrote anything")
        // Unknown ids: 404 id not found.
        let unknown = try await patch(42, "{\"state\": 1}")
        #expect(unknown.status == 404 && unknown.json["error"] as? String == "id not found")

        // direction: an output becomes an input and back; the state of an input is ignored.
        let asInput = try await patch(10, "{\"direction\": \"in\", \"state\": 1}")
        #expect(asInput.status == 200 && asInput.json["direction"] as? String == "in")
        #expect(try await legacy.request("GET", "/api/v1/gpio/10").json["direction"] as? String == "in")
        let asOutput = try await patch(10, "{\"direction\": \"out\", \"state\": 1}")
        #expect(asOutput.json["direction"] as? String == "out" && asOutput.json["state"] as? Int == 1)
        #expect(bank.isActive("mode_switch"))
        // ext1 is an input: a state alone changes nothing; "out" makes it an output.
        let ignored = try await patch(14, "{\"state\": 1}")
        #expect(ignored.status == 200 && ignored.json["direction"] as? String == "in" && ignored.json["state"] as? Int == 0)
        let driven = try await patch(14, "{\"state\": 1, \"direction\": \"out\"}")
        #expect(driven.json["direction"] as? String == "out" && driven.json["state"] as? Int == 1 && bank.isActive("ext1"))
        #expect(try await patch(14, "{\"direction\": \"i\"}").json["direction"] as? String == "in")
        // The power LED input senses the DUT: never driven, and the log says why.
        let refused = try await patch(13, "{\"state\": 1, \"direction\": \"out\"}")
        #expect(refused.status == 403 && refused.json["error"] as? String == "bad parameters")
        #expect((refused.json["detail"] as? String ?? "").contains("input_only"))
        #expect(try await legacy.request("GET", "/api/v1/gpio/13").json["direction"] as? String == "in")
        #expect(logged.withLock { $0.contains { $0.contains("gpio/13") && $0.contains("input_only") } }, "\(logged.withLock { $0 })")
        // A configured output turned into an input is an output again after shutdown's safe state.
        #expect(try await patch(12, "{\"direction\": \"in\"}").json["direction"] as? String == "in")
        #expect(await agent.hardware.gpio!.restoreSafeState().isEmpty)
        #expect(try await legacy.request("GET", "/api/v1/gpio/12").json["direction"] as? String == "out")
        }
    }

    @Test func whoMayWriteIsDecidedBeforeTheLineIsLookedUp() async throws {
        var config = try apiConfig(stateDir: scratchDirectory())
        config.compat.trustedNetworks = ["127.0.0.2/32"]
        try await withAgent(config) { agent, c in
            let stranger = HTTP(port: agent.port, token: nil, source: "127.0.0.3")
            let trusted = HTTP(port: agent.port, token: nil, source: "127.0.0.2")
            // Untrusted address: 403 whether the line exists or not.
            for n in [9, 42] {
                let r = try await stranger.request("PATCH", "/api/v1/gpio/\(n)", json: ["state": 1])
                #expect(r.status == 403 && r.json["type"] as? String == "https://rte-agent.dev/problems/untrusted-address", "\(n): \(r.text)")
            }
            #expect(try await trusted.request("PATCH", "/api/v1/gpio/42", json: ["state": 1]).status == 404)
            // Leased: 423 for everyone but the bound address, whether the line exists or not.
            let token = try await c["alice"]!.request("POST", "/api/v1/leases", json: ["ttl_s": 600, "purpose": "robot run"]).json["token"] as! String
            #expect(try await c["alice"]!.request("POST", "/api/v1/leases/current/bind", json: ["address": "127.0.0.4"], leaseToken: token).status == 200)
            for n in [0, 42] {
                let r = try await trusted.request("PATCH", "/api/v1/gpio/\(n)", json: ["state": 1])
                #expect(r.status == 423 && r.json["holder"] as? String == "alice", "\(n): \(r.text)")
            }
            #expect(!agent.hardware.simulatedBank!.isActive("relay"), "nothing changed")
            let holder = HTTP(port: agent.port, token: nil, source: "127.0.0.4")
            #expect(try await holder.request("PATCH", "/api/v1/gpio/0", json: ["state": 1, "direction": "out", "time": 0]).status == 200)
            #expect(agent.hardware.simulatedBank!.isActive("relay"))
            // Reading stays open to everyone.
            #expect(try await stranger.request("GET", "/api/v1/gpio/0").json["state"] as? Int == 1)
        }
    }

    @Test func everyOutputsStateRoundTripsAndMatchesTheNativeView() async throws {
        try await withAgent(apiConfig(stateDir: scratchDirectory())) { agent, c in
            let legacy = HTTP(port: agent.port, token: nil)
            let list = try await legacy.request("GET", "/api/v1/gpio").jsonArray
            for line in list where line["direction"] as? String == "out" {
                let n = line["id"] as! Int, role = line["role"] as! String
                for state in [1, 0] {
                    let w = try await legacy.request("PATCH", "/api/v1/gpio/\(n)", json: ["state": state, "direction": "out"])
                    #expect(w.status == 200 && w.json["state"] as? Int == state, "gpio \(n) ← \(state)")
                    #expect(try await legacy.request("GET", "/api/v1/gpio/\(n)").json["state"] as? Int == state)
                    // Native view: open-collector 1 = driven low = active for these active-low lines; relay 1 = high = active.
                    let native = try await c["alice"]!.request("GET", "/api/v1/lines/\(role)").json
                    #expect(native["active"] as? Bool == (state == 1), "\(role) state \(state)")
                }
            }
        }
    }

    @Test func thePowerLEDInputFollowsTheSimulatedApu2() async throws {
        try await withAgent(apiConfig(stateDir: scratchDirectory())) { agent, _ async throws in
            let legacy = HTTP(port: agent.port, token: nil)
            let sim = agent.hardware.simulator!
            #expect(try await legacy.request("GET", "/api/v1/gpio/13").json["state"] as? Int == 0)
            #expect(try await legacy.request("PATCH", "/api/v1/gpio/0", json: ["state": 1]).status == 200)
            await sim.sync()
            #expect(await sim.powered)
            #expect(try await legacy.request("GET", "/api/v1/gpio/13").json["state"] as? Int == 1)
            #expect(try await legacy.request("PATCH", "/api/v1/gpio/0", json: ["state": 0]).status == 200)
            await sim.sync()
            #expect(try await legacy.request("GET", "/api/v1/gpio/13").json["state"] as? Int == 0)
        }
    }

    @Test func theRobotFrameworkSuiteRunsUnchanged() async throws {
        var config = try apiConfig(stateDir: scratchDirectory(), timing: "realistic")
        config.http.consolePort = 0
        try await withAgent(config) { agent, _ in
            let out = scratchDirectory("robot")
            let args = ["python3", "-m", "robot", "--outputdir", out, "--variable", "API_PORT:\(agent.port)",
                        "--variable", "CONSOLE_PORT:\(agent.consolePort!.port)", packageRoot + "/Tests/robot/rte-compat.robot"]
            let (status, log) = try await run(args)
            #expect(status == 0, "\(log)")
            #expect(log.contains("7 tests, 7 passed, 0 failed"), "\(log)")
        }
    }
}
