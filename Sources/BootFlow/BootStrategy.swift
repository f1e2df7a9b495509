import AgentClock
import FirmwareUI
import Matching
import Power
import Serial
import Terminal
import Text

/// What a boot test drives: power, the console capture and a way to type.
public struct BootDevices: Sendable {
    public var power: any DUTPower
    public var capture: SerialCapture
    public var write: @Sendable ([UInt8]) throws -> Void
    public var clock: any AgentClock
    /// Flashes the SPI chip (the agent's Flasher); returns the step's detail, throws a message.
    public var flash: (@Sendable (RunSpec.Flash, _ user: String) async throws -> String)?
    /// Returns once nothing else drives the board (a flash job): a run starts only then.
    public var idle: (@Sendable () async -> Void)?
    /// The spec as the run's lease sees it (`${artifact:NAME}` → the URL the DUT fetches).
    public var resolve: (@Sendable (RunSpec, _ leaseId: String) async throws -> RunSpec)?

    public init(power: any DUTPower, capture: SerialCapture, clock: any AgentClock, write: @escaping @Sendable ([UInt8]) throws -> Void) {
        self.power = power; self.capture = capture; self.clock = clock; self.write = write
    }
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
    /// Who the run is for (named in what it does on the DUT, e.g. who flashed).
    public var user = "run"
    /// iPXE prints errors with a link to its error page; some commands print plain phrases.
    static let ipxeError = Pattern.regex("(?i)(https?://ipxe\\.org/[0-9a-f]{8}|no such (network )?device|not found|could not|no configuration methods succeeded|operation not permitted|permission denied)")

    public init(spec: RunSpec, devices: BootDevices) {
        self.spec = spec; self.devices = devices
    }

    /// Xen's banner line: the boot after the loader is a hypervisor's before dom0's kernel.
    static let xenBanner = Pattern.literal("(XEN) Xen version ")

    final class Recorder {
        /// The stage in progress: a boot that turns out to be Xen's renames and splits it.
        var stageName = ""
        var stageStart = Timestamp(nanosecondsSinceEpoch: 0)
        var stageFrom: UInt64 = 0
        var stages: [StageResult] = []
        var failure: Failure?
        var commands: [CommandResult] = []
        var menu: [String]?
        var kernelVersion: String?
        var facts: [Fact]?
    }

    /// Runs one boot. `checkpoint` is called between stages (lease still valid? cancelled?) and
    /// throws `RunAborted` to stop.
    public func runIteration(_ index: Int, progress: @escaping @Sendable (RunProgress) -> Void,
                             checkpoint: @escaping @Sendable () async throws -> Void) async throws -> IterationResult {
        let console = ConsoleSession(capture: devices.capture, clock: devices.clock, write: devices.write)
        let rec = Recorder()
        let clock = devices.clock
        let t = spec.timeouts
        let watch = PatternWatch(failOn: spec.failOn, watch: spec.watch)
        let abortConsole = ConsoleAbort(console)
        watch.start(capture: devices.capture, clock: clock, from: console.startOffset, startedAt: clock.now()) { abortConsole.abort() }
        defer { watch.stop() }

        /// The failure a fail_on match makes of whatever the stage was doing.
        func failOnFailure() -> StageFailure? {
            if let why = watch.setupError {
                return StageFailure(expected: "fail_on and watch patterns to watch", message: "fail_on/watch cannot be watched: \(why)")
            }
            guard let (pattern, hit) = watch.failHit else { return nil }
            return StageFailure(expected: "no \(pattern) in the output",
                                message: "fail_on \(pattern) matched during \(hit.stage), \(format(hit.secondsIntoIteration)) s into the boot (\(hit.at.iso8601)): \(hit.line)")
        }

        func stage(_ name: String, _ body: () async throws -> (detail: String, reactionUs: Double?)) async throws -> Bool {
            try await checkpoint()
            watch.enter(name, at: console.readOffset)
            if let f = failOnFailure() { return failed(name, f, start: clock.now(), from: console.endOffset) }
            progress(.stageStarted(iteration: index, stage: name))
            rec.stageName = name
            rec.stageStart = clock.now()
            rec.stageFrom = console.endOffset
            do {
                let (detail, reaction) = try await body()
                let name = rec.stageName, start = rec.stageStart, from = rec.stageFrom
                if let f = failOnFailure() { return failed(name, f, start: start, from: from) }
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
                // A timeout inside a stage, a serial write that failed, a bad pattern: all end the
                // stage; a fail_on match (which ended the stage's wait) says so instead.
                let f = failOnFailure() ?? error as? StageFailure ?? StageFailure(expected: name, message: "\(error)")
                return failed(rec.stageName, f, start: rec.stageStart, from: rec.stageFrom)
            }
        }

        /// The stage in progress turns out to be another one (Xen's boot, not a kernel's).
        func renameStage(_ name: String) {
            rec.stageName = name
            watch.relabel(name)
            progress(.stageStarted(iteration: index, stage: name))
        }

        /// The stage in progress ends at `offset` (its last byte's arrival) and `next` begins there.
        func splitStage(at offset: UInt64, detail: String, next: String) {
            let end = console.arrivalTime(of: offset) ?? clock.now()
            let r = StageResult(name: rec.stageName, startedAt: rec.stageStart, endedAt: end, durationMs: (end - rec.stageStart).milliseconds,
                                passed: true, detail: detail, reactionUs: nil, captureFrom: rec.stageFrom, captureTo: offset)
            rec.stages.append(r)
            progress(.stageFinished(iteration: index, r))
            watch.enter(next, at: offset)
            progress(.stageStarted(iteration: index, stage: next))
            rec.stageName = next
            rec.stageStart = end
            rec.stageFrom = offset
        }

        func failed(_ name: String, _ f: StageFailure, start: Timestamp, from: UInt64) -> Bool {
            let end = clock.now()
            let r = StageResult(name: name, startedAt: start, endedAt: end, durationMs: (end - start).milliseconds, passed: false,
                                detail: f.message, reactionUs: nil, captureFrom: from, captureTo: console.endOffset)
            rec.stages.append(r)
            // A fail_on line belongs to the stage whose text holds it: the watch may report it
            // after that stage has ended (Xen's line, read once dom0's kernel had started).
            let failedIn = f.message.hasPrefix("fail_on ") ? watch.failHit?.hit.stage ?? name : name
            rec.failure = Failure(stage: failedIn, expected: f.expected, message: f.message,
                                  screen: console.screen.text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init),
                                  lastLines: console.recentLines, captureOffset: console.endOffset)
            progress(.stageFinished(iteration: index, r))
            return false
        }

