import AgentAPI
import AgentClock
import AgentRuntime
import Auth
@testable import Configuration
import Foundation
import GPIO
import Logging
import TestSupport
import Testing

let tokens = ["alice": "alice-secret-token", "bob": "bob-secret-token", "carol": "carol-secret-token", "root": "root-secret-token"]

/// The simulated apu2's config as text, with the test users' tokens when `auth` is on.
func apiConfigYAML(auth: Bool = true, timing: String = "fast") throws -> String {
    var yaml = try String(contentsOfFile: packageRoot + "/deploy/simulated.yaml", encoding: .utf8)
    yaml = yaml.replacingOccurrences(of: "timing: realistic", with: "timing: \(timing)")
    if auth {
        let list = tokens.sorted { $0.key < $1.key }.map { "    - {user: \($0.key), sha256: \(SHA256.hex($0.value)), admin: \($0.key == "root")}" }
        yaml = yaml.replacingOccurrences(of: "auth:\n  enabled: false", with: "auth:\n  enabled: true\n  tokens:\n" + list.joined(separator: "\n"))
    }
    return yaml
}

func apiConfig(stateDir: String, auth: Bool = true, timing: String = "fast") throws -> AgentConfig {
    var c = try AgentConfig.parse(yaml: apiConfigYAML(auth: auth, timing: timing), file: "test.yaml")
    c.stateDirectory = stateDir
    c.http.port = 0
    c.http.consolePort = nil  // tests that need the TCP console ask for a free port (0)
    c.http.maxBodyBytes = 64 * 1024
    c.http.openAPIDocument = packageRoot + "/deploy/openapi.json"
    c.power.cycleOffMilliseconds = 50
    c.flash.chip = flashromEmulatedChipName  // the installed flashrom's name for the emulated part
    return c
}

/// Starts the real agent on loopback; `body` gets clients for each user.
/// `log` gets each line the agent logs; `levels` each line with its level.
func withAgent(_ config: AgentConfig, clock: any AgentClock = SystemClock(), log: @escaping @Sendable (String) -> Void = { _ in },
               levels: (@Sendable (Logger.Level, String) -> Void)? = nil,
               _ body: (Agent, [String: HTTP]) async throws -> Void) async throws {
    let agent = try await Agent.start(config: config, clock: clock, logger: recordingLogger { level, line in
        log(line)
        levels?(level, line)
    })
    var clients: [String: HTTP] = [:]
    for (u, t) in tokens { clients[u] = HTTP(port: agent.port, token: t) }
    clients["nobody"] = HTTP(port: agent.port, token: nil)
    do { try await body(agent, clients) } catch { _ = await agent.shutdown(); throw error }
    _ = await agent.shutdown()
}

func detached<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await Task { try work() }.value
}

@Suite(.serialized) struct LeaseAPITests {
    @Test func sha256MatchesTheStandardVector() {
        #expect(SHA256.hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(SHA256.hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        // FIPS 180-4 two-block and million-byte vectors (nettle does the hashing).
        #expect(SHA256.hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        #expect(SHA256.hex(String(repeating: "a", count: 1_000_000)) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
        #expect(constantTimeEquals(SHA256.hash([1, 2]), SHA256.hash([1, 2])))
        #expect(!constantTimeEquals(SHA256.hash([1, 2]), SHA256.hash([1, 3])))
        #expect(!constantTimeEquals([1, 2, 3], [1, 2]) && constantTimeEquals([], []))
    }

