import AgentClock
import Matching
import Serial
import Synchronization
import Terminal

/// Why a wait on the console ended without what it waited for.
public enum ConsoleWaitError: Error, Sendable, Equatable {
    case timedOut
    case cancelled
    /// The patterns cannot be compiled together (a spec is checked for this when posted; this is
    /// the answer for anything that was not): the wait fails with the reason, nothing crashes.
    case invalidPatterns(String)
}

/// Follows the capture from one offset on: a tap on the serial reader thread feeds a terminal
/// model as bytes arrive, answers an armed prompt right there (no thread hop between the
/// prompt's last byte and the key), and wakes waiters.
final class ConsoleFeed: Sendable {
    /// A prompt to answer the moment it appears.
    struct Reaction {
        var matcher: StreamMatcher
        let response: [UInt8]
        var match: Match?
        var sentAt: Timestamp?
        var writeError: String?
        /// The session's task, parked until the match (not woken for every chunk of noise).
        var waiter: CheckedContinuation<Void, Never>?
        var deadline: Timestamp?
    }
    struct State {
        var terminal: Terminal
        var backlog: [TextChunk] = []
        var version: UInt64 = 0
        var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
        /// When each of `waiters` gives up.
        var deadlines: [UInt64: Timestamp] = [:]
        /// The alarm that ends waits at their deadlines: when it wakes next (nil: none is
        /// running) and which one is current (an earlier deadline starts another).
        var alarmDue: Timestamp?
        var alarmGeneration: UInt64 = 0
        var nextWaiter: UInt64 = 0
        var lostBytes: UInt64 = 0
        var reaction: Reaction?
        /// Set by `abort`: every wait ends now and later ones at once (a fail_on pattern matched).
        var aborted = false
    }
    let state: Mutex<State>
    let clock: any AgentClock
    let capture: SerialCapture
    let write: @Sendable ([UInt8]) throws -> Void
    private let tap: Mutex<UInt64?> = Mutex(nil)

    init(capture: SerialCapture, from offset: UInt64, clock: any AgentClock, rows: Int = 25, columns: Int = 80,
         write: @escaping @Sendable ([UInt8]) throws -> Void) {
        state = Mutex(State(terminal: Terminal(rows: rows, columns: columns, offset: offset)))
        self.clock = clock
        self.capture = capture
        self.write = write
        let id = capture.addTap { [weak self] at, bytes in self?.ingest(bytes, at: at) }
        tap.withLock { $0 = id }
        // What arrived between `offset` and now (the tap takes it from here; overlaps are skipped).
        let woken = state.withLock { s in catchUp(&s, to: capture.endOffset) }
        woken.forEach { $0.resume() }
    }

    func stop() {
        if let id = tap.withLock({ t -> UInt64? in defer { t = nil }; return t }) { capture.removeTap(id) }
    }

