import AgentClient
import ArgumentParser
import Foundation
import JSONDocument

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run", abstract: "Run a boot test spec on the board, or look at a run.",
        subcommands: [Start.self, Show.self, Transcript.self], defaultSubcommand: Start.self)

    struct Start: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "start", abstract: "rtectl run SPEC.yaml [--follow]")
        @OptionGroup var c: Connection
        @Argument(help: "The run spec (YAML or JSON).") var spec: String
        @Flag(help: "Show the stages as they happen, then the result.") var follow = false
        @Option(name: .customLong("artifact"), help: "NAME=PATH: upload PATH as artifact NAME first (the spec's ${artifact:NAME}); repeatable.")
        var artifacts: [String] = []

        func run() async throws {
            guard let text = try? String(contentsOfFile: spec, encoding: .utf8) else { throw ValidationError("cannot read \(spec)") }
            let doc: JSONValue
            do { doc = try JSONValue.parse(yaml: text) } catch { throw ValidationError("\(spec): \(error)") }
            let body = try JSONSerialization.jsonObject(with: Data(doc.serialized()))
            let client = try c.client()
            for item in artifacts {
                guard let eq = item.firstIndex(of: "="), !item[..<eq].isEmpty else { throw ValidationError("--artifact takes NAME=PATH, got \(item)") }
                let name = String(item[..<eq]), path = String(item[item.index(after: eq)...])
                try upload(client, name: name, path: path)
            }
            let r = try client.call("POST", "/api/v1/runs", json: body)
            let id = r.object["id"] as? String ?? ""
            guard follow else {
                if c.json { return c.printJSON(r) }
                print("run \(id) accepted; follow it with: rtectl run show \(id)")
                return
            }
            if !c.json { print("run \(id): \(r.object["name"] as? String ?? spec)") }
            let started = Date()
            try followEvents(client, "/api/v1/runs/\(id)/events") { o in
                if c.json { return true }
                let t = String(format: "%7.1fs", Date().timeIntervalSince(started))
                switch o["type"] as? String {
                case "stage_started": print("\(t)  [\(o["iteration"] ?? 1)] \(o["stage"] ?? "")…")
                case "stage_finished":
                    let res = o["result"] as? [String: Any] ?? [:]
                    let ok = (res["passed"] as? Bool) == true
                    print("\(t)  [\(o["iteration"] ?? 1)] \(o["stage"] ?? "") \(ok ? "ok" : "FAILED") in \(Int(res["duration_ms"] as? Double ?? 0)) ms: \(res["detail"] ?? "")")
                case "iteration_finished":
                    let facts = (o["facts"] as? [[String: Any]] ?? []).map { "\($0["name"] ?? "") \($0["value"] ?? "")" }
                    print("\(t)  [\(o["iteration"] ?? 1)] \((o["passed"] as? Bool) == true ? "passed" : "FAILED")"
                          + (facts.isEmpty ? "" : "; booted: " + facts.joined(separator: ", ")))
                case "run_finished": return false
                default: break
                }
                return true
            }
            let final = try client.call("GET", "/api/v1/runs/\(id)")
            if c.json { c.printJSON(final) } else { printResult(final.object) }
            if final.object["state"] as? String != "passed" { throw ExitCode(Status.failed.rawValue) }
        }
        /// Uploads one artifact, streaming the file, with a progress line.
        func upload(_ client: AgentClient, name: String, path: String) throws {
            guard let handle = FileHandle(forReadingAtPath: path) else { throw ValidationError("cannot read \(path)") }
            defer { try? handle.close() }
            let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.int64Value ?? 0
            let started = Date()
            let interactive = isatty(1) != 0 && !c.json
            let r = try client.upload("/api/v1/artifacts/\(name)", size: size, read: {
                let data = handle.readData(ofLength: 1 << 20)
                return data.isEmpty ? nil : Array(data)
            }, progress: { sent in
                guard interactive else { return }
                let pct = size > 0 ? Int(sent * 100 / size) : 100
                FileHandle.standardOutput.write(Data("\r\u{1b}[K\(name): \(pct)% of \(size) bytes".utf8))
            })
            if interactive { FileHandle.standardOutput.write(Data("\r\u{1b}[K".utf8)) }
            if !c.json {
                let secs = Date().timeIntervalSince(started)
                print("\(name): \(size) bytes uploaded in \(String(format: "%.1f", secs)) s, sha256 \(r.object["sha256"] ?? "")")
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "A run's state, stage timings and results.")
        @OptionGroup var c: Connection
        @Argument var id: String

        func run() async throws {
            let r = try c.client().call("GET", "/api/v1/runs/\(id)")
            if c.json { return c.printJSON(r) }
            printResult(r.object)
        }
    }

    struct Transcript: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The serial bytes of a run.")
        @OptionGroup var c: Connection
        @Argument var id: String

        func run() async throws {
            let r = try c.client().call("GET", "/api/v1/runs/\(id)/transcript")
            FileHandle.standardOutput.write(Data(r.body))
        }
    }
}

/// The result as a table: one row per stage with min/median/max over the iterations.
func printResult(_ run: [String: Any]) {
    print("run \(run["id"] ?? "") \(run["state"] ?? "")" + ((run["message"] as? String).map { ": \($0)" } ?? ""))
    if let s = run["summary"] as? [String: Any] {
        print("iterations \(s["iterations"] ?? 0): \(s["passed"] ?? 0) passed, \(s["failed"] ?? 0) failed")
        let stages = s["stages"] as? [String: [String: Any]] ?? [:]
        let order = ((run["iterations"] as? [[String: Any]])?.first?["stages"] as? [[String: Any]])?.compactMap { $0["name"] as? String } ?? Array(stages.keys)
        var seen = Set<String>()
        print("stage            count  fail    min ms  median ms    max ms")
        for name in order where seen.insert(name).inserted {
            guard let st = stages[name] else { continue }
            func ms(_ k: String) -> String { String(format: "%9.1f", st[k] as? Double ?? 0) }
            print(name.padding(toLength: 16, withPad: " ", startingAt: 0) + String(format: "%6d%6d", st["count"] as? Int ?? 0, st["failures"] as? Int ?? 0)
                  + " " + ms("min_ms") + "  " + ms("median_ms") + " " + ms("max_ms"))
        }
    }
    if let last = (run["iterations"] as? [[String: Any]])?.last, let facts = last["facts"] as? [[String: Any]], !facts.isEmpty {
        print("booted (iteration \(last["index"] ?? 0)): " + facts.map { "\($0["name"] ?? "") \($0["value"] ?? "")" }.joined(separator: ", "))
    }
    for it in run["iterations"] as? [[String: Any]] ?? [] {
        guard let f = it["failure"] as? [String: Any] else { continue }
        print("iteration \(it["index"] ?? 0) failed in \(f["stage"] ?? ""): \(f["message"] ?? "")")
        for l in (f["last_lines"] as? [String] ?? []).suffix(5) { print("    | \(l)") }
    }
}
