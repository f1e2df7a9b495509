/// Plain text taken out of a chunk of terminal output: printable bytes plus CR, LF and TAB,
/// escape sequences and other controls removed, each byte with its offset in the capture.
/// Offsets are kept as runs (text is mostly contiguous in the capture), not one per byte.
public struct TextChunk: Sendable, Equatable {
    /// `bytes[index...]` sit at `offset`, `offset + 1`, ... up to the next segment.
    public struct Segment: Sendable, Equatable {
        public var index: Int
        public var offset: UInt64
    }

    public var bytes: [UInt8] = []
    public private(set) var segments: [Segment] = []

    public init() {}
    public var isEmpty: Bool { bytes.isEmpty }
    public var string: String { String(decoding: bytes, as: UTF8.self) }

    /// Capture offset of `bytes[i]`.
    public func offset(at i: Int) -> UInt64 {
        var lo = 0, hi = segments.count - 1
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if segments[mid].index <= i { lo = mid } else { hi = mid - 1 }
        }
        return segments[lo].offset + UInt64(i - segments[lo].index)
    }

    /// The first index at or after `from` whose byte sits at or past capture offset `end`
    /// (`bytes.count` when none does): offsets only grow along a chunk, so a binary search.
    public func firstIndex(atOrPast end: UInt64, from: Int = 0) -> Int {
        var lo = from, hi = bytes.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if offset(at: mid) < end { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    /// Capture offset just past the last byte (nil when empty).
    public var endOffset: UInt64? { bytes.isEmpty ? nil : offset(at: bytes.count - 1) + 1 }

    /// One offset per byte (for tests and small chunks; the hot paths use `offset(at:)`).
    public var offsets: [UInt64] {
        get {
            var out: [UInt64] = []
            out.reserveCapacity(bytes.count)
            for (k, s) in segments.enumerated() {
                let end = k + 1 < segments.count ? segments[k + 1].index : bytes.count
                for i in s.index..<end { out.append(s.offset + UInt64(i - s.index)) }
            }
            return out
        }
        set {
            segments.removeAll()
            for (i, o) in newValue.enumerated() { noteOffset(o, forIndex: i) }
        }
    }

    @inline(__always) private mutating func noteOffset(_ offset: UInt64, forIndex i: Int) {
        if let last = segments.last, last.offset &+ UInt64(i - last.index) == offset { return }
        segments.append(Segment(index: i, offset: offset))
    }

    public mutating func append(_ b: UInt8, at offset: UInt64) {
        noteOffset(offset, forIndex: bytes.count)
        bytes.append(b)
    }

    /// Appends bytes that sit one after the other in the capture from `offset` on.
    public mutating func append(_ run: UnsafeBufferPointer<UInt8>, at offset: UInt64) {
        guard !run.isEmpty else { return }
        noteOffset(offset, forIndex: bytes.count)
        bytes.append(contentsOf: run)
    }

    /// Appends `other.bytes[range]` with their offsets.
    public mutating func append(_ other: TextChunk, _ range: Range<Int>) {
        guard !range.isEmpty else { return }
        var k = other.segmentIndex(containing: range.lowerBound)
        var i = range.lowerBound
        while i < range.upperBound {
            let s = other.segments[k]
            let end = min(range.upperBound, k + 1 < other.segments.count ? other.segments[k + 1].index : other.bytes.count)
            noteOffset(s.offset + UInt64(i - s.index), forIndex: bytes.count)
            bytes.append(contentsOf: other.bytes[i..<end])
            i = end
            k += 1
        }
    }

    public mutating func append(contentsOf other: TextChunk) { append(other, 0..<other.bytes.count) }

    /// Drops the first `n` bytes.
    public mutating func removeFirst(_ n: Int) {
        guard n > 0 else { return }
        if n >= bytes.count { bytes.removeAll(keepingCapacity: true); segments.removeAll(keepingCapacity: true); return }
        let k = segmentIndex(containing: n)
        let first = Segment(index: 0, offset: segments[k].offset + UInt64(n - segments[k].index))
        var rest = [first]
        for s in segments[(k + 1)...] { rest.append(Segment(index: s.index - n, offset: s.offset)) }
        segments = rest
        bytes.removeFirst(n)
    }

    private func segmentIndex(containing i: Int) -> Int {
        var lo = 0, hi = segments.count - 1
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if segments[mid].index <= i { lo = mid } else { hi = mid - 1 }
        }
        return lo
    }
}

/// A VT100/ANSI terminal fed incrementally with what the DUT sends: it keeps the screen (for
/// full-screen UIs like the iPXE menu), a plain-text stream (for matching prompts) and a line
/// log (for firmware and kernel messages). Escape sequences may be split anywhere across
/// `feed` calls; malformed or truncated input is absorbed, never fatal.
public struct Terminal: Sendable {
    public private(set) var screen: Screen
    /// Capture offset of the next byte to be fed.
    public private(set) var offset: UInt64
    public private(set) var lines = LineLog()

