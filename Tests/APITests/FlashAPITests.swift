import Foundation
import Testing

/// The flash API on the simulated apu2, whose SPI chip is flashrom's dummy programmer emulating
/// an 8 MiB part (deploy/simulated.yaml): the real flashrom runs behind every call.
@Suite(.serialized) struct FlashAPITests {
    func image(_ seed: UInt8) -> [UInt8] { (0..<(8 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed)) } }

    @Test func uploadWriteFollowReadBackAndDownload() async throws {
        let dir = scratchDirectory()
        try await withAgent(apiConfig(stateDir: dir)) { agent, c in
            let a = c["alice"]!, b = c["bob"]!
            // Without the lease: refused before anything is read.
            let noLease = try await a.request("PUT", "/api/v1/flash/image", body: [1, 2, 3])
            #expect(noLease.status == 409 && noLease.json["title"] as? String == "Lease required")
            let token = try await a.request("POST", "/api/v1/leases", json: ["ttl_s": 600]).json["token"] as! String
            let wrong = try await a.request("PUT", "/api/v1/flash/image", body: [UInt8](repeating: 7, count: 4096), leaseToken: token)
            #expect(wrong.status == 422 && (wrong.json["detail"] as? String ?? "").contains("the image is 4096 bytes; the chip (flash.chip_mib) holds exactly 8388608"))
            let rom = image(5)
            let put = try await a.request("PUT", "/api/v1/flash/image", body: rom, leaseToken: token)
            #expect(put.status == 201, "\(put.text)")
            let sha = put.json["sha256"] as? String
            #expect(sha?.count == 64 && put.json["bytes"] as? Int == 8 << 20)
            #expect(try await b.request("GET", "/api/v1/flash/image").json["sha256"] as? String == sha)
            // Another user cannot start a flash.
            #expect(try await b.request("POST", "/api/v1/flash/jobs", json: ["operation": "write"]).status == 423)
            let started = try await a.request("POST", "/api/v1/flash/jobs", json: ["operation": "write"], leaseToken: token)
            #expect(started.status == 202, "\(started.text)")
            let id = started.json["id"] as! String
            // While the RTE holds the SPI bus, power and lines are held too, and a second job waits its turn.
            let power = try await a.request("POST", "/api/v1/power", json: ["action": "on"], leaseToken: token)
            let second = try await a.request("POST", "/api/v1/flash/jobs", json: ["operation": "probe"], leaseToken: token)
            let events = try await onThread { () throws -> String in
                let s = try TestSocket.connect(port: agent.port)
                defer { s.close() }
                s.send(Array("GET /api/v1/flash/jobs/\(id)/events HTTP/1.0\r\nHost: x\r\nAuthorization: Bearer \(tokens["alice"]!)\r\n\r\n".utf8))
                var acc: [UInt8] = []
                _ = s.receiveBlocking(until: "event: finished", into: &acc)
                return String(decoding: acc, as: UTF8.self)
            }
            // The job runs ≥ 1.4 s (200 ms in S5, then flashrom): these came while it ran.
            #expect(power.status == 409 && (power.json["type"] as? String ?? "").hasSuffix("flash-busy"), "\(power.text)")
            #expect(second.status == 409)
            for step in ["power_s5", "spi_on", "flashrom", "spi_off", "cmos_reset", "power_after"] {
                #expect(events.contains("\"name\":\"\(step)\""), "\(step) missing in \(events)")
            }
            #expect(events.contains("event: progress") && events.contains("\"phase\":\"verifying\""))
            let job = try await a.request("GET", "/api/v1/flash/jobs/\(id)").json
            #expect(job["state"] as? String == "succeeded", "\(job)")
            #expect(job["image_sha256"] as? String == sha && (job["flashrom_ms"] as? Double ?? 0) > 0)
            let chip = FileManager.default.contents(atPath: dir + "/flash/simulated-chip.bin").map(Array.init)
            // Compared first: a failing #expect on megabytes spends minutes describing them.
            do { let same = chip == rom; #expect(same, "the emulated chip holds the image") }
            // Read it back and download it.
            let read = try await a.request("POST", "/api/v1/flash/jobs", json: ["operation": "read"], leaseToken: token).json["id"] as! String
            var readJob: [String: Any] = [:]
            for _ in 0..<600 {
                readJob = try await a.request("GET", "/api/v1/flash/jobs/\(read)").json
                if readJob["state"] as? String != "running" { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(readJob["read_sha256"] as? String == sha)
            let download = try await a.request("GET", "/api/v1/flash/read", leaseToken: token)
            // Compared first: a failing #expect on megabytes spends minutes describing them.
            do { let same = download.status == 200 && download.body == rom; #expect(same) }
            #expect(download.headers["x-sha256"] == sha, "\(download.headers)")
            #expect(try await a.request("DELETE", "/api/v1/flash/image", leaseToken: token).status == 204)
            #expect(try await a.request("GET", "/api/v1/flash/image").status == 404)
            let none = try await a.request("POST", "/api/v1/flash/jobs", json: ["operation": "write"], leaseToken: token)
            #expect(none.status == 404 && (none.json["detail"] as? String ?? "").contains("no image is uploaded"))
        }
    }

    @Test func badRequestsAreNamed() async throws {
        try await withAgent(apiConfig(stateDir: scratchDirectory())) { _, c in
            let a = c["alice"]!
            let token = try await a.request("POST", "/api/v1/leases", json: ["ttl_s": 600]).json["token"] as! String
            for (body, detail) in [(["operation": "format"], "field \"operation\" must be one of probe, read, write, erase"),
                                   (["operation": "write", "regions": ["bios"]], "regions need a layout"),
                                   (["operation": "write", "layout": "ifd", "layout_file": "0:1 a"], "not both"),
                                   (["operation": "write", "layout_file": "zz:1 bios"], "is not \"start:end name\""),
                                   (["operation": "write", "layout": "fmap", "regions": ["bi os"]], "a region name is letters")] as [([String: Any], String)] {
                let r = try await a.request("POST", "/api/v1/flash/jobs", json: body, leaseToken: token)
                #expect(r.status == 422 && (r.json["detail"] as? String ?? "").contains(detail), "\(r.text)")
            }
            // A body larger than the chip (plus gzip's margin) is refused by size before it is read.
            let big = try await a.request("PUT", "/api/v1/flash/image", body: [UInt8](repeating: 0, count: 10 << 20), leaseToken: token)
            #expect(big.status == 413)
        }
    }
}

extension FlashAPITests {
    /// The seed's loop in one posted run: flash (verified), power, iPXE menu, kernel, login, check.
    @Test func aRunFlashesThenBootsAndChecks() async throws {
        let dir = scratchDirectory()
        try await withAgent(apiConfig(stateDir: dir)) { agent, c in
            let a = c["alice"]!
            let token = try await a.request("POST", "/api/v1/leases", json: ["ttl_s": 600]).json["token"] as! String
            let rom = image(9)
            #expect(try await a.request("PUT", "/api/v1/flash/image", body: rom, leaseToken: token).status == 201)
            let posted = try await a.request("POST", "/api/v1/runs", json: spec { $0["flash"] = ["image": "uploaded"] }, leaseToken: token)
            #expect(posted.status == 202, "\(posted.text)")
            let run = try await finishedRun(a, posted.json["id"] as! String)
            #expect(run["state"] as? String == "passed", "\(run["message"] ?? "") \(failure(run))")
            let stages = ((run["iterations"] as? [[String: Any]])?.first?["stages"] as? [[String: Any]]) ?? []
            #expect(stages.map { $0["name"] as? String ?? "" } == ["flash", "power", "firmware", "ipxe_interrupt", "ipxe_command", "ipxe_command", "ipxe_menu", "hypervisor", "kernel",
                                                                     "login", "command"])
            let detail = stages.first?["detail"] as? String ?? ""
            #expect(detail.contains("written and verified on MX25L6436E"), "\(detail)")
            // Compared first: a failing #expect on megabytes spends minutes describing them.
            do { let same = FileManager.default.contents(atPath: dir + "/flash/simulated-chip.bin").map(Array.init) == rom; #expect(same) }
            #expect(await agent.hardware.simulator!.lastCommandLine?.contains("rte.entry=xen-linux-dev") == true)

            // An image path of the wrong size fails the flash stage, and nothing is powered.
            let small = dir + "/small.rom"
            FileManager.default.createFile(atPath: small, contents: Data(count: 4096))
            let bad = try await a.request("POST", "/api/v1/runs", json: spec { $0["flash"] = ["image": small] }, leaseToken: token)
            let failed = try await finishedRun(a, bad.json["id"] as! String)
            #expect(failed["state"] as? String == "failed")
            #expect(failure(failed)["stage"] as? String == "flash")
            #expect((failure(failed)["message"] as? String ?? "").contains("small.rom is 4096 bytes; the chip (flash.chip_mib) holds exactly 8388608"), "\(failure(failed))")
            let badStages = ((failed["iterations"] as? [[String: Any]])?.first?["stages"] as? [[String: Any]]) ?? []
            #expect(badStages.map { $0["name"] as? String ?? "" } == ["flash"])
        }
    }
}

import TestSupport

extension FlashAPITests {
    /// RteCtrl's flash endpoints as its clients call them (curl -F file=@…, then PUT with the
    /// md5 and poll GET /api/v1/flash), anonymous from loopback while nobody holds a lease.
    @Test func theRteCtrlFlashEndpointsUploadGzipCheckTheMD5AndFlash() async throws {
        let dir = scratchDirectory()
        try await withAgent(apiConfig(stateDir: dir)) { agent, c in
            let anonymous = HTTP(port: agent.port, token: nil)
            let base = "http://127.0.0.1:\(agent.port)/api/v1"
            #expect(try await anonymous.request("GET", "/api/v1/flash").json["error"] as? String == "no flashing operation performed")
            #expect(try await anonymous.request("GET", "/api/v1/flash/file").json["error"] as? String == "no file uploaded")
            let rom = image(11)
            FileManager.default.createFile(atPath: dir + "/coreboot.rom", contents: Data(rom))
            #expect(try await runChild(["gzip", "-k", "-f", dir + "/coreboot.rom"], deadlineSeconds: 60).0 == 0)
            let gz = try #require(FileManager.default.contents(atPath: dir + "/coreboot.rom.gz"))
            let (code, out) = try await runChild(["curl", "-sS", "-m", "60", "-F", "file=@\(dir)/coreboot.rom.gz", base + "/flash/file"], deadlineSeconds: 90)
            #expect(code == 0, "\(out)")
            let uploaded = (try? JSONSerialization.jsonObject(with: Data(out.utf8))) as? [String: Any] ?? [:]
            let md5 = try #require(uploaded["file_md5"] as? String, "\(out)")
            #expect(uploaded["file_size"] as? Int == 8 << 20)
            let (_, md5sum) = try await runChild(["md5sum", dir + "/coreboot.rom.gz"], deadlineSeconds: 30)
            #expect(md5sum.hasPrefix(md5), "the md5 of the bytes as sent, as RteCtrl computes it")
            _ = gz
            #expect(try await anonymous.request("GET", "/api/v1/flash/file").json["file_md5"] as? String == md5)
            #expect(try await anonymous.request("GET", "/api/v1/flash/config").json["speed"] as? Int == 16000)
            #expect(try await anonymous.request("PATCH", "/api/v1/flash/config", body: Array(#"{"speed": 8000}"#.utf8)).json["speed"] as? Int == 8000)
            let badSpeed = try await anonymous.request("PATCH", "/api/v1/flash/config", body: Array(#"{"speed": "fast"}"#.utf8))
            #expect(badSpeed.status == 403 && badSpeed.json["error"] as? String == "bad parameters")
            let mismatch = try await anonymous.request("PUT", "/api/v1/flash", body: Array(#"{"file_md5": "0123"}"#.utf8))
            #expect(mismatch.status == 403 && mismatch.json["error"] as? String == "checksum mismatch")
            #expect(try await anonymous.request("PUT", "/api/v1/flash", body: Array("{}".utf8)).json["error"] as? String == "bad parameters")
            // Someone else's lease closes the writes to anonymous clients.
            let lease = try await c["bob"]!.request("POST", "/api/v1/leases", json: ["ttl_s": 60]).json["token"] as! String
            #expect(try await anonymous.request("PUT", "/api/v1/flash", body: Array("{\"file_md5\": \"\(md5)\"}".utf8)).status == 423)
            #expect(try await c["bob"]!.request("DELETE", "/api/v1/leases/current", leaseToken: lease).status == 204)
            let start = try await anonymous.request("PUT", "/api/v1/flash", body: Array("{\"file_md5\": \"\(md5)\"}".utf8))
            #expect(start.json["status"] as? String == "starting" && start.json["percent"] as? Int == 1, "\(start.text)")
            var seen: [String] = []
            for _ in 0..<1000 {
                let s = try await anonymous.request("GET", "/api/v1/flash").json
                let status = s["status"] as? String ?? "error: \(s["error"] ?? "")"
                if seen.last != status { seen.append(status) }
                if status == "done" || status.hasPrefix("error") { break }
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(seen.last == "done", "\(seen)")
            #expect(Set(seen).isSubset(of: ["preparing", "reading old contents", "erasing flash and writing", "verifying", "done"]), "\(seen)")
            // Compared first: a failing #expect on megabytes spends minutes describing them.
            do { let same = FileManager.default.contents(atPath: dir + "/flash/simulated-chip.bin").map(Array.init) == rom; #expect(same) }
            let job = try await c["alice"]!.request("GET", "/api/v1/flash/jobs").json["jobs"] as? [[String: Any]]
            #expect((job?.first?["steps"] as? [[String: Any]])?.map { $0["name"] as? String ?? "" }.contains("spi_on") == true, "the whole sequence, not flashrom alone")
            #expect(try await anonymous.request("DELETE", "/api/v1/flash/file").json["status"] as? String == "ok")
            #expect(try await anonymous.request("DELETE", "/api/v1/flash/file").json["error"] as? String == "no file uploaded")
        }
    }
}

extension FlashAPITests {
    /// A write is never cut short: released mid-flash, the board goes to the next holder only
    /// once the job has ended; a run posted during a flash starts after it.
    @Test func theNextHolderAndARunWaitForAFlashToEnd() async throws {
        try await withAgent(apiConfig(stateDir: scratchDirectory())) { _, c in
            let a = c["alice"]!, b = c["bob"]!
            let token = try await a.request("POST", "/api/v1/leases", json: ["ttl_s": 600]).json["token"] as! String
            #expect(try await a.request("PUT", "/api/v1/flash/image", body: image(13), leaseToken: token).status == 201)
            let first = try await a.request("POST", "/api/v1/flash/jobs", json: ["operation": "write"], leaseToken: token).json["id"] as! String
            // A run posted now waits for the flash, then boots.
            let run = try await a.request("POST", "/api/v1/runs", json: thirdOfFive, leaseToken: token).json["id"] as! String
            let finishedRun = try await FlashAPITests.finished(a, run)
            let job = try await a.request("GET", "/api/v1/flash/jobs/\(first)").json
            #expect(finishedRun["state"] as? String == "passed", "\(finishedRun["message"] ?? "")")
            let runStart = (finishedRun["started_at"] as? NSNumber)?.int64Value ?? 0
            let flashEnd = (job["ended_at"] as? NSNumber)?.int64Value ?? .max
            #expect(runStart >= flashEnd, "the run started \(runStart), the flash ended \(flashEnd)")
            // Released while flashing: bob's waiting request is granted only after the job ends.
            let second = try await a.request("POST", "/api/v1/flash/jobs", json: ["operation": "write"], leaseToken: token).json["id"] as! String
            let waiting = Task { try await b.request("POST", "/api/v1/leases", json: ["ttl_s": 60, "wait_s": 60]) }
            try await waitForQueueLength(a, 1)
            #expect(try await a.request("DELETE", "/api/v1/leases/current", leaseToken: token).status == 204)
            let granted = try await waiting.value
            #expect(granted.status == 201)
            let secondJob = try await a.request("GET", "/api/v1/flash/jobs/\(second)").json
            #expect(secondJob["state"] as? String == "succeeded", "granted while the job was \(secondJob["state"] ?? "")")
        }
    }

    static func finished(_ http: HTTP, _ id: String) async throws -> [String: Any] {
        for _ in 0..<3000 {
            let r = try await http.request("GET", "/api/v1/runs/\(id)").json
            if let s = r["state"] as? String, !["queued", "waiting_for_device", "running"].contains(s) { return r }
            try await Task.sleep(for: .milliseconds(10))
        }
        return [:]
    }
}
