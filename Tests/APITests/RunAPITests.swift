import AgentClock
import AgentRuntime
@testable import Configuration
import Foundation
import TestSupport
import Testing

nonisolated(unsafe) let thirdOfFive: [String: Any] = [
    "name": "third entry",
    "power": "cycle",
    "ipxe": ["commands": ["dhcp net0", "chain http://192.168.4.2:8000/menu.ipxe"], "menu_entry": "Xen Linux dev"],
    "login": ["username": "root", "password": "debian", "shell_prompt": "# "],
    "commands": [["send": "cat /proc/cmdline", "expect": "rte.entry=xen-linux-dev", "timeout_s": 10]],
    "timeouts": ["firmware": 10, "ipxe": 10, "kernel": 10, "login": 10],
]

func spec(_ base: [String: Any] = thirdOfFive, _ change: (inout [String: Any]) -> Void) -> [String: Any] {
    var s = base
    change(&s)
    return s
}

/// Follows a run's event stream (as `http`'s user) until `text` appears or the stream ends;
/// returns whether it appeared and everything read.
func runEvents(_ http: HTTP, _ id: String, until text: String = "event: run_finished", path: String? = nil) async throws -> (found: Bool, text: String) {
    let port = http.port, auth = http.token.map { "Authorization: Bearer \($0)\r\n" } ?? ""
    let path = path ?? "/api/v1/runs/\(id)/events"
    return try await onThread { () -> (found: Bool, text: String) in
        let s = try TestSocket.connect(port: port)
        defer { s.close() }
        s.send(Array("GET \(path) HTTP/1.0\r\nHost: x\r\n\(auth)\r\n".utf8))
        var acc: [UInt8] = []
        let found = s.receiveBlocking(until: text, into: &acc)
        return (found, String(decoding: acc, as: UTF8.self))
    }
}

/// Follows the run's event stream until it ends, then returns the run.
func finishedRun(_ http: HTTP, _ id: String) async throws -> [String: Any] {
    #expect(try await runEvents(http, id).found)
    return try await http.request("GET", "/api/v1/runs/\(id)").json
}

func failure(_ run: [String: Any]) -> [String: Any] {
    ((run["iterations"] as? [[String: Any]])?.first?["failure"] as? [String: Any]) ?? [:]
}