    enum State: Sendable { case ground, escape, charset, csi, osc, oscEscape }
    private var state = State.ground
    private var params: [Int] = []
    private var param: Int?
    private var privateMarker: UInt8 = 0
    private var intermediate: UInt8 = 0
    private var utf8: [UInt8] = []
    private var utf8Needed = 0
    static let maxParams = 16

    public init(rows: Int = 25, columns: Int = 80, offset: UInt64 = 0) {
        screen = Screen(rows: rows, columns: columns)
        self.offset = offset
    }

    /// Feeds bytes that start at `offset` in the capture (a jump forward, after lost bytes, is allowed).
    @discardableResult
    public mutating func feed(_ bytes: some Collection<UInt8>, at start: UInt64? = nil) -> TextChunk {
        if let start { offset = start }
        var text = TextChunk()
        text.bytes.reserveCapacity(bytes.count)
        if bytes.withContiguousStorageIfAvailable({ feed(buffer: $0, &text) }) == nil {
            Array(bytes).withUnsafeBufferPointer { feed(buffer: $0, &text) }
        }
        return text
    }

    private mutating func feed(buffer: UnsafeBufferPointer<UInt8>, _ text: inout TextChunk) {
        var i = 0
        let n = buffer.count
        while i < n {
            // Fast path: a run of printable ASCII in plain text (most of any boot log) is drawn,
            // logged and passed on as a block.
            if state == .ground && utf8Needed == 0 {
                var j = i
                while j < n && buffer[j] &- 0x20 < 0x5f { j += 1 }
                if j > i {
                    let run = UnsafeBufferPointer(rebasing: buffer[i..<j])
                    screen.put(ascii: run)
                    lines.put(run)
                    text.append(run, at: offset)
                    offset &+= UInt64(j - i)
                    i = j
                    continue
                }
            }
            step(buffer[i], &text)
            offset &+= 1
            i += 1
        }
    }

    private mutating func emitText(_ b: UInt8, _ text: inout TextChunk) {
        text.append(b, at: offset)
    }

    private mutating func step(_ b: UInt8, _ text: inout TextChunk) {
        // CAN and SUB abort any sequence; ESC starts a new one from anywhere (VT100).
        if b == 0x18 || b == 0x1a { state = .ground; return }
        if b == 0x1b && state != .osc {
            flushUTF8(&text)
            state = .escape
            return
        }
        switch state {
        case .ground:
            ground(b, &text)
        case .escape:
            escape(b, &text)
        case .charset:
            state = .ground  // the designated character set is ignored: everything is ASCII/UTF-8
        case .csi:
            csi(b, &text)
        case .osc:
            if b == 0x07 { state = .ground } else if b == 0x1b { state = .oscEscape }
        case .oscEscape:
            state = b == UInt8(ascii: "\\") ? .ground : .osc
        }
    }

    private mutating func ground(_ b: UInt8, _ text: inout TextChunk) {
        if b < 0x20 || b == 0x7f {
            flushUTF8(&text)
            control(b, &text)
            return
        }
        if b < 0x80 {
            flushUTF8(&text)
            screen.put(Unicode.Scalar(b))
            lines.put(b)
            emitText(b, &text)
            return
        }
        // UTF-8: collect the sequence, draw one scalar; malformed sequences draw U+FFFD.
        if b & 0xC0 == 0x80 {
            guard utf8Needed > 0 else { drawReplacement(b, &text); return }
            utf8.append(b)
            emitText(b, &text)
            lines.put(b)
            utf8Needed -= 1
            if utf8Needed == 0 {
                let scalar = String(decoding: utf8, as: UTF8.self).unicodeScalars.first ?? "\u{FFFD}"
                screen.put(scalar)
                utf8.removeAll(keepingCapacity: true)
            }
            return
        }
        flushUTF8(&text)
        let needed = b & 0xE0 == 0xC0 ? 1 : b & 0xF0 == 0xE0 ? 2 : b & 0xF8 == 0xF0 ? 3 : -1
        guard needed > 0 else { drawReplacement(b, &text); return }
        utf8 = [b]
        utf8Needed = needed
        emitText(b, &text)
        lines.put(b)
    }

    private mutating func drawReplacement(_ b: UInt8, _ text: inout TextChunk) {
        screen.put("\u{FFFD}")
    }

    /// A sequence cut short by a control or a new sequence still takes its cell.
    private mutating func flushUTF8(_ text: inout TextChunk) {
        if utf8Needed > 0 {
            utf8.removeAll(keepingCapacity: true)
            utf8Needed = 0
            screen.put("\u{FFFD}")
        }
    }

