import Terminal
import Text

/// Where iPXE draws its menu (`src/hci/tui/menu_ui.c`): the title on row 1, "..." markers on
/// row 2 and on row `rows − 2` when items are hidden above or below, items from row 3 to
/// `rows − 3` (a window of `rows − 5`, 20 on 80×25), each row starting at column 1 with two
/// blanks, the label cut after `columns − 6` characters and, on the selected row while the
/// timeout runs, the countdown "(N)" ending four columns from the right edge. Rows are 0-based.
public enum IPXELayout {
    public static let titleRow = 1
    public static let firstItemRow = 3
    public static let labelColumn = 3
    public static func lastItemRow(rows: Int) -> Int { rows - 3 }
    public static func markerRows(rows: Int) -> (above: Int, below: Int) { (2, rows - 2) }
    public static func windowSize(rows: Int) -> Int { rows - 5 }
    public static func labelWidth(columns: Int) -> Int { columns - 6 }
    /// The column of the countdown's ")".
    public static func countdownEnd(columns: Int) -> Int { columns - 4 }
}

/// An iPXE menu (`menu` / `item` / `choose`) as read back from the terminal screen.
///
/// Rows are told apart by colour as iPXE draws them: the selected item in the selection pair
/// (`ESC[0;41;1m`, white on red, bold), separators (`item --gap`) and the "..." markers in the
/// separator pair (`ESC[0;36;44m`), other items in the normal pair (`ESC[0;44m`). The
/// separator pair is taken from the markers when they are drawn (a `cpair` command can change
/// colours), else from iPXE's default (cyan). Only a screen without colour falls back to the
/// text: a blank or punctuation-only row there is taken for a gap.
public struct IPXEMenu: Sendable, Equatable {
    public struct Item: Sendable, Equatable {
        public var row: Int
        /// What iPXE printed for the item: words joined by single spaces, cut at `labelWidth`.
        public var label: String
        public var isGap: Bool
        public var isSelected: Bool
        /// The label fills the width, or the countdown covers its end: the screen may not show all of it.
        public var mayBeCut: Bool
    }

    public var title: String
    /// The window's rows that hold an item or a gap, top to bottom (markers not included).
    public var items: [Item]
    public var moreAbove: Bool
    public var moreBelow: Bool
    /// The countdown shown on the selected row, in seconds.
    public var countdown: Int?
    public var labelWidth: Int
    /// iPXE has drawn the whole window since it last started a (re)draw of it: the last item
    /// row was drawn to its end after both marker rows were addressed. Before that, rows below
    /// may still be stale or blank. (A read is never taken while a menu row is half drawn.)
    public var isComplete: Bool

    public var selected: Item? { items.first { $0.isSelected } }
    public var selectable: [Item] { items.filter { !$0.isGap } }

