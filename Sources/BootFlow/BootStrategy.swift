import AgentClock
import FirmwareUI
import Matching
import Power
import Serial
import Terminal

/// What a boot test drives: power, the console capture and a way to type.
public struct BootDevices: Sendable {
    public var power: any DUTPower
    public var capture: SerialCapture
    public var write: @Sendable ([UInt8]) throws -> Void
    public var clock: any AgentClock

    public init(power: any DUTPower, capture: SerialCapture, clock: any AgentClock, write: @escaping @Sendable ([UInt8]) throws -> Void) {
        self.power = power; self.capture = capture; self.clock = clock; self.write = write
    }
}

/// A stage that did not get what it needed.
struct StageFailure: Error {
    var expected: String
    var message: String
}

/// The run was cancelled (DELETE) or its lease ended.
public struct RunAborted: Error, Sendable {
    public var reason: String
    public init(reason: String) { self.reason = reason }
}

/// The boot as an explicit sequence of stages over power and console:
/// power → firmware (→ boot menu) → iPXE (Ctrl-B → commands/script, or menu entry) → kernel →
/// login → shell commands. Every wait has a timeout; every key goes out the moment its prompt
/// is matched.
public struct BootStrategy: Sendable {
    public let spec: RunSpec
    public let devices: BootDevices
    /// iPXE prints errors with a link to its error page; some commands print plain phrases.
    static let ipxeError = Pattern.regex("(?i)(https?://ipxe\\.org/[0-9a-f]{8}|no such (network )?device|not found|could not|no configuration methods succeeded|operation not permitted|permission denied)")

    public init(spec: RunSpec, devices: BootDevices) {
        self.spec = spec; self.devices = devices
    }

    final class Recorder {
        var stages: [StageResult] = []
        var failure: Failure?
        var commands: [CommandResult] = []
        var menu: [String]?
        var kernelVersion: String?
    }

    /// Runs one boot. `checkpoint` is called between stages (lease still valid? cancelled?) and
    /// throws `RunAborted` to stop.
    public func runIteration(_ index: Int, progress: @escaping @Sendable (RunProgress) -> Void,
                             checkpoint: @escaping @Sendable () async throws -> Void) async throws -> IterationResult {
        let console = ConsoleSession(capture: devices.capture, clock: devices.clock, write: devices.write)
        let rec = Recorder()
        let clock = devices.clock
        let t = spec.timeouts

        func stage(_ name: String, _ body: () async throws -> (detail: String, reactionUs: Double?)) async throws -> Bool {
            try await checkpoint()
            progress(.stageStarted(iteration: index, stage: name))
            let start = clock.now()
            let from = console.endOffset
            do {
                let (detail, reaction) = try await body()
                let end = clock.now()
                let r = StageResult(name: name, startedAt: start, endedAt: end, durationMs: (end - start).milliseconds, passed: true,
                                    detail: detail, reactionUs: reaction, captureFrom: from, captureTo: console.readOffset)
                rec.stages.append(r)
                progress(.stageFinished(iteration: index, r))
                return true
            } catch ConsoleWaitError.cancelled {
                throw RunAborted(reason: "cancelled")
            } catch let abort as RunAborted {
                throw abort
            } catch {
                // A timeout inside a stage, a serial write that failed, a bad pattern: all end the stage.
                let f = error as? StageFailure ?? StageFailure(expected: name, message: "\(error)")
                let end = clock.now()
                let r = StageResult(name: name, startedAt: start, endedAt: end, durationMs: (end - start).milliseconds, passed: false,
                                    detail: f.message, reactionUs: nil, captureFrom: from, captureTo: console.endOffset)
                rec.stages.append(r)
                rec.failure = Failure(stage: name, expected: f.expected, message: f.message,
                                      screen: console.screen.text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init),
                                      lastLines: console.recentLines, captureOffset: console.endOffset)
                progress(.stageFinished(iteration: index, r))
                return false
            }
        }

        /// Waits for patterns; a timeout becomes a stage failure saying what was awaited.
        func wait(_ patterns: [Pattern], _ seconds: Double, _ what: String) async throws -> Match {
            do { return try await console.expect(patterns, timeout: .milliseconds(Int64(seconds * 1000))) } catch {
                if isCancellation(error) { throw ConsoleWaitError.cancelled }
                throw StageFailure(expected: what, message: "\(what) did not appear within \(format(seconds)) s")
            }
        }