    private mutating func control(_ b: UInt8, _ text: inout TextChunk) {
        switch b {
        case 0x08:
            screen.backspace(); lines.backspace()
        case 0x09:
            screen.tab(); lines.put(0x09); emitText(b, &text)
        case 0x0a, 0x0b, 0x0c:
            screen.lineFeed(); lines.newline(); emitText(0x0a, &text)
        case 0x0d:
            screen.carriageReturn(); lines.carriageReturn(); emitText(b, &text)
        default:
            break  // BEL, NUL, DEL and the rest draw nothing
        }
    }

    private mutating func escape(_ b: UInt8, _ text: inout TextChunk) {
        state = .ground
        switch b {
        case UInt8(ascii: "["):
            state = .csi; params.removeAll(keepingCapacity: true); param = nil; privateMarker = 0; intermediate = 0
        case UInt8(ascii: "]"), UInt8(ascii: "P"), UInt8(ascii: "_"), UInt8(ascii: "^"):
            state = .osc  // OSC, DCS, APC, PM: skipped up to ST or BEL
        case UInt8(ascii: "("), UInt8(ascii: ")"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "#"), UInt8(ascii: "%"):
            state = .charset
        case UInt8(ascii: "7"): screen.saveCursor()
        case UInt8(ascii: "8"): screen.restoreCursor()
        case UInt8(ascii: "c"): screen.reset(); lines.breakLine()
        case UInt8(ascii: "D"): screen.lineFeed()
        case UInt8(ascii: "E"): screen.carriageReturn(); screen.lineFeed(); lines.newline()
        case UInt8(ascii: "M"): screen.reverseIndex()
        default: break
        }
    }

    private mutating func csi(_ b: UInt8, _ text: inout TextChunk) {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"):
            // Parameters are clamped so hostile input cannot overflow.
            param = min(9999, (param ?? 0) * 10 + Int(b - UInt8(ascii: "0")))
        case UInt8(ascii: ";"), UInt8(ascii: ":"):
            if params.count < Terminal.maxParams { params.append(param ?? 0) }
            param = nil
        case UInt8(ascii: "<")...UInt8(ascii: "?"):
            if params.isEmpty && param == nil { privateMarker = b }
        case 0x20...0x2f:
            intermediate = b
        case 0x40...0x7e:
            if let p = param, params.count < Terminal.maxParams { params.append(p) }
            state = .ground
            dispatch(b)
        case 0x00...0x1f:
            control(b, &text)  // controls inside a sequence act immediately (VT100)
        default:
            state = .ground
        }
    }

    private func p(_ i: Int, _ defaultValue: Int) -> Int {
        i < params.count && params[i] != 0 ? params[i] : defaultValue
    }

    private mutating func dispatch(_ final: UInt8) {
        if intermediate != 0 { return }  // no supported sequence has intermediates
        if privateMarker == UInt8(ascii: "?") {
            let on = final == UInt8(ascii: "h")
            guard on || final == UInt8(ascii: "l") else { return }
            for mode in params {
                switch mode {
                case 25: screen.cursorVisible = on
                case 7: screen.autowrap = on; if !on { screen.wrapPending = false }
                default: break
                }
            }
            return
        }
        if privateMarker != 0 { return }
        switch final {
        case UInt8(ascii: "A"): screen.moveBy(rows: -p(0, 1), columns: 0)
        case UInt8(ascii: "B"), UInt8(ascii: "e"): screen.moveBy(rows: p(0, 1), columns: 0)
        case UInt8(ascii: "C"), UInt8(ascii: "a"): screen.moveBy(rows: 0, columns: p(0, 1))
        case UInt8(ascii: "D"): screen.moveBy(rows: 0, columns: -p(0, 1))
        case UInt8(ascii: "E"): screen.moveTo(row: screen.cursorRow + p(0, 1), column: 0)
        case UInt8(ascii: "F"): screen.moveTo(row: screen.cursorRow - p(0, 1), column: 0)
        case UInt8(ascii: "G"), UInt8(ascii: "`"): screen.moveTo(row: screen.cursorRow, column: p(0, 1) - 1)
        case UInt8(ascii: "d"): screen.address(row: p(0, 1) - 1, column: screen.cursorColumn)
        case UInt8(ascii: "H"), UInt8(ascii: "f"):
            // Cursor addressing means the output is a full-screen UI now, not a log line.
            lines.breakLine()
            screen.address(row: p(0, 1) - 1, column: p(1, 1) - 1)
        case UInt8(ascii: "J"):
            let mode = params.first ?? 0
            if mode >= 2 { lines.breakLine() }
            screen.eraseInDisplay(mode)
        case UInt8(ascii: "K"): screen.eraseInLine(params.first ?? 0)
        case UInt8(ascii: "L"): screen.insertLines(p(0, 1))
        case UInt8(ascii: "M"): screen.deleteLines(p(0, 1))
        case UInt8(ascii: "P"): screen.deleteCharacters(p(0, 1))
        case UInt8(ascii: "@"): screen.insertBlanks(p(0, 1))
        case UInt8(ascii: "X"): screen.eraseCharacters(p(0, 1))
        case UInt8(ascii: "S"): screen.scrollUp(p(0, 1))
        case UInt8(ascii: "T"): screen.scrollDown(p(0, 1))
        case UInt8(ascii: "r"): screen.setScrollRegion(top: p(0, 1) - 1, bottom: p(1, screen.rows) - 1)
        case UInt8(ascii: "s"): screen.saveCursor()
        case UInt8(ascii: "u"): screen.restoreCursor()
        case UInt8(ascii: "m"): selectGraphicRendition()
        default: break
        }
    }

    private mutating func selectGraphicRendition() {
        var a = screen.attributes
        let list = params.isEmpty ? [0] : params
        var i = 0
        while i < list.count {
            let code = list[i]
            switch code {
            case 0: a = .plain
            case 1: a.bold = true
            case 4: a.underline = true
            case 5: a.blink = true
            case 7: a.reverse = true
            case 22: a.bold = false
            case 24: a.underline = false
            case 25: a.blink = false
            case 27: a.reverse = false
            case 30...37: a.foreground = UInt8(code - 30)
            case 39: a.foreground = nil
            case 40...47: a.background = UInt8(code - 40)
            case 49: a.background = nil
            case 90...97: a.foreground = UInt8(code - 90 + 8)
            case 100...107: a.background = UInt8(code - 100 + 8)
            case 38, 48:
                // 256-colour and true-colour forms: mapped to the nearest of the 16 where trivial, else skipped.
                if i + 1 < list.count && list[i + 1] == 5 && i + 2 < list.count {
                    let n = list[i + 2]
                    let c: UInt8? = n < 16 ? UInt8(n) : nil
                    if code == 38 { a.foreground = c } else { a.background = c }
                    i += 2
                } else if i + 1 < list.count && list[i + 1] == 2 {
                    i += 4
                }
            default: break
            }
            i += 1
        }
        screen.attributes = a
    }
}