@Suite(.serialized) struct RunAPITests {
    @Test func aRunPicksTheThirdOfFiveEntriesLogsInAndPasses() async throws {
        try await withAgent(apiConfig(stateDir: scratchDirectory())) { agent, c in
            let a = c["alice"]!
            let posted = try await a.request("POST", "/api/v1/runs", json: thirdOfFive)
            #expect(posted.status == 202)
            let id = posted.json["id"] as! String
            let run = try await finishedRun(a, id)
            #expect(run["state"] as? String == "passed", "\(run["message"] ?? "") \(failure(run))")
            let it = (run["iterations"] as! [[String: Any]])[0]
            let stages = (it["stages"] as! [[String: Any]]).map { $0["name"] as! String }
            // "Xen Linux dev" boots Xen: its part of the boot is a stage of its own.
            #expect(stages == ["power", "firmware", "ipxe_interrupt", "ipxe_command", "ipxe_command", "ipxe_menu", "hypervisor", "kernel", "login",
                               "command"])
            #expect((it["menu"] as? [String])?.contains("Xen Linux dev") == true)
            #expect(await agent.hardware.simulator!.lastCommandLine?.contains("rte.entry=xen-linux-dev") == true)
            let reaction = (it["stages"] as! [[String: Any]])[2]["reaction_us"] as? Double
            #expect(reaction != nil && reaction! < 1_000_000)
            // The run took its own lease and gave it back; the transcript is the run's serial bytes.
            #expect(try await a.request("GET", "/api/v1/leases").json["current"] == nil)
            let transcript = try await a.request("GET", "/api/v1/runs/\(id)/transcript")
            #expect(transcript.text.contains("Xen Linux dev") && transcript.text.contains("rte.entry=xen-linux-dev"))
            let list = try await a.request("GET", "/api/v1/runs").json["runs"] as? [[String: Any]]
            #expect(list?.first?["id"] as? String == id)
            // Prometheus sees the run: its outcome and a duration histogram per stage.
            let metrics = try await a.request("GET", "/metrics").text
            #expect(metrics.contains("rte_runs_finished_total{state=\"passed\"} 1"), "\(metrics)")
            #expect(metrics.contains("rte_run_stage_duration_seconds_bucket{stage=\"kernel\",le=\"+Inf\"} 1")
                    || metrics.contains("rte_run_stage_duration_seconds_bucket{le=\"+Inf\",stage=\"kernel\"} 1"), "\(metrics)")
        }
    }

    /// Issue 15 (1): with "Xen Linux dev (2)" above "Xen Linux dev", a run asking for "Xen Linux dev"
    /// booted the "(2)" entry and reported success. The kernel command line tells which booted.
    /// No Ctrl-B: a space answers iPXE's prompt so its own autoboot (DHCP, the DHCP filename's
    /// menu) starts at once; the entry is still chosen by its label. (On real iPXE: QEMURigTests.)
    @Test func skippingTheBannerWaitAutobootsAtOnceAndStillPicksTheEntry() async throws {
        var config = try apiConfig(stateDir: scratchDirectory())
        config.simulator.ctrlBWindowMilliseconds = 3000
        try await withAgent(config) { agent, c in
            let a = c["alice"]!
            let posted = try await a.request("POST", "/api/v1/runs", json: spec { s in
                s["ipxe"] = ["menu_entry": "Xen Linux dev", "skip_banner_wait": true]
            })
            #expect(posted.status == 202)
            let run = try await finishedRun(a, posted.json["id"] as! String)
            #expect(run["state"] as? String == "passed", "\(run["message"] ?? "") \(failure(run))")
            let stages = ((run["iterations"] as? [[String: Any]])?.first?["stages"] as? [[String: Any]]) ?? []
            #expect(stages.map { $0["name"] as? String ?? "" } == ["power", "firmware", "ipxe_banner", "ipxe_menu", "hypervisor", "kernel", "login",
                                                                     "command"])
            // The 3 s window ended with the key, not by itself.
            let detail = stages.first { $0["name"] as? String == "ipxe_banner" }?["detail"] as? String ?? ""
            let went = detail.split(separator: "went on ").last.flatMap { Int($0.prefix { $0.isNumber }) }
            #expect(went != nil && went! < 1500, "\(detail)")
            #expect(await agent.hardware.simulator!.lastCommandLine?.contains("rte.entry=xen-linux-dev") == true)
        }
    }

    @Test func theExactLabelBootsBesideALookAlike() async throws {
        var config = try apiConfig(stateDir: scratchDirectory())
        config.simulator.menuEntries = ["Xen Linux dev (2)", "Xen Linux dev", "Xen Linux dev-old", "iPXE shell"]
        config.simulator.defaultEntry = 2  // the countdown is on another row
        try await withAgent(config) { agent, c in
            let a = c["alice"]!
            let id = try await a.request("POST", "/api/v1/runs", json: spec { $0["commands"] = [["send": "cat /proc/cmdline", "expect": "rte.entry=", "timeout_s": 10]] }).json["id"] as! String
            let run = try await finishedRun(a, id)
            #expect(run["state"] as? String == "passed", "\(run["message"] ?? "")")
            let booted = await agent.hardware.simulator!.lastCommandLine ?? "nothing booted"
            #expect(booted.hasSuffix("rte.entry=xen-linux-dev"), "\(booted)")
        }
    }

    /// Issue 15 (4): entries that look the same on screen — equal labels, and labels that differ
    /// only past the 74 columns iPXE shows — were chosen by a guess (the first one that looked
    /// right). Now the run fails at ipxe_menu naming them, and nothing boots.
    @Test func entriesThatLookTheSameFailAtTheMenuAndNothingBoots() async throws {
        let long = String(repeating: "Debian netinst, lab preseed, serial console ", count: 2)  // 88 characters
        var config = try apiConfig(stateDir: scratchDirectory())
        config.simulator.menuEntries = ["Linux", "Debian", "Linux", long + "A", long + "B", "iPXE shell"]
        config.simulator.defaultEntry = 1
        try await withAgent(config) { agent, c in
            let a = c["alice"]!
            for (wanted, message) in [("Linux", "\"Linux\" is ambiguous: entry 1 \"Linux\" (row 5) and entry 3 \"Linux\" (row 7) look exactly like it on screen"),
                                      (long + "A", "is 89 characters, but the menu shows only the first 74 of a label")] {
                let id = try await a.request("POST", "/api/v1/runs", json: spec { $0["ipxe"] = ["commands": ["dhcp net0", "chain http://192.168.4.2:8000/menu.ipxe"], "menu_entry": wanted] }).json["id"] as! String
                let run = try await finishedRun(a, id)
                #expect(run["state"] as? String == "failed")
                #expect(failure(run)["stage"] as? String == "ipxe_menu", "\(failure(run))")
                #expect((failure(run)["message"] as? String ?? "").contains(message), "\(failure(run)["message"] ?? "")")
                #expect(await agent.hardware.simulator!.lastCommandLine == nil, "nothing booted")
            }
        }
    }

    /// Issue 15 (5): a command's output ended at the first "# " (the shell prompt text), so a file
    /// with comment lines came back cut. Commands are now framed by markers; exit statuses recorded.
    @Test func commandOutputHoldingThePromptTextComesBackWholeWithItsExitStatus() async throws {
        try await withAgent(apiConfig(stateDir: scratchDirectory())) { _, c in
            let a = c["alice"]!
            let id = try await a.request("POST", "/api/v1/runs", json: spec { $0["commands"] = [
                ["send": "printf '# one\\n# two\\nthree\\n'", "expect": "three", "timeout_s": 10],
                ["send": "false", "timeout_s": 10],
                ["send": "echo 'it''s' \"quoted; not split\"", "expect": "its quoted; not split", "timeout_s": 10],
            ] }).json["id"] as! String
            let run = try await finishedRun(a, id)
            #expect(run["state"] as? String == "passed", "\(run["message"] ?? "") \(failure(run))")
            let commands = ((run["iterations"] as? [[String: Any]])?.first?["commands"] as? [[String: Any]]) ?? []
            #expect(commands.first?["output"] as? String == "# one\r\n# two\r\nthree")
            #expect(commands.map { $0["exit_code"] as? Int } == [0, 1, 0], "a failing command without expect_exit is recorded, not failed")
            // With expect_exit the status decides.
            let strict = try await a.request("POST", "/api/v1/runs", json: spec { $0["commands"] = [["send": "false", "expect_exit": 0, "timeout_s": 10]] }).json["id"] as! String
            let failed = try await finishedRun(a, strict)
            #expect(failed["state"] as? String == "failed")
            #expect(failure(failed)["stage"] as? String == "command")
            #expect((failure(failed)["message"] as? String ?? "").contains("\"false\" exited with 1, expected 0"), "\(failure(failed))")
        }
    }

    @Test func failuresStopAtTheRightStageWithAUsefulMessage() async throws {
        try await withAgent(apiConfig(stateDir: scratchDirectory())) { _, c in
            let a = c["alice"]!
            let cases: [([String: Any], String, String)] = [
                (spec { $0["ipxe"] = ["commands": ["dhcp net0", "chain http://192.168.4.2:8000/menu.ipxe"], "menu_entry": "Xen Linux prod"] },
                 "ipxe_menu", "has no entry \"Xen Linux prod\"; all 5 entries: Debian stable netboot | Debian stable netinst | Xen Linux dev"),
                // Boot menu labels are exact too: a part of one is not a match.
                (spec { $0["firmware"] = ["boot_menu": ["key": "F10", "entry": "iPXE"]] }, "boot_menu",
                 "no boot menu entry is labelled \"iPXE\"; the menu offers: USB MSC Drive Generic Flash Disk 8.07 | AHCI/0: SATA SSD ATA-11 Hard-Disk (111 GiBytes) | iPXE (PCI 00:00.0) | Payload [memtest] | Payload [setup]"),
                (spec { $0["login"] = ["username": "root", "password": "wrong"] }, "login", "Login incorrect"),
                (spec { $0["login"] = ["username": "root", "password": "debian", "prompt": "gettyless:"]; $0["timeouts"] = ["kernel": 2] },
                 "kernel", "the login prompt \"gettyless:\" did not appear within 2 s"),
                (spec { $0["ipxe"] = ["commands": ["dhcp net7"], "menu_entry": "Xen Linux dev"] }, "ipxe_command", "iPXE: Could not configure net7"),
            ]
            for (body, stage, message) in cases {
                let id = try await a.request("POST", "/api/v1/runs", json: body).json["id"] as! String
                let run = try await finishedRun(a, id)
                #expect(run["state"] as? String == "failed")
                let f = failure(run)
                #expect(f["stage"] as? String == stage, "\(f)")
                #expect((f["message"] as? String ?? "").contains(message), "\(f["message"] ?? "")")
                #expect(!(f["last_lines"] as? [String] ?? []).isEmpty)
            }
        }
    }

    @Test func theFirmwareBootMenuAndAWholeIPXEScriptBootANewKernel() async throws {
        try await withAgent(apiConfig(stateDir: scratchDirectory())) { agent, c in
            let body = spec { s in
                s["firmware"] = ["boot_menu": ["key": "F10", "entry": "iPXE (PCI 00:00.0)"]]
                s["ipxe"] = ["commands": ["dhcp net0"],
                             "script": ["kernel http://192.168.4.2:8000/dev/bzImage console=ttyS0,115200 rte.entry=my-new-kernel", "boot"]]
                s["commands"] = [["send": "cat /proc/cmdline", "expect_regex": "rte\\.entry=my-new-\\w+"]]
            }
            let id = try await c["alice"]!.request("POST", "/api/v1/runs", json: body).json["id"] as! String
            let run = try await finishedRun(c["alice"]!, id)
            #expect(run["state"] as? String == "passed", "\(run["message"] ?? "") \(failure(run))")
            let stages = ((run["iterations"] as! [[String: Any]])[0]["stages"] as! [[String: Any]])
            #expect(stages.map { $0["name"] as! String } == ["power", "firmware", "boot_menu", "ipxe_interrupt", "ipxe_command", "ipxe_script", "ipxe_script", "kernel", "login", "command"])
            #expect((stages[2]["detail"] as? String ?? "").contains("chose 3. \"iPXE (PCI 00:00.0)\" of 5"), "\(stages[2])")
            #expect(await agent.hardware.simulator!.lastCommandLine == "console=ttyS0,115200 rte.entry=my-new-kernel")
        }
    }

    @Test func dhcpFailuresAreRetriedAndReportedWithIPXEsOwnText() async throws {
        var config = try apiConfig(stateDir: scratchDirectory())
        config.simulator.dhcpFailures = 2
        try await withAgent(config) { _, c in
            let a = c["alice"]!
            // Two failures, two retries: the third attempt works.
            let ok = try await finishedRun(a, try await a.request("POST", "/api/v1/runs", json: spec { s in
                s["ipxe"] = ["commands": ["dhcp", "chain http://192.168.4.2:8000/menu.ipxe"], "menu_entry": "Xen Linux dev", "dhcp_retries": 2]
            }).json["id"] as! String)
            #expect(ok["state"] as? String == "passed", "\(failure(ok))")
            let dhcp = ((ok["iterations"] as! [[String: Any]])[0]["stages"] as! [[String: Any]])[3]
            #expect(dhcp["detail"] as? String == "dhcp: ok after 3 attempts")
            // The next boot fails twice again; one retry is not enough and iPXE's words are in the failure.
            let bad = try await finishedRun(a, try await a.request("POST", "/api/v1/runs", json: spec { s in
                s["ipxe"] = ["commands": ["dhcp"], "menu_entry": "Xen Linux dev", "dhcp_retries": 1]
            }).json["id"] as! String)
            let f = failure(bad)
            #expect(f["stage"] as? String == "ipxe_command")
            #expect((f["message"] as? String ?? "").contains("No configuration methods succeeded"), "\(f)")
            #expect((f["message"] as? String ?? "").contains("after 2 attempts"))
        }
    }

    @Test func aMissedCtrlBFailsInTheInterruptStage() async throws {
        var config = try apiConfig(stateDir: scratchDirectory())
        config.simulator.ctrlBWindowMilliseconds = 0
        try await withAgent(config) { _, c in
            let id = try await c["alice"]!.request("POST", "/api/v1/runs", json: thirdOfFive).json["id"] as! String
            let run = try await finishedRun(c["alice"]!, id)
            let f = failure(run)
            #expect(f["stage"] as? String == "ipxe_interrupt")
            #expect((f["message"] as? String ?? "").contains("the window was missed"))
        }
    }

    @Test func repeatTwentyReportsCountsAndStageStatistics() async throws {
        try await withAgent(apiConfig(stateDir: scratchDirectory())) { _, c in
            let id = try await c["alice"]!.request("POST", "/api/v1/runs", json: spec { $0["repeat"] = 20 }).json["id"] as! String
            let run = try await finishedRun(c["alice"]!, id)
            #expect(run["state"] as? String == "passed", "\(run["message"] ?? "")")
            let summary = run["summary"] as! [String: Any]
            #expect(summary["iterations"] as? Int == 20 && summary["passed"] as? Int == 20 && summary["failed"] as? Int == 0)
            let stages = summary["stages"] as! [String: [String: Any]]
            #expect(stages["kernel"]?["count"] as? Int == 20)
            #expect(stages["ipxe_command"]?["count"] as? Int == 40)
            for (name, s) in stages {
                let lo = s["min_ms"] as! Double, mid = s["median_ms"] as! Double, hi = s["max_ms"] as! Double
                #expect(lo <= mid && mid <= hi && lo >= 0, "\(name)")
            }
            // Each iteration powered the board up again: 20 power stages, 20 distinct capture ranges.
            let its = run["iterations"] as! [[String: Any]]
            #expect(Set(its.map { $0["capture_from"] as! Int }).count == 20)
        }
    }

    @Test func runsRespectLeasesAndCanBeCancelled() async throws {
        try await withAgent(apiConfig(stateDir: scratchDirectory())) { agent, c in
            let (a, b) = (c["alice"]!, c["bob"]!)
            let token = try await a.request("POST", "/api/v1/leases", json: ["ttl_s": 600, "purpose": "manual"]).json["token"] as! String
            // bob may not run on alice's device without waiting...
            let refused = try await b.request("POST", "/api/v1/runs", json: spec { $0["wait_s"] = 0 })
            #expect(refused.status == 409 && refused.json["holder"] as? String == "alice")
            // ...alice runs under her own lease, and cancels it mid-way: the DUT ends up off.
            let id = try await a.request("POST", "/api/v1/runs", json: spec { $0["timeouts"] = ["kernel": 600]; $0["login"] = ["username": "root", "prompt": "never:"] },
                                         leaseToken: token).json["id"] as! String
            #expect(try await b.request("DELETE", "/api/v1/runs/\(id)").status == 403)
            let events = try await runEvents(a, id, until: "\"stage\":\"kernel\"").found
            #expect(events)
            let cancelled = try await a.request("DELETE", "/api/v1/runs/\(id)")
            #expect(cancelled.status == 200 && cancelled.json["state"] as? String == "cancelled")
            #expect(!agent.hardware.simulatedBank!.isActive("relay"))
            #expect(try await a.request("GET", "/api/v1/leases").json["current"] != nil, "alice keeps her lease")
            expectBadSpec(try await a.request("POST", "/api/v1/runs", json: ["power": "sideways"]), 422, "field \"power\" must be one of")
            expectBadSpec(try await a.request("POST", "/api/v1/runs", json: ["repeat": "many"]), 400, "field \"repeat\" must be an integer")
            expectBadSpec(try await a.request("GET", "/api/v1/runs/run-nope"), 404, "no run run-nope")
        }
    }

    func expectBadSpec(_ r: RawHTTPResponse, _ status: Int, _ detail: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(r.status == status, sourceLocation: sourceLocation)
        #expect((r.json["detail"] as? String ?? "").contains(detail), "\(r.json)", sourceLocation: sourceLocation)
    }

    /// Issue 16 D1: a run that fails on lease state printed the new holder's `Lease`, token included,
    /// into its message (run record, events, runs/*.json).
    @Test func aRunStoppedByAnotherHoldersLeaseNeverShowsTheirToken() async throws {
        let dir = scratchDirectory()
        try await withAgent(apiConfig(stateDir: dir)) { agent, c in
            let (a, b) = (c["alice"]!, c["bob"]!)
            let aliceLease = try await a.request("POST", "/api/v1/leases", json: ["ttl_s": 600, "purpose": "manual"]).json
            let aliceToken = aliceLease["token"] as! String
            // Many short iterations: the run checks its lease between stages.
            let id = try await a.request("POST", "/api/v1/runs", json: spec { $0["repeat"] = 1000 }, leaseToken: aliceToken).json["id"] as! String
            let started = try await runEvents(a, id, until: "iteration_finished").found
            #expect(started)
            #expect(try await a.request("DELETE", "/api/v1/leases/current", leaseToken: aliceToken).status == 204)
            let bobToken = try await b.request("POST", "/api/v1/leases", json: ["ttl_s": 600, "purpose": "bob's", "wait_s": 30]).json["token"] as! String
            let run = try await finishedRun(a, id)
            #expect(run["state"] as? String == "error")
            let events = try await runEvents(a, id).text
            let body = String(decoding: try await a.request("GET", "/api/v1/runs/\(id)").body, as: UTF8.self)
            #expect(body.contains("lease"), "the message says why: \(body)")
            for (what, text) in [("run", body), ("events", events)] {
                #expect(!text.contains(bobToken), "bob's lease token in the \(what)")
                #expect(!text.contains(aliceToken), "alice's lease token in the \(what)")
            }
            for file in try FileManager.default.subpathsOfDirectory(atPath: dir) where file.hasPrefix("runs/") || file.contains("/runs/") {
                let text = (try? String(contentsOfFile: dir + "/" + file, encoding: .utf8)) ?? ""
                #expect(!text.contains(bobToken) && !text.contains(aliceToken), "a lease token in \(file)")
            }
        }
    }

    @Test func aDaemonKilledMidRunMarksTheRunInterruptedAtTheNextStart() async throws {
        let dir = scratchDirectory()
        var yaml = try String(contentsOfFile: packageRoot + "/deploy/simulated.yaml", encoding: .utf8)
        yaml = yaml.replacingOccurrences(of: "timing: realistic", with: "timing: fast")
        let configPath = dir + "/agent.yaml"
        try yaml.write(toFile: configPath, atomically: true, encoding: .utf8)
        let port = 20000 + Int.random(in: 0..<20000)
        func startDaemon() async throws -> TestChild { try await startDaemonProcess(config: configPath, port: port, stateDir: dir + "/state") }
        let http = HTTP(port: port, token: nil)
        let first = try await startDaemon()
        // A plain Linux entry: the kernel stage is the one the run is in from its start.
        let id = try await http.request("POST", "/api/v1/runs", json: spec {
            $0["timeouts"] = ["kernel": 600]; $0["login"] = ["username": "root", "prompt": "never:"]
            $0["ipxe"] = ["commands": ["dhcp net0", "chain http://192.168.4.2:8000/menu.ipxe"], "menu_entry": "Linux dev"]
        }).json["id"] as! String
        let reachedKernel = try await runEvents(http, id, until: "\"stage\":\"kernel\"").found
        #expect(reachedKernel)
        first.process.signal(SIGKILL)
        _ = await first.wait()
        let second = try await startDaemon()
        defer { _ = second.process.stop() }
        let run = try await http.request("GET", "/api/v1/runs/\(id)").json
        #expect(run["state"] as? String == "interrupted")
        #expect((run["message"] as? String ?? "").contains("in stage kernel"))
        // Issue 16 D4: the lease the run took for itself is given back, not held for the maximum TTL.
        let book = try await http.request("GET", "/api/v1/leases").json
        #expect(noHolder(book), "\(book)")
        #expect(try await http.request("POST", "/api/v1/leases", json: ["ttl_s": 60]).status == 201)
    }
}