        /// Waits for a prompt and answers it with `key` from the serial reader thread; returns
        /// the match and the microseconds from the prompt's last byte arriving to the key written.
        func react(_ patterns: [Pattern], _ key: [UInt8], _ seconds: Double, _ what: String) async throws -> (Match, Double?) {
            do {
                let (m, sentAt) = try await console.expect(patterns, thenSend: key, timeout: .milliseconds(Int64(seconds * 1000)))
                guard let arrived = console.arrivalTime(of: m.end - 1) else { return (m, nil) }
                return (m, max(0, (sentAt - arrived).seconds * 1e6))
            } catch let e as ConsoleWaitError {
                if e == .cancelled { throw ConsoleWaitError.cancelled }
                throw StageFailure(expected: what, message: "\(what) did not appear within \(format(seconds)) s")
            }
        }

        func finish() -> IterationResult {
            IterationResult(index: index, passed: rec.failure == nil, stages: rec.stages, failure: rec.failure, commands: rec.commands,
                            menu: rec.menu, kernelVersion: rec.kernelVersion, captureFrom: console.startOffset, captureTo: console.endOffset)
        }

        // power
        guard try await stage("power", {
            switch spec.power {
            case .none:
                return ("left as it is", nil)
            case .on, .cycle, .reset:
                let action: PowerAction = spec.power == .on ? .on : spec.power == .cycle ? .cycle : .reset
                do {
                    let state = try await devices.power.perform(action)
                    return ("\(action.rawValue) → \(state.rawValue)", nil)
                } catch {
                    throw StageFailure(expected: "power \(action.rawValue)", message: "power \(action.rawValue) failed: \(error)")
                }
            }
        }) else { return finish() }

        if spec.power != .none {
            guard try await stage("firmware", {
                let m = try await wait(spec.firmware.banner, t.firmware, "a firmware banner (\(spec.firmware.banner.map(\.description).joined(separator: " or ")))")
                return ("saw \(m.text.debugDescription)", nil)
            }) else { return finish() }
        }

        if let menu = spec.firmware.bootMenu {
            guard try await stage("boot_menu", {
                let (_, r) = try await react([menu.prompt], menu.key.bytes, t.firmware, "the boot menu prompt \(menu.prompt)")
                // The menu lists "N. label" lines; press the digit of the wanted one.
                let entryPattern = Pattern.regex("(?i)[1-9a-z]\\. [^\\r\\n]*" + escapeRegex(menu.entry))
                do {
                    let found = try await console.expect([entryPattern], timeout: .seconds(10))
                    let (key, _) = FirmwareBootMenu.choose(menu.entry, in: [found.text])
                    guard let key else { throw StageFailure(expected: menu.entry, message: "could not read the entry number from \(found.text.debugDescription)") }
                    try console.send([key])
                    return ("pressed \(menu.key.rawValue) \(format((r ?? 0) / 1000)) ms after the prompt, chose \(found.text.debugDescription)", r)
                } catch let e as ConsoleWaitError {
                    if e == .cancelled { throw ConsoleWaitError.cancelled }
                    let labels = FirmwareBootMenu.choose(menu.entry, in: console.recentLines).labels
                    throw StageFailure(expected: "boot menu entry \"\(menu.entry)\"",
                                       message: "no boot menu entry contains \"\(menu.entry)\"; the menu offers: \(labels.isEmpty ? "nothing readable" : labels.joined(separator: " | "))")
                }
            }) else { return finish() }
        }

        if let ipxe = spec.ipxe {
            if ipxe.interrupt {
                guard try await stage("ipxe_interrupt", {
                    let (_, r) = try await react([.literal("Ctrl-B")], Key.ctrlB.bytes, t.ipxe, "iPXE's \"Press Ctrl-B\" prompt")
                    do {
                        _ = try await console.expect([.literal("iPXE> ")], timeout: .seconds(min(10, t.ipxe)))
                    } catch {
                        if isCancellation(error) { throw ConsoleWaitError.cancelled }
                        throw StageFailure(expected: "iPXE> after Ctrl-B",
                                           message: "Ctrl-B was sent \(format((r ?? 0) / 1000)) ms after the prompt but no iPXE> shell came: the window was missed or the key did not reach the DUT")
                    }
                    return ("Ctrl-B sent \(format((r ?? 0) / 1000)) ms after the prompt", r)
                }) else { return finish() }

                let lines = ipxe.commands + ipxe.script
                for (n, command) in lines.enumerated() {
                    // The last line may leave the shell (chain to a menu, boot a kernel).
                    let leavesShell = n == lines.count - 1 && (ipxe.menuEntry != nil || !ipxe.script.isEmpty
                        || command.hasPrefix("chain") || command.hasPrefix("boot"))
                    guard try await stage(n < ipxe.commands.count ? "ipxe_command" : "ipxe_script", {
                        try await ipxeCommand(command, leavesShell: leavesShell, retries: command.hasPrefix("dhcp") || command.hasPrefix("ifconf") ? ipxe.dhcpRetries : 0)
                    }) else { return finish() }
                }
            }
            if let entry = ipxe.menuEntry {
                guard try await stage("ipxe_menu", { try await pickMenuEntry(entry) }) else { return finish() }
            }
        }

