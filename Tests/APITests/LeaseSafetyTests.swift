import AgentClock
import TestSupport
import AgentRuntime
@testable import Configuration
import Foundation
import GPIO
import POSIXIO
import Leases
import Auth
import Testing

/// Issue 16: leases and runs under attack and crashes. Each test fails on the code before the fix.
func waitForQueueLength(_ http: HTTP, _ length: Int) async throws {
    // The waiter's request is in flight on another thread (or its hang-up is noticed within the
    // watch's pick-up interval): read the book until it shows, for at most 10 s.
    let end = monotonicMilliseconds() + 10_000
    while monotonicMilliseconds() < end {
        if (try await http.request("GET", "/api/v1/leases").json["queue"] as? [Any])?.count == length { return }
        await Task.yield()
    }
    throw TimeoutError(what: "queue never reached \(length)")
}

/// GET /api/v1/leases says nobody holds the device (the key is left out, or null).
func noHolder(_ book: [String: Any]) -> Bool { book["current"] == nil || book["current"] is NSNull }

func iso8601(_ text: String?) -> Date? {
    let f = ISO8601DateFormatter()
    f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    return text.flatMap { f.date(from: $0) }
}

@Suite(.serialized) struct LeaseSafetyTests {
    /// D2: another user re-posting someone's queued request_id got the original's lease (name and
    /// token), and the original request was never answered.
    @Test func aRequestIDIsScopedToItsUserAndHiddenFromOthers() async throws {
        try await withAgent(apiConfig(stateDir: scratchDirectory())) { _, c in
            let (alice, bob, carol) = (c["alice"]!, c["bob"]!, c["carol"]!)
            let aliceToken = try await alice.request("POST", "/api/v1/leases", json: ["ttl_s": 600, "purpose": "a"]).json["token"] as! String
            let bobWaits = Task { try await bob.request("POST", "/api/v1/leases", json: ["ttl_s": 60, "wait_s": 120, "request_id": "bob-secret-key-7"]) }
            try await waitForQueueLength(alice, 1)
            // Nobody else sees bob's key.
            let book = try await carol.request("GET", "/api/v1/leases")
            #expect(!book.text.contains("bob-secret-key-7"), "\(book.text)")
            // carol sends the same key: a request of her own, behind bob's.
            let carolWaits = Task { try await carol.request("POST", "/api/v1/leases", json: ["ttl_s": 60, "wait_s": 120, "request_id": "bob-secret-key-7"]) }
            try await waitForQueueLength(alice, 2)
            #expect(try await alice.request("DELETE", "/api/v1/leases/current", leaseToken: aliceToken).status == 204)
            let bobLease = try await bobWaits.value
            #expect(bobLease.status == 201 && bobLease.json["holder"] as? String == "bob", "bob is answered, with his own lease: \(bobLease.text)")
            let bobToken = try #require(bobLease.json["token"] as? String)
            // bob re-sending his key (a retry after a lost answer) finds his lease again.
            let retry = try await bob.request("POST", "/api/v1/leases", json: ["ttl_s": 60, "request_id": "bob-secret-key-7"])
            #expect(retry.status == 201 && retry.json["token"] as? String == bobToken)
            // carol re-sending her copy joins her own queue entry (no second one), and both of her
            // requests are answered, once each, with her lease.
            let carolRetry = Task { try await carol.request("POST", "/api/v1/leases", json: ["ttl_s": 60, "wait_s": 120, "request_id": "bob-secret-key-7"]) }
            try await waitForQueueLength(alice, 1)
            #expect(try await bob.request("DELETE", "/api/v1/leases/current", leaseToken: bobToken).status == 204)
            let carolAgain = try await carolRetry.value
            #expect(carolAgain.status == 201 && carolAgain.json["holder"] as? String == "carol")
            let carolLease = try await carolWaits.value
            #expect(carolLease.status == 201 && carolLease.json["holder"] as? String == "carol")
            #expect(carolLease.json["token"] as? String != bobToken)
            #expect(carolLease.json["token"] as? String == carolAgain.json["token"] as? String)
        }
    }

