/// A small regular-expression compiler for stream matching. Patterns are matched on bytes with
/// a Thompson NFA (no backtracking), so the time is linear in the input whatever the pattern.
///
/// Supported: literals, `.` (any byte but newline), `[...]` classes with ranges and `^`
/// negation, `\d \w \s \D \W \S`, escapes `\n \r \t \xHH` and escaped punctuation, groups
/// `(...)` and `(?:...)`, alternation `|`, `* + ?`, `{m}`, `{m,}`, `{m,n}` (n ≤ 1000), `^` at
/// the start of a line, and a leading `(?i)` for case-insensitive ASCII.
/// Not supported (rejected with a message): `$` (a stream has no end; match `\r` or `\n`),
/// backreferences, lookaround.
public struct PatternError: Error, Sendable, Equatable, CustomStringConvertible {
    public var pattern: String
    public var position: Int
    public var message: String
    public var description: String { "pattern \(pattern.debugDescription) at \(position): \(message)" }
}

struct ByteSet: Hashable, Sendable {
    var bits: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)

    static func == (a: ByteSet, b: ByteSet) -> Bool { a.bits == b.bits }
    func hash(into h: inout Hasher) { h.combine(bits.0); h.combine(bits.1); h.combine(bits.2); h.combine(bits.3) }

    @inline(__always) func contains(_ b: UInt8) -> Bool {
        let bit = UInt64(1) << UInt64(b & 63)
        switch b >> 6 {
        case 0: return bits.0 & bit != 0
        case 1: return bits.1 & bit != 0
        case 2: return bits.2 & bit != 0
        default: return bits.3 & bit != 0
        }
    }

    mutating func insert(_ b: UInt8) {
        let bit = UInt64(1) << UInt64(b & 63)
        switch b >> 6 {
        case 0: bits.0 |= bit
        case 1: bits.1 |= bit
        case 2: bits.2 |= bit
        default: bits.3 |= bit
        }
    }

    mutating func insert(_ range: ClosedRange<UInt8>) { for b in range { insert(b) } }
    mutating func formUnion(_ o: ByteSet) { bits = (bits.0 | o.bits.0, bits.1 | o.bits.1, bits.2 | o.bits.2, bits.3 | o.bits.3) }
    var inverted: ByteSet { var s = ByteSet(); s.bits = (~bits.0, ~bits.1, ~bits.2, ~bits.3); return s }

    static func of(_ b: UInt8) -> ByteSet { var s = ByteSet(); s.insert(b); return s }
    static var digits: ByteSet { var s = ByteSet(); s.insert(UInt8(ascii: "0")...UInt8(ascii: "9")); return s }
    static var word: ByteSet {
        var s = digits
        s.insert(UInt8(ascii: "a")...UInt8(ascii: "z")); s.insert(UInt8(ascii: "A")...UInt8(ascii: "Z")); s.insert(UInt8(ascii: "_"))
        return s
    }
    static var space: ByteSet { var s = ByteSet(); for b: UInt8 in [0x20, 0x09, 0x0a, 0x0d, 0x0b, 0x0c] { s.insert(b) }; return s }
    static var anyButNewline: ByteSet { ByteSet.of(0x0a).inverted }

    func caseFolded() -> ByteSet {
        var s = self
        for b in UInt8(ascii: "a")...UInt8(ascii: "z") where contains(b) || contains(b - 32) { s.insert(b); s.insert(b - 32) }
        return s
    }
}

indirect enum RegexNode {
    case set(ByteSet)
    case concat([RegexNode])
    case alternation([RegexNode])
    case repeated(RegexNode, min: Int, max: Int?)
    case lineStart
}

enum Instruction: Sendable {
    case byte(ByteSet)
    case split(Int, Int)  // first alternative has priority
    case jump(Int)
    case lineStart
    case match(Int)
}

struct RegexParser {
    let pattern: String
    let bytes: [UInt8]
    var i = 0
    var ignoreCase = false
    var depth = 0

