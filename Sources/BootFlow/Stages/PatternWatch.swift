import AgentClock
import Matching
import Serial
import Synchronization
import Text

/// `fail_on:` and `watch:` over a whole iteration: a session of its own reads everything the DUT
/// prints from the iteration's start; a fail_on match ends the boot's current wait at once.
final class PatternWatch: Sendable {
    struct State {
        /// Where each stage's text begins: where the stage before it stopped reading. A hit
        /// belongs to the stage whose text it is in, whenever the watch gets to see it (a line
        /// that came between two stages is the later one's, as the stage logs have it).
        var boundaries: [(offset: UInt64, stage: String)] = [(0, "power")]
        var failHit: (pattern: String, hit: PatternHit)?
        var watched: [[PatternHit]]
        /// Match ends of watch hits whose line had not ended when they were seen (finished when
        /// the results are read, from the capture).
        var unfinished: [Int: [Int: UInt64]] = [:]
        var counts: [Int]
        /// Why the patterns could not be watched at all: the iteration fails with it (never a
        /// watch that silently sees nothing).
        var setupError: String?
        /// Matches the watch has taken from the stream (for tests that need to know it saw one).
        var seen = 0
    }
    let state: Mutex<State>
    let failOn: [Pattern]
    let watch: [Pattern]
    private let task: Mutex<Task<Void, Never>?> = Mutex(nil)

    init(failOn: [Pattern], watch: [Pattern]) {
        self.failOn = failOn; self.watch = watch
        state = Mutex(State(watched: Array(repeating: [], count: watch.count), counts: Array(repeating: 0, count: watch.count)))
    }

    /// A stage begins; its text starts at `offset` (what the session had read so far).
    func enter(_ stage: String, at offset: UInt64) {
        state.withLock { $0.boundaries.append((offset, stage)) }
    }
    /// The stage in progress turns out to be another one: its text is that one's.
    func relabel(_ stage: String) {
        state.withLock { $0.boundaries[$0.boundaries.count - 1].stage = stage }
    }
    var stage: String { state.withLock { $0.boundaries.last!.stage } }

    var failHit: (pattern: String, hit: PatternHit)? {
        state.withLock { s in
            guard var f = s.failHit else { return nil }
            f.hit.stage = PatternWatch.stage(of: f.hit.captureOffset, in: s.boundaries)
            return f
        }
    }

    static func stage(of offset: UInt64, in boundaries: [(offset: UInt64, stage: String)]) -> String {
        boundaries.last { $0.offset <= offset }?.stage ?? boundaries[0].stage
    }
    var setupError: String? { state.withLock { $0.setupError } }
    var seen: Int { state.withLock { $0.seen } }

    /// Starts reading from `offset`; `onFail` runs once, at the first fail_on match.
    func start(capture: SerialCapture, clock: any AgentClock, from offset: UInt64, startedAt: Timestamp, onFail: @escaping @Sendable () -> Void) {
        let patterns = failOn + watch
        guard !patterns.isEmpty else { return }
        let failCount = failOn.count
        // Together they must fit the matcher's budget (the spec was checked for that when posted);
        // each is matched on its own, so a short pattern never hides a longer one that starts the
        // same way ("AMD-Vi:" watched beside "AMD-Vi: Error" in fail_on: the error was counted,
        // not failed on). fail_on patterns share a matcher: any of them fails the iteration.
        var matchers: [(matcher: StreamMatcher, first: Int)] = []
        do {
            _ = try StreamMatcher(patterns)
            if !failOn.isEmpty { matchers.append((try StreamMatcher(failOn), 0)) }
            for (i, p) in watch.enumerated() { matchers.append((try StreamMatcher([p]), failCount + i)) }
        } catch {
            state.withLock { $0.setupError = error.message }
            onFail()
            return
        }
        let t = Task.detached { [self] in
            let session = ConsoleSession(capture: capture, clock: clock, from: offset) { _ in }
            var matchers = matchers
            while !Task.isCancelled {
                guard let chunks = try? await session.nextText(timeout: .seconds(86_400)) else { continue }
                for chunk in chunks {
                    // Taken in the order they ended in the text, whichever matcher found them.
                    var found: [(m: Match, index: Int)] = []
                    for k in matchers.indices {
                        var from = 0
                        while let (m, next) = matchers[k].matcher.scan(chunk, from: from) {
                            from = next
                            found.append((m, matchers[k].first + m.patternIndex))
                        }
                    }
                    for (m, index) in found.sorted(by: { $0.m.end < $1.m.end }) { await take(m, index: index) }
                }
            }
            func take(_ m: Match, index: Int) async {
                state.withLock { $0.seen += 1 }
                let at = capture.arrivalTime(of: m.end - 1) ?? clock.now()
                var (line, ended) = PatternWatch.line(capture, m)
                if index < failCount, !ended, state.withLock({ $0.failHit == nil }) {
                    // The failure names the whole line: its end is waited for (a short bound,
                    // on a session of its own so the watch itself misses nothing).
                    (line, ended) = await PatternWatch.finishLine(capture, clock, m)
                }
                let hit = PatternHit(line: line, at: at, secondsIntoIteration: max(0, (at - startedAt).seconds),
                                     stage: "", captureOffset: m.start)
                if index < failCount {
                    let first = state.withLock { s -> Bool in
                        guard s.failHit == nil else { return false }
                        s.failHit = (patterns[index].description, hit)
                        return true
                    }
                    if first { onFail() }
                } else {
                    let i = index - failCount
                    state.withLock { s in
                        s.counts[i] += 1
                        if s.watched[i].count < 20 {
                            if !ended { s.unfinished[i, default: [:]][s.watched[i].count] = m.end }
                            s.watched[i].append(hit)
                        }
                    }
                }
            }
        }
        task.withLock { $0 = t }
    }