    @Test func twoUsersRaceForTheLeaseAndExactlyOneWins() async throws {
        try await withAgent(apiConfig(stateDir: scratchDirectory())) { agent, c in
            let (a, b) = (c["alice"]!, c["bob"]!)
            async let ra = a.request("POST", "/api/v1/leases", json: ["ttl_s": 600, "purpose": "kernel A"])
            async let rb = b.request("POST", "/api/v1/leases", json: ["ttl_s": 600, "purpose": "kernel B"])
            let results = try await [ra, rb]
            #expect(results.map(\.status).sorted() == [201, 409])
            let winner = results.first { $0.status == 201 }!
            let loser = results.first { $0.status == 409 }!
            #expect(loser.headers["content-type"] == "application/problem+json")
            #expect(loser.json["holder"] as? String == winner.json["holder"] as? String)
            #expect(loser.json["expires_at"] as? String == winner.json["expires_at"] as? String)
            #expect((loser.json["detail"] as? String ?? "").contains("held by \(winner.json["holder"] as! String)"))
            #expect((winner.json["token"] as? String)?.count == 48)
        }
    }

    @Test func queueHandsOverInFIFOOrderOnReleaseAndOnExpiryAndExpiryPowersOff() async throws {
        let clock = ManualClock(start: Timestamp(secondsSinceEpoch: Double(Int(Date().timeIntervalSince1970))))
        var config = try apiConfig(stateDir: scratchDirectory())
        config.leases.expiryAction = .hardOff  // the supply is cut (power_off's button hold: the test after this one)
        try await withAgent(config, clock: clock) { agent, c in
            let first = try await c["alice"]!.request("POST", "/api/v1/leases", json: ["ttl_s": 100, "purpose": "first"])
            #expect(first.status == 201)
            let aliceToken = first.json["token"] as! String
            // bob, then carol join the queue (each long-polls).
            let bob = Task { try await c["bob"]!.request("POST", "/api/v1/leases", json: ["ttl_s": 50, "purpose": "second", "wait_s": 3600]) }
            try await waitForQueue(c["alice"]!, length: 1)
            let carol = Task { try await c["carol"]!.request("POST", "/api/v1/leases", json: ["ttl_s": 50, "purpose": "third", "wait_s": 3600]) }
            try await waitForQueue(c["alice"]!, length: 2)
            let book = try await c["alice"]!.request("GET", "/api/v1/leases")
            #expect((book.json["queue"] as? [[String: Any]])?.map { $0["user"] as! String } == ["bob", "carol"])

            #expect(try await c["alice"]!.request("DELETE", "/api/v1/leases/current", leaseToken: aliceToken).status == 204)
            let bobLease = try await bob.value
            #expect(bobLease.status == 201 && bobLease.json["holder"] as? String == "bob")
            // bob powers the DUT on, then lets the lease run out: the expiry action powers it off, carol gets it.
            let bobToken = bobLease.json["token"] as! String
            #expect(try await c["bob"]!.request("POST", "/api/v1/power", json: ["action": "on"], leaseToken: bobToken).status == 200)
            #expect(agent.hardware.simulatedBank!.isActive("relay"))
            clock.advance(by: .seconds(51))
            let carolLease = try await carol.value
            #expect(carolLease.status == 201 && carolLease.json["holder"] as? String == "carol")
            #expect(!agent.hardware.simulatedBank!.isActive("relay"), "the expiry action powered the DUT off")
            // bob's old token is dead now.
            let late = try await c["bob"]!.request("POST", "/api/v1/power", json: ["action": "on"], leaseToken: bobToken)
            #expect(late.status == 423)
            #expect(late.json["holder"] as? String == "carol")
        }
    }

    @Test func waitingTimesOutWithTheHolderNamed() async throws {
        let clock = ManualClock(start: Timestamp(secondsSinceEpoch: Double(Int(Date().timeIntervalSince1970))))
        try await withAgent(apiConfig(stateDir: scratchDirectory()), clock: clock) { _, c in
            #expect(try await c["alice"]!.request("POST", "/api/v1/leases", json: ["ttl_s": 1000]).status == 201)
            let bob = Task { try await c["bob"]!.request("POST", "/api/v1/leases", json: ["ttl_s": 50, "wait_s": 10]) }
            try await waitForQueue(c["alice"]!, length: 1)
            clock.advance(by: .seconds(10))
            let r = try await bob.value
            #expect(r.status == 409)
            #expect(r.json["holder"] as? String == "alice")
            try await waitForQueue(c["alice"]!, length: 0)
        }
    }