    init(_ pattern: String) {
        self.pattern = pattern
        bytes = Array(pattern.utf8)
    }

    func fail(_ message: String) -> PatternError { PatternError(pattern: pattern, position: i, message: message) }

    /// Longest pattern accepted, checked before parsing: a prompt or a line to expect is short, and
    /// parsing a megabyte of pattern costs tens of megabytes on a board with 256 MB.
    public static let maxPatternBytes = 4096

    mutating func parse() throws(PatternError) -> RegexNode {
        guard bytes.count <= RegexParser.maxPatternBytes else {
            throw PatternError(pattern: String(pattern.prefix(40)) + "…", position: 0,
                               message: "patterns are limited to \(RegexParser.maxPatternBytes) bytes, this one has \(bytes.count)")
        }
        if bytes.starts(with: Array("(?i)".utf8)) { ignoreCase = true; i = 4 }
        let node = try alternation()
        if i < bytes.count { throw fail("unbalanced ')'") }
        if matchesEmpty(node) { throw fail("the pattern matches the empty string, which would match everywhere") }
        // Counted on the tree, before compiling: repeats of empty groups emit no instructions, so a
        // budget on instructions alone never stops `(?:){1000}{1000}{1000}`.
        guard RegexParser.expandedSize(node) <= RegexCompiler.maxInstructions else {
            throw PatternError(pattern: pattern, position: 0,
                               message: "the pattern is too large once repeats are expanded (limit \(RegexCompiler.maxInstructions) steps)")
        }
        return node
    }

    /// Compile steps the node costs with every repeat expanded, counting empty nodes as one
    /// (saturating, so it never overflows on a 32-bit Int).
    static func expandedSize(_ n: RegexNode) -> Int {
        let cap = RegexCompiler.maxInstructions + 1
        func add(_ a: Int, _ b: Int) -> Int { min(cap, a + b) }
        func mul(_ a: Int, _ b: Int) -> Int { a == 0 || b == 0 ? 0 : (a > cap / b ? cap : min(cap, a * b)) }
        switch n {
        case .set, .lineStart: return 1
        case .concat(let parts): return parts.reduce(1) { add($0, expandedSize($1)) }
        case .alternation(let alts): return alts.reduce(1) { add($0, add(2, expandedSize($1))) }
        case .repeated(let inner, let lo, let hi): return add(2, mul(add(1, expandedSize(inner)), max(1, hi ?? lo + 1)))
        }
    }

    func matchesEmpty(_ n: RegexNode) -> Bool {
        switch n {
        case .set: false
        case .lineStart: true
        case .concat(let parts): parts.allSatisfy(matchesEmpty)
        case .alternation(let alts): alts.contains(where: matchesEmpty)
        case .repeated(let inner, let min, _): min == 0 || matchesEmpty(inner)
        }
    }

    mutating func alternation() throws(PatternError) -> RegexNode {
        var alts = [try concatenation()]
        while i < bytes.count && bytes[i] == UInt8(ascii: "|") {
            i += 1
            alts.append(try concatenation())
        }
        return alts.count == 1 ? alts[0] : .alternation(alts)
    }

    mutating func concatenation() throws(PatternError) -> RegexNode {
        var parts: [RegexNode] = []
        while i < bytes.count && bytes[i] != UInt8(ascii: "|") && bytes[i] != UInt8(ascii: ")") {
            var atom = try self.atom()
            atom = try quantifiers(atom)
            parts.append(atom)
        }
        return parts.count == 1 ? parts[0] : .concat(parts)
    }

