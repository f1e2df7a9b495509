import AgentRuntime
import Auth
@testable import Configuration
import Foundation
import JSONDocument
import POSIXIO
import TestSupport
import Testing

/// What fleet engines (labgrid, LAVA) need from the agent: an engine identity that acts under the
/// lease it holds without X-Lease-Token, credentials in a URL (Basic), power and lines as 1/0 text,
/// a raw console port, and rtectl's token file and idempotent reserve.
@Suite(.serialized) struct EngineAccessTests {
    func config() throws -> AgentConfig {
        var config = try apiConfig(stateDir: scratchDirectory("engine"))
        for (user, token) in engineTokens.sorted(by: { $0.key < $1.key }) {
            config.auth.tokens.append(TokenConfig(user: user, sha256: SHA256.hex(token), admin: false, engine: true))
        }
        return config
    }

    func basic(_ user: String, _ token: String) -> [String: String] {
        ["Authorization": "Basic " + Base64.encode(Array("\(user):\(token)".utf8))]
    }

    @Test func basicCredentialsIdentifyTheTokensUserOnly() async throws {
        try await withAgent(config()) { agent, _ in
            let anyone = HTTP(port: agent.port, token: nil)
            let me = try await anyone.request("GET", "/api/v1/me", headers: basic("alice", tokens["alice"]!))
            #expect(me.status == 200 && me.json["user"] as? String == "alice", "\(me.text)")
            // The user in the URL must be the token's: a token does not lend itself to another name.
            #expect(try await anyone.request("GET", "/api/v1/me", headers: basic("bob", tokens["alice"]!)).status == 401)
            #expect(try await anyone.request("GET", "/api/v1/me", headers: basic("alice", "wrong")).status == 401)
            #expect(try await anyone.request("GET", "/api/v1/me", headers: ["Authorization": "Basic !!notbase64"]).status == 401)
            #expect(try await anyone.request("GET", "/api/v1/me", headers: basic("alice", "")).status == 401)
            let noColon = ["Authorization": "Basic " + Base64.encode(Array("alice".utf8))]
            #expect(try await anyone.request("GET", "/api/v1/me", headers: noColon).status == 401)
        }
    }

