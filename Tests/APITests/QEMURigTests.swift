import AgentRuntime
import Auth
@testable import Configuration
import Foundation
import Testing

/// The QEMU virtual apu2: real SeaBIOS, iPXE and Linux. Skipped only with RTE_SKIP_RIG=1 (shown
/// as skipped in the test report), so CI always runs it.
let rigEnabled = ProcessInfo.processInfo.environment["RTE_SKIP_RIG"] != "1"

/// Prepares the rig once per test process: kernel + initramfs (scripts/rig/prepare), a web
/// server with menu.ipxe (also the TFTP root for iPXE's own autoboot).
actor Rig {
    static let shared = Rig()
    struct Ready: Sendable { var directory: String; var port: Int }
    private var ready: Ready?
    private var server: Process?

    func prepare() throws -> Ready {
        if let ready { return ready }
        let prep = Process()
        prep.executableURL = URL(fileURLWithPath: packageRoot + "/scripts/rig/prepare")
        try prep.run(); prep.waitUntilExit()
        guard prep.terminationStatus == 0 else { throw TimeoutError(what: "scripts/rig/prepare failed") }
        let dir = scratchDirectory("rig")
        for f in ["vmlinuz", "initrd.img", "sercon-port"] {
            try FileManager.default.createSymbolicLink(atPath: "\(dir)/\(f)", withDestinationPath: "\(packageRoot)/.rig-cache/\(f)")
        }
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        server.arguments = ["python3", "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", dir]
        let out = Pipe()
        server.standardOutput = out
        server.standardError = FileHandle.nullDevice
        try server.run()
        self.server = server
        // "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ..."
        var text = ""
        while !text.contains(" port ") || !text.contains("(") {
            let d = out.fileHandleForReading.availableData
            if d.isEmpty { throw TimeoutError(what: "http.server did not start") }
            text += String(decoding: d, as: UTF8.self)
        }
        let port = Int(text.components(separatedBy: " port ")[1].split(separator: " ")[0])!
        let entries = [("netboot", "Debian stable netboot"), ("netinst", "Debian stable netinst"), ("xen-linux-dev", "Xen Linux dev"),
                       ("linux-dev", "Linux dev")]
        var menu = ["#!ipxe", "menu 3mdeb lab boot menu", "item --gap -- --- Boot options ---"]
        menu += entries.map { "item \($0.0) \($0.1)" } + ["item shell iPXE shell",
                 "choose --default netboot --timeout 3000 target && goto ${target}", ":shell", "shell"]
        for (slug, _) in entries {
            menu += [":\(slug)", "kernel http://10.0.2.2:\(port)/vmlinuz console=ttyS0,115200 rte.entry=\(slug)",
                     "initrd http://10.0.2.2:\(port)/initrd.img", "boot"]
        }
        try (menu.joined(separator: "\n") + "\n").write(toFile: "\(dir)/menu.ipxe", atomically: true, encoding: .utf8)
        let r = Ready(directory: dir, port: port)
        ready = r
        return r
    }
}

func rigConfig(_ rig: Rig.Ready, stateDir: String) throws -> AgentConfig {
    let list = tokens.sorted { $0.key < $1.key }.map { "    - {user: \($0.key), sha256: \(SHA256.hex($0.value)), admin: \($0.key == "root")}" }
    let yaml = """
    dut: {name: apu2-qemu, board: apu2, backend: qemu}
    serial: {device: dut-serial, baud: 115200}
    qemu:
      args: ["-machine", "pc,accel=tcg", "-cpu", "max", "-m", "512", "-display", "none", "-nodefaults",
             "-fw_cfg", "name=etc/sercon-port,file=\(rig.directory)/sercon-port",
             "-netdev", "user,id=n0,tftp=\(rig.directory),bootfile=menu.ipxe", "-device", "e1000,netdev=n0", "-boot", "n"]
    power: {cycle_off_ms: 200}
    http: {listen: "127.0.0.1:0"}
    state_dir: \(stateDir)
    auth:
      enabled: true
      tokens:
    \(list.joined(separator: "\n"))
    """
    return try AgentConfig.parse(yaml: yaml, file: "rig.yaml")
}