    mutating func quantifiers(_ node: RegexNode) throws(PatternError) -> RegexNode {
        var node = node
        while i < bytes.count {
            let c = bytes[i]
            if c == UInt8(ascii: "*") { i += 1; node = .repeated(node, min: 0, max: nil) }
            else if c == UInt8(ascii: "+") { i += 1; node = .repeated(node, min: 1, max: nil) }
            else if c == UInt8(ascii: "?") { i += 1; node = .repeated(node, min: 0, max: 1) }
            else if c == UInt8(ascii: "{"), let (lo, hi, next) = braces() {
                guard hi.map({ $0 >= lo }) ?? true else { throw fail("{m,n} needs m ≤ n") }
                guard (hi ?? lo) <= 1000 else { throw fail("repeat counts above 1000 are not supported") }
                i = next
                node = .repeated(node, min: lo, max: hi)
            } else { break }
            // A lazy or possessive marker changes nothing when only the first match end matters.
            if i < bytes.count && (bytes[i] == UInt8(ascii: "?") || bytes[i] == UInt8(ascii: "+")) { i += 1 }
        }
        return node
    }

    /// `{m}`, `{m,}`, `{m,n}` at `i`; nil when it is not a quantifier (then `{` is a literal).
    func braces() -> (Int, Int?, Int)? {
        var j = i + 1
        func number() -> Int? {
            var n: Int?
            while j < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[j]) {
                n = min(100_000, (n ?? 0) * 10 + Int(bytes[j] - UInt8(ascii: "0"))); j += 1
            }
            return n
        }
        guard let lo = number() else { return nil }
        if j < bytes.count && bytes[j] == UInt8(ascii: "}") { return (lo, lo, j + 1) }
        guard j < bytes.count && bytes[j] == UInt8(ascii: ",") else { return nil }
        j += 1
        let hi = number()
        guard j < bytes.count && bytes[j] == UInt8(ascii: "}") else { return nil }
        return (lo, hi, j + 1)
    }

    mutating func atom() throws(PatternError) -> RegexNode {
        let c = bytes[i]
        switch c {
        case UInt8(ascii: "("):
            depth += 1
            guard depth < 100 else { throw fail("groups nested too deeply") }
            i += 1
            if i + 1 < bytes.count && bytes[i] == UInt8(ascii: "?") {
                guard bytes[i + 1] == UInt8(ascii: ":") else { throw fail("only (?:...) groups are supported (no lookaround, no named groups)") }
                i += 2
            }
            let inner = try alternation()
            guard i < bytes.count && bytes[i] == UInt8(ascii: ")") else { throw fail("missing ')'") }
            i += 1
            depth -= 1
            return inner
        case UInt8(ascii: "["):
            return .set(try bracket())
        case UInt8(ascii: "."):
            i += 1; return .set(.anyButNewline)
        case UInt8(ascii: "^"):
            i += 1; return .lineStart
        case UInt8(ascii: "$"):
            throw fail("'$' is not supported on a stream; match \\r or \\n instead")
        case UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "?"):
            throw fail("nothing to repeat")
        case UInt8(ascii: "\\"):
            return .set(try escape(inClass: false))
        default:
            i += 1
            let s = ByteSet.of(c)
            return .set(ignoreCase ? s.caseFolded() : s)
        }
    }

    mutating func escape(inClass: Bool) throws(PatternError) -> ByteSet {
        i += 1
        guard i < bytes.count else { throw fail("pattern ends with '\\'") }
        let c = bytes[i]
        i += 1
        switch c {
        case UInt8(ascii: "d"): return .digits
        case UInt8(ascii: "D"): return ByteSet.digits.inverted
        case UInt8(ascii: "w"): return .word
        case UInt8(ascii: "W"): return ByteSet.word.inverted
        case UInt8(ascii: "s"): return .space
        case UInt8(ascii: "S"): return ByteSet.space.inverted
        case UInt8(ascii: "n"): return .of(0x0a)
        case UInt8(ascii: "r"): return .of(0x0d)
        case UInt8(ascii: "t"): return .of(0x09)
        case UInt8(ascii: "e"): return .of(0x1b)
        case UInt8(ascii: "x"):
            guard i + 1 < bytes.count, let hi = hex(bytes[i]), let lo = hex(bytes[i + 1]) else { throw fail("\\x needs two hex digits") }
            i += 2
            return .of(hi << 4 | lo)
        case UInt8(ascii: "b"), UInt8(ascii: "B"), UInt8(ascii: "A"), UInt8(ascii: "z"), UInt8(ascii: "Z"):
            throw fail("anchors other than ^ are not supported on a stream")
        case UInt8(ascii: "1")...UInt8(ascii: "9"):
            throw fail("backreferences are not supported (they cannot run in linear time)")
        default:
            guard c < 0x80, !(c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z")) && !(c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z")) else {
                throw fail("unknown escape \\\(Character(Unicode.Scalar(c)))")
            }
            let s = ByteSet.of(c)
            return ignoreCase ? s.caseFolded() : s
        }
    }

    func hex(_ b: UInt8) -> UInt8? {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): b - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): b - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): b - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    mutating func bracket() throws(PatternError) -> ByteSet {
        i += 1
        var negate = false
        if i < bytes.count && bytes[i] == UInt8(ascii: "^") { negate = true; i += 1 }
        var set = ByteSet()
        var first = true
        while true {
            guard i < bytes.count else { throw fail("missing ']'") }
            let c = bytes[i]
            if c == UInt8(ascii: "]") && !first { i += 1; break }
            first = false
            var lo: UInt8
            if c == UInt8(ascii: "\\") {
                let e = try escape(inClass: true)
                // A class escape (\d) or one byte (\x41); only a single byte can start a range.
                var single: UInt8?
                var n = 0
                for b in 0...255 where e.contains(UInt8(b)) { n += 1; single = UInt8(b); if n > 1 { break } }
                if n != 1 { set.formUnion(e); continue }
                lo = single!
            } else {
                guard c < 0x80 else { throw fail("non-ASCII characters inside [...] are not supported") }
                lo = c
                i += 1
            }
            if i + 1 < bytes.count && bytes[i] == UInt8(ascii: "-") && bytes[i + 1] != UInt8(ascii: "]") {
                i += 1
                var hi = bytes[i]
                if hi == UInt8(ascii: "\\") {
                    let e = try escape(inClass: true)
                    guard let b = (0...255).first(where: { e.contains(UInt8($0)) }) else { throw fail("bad range end") }
                    hi = UInt8(b)
                } else { i += 1 }
                guard lo <= hi else { throw fail("range out of order") }
                set.insert(lo...hi)
            } else {
                set.insert(lo)
            }
        }
        if ignoreCase { set = set.caseFolded() }
        return negate ? set.inverted : set
    }
}