    /// Reads the menu off the screen; nil when no menu is drawn (not exactly one selected row in
    /// the window). `countdownMayShow`: false once a key was pressed (iPXE stops the timeout at
    /// the first key), so a label that itself ends in "(2)" at the right edge stays whole.
    public static func read(from screen: Screen, countdownMayShow: Bool = true) -> IPXEMenu? {
        let rows = screen.rows, columns = screen.columns
        guard rows >= 7, columns >= 12 else { return nil }
        let first = IPXELayout.firstItemRow, last = IPXELayout.lastItemRow(rows: rows)
        let markers = IPXELayout.markerRows(rows: rows)
        struct Style: Hashable { var foreground: UInt8?; var background: UInt8?; var reverse: Bool }
        func style(_ row: Int) -> Style {
            var counts: [Style: Int] = [:]
            for c in 1..<(columns - 1) {
                let a = screen.cell(row: row, column: c).attributes
                counts[Style(foreground: a.foreground, background: a.background, reverse: a.reverse), default: 0] += 1
            }
            return counts.max { $0.value < $1.value || ($0.value == $1.value && $0.key.hashValue < $1.key.hashValue) }!.key
        }
        // A row of the menu is being drawn: what it shows is half old, half new.
        if screen.isDrawingRow && (markers.above...markers.below).contains(screen.cursorRow) { return nil }
        let window = Array(first...last)
        let styles = window.map(style)
        let selectedRows = window.indices.filter { styles[$0].reverse || styles[$0].background == 1 }
        guard selectedRows.count == 1 else { return nil }
        let selectedRow = window[selectedRows[0]]
        let coloured = styles.contains { $0.foreground != nil || $0.background != nil }

        func markerShown(_ row: Int) -> Bool { screen.text(row: row).trimmingBlanks == "..." }
        let moreAbove = markerShown(markers.above), moreBelow = markerShown(markers.below)
        var separator: Style?
        if moreAbove || moreBelow {
            let row = moreAbove ? markers.above : markers.below
            let a = screen.cell(row: row, column: IPXELayout.labelColumn).attributes
            separator = Style(foreground: a.foreground, background: a.background, reverse: a.reverse)
        } else if let s = styles.first(where: { $0.foreground == 6 && !$0.reverse && $0.background != 1 }) {
            separator = s
        }

        let width = IPXELayout.labelWidth(columns: columns)
        func labelText(_ row: Int) -> String {
            var s = String.UnicodeScalarView()
            for c in IPXELayout.labelColumn..<min(columns, IPXELayout.labelColumn + width) { s.append(screen.cell(row: row, column: c).character) }
            return String(s).trimmingBlanks
        }
        var items: [Item] = []
        var countdown: Int?
        for (i, row) in window.enumerated() {
            if row == selectedRow {
                var label = labelText(row)
                var cut = label.count >= width
                if countdownMayShow, let (seconds, start) = readCountdown(screen, row: row) {
                    countdown = seconds
                    label = String(Array(label.unicodeScalars).prefix(max(0, start - IPXELayout.labelColumn)).map(Character.init)).trimmingBlanks
                    // The countdown sits inside the label's columns: the label is cut when it runs
                    // into it (the text read above always reached the width, countdown included).
                    cut = start > IPXELayout.labelColumn && screen.cell(row: row, column: start - 1).character != " "
                }
                items.append(Item(row: row, label: label, isGap: false, isSelected: true, mayBeCut: cut))
                continue
            }
            let label = labelText(row)
            let gap: Bool
            if coloured {
                if let separator, styles[i] == separator { gap = true } else {
                    // A blank row in the item colour holds no item (the window past the menu's end).
                    if label.isEmpty { continue }
                    gap = false
                }
            } else {
                if label.isEmpty { continue }
                gap = looksLikeGap(label)
            }
            items.append(Item(row: row, label: label, isGap: gap, isSelected: false, mayBeCut: !gap && label.count >= width))
        }
        let drawnLast = screen.lastCompleted(row: last)
        let complete = drawnLast > screen.scrolledAt && drawnLast > max(screen.lastAddressed(row: markers.above), screen.lastAddressed(row: markers.below))
        return IPXEMenu(title: screen.text(row: IPXELayout.titleRow).trimmingBlanks, items: items, moreAbove: moreAbove, moreBelow: moreBelow,
                        countdown: countdown, labelWidth: width, isComplete: complete)
    }

    /// "(N)" ending at the countdown column of `row`: the seconds and the column of "(".
    public static func readCountdown(_ screen: Screen, row: Int) -> (Int, Int)? {
        let close = IPXELayout.countdownEnd(columns: screen.columns)
        guard screen.cell(row: row, column: close).character == ")" else { return nil }
        var open = close - 1
        var digits = ""
        while open > IPXELayout.labelColumn, let d = screen.cell(row: row, column: open).character.properties.numericType, d == .decimal {
            digits = String(screen.cell(row: row, column: open).character) + digits
            open -= 1
        }
        guard !digits.isEmpty, screen.cell(row: row, column: open).character == "(", let n = Int(digits) else { return nil }
        return (n, open)
    }

    /// Separator-like text, for screens without colour only.
    static func looksLikeGap(_ label: String) -> Bool {
        if label.isEmpty { return true }
        let scalars = label.unicodeScalars
        // Entirely punctuation ("--------") or framed by the same punctuation ("--- Boot options ---").
        if scalars.allSatisfy({ !$0.properties.isAlphabetic && !("0"..."9").contains($0) }) { return true }
        guard let first = scalars.first, let last = scalars.last, first == last, "-=*#~_".unicodeScalars.contains(first) else { return false }
        return true
    }
}