    func ingest(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) {
        let woken = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            let next = s.terminal.offset
            let end = offset + UInt64(bytes.count)
            if end <= next { return [] }
            // Bytes this feed has not seen yet came before the chunk (appends from another
            // thread). The waits that catching up woke are resumed like any others: dropped, they
            // hung their tasks for good (a run's wait, then the agent's shutdown behind it).
            var woken: [CheckedContinuation<Void, Never>] = []
            if offset > next { woken = catchUp(&s, to: offset) }
            let skip = Int(s.terminal.offset > offset ? s.terminal.offset - offset : 0)
            guard skip < bytes.count else { return woken }
            return woken + consume(&s, UnsafeRawBufferPointer(rebasing: bytes[skip...]).bindMemory(to: UInt8.self), at: offset + UInt64(skip))
        }
        woken.forEach { $0.resume() }
    }

    /// Feeds what the capture holds from the terminal's offset to `end`.
    private func catchUp(_ s: inout State, to end: UInt64) -> [CheckedContinuation<Void, Never>] {
        var woken: [CheckedContinuation<Void, Never>] = []
        while s.terminal.offset < end {
            switch capture.read(from: s.terminal.offset, limit: Int(min(end - s.terminal.offset, 1 << 20))) {
            case .data(let at, let bytes, _):
                if bytes.isEmpty { return woken }
                woken += bytes.withUnsafeBufferPointer { consume(&s, $0, at: at) }
            case .lost(let from, let resume):
                s.lostBytes += resume - from
                s.terminal.feed([UInt8](), at: resume)
            }
        }
        return woken
    }

    private func consume(_ s: inout State, _ bytes: UnsafeBufferPointer<UInt8>, at offset: UInt64) -> [CheckedContinuation<Void, Never>] {
        let text = s.terminal.feed(bytes, at: offset)
        var woken: [CheckedContinuation<Void, Never>] = []
        if !text.isEmpty {
            s.backlog.append(text)
            // Scanned in place (a copy of the matcher would copy its history on every read); a
            // partial match stays in it for the next read.
            if s.reaction != nil, s.reaction!.match == nil {
                let response = s.reaction!.response
                var sentAt: Timestamp?, writeError: String?
                // The key goes out as soon as the prompt's last byte is seen.
                if let (m, _) = s.reaction!.matcher.scan(text, onMatchEnd: { [write, clock] in
                    do { try write(response); sentAt = clock.now() } catch { writeError = "\(error)" }
                }) {
                    s.reaction!.match = m
                    s.reaction!.sentAt = sentAt
                    s.reaction!.writeError = writeError
                    if let w = s.reaction!.waiter { woken.append(w); s.reaction!.waiter = nil }
                }
            }
        }
        s.version &+= 1
        woken += s.waiters.values
        s.waiters.removeAll()
        s.deadlines.removeAll()
        return woken
    }

    var version: UInt64 { state.withLock { $0.version } }
    var isAborted: Bool { state.withLock { $0.aborted } }

    /// Ends every wait on this console now, and any later one at once.
    func abort() {
        let woken = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.aborted = true
            var w = Array(s.waiters.values)
            s.waiters.removeAll()
            s.deadlines.removeAll()
            if let r = s.reaction?.waiter { w.append(r); s.reaction?.waiter = nil }
            return w
        }
        woken.forEach { $0.resume() }
    }
    var screen: Screen { state.withLock { $0.terminal.screen } }
    var terminal: Terminal { state.withLock { $0.terminal } }

    func takeText() -> [TextChunk] {
        state.withLock { s in let b = s.backlog; s.backlog.removeAll(); return b }
    }

    /// Returns when output arrived after `version` (true), the deadline passed or the task was cancelled (false).
    func waitForOutput(after version: UInt64, until deadline: Timestamp) async -> Bool {
        if self.version != version { return true }
        if Task.isCancelled || clock.now() >= deadline || isAborted { return false }
        let id = state.withLock { s -> UInt64 in s.nextWaiter += 1; return s.nextWaiter }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let (ready, alarm) = state.withLock { s -> (Bool, UInt64?) in
                    if s.version != version || Task.isCancelled || s.aborted { return (true, nil) }
                    s.waiters[id] = c
                    s.deadlines[id] = deadline
                    return (false, armAlarm(&s, for: deadline))
                }
                if ready { c.resume() }
                if let alarm { startAlarm(alarm, until: deadline) }
            }
        } onCancel: {
            wake(id)
        }
        return self.version != version && !isAborted
    }

    /// Returns once the armed reaction has matched, the deadline passed or the task was
    /// cancelled (the caller tells which). Unlike `waitForOutput`, noise before the prompt does
    /// not wake the task.
    func waitForReaction(until deadline: Timestamp, parked: (() -> Void)? = nil) async {
        if state.withLock({ $0.reaction?.match != nil || $0.aborted }) || Task.isCancelled || clock.now() >= deadline { return }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let (ready, alarm) = state.withLock { s -> (Bool, UInt64?) in
                    guard s.reaction != nil, s.reaction!.match == nil, !Task.isCancelled, !s.aborted else { return (true, nil) }
                    s.reaction!.waiter = c
                    s.reaction!.deadline = deadline
                    return (false, armAlarm(&s, for: deadline))
                }
                if ready { c.resume() }
                if let alarm { startAlarm(alarm, until: deadline) }
                if !ready { parked?() }
            }
        } onCancel: {
            wakeReactionWaiter()
        }
    }

    func wakeReactionWaiter() {
        state.withLock { s -> CheckedContinuation<Void, Never>? in
            defer { s.reaction?.waiter = nil }
            return s.reaction?.waiter
        }?.resume()
    }

    private func wake(_ id: UInt64) {
        state.withLock { s in s.deadlines.removeValue(forKey: id); return s.waiters.removeValue(forKey: id) }?.resume()
    }

    // One alarm task ends waits at their deadlines, instead of a timer task per wait: a wait
    // that ends early (a prompt answered, output arrived) cancels nothing and starts nothing,
    // where a timer task cost five thread switches per prompt — CPU the tty layer's kworker
    // then waited for under load (`rte-bench reaction`, busy round: answers up to 0.7 s late).
    // The alarm sleeps until the earliest deadline, wakes the waits that are due and sleeps
    // again until the next one; a wait ended early leaves it at most one wake-up.

    /// A new generation if no alarm wakes by `deadline` (the caller starts it), else nil.
    private func armAlarm(_ s: inout State, for deadline: Timestamp) -> UInt64? {
        if let due = s.alarmDue, due <= deadline { return nil }
        s.alarmDue = deadline
        s.alarmGeneration &+= 1
        return s.alarmGeneration
    }

    private func startAlarm(_ generation: UInt64, until first: Timestamp) {
        let clock = self.clock
        Task { [weak self] in
            var due = first
            while true {
                try? await clock.sleep(until: due)
                guard let self, let next = self.alarmRang(generation) else { return }
                due = next
            }
        }
    }

    /// Wakes the waits whose deadline has passed; returns when the alarm is due next (nil: it ends).
    private func alarmRang(_ generation: UInt64) -> Timestamp? {
        let now = clock.now()
        var woken: [CheckedContinuation<Void, Never>] = []
        let next = state.withLock { s -> Timestamp? in
            for (id, deadline) in s.deadlines where deadline <= now {
                s.deadlines.removeValue(forKey: id)
                if let c = s.waiters.removeValue(forKey: id) { woken.append(c) }
            }
            if let r = s.reaction, let w = r.waiter, let d = r.deadline, d <= now {
                woken.append(w)
                s.reaction!.waiter = nil
            }
            // An alarm started for an earlier deadline has taken over.
            guard generation == s.alarmGeneration else { return nil }
            var next = s.deadlines.values.min()
            if let r = s.reaction, r.waiter != nil, let d = r.deadline { next = next.map { Swift.min($0, d) } ?? d }
            s.alarmDue = next
            return next
        }
        woken.forEach { $0.resume() }
        return next
    }
}

