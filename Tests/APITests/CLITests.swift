import AgentRuntime
import Auth
@testable import Configuration
import Foundation
import POSIXIO
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Runs rtectl (the built binary) as a user would, with its own lease store, on a terminal.
func rtectl(_ args: [String], agent: Agent, user: String, stateDir: String, terminal: FileDescriptor) throws -> Subprocess {
    try Subprocess([builtProduct("rtectl")] + args, environment: rtectlEnvironment(agent: agent, user: user, stateDir: stateDir),
                   input: .descriptor(terminal), output: .descriptor(terminal), error: .descriptor(terminal))
}

func rtectlOutput(_ args: [String], agent: Agent, user: String, stateDir: String) async throws -> (Int32, String) {
    try await run([builtProduct("rtectl")] + args, env: rtectlEnvironment(agent: agent, user: user, stateDir: stateDir))
}

func rtectlEnvironment(agent: Agent, user: String, stateDir: String) -> [String: String] {
    ["RTE_AGENT": "http://127.0.0.1:\(agent.port)", "RTE_TOKEN": tokens[user]!, "RTECTL_STATE_DIR": stateDir,
     "HOME": stateDir, "PATH": "/usr/bin:/bin"]
}

@Suite(.serialized) struct CLITests {
    @Test func reserveConflictRunFollowAndExitCodes() async throws {
        try await withAgent(apiConfig(stateDir: scratchDirectory())) { agent, c in
            let aliceState = scratchDirectory("alice"), bobState = scratchDirectory("bob")
            let (ok, out) = try await rtectlOutput(["reserve", "--ttl", "10m", "--purpose", "cli test"], agent: agent, user: "alice", stateDir: aliceState)
            #expect(ok == 0 && out.contains("reserved lease-"), "\(out)")
            let (busy, why) = try await rtectlOutput(["reserve", "--ttl", "10m"], agent: agent, user: "bob", stateDir: bobState)
            #expect(busy == 3, "device busy")
            #expect(why.contains("holder: alice") && why.contains("cli test"), "\(why)")
            // alice's run uses her stored lease; --follow prints stages, then the table.
            let specPath = aliceState + "/spec.yaml"
            try """
            name: cli third entry
            power: cycle
            ipxe: {commands: ["dhcp net0", "chain http://192.168.4.2:8000/menu.ipxe"], menu_entry: "Xen Linux dev"}
            login: {username: root, password: debian}
            commands: [{send: "cat /proc/cmdline", expect: "rte.entry=xen-linux-dev"}]
            timeouts: {firmware: 10, ipxe: 10, kernel: 10, login: 10}
            """.write(toFile: specPath, atomically: true, encoding: .utf8)
            let (passed, log) = try await rtectlOutput(["run", specPath, "--follow"], agent: agent, user: "alice", stateDir: aliceState)
            #expect(passed == 0, "\(log)")
            #expect(log.contains("ipxe_menu ok") && log.contains("run run-") && log.contains(" passed"), "\(log)")
            #expect(log.contains("stage            count"), "\(log)")
            // Issue 34: what booted, as the iteration ends and in the result.
            #expect(log.contains("[1] passed; booted: board PC Engines apu2, firmware coreboot, firmware_version v4.19.0.1"), "\(log)")
            #expect(log.contains("hypervisor xen, xen_version 4.17.7") && log.contains("booted (iteration 1): "), "\(log)")
            #expect(log.contains("hypervisor ok in"), "Xen's part of the boot is a stage: \(log)")
            // A failing run exits 1; bad usage 2; an unreachable agent 4.
            try "power: cycle\nlogin: {username: root, password: nope}\ntimeouts: {kernel: 10, login: 5}\n".write(toFile: specPath, atomically: true, encoding: .utf8)
            #expect(try await rtectlOutput(["run", specPath, "--follow"], agent: agent, user: "alice", stateDir: aliceState).0 == 1)
            #expect(try await rtectlOutput(["power"], agent: agent, user: "alice", stateDir: aliceState).0 == 2)
            let (json, body) = try await rtectlOutput(["status", "--json"], agent: agent, user: "bob", stateDir: bobState)
            #expect(try json == 0 && (JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any])?["dut"] as? String == "apu2-sim")
            #expect(try await rtectlOutput(["release"], agent: agent, user: "alice", stateDir: aliceState).0 == 0)
            // A named device from the config file brings its own agent URL and token.
            let config = scratchDirectory("xdg")
            try FileManager.default.createDirectory(atPath: config + "/rtectl", withIntermediateDirectories: true)
            try "devices:\n  lab1: {agent: \"http://127.0.0.1:\(agent.port)\", token: \(tokens["carol"]!)}\n"
                .write(toFile: config + "/rtectl/devices.yaml", atomically: true, encoding: .utf8)
            let named = try await run([builtProduct("rtectl"), "reserve", "--device", "lab1", "--purpose", "named"],
                                      env: ["XDG_CONFIG_HOME": config, "RTECTL_STATE_DIR": config, "HOME": config])
            #expect(named.0 == 0, "\(named.1)")
            #expect(try await c["alice"]!.request("GET", "/api/v1/leases").json["current"].flatMap { ($0 as? [String: Any])?["holder"] as? String } == "carol")
        }
        let unreachable = try await run([builtProduct("rtectl"), "status", "--agent", "http://127.0.0.1:1"]).0
        #expect(unreachable == 4)
    }