extension RunAPITests {
    /// Issue 20: a bug chased in the boot log. fail_on fails the iteration at the first match,
    /// naming the stage, the line and when; watch only counts and timestamps.
    @Test func failOnEndsTheBootAtTheFirstMatchAndWatchCounts() async throws {
        try await withAgent(apiConfig(stateDir: scratchDirectory())) { _, c in
            let a = c["alice"]!
            let watched = try await a.request("POST", "/api/v1/runs", json: spec { $0["watch"] = ["serial8250: ttyS0", ["regex": "EXT4-fs \\([a-z0-9]+\\)"]] }).json["id"] as! String
            let ok = try await finishedRun(a, watched)
            #expect(ok["state"] as? String == "passed", "\(failure(ok))")
            let results = ((ok["iterations"] as? [[String: Any]])?.first?["watched"] as? [[String: Any]]) ?? []
            #expect(results.map { $0["pattern"] as? String } == ["\"serial8250: ttyS0\"", "/EXT4-fs \\([a-z0-9]+\\)/"], "\(results)")
            #expect((results.first?["count"] as? Int ?? 0) >= 5, "\(results)")
            let hit = (results.first?["hits"] as? [[String: Any]])?.first ?? [:]
            #expect((hit["line"] as? String ?? "").contains("serial8250: ttyS0 at I/O 0x3f8") && hit["stage"] as? String == "kernel", "\(hit)")

            let failing = try await a.request("POST", "/api/v1/runs", json: spec { $0["fail_on"] = ["tsc: Detected"] }).json["id"] as! String
            let failed = try await finishedRun(a, failing)
            #expect(failed["state"] as? String == "failed")
            let f = failure(failed)
            #expect(f["stage"] as? String == "kernel", "\(f)")
            let message = f["message"] as? String ?? ""
            #expect(message.hasPrefix("fail_on \"tsc: Detected\" matched during kernel, ") && message.hasSuffix("] tsc: Detected 998.138 MHz processor"), "\(message)")
            let stages = ((failed["iterations"] as? [[String: Any]])?.first?["stages"] as? [[String: Any]])?.map { $0["name"] as? String ?? "" }
            #expect(stages?.last == "kernel" && stages?.contains("login") == false, "stopped at once: \(stages ?? [])")
            let bad = try await a.request("POST", "/api/v1/runs", json: spec { $0["fail_on"] = [""] })
            #expect(bad.status == 422 && (bad.json["detail"] as? String ?? "").contains("fail_on[0]"), "\(bad.text)")
        }
    }
}