/// Why a key armed for a prompt could not be written.
public struct ConsoleWriteError: Error, CustomStringConvertible, Sendable {
    public var description: String
}

/// The console as a boot strategy uses it: wait for patterns in the text stream or for a state
/// of the screen, and type. One session per run iteration; used from one task.
public final class ConsoleSession {
    let feed: ConsoleFeed
    let clock: any AgentClock
    let capture: SerialCapture
    private let writer: @Sendable ([UInt8]) throws -> Void
    private var pending: [TextChunk] = []
    private var pendingIndex = 0
    /// Compiled matchers by pattern list, with the DFA states they built: taken out while a wait
    /// uses one (no copy-on-write of its tables), put back after. Bounded: prompts repeat.
    private var matchers: [[Pattern]: StreamMatcher] = [:]
    static let matcherCacheLimit = 64

    private func matcher(for patterns: [Pattern]) throws(ConsoleWaitError) -> StreamMatcher {
        if let m = matchers.removeValue(forKey: patterns) { return m.fresh() }
        do { return try StreamMatcher(patterns) } catch { throw .invalidPatterns(error.message) }
    }

    private func keep(_ matcher: StreamMatcher) {
        if matchers.count >= ConsoleSession.matcherCacheLimit { matchers.removeAll() }
        matchers[matcher.patterns] = matcher
    }
    /// Capture offset up to which the text stream has been read by `expect`.
    public private(set) var readOffset: UInt64
    public let startOffset: UInt64
    /// Prompts answered by `expect(_:thenSend:timeout:)` that were already on the console when
    /// the wait began (answered from the waiting task, not the reader thread the moment they
    /// arrived): a prompt that comes before its wait is armed pays for the re-arming.
    public private(set) var answeredLate = 0
    /// Called each time `expect(_:thenSend:timeout:)` has armed its answer and its task is parked
    /// (for benchmarks that produce the prompt only then, as firmware does long after
    /// the arming: a prompt while the task is still busy arming would be a race real boots do
    /// not run).
    public var onArmed: (@Sendable () -> Void)?

    public init(capture: SerialCapture, clock: any AgentClock, from offset: UInt64? = nil,
                write: @escaping @Sendable ([UInt8]) throws -> Void) {
        let start = offset ?? capture.endOffset
        self.capture = capture
        self.clock = clock
        startOffset = start
        readOffset = start
        writer = write
        feed = ConsoleFeed(capture: capture, from: start, clock: clock, write: write)
    }

