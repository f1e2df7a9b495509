import AgentRuntime
import Auth
@testable import Configuration
import Foundation
import POSIXIO
import TestSupport
import Testing

/// labgrid and LAVA driving the QEMU virtual apu2 through the agent, with the real tools: the
/// labgrid coordinator, exporter and client from PyPI (scripts/install-deps puts them in
/// /opt/rte-labgrid), Debian's lava-dispatcher (`lava-run`).
let labgridBin = "/opt/rte-labgrid/bin"
let engineTokens = ["labgrid": "labgrid-engine-token", "lava": "lava-engine-token"]

/// The rig's agent with the engines' identities (`engine: true`) and the raw console port.
func fleetConfig(_ rig: Rig.Ready) throws -> AgentConfig {
    var config = try rigConfig(rig, stateDir: scratchDirectory("fleet"))
    config.http.consolePort = 0
    config.http.consoleRawPort = 0
    for (user, token) in engineTokens.sorted(by: { $0.key < $1.key }) {
        config.auth.tokens.append(TokenConfig(user: user, sha256: SHA256.hex(token), admin: false, engine: true))
    }
    return config
}

func unusedPort() throws -> Int {
    let l = try TCPListener.listen(host: "127.0.0.1", port: 0)
    defer { l.close() }
    return l.port
}

/// Polls `check` every 100 ms until it holds or `seconds` pass.
func eventually(_ seconds: Double, _ check: () async throws -> Bool) async rethrows -> Bool {
    let deadline = ContinuousClock.now + .seconds(seconds)
    while ContinuousClock.now < deadline {
        if try await check() { return true }
        try? await Task.sleep(for: .milliseconds(100))
    }
    return try await check()
}

@Suite(.serialized, .enabled(if: rigEnabled, "RTE_SKIP_RIG=1 skips the QEMU rig"))
struct FleetTests {
    @Test func labgridAcquiresAPlaceBootsTheMenuEntryLogsInAndHoldsTheAgentsLease() async throws {
        let rig = try await Rig.shared.prepare()
        let dir = scratchDirectory("labgrid")
        try await withAgent(fleetConfig(rig)) { agent, c in
            let coordinator = "127.0.0.1:\(try unusedPort())"
            let env = ["PATH": "\(labgridBin):/usr/bin:/bin", "HOME": dir, "LG_COORDINATOR": coordinator, "LG_PLACE": "apu2-01",
                       "PYTHONPATH": packageRoot + "/deploy/labgrid", "PYTHONUNBUFFERED": "1"]
            // The coordinator keeps places.yaml and resources.yaml in its working directory.
            let coord = try TestChild(["/bin/sh", "-c", "cd \"$0\" && exec \(labgridBin)/labgrid-coordinator --listen \(coordinator)", dir],
                                      environment: env, deadlineSeconds: 1500)
            func client(_ args: [String]) async throws -> (Int32, String) {
                try await run([labgridBin + "/labgrid-client"] + args, env: env, deadlineSeconds: 120)
            }
            // An exporter started before the coordinator listens gives up at once.
            #expect(try await eventually(60) { try await client(["places"]).0 == 0 }, "the coordinator answers: \(coord.output)")
            // The shipped exporter file, its values from the environment (the token in no file).
            let exporter = try TestChild([labgridBin + "/labgrid-exporter", "--coordinator", coordinator, "--name", "rte-01",
                                          packageRoot + "/deploy/labgrid/exporter.yaml"],
                                         environment: env.merging(["RTE_HOST": "127.0.0.1", "RTE_API_PORT": "\(agent.port)",
                                                                   "RTE_CONSOLE_RAW_PORT": "\(agent.rawConsolePort!.port)",
                                                                   "RTE_LABGRID_TOKEN": engineTokens["labgrid"]!]) { $1 },
                                         deadlineSeconds: 1500)
            defer { _ = exporter.process.stop(grace: 5); _ = coord.process.stop(grace: 5) }
            #expect(try await eventually(60) {
                (try await client(["resources"])).1.contains("rte-01/apu2-01/NetworkPowerPort")
            }, "the exporter registered the RTE's resources: \(exporter.output)")
            #expect(try await client(["-p", "apu2-01", "create"]).0 == 0)
            #expect(try await client(["-p", "apu2-01", "add-match", "rte-01/apu2-01/*"]).0 == 0)
            #expect(try await client(["-p", "apu2-01", "acquire"]).0 == 0)