    /// D3: a run kept going after its lease was released and switched power for the next holder.
    @Test func noGPIOEdgeFromARunAfterItsLeaseWentToTheNextHolder() async throws {
        try await withAgent(apiConfig(stateDir: scratchDirectory())) { agent, c in
            let (alice, bob) = (c["alice"]!, c["bob"]!)
            let bank = agent.hardware.simulatedBank!
            let aliceToken = try await alice.request("POST", "/api/v1/leases", json: ["ttl_s": 600, "purpose": "kernel"]).json["token"] as! String
            let id = try await alice.request("POST", "/api/v1/runs", json: spec { $0["repeat"] = 1000 }, leaseToken: aliceToken).json["id"] as! String
            // Mid-iteration: the next stage powers the board.
            let running = try await runEvents(alice, id, until: "\"stage\":\"power\"").found
            #expect(running)
            let bobWaits = Task { try await bob.request("POST", "/api/v1/leases", json: ["ttl_s": 60, "wait_s": 60, "purpose": "next"]) }
            try await waitForQueueLength(alice, 1)
            #expect(try await alice.request("DELETE", "/api/v1/leases/current", leaseToken: aliceToken).status == 204)
            let bobLease = try await bobWaits.value
            #expect(bobLease.status == 201)
            let edgesAtGrant = bank.history().count
            // By the time bob has the device, alice's run has stopped...
            let run = try await alice.request("GET", "/api/v1/runs/\(id)").json
            #expect(run["state"] as? String == "error", "\(run["state"] ?? "")")
            #expect((run["message"] as? String ?? "").contains("released; the run stopped before the device went to anyone else"))
            // ...and no edge of it came after bob's grant.
            let granted = try #require(iso8601(bobLease.json["granted_at"] as? String))
            let late = bank.history().filter { Double($0.at.nanosecondsSinceEpoch) / 1e9 > granted.timeIntervalSince1970 + 0.001 }
            #expect(late.isEmpty, "edges after the hand-over: \(late)")
            #expect(bank.history().count == edgesAtGrant)
        }
    }

    /// D9: a client that gave up waiting for the lease (closed its connection) still got the device,
    /// which then sat held by nobody for that request's TTL.
    @Test func aWaiterThatWentAwayLeavesTheQueue() async throws {
        try await withAgent(apiConfig(stateDir: scratchDirectory())) { agent, c in
            let alice = c["alice"]!
            let token = try await alice.request("POST", "/api/v1/leases", json: ["ttl_s": 600]).json["token"] as! String
            let body = Array("{\"ttl_s\": 600, \"wait_s\": 600, \"purpose\": \"impatient\"}".utf8)
            let s = try TestSocket.connect(port: agent.port)
            s.send(Array("POST /api/v1/leases HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(tokens["bob"]!)\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\n\r\n".utf8) + body)
            try await waitForQueueLength(alice, 1)
            s.close()
            try await waitForQueueLength(alice, 0)
            #expect(try await alice.request("DELETE", "/api/v1/leases/current", leaseToken: token).status == 204)
            #expect(noHolder(try await alice.request("GET", "/api/v1/leases").json), "the device went to nobody")
        }
    }

    /// Slow clients: a connection trickling its headers a byte at a time was never closed (MHD's
    /// timeout is idle time); and one address could take every connection.
    @Test func slowHeadersAndConnectionHoardersAreCut() async throws {
        var config = try apiConfig(stateDir: scratchDirectory())
        config.http.headerTimeoutSeconds = 1
        config.http.maxConnectionsPerAddress = 3
        try await withAgent(config) { agent, c in
            let port = agent.port
            let closedAfter = try await onThread { () -> Double? in
                let s = try TestSocket.connect(port: port, from: "127.0.0.7")
                defer { s.close() }
                s.send(Array("GET /api/v1/health HTTP/1.1\r\nX-Slow: ".utf8))
                let start = monotonicNanoseconds()
                // One byte every 200 ms, until the server ends the connection (deadline 10 s).
                while monotonicNanoseconds() - start < 10_000_000_000 {
                    var p = pollfd(fd: s.fd, events: Int16(POLLIN), revents: 0)
                    if poll(&p, 1, 200) > 0 { return Double(monotonicNanoseconds() - start) / 1e9 }
                    s.send([UInt8(ascii: "a")])
                }
                return nil
            }
            let after = try #require(closedAfter, "a trickling client was never cut off")
            #expect(after < 3, "cut after \(after) s")
            // Three connections from one address are allowed, the fourth is refused; others still get in.
            let held = try (0..<3).map { _ in try TestSocket.connect(port: port, from: "127.0.0.8") }
            defer { held.forEach { $0.close() } }
            let fourth = try TestSocket.connect(port: port, from: "127.0.0.8")
            defer { fourth.close() }
            fourth.send(Array("GET /api/v1/health HTTP/1.0\r\n\r\n".utf8))
            #expect(fourth.receive().isEmpty, "the fourth connection from one address is closed without an answer")
            #expect(try await c["alice"]!.request("GET", "/api/v1/health").status == 200)
        }
    }

