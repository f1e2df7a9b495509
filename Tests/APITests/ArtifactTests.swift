import AgentClock
import AgentRuntime
import Auth
@testable import Configuration
import Foundation
import POSIXIO
import TestSupport
import Testing

/// A free TCP port on loopback (bound and released), for a listener whose URL must be known first.
func freeLoopbackPort() throws -> Int {
    let s = try TCPListener.listen(host: "127.0.0.1", port: 0)
    defer { s.close() }
    return s.port
}

func artifactConfig(stateDir: String, port: Int, maxMiB: Int = 64, quotaMiB: Int = 256) throws -> AgentConfig {
    var c = try apiConfig(stateDir: stateDir)
    c.artifacts.listenHost = "127.0.0.1"
    c.artifacts.listenPort = port
    c.artifacts.url = "http://127.0.0.1:\(port)"
    c.artifacts.maxBytes = Int64(maxMiB) << 20
    c.artifacts.quotaBytes = Int64(quotaMiB) << 20
    return c
}

func bytes(_ count: Int, seed: UInt8) -> [UInt8] { (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ Int(seed) &+ ($0 >> 9)) } }

@Suite(.serialized) struct ArtifactTests {
    /// The path part of an artifact's URL (the test fetches it from the DUT listener directly).
    func path(_ url: String) -> String { String(url.drop { $0 != "/" }.dropFirst(2).drop { $0 != "/" }) }