            // labgrid's stock power client reads through the agent; it cannot switch without the lease.
            let get = try await client(["-p", "apu2-01", "power", "get"])
            #expect(get.0 == 0 && get.1.contains("is off"), "\(get.1)")
            let refused = try await client(["-p", "apu2-01", "power", "on"])
            #expect(refused.0 != 0 && refused.1.contains("409"), "\(refused.1)")
            #expect(try await c["alice"]!.request("GET", "/api/v1/power").json["state"] as? String == "off")

            // The strategy: lease, console, the agent boots to the menu entry, ShellDriver logs in.
            let spec = dir + "/boot-to-menu-entry.yaml"
            try String(contentsOfFile: packageRoot + "/deploy/labgrid/boot-to-menu-entry.yaml", encoding: .utf8)
                .replacing(every: "10.0.2.2:8080", with: "10.0.2.2:\(rig.port)")
                .write(toFile: spec, atomically: true, encoding: .utf8)
            let go = dir + "/go"
            let sessionEnv = env.merging(["LG_ENV": packageRoot + "/deploy/labgrid/env.yaml", "LG_RTE_BOOT_SPEC": spec, "SESSION_GO": go]) { $1 }
            let session = try TestChild([labgridBin + "/python3", packageRoot + "/Tests/labgrid/session.py", "boot"],
                                        environment: sessionEnv, deadlineSeconds: 900)
            guard await session.waitForOutput(containing: "READY\n") else {
                Issue.record("the labgrid session did not reach the shell:\n\(session.output)")
                return
            }
            #expect(session.output.contains("rte.entry=xen-linux-dev"), "the menu entry the agent picked booted: \(session.output)")
            #expect(session.output.contains("UNAME Linux"), "\(session.output)")
            #expect(session.output.contains("POWER on"))
            let lease = try await c["alice"]!.request("GET", "/api/v1/leases/current").json
            #expect(lease["holder"] as? String == "labgrid")
            #expect(lease["bound_address"] as? String == "127.0.0.1", "the labgrid client's console connection may type")
            // Interlock: a person cannot take the board while labgrid holds it.
            let rtectlState = scratchDirectory("labgrid-rtectl")
            let busy = try await rtectlOutput(["reserve", "--ttl", "10m"], agent: agent, user: "alice", stateDir: rtectlState)
            #expect(busy.0 == 3, "rtectl reserve while labgrid holds the board: \(busy)")
            #expect(busy.1.contains("labgrid"), "\(busy.1)")
            #expect(try await client(["-p", "apu2-01", "power", "get"]).1.contains("is on"))

            FileManager.default.createFile(atPath: go, contents: Data())
            let (status, out) = await session.waitForEnd()
            #expect(status == .exited(0), "\(out)")
            #expect(out.contains("POWER off\nDONE\nCLEANED"), "off through NetworkPowerDriver (PUT 0), then the lease released: \(out)")
            #expect(try await c["alice"]!.request("GET", "/api/v1/power").json["state"] as? String == "off")
            #expect(try await c["alice"]!.request("GET", "/api/v1/leases/current").status == 404, "released on cleanup")

            // And the other way: while a person holds the board, labgrid does not get it.
            let mine = try await rtectlOutput(["reserve", "--ttl", "10m"], agent: agent, user: "alice", stateDir: rtectlState)
            #expect(mine.0 == 0, "\(mine)")
            let (held, heldOut) = try await run([labgridBin + "/python3", packageRoot + "/Tests/labgrid/session.py", "hold"],
                                                env: sessionEnv, deadlineSeconds: 120)
            #expect(held != 0 && heldOut.contains("the agent did not grant the board") && heldOut.contains("alice"), "\(heldOut)")
            #expect(try await rtectlOutput(["release"], agent: agent, user: "alice", stateDir: rtectlState).0 == 0)

