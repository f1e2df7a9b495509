import AgentClient
import ArgumentParser
import Foundation

/// Benchmark 4: wrk against the real daemon (simulated apu2) while a boot test run is in progress.
struct APILoad: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "api", abstract: "API load during a boot run: req/s, p50/p99.")
    @Option(help: "The rte-agent binary.") var agent = ".build/release/rte-agent"
    @Option var connections = 50
    @Option var seconds = 20
    @Option(help: "Append Markdown rows to this file.") var table: String?

    func run() async throws {
        var report = Report("api", table: table)
        let daemon = try Daemon(binary: agent, config: try simulatedConfig(), stateDirectory: ".build/bench/api-state")
        defer { daemon.stop() }
        let c = try daemon.client()
        let lease = try c.call("POST", "/api/v1/leases", json: ["ttl_s": 3600, "purpose": "api benchmark"])
        guard lease.status == 201, let token = lease.object["token"] as? String else { throw BenchError("no lease: \(lease.status)") }
        let holder = try daemon.client(leaseToken: token)
        // A boot test that outlasts both load phases: power, Ctrl-B, dhcp, chain, menu, kernel, login, commands, repeated.
        let spec: [String: Any] = [
            "name": "boot under API load", "repeat": 12, "power": "cycle",
            "ipxe": ["commands": ["dhcp net0", "chain http://192.168.4.2:8000/menu.ipxe"], "menu_entry": "Xen Linux dev"],
            "login": ["username": "root", "password": "debian", "shell_prompt": "# "],
            "commands": [["send": "uname -r", "expect": "6.1"]],
        ]
        let posted = try holder.call("POST", "/api/v1/runs", json: spec)
        guard posted.status == 202, let runID = posted.object["id"] as? String else {
            throw BenchError("the run was refused: \(posted.status) \(String(decoding: posted.body, as: UTF8.self))")
        }
        /// The run's state and its finished iterations (each with `passed`).
        func runState() throws -> (String, [[String: Any]]) {
            let r = try c.call("GET", "/api/v1/runs/\(runID)").object
            return (r["state"] as? String ?? "?", r["iterations"] as? [[String: Any]] ?? [])
        }
        let renewScript = ".build/bench/renew.lua"
        try """
        wrk.method = "POST"
        wrk.body = '{"ttl_s": 3600}'
        wrk.headers["Content-Type"] = "application/json"
        wrk.headers["X-Lease-Token"] = "\(token)"
        """.write(toFile: renewScript, atomically: true, encoding: .utf8)
        let base = "http://127.0.0.1:\(daemon.port)"
        // The floor, in the same run and under the same boot run: bare libmicrohttpd, same threading.
        let bare = try Child([selfPath, "bare-mhd"])
        defer { bare.stop() }
        guard let portLine = bare.line(startingWith: "port "), let barePort = Int(portLine.dropFirst(5)) else { throw BenchError("bare-mhd did not start") }
        let floor = try WrkResult.run("http://127.0.0.1:\(barePort)/", connections: connections, seconds: seconds)
        let status = try WrkResult.run(base + "/api/v1/status", connections: connections, seconds: seconds)
        let (stateAfterStatus, finishedAfterStatus) = try runState()
        let renew = try WrkResult.run(base + "/api/v1/leases/current/renew", connections: connections, seconds: seconds, script: renewScript)
        // Counted before the run is cancelled (the iteration it cuts short is no verdict).
        let (stateAfterRenew, finished) = try runState()
        report.line("boot run \(runID): \(stateAfterStatus) after the status load (\(finishedAfterStatus.count) iterations finished), \(stateAfterRenew) after the renew load (\(finished.count))")
        report.line("bare libmicrohttpd (same threading, fixed \(bareBody.count)-byte JSON): \(fmt(floor.requestsPerSecond, 0)) req/s, p50 \(fmt(floor.p50, 2)) ms, p99 \(fmt(floor.p99, 2)) ms, \(floor.requests) requests")
        report.line("GET /api/v1/status: \(fmt(status.requestsPerSecond, 0)) req/s, p50 \(fmt(status.p50, 2)) ms, p99 \(fmt(status.p99, 2)) ms, \(status.requests) requests, \(status.errors) errors")
        report.line("POST /api/v1/leases/current/renew: \(fmt(renew.requestsPerSecond, 0)) req/s, p50 \(fmt(renew.p50, 2)) ms, p99 \(fmt(renew.p99, 2)) ms, \(renew.requests) requests, \(renew.errors) errors")
        // The run must have kept going through both phases, and what it finished must have passed.
        _ = try holder.call("DELETE", "/api/v1/runs/\(runID)")
        let duringRun = stateAfterRenew == "running" || stateAfterRenew == "queued"
        let passed = finished.filter { $0["passed"] as? Bool == true }.count, failures = finished.count - passed
        report.line("boot iterations finished during the load: \(passed) passed, \(failures) failed")
        report.row("GET /api/v1/status, \(connections) connections, \(seconds) s, boot run in progress",
                   agent: "\(fmt(status.requestsPerSecond, 0)) req/s, p50 \(fmt(status.p50, 2)) ms, p99 \(fmt(status.p99, 2)) ms",
                   baseline: "bare libmicrohttpd: \(fmt(floor.requestsPerSecond, 0)) req/s, p50 \(fmt(floor.p50, 2)) ms, p99 \(fmt(floor.p99, 2)) ms; \(status.errors) errors",
                   target: "p99 ≤ 2× bare", met: status.errors == 0 && duringRun && status.p99 <= 2 * floor.p99)
        report.row("GET /api/v1/status p99 / bare libmicrohttpd p99", agent: "\(fmt(status.p99 / floor.p99))×", target: "≤ 2×", met: status.p99 <= 2 * floor.p99)
        report.row("POST lease renew, same conditions", agent: "\(fmt(renew.requestsPerSecond, 0)) req/s, p50 \(fmt(renew.p50, 2)) ms, p99 \(fmt(renew.p99, 2)) ms",
                   baseline: "\(renew.errors) errors; boot iterations during the load: \(passed) passed, \(failures) failed",
                   met: renew.errors == 0 && duringRun && failures == 0 && passed > 0)
        try report.finish(summary: "status \(fmt(status.requestsPerSecond, 0)) req/s p99 \(fmt(status.p99, 2)) ms; renew \(fmt(renew.requestsPerSecond, 0)) req/s p99 \(fmt(renew.p99, 2)) ms; run still \(stateAfterRenew)")
    }
}
