import AgentClock
import Matching
import Terminal
import Text

/// Xen's debug keys from a run: Xen and dom0 share the serial line, and Ctrl-A three times
/// switches its input between them. The keys go to Xen, its answer is read until it has been
/// quiet for a while, the input goes back to dom0, and dom0's shell must answer again.
struct XenConsoleStage {
    var keys: String
    var command: RunSpec.Command
    var prompt: String
    static let switchKeys: [UInt8] = [0x01, 0x01, 0x01]
    static let toXen = "*** Serial input to Xen"
    static let toDom0 = "*** Serial input to DOM0"
    /// What a debug key's answer keeps in the run record.
    static let maxOutput = 64 << 10

    func run(on console: ConsoleSession, results: inout [CommandResult]) async throws -> StageOutcome {
        let total = Duration.milliseconds(Int64(command.timeoutSeconds * 1000))
        let deadline = console.clock.now() + total
        console.skipUnread()
        try console.send(XenConsoleStage.switchKeys)
        _ = try await console.await([.literal(XenConsoleStage.toXen)], within: .seconds(10),
                                    "Xen to take the serial input after Ctrl-A three times (\"\(XenConsoleStage.toXen)\")")
        _ = try await console.await([.literal("\n")], within: .seconds(5), "the end of Xen's switch message")
        let from = console.readOffset
        var to = from
        // Given back to dom0 before the answer is judged: later commands type into dom0's shell.
        func giveBack() async throws {
            try console.send(XenConsoleStage.switchKeys)
            _ = try await console.await([.literal(XenConsoleStage.toDom0)], within: .seconds(10),
                                        "Xen to give the serial input back to dom0 (\"\(XenConsoleStage.toDom0)\")")
        }
        try console.send(Array(keys.utf8))
        var lines = 0
        var timedOut = true
        while console.clock.now() < deadline {
            let left = deadline - console.clock.now()
            do {
                let m = try await console.expect([.literal("\n")], timeout: min(.milliseconds(Int64(command.quietMs)), left))
                to = m.end
                lines += 1
            } catch {
                if error == .cancelled { throw ConsoleWaitError.cancelled }
                if error == .timedOut {
                    if console.clock.now() < deadline { timedOut = false }
                    break
                }
                throw StageFailure(expected: "Xen's answer to \(keys.debugDescription)", message: "\(error)")
            }
        }
        try await giveBack()
        try console.send("\r")
        _ = try await console.await([.literal(prompt)], within: .seconds(10), "dom0's shell prompt after Xen's console")
        var raw: [UInt8] = []
        if case .data(_, let bytes, _) = console.capture.readPersisted(from: from, limit: Int(min(UInt64(XenConsoleStage.maxOutput), to - from))) {
            raw = bytes
        }
        var plain = Terminal()
        let text = String(decoding: plain.feed(raw).bytes, as: UTF8.self).trimming("\r\n")
        var problem: String?
        if lines == 0 { problem = "Xen printed nothing for the debug key(s) \(keys.debugDescription)" }
        if timedOut && problem == nil {
            problem = "Xen was still printing after \(format(command.timeoutSeconds)) s (timeout_s) for \(keys.debugDescription)"
        }
        if problem == nil, let expect = command.expect {
            var m = try StreamMatcher([expect])
            var chunk = TextChunk()
            chunk.bytes = Array(text.utf8)
            chunk.offsets = Array(0..<UInt64(chunk.bytes.count))
            if m.scan(chunk) == nil { problem = "Xen's answer to \(keys.debugDescription) lacks \(expect)" }
        }
        results.append(CommandResult(command: command.send, output: text, passed: problem == nil, exitCode: nil))
        if let problem {
            throw StageFailure(expected: command.expect.map { "\($0) in Xen's answer to \(keys.debugDescription)" } ?? "Xen's answer", message: problem)
        }
        return StageOutcome(detail: "Xen debug key(s) \(keys.debugDescription): \(lines) line(s), then dom0's shell answered")
    }
}
