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

/// Waits for the first of several patterns in a stream of text fed chunk by chunk. Every byte
/// is looked at once (KMP automata for literals, a Thompson NFA for expressions), so the cost is
/// linear in the bytes seen however long the log grows and wherever chunks split a match.
public struct StreamMatcher: Sendable {
    public let patterns: [Pattern]
    private var literals: [LiteralAutomaton] = []
    private var literalIndex: [Int] = []
    private var program: [Instruction] = []
    private var regexStarts: [Int] = []
    private var current = ThreadList()
    private var next = ThreadList()
    private var previous: UInt8 = 0x0a  // the stream starts at the start of a line
    /// Text bytes fed so far (the position counter threads record their start in).
    public private(set) var position: UInt64 = 0
    /// Recent bytes and their capture offsets, to give back a match's text and start.
    private var window: [UInt8]
    private var windowOffsets: [UInt64]
    static let windowSize = 4096

    public init(_ patterns: [Pattern]) throws(PatternError) {
        self.patterns = patterns
        window = Array(repeating: 0, count: StreamMatcher.windowSize)
        windowOffsets = Array(repeating: 0, count: StreamMatcher.windowSize)
        var compiler = RegexCompiler()
        for (k, p) in patterns.enumerated() {
            switch p {
            case .literal(let s):
                guard !s.isEmpty else { throw PatternError(pattern: s, position: 0, message: "an empty literal would match everywhere") }
                literals.append(LiteralAutomaton(Array(s.utf8)))
                literalIndex.append(k)
            case .regex(let r):
                var parser = RegexParser(r)
                let node = try parser.parse()
                regexStarts.append(compiler.program.count)
                // Each expression is its own program ending in its own match instruction.
                try compiler.compile(node, pattern: r)
                _ = compiler.emit(.match(k))
            }
        }
        program = compiler.program
        current = ThreadList(capacity: program.count)
        next = ThreadList(capacity: program.count)
    }

    /// Scans `chunk.bytes[from...]`; on the first match returns it and the index just past it,
    /// so the caller can hand the rest of the chunk to whatever it waits for next.
    public mutating func scan(_ chunk: TextChunk, from: Int = 0) -> (match: Match, next: Int)? {
        var i = from
        let bytes = chunk.bytes
        while i < bytes.count {
            let b = bytes[i]
            let slot = Int(position % UInt64(StreamMatcher.windowSize))
            window[slot] = b
            windowOffsets[slot] = chunk.offsets[i]
            if let (k, startPosition) = step(b) {
                let endOffset = chunk.offsets[i] + 1
                return (makeMatch(k, startPosition: startPosition, endOffset: endOffset), i + 1)
            }
            i += 1
        }
        return nil
    }

    /// Forgets partial progress (the next scan starts fresh, as at the start of a line).
    public mutating func reset() {
        for k in literals.indices { literals[k].state = 0 }
        current.clear()
        previous = 0x0a
    }

    private func makeMatch(_ k: Int, startPosition: UInt64, endOffset: UInt64) -> Match {
        let last = position - 1
        let first = max(startPosition, position > UInt64(StreamMatcher.windowSize) ? position - UInt64(StreamMatcher.windowSize) : 0)
        var text: [UInt8] = []
        text.reserveCapacity(Int(position - first))
        for p in first...last { text.append(window[Int(p % UInt64(StreamMatcher.windowSize))]) }
        let startOffset = windowOffsets[Int(first % UInt64(StreamMatcher.windowSize))]
        return Match(patternIndex: k, start: startOffset, end: endOffset, text: String(decoding: text, as: UTF8.self))
    }

    /// Consumes one byte; returns the pattern and start position of a match ending at it.
    @inline(__always)
    private mutating func step(_ b: UInt8) -> (Int, UInt64)? {
        let pos = position
        position += 1
        var found: (Int, UInt64)?
        for k in literals.indices {
            if literals[k].advance(b) {
                let start = position - UInt64(literals[k].needle.count)
                if found == nil || start < found!.1 { found = (literalIndex[k], start) }
            }
        }
        if !program.isEmpty {
            // Threads that could start here, after the ones already running (leftmost wins).
            for s in regexStarts { add(&current, s, start: pos, before: previous) }
            next.clear()
            var regexFound: (Int, UInt64)?
            for t in 0..<current.count {
                let (pc, start) = current.thread(t)
                if case .byte(let set) = program[pc], set.contains(b) {
                    if let m = addChecking(&next, pc + 1, start: start, before: b), regexFound == nil { regexFound = m }
                }
            }
            swap(&current, &next)
            if let r = regexFound, found == nil || r.1 < found!.1 { found = r }
        }
        previous = b
        if found != nil {
            // After a match the matcher starts fresh: the next wait must not see a half-match.
            for k in literals.indices { literals[k].state = 0 }
            current.clear()
        }
        return found
    }

    /// Adds the thread at `pc` and everything reachable without consuming a byte.
    private func add(_ list: inout ThreadList, _ pc: Int, start: UInt64, before: UInt8) {
        _ = addChecking(&list, pc, start: start, before: before)
    }

    private func addChecking(_ list: inout ThreadList, _ pc: Int, start: UInt64, before: UInt8) -> (Int, UInt64)? {
        var stack = [pc]
        var match: (Int, UInt64)?
        while let p = stack.popLast() {
            guard p < program.count, !list.contains(p) else { continue }
            list.mark(p)
            switch program[p] {
            case .byte:
                list.append(p, start: start)
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

/// Knuth–Morris–Pratt over bytes: one table lookup per byte.
struct LiteralAutomaton: Sendable {
    let needle: [UInt8]
    let failure: [Int]
    var state = 0

    init(_ needle: [UInt8]) {
        self.needle = needle
        var f = [Int](repeating: 0, count: needle.count)
        var k = 0
        for i in 1..<max(1, needle.count) {
            while k > 0 && needle[i] != needle[k] { k = f[k - 1] }
            if needle[i] == needle[k] { k += 1 }
            f[i] = k
        }
        failure = f
    }

    /// True when the needle ends at this byte.
    @inline(__always) mutating func advance(_ b: UInt8) -> Bool {
        while state > 0 && needle[state] != b { state = failure[state - 1] }
        if needle[state] == b { state += 1 }
        if state == needle.count {
            state = failure[state - 1]
            return true
        }
        return false
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
