import AgentRuntime
@testable import Configuration
import Foundation
import Testing

@Suite(.serialized) struct CompatTests {
    @Test func theRTEClientsCallsPowerTheSimulatedApu2OnResetAndOff() async throws {
        try await withAgent(apiConfig(stateDir: scratchDirectory())) { agent, _ in
            let legacy = HTTP(port: agent.port, token: nil)  // rtectrl sends no token
            let sim = agent.hardware.simulator!
            // Relay on: an apu2 boots when its supply comes on.
            #expect(try await legacy.request("PATCH", "/api/v1/gpio/0", json: ["state": 1, "direction": "out", "time": 0]).status == 200)
            await sim.sync()
            #expect(await sim.powered)
            #expect(try await legacy.request("GET", "/api/v1/gpio/0").json["state"] as? Int == 1)
            // Power off: hold the power button 5 s (the agent times the press).
            let off = try await legacy.request("PATCH", "/api/v1/gpio/9", json: ["state": 1, "direction": "out", "time": 5])
            #expect(off.status == 200 && off.json["state"] as? Int == 0, "released after the press")
            await sim.sync()
            #expect(await !sim.powered)
            // Power on: a 1 s press.
            #expect(try await legacy.request("PATCH", "/api/v1/gpio/9", json: ["state": 1, "direction": "out", "time": 1]).status == 200)
            await sim.sync()
            #expect(await sim.powered)
            // Reset: a 1 s press of the reset button brings the firmware banner again.
            let before = agent.hardware.capture.endOffset
            #expect(try await legacy.request("PATCH", "/api/v1/gpio/8", json: ["state": 1, "direction": "out", "time": 1]).status == 200)
            let banner = try await onThread { () -> Bool in
                let s = try TestSocket.connect(port: agent.port)
                defer { s.close() }
                s.send(Array("GET /api/v1/serial/stream?from=\(before) HTTP/1.0\r\nAuthorization: Bearer \(tokens["alice"]!)\r\n\r\n".utf8))
                var acc: [UInt8] = []
                return s.receiveBlocking(until: "PC Engines apu2", into: &acc)
            }
            #expect(banner)
        }
    }

    @Test func everyLinesStateRoundTripsAndMatchesTheLevel() async throws {
        try await withAgent(apiConfig(stateDir: scratchDirectory())) { agent, c in
            let legacy = HTTP(port: agent.port, token: nil)
            let list = try await legacy.request("GET", "/api/v1/gpio").jsonArray
            #expect(list.map { $0["id"] as! Int } == [0, 1, 2, 3, 8, 9])
            for line in list {
                let n = line["id"] as! Int, name = line["name"] as! String
                for state in [1, 0] {
                    let w = try await legacy.request("PATCH", "/api/v1/gpio/\(n)", json: ["state": state, "direction": "out"])
                    #expect(w.status == 200 && w.json["state"] as? Int == state, "gpio \(n) ← \(state)")
                    #expect(try await legacy.request("GET", "/api/v1/gpio/\(n)").json["state"] as? Int == state)
                    // Native view: open-collector 1 = driven low = active for these active-low lines; relay 1 = high = active.
                    let native = try await c["alice"]!.request("GET", "/api/v1/lines/\(name)").json
                    #expect(native["active"] as? Bool == (state == 1), "\(name) state \(state)")
                }
            }
            let bad = try await legacy.request("PATCH", "/api/v1/gpio/9", json: ["state": 2])
            #expect(bad.status == 422)
            #expect(try await legacy.request("GET", "/api/v1/gpio/17").status == 404)
        }
    }

    @Test func aLeasedDeviceTakesLegacyWritesOnlyFromTheHoldersAddress() async throws {
        try await withAgent(apiConfig(stateDir: scratchDirectory())) { agent, c in
            let token = try await c["alice"]!.request("POST", "/api/v1/leases", json: ["ttl_s": 600, "purpose": "robot run"]).json["token"] as! String
            #expect(try await c["alice"]!.request("POST", "/api/v1/leases/current/bind", json: ["address": "127.0.0.2"], leaseToken: token).status == 200)
            let stranger = HTTP(port: agent.port, token: nil, source: "127.0.0.3")
            let holder = HTTP(port: agent.port, token: nil, source: "127.0.0.2")
            let refused = try await stranger.request("PATCH", "/api/v1/gpio/0", json: ["state": 1, "direction": "out", "time": 0])
            #expect(refused.status == 423 && refused.json["holder"] as? String == "alice")
            #expect(!agent.hardware.simulatedBank!.isActive("relay"), "nothing changed")
            #expect(try await holder.request("PATCH", "/api/v1/gpio/0", json: ["state": 1, "direction": "out", "time": 0]).status == 200)
            #expect(agent.hardware.simulatedBank!.isActive("relay"))
            // Reading stays open to everyone.
            #expect(try await stranger.request("GET", "/api/v1/gpio/0").json["state"] as? Int == 1)
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
            #expect(log.contains("2 tests, 2 passed, 0 failed"), "\(log)")
        }
    }
}
