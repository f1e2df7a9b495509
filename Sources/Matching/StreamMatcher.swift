import Terminal

/// What to wait for on the console.
public enum Pattern: Sendable, Hashable, CustomStringConvertible {
    case literal(String)
    case regex(String)

    public var description: String {
        switch self {
        case .literal(let s): s.debugDescription
        case .regex(let r): "/\(r)/"
        }
    }
}

/// Where a pattern matched: capture offsets of its first byte and just past its last.
public struct Match: Sendable, Equatable {
    public var patternIndex: Int
    public var start: UInt64
    public var end: UInt64
    public var text: String
}

/// Waits for the first of several patterns in a stream of text fed chunk by chunk. All patterns
/// are compiled into one Thompson NFA, run as a lazily built DFA: one table lookup per byte, so
/// the cost is linear in the bytes seen however long the log grows and wherever chunks split a
/// match. Only when the DFA reports a match is the NFA run (over the recent text) to find the
/// leftmost start and the pattern, with the same answer a Pike VM would give from the start.
public struct StreamMatcher: Sendable {
    public let patterns: [Pattern]
    private let program: [Instruction]
    private let starts: [Int]
    /// The byte length of the only pattern when it is a literal (its start needs no search).
    private let singleLiteralLength: Int?
    private var dfa: LazyDFA
    private var state: Int32
    /// The byte before the first one scanned (or before the last reset): `^` looks at it.
    private var previous: UInt8 = 0x0a
    /// Text bytes fed so far.
    public private(set) var position: UInt64 = 0
    /// Position from which a match may start (the last match or reset).
    private var resetPosition: UInt64 = 0
    private var byteBeforeReset: UInt8 = 0x0a
    /// The most recent text with capture offsets, to give back a match's text and start.
    private var history = TextChunk()
    private var historyStart: UInt64 = 0
    static let windowSize = 4096

    public init(_ patterns: [Pattern]) throws(PatternError) {
        self.patterns = patterns
        if patterns.count == 1, case .literal(let text) = patterns[0] { singleLiteralLength = text.utf8.count } else { singleLiteralLength = nil }
        var compiler = RegexCompiler()
        var starts: [Int] = []
        for (k, p) in patterns.enumerated() {
            let node: RegexNode
            switch p {
            case .literal(let s):
                guard !s.isEmpty else { throw PatternError(pattern: s, position: 0, message: "an empty literal would match everywhere") }
                guard s.utf8.count <= RegexParser.maxPatternBytes else {
                    throw PatternError(pattern: String(s.prefix(40)) + "…", position: 0,
                                       message: "patterns are limited to \(RegexParser.maxPatternBytes) bytes, this one has \(s.utf8.count)")
                }
                node = .concat(s.utf8.map { .set(.of($0)) })
            case .regex(let r):
                var parser = RegexParser(r)
                node = try parser.parse()
            }
            starts.append(compiler.program.count)
            // Each pattern is its own program ending in its own match instruction.
            try compiler.compile(node, pattern: p.description)
            _ = compiler.emit(.match(k))
        }
        program = compiler.program
        self.starts = starts
        dfa = LazyDFA(program: program, starts: starts)
        state = dfa.start(after: 0x0a)
    }

    /// Scans `chunk.bytes[from...]`; on the first match returns it and the index just past it,
    /// so the caller can hand the rest of the chunk to whatever it waits for next.
    /// `onMatchEnd` runs the moment the match's last byte is seen, before the work of finding
    /// where it began: a key answering a prompt goes out without waiting for that.
    public mutating func scan(_ chunk: TextChunk, from: Int = 0, onMatchEnd: (() -> Void)? = nil) -> (match: Match, next: Int)? {
        let n = chunk.bytes.count
        guard from < n else { return nil }
        var i = from
        var matchedAt = -1
        var s = state
        chunk.bytes.withUnsafeBufferPointer { bytes in
            while i < n {
                let (stopped, next) = dfa.run(from: s, bytes, i)
                s = next.state
                i = stopped
                if next.matched { matchedAt = i; i += 1; break }
                if i < n {
                    // A transition not built yet.
                    let t = dfa.transition(from: s, on: bytes[i])
                    s = t.state
                    if t.matched { matchedAt = i; i += 1; break }
                    i += 1
                }
            }
        }
        let scannedEnd = i
        remember(chunk, from..<scannedEnd)
        position += UInt64(scannedEnd - from)
        previous = chunk.bytes[scannedEnd - 1]
        guard matchedAt >= 0 else {
            state = s
            return nil
        }
        onMatchEnd?()
        let match = locateMatch(endOffset: chunk.offset(at: matchedAt) + 1, dfaPattern: dfa.matchedPattern(s))
        // After a match the matcher starts fresh: the next wait must not see a half-match.
        resetPosition = position
        byteBeforeReset = previous
        state = dfa.start(after: previous)
        return (match, scannedEnd)
    }