extension RunAPITests {
    /// Issue 20: each iteration's serial log is kept with the run, downloadable after the capture
    /// ring has moved on (a 16 KiB ring here, overwritten many times by later boots).
    @Test func iterationLogsOutliveTheCaptureRing() async throws {
        var config = try apiConfig(stateDir: scratchDirectory())
        config.serial.ringBytes = 16 << 10
        try await withAgent(config) { agent, c in
            let a = c["alice"]!
            let first = try await a.request("POST", "/api/v1/runs", json: spec { $0["repeat"] = 2 }).json["id"] as! String
            let run = try await finishedRun(a, first)
            #expect(run["state"] as? String == "passed", "\(failure(run))")
            for _ in 0..<3 {
                let more = try await a.request("POST", "/api/v1/runs", json: thirdOfFive).json["id"] as! String
                _ = try await finishedRun(a, more)
            }
            #expect(agent.hardware.capture.endOffset > 2 * (16 << 10), "the ring went round")
            for n in [1, 2] {
                let log = try await a.request("GET", "/api/v1/runs/\(first)/iterations/\(n)/log")
                #expect(log.status == 200)
                #expect(log.text.contains("Linux version") && log.text.contains("rte.entry=xen-linux-dev") && log.text.contains("apu2 login:"), "iteration \(n): \(log.text.suffix(300))")
                #expect(!log.text.contains("bytes no longer in the capture"))
            }
            #expect(try await a.request("GET", "/api/v1/runs/\(first)/iterations/3/log").status == 404)
        }
    }
}