    @Test func restartKeepsTheLeaseAndTheQueue() async throws {
        let dir = scratchDirectory()
        let clock = ManualClock(start: Timestamp(secondsSinceEpoch: Double(Int(Date().timeIntervalSince1970))))
        var aliceToken = "", leaseID = ""
        try await withAgent(apiConfig(stateDir: dir), clock: clock) { _, c in
            let r = try await c["alice"]!.request("POST", "/api/v1/leases", json: ["ttl_s": 600, "purpose": "persist me"])
            aliceToken = r.json["token"] as! String
            leaseID = r.json["id"] as! String
            // bob queues with an idempotency key, then the agent goes down under him.
            _ = Task { try? await c["bob"]!.request("POST", "/api/v1/leases", json: ["ttl_s": 60, "wait_s": 3600, "request_id": "bob-ci-42"]) }
            try await waitForQueue(c["alice"]!, length: 1)
        }
        try await withAgent(apiConfig(stateDir: dir), clock: clock) { _, c in
            let book = try await c["bob"]!.request("GET", "/api/v1/leases")
            let current = book.json["current"] as? [String: Any]
            #expect(current?["id"] as? String == leaseID)
            #expect(current?["holder"] as? String == "alice")
            #expect((book.json["queue"] as? [[String: Any]])?.map { $0["user"] as! String } == ["bob"])
            #expect(!book.text.contains("bob-ci-42"), "a request_id is never listed")
            // The same token still works after the restart; nothing was duplicated.
            #expect(try await c["alice"]!.request("POST", "/api/v1/leases/current/renew", json: ["ttl_s": 600], leaseToken: aliceToken).status == 200)
            // bob comes back with the same request id and gets the device when alice releases.
            let bob = Task { try await c["bob"]!.request("POST", "/api/v1/leases", json: ["ttl_s": 60, "wait_s": 3600, "request_id": "bob-ci-42"]) }
            try await waitForQueue(c["alice"]!, length: 1)
            #expect(try await c["alice"]!.request("DELETE", "/api/v1/leases/current", leaseToken: aliceToken).status == 204)
            #expect(try await bob.value.json["holder"] as? String == "bob")
            #expect(try await c["bob"]!.request("GET", "/api/v1/leases").json["queue"] as? [Any] != nil)
        }
    }

    @Test func changesWithoutTheLeaseAreRefusedAndChangeNothing() async throws {
        var config = try apiConfig(stateDir: scratchDirectory())
        config.leases.expiryAction = .hardOff  // the break below cuts the relay
        try await withAgent(config) { agent, c in
            let bank = agent.hardware.simulatedBank!
            let free = try await c["bob"]!.request("POST", "/api/v1/power", json: ["action": "on"])
            #expect(free.status == 409 && (free.json["detail"] as? String ?? "").contains("POST /api/v1/leases"))
            let lease = try await c["alice"]!.request("POST", "/api/v1/leases", json: ["ttl_s": 600, "purpose": "mine"])
            let token = lease.json["token"] as! String
            for (path, body) in [("/api/v1/power", ["action": "on"]), ("/api/v1/lines/relay", ["active": true]),
                                 ("/api/v1/lines/reset_button", ["pulse_ms": 100]), ("/api/v1/serial/input", ["text": "x"])] as [(String, [String: Any])] {
                let noToken = try await c["bob"]!.request("POST", path, json: body)
                #expect(noToken.status == 423, "\(path)")
                #expect(noToken.json["holder"] as? String == "alice")
                let wrongToken = try await c["bob"]!.request("POST", path, json: body, leaseToken: "0123")
                #expect(wrongToken.status == 423, "\(path)")
            }
            #expect(!bank.isActive("relay"))
            #expect(bank.history(of: "reset_button").isEmpty)
            #expect(agent.hardware.serial.status.bytesWritten == 0)
            // The holder can.
            #expect(try await c["alice"]!.request("POST", "/api/v1/lines/relay", json: ["active": true], leaseToken: token).status == 200)
            #expect(bank.isActive("relay"))
            // Admin breaks the lease; the expiry action powers off.
            #expect(try await c["bob"]!.request("POST", "/api/v1/leases/current/break").status == 403)
            // Naming a lease that is no longer current breaks nothing (the admin looked at an older one).
            let stale = try await c["root"]!.request("POST", "/api/v1/leases/current/break", json: ["lease_id": "lease-000000000000"])
            #expect(stale.status == 409 && (stale.json["detail"] as? String ?? "").contains("nothing was broken"), "\(stale.text)")
            #expect(bank.isActive("relay"), "still held")
            let current = try await c["root"]!.request("GET", "/api/v1/leases").json["current"] as? [String: Any]
            #expect(try await c["root"]!.request("POST", "/api/v1/leases/current/break", json: ["lease_id": current?["id"] as? String ?? ""]).status == 200)
            #expect(!bank.isActive("relay"))
        }
    }

