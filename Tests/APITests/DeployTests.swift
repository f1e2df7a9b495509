import Foundation
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite struct DeployTests {
    @Test func theInstallScriptFillsAScratchRootAndTheInstalledConfigLoads() async throws {
        let root = scratchDirectory("destdir")
        var env = ProcessInfo.processInfo.environment
        env["DESTDIR"] = root
        let (status, out) = try await run([packageRoot + "/deploy/install", builtProduct("rte-agent")], env: env)
        #expect(status == 0, "\(out)")
        for (path, mode) in [("/usr/bin/rte-agent", 0o755), ("/lib/systemd/system/rte-agent.service", 0o644),
                             ("/lib/udev/rules.d/99-rte-agent.rules", 0o644), ("/etc/rte-agent/rte-agent.yaml", 0o640),
                             ("/usr/share/rte-agent/web/index.html", 0o644), ("/usr/share/rte-agent/web/app.js", 0o644),
                             ("/usr/share/rte-agent/specs/xen-dev.yaml", 0o644), ("/usr/share/rte-agent/openapi.json", 0o644)] {
            let attrs = try FileManager.default.attributesOfItem(atPath: root + path)
            #expect((attrs[.posixPermissions] as? Int) == mode, "\(path)")
        }
        let (check, said) = try await run([root + "/usr/bin/rte-agent", "check-config", "--config", root + "/etc/rte-agent/rte-agent.yaml"])
        #expect(check == 0 && said.contains(": ok"), "\(said)")
        // Installed stripped: no symbol table left.
        let (symbols, listed) = try await run(["nm", root + "/usr/bin/rte-agent"])
        #expect(listed.contains("no symbols"), "nm exited \(symbols): \(listed.prefix(200))")
        // A second install keeps the site's config.
        try "# edited on site\n".write(toFile: root + "/etc/rte-agent/rte-agent.yaml", atomically: true, encoding: .utf8)
        #expect(try await run([packageRoot + "/deploy/install", builtProduct("rte-agent")], env: env).0 == 0)
        #expect(try String(contentsOfFile: root + "/etc/rte-agent/rte-agent.yaml", encoding: .utf8) == "# edited on site\n")
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/systemd-analyze"), "needs systemd-analyze"))
    func theUnitPassesSystemdAnalyzeVerify() async throws {
        // The unit as shipped, its binary path pointed at the built one (verify checks it exists).
        let unit = try String(contentsOfFile: packageRoot + "/deploy/systemd/rte-agent.service", encoding: .utf8)
            .replacingOccurrences(of: "/usr/bin/rte-agent", with: builtProduct("rte-agent"))
        let path = scratchDirectory("unit") + "/rte-agent.service"
        try unit.write(toFile: path, atomically: true, encoding: .utf8)
        let (status, out) = try await run(["systemd-analyze", "verify", path])
        #expect(status == 0 && out.isEmpty, "\(out)")
        #expect(unit.contains("Type=notify") && unit.contains("WatchdogSec=") && unit.contains("User=rte-agent"))
    }

    @Test func theUdevRulesParseAndMatchTheRTEsDevicesPrecisely() throws {
        let text = try String(contentsOfFile: packageRoot + "/udev/99-rte-agent.rules", encoding: .utf8)
        let known: Set<String> = ["SUBSYSTEM", "KERNEL", "KERNELS", "ATTRS", "ENV", "GROUP", "MODE", "SYMLINK", "OWNER"]
        var rules = 0
        for line in text.split(separator: "\n") where !line.hasPrefix("#") && !line.trimmingCharacters(in: .whitespaces).isEmpty {
            rules += 1
            var matches = 0
            for field in line.components(separatedBy: ", ") {
                let parts = field.components(separatedBy: CharacterSet(charactersIn: "=+!")).filter { !$0.isEmpty }
                let key = parts[0].components(separatedBy: "{")[0]
                #expect(known.contains(key), "unknown key in \(field)")
                #expect(field.contains("==") || field.contains("=\"") || field.contains("+=\""), "operator in \(field)")
                #expect(field.hasSuffix("\""), "quoted value in \(field)")
                if field.contains("==") { matches += 1 }
            }
            // Every rule matches a subsystem and a specific device, never "any tty".
            #expect(line.contains("SUBSYSTEM==") && matches >= 3, "\(line)")
            #expect(line.contains("GROUP=\"rte-agent\"") && line.contains("MODE=\"0660\""), "\(line)")
        }
        #expect(rules >= 3)
        #expect(text.contains("SYMLINK+=\"rte-dut-serial\""))
    }

    @Test func theDaemonTellsSystemdItIsReadyFeedsTheWatchdogAndSaysWhenItStops() async throws {
        let dir = scratchDirectory("notify")
        let socketPath = dir + "/notify.sock"
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in for (i, b) in socketPath.utf8.enumerated() { raw[i] = b } }
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        try #require(bound == 0)
        defer { close(fd) }
        var tv = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        // The demo config without its fixed console port (another agent may hold it).
        let yaml = try String(contentsOfFile: packageRoot + "/deploy/simulated.yaml", encoding: .utf8)
            .replacingOccurrences(of: "console_port: 13541", with: "")
        try yaml.write(toFile: dir + "/agent.yaml", atomically: true, encoding: .utf8)
        var env = ProcessInfo.processInfo.environment
        env["NOTIFY_SOCKET"] = socketPath
        env["WATCHDOG_USEC"] = "200000"
        env["JOURNAL_STREAM"] = "8:12345"  // what systemd sets when stderr goes to the journal
        let p = try TestChild([builtProduct("rte-agent"), "serve", "--config", dir + "/agent.yaml", "--listen", "127.0.0.1:0",
                               "--state-dir", dir + "/state"], environment: env, deadlineSeconds: 120)
        let receive = { () async throws -> String in
            try await onThread { () -> String in
                var buf = [UInt8](repeating: 0, count: 512)
                let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                return n > 0 ? String(decoding: buf[0..<n], as: UTF8.self) : ""
            }
        }
        let first = try await receive()
        #expect(first.hasPrefix("READY=1") && first.contains("STATUS=serving apu2-sim"), "\(first)")
        #expect(try await receive() == "WATCHDOG=1")
        #expect(try await receive() == "WATCHDOG=1", "fed again every half interval")
        p.process.signal(SIGTERM)
        var last = ""
        while last == "WATCHDOG=1" || last.isEmpty { last = try await receive(); if last.isEmpty { break } }
        #expect(last == "STOPPING=1")
        let (status, log) = await p.waitForEnd()
        #expect(status == .exited(0))
        // swift-log lines carry their syslog priority for the journal.
        #expect(log.contains("<4>rte-agent: WARNING: authentication is OFF"), "\(log)")
        #expect(log.contains("<6>rte-agent: apu2-sim: API on http://"), "\(log)")
        #expect(log.contains("<5>rte-agent: stopping"), "\(log)")
    }
}

