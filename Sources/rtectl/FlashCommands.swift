import AgentClient
import ArgumentParser
import Foundation

/// `rtectl flash write|read|probe|erase`: the board's SPI chip through the agent, under your lease.
/// Exit statuses: 0 done (written and verified), 1 the flash failed (the step and flashrom's
/// words are printed), 2 usage, 3 someone else holds the board or a flash is running,
/// 4 the agent is unreachable.
struct FlashCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flash", abstract: "Flash, read or probe the DUT's SPI chip (needs your lease).",
        subcommands: [Write.self, Read.self, Probe.self, Erase.self])

    struct Write: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "rtectl flash write FIRMWARE.rom [--region bios --layout ifd]")
        @OptionGroup var c: Connection
        @Argument(help: "The image: exactly the chip's size, raw or gzip.") var image: String
        @Flag(inversion: .prefixedNo, help: "Verify the chip against the image after writing.") var verify = true
        @Option(help: "Write only these regions of the layout (repeat for several).") var region: [String] = []
        @Option(help: "The layout: ifd, fmap, or a flashrom layout file.") var layout: String?

        func run() async throws {
            guard let bytes = FileManager.default.contents(atPath: image) else { throw ValidationError("cannot read \(image)") }
            if !region.isEmpty && layout == nil { throw ValidationError("--region needs --layout (ifd, fmap or a layout file)") }
            let client = try c.client()
            if !c.json { print("uploading \(image) (\(bytes.count) bytes)…") }
            let up = try client.call("PUT", "/api/v1/flash/image", raw: Array(bytes), contentType: "application/octet-stream")
            if !c.json { print("stored: \(up.object["bytes"] ?? 0) bytes, sha256 \(up.object["sha256"] ?? "")") }
            var body: [String: Any] = ["operation": "write", "verify": verify]
            if let layout {
                switch layout {
                case "ifd", "fmap": body["layout"] = layout
                default:
                    guard let text = try? String(contentsOfFile: layout, encoding: .utf8) else { throw ValidationError("cannot read the layout file \(layout)") }
                    body["layout_file"] = text
                }
            }
            if !region.isEmpty { body["regions"] = region }
            try follow(client, c, body)
        }
    }

    struct Read: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "rtectl flash read OUT.rom")
        @OptionGroup var c: Connection
        @Argument(help: "Where the chip's contents go.") var output: String

        func run() async throws {
            let client = try c.client()
            try follow(client, c, ["operation": "read"])
            let r = try client.call("GET", "/api/v1/flash/read")
            guard FileManager.default.createFile(atPath: output, contents: Data(r.body)) else { throw ValidationError("cannot write \(output)") }
            if !c.json { print("wrote \(output): \(r.body.count) bytes, sha256 \(r.headers["x-sha256"] ?? "")") }
        }
    }

    struct Probe: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Which chip the RTE finds on the SPI header.")
        @OptionGroup var c: Connection
        func run() async throws { try follow(try c.client(), c, ["operation": "probe"]) }
    }

    struct Erase: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Erase the whole chip.")
        @OptionGroup var c: Connection
        func run() async throws { try follow(try c.client(), c, ["operation": "erase"]) }
    }
}

/// Starts a flash job, draws its progress until it ends, prints the result; throws exit 1 on failure.
func follow(_ client: AgentClient, _ c: Connection, _ body: [String: Any]) throws {
    let started = try client.call("POST", "/api/v1/flash/jobs", json: body)
    let id = started.object["id"] as? String ?? ""
    let interactive = isatty(1) != 0 && !c.json
    try followEvents(client, "/api/v1/flash/jobs/\(id)/events") { o in
        if c.json { return true }
        switch o["type"] as? String {
        case "progress":
            let percent = o["percent"] as? Int ?? 0
            let bar = String(repeating: "#", count: percent / 5) + String(repeating: " ", count: 20 - percent / 5)
            let text = "[\(bar)] \(String(format: "%3d", percent))% \(o["phase"] ?? "")"
            if interactive { FileHandle.standardOutput.write(Data(("\r\u{1b}[K" + text).utf8)) } else { print(text) }
        case "step":
            let s = o["step"] as? [String: Any] ?? [:]
            let ok = (s["passed"] as? Bool) == true
            if interactive { FileHandle.standardOutput.write(Data("\r\u{1b}[K".utf8)) }
            print("\(s["name"] ?? "") \(ok ? "ok" : "FAILED") in \(Int((s["duration_ms"] as? Double ?? 0).rounded())) ms: \(s["detail"] ?? "")")
        case "finished": return false
        default: break
        }
        return true
    }
    let job = try client.call("GET", "/api/v1/flash/jobs/\(id)")
    if c.json { c.printJSON(job) }
    let o = job.object
    guard o["state"] as? String == "succeeded" else {
        let f = o["failure"] as? [String: Any] ?? [:]
        if !c.json {
            printError("rtectl: flash \(o["operation"] ?? "") failed at \(f["step"] ?? "?"): \(f["message"] ?? "")")
            for l in (f["last_lines"] as? [String] ?? []).suffix(8) { printError("  \(l)") }
        }
        throw ExitCode(Status.failed.rawValue)
    }
    if !c.json {
        print("flash \(o["operation"] ?? "") done in \(Int((o["duration_ms"] as? Double ?? 0).rounded())) ms (flashrom \(Int((o["flashrom_ms"] as? Double ?? 0).rounded())) ms)"
              + ((o["chip"] as? String).map { ", chip \($0)" } ?? ""))
    }
}

/// Follows a server-sent event stream, handing each event's `data` object to `onEvent` until it
/// returns false or the stream ends.
func followEvents(_ client: AgentClient, _ path: String, _ onEvent: ([String: Any]) -> Bool) throws {
    var pending = ""
    try client.stream(path) { bytes in
        pending += String(decoding: bytes, as: UTF8.self)
        while let end = pending.range(of: "\n\n") {
            let event = String(pending[..<end.lowerBound])
            pending.removeSubrange(..<end.upperBound)
            guard let line = event.split(separator: "\n").first(where: { $0.hasPrefix("data: ") }),
                  let o = try? JSONSerialization.jsonObject(with: Data(line.dropFirst(6).utf8)) as? [String: Any] else { continue }
            if !onEvent(o) { return false }
        }
        return true
    }
}