        /// Waits for patterns; a timeout becomes a stage failure saying what was awaited.
        /// `reported`: the time the message names when this wait is what is left of a longer one.
        func wait(_ patterns: [Pattern], _ seconds: Double, _ what: String, reported: Double? = nil) async throws -> Match {
            do { return try await console.expect(patterns, timeout: .milliseconds(Int64(seconds * 1000))) } catch {
                if isCancellation(error) { throw ConsoleWaitError.cancelled }
                if case .invalidPatterns(let why) = error { throw StageFailure(expected: what, message: "cannot wait for \(what): \(why)") }
                throw StageFailure(expected: what, message: "\(what) did not appear within \(format(reported ?? seconds)) s")
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
                if case .invalidPatterns(let why) = e { throw StageFailure(expected: what, message: "cannot wait for \(what): \(why)") }
                throw StageFailure(expected: what, message: "\(what) did not appear within \(format(seconds)) s")
            }
        }

        func seconds(_ s: Double) -> Duration { .milliseconds(Int64(s * 1000)) }

        /// Whether `text` is in the capture from `from` on (the last 4 MiB of it at most).
        func captureContains(_ text: String, from: UInt64) -> Bool {
            let end = console.endOffset, start = max(from, end > 4 << 20 ? end - (4 << 20) : 0)
            guard start < end, case .data(_, let bytes, _) = devices.capture.readPersisted(from: start, limit: Int(end - start)) else { return false }
            return bytes.firstRange(of: Array(text.utf8)) != nil
        }

        func readFacts() -> [Fact] {
            FactReader.read(devices.capture, from: console.startOffset, to: console.endOffset, rules: spec.facts)
        }

        /// What `expect_facts` found wrong: each fact named with what was seen.
        func factsFailure(_ facts: [Fact]) -> StageFailure? {
            let wrong = spec.expectFacts.compactMap { e -> String? in
                guard let v = facts[fact: e.name] else { return "\(e.name) was not in the boot log (expected \(e.pattern.debugDescription))" }
                return globMatches(e.pattern, v) ? nil : "\(e.name) is \(v.debugDescription), expected \(e.pattern.debugDescription)"
            }
            guard !wrong.isEmpty else { return nil }
            return StageFailure(expected: spec.expectFacts.map { "\($0.name) \($0.pattern)" }.joined(separator: ", "),
                                message: "facts: " + wrong.joined(separator: "; "))
        }