            // A labgrid client that dies keeps the lease only until its TTL; the next client of the
            // same place takes over the engine's stale lease at once.
            try? FileManager.default.removeItem(atPath: go)
            let dying = try TestChild([labgridBin + "/python3", packageRoot + "/Tests/labgrid/session.py", "hold"],
                                      environment: sessionEnv, deadlineSeconds: 120)
            #expect(await dying.waitForOutput(containing: "HOLDING"))
            kill(dying.pid, SIGKILL)
            _ = await dying.waitForEnd()
            let stale = try await c["alice"]!.request("GET", "/api/v1/leases/current").json
            #expect(stale["holder"] as? String == "labgrid")
            #expect((stale["expires_in_s"] as? Int ?? 0) <= 300, "ends by itself at most the driver's TTL later: \(stale)")
            let next = try TestChild([labgridBin + "/python3", packageRoot + "/Tests/labgrid/session.py", "hold"],
                                     environment: sessionEnv, deadlineSeconds: 120)
            #expect(await next.waitForOutput(containing: "HOLDING"), "\(next.output)")
            let taken = try await c["alice"]!.request("GET", "/api/v1/leases/current").json
            #expect(taken["holder"] as? String == "labgrid" && taken["id"] as? String != stale["id"] as? String)
            FileManager.default.createFile(atPath: go, contents: Data())
            #expect(await next.waitForEnd().0 == .exited(0))
            #expect(try await c["alice"]!.request("GET", "/api/v1/leases/current").status == 404)
            #expect(try await client(["-p", "apu2-01", "release"]).0 == 0)
        }
    }
}

/// lava-run (Debian's lava-dispatcher) with the shipped device type and dictionary, against the
/// QEMU virtual apu2 through the agent. lava-server's own base templates (base.jinja2) come from
/// its Debian package, unpacked by scripts/install-deps into /opt/rte-lava/device-types.
let lavaBaseTemplates = "/opt/rte-lava/device-types"

struct LAVAJob {
    var status: Int32
    var log: String
    var passed: Bool { status == 0 && log.contains("Job finished correctly") }
}

extension FleetTests {
    /// The shipped device dictionary pointed at this agent, rendered as lava-server would.
    func lavaDevice(_ agent: Agent, _ rig: Rig.Ready, dir: String) async throws -> String {
        let token = dir + "/rte-01.token", spec = dir + "/boot-xen-dev.yaml"
        try (engineTokens["lava"]! + "\n").write(toFile: token, atomically: true, encoding: .utf8)
        try String(contentsOfFile: packageRoot + "/deploy/lava/boot-xen-dev.yaml", encoding: .utf8)
            .replacing(every: "10.0.2.2:8080", with: "10.0.2.2:\(rig.port)").write(toFile: spec, atomically: true, encoding: .utf8)
        let dictionary = try String(contentsOfFile: packageRoot + "/deploy/lava/devices/apu2-01.jinja2", encoding: .utf8)
            .replacing(every: "http://rte-01.lab:8000", with: "http://127.0.0.1:\(agent.port)")
            .replacing(every: "/etc/lava-dispatcher/rte/rte-01.token", with: token)
            .replacing(every: "rte-01.lab 13541", with: "127.0.0.1 \(agent.consolePort!.port)")
            .replacing(every: "/etc/lava-dispatcher/rte/boot-xen-dev.yaml", with: spec)
            .replacing(every: "http://10.0.2.2:8080/menu.ipxe", with: "http://10.0.2.2:\(rig.port)/menu.ipxe")
            + "{% set rtectl = '\(builtProduct("rtectl"))' %}\n"
        try dictionary.write(toFile: dir + "/apu2-01.jinja2", atomically: true, encoding: .utf8)
        let (status, device) = try await run(["python3", packageRoot + "/Tests/lava/render_device.py", dir + "/apu2-01.jinja2",
                                              packageRoot + "/deploy/lava/device-types", lavaBaseTemplates], deadlineSeconds: 60)
        #expect(status == 0, "\(device)")
        // Reads that fit pexpect's 4000-byte search window (a 4092-byte read once hid "Linux version").
        #expect(device.contains("spawn_maxread: '2000'"), "\(device)")
        try device.write(toFile: dir + "/device.yaml", atomically: true, encoding: .utf8)
        return dir + "/device.yaml"
    }

