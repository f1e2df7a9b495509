import Auth
import Foundation
import TestSupport
import Testing

/// Issue 21: the web page in a real browser — Debian's chromium and chromium-driver through
/// Selenium (Tests/web/test_web.py), against the agent on the simulated apu2 with two users.
/// Screenshots go to .build/web-screenshots (not committed).
@Suite(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/chromedriver")
                    && FileManager.default.fileExists(atPath: "/usr/share/javascript/xterm/xterm.js"),
                "needs chromium, chromium-driver and libjs-xterm (scripts/install-deps)"))
struct WebPageTests {
    @Test func signInReserveBootTypeRunAndReleaseInTheBrowserWhileASecondUserLooksOn() async throws {
        let dir = scratchDirectory("web")
        let shots = packageRoot + "/.build/web-screenshots"
        try FileManager.default.createDirectory(atPath: shots, withIntermediateDirectories: true)
        // Two users; only their SHA-256 is in the config.
        let yaml = try String(contentsOfFile: packageRoot + "/deploy/simulated.yaml", encoding: .utf8)
            .replacingOccurrences(of: "auth:\n  enabled: false", with: """
            auth:
              enabled: true
              tokens:
                - {user: alice, sha256: \(SHA256.hex("alice-web-token"))}
                - {user: bob, sha256: \(SHA256.hex("bob-web-token"))}
            """)
            .replacingOccurrences(of: "console_port: 13541", with: "console_port: 0")
            .replacingOccurrences(of: "timing: realistic", with: "timing: realistic\n  ctrl_b_window_ms: 20000   # a human types it here")
            .replacingOccurrences(of: "root: ../web", with: "root: \(packageRoot)/web")
            .replacingOccurrences(of: "specs: specs", with: "specs: \(packageRoot)/deploy/specs")
        #expect(yaml.contains("user: alice") && yaml.contains("ctrl_b_window_ms") && yaml.contains("\(packageRoot)/web"))
        try yaml.write(toFile: dir + "/agent.yaml", atomically: true, encoding: .utf8)
        let agent = try TestChild([builtProduct("rte-agent"), "serve", "--config", dir + "/agent.yaml", "--listen", "127.0.0.1:0",
                                   "--state-dir", dir + "/state"], deadlineSeconds: 400)
        defer { agent.process.signal(SIGTERM) }
        #expect(await agent.waitForOutput(containing: "API on http://"), "\(agent.output)")
        let port = try #require(agent.output.split(separator: "API on http://127.0.0.1:").last?.prefix { $0.isNumber })
        let (status, out) = try await run(["python3", packageRoot + "/Tests/web/test_web.py", "http://127.0.0.1:\(port)",
                                           "alice-web-token", "bob-web-token", shots], deadlineSeconds: 360)
        for line in out.split(separator: "\n") where line.hasPrefix("web page:") || line.hasPrefix("browser console:") { print(line) }
        #expect(status == 0, "\(out.suffix(4000))")
        #expect(out.contains("web page: all steps passed"), "\(out.suffix(4000))")
        #expect(!out.contains("browser console:"), "the page logged errors: \(out)")
        for name in ["console", "second-user", "run", "phone"] {
            #expect(FileManager.default.fileExists(atPath: "\(shots)/\(name).png"), "no \(name).png")
        }
    }
}