    deinit { feed.stop() }

    public var screen: Screen { feed.screen }
    public var recentLines: [String] { feed.terminal.lines.tail(12) }
    public var lineHistory: [String] { feed.terminal.lines.tail(400) }
    public var endOffset: UInt64 { feed.terminal.offset }

    /// Sends bytes to the DUT now.
    public func send(_ bytes: [UInt8]) throws {
        try writer(bytes)
    }

    public func send(_ text: String) throws { try send(Array(text.utf8)) }

    /// Types `text` a few bytes at a time, each chunk only once the DUT has echoed the one before:
    /// firmware reading a UART without flow control drops characters when a whole line arrives
    /// at once (iPXE under emulation turned "menu.ipxe" into "menipxe": SeaBIOS's serial console
    /// moves what the UART holds into the BIOS keyboard buffer, 15 keys, and drops the rest).
    /// 12 stays under that and under a 16550's 16-byte FIFO; the echo of a chunk comes a timer
    /// tick or two later whatever its size, so smaller chunks only type slower (iPXE: 60 ms per
    /// character with 4, 20–27 ms with 12). False when an echo did not come.
    public func typeEchoed(_ text: String, chunkSize: Int = 12, timeout: Duration) async throws -> Bool {
        let bytes = Array(text.utf8)
        var i = 0
        while i < bytes.count {
            let part = Array(bytes[i..<Swift.min(bytes.count, i + chunkSize)])
            try send(part)
            do { _ = try await expect([ConsoleSession.echo(of: part)], timeout: timeout) } catch {
                if error == .cancelled { throw error }
                return false
            }
            i += chunkSize
        }
        return true
    }

    /// The echo of typed bytes as it appears on a live console: a kernel message may land in the
    /// middle of it ("root@apu2:~# cat /pro[    2.28] tsc: ...\n c/cmdline"), so whole lines
    /// may come between any two of its characters.
    static func echo(of typed: [UInt8]) -> Pattern {
        guard typed.count > 1 else { return .literal(String(decoding: typed, as: UTF8.self)) }
        let escaped = typed.map { b -> String in
            let c = Character(Unicode.Scalar(b))
            return b < 0x80 && (c.isLetter || c.isNumber) ? String(c) : "\\x" + String(b, radix: 16).leftPadded(to: 2)
        }
        return .regex(escaped.joined(separator: "(?:[^\\n]*\\n)*"))
    }

    /// Ends every wait on the console now, and later ones at once (a fail_on pattern matched).
    public func abort() { feed.abort() }

    /// Forgets text not yet read (after a key that makes earlier output irrelevant).
    public func skipUnread() {
        pending.removeAll()
        pendingIndex = 0
        _ = feed.takeText()
        readOffset = feed.terminal.offset
    }

    /// Waits for the first of `patterns` in the text stream after what earlier waits consumed.
    public func expect(_ patterns: [Pattern], timeout: Duration) async throws(ConsoleWaitError) -> Match {
        var matcher = try matcher(for: patterns)
        defer { keep(matcher) }
        return try await expect(with: &matcher, timeout: timeout)
    }

    public func expect(with matcher: inout StreamMatcher, timeout: Duration) async throws(ConsoleWaitError) -> Match {
        let deadline = clock.now() + timeout
        while true {
            if let match = scanPending(&matcher) { return match }
            let version = feed.version
            pending = feed.takeText()
            if !pending.isEmpty { continue }
            if Task.isCancelled { throw .cancelled }
            if !(await feed.waitForOutput(after: version, until: deadline)) {
                if Task.isCancelled { throw .cancelled }
                pending = feed.takeText()
                if pending.isEmpty { throw .timedOut }
            }
        }
    }

    /// The text after what was read so far, as it arrives, for a reader that scans it with
    /// matchers of its own (one per watched pattern): waits up to `timeout` for some.
    public func nextText(timeout: Duration) async throws(ConsoleWaitError) -> [TextChunk] {
        let deadline = clock.now() + timeout
        while true {
            if !pending.isEmpty {
                var out = pending
                if pendingIndex > 0 {
                    var rest = TextChunk()
                    rest.append(pending[0], pendingIndex..<pending[0].bytes.count)
                    out[0] = rest
                }
                pending = []
                pendingIndex = 0
                if let end = out.last?.endOffset { readOffset = end }
                return out
            }
            let version = feed.version
            pending = feed.takeText()
            if !pending.isEmpty { continue }
            if Task.isCancelled { throw .cancelled }
            if !(await feed.waitForOutput(after: version, until: deadline)) {
                if Task.isCancelled { throw .cancelled }
                pending = feed.takeText()
                if pending.isEmpty { throw .timedOut }
            }
        }
    }