    func lavaRun(_ job: String, device: String, rig: Rig.Ready, dir: String, id: Int) async throws -> LAVAJob {
        let path = dir + "/job-\(id).yaml"
        try String(contentsOfFile: packageRoot + "/deploy/lava/jobs/" + job, encoding: .utf8)
            .replacingOccurrences(of: "10.0.2.2:8080", with: "10.0.2.2:\(rig.port)").write(toFile: path, atomically: true, encoding: .utf8)
        let (status, log) = try await run(["lava-run", "--job-id", "\(id)", "--output-dir", dir + "/out-\(id)", "--device", device, path],
                                          env: ["PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "HOME": dir, "RTECTL_STATE_DIR": dir + "/rtectl"],
                                          deadlineSeconds: 1200)
        try log.write(toFile: dir + "/job-\(id).log", atomically: true, encoding: .utf8)
        return LAVAJob(status: status, log: log)
    }

    @Test func lavaRunBootsLogsInAndTestsThroughTheAgentAndWaitsForNoPerson() async throws {
        let rig = try await Rig.shared.prepare()
        let dir = scratchDirectory("lava")
        try await withAgent(fleetConfig(rig)) { agent, c in
            let device = try await lavaDevice(agent, rig, dir: dir)
            let alice = c["alice"]!

            // LAVA's own iPXE boot: power and console through the agent, the test passes.
            let own = try await lavaRun("lava-ipxe-boot.yaml", device: device, rig: rig, dir: dir, id: 1)
            #expect(own.passed, "lava-run (LAVA types at iPXE>): exit \(own.status), log in \(dir)/job-1.log\n\(own.log.suffix(3000))")
            #expect(own.log.contains("cmdline") && own.log.contains("pass"), "the interactive test's result")
            #expect(try await alice.request("GET", "/api/v1/leases/current").status == 404, "power-off released the job's lease")
            #expect(try await alice.request("GET", "/api/v1/power").json["state"] as? String == "off")

            // The agent boots on the board (menu entry by label, login), LAVA takes the shell.
            let handed = try await lavaRun("agent-boot.yaml", device: device, rig: rig, dir: dir, id: 2)
            #expect(handed.passed, "lava-run (the agent boots): exit \(handed.status), log in \(dir)/job-2.log\n\(handed.log.suffix(3000))")
            #expect(handed.log.contains("ipxe_menu ok"), "rtectl run --follow's stages are in LAVA's log")
            #expect(try await alice.request("GET", "/api/v1/leases/current").status == 404)
            let runs = try await alice.request("GET", "/api/v1/runs").json["runs"] as? [[String: Any]] ?? []
            #expect(runs.count == 1 && runs.first?["user"] as? String == "lava" && runs.first?["state"] as? String == "passed", "\(runs)")

            // A person holds the board: the job ends at once with an infrastructure error that says who.
            let token = try await alice.request("POST", "/api/v1/leases", json: ["ttl_s": 600, "purpose": "bisecting a Xen hang"]).json["token"] as! String
            let refused = try await lavaRun("lava-ipxe-boot.yaml", device: device, rig: rig, dir: dir, id: 3)
            #expect(!refused.passed)
            #expect(refused.log.contains("InfrastructureError") || refused.log.contains("Infrastructure"), "\(refused.log.suffix(3000))")
            #expect(refused.log.contains("alice") && refused.log.contains("bisecting a Xen hang"), "the holder is named in the job log")
            #expect(try await alice.request("GET", "/api/v1/leases/current").json["holder"] as? String == "alice", "the person keeps the board")
            #expect(try await alice.request("GET", "/api/v1/power").json["state"] as? String == "off", "LAVA switched nothing")
            #expect(refused.log.contains("not holding the board (it is held by alice); nothing done"), "clean-up left her board alone")
            #expect(!refused.log.contains("Failed to run 'finalize'"), "\(refused.log.suffix(2000))")
            #expect(try await alice.request("DELETE", "/api/v1/leases/current", leaseToken: token).status == 204)
        }
    }
}