/// scripts/board-build: libmicrohttpd without HTTPS (static), DT_RELR, no exported symbols — the
/// build whose idle RSS the footprint benchmark measures against the 12 MB target. It must be the
/// same agent: it serves the simulated apu2, and it refuses http.tls by name (it has no TLS).
@Suite(.serialized) struct BoardBuildTests {
    @Test func theBoardBuildServesAndRefusesTLSByName() async throws {
        let (status, out) = try await run([packageRoot + "/scripts/board-build"], env: ProcessInfo.processInfo.environment, deadlineSeconds: 1200)
        try #require(status == 0, "\(out)")
        let bin = try #require(out.split(separator: "\n").last.map(String.init))
        let (_, libs) = try await run(["ldd", bin])
        #expect(!libs.contains("gnutls") && !libs.contains("microhttpd") && !libs.contains("p11-kit"), "\(libs)")
        let (_, dynamic) = try await run(["readelf", "-d", "--dyn-syms", bin])
        #expect(dynamic.contains("(RELR)"), "packed relative relocations")
        #expect(dynamic.split(separator: "\n").filter { $0.contains(" $s") }.count < 100, "the agent's symbols are not exported")

        let dir = scratchDirectory("board")
        // The demo's config with the console on any free port (another agent may hold 13541).
        let simulated = try String(contentsOfFile: packageRoot + "/deploy/simulated.yaml", encoding: .utf8)
            .replacingOccurrences(of: "console_port: 13541", with: "console_port: 0")
        try simulated.write(toFile: dir + "/simulated.yaml", atomically: true, encoding: .utf8)
        let agent = try TestChild([bin, "serve", "--config", dir + "/simulated.yaml", "--listen", "127.0.0.1:0",
                                   "--state-dir", dir + "/state"], deadlineSeconds: 120)
        defer { _ = agent.process.stop(grace: 2) }
        #expect(await agent.waitForOutput(containing: "API on http://127.0.0.1:"), "\(agent.output)")
        let marker = "API on http://127.0.0.1:"
        let port = agent.output.range(of: marker).flatMap { Int(agent.output[$0.upperBound...].prefix { $0.isNumber }) }
        let health = try await HTTP(port: try #require(port), token: nil).request("GET", "/api/v1/health")
        #expect(health.status == 200 && health.text.contains("\"status\":\"ok\""), "\(health.text)")
        kill(agent.pid, SIGTERM)
        #expect(await agent.wait() == .exited(0))

        // With http.tls configured it does not start, and says why.
        let gen = try await run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                                 "-keyout", dir + "/key.pem", "-out", dir + "/cert.pem"])
        try #require(gen.0 == 0, "\(gen.1)")
        let tls = simulated.replacingOccurrences(of: "\nhttp:\n", with: "\nhttp:\n  tls: {certificate: \(dir)/cert.pem, key: \(dir)/key.pem}\n")
        #expect(tls.contains("tls: {certificate"), "deploy/simulated.yaml has an http section")
        try tls.write(toFile: dir + "/tls.yaml", atomically: true, encoding: .utf8)
        let (refused, said) = try await run([bin, "serve", "--config", dir + "/tls.yaml", "--listen", "127.0.0.1:0", "--state-dir", dir + "/state2"],
                                            deadlineSeconds: 60)
        #expect(refused != 0 && said.contains("built without HTTPS"), "exit \(refused): \(said)")
    }
}