        func finish() -> IterationResult {
            // A fail_on match after the last wait still fails the iteration, at the stage it came in.
            if rec.failure == nil, let f = failOnFailure() {
                rec.failure = Failure(stage: watch.failHit?.hit.stage ?? watch.stage, expected: f.expected, message: f.message, screen: [],
                                      lastLines: console.recentLines, captureOffset: console.endOffset)
            }
            let facts = readFacts()
            // Without a login the boot's end is the iteration's: the facts are checked there.
            if rec.failure == nil, spec.login == nil, !spec.expectFacts.isEmpty, let f = factsFailure(facts) {
                let now = clock.now()
                let r = StageResult(name: "facts", startedAt: now, endedAt: now, durationMs: 0, passed: false, detail: f.message,
                                    reactionUs: nil, captureFrom: console.endOffset, captureTo: console.endOffset)
                rec.stages.append(r)
                progress(.stageFinished(iteration: index, r))
                rec.failure = Failure(stage: "facts", expected: f.expected, message: f.message, screen: [], lastLines: console.recentLines,
                                      captureOffset: console.endOffset)
            }
            return IterationResult(index: index, passed: rec.failure == nil, stages: rec.stages, failure: rec.failure, commands: rec.commands,
                                   menu: rec.menu, kernelVersion: rec.kernelVersion, captureFrom: console.startOffset, captureTo: console.endOffset,
                                   watched: spec.watch.isEmpty ? nil : watch.results(capture: devices.capture), facts: facts)
        }

        // flash (once per run, before the first power-on)
        if let flash = spec.flash, index == 1 {
            guard try await stage("flash", {
                guard let doFlash = devices.flash else {
                    throw StageFailure(expected: "a way to flash", message: "this DUT has no SPI header configured for flashing")
                }
                do { return (try await doFlash(flash, user), nil) } catch let e as RunAborted { throw e } catch {
                    throw StageFailure(expected: "the image flashed" + (flash.verify ? " and verified" : ""), message: "\(error)")
                }
            }) else { return finish() }
        }

        // power
        guard try await stage("power", {
            switch spec.power {
            case .none:
                return ("left as it is", nil)
            case .on, .cycle, .reset:
                let action: PowerAction = spec.power == .on ? .on : spec.power == .cycle ? .cycle : .reset
                // What the DUT printed before this is from an earlier boot (one a flash started, say).
                console.skipUnread()
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
                let o = try await FirmwareMenuStage(menu: menu, promptTimeout: seconds(t.firmware)).run(on: console)
                return (o.detail, o.reactionUs)
            }) else { return finish() }
        }