    @Test func consoleRoundTripOverAPtyRestoresTheTerminal() async throws {
        try await withAgent(apiConfig(stateDir: scratchDirectory())) { agent, c in
            let state = scratchDirectory("console")
            #expect(try await rtectlOutput(["reserve"], agent: agent, user: "alice", stateDir: state).0 == 0)
            let pty = try PseudoTerminal.open()
            let slave = FileHandle(forUpdatingAtPath: pty.slavePath)!
            var before = termios()
            tcgetattr(slave.fileDescriptor, &before)
            let p = try rtectl(["console"], agent: agent, user: "alice", stateDir: state, terminal: FileDescriptor(rawValue: slave.fileDescriptor))
            let master = pty.master
            let read = { (text: String) async throws -> Bool in
                try await onThread { () -> Bool in
                    var acc: [UInt8] = []
                    var buf = [UInt8](repeating: 0, count: 4096)
                    let deadline = Date().addingTimeInterval(20)
                    while Date() < deadline {
                        var pfd = pollfd(fd: master.rawValue, events: Int16(POLLIN), revents: 0)
                        if poll(&pfd, 1, 200) <= 0 { continue }
                        let n = buf.withUnsafeMutableBytes { Glibc.read(master.rawValue, $0.baseAddress, $0.count) }
                        if n <= 0 { continue }
                        acc += buf[0..<n]
                        if String(decoding: acc, as: UTF8.self).contains(text) { return true }
                    }
                    return false
                }
            }
            #expect(try await read("Ctrl-] leaves"))
            let leaseToken = (try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: state + "/lease-127_0_0_1_\(agent.port).json"))) as? [String: Any])?["token"] as? String
            #expect(try await c["alice"]!.request("POST", "/api/v1/power", json: ["action": "on"], leaseToken: leaseToken).status == 200)
            #expect(try await read("Press Ctrl-B"))
            try master.writeAll([0x02])  // raw mode: goes out at once, no Enter needed
            #expect(try await read("iPXE> "))
            try master.writeAll(Array("echo via-rtectl\r".utf8))
            #expect(try await read("via-rtectl\r\niPXE> "))
            try master.writeAll([0x1d])  // Ctrl-]
            #expect(p.waitForExit(timeoutMilliseconds: 20_000), "rtectl console ended on Ctrl-]")
            #expect(p.stop(grace: 1) == .exited(0))
            var after = termios()
            tcgetattr(slave.fileDescriptor, &after)
            #expect(after.c_lflag == before.c_lflag && after.c_iflag == before.c_iflag, "the terminal mode is restored")
            pty.close()
        }
    }
}