    /// The same patterns with nothing scanned, keeping the DFA states built so far: a wait for
    /// the same prompts again (every iteration of a run) neither recompiles nor rebuilds them.
    public func fresh() -> StreamMatcher {
        var m = self
        m.position = 0
        m.resetPosition = 0
        m.history = TextChunk()
        m.historyStart = 0
        m.reset()
        return m
    }

    /// Forgets partial progress (the next scan starts fresh, as at the start of a line).
    public mutating func reset() {
        previous = 0x0a
        resetPosition = position
        byteBeforeReset = 0x0a
        state = dfa.start(after: 0x0a)
    }

    private mutating func remember(_ chunk: TextChunk, _ range: Range<Int>) {
        let keep = StreamMatcher.windowSize
        if range.count >= keep {
            history = TextChunk()
            history.append(chunk, (range.upperBound - keep)..<range.upperBound)
            historyStart = position + UInt64(range.count - keep)
            return
        }
        history.append(chunk, range)
        if history.bytes.count > 2 * keep {
            let drop = history.bytes.count - keep
            history.removeFirst(drop)
            historyStart += UInt64(drop)
        }
    }

    /// Runs the NFA over the remembered text from the reset point (or as far back as remembered)
    /// to the end of the match the DFA found, for its start and pattern.
    private func locateMatch(endOffset: UInt64, dfaPattern: Int) -> Match {
        let from = max(resetPosition, historyStart, position > UInt64(StreamMatcher.windowSize) ? position - UInt64(StreamMatcher.windowSize) : 0)
        let first = Int(from - historyStart)
        let bytes = history.bytes
        // One literal: it can only have begun its own length before the end.
        if let length = singleLiteralLength, bytes.count - first >= length {
            let startIndex = bytes.count - length
            return Match(patternIndex: 0, start: history.offset(at: startIndex), end: endOffset,
                         text: String(decoding: bytes[startIndex...], as: UTF8.self))
        }
        var stack: [Int] = []
        stack.reserveCapacity(program.count)
        let before: UInt8 = from == resetPosition ? byteBeforeReset : (first > 0 ? bytes[first - 1] : 0)
        var current = ThreadList(capacity: program.count)
        var next = ThreadList(capacity: program.count)
        var prev = before
        var found: (Int, Int)?
        for i in first..<bytes.count {
            for s in starts { _ = addChecking(&current, s, start: i, before: prev, stack: &stack) }
            next.clear()
            let b = bytes[i]
            for t in 0..<current.count {
                let (pc, start) = current.thread(t)
                if case .byte(let set) = program[pc], set.contains(b),
                   let m = addChecking(&next, pc + 1, start: Int(start), before: b, stack: &stack), found == nil {
                    found = (m.0, m.1)
                }
            }
            if found != nil { break }
            swap(&current, &next)
            prev = b
        }
        // A match that began before the remembered text is reported from where the text starts.
        let (k, startIndex) = found ?? (dfaPattern, first)
        return Match(patternIndex: k, start: history.offset(at: startIndex), end: endOffset,
                     text: String(decoding: bytes[startIndex...], as: UTF8.self))
    }

    /// Adds the thread at `pc` and everything reachable without consuming a byte; returns the
    /// first match instruction reached.
    private func addChecking(_ list: inout ThreadList, _ pc: Int, start: Int, before: UInt8, stack: inout [Int]) -> (Int, Int)? {
        stack.removeAll(keepingCapacity: true)
        stack.append(pc)
        var match: (Int, Int)?
        while let p = stack.popLast() {
            guard p < program.count, !list.contains(p) else { continue }
            list.mark(p)
            switch program[p] {
            case .byte:
                list.append(p, start: UInt64(start))
            case .jump(let to):
                stack.append(to)
            case .split(let a, let b):
                stack.append(b); stack.append(a)
            case .lineStart:
                if before == 0x0a || before == 0x0d { stack.append(p + 1) }
            case .match(let k):
                if match == nil { match = (k, start) }
            }
        }
        return match
    }
}

/// The DFA built on demand from the NFA: a state is the set of byte instructions threads wait
/// on (after every jump, split and `^` is followed), plus the pattern that matched on entering
/// it. Transitions are computed the first time a byte is seen in a state and cached in a
/// 256-wide table; when the cache grows past its bound it is dropped and rebuilt.
struct LazyDFA: Sendable {
    struct Next { var state: Int32; var matched: Bool }
    struct Key: Hashable { var pcs: [Int32]; var match: Int32 }

    private let program: [Instruction]
    private let starts: [Int]
    /// states × 256 entries: -1 unknown, else target << 1 | matched.
    private var table: [Int32] = []
    private var keys: [Key] = []
    private var index: [Key: Int32] = [:]
    private var startAfterNewline: Int32 = -1
    private var startAfterOther: Int32 = -1
    static let maxStates = 4096

    init(program: [Instruction], starts: [Int]) {
        self.program = program
        self.starts = starts
    }