    func waitForQueue(_ http: HTTP, length: Int) async throws {
        // The waiter's request is in flight on another thread; poll the book until it shows up.
        for _ in 0..<2000 {
            if (try await http.request("GET", "/api/v1/leases").json["queue"] as? [Any])?.count == length { return }
            await Task.yield()
        }
        throw TimeoutError(what: "queue never reached \(length)")
    }
}

@Suite(.serialized) struct HardwareAPITests {
    @Test func serialLogPagesWithoutGapOrDuplicate() async throws {
        try await withAgent(apiConfig(stateDir: scratchDirectory())) { agent, c in
            let a = c["alice"]!
            let token = try await a.request("POST", "/api/v1/leases", json: ["ttl_s": 600]).json["token"] as! String
            #expect(try await a.request("POST", "/api/v1/power", json: ["action": "on"], leaseToken: token).json["state"] as? String == "on")
            // Wait (through the stream API) until the simulated board reaches its login prompt.
            let s = try TestSocket.connect(port: agent.port)
            s.send(Array("GET /api/v1/serial/stream?from=0 HTTP/1.0\r\nHost: x\r\nAuthorization: Bearer \(tokens["alice"]!)\r\n\r\n".utf8))
            var acc: [UInt8] = []
            let reached = await s.receive(until: "login: ", into: &acc)
            s.close()
            try #require(reached, "the simulated board did not reach its login prompt")
            let end = agent.hardware.capture.endOffset
            var paged: [UInt8] = []
            var from: UInt64 = 0
            var pages = 0
            while from < end {
                // Page up to `end` only: the board keeps talking after the prompt.
                let page = try await a.request("GET", "/api/v1/serial/log?from=\(from)&limit=\(Swift.min(97, end - from))")
                #expect(page.status == 200)
                #expect(page.json["from"] as? Int == Int(from))
                // Stops the test, not the test process, when a page is wrong.
                let data = try #require((page.json["data"] as? String).flatMap { Data(base64Encoded: $0) }, "\(page.text)")
                paged += data
                from = UInt64(page.json["next"] as! Int)
                pages += 1
            }
            // The board may still be talking: compare the same range.
            let whole = try await a.request("GET", "/api/v1/serial/log?from=0&limit=\(end)")
            #expect(paged == Array(Data(base64Encoded: whole.json["data"] as! String)!))
            #expect(paged.count == Int(end) && pages > 5)
            #expect(String(decoding: paged, as: UTF8.self).contains("apu2 login: "))
        }
    }

