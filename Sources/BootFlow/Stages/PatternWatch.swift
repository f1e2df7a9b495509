import AgentClock
import Matching
import Serial
import Synchronization

/// `fail_on:` and `watch:` over a whole iteration: a session of its own reads everything the DUT
/// prints from the iteration's start; a fail_on match ends the boot's current wait at once.
final class PatternWatch: Sendable {
    struct State {
        var stage = "power"
        var failHit: (pattern: String, hit: PatternHit)?
        var watched: [[PatternHit]]
        var counts: [Int]
        /// Why the patterns could not be watched at all: the iteration fails with it (never a
        /// watch that silently sees nothing).
        var setupError: String?
    }
    let state: Mutex<State>
    let failOn: [Pattern]
    let watch: [Pattern]
    private let task: Mutex<Task<Void, Never>?> = Mutex(nil)

    init(failOn: [Pattern], watch: [Pattern]) {
        self.failOn = failOn; self.watch = watch
        state = Mutex(State(watched: Array(repeating: [], count: watch.count), counts: Array(repeating: 0, count: watch.count)))
    }

    var stage: String {
        get { state.withLock { $0.stage } }
        set { state.withLock { $0.stage = newValue } }
    }
    var failHit: (pattern: String, hit: PatternHit)? { state.withLock { $0.failHit } }
    var setupError: String? { state.withLock { $0.setupError } }

    /// Starts reading from `offset`; `onFail` runs once, at the first fail_on match.
    func start(capture: SerialCapture, clock: any AgentClock, from offset: UInt64, startedAt: Timestamp, onFail: @escaping @Sendable () -> Void) {
        let patterns = failOn + watch
        guard !patterns.isEmpty else { return }
        let failCount = failOn.count
        let compiled: StreamMatcher
        do { compiled = try StreamMatcher(patterns) } catch {
            state.withLock { $0.setupError = error.message }
            onFail()
            return
        }
        let t = Task.detached { [self] in
            let session = ConsoleSession(capture: capture, clock: clock, from: offset) { _ in }
            var matcher = compiled
            while !Task.isCancelled {
                guard let m = try? await session.expect(with: &matcher, timeout: .seconds(86_400)) else { continue }
                let at = capture.arrivalTime(of: m.end - 1) ?? clock.now()
                let hit = PatternHit(line: PatternWatch.line(capture, m), at: at, secondsIntoIteration: max(0, (at - startedAt).seconds),
                                     stage: stage, captureOffset: m.start)
                if m.patternIndex < failCount {
                    let first = state.withLock { s -> Bool in
                        guard s.failHit == nil else { return false }
                        s.failHit = (patterns[m.patternIndex].description, hit)
                        return true
                    }
                    if first { onFail() }
                } else {
                    let i = m.patternIndex - failCount
                    state.withLock { s in
                        s.counts[i] += 1
                        if s.watched[i].count < 20 { s.watched[i].append(hit) }
                    }
                }
            }
        }
        task.withLock { $0 = t }
    }

    func stop() { task.withLock { $0?.cancel() } }

    var results: [WatchResult] {
        state.withLock { s in watch.indices.map { WatchResult(pattern: watch[$0].description, count: s.counts[$0], hits: s.watched[$0]) } }
    }

    /// The line a match is on: back to the previous line break, forward to the next one if it has arrived.
    static func line(_ capture: SerialCapture, _ m: Match) -> String {
        let from = m.start > 300 ? m.start - 300 : 0
        var bytes: [UInt8] = []
        if case .data(_, let b, _) = capture.readPersisted(from: from, limit: Int(m.end - from) + 300) { bytes = b }
        let matchEnd = Int(m.end - from)
        guard matchEnd <= bytes.count else { return m.text }
        var start = matchEnd - 1
        while start > 0, bytes[start - 1] != 0x0a { start -= 1 }
        var end = matchEnd
        while end < bytes.count, bytes[end] != 0x0a, bytes[end] != 0x0d { end += 1 }
        return String(decoding: bytes[start..<end], as: UTF8.self).trimmingCharacters(in: "\r\n ")
    }
}