    /// Waits for the first of `patterns` and answers it with `response` from the serial reader
    /// thread the moment the prompt's last byte is read (the firmware's key window is short).
    /// Returns the match and when the answer was written.
    public func expect(_ patterns: [Pattern], thenSend response: [UInt8], timeout: Duration) async throws -> (match: Match, sentAt: Timestamp) {
        var matcher = try matcher(for: patterns)
        // Text already here is scanned now; the reaction is armed under the same lock, so
        // nothing that arrives in between is missed.
        let early = feed.state.withLock { s -> Match? in
            pending += s.backlog
            s.backlog.removeAll()
            if let match = scanPending(&matcher) { return match }
            readOffset = s.terminal.offset
            s.reaction = ConsoleFeed.Reaction(matcher: matcher, response: response)
            return nil
        }
        if let early {
            keep(matcher)
            answeredLate += 1
            try send(response)
            return (early, clock.now())
        }
        let deadline = clock.now() + timeout
        var signalled = false
        let onArmed = self.onArmed
        while true {
            let outcome = feed.state.withLock { s -> ConsoleFeed.Reaction? in
                guard let r = s.reaction, r.match != nil else { return nil }
                s.reaction = nil
                return r
            }
            if let r = outcome, let match = r.match {
                keep(r.matcher)
                // The text up to the prompt is consumed; what followed it is left for the next wait.
                skipText(before: match.end)
                if let e = r.writeError { throw ConsoleWriteError(description: e) }
                return (match, r.sentAt ?? clock.now())
            }
            if !Task.isCancelled && clock.now() < deadline && !feed.isAborted {
                await feed.waitForReaction(until: deadline, parked: signalled ? nil : { signalled = true; onArmed?() })
                continue
            }
            let gaveUp = feed.state.withLock { s -> Bool in
                if s.reaction?.match != nil { return false }
                s.reaction = nil
                return true
            }
            if !gaveUp { continue }  // it matched just now
            skipUnread()
            throw Task.isCancelled ? ConsoleWaitError.cancelled : ConsoleWaitError.timedOut
        }
    }

    /// Scans the unread text; on a match consumes it up to the match's end, else consumes it all.
    private func scanPending(_ matcher: inout StreamMatcher) -> Match? {
        while let chunk = pending.first {
            if let (match, next) = matcher.scan(chunk, from: pendingIndex) {
                pendingIndex = next
                if pendingIndex >= chunk.bytes.count { pending.removeFirst(); pendingIndex = 0 }
                readOffset = match.end
                return match
            }
            if let end = chunk.endOffset { readOffset = end }
            pending.removeFirst()
            pendingIndex = 0
        }
        return nil
    }

    /// Drops unread text that lies before capture offset `end`.
    private func skipText(before end: UInt64) {
        pending += feed.takeText()
        while let first = pending.first {
            if let last = first.endOffset, last <= end { pending.removeFirst(); pendingIndex = 0; continue }
            let i = first.firstIndex(atOrPast: end, from: pendingIndex)
            if i >= first.bytes.count { pending.removeFirst(); pendingIndex = 0; continue }
            pendingIndex = i
            break
        }
        readOffset = end
    }

    /// Waits until `read` finds what it looks for on the screen.
    public func waitForScreen<T>(timeout: Duration, _ read: (Screen) -> T?) async throws(ConsoleWaitError) -> T {
        let deadline = clock.now() + timeout
        while true {
            let version = feed.version
            if let found = read(feed.screen) { return found }
            if Task.isCancelled { throw .cancelled }
            if !(await feed.waitForOutput(after: version, until: deadline)) {
                if Task.isCancelled { throw .cancelled }
                if let found = read(feed.screen) { return found }
                throw .timedOut
            }
        }
    }

    /// Arrival time of a captured byte (to measure how fast a key followed a prompt).
    public func arrivalTime(of offset: UInt64) -> Timestamp? { capture.arrivalTime(of: offset) }
}

private extension String {
    func leftPadded(to width: Int) -> String { String(repeating: "0", count: Swift.max(0, width - count)) + self }
}