@Suite(.serialized, .enabled(if: rigEnabled, "RTE_SKIP_RIG=1 skips the QEMU rig"))
struct QEMURigTests {
    @Test func aBootTestThroughTheAPIPicksANonDefaultEntryOnRealFirmwareAndLinux() async throws {
        let rig = try await Rig.shared.prepare()
        try await withAgent(rigConfig(rig, stateDir: scratchDirectory())) { agent, c in
            let a = c["alice"]!
            let token = try await a.request("POST", "/api/v1/leases", json: ["ttl_s": 900, "purpose": "rig e2e"]).json["token"] as! String
            let spec: [String: Any] = [
                "name": "qemu apu2: Xen Linux dev",
                "power": "on",
                "ipxe": ["commands": ["dhcp", "chain http://10.0.2.2:\(rig.port)/menu.ipxe"], "menu_entry": "Xen Linux dev"],
                "login": ["username": "root", "password": "debian", "shell_prompt": "# "],
                "commands": [["send": "cat /proc/cmdline", "expect": "rte.entry=xen-linux-dev", "timeout_s": 20]],
                "timeouts": ["firmware": 60, "ipxe": 90, "kernel": 240, "login": 60],
            ]
            let posted = try await a.request("POST", "/api/v1/runs", json: spec, leaseToken: token)
            #expect(posted.status == 202)
            let run = try await finishedRun(a, posted.json["id"] as! String)
            #expect(run["state"] as? String == "passed", "\(run["message"] ?? "") \(failure(run))")
            let stages = ((run["iterations"] as? [[String: Any]])?.first?["stages"] as? [[String: Any]]) ?? []
            // The stage timings under TCG, for the closing note.
            print("rig stages:", stages.map { "\($0["name"]!)=\(Int($0["duration_ms"] as! Double))ms" }.joined(separator: " "))
            #expect(stages.first { $0["name"] as? String == "ipxe_menu" }?["detail"] as? String == "chose \"Xen Linux dev\" (row 7) with 2 key(s)")
            #expect(try await a.request("POST", "/api/v1/power", json: ["action": "hard_off"], leaseToken: token).json["state"] as? String == "off")
            #expect(try await a.request("DELETE", "/api/v1/leases/current", leaseToken: token).status == 204)
            _ = agent
        }
    }

    @Test func aResetDuringTheKernelBootGoesBackToTheFirmware() async throws {
        let rig = try await Rig.shared.prepare()
        try await withAgent(rigConfig(rig, stateDir: scratchDirectory())) { agent, c in
            let a = c["alice"]!
            let token = try await a.request("POST", "/api/v1/leases", json: ["ttl_s": 900]).json["token"] as! String
            let from = agent.hardware.capture.endOffset
            // Nobody presses anything: iPXE autoboots over TFTP, the menu's default boots Linux.
            #expect(try await a.request("POST", "/api/v1/power", json: ["action": "on"], leaseToken: token).json["state"] as? String == "on")
            let port = agent.port, bearer = tokens["alice"]!
            let follow = { (after: UInt64, text: String) async throws -> Bool in
                try await onThread { () -> Bool in
                    let s = try TestSocket.connect(port: port)
                    defer { s.close() }
                    // HTTP/1.0: the stream comes unframed, so chunk headers cannot split the text.
                    s.send(Array("GET /api/v1/serial/stream?from=\(after) HTTP/1.0\r\nHost: x\r\nAuthorization: Bearer \(bearer)\r\n\r\n".utf8))
                    var acc: [UInt8] = []
                    return s.receiveBlocking(until: text, into: &acc)
                }
            }
            #expect(try await follow(from, "Linux version"))
            let resetAt = agent.hardware.capture.endOffset
            #expect(try await a.request("POST", "/api/v1/power", json: ["action": "reset"], leaseToken: token).json["state"] as? String == "on")
            #expect(try await follow(resetAt, "SeaBIOS (version"))
            #expect(try await a.request("POST", "/api/v1/power", json: ["action": "hard_off"], leaseToken: token).status == 200)
        }
    }
}
