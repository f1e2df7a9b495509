import AgentClock
import Foundation
import Logging
import Synchronization
import TestSupport
import Testing

/// Issue 33: the level of a log line was guessed from its words ("failed" made an error); each
/// event now logs at the level chosen where it happens, and the journal keeps it.
@Suite(.serialized) struct LogLevelTests {
    final class Lines: Sendable {
        let lines = Mutex<[(Logger.Level, String)]>([])
        func add(_ level: Logger.Level, _ line: String) { lines.withLock { $0.append((level, line)) } }
        func level(of fragment: String) -> Logger.Level? { lines.withLock { $0.first { $0.1.contains(fragment) }?.0 } }
        /// Waits (bounded) for a line with `fragment`: the lease book logs from its own task.
        func waitFor(_ fragment: String) async -> Logger.Level? {
            let limit = ContinuousClock.now + .seconds(20)
            while ContinuousClock.now < limit {
                if let l = level(of: fragment) { return l }
                await Task.yield()
            }
            return nil
        }
    }

    @Test func eachEventLogsAtItsOwnLevel() async throws {
        let lines = Lines()
        let clock = ManualClock(start: Timestamp(secondsSinceEpoch: Double(Int(Date().timeIntervalSince1970))))
        var config = try apiConfig(stateDir: scratchDirectory())
        config.leases.expiryAction = .hardOff
        try await withAgent(config, clock: clock, levels: { lines.add($0, $1) }) { agent, c in
            #expect(lines.level(of: "API on http://") == .info)
            // A wrong token: a warning for the operator (never the token itself).
            #expect(try await HTTP(port: agent.port, token: "wrong-token").request("GET", "/api/v1/status").status == 401)
            #expect(await lines.waitFor("authentication failed") == .warning)
            // A lease given back is routine; one that ran out is worth a notice, and so is the power-off it caused.
            let first = try await c["alice"]!.request("POST", "/api/v1/leases", json: ["ttl_s": 100])
            #expect(try await c["alice"]!.request("DELETE", "/api/v1/leases/current", leaseToken: first.json["token"] as? String).status == 204)
            #expect(await lines.waitFor("released") == .info)
            let second = try await c["bob"]!.request("POST", "/api/v1/leases", json: ["ttl_s": 50])
            #expect(second.status == 201)
            clock.advance(by: .seconds(51))
            #expect(await lines.waitFor("expired") == .notice)
            #expect(await lines.waitFor("expiry action: DUT powered off (hard_off)") == .notice)
            #expect(!lines.lines.withLock { $0.contains { $0.1.contains("wrong-token") } }, "a token in the log")
        }
        // Authentication off is a warning, whatever the words around it.
        let open = Lines()
        try await withAgent(apiConfig(stateDir: scratchDirectory(), auth: false), levels: { open.add($0, $1) }) { _, _ in
            #expect(open.level(of: "authentication is OFF") == .warning)
        }
    }
}