        if let login = spec.login {
            guard try await stage("kernel", {
                if spec.power == .none { try console.send([0x0d]) }  // wake the getty
                let m = try await wait([.literal(login.prompt), .literal(login.shellPrompt)], t.kernel, "the login prompt \"\(login.prompt)\"")
                for line in console.lineHistory.reversed() {
                    if let r = line.firstRange(of: "Linux version ") {
                        rec.kernelVersion = String(line[r.upperBound...].prefix { $0 != " " }); break
                    }
                }
                return ("\(m.text.debugDescription) after boot" + (rec.kernelVersion.map { ", kernel \($0)" } ?? ""), nil)
            }) else { return finish() }

            guard try await stage("login", { try await logIn(login) }) else { return finish() }

            for command in spec.commands {
                guard try await stage("command", { try await shellCommand(command, prompt: login.shellPrompt) }) else { return finish() }
            }
        }
        return finish()

        // MARK: stages' bodies

        func ipxeCommand(_ command: String, leavesShell: Bool, retries: Int) async throws -> (String, Double?) {
            var attempt = 0
            while true {
                console.skipUnread()
                // Typed against its echo, so the command's own text also stays out of the error scan.
                guard try await console.typeEchoed(command, timeout: .seconds(5)) else {
                    throw StageFailure(expected: "the echo of \"\(command)\"", message: "iPXE did not echo \"\(command)\" within 5 s")
                }
                try console.send("\r")
                var patterns: [Pattern] = [BootStrategy.ipxeError, .literal("iPXE> ")]
                // A chain that works prints "URL... ok" and runs the script: no prompt comes back.
                if leavesShell { patterns.append(.literal("... ok")) }
                if leavesShell && (command == "boot" || command.hasPrefix("boot ")) { return ("\(command): sent", nil) }
                let m = try await wait(patterns, t.ipxe, "iPXE> after \"\(command)\"")
                if m.patternIndex == 0 {
                    let line = console.recentLines.last { !$0.isEmpty && !$0.hasPrefix("iPXE>") } ?? m.text
                    if attempt < retries {
                        attempt += 1
                        _ = try? await console.expect([.literal("iPXE> ")], timeout: .seconds(10))
                        continue
                    }
                    throw StageFailure(expected: "\"\(command)\" to succeed",
                                       message: "iPXE: \(line.trimmingCharacters(in: " \r"))" + (attempt > 0 ? " (after \(attempt + 1) attempts)" : ""))
                }
                return ("\(command): ok" + (attempt > 0 ? " after \(attempt + 1) attempts" : ""), nil)
            }
        }