    @Test func consoleCarriesKeystrokesToTheDUTAndOutputBack() async throws {
        try await withAgent(apiConfig(stateDir: scratchDirectory())) { agent, c in
            let a = c["alice"]!
            let token = try await a.request("POST", "/api/v1/leases", json: ["ttl_s": 600]).json["token"] as! String
            let s = try TestSocket.connect(port: agent.port)
            defer { s.close() }
            s.send(Array(("GET /api/v1/console HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: rte-console\r\n"
                          + "Authorization: Bearer \(tokens["alice"]!)\r\nX-Lease-Token: \(token)\r\n\r\n").utf8))
            var acc: [UInt8] = []
            #expect(await s.receive(until: "\r\n\r\n", into: &acc))
            #expect(String(decoding: acc, as: UTF8.self).hasPrefix("HTTP/1.1 101"))
            _ = try await a.request("POST", "/api/v1/power", json: ["action": "on"], leaseToken: token)
            #expect(await s.receive(until: "Press Ctrl-B", into: &acc))
            s.send([0x02])
            #expect(await s.receive(until: "iPXE> ", into: &acc))
            s.send(Array("echo hello-from-console\r".utf8))
            #expect(await s.receive(until: "hello-from-console\r\niPXE> ", into: &acc))
            // A watcher without the lease sees output but cannot type.
            let w = try TestSocket.connect(port: agent.port)
            defer { w.close() }
            w.send(Array("GET /api/v1/console HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: rte-console\r\nAuthorization: Bearer \(tokens["bob"]!)\r\n\r\n".utf8))
            var wacc: [UInt8] = []
            #expect(await w.receive(until: "\r\n\r\n", into: &wacc))
            let written = agent.hardware.serial.status.bytesWritten
            w.send(Array("reboot\r".utf8))
            #expect(await w.receive(until: "read-only console", into: &wacc))
            #expect(agent.hardware.serial.status.bytesWritten == written)
        }
    }
}

@Suite(.serialized) struct BadInputTests {
    @Test func everyBadRequestGetsItsProblemDocumentAndTheDaemonKeepsServing() async throws {
        let clock = ManualClock(start: Timestamp(secondsSinceEpoch: Double(Int(Date().timeIntervalSince1970))))
        try await withAgent(apiConfig(stateDir: scratchDirectory()), clock: clock) { agent, c in
            let a = c["alice"]!
            let token = try await a.request("POST", "/api/v1/leases", json: ["ttl_s": 60]).json["token"] as! String
            func expectProblem(_ r: RawHTTPResponse, _ status: Int, _ detail: String, sourceLocation: SourceLocation = #_sourceLocation) {
                #expect(r.status == status, sourceLocation: sourceLocation)
                #expect(r.headers["content-type"] == "application/problem+json", sourceLocation: sourceLocation)
                #expect(r.json["status"] as? Int == status, sourceLocation: sourceLocation)
                #expect(r.json["title"] is String && r.json["type"] is String, sourceLocation: sourceLocation)
                #expect((r.json["detail"] as? String ?? "").contains(detail), "\(r.json["detail"] ?? "")", sourceLocation: sourceLocation)
            }
            expectProblem(try await a.request("POST", "/api/v1/power", body: Array("{\"action\": ".utf8), leaseToken: token), 400, "not valid JSON")
            // Issue 16 D8: nesting is refused by name, for any body the API reads.
            let deep = Array(("{\"action\": " + String(repeating: "[", count: 600) + String(repeating: "]", count: 600) + "}").utf8)
            expectProblem(try await a.request("POST", "/api/v1/power", body: deep, leaseToken: token), 400, "nested 602 levels deep; at most 64 are accepted")
            expectProblem(try await a.request("POST", "/api/v1/runs", body: deep), 400, "nested 602 levels deep; at most 64 are accepted")
            expectProblem(try await a.request("POST", "/api/v1/power", body: Array("[1,2]".utf8), leaseToken: token), 400, "must be a JSON object")
            expectProblem(try await a.request("POST", "/api/v1/power", json: ["action": 5], leaseToken: token), 400, "\"action\" must be a string")
            expectProblem(try await a.request("POST", "/api/v1/power", json: ["action": "on", "force": true], leaseToken: token), 400, "unknown field \"force\"")
            expectProblem(try await a.request("POST", "/api/v1/power", json: ["action": "explode"], leaseToken: token), 422, "unknown action \"explode\"")
            expectProblem(try await a.request("POST", "/api/v1/lines/relay", json: ["pulse_ms": 1.5], leaseToken: token), 400, "must be an integer")
            expectProblem(try await a.request("POST", "/api/v1/lines/power_led", json: ["active": true], leaseToken: token), 422, "is an input line")
            expectProblem(try await a.request("POST", "/api/v1/lines/warp_drive", json: ["active": true], leaseToken: token), 404, "warp_drive")
            expectProblem(try await a.request("POST", "/api/v1/power", json: ["action": "reset"], leaseToken: token), 409, "the DUT is off")
            expectProblem(try await a.request("POST", "/api/v1/leases", json: ["ttl_s": 999_999]), 422, "ttl_s must be between 1 and 28800")
            expectProblem(try await a.request("GET", "/api/v1/serial/log?from=abc"), 400, "from must be a non-negative integer")
            let huge = [UInt8](repeating: UInt8(ascii: "a"), count: 200_000)
            expectProblem(try await a.request("POST", "/api/v1/serial/input", body: huge, leaseToken: token), 413, "exceeds 65536 bytes")
            // A client that asks first (curl does for big bodies) is refused before it sends anything.
            expectProblem(try await a.request("POST", "/api/v1/serial/input", leaseToken: token,
                                              headers: ["Expect": "100-continue", "Content-Length": "10000000"]), 413, "exceeds 65536 bytes")
            expectProblem(try await a.request("GET", "/api/v1/no/such/thing"), 404, "no route")
            let wrongMethod = try await a.request("PUT", "/api/v1/power")
            expectProblem(wrongMethod, 405, "PUT is not allowed")
            #expect(wrongMethod.headers["allow"] == "GET, POST")
            expectProblem(try await c["nobody"]!.request("GET", "/api/v1/status"), 401, "Authorization: Bearer")
            expectProblem(try await a.request("GET", "/api/v1/status", bearer: .some("forged")), 401, "not known")
            // An expired lease's token.
            clock.advance(by: .seconds(61))
            expectProblem(try await a.request("POST", "/api/v1/power", json: ["action": "on"], leaseToken: token), 409, "expired, was released or broken")
            // Still serving, unauthenticated health is open.
            #expect(try await c["nobody"]!.request("GET", "/api/v1/health").status == 200)
            #expect(try await a.request("GET", "/api/v1/status").json["dut"] as? String == "apu2-sim")
        }
    }
}