    /// D7: cancelling a run that waits for the device answered only when the wait ended (up to an hour).
    @Test func cancellingARunThatWaitsForTheDeviceAnswersAtOnce() async throws {
        let clock = ManualClock(start: Timestamp(secondsSinceEpoch: Double(Int(Date().timeIntervalSince1970))))
        try await withAgent(apiConfig(stateDir: scratchDirectory()), clock: clock) { _, c in
            let (alice, bob) = (c["alice"]!, c["bob"]!)
            _ = try await alice.request("POST", "/api/v1/leases", json: ["ttl_s": 3600, "purpose": "long"])
            let id = try await bob.request("POST", "/api/v1/runs", json: spec { $0["wait_s"] = 3600 }).json["id"] as! String
            try await waitForQueueLength(alice, 1)
            // The clock never moves: only an immediate answer passes.
            let cancelled = try await bob.request("DELETE", "/api/v1/runs/\(id)")
            #expect(cancelled.status == 200 && cancelled.json["state"] as? String == "cancelled", "\(cancelled.text)")
            #expect((try await alice.request("GET", "/api/v1/leases").json["queue"] as? [Any])?.isEmpty == true, "its queue entry is gone")
        }
    }

    /// D5: a crash between a release and the grant left leases.json with a queue and no holder; from
    /// then on every POST /leases answered 409. Also: leftover temporary files are removed at start.
    @Test func aQueueWithoutAHolderOnDiskIsServedAtStart() async throws {
        let dir = scratchDirectory()
        let state = dir + "/state"
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
        let now = Int64(Date().timeIntervalSince1970 * 1e9)
        let wedged = """
        {"current": null, "granted": 3, "expired": 0, "queue": [
          {"id": "wait-1", "user": "carol", "purpose": "gone", "ttlSeconds": 60, "enqueuedAt": \(now), "waitUntil": \(now + 3_600_000_000_000)},
          {"id": "wait-2", "user": "bob", "purpose": "retries", "ttlSeconds": 60, "enqueuedAt": \(now), "waitUntil": \(now + 3_600_000_000_000), "requestID": "bob-k"}
        ]}
        """
        try wedged.write(toFile: state + "/leases.json", atomically: true, encoding: .utf8)
        try "{\"current\": nu".write(toFile: state + "/leases.json.tmp-4242", atomically: true, encoding: .utf8)
        var config = try apiConfig(stateDir: dir)
        config.stateDirectory = state
        try await withAgent(config) { _, c in
            #expect(!FileManager.default.fileExists(atPath: state + "/leases.json.tmp-4242"), "leftover temporary file removed")
            let book = try await c["alice"]!.request("GET", "/api/v1/leases").json
            // carol's entry had no request_id (nobody can ever claim it): dropped. bob's is served.
            #expect((book["current"] as? [String: Any])?["holder"] as? String == "bob", "\(book)")
            #expect((book["queue"] as? [Any])?.isEmpty == true)
            let bob = try await c["bob"]!.request("POST", "/api/v1/leases", json: ["ttl_s": 60, "request_id": "bob-k"])
            #expect(bob.status == 201 && bob.json["token"] != nil, "bob's retry finds the lease: \(bob.text)")
            // Not wedged: releasing hands the device on as usual.
            #expect(try await c["bob"]!.request("DELETE", "/api/v1/leases/current", leaseToken: bob.json["token"] as? String).status == 204)
            #expect(try await c["carol"]!.request("POST", "/api/v1/leases", json: ["ttl_s": 60]).status == 201)
        }
    }

