/// How a character cell is drawn. Colours are the 16 ANSI colours (0–7 normal, 8–15 bright);
/// nil is the terminal's default.
public struct CellAttributes: Hashable, Sendable, CustomStringConvertible {
    public var bold = false
    public var underline = false
    public var blink = false
    public var reverse = false
    public var foreground: UInt8?
    public var background: UInt8?

    public init(bold: Bool = false, underline: Bool = false, blink: Bool = false, reverse: Bool = false,
                foreground: UInt8? = nil, background: UInt8? = nil) {
        self.bold = bold; self.underline = underline; self.blink = blink; self.reverse = reverse
        self.foreground = foreground; self.background = background
    }

    public static let plain = CellAttributes()

    public var description: String {
        var parts: [String] = []
        if bold { parts.append("bold") }
        if underline { parts.append("underline") }
        if blink { parts.append("blink") }
        if reverse { parts.append("reverse") }
        if let foreground { parts.append("fg\(foreground)") }
        if let background { parts.append("bg\(background)") }
        return parts.isEmpty ? "plain" : parts.joined(separator: ",")
    }
}

public struct Cell: Equatable, Sendable {
    public var character: Unicode.Scalar
    public var attributes: CellAttributes
    public static let blank = Cell(character: " ", attributes: .plain)
}

/// A VT100 screen: a grid of cells, a cursor and the drawing state the escape sequences change.
/// Rows and columns are 0-based here (escape sequences are 1-based).
public struct Screen: Sendable, Equatable {
    public let rows: Int
    public let columns: Int
    /// Rows in a ring: `top` is where row 0 is stored, so scrolling the whole screen (every line of
    /// a kernel log) moves an index instead of the cells.
    private var storage: [Cell]
    private var top = 0
    public internal(set) var cursorRow = 0
    public internal(set) var cursorColumn = 0
    public internal(set) var cursorVisible = true
    public internal(set) var attributes = CellAttributes.plain
    var autowrap = true
    /// The cursor sits past the last column; the next printable wraps first (VT100 "pending wrap").
    var wrapPending = false
    var scrollTop = 0
    var scrollBottom: Int
    var saved: (row: Int, column: Int, attributes: CellAttributes)?
    /// When each row was last addressed by absolute cursor positioning (a count of such moves):
    /// full-screen UIs such as iPXE's menu move to every row they draw, even one they only
    /// blank, so the order of these stamps tells how far a redraw has got, which the cells
    /// alone cannot (a row redrawn with the same text looks untouched).
    private var addressedAt: [UInt64]
    /// `addressCount` when a write into the row last reached the last column (a full-width row
    /// drawn to its end): with `addressedAt`, tells a row drawn whole from one half redrawn.
    private var completedAt: [UInt64]
    public private(set) var addressCount: UInt64 = 0
    /// `addressCount` at the last scroll: rows moved, so stamps taken before no longer fit them.
    public private(set) var scrolledAt: UInt64 = 0

    public init(rows: Int = 25, columns: Int = 80) {
        self.rows = max(1, rows)
        self.columns = max(1, columns)
        storage = Array(repeating: .blank, count: self.rows * self.columns)
        addressedAt = Array(repeating: 0, count: self.rows)
        completedAt = Array(repeating: 0, count: self.rows)
        scrollBottom = self.rows - 1
    }

    /// The value of `addressCount` when the cursor was last moved into `row` by absolute
    /// positioning (0: never since the screen was reset).
    public func lastAddressed(row: Int) -> UInt64 { addressedAt[row] }

    /// The value of `addressCount` when text written into `row` last reached the last column.
    public func lastCompleted(row: Int) -> UInt64 { completedAt[row] }

    /// The cursor's row is being drawn: text was written into it since the cursor was last
    /// addressed, and has not reached the last column yet. (Only addressed, with nothing written
    /// since, it is not: iPXE moves back to a row's start after drawing it.)
    public private(set) var isDrawingRow = false

    /// Absolute cursor positioning (CUP, VPA): also stamps the row.
    mutating func address(row: Int, column: Int) {
        moveTo(row: row, column: column)
        addressCount += 1
        addressedAt[cursorRow] = addressCount
        isDrawingRow = false
    }

    /// The cells row by row from the top.
    public var cells: [Cell] {
        let split = top * columns
        return Array(storage[split...] + storage[..<split])
    }

    public static func == (a: Screen, b: Screen) -> Bool {
        a.cells == b.cells && a.cursorRow == b.cursorRow && a.cursorColumn == b.cursorColumn && a.cursorVisible == b.cursorVisible
    }