    func stop() { task.withLock { $0?.cancel() } }

    /// What each watch pattern saw; a hit whose line was still arriving is given the rest of
    /// it from the capture as it is now.
    func results(capture: SerialCapture) -> [WatchResult] {
        state.withLock { s in
            for (i, hits) in s.unfinished {
                for (j, end) in hits {
                    let h = s.watched[i][j]
                    s.watched[i][j].line = PatternWatch.line(capture, start: h.captureOffset, end: end, text: h.line).text
                }
            }
            s.unfinished = [:]
            for i in s.watched.indices {
                for j in s.watched[i].indices { s.watched[i][j].stage = PatternWatch.stage(of: s.watched[i][j].captureOffset, in: s.boundaries) }
            }
            return watch.indices.map { WatchResult(pattern: watch[$0].description, count: s.counts[$0], hits: s.watched[$0]) }
        }
    }

    /// How long a fail_on hit waits for the rest of its line before it is reported as it is.
    static let lineEndBound: Duration = .seconds(1)
    /// The longest line a hit reports past its match.
    static let lineTail = 300

    /// The line a match is on: back to the previous line break, forward to the next one if it has
    /// arrived; `ended` tells whether it had.
    static func line(_ capture: SerialCapture, _ m: Match) -> (text: String, ended: Bool) {
        line(capture, start: m.start, end: m.end, text: m.text)
    }

    static func line(_ capture: SerialCapture, start mStart: UInt64, end mEnd: UInt64, text: String) -> (text: String, ended: Bool) {
        let from = mStart > 300 ? mStart - 300 : 0
        var bytes: [UInt8] = []
        if case .data(_, let b, _) = capture.readPersisted(from: from, limit: Int(mEnd - from) + lineTail) { bytes = b }
        let matchEnd = Int(mEnd - from)
        guard matchEnd <= bytes.count else { return (text, false) }
        var start = matchEnd - 1
        while start > 0, bytes[start - 1] != 0x0a { start -= 1 }
        var end = matchEnd
        while end < bytes.count, bytes[end] != 0x0a, bytes[end] != 0x0d { end += 1 }
        let line = String(decoding: bytes[start..<end], as: UTF8.self).trimming("\r\n ")
        return (line, end < bytes.count || end - matchEnd >= lineTail)
    }

    /// Waits (at most `lineEndBound`) for the line break after a match, then reads its line.
    static func finishLine(_ capture: SerialCapture, _ clock: any AgentClock, _ m: Match) async -> (text: String, ended: Bool) {
        let session = ConsoleSession(capture: capture, clock: clock, from: m.end) { _ in }
        _ = try? await session.expect([.literal("\n"), .literal("\r")], timeout: lineEndBound)
        return line(capture, m)
    }
}