    @Test func anEngineActsUnderTheLeaseItHoldsAndOnlyThat() async throws {
        try await withAgent(config()) { agent, c in
            let lab = HTTP(port: agent.port, token: engineTokens["labgrid"]!)
            let lava = HTTP(port: agent.port, token: engineTokens["lava"]!)
            let alice = c["alice"]!
            // Nobody holds the board: no change without a lease, engine or not.
            let free = try await lab.request("PUT", "/api/v1/power/value", body: Array("1".utf8), headers: ["Content-Type": "text/plain"])
            #expect(free.status == 409 && free.json["type"] as? String != nil, "\(free.text)")
            // A person holds it: the engine is refused with who holds it.
            let token = try await alice.request("POST", "/api/v1/leases", json: ["ttl_s": 600, "purpose": "debugging"]).json["token"] as! String
            let held = try await lab.request("PUT", "/api/v1/power/value", body: Array("1".utf8), headers: ["Content-Type": "text/plain"])
            #expect(held.status == 423 && held.json["holder"] as? String == "alice", "\(held.text)")
            // Alice herself (not an engine) still needs her lease token.
            let bare = try await alice.request("POST", "/api/v1/power", json: ["action": "on"])
            #expect(bare.status == 423 && bare.text.contains("X-Lease-Token"), "\(bare.text)")
            #expect(try await alice.request("DELETE", "/api/v1/leases/current", leaseToken: token).status == 204)

            // The engine's lease: its power, lines, renew, bind and release need no lease token.
            let lease = try await lab.request("POST", "/api/v1/leases", json: ["ttl_s": 120, "purpose": "labgrid place apu2"])
            #expect(lease.status == 201)
            let on = try await lab.request("PUT", "/api/v1/power/value", body: Array("1\n".utf8), headers: ["Content-Type": "text/plain"])
            #expect(on.status == 200 && on.text == "1", "\(on.text)")
            #expect(try await lab.request("GET", "/api/v1/power/value").text == "1")
            #expect(try await alice.request("GET", "/api/v1/power").json["state"] as? String == "on")
            let line = try await lab.request("PUT", "/api/v1/lines/cmos_clear/value", body: Array("1".utf8), headers: ["Content-Type": "text/plain"])
            #expect(line.status == 200 && line.text == "1", "\(line.text)")
            #expect(try await lab.request("GET", "/api/v1/lines/cmos_clear/value").text == "1")
            #expect(try await alice.request("GET", "/api/v1/lines/cmos_clear").json["active"] as? Bool == true)
            #expect(try await lab.request("PUT", "/api/v1/lines/cmos_clear/value", body: Array("0".utf8), headers: ["Content-Type": "text/plain"]).text == "0")
            #expect(try await lab.request("PUT", "/api/v1/lines/power_led/value", body: Array("1".utf8), headers: ["Content-Type": "text/plain"]).status == 422)
            #expect(try await lab.request("PUT", "/api/v1/lines/nope/value", body: Array("1".utf8), headers: ["Content-Type": "text/plain"]).status == 404)
            #expect(try await lab.request("PUT", "/api/v1/power/value", body: Array("on".utf8), headers: ["Content-Type": "text/plain"]).status == 400)
            let renewed = try await lab.request("POST", "/api/v1/leases/current/renew", json: ["ttl_s": 300])
            #expect(renewed.status == 200 && renewed.json["expires_in_s"] as? Int == 300, "\(renewed.text)")
            #expect(try await lab.request("POST", "/api/v1/leases/current/bind", json: [:]).json["bound_address"] as? String == "127.0.0.1")
            // Another engine and a person are both kept out.
            #expect(try await lava.request("PUT", "/api/v1/power/value", body: Array("0".utf8), headers: ["Content-Type": "text/plain"]).status == 423)
            #expect(try await lava.request("DELETE", "/api/v1/leases/current").status == 423)
            #expect(try await alice.request("POST", "/api/v1/leases", json: ["ttl_s": 60]).status == 409)
            // A wrong lease token is not rescued by being the holder: what is sent is what is checked.
            #expect(try await lab.request("PUT", "/api/v1/power/value", body: Array("0".utf8), leaseToken: "stale",
                                          headers: ["Content-Type": "text/plain"]).status == 423)
            // 0 is a PDU outlet's off: the supply is cut.
            let off = try await lab.request("PUT", "/api/v1/power/value", body: Array("0".utf8), headers: ["Content-Type": "text/plain"])
            #expect(off.status == 200 && off.text == "0")
            #expect(try await lab.request("DELETE", "/api/v1/leases/current").status == 204)
            #expect(try await alice.request("GET", "/api/v1/leases/current").status == 404)
        }
    }

    /// Issue 33: `POST /runs` and the console upgrade took the lease from X-Lease-Token only, so an
    /// engine's run queued for a lease of its own behind the engine's, and its console was read-only.
    @Test func anEnginePostsARunAndTypesOnTheConsoleUnderItsLeaseWithoutALeaseToken() async throws {
        try await withAgent(config()) { agent, c in
            let lab = HTTP(port: agent.port, token: engineTokens["labgrid"]!)
            let lease = try await lab.request("POST", "/api/v1/leases", json: ["ttl_s": 600, "purpose": "labgrid place apu2"])
            let leaseID = try #require(lease.json["id"] as? String, "\(lease.text)")
            var spec = thirdOfFive
            spec["wait_s"] = 0  // under its own lease it would be refused at once: the board is held
            let posted = try await lab.request("POST", "/api/v1/runs", json: spec)
            #expect(posted.status == 202, "\(posted.text)")
            let run = try await finishedRun(lab, try #require(posted.json["id"] as? String))
            #expect(run["state"] as? String == "passed", "\(run["message"] ?? "") \(failure(run))")
            #expect(run["lease_id"] as? String == leaseID && run["own_lease"] as? Bool == false, "\(run)")
            // A caller's lease outlives the run: the engine still holds the board.
            #expect(try await lab.request("GET", "/api/v1/leases").json["current"].flatMap { ($0 as? [String: Any])?["id"] as? String } == leaseID)

            // The console, upgraded with the engine's bearer token only, types (the run left a shell).
            let s = try TestSocket.connect(port: agent.port)
            defer { s.close() }
            s.send(Array(("GET /api/v1/console HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: rte-console\r\n"
                          + "Authorization: Bearer \(engineTokens["labgrid"]!)\r\n\r\n").utf8))
            var acc: [UInt8] = []
            #expect(await s.receive(until: "\r\n\r\n", into: &acc))
            #expect(String(decoding: acc, as: UTF8.self).hasPrefix("HTTP/1.1 101"))
            let written = agent.hardware.serial.status.bytesWritten
            s.send(Array("hostname\r".utf8))
            // The shell's answer, not only the echo of what was typed.
            #expect(await s.receive(until: "hostname\r\napu2\r\n", into: &acc), "\(String(decoding: acc, as: UTF8.self))")
            #expect(agent.hardware.serial.status.bytesWritten > written)
            // Another engine's console stays read-only.
            let other = try TestSocket.connect(port: agent.port)
            defer { other.close() }
            other.send(Array(("GET /api/v1/console HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: rte-console\r\n"
                              + "Authorization: Bearer \(engineTokens["lava"]!)\r\n\r\n").utf8))
            var oacc: [UInt8] = []
            #expect(await other.receive(until: "\r\n\r\n", into: &oacc))
            other.send(Array("reboot\r".utf8))
            #expect(await other.receive(until: "read-only console", into: &oacc))
            _ = c
        }
    }

    @Test func theRawConsolePortSitsBesideTheTelnetOneWithoutNegotiation() async throws {
        var config = try config()
        config.http.consolePort = 0
        config.http.consoleRawPort = 0
        try await withAgent(config) { agent, c in
            let raw = try TestSocket.connect(port: #require(agent.rawConsolePort?.port))
            let telnet = try TestSocket.connect(port: #require(agent.consolePort?.port))
            defer { raw.close(); telnet.close() }
            var r: [UInt8] = [], t: [UInt8] = []
            #expect(await raw.receive(until: "console; you may type", into: &r))
            #expect(r.first != 0xff, "no telnet negotiation on the raw port")
            #expect(await telnet.receive(until: "console; you may type", into: &t))
            #expect(t.starts(with: [0xff, 0xfb, 0x03]))
            // The engine's lease bound to this address: the raw connection types (a 0xff byte and
            // a NUL pass through unfiltered, as a raw serial line carries them).
            let lab = HTTP(port: agent.port, token: engineTokens["labgrid"]!)
            #expect(try await lab.request("POST", "/api/v1/leases", json: ["ttl_s": 120, "bind_address": true]).status == 201)
            #expect(try await lab.request("PUT", "/api/v1/power/value", body: Array("1".utf8), headers: ["Content-Type": "text/plain"]).status == 200)
            #expect(await raw.receive(until: "Press Ctrl-B", into: &r))
            raw.send([0x02])
            #expect(await raw.receive(until: "iPXE> ", into: &r))
            #expect(await telnet.receive(until: "iPXE> ", into: &t), "both ports show the same console")
            _ = c
        }
    }

    @Test func rtectlReadsItsTokenFromAFileAndReservesOrRenewsItsOwnLease() async throws {
        try await withAgent(config()) { agent, c in
            let state = scratchDirectory("engine-rtectl")
            let tokenFile = state + "/lava.token"
            try (engineTokens["lava"]! + "\n").write(toFile: tokenFile, atomically: true, encoding: .utf8)
            let env = ["RTE_AGENT": "http://127.0.0.1:\(agent.port)", "RTECTL_STATE_DIR": state, "HOME": state, "PATH": "/usr/bin:/bin"]
            func rtectl(_ args: [String]) async throws -> (Int32, String) {
                try await run([builtProduct("rtectl")] + args + ["--token-file", tokenFile], env: env)
            }
            let first = try await rtectl(["reserve", "--ttl", "10m", "--bind", "--or-renew", "--purpose", "LAVA job 7"])
            #expect(first.0 == 0 && first.1.contains("reserved"), "\(first)")
            let lease = try await c["alice"]!.request("GET", "/api/v1/leases/current").json
            #expect(lease["holder"] as? String == "lava" && lease["bound_address"] as? String == "127.0.0.1")
            // The same command again (LAVA's next power command in the same job) renews.
            let again = try await rtectl(["reserve", "--ttl", "20m", "--bind", "--or-renew"])
            #expect(again.0 == 0 && again.1.contains("renewed"), "\(again)")
            #expect(try await c["alice"]!.request("GET", "/api/v1/leases/current").json["id"] as? String == lease["id"] as? String)
            // Without --or-renew, the same caller is told the board is taken (by itself).
            #expect(try await rtectl(["reserve"]).0 == 3)
            #expect(try await rtectl(["power", "on"]).0 == 0)
            let released = try await rtectl(["release", "--power", "hard_off", "--if-held"])
            #expect(released.0 == 0 && released.1.contains("power off") && released.1.contains("released"), "\(released)")
            #expect(try await c["alice"]!.request("GET", "/api/v1/power").json["state"] as? String == "off")
            let nothing = try await rtectl(["release", "--power", "hard_off", "--if-held"])
            #expect(nothing.0 == 0 && nothing.1.contains("not holding the board (it is free)"), "\(nothing)")
            // A person holds the board: --or-renew does not take it, exit 3 says busy.
            let token = try await c["alice"]!.request("POST", "/api/v1/leases", json: ["ttl_s": 600, "purpose": "bisecting"]).json["token"] as! String
            let busy = try await rtectl(["reserve", "--or-renew"])
            #expect(busy.0 == 3 && busy.1.contains("alice"), "\(busy)")
            #expect(try await c["alice"]!.request("POST", "/api/v1/power", json: ["action": "on"], leaseToken: token).status == 200)
            let leftAlone = try await rtectl(["release", "--power", "hard_off", "--if-held"])
            #expect(leftAlone.0 == 0 && leftAlone.1.contains("held by alice"), "\(leftAlone)")
            #expect(try await c["alice"]!.request("GET", "/api/v1/power").json["state"] as? String == "on", "her board stays on")
            #expect(try await rtectl(["release"]).0 != 0, "without --if-held, releasing a lease one does not hold fails")
            // An agent it cannot reach is not a board it does not hold: exit 4, the lease file kept.
            _ = try await rtectl(["reserve", "--or-renew"])
            let unreachable = try await run([builtProduct("rtectl"), "release", "--if-held", "--token-file", tokenFile],
                                            env: env.merging(["RTE_AGENT": "http://127.0.0.1:1"]) { $1 })
            #expect(unreachable.0 == 4, "\(unreachable)")
            #expect(try await c["alice"]!.request("DELETE", "/api/v1/leases/current", leaseToken: token).status == 204)
            // A missing or empty token file is a usage error, not a call without credentials.
            #expect(try await run([builtProduct("rtectl"), "status", "--token-file", state + "/none"], env: env).0 == 2)
            try "".write(toFile: state + "/empty", atomically: true, encoding: .utf8)
            #expect(try await run([builtProduct("rtectl"), "status", "--token-file", state + "/empty"], env: env).0 == 2)
        }
    }
}