struct RegexCompiler {
    var program: [Instruction] = []
    static let maxInstructions = 20_000

    mutating func emit(_ i: Instruction) -> Int { program.append(i); return program.count - 1 }

    mutating func compile(_ node: RegexNode, pattern: String) throws(PatternError) {
        guard program.count < RegexCompiler.maxInstructions else {
            throw PatternError(pattern: pattern, position: 0, message: "the pattern is too large once repeats are expanded")
        }
        switch node {
        case .set(let s): _ = emit(.byte(s))
        case .lineStart: _ = emit(.lineStart)
        case .concat(let parts): for p in parts { try compile(p, pattern: pattern) }
        case .alternation(let alts):
            var jumps: [Int] = []
            for (k, alt) in alts.enumerated() {
                if k < alts.count - 1 {
                    let split = emit(.split(0, 0))
                    try compile(alt, pattern: pattern)
                    jumps.append(emit(.jump(0)))
                    program[split] = .split(split + 1, program.count)
                } else {
                    try compile(alt, pattern: pattern)
                }
            }
            for j in jumps { program[j] = .jump(program.count) }
        case .repeated(let inner, let min, let max):
            for _ in 0..<min { try compile(inner, pattern: pattern) }
            if let max {
                var splits: [Int] = []
                for _ in min..<max {
                    splits.append(emit(.split(0, 0)))
                    try compile(inner, pattern: pattern)
                }
                for s in splits { program[s] = .split(s + 1, program.count) }
            } else {
                let loop = emit(.split(0, 0))
                try compile(inner, pattern: pattern)
                _ = emit(.jump(loop))
                program[loop] = .split(loop + 1, program.count)
            }
        }
    }
}