extension CLITests {
    /// `rtectl flash` against the simulated board's emulated chip (the real flashrom behind it).
    @Test func flashWriteReadProbeAndTheirExitCodes() async throws {
        let dir = scratchDirectory()
        try await withAgent(apiConfig(stateDir: dir)) { agent, _ in
            let alice = scratchDirectory("alice"), bob = scratchDirectory("bob")
            #expect(try await rtectlOutput(["reserve", "--ttl", "10m"], agent: agent, user: "alice", stateDir: alice).0 == 0)
            let rom = (0..<(8 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
            FileManager.default.createFile(atPath: alice + "/coreboot.rom", contents: Data(rom))
            let (written, log) = try await rtectlOutput(["flash", "write", alice + "/coreboot.rom"], agent: agent, user: "alice", stateDir: alice)
            #expect(written == 0, "\(log)")
            #expect(log.contains("flashrom ok") && log.contains("VERIFIED") && log.contains("% verifying") && log.contains("flash write done in"), "\(log)")
            // Compared first: a failing #expect on megabytes spends minutes describing them.
            do { let same = FileManager.default.contents(atPath: dir + "/flash/simulated-chip.bin").map(Array.init) == rom; #expect(same) }
            let (read, readLog) = try await rtectlOutput(["flash", "read", alice + "/back.rom"], agent: agent, user: "alice", stateDir: alice)
            #expect(read == 0, "\(readLog)")
            // Compared first: a failing #expect on megabytes spends minutes describing them.
            do { let same = FileManager.default.contents(atPath: alice + "/back.rom").map(Array.init) == rom; #expect(same) }
            let (probed, probeLog) = try await rtectlOutput(["flash", "probe"], agent: agent, user: "alice", stateDir: alice)
            #expect(probed == 0 && probeLog.contains("chip MX25L6436E"), "\(probeLog)")
            // A wrong-sized image is refused (1); without the lease (3); usage (2).
            FileManager.default.createFile(atPath: alice + "/small.rom", contents: Data(count: 1024))
            let (small, smallLog) = try await rtectlOutput(["flash", "write", alice + "/small.rom"], agent: agent, user: "alice", stateDir: alice)
            #expect(small == 1 && smallLog.contains("the image is 1024 bytes"), "\(smallLog)")
            #expect(try await rtectlOutput(["flash", "probe"], agent: agent, user: "bob", stateDir: bob).0 == 3)
            #expect(try await rtectlOutput(["flash", "write", alice + "/coreboot.rom", "--region", "bios"], agent: agent, user: "alice", stateDir: alice).0 == 2)
        }
    }
}

extension CLITests {
    /// `rtectl run SPEC --artifact NAME=PATH`: uploads (streamed), then the run's iPXE script
    /// carries the URLs the DUT fetches (the real fetch is the QEMU rig's test).
    @Test func runWithArtifactsUploadsThemAndTheScriptNamesTheirURLs() async throws {
        let port = try freeLoopbackPort()
        try await withAgent(artifactConfig(stateDir: scratchDirectory(), port: port)) { agent, c in
            let alice = scratchDirectory("alice")
            #expect(try await rtectlOutput(["reserve", "--ttl", "10m"], agent: agent, user: "alice", stateDir: alice).0 == 0)
            let kernel = bytes(5 << 20, seed: 9)
            FileManager.default.createFile(atPath: alice + "/bzImage", contents: Data(kernel))
            FileManager.default.createFile(atPath: alice + "/initrd", contents: Data(bytes(1 << 20, seed: 10)))
            let spec = try String(contentsOfFile: packageRoot + "/deploy/specs/fresh-kernel.yaml", encoding: .utf8)
                .replacingOccurrences(of: "commands: [\"dhcp\"]", with: "commands: [\"dhcp net0\"]")
                .replacingOccurrences(of: "{firmware: 60, ipxe: 120, kernel: 300, login: 60}", with: "{firmware: 10, ipxe: 10, kernel: 10, login: 10}")
                .replacingOccurrences(of: "  - {send: \"dmesg --level=err,warn | tail -n 50\", timeout_s: 20}\n", with: "")
            try spec.write(toFile: alice + "/spec.yaml", atomically: true, encoding: .utf8)
            let (code, log) = try await rtectlOutput(["run", alice + "/spec.yaml", "--follow", "--artifact", "bzImage=\(alice)/bzImage",
                                                      "--artifact", "initrd.img=\(alice)/initrd"], agent: agent, user: "alice", stateDir: alice)
            #expect(code == 0, "\(log)")
            #expect(log.contains("bzImage: \(kernel.count) bytes uploaded") && log.contains("initrd.img: \(1 << 20) bytes uploaded"), "\(log)")
            #expect(log.contains("kernel http://127.0.0.1:\(port)/a/") && log.contains("/bzImage console=ttyS0"), "\(log)")
            let listed = try await c["alice"]!.request("GET", "/api/v1/artifacts").json["artifacts"] as? [[String: Any]]
            #expect(listed?.first { $0["name"] as? String == "bzImage" }?["sha256"] as? String == SHA256.hex(bytes: kernel))
            let (missing, text) = try await rtectlOutput(["run", packageRoot + "/deploy/specs/fresh-kernel.yaml", "--artifact", "nope"], agent: agent, user: "alice", stateDir: alice)
            #expect(missing == 2 && text.contains("--artifact takes NAME=PATH"), "\(text)")
        }
    }
}