        if let ipxe = spec.ipxe {
            if ipxe.interrupt {
                guard try await stage("ipxe_interrupt", {
                    let (_, r) = try await react([.literal("Ctrl-B")], Key.ctrlB.bytes, t.ipxe, "iPXE's \"Press Ctrl-B\" prompt")
                    // The key goes out the moment "Ctrl-B" is read; under emulation SeaBIOS's serial
                    // console has dropped it now and then (the rig then autobooted). While iPXE's
                    // 2 s window may still be open the key is sent again; iPXE> ends the wait.
                    let sentAt = clock.now()
                    var resent = 0
                    // One matcher across the short waits: a prompt split by a timeout still matches.
                    var shell = try StreamMatcher([.literal("iPXE> ")])
                    while true {
                        do {
                            _ = try await console.expect(with: &shell, timeout: .milliseconds(400))
                            break
                        } catch {
                            if isCancellation(error) { throw ConsoleWaitError.cancelled }
                            if (clock.now() - sentAt).seconds < 1.6 { try console.send(Key.ctrlB.bytes); resent += 1; continue }
                        }
                        do {
                            _ = try await console.expect(with: &shell, timeout: .seconds(min(10, t.ipxe)))
                            break
                        } catch {
                            if isCancellation(error) { throw ConsoleWaitError.cancelled }
                            throw StageFailure(expected: "iPXE> after Ctrl-B",
                                               message: "Ctrl-B was sent \(format((r ?? 0) / 1000)) ms after the prompt (and \(resent) time(s) more) but no iPXE> shell came: the window was missed or the key did not reach the DUT")
                        }
                    }
                    return ("Ctrl-B sent \(format((r ?? 0) / 1000)) ms after the prompt" + (resent > 0 ? ", again \(resent) time(s) before iPXE> came" : ""), r)
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
            if ipxe.skipBannerWait {
                guard try await stage("ipxe_banner", {
                    // A space (one byte: iPXE reads the banner's key with getchar, so an escape
                    // sequence would leave its tail for the menu) ends the wait; any key but
                    // Ctrl-B means "no shell". iPXE then clears the prompt's line at once.
                    // The command-line prompt itself: an iPXE option ROM prints "Press Ctrl-B to
                    // configure iPXE" earlier, without waiting.
                    let (m, r) = try await react([.regex("Ctrl-B for the [A-Za-z]+ command line")], Key.space.bytes, t.ipxe,
                                                 "iPXE's \"Press Ctrl-B for the iPXE command line\" prompt")
                    let promptAt = console.arrivalTime(of: m.end - 1)
                    // iPXE erases the prompt as its wait ends (backspaces, or a carriage return).
                    let next = try await wait([.literal("\u{08}"), .literal("\r")], 5, "iPXE to go on after the key")
                    var detail = "space sent \(format((r ?? 0) / 1000)) ms after the prompt"
                    if let promptAt, let went = console.arrivalTime(of: next.end - 1) {
                        detail += "; iPXE went on \(Int(((went - promptAt).seconds * 1000).rounded())) ms after the prompt"
                    }
                    return (detail, r)
                }) else { return finish() }
            }
            if let entry = ipxe.menuEntry {
                guard try await stage("ipxe_menu", {
                    var listing: [String]?
                    defer { rec.menu = listing }
                    return (try await IPXEMenuStage(label: entry, appearTimeout: seconds(t.ipxe)).run(on: console, listing: &listing).detail, nil)
                }) else { return finish() }
            }
        }

        if let login = spec.login {
            guard try await stage("kernel", {
                if spec.power == .none { try console.send([0x0d]) }  // wake the getty
                let deadline = clock.now() + seconds(t.kernel)
                func left() -> Double { max(0.001, (deadline - clock.now()).seconds) }
                var m: Match
                do {
                    m = try await wait([BootStrategy.xenBanner] + login.atBoot, t.kernel, "the login prompt \"\(login.prompt)\"")
                } catch {
                    // Ended (a fail_on hit, a timeout) before this wait read Xen's banner, which may
                    // be there all the same: then it was Xen's part of the boot that failed.
                    if captureContains("(XEN) Xen version ", from: rec.stageFrom) { renameStage("hypervisor") }
                    throw error
                }
                if m.patternIndex == 0 {
                    // Xen: its part of the boot lasts until dom0's kernel prints its banner.
                    renameStage("hypervisor")
                    let dom0 = try await wait([.literal("Linux version ")] + login.atBoot, left(), "dom0's kernel (\"Linux version\") after Xen's banner",
                                              reported: t.kernel)
                    if dom0.patternIndex == 0 {
                        let xen = console.lineHistory.last { $0.contains("(XEN) Xen version ") }
                            .flatMap { $0.split(separator: " ").dropFirst(3).first.map(String.init) } ?? "?"
                        splitStage(at: dom0.start, detail: "Xen \(xen) booted; dom0's kernel started", next: "kernel")
                        m = try await wait(login.atBoot, left(), "the login prompt \"\(login.prompt)\"", reported: t.kernel)
                    } else {
                        m = dom0
                    }
                }
                for line in console.lineHistory.reversed() {
                    if let r = line.firstRange(of: "Linux version ") {
                        rec.kernelVersion = String(line[r.upperBound...].prefix { $0 != " " }); break
                    }
                }
                return ("\(m.text.debugDescription) after boot" + (rec.kernelVersion.map { ", kernel \($0)" } ?? ""), nil)
            }) else { return finish() }

            if !spec.expectFacts.isEmpty {
                guard try await stage("facts", {
                    rec.facts = readFacts()
                    if let f = factsFailure(rec.facts ?? []) { throw f }
                    return ("as expected: " + spec.expectFacts.map { "\($0.name) \(rec.facts?[fact: $0.name] ?? "")" }.joined(separator: ", "), nil)
                }) else { return finish() }
            }

            guard try await stage("login", {
                (try await LoginStage(login: login, timeout: seconds(t.login)).run(on: console).detail, nil)
            }) else { return finish() }

            for command in spec.commands {
                guard try await stage("command", {
                    if let keys = command.xenDebugKeys {
                        return (try await XenConsoleStage(keys: keys, command: command, prompt: login.shellPrompt)
                            .run(on: console, results: &rec.commands).detail, nil)
                    }
                    return (try await ShellCommandStage(command: command, prompt: login.shellPrompt).run(on: console, results: &rec.commands).detail, nil)
                }) else { return finish() }
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
                                       message: "iPXE: \(line.trimming(" \r"))" + (attempt > 0 ? " (after \(attempt + 1) attempts)" : ""))
                }
                return ("\(command): ok" + (attempt > 0 ? " after \(attempt + 1) attempts" : ""), nil)
            }
        }
    }
}



/// Lets the pattern watch end the iteration's waits from its own task (the session itself is
/// used by one task; only `abort` crosses over, and it is thread-safe).
final class ConsoleAbort: @unchecked Sendable {
    let console: ConsoleSession
    init(_ console: ConsoleSession) { self.console = console }
    func abort() { console.abort() }
}