    @Test func uploadsStreamToDiskAndTheDUTFetchesThemWithRangesOnlyUnderTheLease() async throws {
        let dir = scratchDirectory(), port = try freeLoopbackPort()
        try await withAgent(artifactConfig(stateDir: dir, port: port)) { agent, c in
            let a = c["alice"]!
            let dut = HTTP(port: agent.dutFiles!.port, token: nil)
            let token = try await a.request("POST", "/api/v1/leases", json: ["ttl_s": 600]).json["token"] as! String
            // 20 MiB: far over the in-memory body limit (64 KiB here), so it can only have been streamed.
            let kernel = bytes(20 << 20, seed: 1)
            let put = try await a.request("PUT", "/api/v1/artifacts/bzImage", body: kernel, leaseToken: token)
            #expect(put.status == 201, "\(put.text)")
            #expect(put.json["sha256"] as? String == SHA256.hex(bytes: kernel) && put.json["bytes"] as? Int == kernel.count)
            let url = try #require(put.json["url"] as? String)
            #expect(url.hasPrefix("http://127.0.0.1:\(port)/a/") && url.hasSuffix("/bzImage"))
            let whole = try await dut.request("GET", path(url))
            let wholeSame = whole.body == kernel
            #expect(whole.status == 200 && wholeSame && whole.headers["accept-ranges"] == "bytes")
            let part = try await dut.request("GET", path(url), headers: ["Range": "bytes=1000-1999"])
            #expect(part.status == 206 && part.body == Array(kernel[1000...1999]) && part.headers["content-range"] == "bytes 1000-1999/\(kernel.count)")
            let tail = try await dut.request("GET", path(url), headers: ["Range": "bytes=-10"])
            #expect(tail.status == 206 && tail.body == Array(kernel.suffix(10)))
            let open = try await dut.request("GET", path(url), headers: ["Range": "bytes=\(kernel.count - 5)-"])
            #expect(open.body == Array(kernel.suffix(5)))
            #expect(try await dut.request("GET", path(url), headers: ["Range": "bytes=\(kernel.count)-"]).status == 416)
            #expect(try await dut.request("GET", "/a/0123456789abcdef0123456789abcdef/bzImage").status == 404, "a guessed prefix")
            #expect(try await dut.request("PUT", path(url), body: [1]).status == 405, "read-only")
            // Listed with size, hash and age; downloadable through the API too.
            let list = try await a.request("GET", "/api/v1/artifacts").json
            #expect((list["artifacts"] as? [[String: Any]])?.first?["name"] as? String == "bzImage" && list["total_bytes"] as? Int == kernel.count)
            // Compared first: a failing #expect on megabytes spends minutes describing them.
            do { let same = try await a.request("GET", "/api/v1/artifacts/bzImage").body == kernel; #expect(same) }
            // The lease ends: the URL stops working, and the next lease gets another one.
            #expect(try await a.request("DELETE", "/api/v1/leases/current", leaseToken: token).status == 204)
            #expect(try await dut.request("GET", path(url)).status == 404)
            let next = try await c["bob"]!.request("POST", "/api/v1/leases", json: ["ttl_s": 60]).json["token"] as! String
            #expect(try await dut.request("GET", path(url)).status == 404, "not for the next holder")
            let nextURL = try #require((try await c["bob"]!.request("GET", "/api/v1/artifacts").json["artifacts"] as? [[String: Any]])?.first?["url"] as? String)
            let fetched = try await dut.request("GET", path(nextURL))
            // Compared first: a failing #expect on megabytes spends minutes describing them.
            do { let same = nextURL != url && fetched.body == kernel; #expect(same) }
            #expect(try await c["bob"]!.request("DELETE", "/api/v1/artifacts/bzImage", leaseToken: next).status == 204)
            #expect(try await dut.request("GET", path(nextURL)).status == 404)
        }
    }

    @Test func anInterruptedUploadLeavesNothingAndTheStoreSurvivesARestart() async throws {
        let dir = scratchDirectory(), port = try freeLoopbackPort()
        let initrd = bytes(3 << 20, seed: 2)
        var config = try artifactConfig(stateDir: dir, port: port)
        // A client that stops sending mid-body is dropped at the connection timeout.
        config.http.connectionTimeoutSeconds = 2
        try await withAgent(config) { agent, c in
            let a = c["alice"]!
            let token = try await a.request("POST", "/api/v1/leases", json: ["ttl_s": 600]).json["token"] as! String
            #expect(try await a.request("PUT", "/api/v1/artifacts/initrd.img", body: initrd, leaseToken: token).status == 201)
            // A client that promises 10 MiB, sends 1 MiB and hangs up.
            try await onThread {
                let s = try TestSocket.connect(port: agent.port)
                s.send(Array("PUT /api/v1/artifacts/half HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(tokens["alice"]!)\r\nX-Lease-Token: \(token)\r\nContent-Length: \(10 << 20)\r\n\r\n".utf8))
                s.send(bytes(1 << 20, seed: 3))
                s.close()
            }
            let deadline = ContinuousClock.now + .seconds(15)
            while ContinuousClock.now < deadline {
                let left = try FileManager.default.contentsOfDirectory(atPath: dir + "/artifacts").filter { $0.hasPrefix(".upload-") }
                if left.isEmpty { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/artifacts").filter { $0.hasPrefix(".upload-") }.isEmpty, "\((try? FileManager.default.contentsOfDirectory(atPath: dir + "/artifacts")) ?? [])")
            let names = (try await a.request("GET", "/api/v1/artifacts").json["artifacts"] as? [[String: Any]])?.map { $0["name"] as? String }
            #expect(names == ["initrd.img"])
            // Without the lease: refused, and nothing is kept.
            let refused = try await c["bob"]!.request("PUT", "/api/v1/artifacts/sneaky", body: bytes(1 << 20, seed: 4))
            #expect(refused.status == 423)
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/artifacts").filter { $0.contains("sneaky") || $0.hasPrefix(".upload-") }.isEmpty)
        }
        // A crash mid-commit leaves data without a record, or a stray temporary file: both go at start.
        FileManager.default.createFile(atPath: dir + "/artifacts/orphan", contents: Data([1, 2, 3]))
        FileManager.default.createFile(atPath: dir + "/artifacts/.upload-zzz.part", contents: Data([1]))
        try await withAgent(artifactConfig(stateDir: dir, port: port)) { _, c in
            let list = try await c["alice"]!.request("GET", "/api/v1/artifacts").json["artifacts"] as? [[String: Any]]
            #expect(list?.map { $0["name"] as? String } == ["initrd.img"] && list?.first?["sha256"] as? String == SHA256.hex(bytes: initrd))
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/artifacts").sorted() == [".initrd.img.json", "initrd.img"])
        }
    }

    @Test func theQuotaEvictsTheLeastRecentlyUsedAndLimitsAreNamed() async throws {
        let dir = scratchDirectory(), port = try freeLoopbackPort()
        try await withAgent(artifactConfig(stateDir: dir, port: port, maxMiB: 2, quotaMiB: 3)) { agent, c in
            let a = c["alice"]!
            let dut = HTTP(port: agent.dutFiles!.port, token: nil)
            let token = try await a.request("POST", "/api/v1/leases", json: ["ttl_s": 600]).json["token"] as! String
            let first = try await a.request("PUT", "/api/v1/artifacts/a", body: bytes(1_500_000, seed: 5), leaseToken: token).json
            _ = try await a.request("PUT", "/api/v1/artifacts/b", body: bytes(1_200_000, seed: 6), leaseToken: token)
            // The DUT fetches a: b is now the least recently used.
            #expect(try await dut.request("GET", path(first["url"] as! String)).status == 200)
            #expect(try await a.request("PUT", "/api/v1/artifacts/c", body: bytes(1_500_000, seed: 7), leaseToken: token).status == 201)
            let names = (try await a.request("GET", "/api/v1/artifacts").json["artifacts"] as? [[String: Any]])?.compactMap { $0["name"] as? String }
            #expect(names == ["a", "c"], "b was the least recently used")
            let big = try await a.request("PUT", "/api/v1/artifacts/huge", body: bytes(3 << 20, seed: 8), leaseToken: token)
            #expect(big.status == 413, "\(big.text)")
            let bad = try await a.request("PUT", "/api/v1/artifacts/..%2Fetc", body: [1], leaseToken: token)
            #expect(bad.status == 422 || bad.status == 404)
            #expect(try await a.request("PUT", "/api/v1/artifacts/.hidden", body: [1], leaseToken: token).status == 422)
        }
    }

    @Test func aSpecNamingAnUnknownArtifactIsRefusedBeforeAnythingIsPowered() async throws {
        let port = try freeLoopbackPort()
        try await withAgent(artifactConfig(stateDir: scratchDirectory(), port: port)) { agent, c in
            let r = try await c["alice"]!.request("POST", "/api/v1/runs", json: spec {
                $0["ipxe"] = ["commands": ["dhcp net0"], "script": ["kernel ${artifact:bzImage} console=ttyS0", "boot"]]
            })
            #expect(r.status == 422 && (r.json["detail"] as? String ?? "").contains("${artifact:bzImage}, which is not uploaded"), "\(r.text)")
            #expect(await agent.hardware.simulator!.lastCommandLine == nil)
        }
    }

    /// Artifacts nobody used for artifacts.max_age_h are removed (the injected clock decides).
    @Test func artifactsUnusedForTheirMaximumAgeAreRemoved() async throws {
        let clock = ManualClock(start: Timestamp(secondsSinceEpoch: Double(Int(Date().timeIntervalSince1970))))
        var config = try artifactConfig(stateDir: scratchDirectory(), port: try freeLoopbackPort())
        config.artifacts.maxAgeSeconds = 3600
        try await withAgent(config, clock: clock) { agent, c in
            let a = c["alice"]!
            let dut = HTTP(port: agent.dutFiles!.port, token: nil)
            let token = try await a.request("POST", "/api/v1/leases", json: ["ttl_s": 28800]).json["token"] as! String
            let old = try await a.request("PUT", "/api/v1/artifacts/old", body: bytes(1000, seed: 1), leaseToken: token).json
            _ = try await a.request("PUT", "/api/v1/artifacts/used", body: bytes(1000, seed: 2), leaseToken: token)
            clock.advance(by: .seconds(3000))
            let used = try #require((try await a.request("GET", "/api/v1/artifacts").json["artifacts"] as? [[String: Any]])?.first { $0["name"] as? String == "used" }?["url"] as? String)
            #expect(try await dut.request("GET", path(used)).status == 200, "using it keeps it")
            clock.advance(by: .seconds(700))
            let names = (try await a.request("GET", "/api/v1/artifacts").json["artifacts"] as? [[String: Any]])?.compactMap { $0["name"] as? String }
            #expect(names == ["used"], "\(names ?? [])")
            #expect(try await dut.request("GET", path(old["url"] as! String)).status == 404)
        }
    }
}
