import Matching
import Serial
import Terminal

/// Runs one shell command and checks its output and exit status.
///
/// Framed by markers the way labgrid's ShellDriver does it: the output is exactly what the
/// command printed between them (a "# " inside it is output, not the prompt), and its exit
/// status comes back after the end marker. The typed line splits each marker with '' so its
/// echo never looks like the marker itself.
struct ShellCommandStage {
    var command: RunSpec.Command
    var prompt: String
    /// The markers' tag (random unless a test replays a recorded session).
    var frameID: UInt64 = UInt64.random(in: 0...UInt64.max)

    func run(on console: ConsoleSession, results: inout [CommandResult]) async throws -> StageOutcome {
        console.skipUnread()
        let frame = ShellFrame(command.send, id: frameID)
        let timeout = Duration.milliseconds(Int64(command.timeoutSeconds * 1000))
        guard try await console.typeEchoed(frame.line, timeout: timeout) else {
            throw StageFailure(expected: "the echo of \"\(command.send)\"", message: "the shell did not echo \"\(command.send)\"")
        }
        try console.send("\r")
        let begin = try await console.await([.literal(frame.begin)], within: timeout, "the start of \"\(command.send)\"'s output")
        let end = try await console.await([.regex(frame.endPattern)], within: timeout, "the end of \"\(command.send)\" (its exit status)")
        let exitCode = ShellFrame.exitCode(end.text)
        _ = try await console.await([.literal(prompt)], within: timeout, "the shell prompt after \"\(command.send)\"")
        var raw: [UInt8] = []
        if case .data(_, let bytes, _) = console.capture.readPersisted(from: begin.end, limit: Int(min(1 << 20, end.start - begin.end))) { raw = bytes }
        var plain = Terminal()
        let text = ShellFrame.output(plain.feed(raw).bytes)
        var problem: String?
        if let expect = command.expect {
            var m = try StreamMatcher([expect])
            var chunk = TextChunk()
            chunk.bytes = Array(text.utf8)
            chunk.offsets = Array(0..<UInt64(chunk.bytes.count))
            if m.scan(chunk) == nil {
                problem = "\"\(command.send)\" printed \(String(text.prefix(200)).debugDescription), which lacks \(expect)"
            }
        }
        if problem == nil, let wanted = command.expectExit, exitCode != wanted {
            problem = "\"\(command.send)\" exited with \(exitCode.map(String.init) ?? "an unreadable status"), expected \(wanted)"
        }
        results.append(CommandResult(command: command.send, output: String(text.prefix(4096)), passed: problem == nil, exitCode: exitCode))
        if let problem {
            throw StageFailure(expected: command.expect.map { "\($0) in the output of \"\(command.send)\"" } ?? "exit status \(command.expectExit ?? 0)",
                               message: problem)
        }
        return StageOutcome(detail: "\(command.send): exit \(exitCode.map(String.init) ?? "?"), \(String(text.prefix(80)).debugDescription)")
    }
}

/// A shell command wrapped in begin and end markers (`echo`s around `eval` of the command, so
/// pipes, redirections and a trailing comment stay the command's own).
struct ShellFrame {
    let begin: String
    let endPattern: String
    let line: String

    init(_ command: String, id: UInt64 = UInt64.random(in: 0...UInt64.max)) {
        let tag = "RTE" + String(id, radix: 36)
        begin = tag + "B"
        endPattern = tag + "E [0-9]+"
        let quoted = "'" + command.split(separator: "'", omittingEmptySubsequences: false).joined(separator: "'\\''") + "'"
        line = "echo \(tag)''B; eval \(quoted); echo \(tag)''E $?"
    }

    static func exitCode(_ endMarker: String) -> Int? {
        endMarker.split(separator: " ").last.flatMap { Int($0) }
    }

    /// The command's output: what came between the begin marker's line and the end marker.
    static func output(_ bytes: [UInt8]) -> String {
        var b = bytes[...]
        // The rest of the begin marker's line.
        if b.first == 0x0d { b = b.dropFirst() }
        if b.first == 0x0a { b = b.dropFirst() }
        // The end marker starts its own line: drop that line break.
        if b.last == 0x0a { b = b.dropLast() }
        if b.last == 0x0d { b = b.dropLast() }
        return String(decoding: b, as: UTF8.self)
    }
}

