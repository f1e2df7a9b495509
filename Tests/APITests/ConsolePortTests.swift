import AgentRuntime
@testable import Configuration
import Foundation
import Testing

@Suite(.serialized) struct ConsolePortTests {
    @Test func onlyTheConnectionFromTheLeaseHoldersAddressTypes() async throws {
        var config = try apiConfig(stateDir: scratchDirectory())
        config.http.consolePort = 0
        try await withAgent(config) { agent, c in
            let a = c["alice"]!
            let port = try #require(agent.consolePort?.port)
            let token = try await a.request("POST", "/api/v1/leases", json: ["ttl_s": 600, "purpose": "telnet"]).json["token"] as! String
            // Alice's telnet runs on her workstation, 127.0.0.2 here; her lease is bound to it.
            let bound = try await a.request("POST", "/api/v1/leases/current/bind", json: ["address": "127.0.0.2"], leaseToken: token)
            #expect(bound.status == 200 && bound.json["bound_address"] as? String == "127.0.0.2")
            let holder = try TestSocket.connect(port: port, from: "127.0.0.2")
            let watcher = try TestSocket.connect(port: port, from: "127.0.0.1")
            defer { holder.close(); watcher.close() }
            var h: [UInt8] = [], w: [UInt8] = []
            #expect(await holder.receive(until: "console; you may type", into: &h))
            #expect(h.starts(with: [0xff, 0xfb, 0x03, 0xff, 0xfb, 0x01]), "telnet: WILL SGA, WILL ECHO")
            #expect(await watcher.receive(until: "console; you may type", into: &w))
            #expect(try await a.request("POST", "/api/v1/power", json: ["action": "on"], leaseToken: token).status == 200)
            #expect(await holder.receive(until: "Press Ctrl-B", into: &h))
            holder.send([0x02])
            #expect(await holder.receive(until: "iPXE> ", into: &h))
            // A telnet client sends CR NUL for Enter and may negotiate; both are filtered out.
            holder.send([0xff, 0xfd, 0x01] + Array("echo via-telnet\r".utf8) + [0x00])
            #expect(await holder.receive(until: "via-telnet\r\niPXE> ", into: &h))
            #expect(await watcher.receive(until: "via-telnet\r\niPXE> ", into: &w), "the watcher sees the same output")
            let written = agent.hardware.serial.status.bytesWritten
            watcher.send(Array("reboot\r".utf8))
            #expect(await watcher.receive(until: "read-only console", into: &w))
            #expect(agent.hardware.serial.status.bytesWritten == written, "nothing the watcher typed reached the DUT")
        }
    }

    @Test func withNobodyHoldingTheDeviceTrustedNetworksDecide() async throws {
        var config = try apiConfig(stateDir: scratchDirectory())
        config.http.consolePort = 0
        config.compat.trustedNetworks = ["127.0.0.2/32"]
        try await withAgent(config) { agent, c in
            let port = try #require(agent.consolePort?.port)
            let trusted = try TestSocket.connect(port: port, from: "127.0.0.2")
            let stranger = try TestSocket.connect(port: port, from: "127.0.0.3")
            defer { trusted.close(); stranger.close() }
            var t: [UInt8] = [], s: [UInt8] = []
            #expect(await trusted.receive(until: "console;", into: &t))
            #expect(await stranger.receive(until: "console;", into: &s))
            let before = agent.hardware.serial.status.bytesWritten
            stranger.send(Array("x".utf8))
            #expect(await stranger.receive(until: "read-only console", into: &s))
            #expect(agent.hardware.serial.status.bytesWritten == before)
            trusted.send(Array("y".utf8))
            // The byte reaches the port: wait for the written counter through the status API.
            var typed = false
            for _ in 0..<1000 where !typed {
                typed = (try await c["alice"]!.request("GET", "/api/v1/status").json["serial"] as? [String: Any])?["bytes_written"] as? Int == Int(before) + 1
            }
            #expect(typed)
        }
    }
}

@Suite struct TLSTests {
    @Test func theAPIServesHTTPSWithTheConfiguredCertificate() async throws {
        let dir = scratchDirectory()
        let gen = try await run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                                 "-keyout", dir + "/key.pem", "-out", dir + "/cert.pem"])
        try #require(gen.0 == 0, "openssl could not make a test certificate: \(gen.1)")
        var config = try apiConfig(stateDir: dir + "/state")
        config.http.tlsCertificate = dir + "/cert.pem"
        config.http.tlsKey = dir + "/key.pem"
        try await withAgent(config) { agent, _ in
            let port = agent.port
            let (_, body) = try await run(["curl", "-s", "--cacert", dir + "/cert.pem", "https://127.0.0.1:\(port)/api/v1/health"])
            #expect(body.contains("\"status\":\"ok\""), "\(body)")
            // Plain HTTP on the TLS port gets no HTTP answer.
            let plain = try? await HTTP(port: port, token: nil).request("GET", "/api/v1/health")
            #expect(plain?.status != 200)
        }
    }
}
