import AgentClock
@testable import Leases
import Foundation
import Synchronization
import Testing

/// A value that holds a secret prints without it, however it is printed (issue 16, D1).
@Suite struct SecretsTests {
    @Test func aLeaseAndEveryLeaseErrorPrintWithoutTheToken() {
        let secret = "0123456789abcdef-secret-lease-token"
        let lease = Lease(id: "lease-1", holder: "bob", purpose: "flash", token: secret, grantedAt: Timestamp(nanosecondsSinceEpoch: 0),
                          expiresAt: Timestamp(nanosecondsSinceEpoch: 3_600_000_000_000), boundAddress: "10.0.0.2", requestID: "req-secret", run: nil)
        let errors: [LeaseError] = [.busy(lease, queueLength: 2), .waitTimedOut(lease), .leaseRequired(current: lease),
                                    .invalidLeaseToken(current: lease)]
        var dumped = ""
        dump(lease, to: &dumped)
        var texts = ["\(lease)", String(describing: lease), String(reflecting: lease), dumped, "\([lease])", "\(Optional(lease) as Any)"]
        for e in errors {
            var d = ""
            dump(e, to: &d)
            texts += ["\(e)", String(describing: e), String(reflecting: e), "\(e as any Error)", d]
        }
        for t in texts {
            #expect(!t.contains(secret), "token printed: \(t)")
            #expect(!t.contains("req-secret"), "idempotency key printed: \(t)")
        }
        #expect("\(errors[0])".contains("bob"), "the holder is still named")
    }

    @Test func aLeaseCredentialPrintsWithoutItsToken() {
        let secret = "fedcba9876543210-secret-lease-token"
        let credential = LeaseCredential.token(secret)
        var dumped = ""
        dump(credential, to: &dumped)
        for t in ["\(credential)", String(describing: credential), String(reflecting: credential), dumped, "\([credential])"] {
            #expect(!t.contains(secret), "token printed: \(t)")
        }
        #expect("\(LeaseCredential.holder("labgrid"))" == "the holder labgrid")
    }
}