@Suite struct OpenAPITests {
    @Test func documentMatchesTheRoutesTheServerHas() async throws {
        try await withAgent(apiConfig(stateDir: scratchDirectory())) { agent, c in
            let doc = try await c["nobody"]!.request("GET", "/api/v1/openapi.json")
            #expect(doc.status == 200)
            #expect(doc.json["openapi"] as? String == "3.1.0")
            let paths = doc.json["paths"] as! [String: [String: Any]]
            var documented = Set<String>()
            for (path, ops) in paths { for method in ops.keys { documented.insert("\(method.uppercased()) \(path)") } }
            let served = Set(agent.router.table.map { "\($0.method) \($0.pattern)" })
            #expect(documented == served, "documented but not served: \(documented.subtracting(served)); served but not documented: \(served.subtracting(documented))")
            try Data(doc.body).write(to: URL(fileURLWithPath: NSTemporaryDirectory() + "rte-agent-openapi.json"))
        }
    }

    /// The file is the document: served as it is, with the agent's own version; without it the
    /// route says where it looked (the rest of the API is unaffected).
    @Test func theDocumentIsTheInstalledFileWithTheAgentsVersion() async throws {
        let file = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: packageRoot + "/deploy/openapi.json"))) as! [String: Any]
        try await withAgent(apiConfig(stateDir: scratchDirectory())) { _, c in
            let doc = try await c["nobody"]!.request("GET", "/api/v1/openapi.json").json
            #expect((doc["info"] as? [String: Any])?["version"] as? String == agentVersion)
            var served = doc, original = file
            served["info"] = nil; original["info"] = nil
            #expect(NSDictionary(dictionary: served).isEqual(to: original))
        }
        var config = try apiConfig(stateDir: scratchDirectory())
        config.http.openAPIDocument = scratchDirectory() + "/nowhere/openapi.json"
        try await withAgent(config) { _, c in
            let r = try await c["nobody"]!.request("GET", "/api/v1/openapi.json")
            #expect(r.status == 503 && (r.json["detail"] as? String ?? "").contains("nowhere/openapi.json"), "\(r.text)")
            #expect(try await c["nobody"]!.request("GET", "/api/v1/health").status == 200)
        }
    }

    /// The document describes the specs people write: every shipped spec (fail_on, watch, facts,
    /// xen_debug_keys among them) is valid against its RunSpec schema, checked by jsonschema.
    @Test func everyShippedSpecIsValidAgainstTheDocumentsRunSpecSchema() async throws {
        let script = """
        import glob, json, sys, yaml, jsonschema
        doc = json.load(open(sys.argv[1]))
        schema = dict(doc["components"]["schemas"]["RunSpec"], components=doc["components"])
        bad = 0
        for path in sorted(glob.glob(sys.argv[2] + "/*.yaml")):
            errors = list(jsonschema.Draft202012Validator(schema).iter_errors(yaml.safe_load(open(path))))
            for e in errors: print(path, list(e.absolute_path), e.message); bad += 1
            print("checked", path)
        sys.exit(1 if bad else 0)
        """
        let (status, text) = try await run(["python3", "-c", script, packageRoot + "/deploy/openapi.json", packageRoot + "/deploy/specs"],
                                           deadlineSeconds: 120)
        #expect(status == 0, "\(text)")
        #expect(text.contains("xen-iommu.yaml"), "\(text)")
    }

    @Test func documentValidatesWithOpenAPISpecValidator() async throws {
        try await withAgent(apiConfig(stateDir: scratchDirectory())) { _, c in
            let doc = try await c["nobody"]!.request("GET", "/api/v1/openapi.json")
            let path = NSTemporaryDirectory() + "rte-agent-openapi-\(UUID().uuidString).json"
            try Data(doc.body).write(to: URL(fileURLWithPath: path))
            let (status, text) = try await run(["python3", "-m", "openapi_spec_validator", path], deadlineSeconds: 120)
            #expect(status == 0, "\(text)")
        }
    }
}