    /// The state before any byte, given the byte before it (`^` matches after CR or LF).
    mutating func start(after b: UInt8) -> Int32 {
        let newline = b == 0x0a || b == 0x0d
        if newline, startAfterNewline >= 0 { return startAfterNewline }
        if !newline, startAfterOther >= 0 { return startAfterOther }
        var pcs: [Int32] = []
        var seen = Set<Int>()
        for s in starts { _ = closure(s, before: b, into: &pcs, seen: &seen) }
        let id = intern(Key(pcs: pcs.sorted(), match: -1))
        if newline { startAfterNewline = id } else { startAfterOther = id }
        return id
    }

    func matchedPattern(_ s: Int32) -> Int { Int(keys[Int(s)].match) }

    /// Follows cached transitions from `i` on; stops at the end, at a match (the index of the
    /// matching byte) or at a transition not built yet (its index).
    @inline(__always)
    func run(from s: Int32, _ bytes: UnsafeBufferPointer<UInt8>, _ from: Int) -> (Int, Next) {
        table.withUnsafeBufferPointer { table in
            var s = s
            var i = from
            while i < bytes.count {
                let e = table[Int(s) &<< 8 | Int(bytes[i])]
                if e < 0 { return (i, Next(state: s, matched: false)) }
                if e == s &<< 1 {
                    // A state that stays put on most bytes (the search for a first byte): the
                    // lookups no longer depend on each other, so they run back to back.
                    let row = Int(s) &<< 8
                    i += 1
                    while i < bytes.count && table[row | Int(bytes[i])] == e { i += 1 }
                    continue
                }
                s = e &>> 1
                if e & 1 != 0 { return (i, Next(state: s, matched: true)) }
                i += 1
            }
            return (i, Next(state: s, matched: false))
        }
    }

    /// Builds (and caches) the transition from `s` on `b`.
    mutating func transition(from s: Int32, on b: UInt8) -> Next {
        var pcs: [Int32] = []
        var seen = Set<Int>()
        var match: Int32 = -1
        for pc in keys[Int(s)].pcs {
            if case .byte(let set) = program[Int(pc)], set.contains(b),
               let k = closure(Int(pc) + 1, before: b, into: &pcs, seen: &seen), match < 0 {
                match = Int32(k)
            }
        }
        // Threads that could start at the next byte.
        for st in starts { _ = closure(st, before: b, into: &pcs, seen: &seen) }
        var source = s
        if keys.count >= LazyDFA.maxStates {
            // Drop the cache but keep the state we are in.
            let current = keys[Int(s)]
            table = []; keys = []; index = [:]; startAfterNewline = -1; startAfterOther = -1
            source = intern(current)
        }
        let target = intern(Key(pcs: pcs.sorted(), match: match))
        table[Int(source) << 8 | Int(b)] = target << 1 | (match >= 0 ? 1 : 0)
        return Next(state: target, matched: match >= 0)
    }

    private mutating func intern(_ key: Key) -> Int32 {
        if let id = index[key] { return id }
        let id = Int32(keys.count)
        keys.append(key)
        index[key] = id
        table.append(contentsOf: repeatElement(-1, count: 256))
        return id
    }

    /// Adds the byte instructions reachable from `pc` without consuming; returns the first match.
    private func closure(_ pc: Int, before: UInt8, into pcs: inout [Int32], seen: inout Set<Int>) -> Int? {
        var stack = [pc]
        var match: Int?
        while let p = stack.popLast() {
            guard p < program.count, seen.insert(p).inserted else { continue }
            switch program[p] {
            case .byte: pcs.append(Int32(p))
            case .jump(let to): stack.append(to)
            case .split(let a, let c): stack.append(c); stack.append(a)
            case .lineStart: if before == 0x0a || before == 0x0d { stack.append(p + 1) }
            case .match(let k): if match == nil { match = k }
            }
        }
        return match
    }
}

/// The NFA's active threads: program counters in priority order with their start positions,
/// and a generation-stamped membership set so each pc is added once per step.
struct ThreadList: Sendable {
    private var pcs: [Int] = []
    private var starts: [UInt64] = []
    private var stamp: [UInt32] = []
    private var generation: UInt32 = 1
    private(set) var count = 0

    init(capacity: Int = 0) {
        pcs = Array(repeating: 0, count: capacity)
        starts = Array(repeating: 0, count: capacity)
        stamp = Array(repeating: 0, count: capacity)
    }

    @inline(__always) func contains(_ pc: Int) -> Bool { stamp[pc] == generation }
    @inline(__always) mutating func mark(_ pc: Int) { stamp[pc] = generation }
    @inline(__always) mutating func append(_ pc: Int, start: UInt64) { pcs[count] = pc; starts[count] = start; count += 1 }
    @inline(__always) func thread(_ i: Int) -> (Int, UInt64) { (pcs[i], starts[i]) }

    mutating func clear() {
        count = 0
        generation &+= 1
        if generation == 0 { for i in stamp.indices { stamp[i] = 0 }; generation = 1 }
    }
}