        func pickMenuEntry(_ label: String) async throws -> (String, Double?) {
            let seconds = Duration.milliseconds(Int64(t.ipxe * 1000))
            var menu: IPXEMenu
            do { menu = try await console.waitForScreen(timeout: seconds) { IPXEMenu.read(from: $0) } } catch {
                if isCancellation(error) { throw ConsoleWaitError.cancelled }
                throw StageFailure(expected: "an iPXE menu", message: "no iPXE menu was drawn within \(format(t.ipxe)) s")
            }
            // iPXE draws the menu row by row: wait for the entry to appear, and call it missing only
            // once the menu has stopped changing for a moment.
            let menuDeadline = clock.now() + seconds
            while menu.item(labelled: label) == nil && clock.now() < menuDeadline {
                let shown = menu
                do {
                    menu = try await console.waitForScreen(timeout: .milliseconds(500)) { screen in
                        guard let m = IPXEMenu.read(from: screen), m != shown else { return nil }
                        return m
                    }
                } catch {
                    if isCancellation(error) { throw ConsoleWaitError.cancelled }
                    break
                }
            }
            var keys = 0
            // A menu longer than the window: iPXE shows "..." above or below the rows it hides and
            // scrolls as the highlight moves. Walk the highlight toward the hidden rows (below
            // first, then above) until the entry is on screen, collecting every entry seen.
            var seen = menu.selectable.map(\.label)
            let windowSize = max(1, seen.count)
            var scrolled = false
            func hidden(_ m: IPXEMenu, _ key: Key) -> Bool {
                let edge = key == .down ? m.items.last : m.items.first
                return edge.map { $0.isGap && $0.label == "..." } ?? false
            }
            for key in [Key.down, Key.up] {
                while menu.item(labelled: label) == nil, hidden(menu, key), let selected = menu.selected {
                    let window = menu.selectable.map(\.label)
                    // What the page rows held before the key: a page change rewrites the markers
                    // first and the last item row last, so it is complete once that row changed.
                    let before = console.screen
                    let rows = IPXEMenu.window(rows: before.rows)
                    try console.send(key.bytes)
                    keys += 1
                    do {
                        menu = try await console.waitForScreen(timeout: .seconds(5)) { screen in
                            guard let m = IPXEMenu.read(from: screen), let s = m.selected, s.row != selected.row || s.label != selected.label else { return nil }
                            let pageChanged = screen.text(row: rows.topMarker) != before.text(row: rows.topMarker)
                                || screen.text(row: rows.bottomMarker) != before.text(row: rows.bottomMarker)
                            if pageChanged && screen.text(row: rows.lastItem) == before.text(row: rows.lastItem) { return nil }
                            return m
                        }
                    } catch {
                        if isCancellation(error) { throw ConsoleWaitError.cancelled }
                        throw StageFailure(expected: "the highlight to move \(key.rawValue) from \"\(selected.label)\"",
                                           message: "after \(key.rawValue) the highlight stayed on \"\(selected.label)\" with more entries \(key == .down ? "below" : "above")")
                    }
                    let now = menu.selectable.map(\.label)
                    if now != window {
                        scrolled = true
                        let new = now.filter { !seen.contains($0) }
                        seen = key == .down ? seen + new : new + seen
                    }
                    if keys > 4096 { throw StageFailure(expected: "to page through the menu", message: "paging did not end after \(keys) keys") }
                }
            }
            rec.menu = scrolled ? seen : menu.items.map { ($0.isGap ? "(gap) " : "") + $0.label }
            guard let target = menu.item(labelled: label) else {
                let pages = (seen.count + windowSize - 1) / windowSize
                throw StageFailure(expected: "menu entry \"\(label)\"",
                                   message: "the menu \"\(menu.title)\" has no entry \"\(label)\"; " + (scrolled
                                       ? "all \(seen.count) entries, read over \(pages) pages of \(windowSize): " : "entries: ") + seen.joined(separator: " | "))
            }
            while let selected = menu.selected, selected.row != target.row {
                let key = target.row > selected.row ? Key.down : Key.up
                try console.send(key.bytes)
                keys += 1
                // The highlight must really move; a menu that ignores keys is a failure, not a guess.
                do {
                    menu = try await console.waitForScreen(timeout: .seconds(5)) { screen in
                        guard let m = IPXEMenu.read(from: screen), let s = m.selected, s.row != selected.row else { return nil }
                        return m
                    }
                } catch {
                    if isCancellation(error) { throw ConsoleWaitError.cancelled }
                    throw StageFailure(expected: "the highlight to move \(key.rawValue) from \"\(selected.label)\"",
                                       message: "after \(key.rawValue) the highlight stayed on \"\(selected.label)\"")
                }
                if keys > 4 * menu.items.count {
                    throw StageFailure(expected: "to reach \"\(target.label)\"", message: "navigation did not converge after \(keys) keys")
                }
            }
            guard menu.selected?.label == target.label else {
                throw StageFailure(expected: "\"\(target.label)\" highlighted", message: "highlight is on \"\(menu.selected?.label ?? "nothing")\"")
            }
            try console.send(Key.enter.bytes)
            console.skipUnread()
            return ("chose \"\(target.label)\" (row \(target.row + 1)) with \(keys) key(s)", nil)
        }