/// Issue 16 D1, the class of problem: after leases, runs failing in every stage, runs stopped by
/// releases, breaks and expiry, no lease token ever issued appears anywhere but in the answer
/// that granted it — not in another response, an event stream, the agent's log or the state dir.
@Suite(.serialized) struct NoTokenLeaksTests {
    @Test func noLeaseTokenAppearsAnywhereButItsOwnGrant() async throws {
        let dir = scratchDirectory()
        let logged = Mutex<[String]>([])
        try await withAgent(apiConfig(stateDir: dir), log: { line in logged.withLock { $0.append(line) } }) { _, c in
            let (alice, bob, carol, root) = (c["alice"]!, c["bob"]!, c["carol"]!, c["root"]!)
            var tokens: Set<String> = []
            var seen: [(String, String)] = []  // (what, text) of everything else the agent said
            func grant(_ who: HTTP, _ body: [String: Any]) async throws -> String {
                let r = try await who.request("POST", "/api/v1/leases", json: body)
                #expect(r.status == 201, "\(r.text)")
                let t = try #require(r.json["token"] as? String)
                tokens.insert(t)
                return t
            }
            func say(_ what: String, _ r: RawHTTPResponse) { seen.append((what, r.text)) }
            func events(_ id: String) async throws -> String { try await runEvents(alice, id).text }
            // Leases: renew, bind, list, release; an idempotent retry.
            let a1 = try await grant(alice, ["ttl_s": 600, "purpose": "first"])
            say("renew", try await alice.request("POST", "/api/v1/leases/current/renew", json: ["ttl_s": 900], leaseToken: a1))
            say("bind", try await alice.request("POST", "/api/v1/leases/current/bind", json: ["address": "127.0.0.9"], leaseToken: a1))
            say("list", try await bob.request("GET", "/api/v1/leases"))
            say("current", try await bob.request("GET", "/api/v1/leases/current"))
            say("busy", try await bob.request("POST", "/api/v1/leases", json: ["ttl_s": 60]))
            say("wrong token", try await bob.request("POST", "/api/v1/power", json: ["action": "on"], leaseToken: "not-the-token"))
            say("legacy refused", try await HTTP(port: alice.port, token: nil, source: "127.0.0.3").request("PATCH", "/api/v1/gpio/0", json: ["state": 1]))
            say("release", try await alice.request("DELETE", "/api/v1/leases/current", leaseToken: a1))
            let b1 = try await grant(bob, ["ttl_s": 600, "request_id": "bob-r1"])
            let retry = try await bob.request("POST", "/api/v1/leases", json: ["ttl_s": 600, "request_id": "bob-r1"])
            #expect(retry.json["token"] as? String == b1)
            say("release", try await bob.request("DELETE", "/api/v1/leases/current", leaseToken: b1))
            // Runs that fail in each stage, on their own leases.
            var runs: [String] = []
            for body in [spec { $0["ipxe"] = ["commands": ["dhcp net7"], "menu_entry": "Xen Linux dev"] },
                         spec { $0["ipxe"] = ["commands": ["dhcp net0", "chain http://192.168.4.2:8000/menu.ipxe"], "menu_entry": "No such entry"] },
                         spec { $0["login"] = ["username": "root", "password": "wrong"] },
                         spec { $0["login"] = ["username": "root", "password": "debian", "prompt": "gettyless:"]; $0["timeouts"] = ["kernel": 1] },
                         spec { $0["commands"] = [["send": "cat /proc/cmdline", "expect": "not in the output", "timeout_s": 1]] }] {
                let r = try await carol.request("POST", "/api/v1/runs", json: body)
                say("run", r)
                let id = try #require(r.json["id"] as? String)
                runs.append(id)
                say("run finished", RawHTTPResponse(status: 200, headers: [:], body: Array(try await events(id).utf8)))
            }
            // Runs on a caller's lease stopped by a release, a break, and an expiry.
            for end in ["release", "break", "expiry"] {
                let t = try await grant(alice, ["ttl_s": end == "expiry" ? 2 : 600, "purpose": "run \(end)"])
                let r = try await alice.request("POST", "/api/v1/runs", json: spec { $0["repeat"] = 1000 }, leaseToken: t)
                say("run", r)
                let id = try #require(r.json["id"] as? String)
                runs.append(id)
                switch end {
                case "release": say("release", try await alice.request("DELETE", "/api/v1/leases/current", leaseToken: t))
                case "break": say("break", try await root.request("POST", "/api/v1/leases/current/break"))
                default: break
                }
                // The next holder waits for the device (the expiry frees it by itself).
                let next = try await grant(root, ["ttl_s": 60, "wait_s": 30, "purpose": "next"])
                say("run finished", RawHTTPResponse(status: 200, headers: [:], body: Array(try await events(id).utf8)))
                say("release", try await root.request("DELETE", "/api/v1/leases/current", leaseToken: next))
            }
            for id in runs { say("run \(id)", try await alice.request("GET", "/api/v1/runs/\(id)")) }
            say("runs", try await alice.request("GET", "/api/v1/runs"))
            say("metrics", try await alice.request("GET", "/metrics"))
            // A lease held while the state dir is read: its token must not be in leases.json either.
            let held = try await grant(carol, ["ttl_s": 600, "purpose": "held during the scan"])
            say("list", try await alice.request("GET", "/api/v1/leases"))
            #expect(tokens.count == 9 && tokens.contains(held))
            // Everything the agent said or wrote.
            for (what, text) in seen {
                for t in tokens { #expect(!text.contains(t), "a lease token in \(what): \(text.prefix(300))") }
            }
            for line in logged.withLock({ $0 }) {
                for t in tokens { #expect(!line.contains(t), "a lease token in the log: \(line)") }
            }
            var files = 0
            for file in try FileManager.default.subpathsOfDirectory(atPath: dir) {
                guard let data = FileManager.default.contents(atPath: dir + "/" + file) else { continue }
                files += 1
                let text = String(decoding: data, as: UTF8.self)
                for t in tokens { #expect(!text.contains(t), "a lease token in \(file)") }
            }
            #expect(files > runs.count, "the state dir was read (leases.json, runs/*.json, the serial log)")
        }
    }
}