    /// Where row `row` starts in `storage`.
    @inline(__always) private func base(_ row: Int) -> Int {
        let r = top + row
        return (r >= rows ? r - rows : r) * columns
    }

    public func cell(row: Int, column: Int) -> Cell { storage[base(row) + column] }

    /// The text of one row, trailing blanks removed.
    public func text(row: Int) -> String {
        var s = String.UnicodeScalarView()
        let b = base(row)
        for c in 0..<columns { s.append(storage[b + c].character) }
        var text = String(s)
        while text.last == " " { text.removeLast() }
        return text
    }

    /// The whole screen as text, one line per row, trailing blank rows removed.
    public var text: String {
        var lines = (0..<rows).map { text(row: $0) }
        while lines.last == "" { lines.removeLast() }
        return lines.joined(separator: "\n")
    }

    // MARK: drawing primitives used by the parser

    mutating func put(_ scalar: Unicode.Scalar) {
        if wrapPending {
            wrapPending = false
            cursorColumn = 0
            lineFeed()
        }
        storage[base(cursorRow) + cursorColumn] = Cell(character: scalar, attributes: attributes)
        if cursorColumn >= columns - 2 { completedAt[cursorRow] = addressCount; isDrawingRow = false } else { isDrawingRow = true }
        if cursorColumn == columns - 1 {
            if autowrap { wrapPending = true }
        } else {
            cursorColumn += 1
        }
    }

    /// Draws printable ASCII, a row's worth at a time; same result as `put` per byte.
    mutating func put(ascii run: UnsafeBufferPointer<UInt8>) {
        let template = Cell(character: " ", attributes: attributes)
        guard autowrap else {
            // Without wrap (iPXE turns it off) text past the last column overwrites that column.
            let fit = min(run.count, columns - cursorColumn)
            write(run.baseAddress!, count: fit, at: base(cursorRow) + cursorColumn, template)
            if run.count > fit { write(run.baseAddress! + run.count - 1, count: 1, at: base(cursorRow) + columns - 1, template) }
            cursorColumn = min(columns - 1, cursorColumn + run.count)
            if cursorColumn == columns - 1 { completedAt[cursorRow] = addressCount; isDrawingRow = false } else { isDrawingRow = true }
            return
        }
        var i = 0
        while i < run.count {
            if wrapPending {
                wrapPending = false
                cursorColumn = 0
                lineFeed()
            }
            let n = min(run.count - i, columns - cursorColumn)
            let start = base(cursorRow) + cursorColumn
            write(run.baseAddress! + i, count: n, at: start, template)
            i += n
            if cursorColumn + n == columns {
                cursorColumn = columns - 1
                wrapPending = true
            } else {
                cursorColumn += n
            }
            if cursorColumn == columns - 1 { completedAt[cursorRow] = addressCount; isDrawingRow = false } else { isDrawingRow = true }
        }
    }

    private mutating func write(_ source: UnsafePointer<UInt8>, count n: Int, at start: Int, _ template: Cell) {
        storage.withUnsafeMutableBufferPointer { cells in
            let target = cells.baseAddress! + start
            var cell = template
            for k in 0..<n {
                cell.character = Unicode.Scalar(source[k])
                target[k] = cell
            }
        }
    }

    mutating func lineFeed() {
        wrapPending = false
        if cursorRow == scrollBottom {
            scrollUp(1)
        } else if cursorRow < rows - 1 {
            cursorRow += 1
        }
    }

    mutating func reverseIndex() {
        wrapPending = false
        if cursorRow == scrollTop { scrollDown(1) } else if cursorRow > 0 { cursorRow -= 1 }
    }

    mutating func carriageReturn() { cursorColumn = 0; wrapPending = false }

    mutating func backspace() {
        wrapPending = false
        if cursorColumn > 0 { cursorColumn -= 1 }
    }

    mutating func tab() {
        wrapPending = false
        cursorColumn = min(columns - 1, (cursorColumn / 8 + 1) * 8)
    }

    mutating func moveTo(row: Int, column: Int) {
        wrapPending = false
        cursorRow = min(max(0, row), rows - 1)
        cursorColumn = min(max(0, column), columns - 1)
    }

    mutating func moveBy(rows dr: Int, columns dc: Int) {
        moveTo(row: cursorRow + dr, column: cursorColumn + dc)
    }

    /// Erased cells take the current background (xterm's "background colour erase"): iPXE
    /// paints its blue menu background this way.
    private var erased: Cell {
        Cell(character: " ", attributes: CellAttributes(background: attributes.background))
    }