extension HardwareAPITests {
    /// An event's detail is text from a device path or an error: the SSE data line is JSON that
    /// keeps it as it was (quotes used to become apostrophes; a backslash broke the JSON).
    @Test func serialEventsInTheEventStreamAreJSONThatKeepsTheirDetail() async throws {
        try await withAgent(apiConfig(stateDir: scratchDirectory())) { agent, _ in
            let detail = #"reopened "/dev/ttyUSB0" after C:\ error\n"#
            let start = agent.hardware.capture.endOffset
            _ = agent.hardware.capture.mark(.gap, detail: detail)
            agent.hardware.capture.append(Array("after the event\r\n".utf8))
            let s = try TestSocket.connect(port: agent.port)
            defer { s.close() }
            s.send(Array("GET /api/v1/serial/stream?from=\(start)&format=sse HTTP/1.0\r\nHost: x\r\nAuthorization: Bearer \(tokens["alice"]!)\r\n\r\n".utf8))
            var acc: [UInt8] = []
            #expect(await s.receive(until: "event: data", into: &acc))
            let text = String(decoding: acc, as: UTF8.self)
            // The port's own "opened" event may come first; every event line must be JSON.
            let lines = text.split(separator: "\n").filter { $0.hasPrefix("data: {") }
            let details = try lines.map { line in
                try #require(JSONSerialization.jsonObject(with: Data(line.dropFirst(6).utf8)) as? [String: Any], "\(line)")["detail"] as? String
            }
            #expect(details.contains(detail), "\(text)")
        }
    }
}
