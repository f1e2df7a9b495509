import Auth
@testable import Configuration
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

/// What serves the page: its own files only, with the headers that keep it same-origin, and the
/// API calls it adds (who am I, the offered specs, a run posted as YAML).
@Suite struct WebRouteTests {
    func config(enabled: Bool = true) throws -> AgentConfig {
        var c = try apiConfig(stateDir: scratchDirectory())
        c.web.enabled = enabled
        c.web.root = packageRoot + "/web"
        c.web.specs = packageRoot + "/deploy/specs"
        return c
    }

    @Test func thePageIsServedWithItsOwnFilesOnly() async throws {
        try await withAgent(config()) { _, c in
            let page = try await c["nobody"]!.request("GET", "/")
            #expect(page.status == 200 && page.text.contains("<title>rte-agent</title>"), "\(page.status)")
            #expect(page.headers["content-type"] == "text/html; charset=utf-8")
            #expect(page.headers["content-security-policy"]?.contains("default-src 'self'") == true)
            #expect(try await c["nobody"]!.request("GET", "/ui/app.js").headers["content-type"] == "text/javascript; charset=utf-8")
            for bad in ["/ui/..%2F..%2Fetc%2Fpasswd", "/ui/../Package.swift", "/ui/.hidden", "/ui/xterm/addons", "/ui/missing.js",
                        "/ui/xterm/..%2Fxterm.js", "/ui/xterm/README"] {
                let r = try await c["nobody"]!.request("GET", bad)
                #expect(r.status == 404, "\(bad): \(r.status)")
            }
        }
    }

    @Test func theAPIBehindThePageNeedsATokenAndOffersTheShippedSpecs() async throws {
        try await withAgent(config()) { _, c in
            #expect(try await c["nobody"]!.request("GET", "/api/v1/specs").status == 401)
            #expect(try await c["alice"]!.request("GET", "/api/v1/me").json["user"] as? String == "alice")
            let names = (try await c["alice"]!.request("GET", "/api/v1/specs").json["specs"] as? [[String: Any]])?.compactMap { $0["name"] as? String } ?? []
            #expect(names.contains("xen-dev.yaml") && names.contains("qemu-xen-dev.yaml"), "\(names)")
            let spec = try await c["alice"]!.request("GET", "/api/v1/specs/xen-dev.yaml")
            #expect(spec.text == (try String(contentsOfFile: packageRoot + "/deploy/specs/xen-dev.yaml", encoding: .utf8)))
            #expect(try await c["alice"]!.request("GET", "/api/v1/specs/..%2F..%2FPackage.swift").status == 404)
            // A run posted as YAML, the way the page sends what was pasted.
            let posted = try await c["alice"]!.request("POST", "/api/v1/runs", body: Array(spec.text.utf8), headers: ["Content-Type": "application/yaml"])
            #expect(posted.status == 201 || posted.status == 202, "\(posted.text)")
            #expect(posted.json["name"] as? String == "xen-dev smoke", "\(posted.text)")
            if let id = posted.json["id"] as? String { _ = try await c["alice"]!.request("DELETE", "/api/v1/runs/\(id)") }
            let broken = try await c["alice"]!.request("POST", "/api/v1/runs", body: Array("name: [unclosed".utf8), headers: ["Content-Type": "application/yaml"])
            #expect(broken.status == 400, "\(broken.text)")
        }
    }

    @Test func noPageWhenDisabled() async throws {
        try await withAgent(config(enabled: false)) { _, c in
            let page = try await c["nobody"]!.request("GET", "/"), file = try await c["nobody"]!.request("GET", "/ui/app.js")
            #expect(page.status == 404 && file.status == 404)
        }
    }
}