    mutating func clear(row: Int, from start: Int, to end: Int) {
        guard start <= end else { return }
        let e = erased
        let b = base(row), from = b + max(0, start), to = b + min(columns - 1, end) + 1
        guard from < to else { return }
        // One fill of the range, not a checked store per cell: every kernel-log line scrolls one.
        storage.withUnsafeMutableBufferPointer { $0[from..<to].update(repeating: e) }
    }

    mutating func eraseInLine(_ mode: Int) {
        wrapPending = false
        switch mode {
        case 0: clear(row: cursorRow, from: cursorColumn, to: columns - 1)
        case 1: clear(row: cursorRow, from: 0, to: cursorColumn)
        case 2: clear(row: cursorRow, from: 0, to: columns - 1)
        default: break
        }
    }

    mutating func eraseInDisplay(_ mode: Int) {
        wrapPending = false
        switch mode {
        case 0:
            clear(row: cursorRow, from: cursorColumn, to: columns - 1)
            for r in (cursorRow + 1)..<max(cursorRow + 1, rows) { clear(row: r, from: 0, to: columns - 1) }
        case 1:
            for r in 0..<cursorRow { clear(row: r, from: 0, to: columns - 1) }
            clear(row: cursorRow, from: 0, to: cursorColumn)
        case 2, 3:
            for r in 0..<rows { clear(row: r, from: 0, to: columns - 1) }
        default: break
        }
    }

    mutating func scrollUp(_ n: Int) {
        let n = min(n, scrollBottom - scrollTop + 1)
        guard n > 0 else { return }
        scrolledAt = addressCount
        if scrollTop == 0 && scrollBottom == rows - 1 {
            top = (top + n) % rows
            for r in (rows - n)..<rows { clear(row: r, from: 0, to: columns - 1) }
            return
        }
        for r in scrollTop...scrollBottom {
            if r + n <= scrollBottom {
                let to = base(r), from = base(r + n)
                for c in 0..<columns { storage[to + c] = storage[from + c] }
            } else {
                clear(row: r, from: 0, to: columns - 1)
            }
        }
    }

    mutating func scrollDown(_ n: Int) {
        let n = min(n, scrollBottom - scrollTop + 1)
        guard n > 0 else { return }
        scrolledAt = addressCount
        if scrollTop == 0 && scrollBottom == rows - 1 {
            top = (top + rows - n) % rows
            for r in 0..<n { clear(row: r, from: 0, to: columns - 1) }
            return
        }
        for r in stride(from: scrollBottom, through: scrollTop, by: -1) {
            if r - n >= scrollTop {
                let to = base(r), from = base(r - n)
                for c in 0..<columns { storage[to + c] = storage[from + c] }
            } else {
                clear(row: r, from: 0, to: columns - 1)
            }
        }
    }

    mutating func insertLines(_ n: Int) {
        guard (scrollTop...scrollBottom).contains(cursorRow) else { return }
        let top = scrollTop
        scrollTop = cursorRow
        scrollDown(n)
        scrollTop = top
    }

    mutating func deleteLines(_ n: Int) {
        guard (scrollTop...scrollBottom).contains(cursorRow) else { return }
        let top = scrollTop
        scrollTop = cursorRow
        scrollUp(n)
        scrollTop = top
    }

    mutating func deleteCharacters(_ n: Int) {
        let n = min(n, columns - cursorColumn)
        let b = base(cursorRow)
        for c in cursorColumn..<columns {
            storage[b + c] = c + n < columns ? storage[b + c + n] : erased
        }
    }

    mutating func insertBlanks(_ n: Int) {
        let n = min(n, columns - cursorColumn)
        let b = base(cursorRow)
        for c in stride(from: columns - 1, through: cursorColumn, by: -1) {
            storage[b + c] = c - n >= cursorColumn ? storage[b + c - n] : erased
        }
    }

    mutating func eraseCharacters(_ n: Int) {
        clear(row: cursorRow, from: cursorColumn, to: min(columns - 1, cursorColumn + max(1, n) - 1))
    }

    mutating func setScrollRegion(top: Int, bottom: Int) {
        let t = max(0, top), b = min(rows - 1, bottom)
        guard t < b else { return }
        scrollTop = t; scrollBottom = b
        moveTo(row: 0, column: 0)
    }

    mutating func saveCursor() { saved = (cursorRow, cursorColumn, attributes) }

    mutating func restoreCursor() {
        guard let s = saved else { moveTo(row: 0, column: 0); return }
        moveTo(row: s.row, column: s.column)
        attributes = s.attributes
    }

    mutating func reset() {
        self = Screen(rows: rows, columns: columns)
    }
}