/// Log-style lines: what a serial console shows when read as a log (CR returns to the start of
/// the line and later text overwrites it, BS steps back), most recent last, bounded. Completed
/// lines are kept as bytes and decoded only when asked for (a kernel log completes a line every
/// hundred bytes).
public struct LineLog: Sendable {
    /// Completed lines, each followed by LF, oldest first.
    private var history: [UInt8] = []
    private var lineStarts: [Int] = []
    public private(set) var completedCount = 0
    private var current: [UInt8] = []
    private var column = 0
    public var keep = 400

    public init() {}

    public var partial: String { String(decoding: current, as: UTF8.self) }

    public var completed: [String] { lines(lineStarts.count) }

    /// The last `n` lines including the unfinished one.
    public func tail(_ n: Int) -> [String] {
        var all = lines(n)
        if !current.isEmpty { all.append(partial) }
        return Array(all.suffix(n))
    }

    private func lines(_ n: Int) -> [String] {
        let first = max(0, lineStarts.count - n)
        return (first..<lineStarts.count).map { k in
            let end = k + 1 < lineStarts.count ? lineStarts[k + 1] - 1 : history.count - 1
            return String(decoding: history[lineStarts[k]..<end], as: UTF8.self)
        }
    }

    mutating func put(_ b: UInt8) {
        if column < current.count { current[column] = b } else { current.append(b) }
        column += 1
    }

    mutating func put(_ run: UnsafeBufferPointer<UInt8>) {
        let overwritten = min(run.count, max(0, current.count - column))
        if overwritten > 0 {
            current.replaceSubrange(column..<(column + overwritten), with: run[..<overwritten])
        }
        if overwritten < run.count { current.append(contentsOf: run[overwritten...]) }
        column += run.count
    }

    mutating func backspace() { if column > 0 { column -= 1 } }
    mutating func carriageReturn() { column = 0 }

    mutating func newline() {
        var end = current.count
        while end > 0 && current[end - 1] == 0x20 { end -= 1 }
        lineStarts.append(history.count)
        history.append(contentsOf: current[..<end])
        history.append(0x0a)
        completedCount += 1
        if lineStarts.count > keep * 2 { dropOldest(lineStarts.count - keep) }
        current.removeAll(keepingCapacity: true)
        column = 0
    }

    private mutating func dropOldest(_ n: Int) {
        let cut = lineStarts[n]
        history.removeFirst(cut)
        lineStarts.removeFirst(n)
        for k in lineStarts.indices { lineStarts[k] -= cut }
    }

    mutating func breakLine() {
        if current.contains(where: { $0 != 0x20 }) { newline() } else { current.removeAll(keepingCapacity: true); column = 0 }
    }
}