    /// D6: an expect_regex of nested empty-group repeats (any user, no lease) pegged both cores and
    /// the API stopped answering.
    @Test func aPatternBombIsRefusedAndTheAPIKeepsAnswering() async throws {
        try await withAgent(apiConfig(stateDir: scratchDirectory())) { _, c in
            let bomb = spec { $0["commands"] = [["send": "true", "expect_regex": "a(?:){1000}{1000}{1000}{1000}"]] }
            let r = try await c["carol"]!.request("POST", "/api/v1/runs", json: bomb)
            #expect(r.status == 422 && (r.json["detail"] as? String ?? "").contains("too large once repeats are expanded"), "\(r.text)")
            let long = spec { $0["commands"] = [["send": "true", "expect_regex": String(repeating: "x", count: 20_000)]] }
            let r2 = try await c["carol"]!.request("POST", "/api/v1/runs", json: long)
            #expect(r2.status == 422 && (r2.json["detail"] as? String ?? "").contains("limited to 4096 bytes"), "\(r2.text)")
            #expect(try await c["nobody"]!.request("GET", "/api/v1/health").status == 200)
        }
    }

    /// D5: "admin break says 404" on a wedged queue; it now clears it (entries nobody waits on).
    @Test func anAdminBreakClearsAQueueWithoutAHolder() async throws {
        let dir = scratchDirectory()
        let now = Int64(Date().timeIntervalSince1970 * 1e9)
        try """
        {"current": null, "granted": 1, "expired": 0, "queue": [
          {"id": "wait-9", "user": "bob", "purpose": "left", "ttlSeconds": 60, "enqueuedAt": \(now), "waitUntil": \(now + 3_600_000_000_000), "requestID": "k"}]}
        """.write(toFile: dir + "/leases.json", atomically: true, encoding: .utf8)
        // The book as it was before start-up served the queue (the state a crash used to leave at run time).
        let book = try LeaseBook(clock: SystemClock(), stateDirectory: dir, maxTTLSeconds: 3600, maxWaitSeconds: 3600)
        do { _ = try await book.acquire(user: "carol", purpose: "x", ttlSeconds: 60); Issue.record("granted past a queue") } catch {
            #expect(error == .busy(nil, queueLength: 1))
        }
        do { _ = try await book.breakLease(by: Identity(user: "root", admin: true)); Issue.record("broke a lease nobody holds") } catch {
            #expect(error == .noSuchLease)
        }
        let after = await book.snapshot
        #expect(after.queue.isEmpty && after.current == nil)
        #expect(try await book.acquire(user: "carol", purpose: "x", ttlSeconds: 60).holder == "carol")
    }

    /// D10: a lease whose state write failed was answered 201 and was gone after a restart.
    @Test func aChangeThatCannotBeWrittenIsRefusedAndUndone() async throws {
        let dir = scratchDirectory()
        var config = try apiConfig(stateDir: dir)
        config.stateDirectory = dir + "/state"
        try await withAgent(config) { _, c in
            let alice = c["alice"]!
            let first = try await alice.request("POST", "/api/v1/leases", json: ["ttl_s": 600])
            #expect(first.status == 201)
            let token = first.json["token"] as! String
            let expires = try await alice.request("GET", "/api/v1/leases").json["current"].flatMap { ($0 as? [String: Any])?["expires_at"] as? String }
            // The file cannot be replaced any more: a non-empty directory stands where it was (works as root too).
            let file = dir + "/state/leases.json"
            try FileManager.default.removeItem(atPath: file)
            try FileManager.default.createDirectory(atPath: file + "/blocked", withIntermediateDirectories: true)
            let renew = try await alice.request("POST", "/api/v1/leases/current/renew", json: ["ttl_s": 7200], leaseToken: token)
            #expect(renew.status == 503 && renew.headers["content-type"] == "application/problem+json", "\(renew.text)")
            let after = try await alice.request("GET", "/api/v1/leases").json["current"].flatMap { ($0 as? [String: Any])?["expires_at"] as? String }
            #expect(after == expires, "the renewal was undone")
            #expect(try await alice.request("DELETE", "/api/v1/leases/current", leaseToken: token).status == 503)
            #expect(try await alice.request("GET", "/api/v1/leases").json["current"] is [String: Any], "the release was undone")
            try FileManager.default.removeItem(atPath: file)
            #expect(try await alice.request("DELETE", "/api/v1/leases/current", leaseToken: token).status == 204)
            try FileManager.default.removeItem(atPath: file)
            try FileManager.default.createDirectory(atPath: file + "/blocked", withIntermediateDirectories: true)
            let refused = try await c["bob"]!.request("POST", "/api/v1/leases", json: ["ttl_s": 60])
            #expect(refused.status == 503, "\(refused.text)")
            #expect(noHolder(try await alice.request("GET", "/api/v1/leases").json), "nobody holds the device")
        }
    }
}