        func logIn(_ login: RunSpec.Login) async throws -> (String, Double?) {
            // Kernel messages may land on top of the prompt; if the password prompt does not
            // come, ask for a fresh login prompt and try again.
            for attempt in 1...3 {
                console.skipUnread()
                _ = try await console.typeEchoed(login.username, timeout: .seconds(5))
                try console.send("\r")
                var patterns: [Pattern] = [.literal(login.passwordPrompt), .literal(login.shellPrompt), .literal("Login incorrect")]
                if login.password == nil { patterns.removeFirst() }
                let m: Match
                do { m = try await console.expect(patterns, timeout: .seconds(min(10, t.login))) } catch {
                    if isCancellation(error) { throw ConsoleWaitError.cancelled }
                    if attempt < 3 { try console.send([0x0d]); _ = try? await console.expect([.literal(login.prompt)], timeout: .seconds(5)); continue }
                    throw StageFailure(expected: "\"\(login.passwordPrompt)\" after the user name", message: "no password prompt or shell after sending the user name")
                }
                if m.text == login.shellPrompt { return ("logged in as \(login.username) without a password", nil) }
                if m.text == "Login incorrect" { throw StageFailure(expected: "a shell", message: "Login incorrect for \(login.username)") }
                try console.send((login.password ?? "") + "\r")
                let r = try await wait([.literal(login.shellPrompt), .literal("Login incorrect"), .literal(login.prompt)], t.login, "the shell prompt \"\(login.shellPrompt)\"")
                if r.patternIndex != 0 {
                    throw StageFailure(expected: "the shell prompt \"\(login.shellPrompt)\"",
                                       message: "Login incorrect: the DUT refused the password for \(login.username)")
                }
                return ("logged in as \(login.username)", nil)
            }
            throw StageFailure(expected: "a login", message: "login did not succeed")
        }

        func shellCommand(_ command: RunSpec.Command, prompt: String) async throws -> (String, Double?) {
            console.skipUnread()
            // Framed by markers the way labgrid's ShellDriver does it: the output is exactly what
            // the command printed between them (a "# " inside it is output, not the prompt), and
            // its exit status comes back after the end marker. The typed line splits each marker
            // with '' so its echo never looks like the marker itself.
            let frame = ShellFrame(command.send)
            let timeout = command.timeoutSeconds
            guard try await console.typeEchoed(frame.line, timeout: .milliseconds(Int64(timeout * 1000))) else {
                throw StageFailure(expected: "the echo of \"\(command.send)\"", message: "the shell did not echo \"\(command.send)\"")
            }
            try console.send("\r")
            let begin = try await wait([.literal(frame.begin)], timeout, "the start of \"\(command.send)\"'s output")
            let end = try await wait([.regex(frame.endPattern)], timeout, "the end of \"\(command.send)\" (its exit status)")
            let exitCode = ShellFrame.exitCode(end.text)
            _ = try await wait([.literal(prompt)], timeout, "the shell prompt after \"\(command.send)\"")
            var raw: [UInt8] = []
            if case .data(_, let bytes, _) = devices.capture.readPersisted(from: begin.end, limit: Int(min(1 << 20, end.start - begin.end))) { raw = bytes }
            var plain = Terminal()
            let text = ShellFrame.output(plain.feed(raw).bytes)
            var passed = true
            var problem: String?
            if let expect = command.expect {
                var m = try StreamMatcher([expect])
                var chunk = TextChunk()
                chunk.bytes = Array(text.utf8)
                chunk.offsets = Array(0..<UInt64(chunk.bytes.count))
                if m.scan(chunk) == nil {
                    passed = false
                    problem = "\"\(command.send)\" printed \(String(text.prefix(200)).debugDescription), which lacks \(expect)"
                }
            }
            if passed, let wanted = command.expectExit, exitCode != wanted {
                passed = false
                problem = "\"\(command.send)\" exited with \(exitCode.map(String.init) ?? "an unreadable status"), expected \(wanted)"
            }
            rec.commands.append(CommandResult(command: command.send, output: String(text.prefix(4096)), passed: passed, exitCode: exitCode))
            if let problem {
                throw StageFailure(expected: command.expect.map { "\($0) in the output of \"\(command.send)\"" } ?? "exit status \(command.expectExit ?? 0)",
                                   message: problem)
            }
            return ("\(command.send): exit \(exitCode.map(String.init) ?? "?"), \(String(text.prefix(80)).debugDescription)", nil)
        }
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

/// True for a wait that ended because the run was cancelled (not a timeout).
func isCancellation(_ error: any Error) -> Bool { (error as? ConsoleWaitError) == .cancelled }

func format(_ x: Double) -> String {
    let r = (x * 10).rounded() / 10
    return r == r.rounded() ? String(Int(r)) : String(r)
}

func escapeRegex(_ s: String) -> String {
    var out = ""
    for ch in s {
        if "\\^$.|?*+()[]{}".contains(ch) { out.append("\\") }
        if ch.isASCII { out.append(ch) } else { out.append(".{1,4}") }
    }
    return out
}

extension String {
    func trimmingCharacters(in set: String) -> String {
        // By scalar: "\r\n" is one Character, a lone "\r" another.
        let strip = Set(set.unicodeScalars)
        var s = Substring(self).unicodeScalars
        while let f = s.first, strip.contains(f) { s.removeFirst() }
        while let l = s.last, strip.contains(l) { s.removeLast() }
        return String(s)
    }
}
