import AgentClock
import Matching
import Serial
import Synchronization
import Terminal

/// Why a wait on the console ended without what it waited for.
public enum ConsoleWaitError: Error, Sendable {
    case timedOut
    case cancelled
}

/// Follows the capture from one offset on: a pump task feeds a terminal model as bytes arrive,
/// and waiters are woken at once (the reaction to a prompt starts here).
final class ConsoleFeed: Sendable {
    struct State {
        var terminal: Terminal
        var backlog: [TextChunk] = []
        var version: UInt64 = 0
        var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
        var nextWaiter: UInt64 = 0
        var lostBytes: UInt64 = 0
    }
    let state: Mutex<State>
    let clock: any AgentClock
    private let pump: Mutex<Task<Void, Never>?> = Mutex(nil)

    init(capture: SerialCapture, from offset: UInt64, clock: any AgentClock, rows: Int = 25, columns: Int = 80) {
        state = Mutex(State(terminal: Terminal(rows: rows, columns: columns, offset: offset)))
        self.clock = clock
        let task = Task { [weak self] in
            for await item in capture.subscribe(from: offset) {
                guard let self else { return }
                switch item {
                case .data(let at, let bytes, _): self.ingest(bytes, at: at)
                case .lost(let from, let resume): self.state.withLock { $0.lostBytes += resume - from }
                case .event: break
                }
            }
        }
        pump.withLock { $0 = task }
    }

    func stop() { pump.withLock { $0?.cancel() } }

    private func ingest(_ bytes: [UInt8], at offset: UInt64) {
        let woken = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            let text = s.terminal.feed(bytes, at: offset)
            if !text.isEmpty { s.backlog.append(text) }
            s.version &+= 1
            let w = Array(s.waiters.values)
            s.waiters.removeAll()
            return w
        }
        for w in woken { w.resume() }
    }

    var version: UInt64 { state.withLock { $0.version } }
    var screen: Screen { state.withLock { $0.terminal.screen } }
    var terminal: Terminal { state.withLock { $0.terminal } }

    func takeText() -> [TextChunk] {
        state.withLock { s in let b = s.backlog; s.backlog.removeAll(); return b }
    }

    /// Returns when output arrived after `version` (true), the deadline passed or the task was cancelled (false).
    func waitForOutput(after version: UInt64, until deadline: Timestamp) async -> Bool {
        if self.version != version { return true }
        if Task.isCancelled || clock.now() >= deadline { return false }
        let id = state.withLock { s -> UInt64 in s.nextWaiter += 1; return s.nextWaiter }
        let clock = self.clock
        let timer = Task { [weak self] in
            try? await clock.sleep(until: deadline)
            self?.wake(id)
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let ready = state.withLock { s -> Bool in
                    if s.version != version || Task.isCancelled { return true }
                    s.waiters[id] = c
                    return false
                }
                if ready { c.resume() }
            }
        } onCancel: {
            wake(id)
        }
        timer.cancel()
        return self.version != version
    }

    private func wake(_ id: UInt64) {
        state.withLock { $0.waiters.removeValue(forKey: id) }?.resume()
    }
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
    /// Capture offset up to which the text stream has been read by `expect`.
    public private(set) var readOffset: UInt64
    public let startOffset: UInt64

    public init(capture: SerialCapture, clock: any AgentClock, from offset: UInt64? = nil,
                write: @escaping @Sendable ([UInt8]) throws -> Void) {
        let start = offset ?? capture.endOffset
        self.capture = capture
        self.clock = clock
        startOffset = start
        readOffset = start
        writer = write
        feed = ConsoleFeed(capture: capture, from: start, clock: clock)
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
    /// at once (iPXE under emulation turned "menu.ipxe" into "menipxe"). False when an echo did not come.
    public func typeEchoed(_ text: String, chunkSize: Int = 4, timeout: Duration) async throws -> Bool {
        let bytes = Array(text.utf8)
        var i = 0
        while i < bytes.count {
            let part = Array(bytes[i..<Swift.min(bytes.count, i + chunkSize)])
            try send(part)
            do { _ = try await expect([.literal(String(decoding: part, as: UTF8.self))], timeout: timeout) } catch {
                if error == .cancelled { throw error }
                return false
            }
            i += chunkSize
        }
        return true
    }

    /// Forgets text not yet read (after a key that makes earlier output irrelevant).
    public func skipUnread() {
        pending.removeAll()
        pendingIndex = 0
        _ = feed.takeText()
        readOffset = feed.terminal.offset
    }

    /// Waits for the first of `patterns` in the text stream after what earlier waits consumed.
    public func expect(_ patterns: [Pattern], timeout: Duration) async throws(ConsoleWaitError) -> Match {
        var matcher: StreamMatcher
        do { matcher = try StreamMatcher(patterns) } catch { preconditionFailure("patterns are validated with the spec: \(error)") }
        return try await expect(with: &matcher, timeout: timeout)
    }

    public func expect(with matcher: inout StreamMatcher, timeout: Duration) async throws(ConsoleWaitError) -> Match {
        let deadline = clock.now() + timeout
        while true {
            while !pending.isEmpty {
                let chunk = pending[0]
                if let (match, next) = matcher.scan(chunk, from: pendingIndex) {
                    pendingIndex = next
                    if pendingIndex >= chunk.bytes.count { pending.removeFirst(); pendingIndex = 0 }
                    readOffset = match.end
                    return match
                }
                if let last = chunk.offsets.last { readOffset = last + 1 }
                pending.removeFirst()
                pendingIndex = 0
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
