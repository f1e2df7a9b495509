import Terminal

/// An iPXE menu (`menu` / `item` / `choose`) as read back from the terminal screen.
///
/// iPXE draws the menu with cursor addressing: the title near the top (bold), one row per item,
/// the selected item in a highlight colour (white on red, `ESC[0;41;1m`; other items `ESC[0;44m`),
/// and the default item's countdown as "(N)" right-aligned in its row (its ")" four columns from
/// the screen's right edge, as on the QEMU rig), only while iPXE's timeout runs. Nothing on the screen
/// tells a gap (`item --gap`) from an item, so rows that are blank or look like separators
/// ("--- Boot options ---") are reported as gaps; navigation never relies on that guess, it
/// watches where the highlight really goes.
public struct IPXEMenu: Sendable, Equatable {
    public struct Item: Sendable, Equatable {
        public var row: Int
        public var label: String
        public var isGap: Bool
        public var isSelected: Bool
    }

    public var title: String
    public var items: [Item]

    public var selected: Item? { items.first { $0.isSelected } }
    public var selectable: [Item] { items.filter { !$0.isGap } }

    /// Reads the menu off the screen; nil when no menu is drawn (no single highlighted row).
    public static func read(from screen: Screen) -> IPXEMenu? {
        guard screen.columns >= 3 else { return nil }
        let span = 1..<(screen.columns - 1)
        struct Style: Hashable { var background: UInt8?; var reverse: Bool }
        func style(_ row: Int) -> Style {
            var counts: [Style: Int] = [:]
            for c in span {
                let a = screen.cell(row: row, column: c).attributes
                counts[Style(background: a.background, reverse: a.reverse), default: 0] += 1
            }
            return counts.max { $0.value < $1.value }!.key
        }
        let textRows = (0..<screen.rows).filter { !screen.text(row: $0).trimmingBlanks.isEmpty }
        let styles = Dictionary(uniqueKeysWithValues: textRows.map { ($0, style($0)) })
        // iPXE's selection colour is white on red; other menus use reverse video.
        let selectLike = textRows.filter { styles[$0]!.reverse || styles[$0]!.background == 1 }
        let selectedRow: Int
        if selectLike.count == 1 {
            selectedRow = selectLike[0]
        } else {
            // Otherwise the one text row drawn in a style no other row has, when the rest agree.
            var byStyle: [Style: [Int]] = [:]
            for r in textRows { byStyle[styles[r]!, default: []].append(r) }
            let unique = byStyle.values.filter { $0.count == 1 }.map { $0[0] }
            guard unique.count == 1, byStyle.count == 2 else { return nil }
            selectedRow = unique[0]
        }
        let nonBlank = (0..<screen.rows).filter { !screen.text(row: $0).trimmingBlanks.isEmpty }
        // The title is the first text row above the items, if a blank row or more separates it
        // or it is bold (iPXE centres it on row 2 in bold).
        var title = ""
        var firstItemRow = nonBlank.first ?? selectedRow
        if let first = nonBlank.first, first < selectedRow {
            let boldTitle = (0..<screen.columns).contains { screen.cell(row: first, column: $0).attributes.bold
                && screen.cell(row: first, column: $0).character != " " }
            let separated = !nonBlank.contains(first + 1)
            if boldTitle || separated {
                title = screen.text(row: first).trimmingBlanks
                firstItemRow = nonBlank.dropFirst().first ?? selectedRow
            }
        }
        let lastItemRow = nonBlank.last ?? selectedRow
        guard firstItemRow <= lastItemRow else { return nil }
        var items: [Item] = []
        for row in firstItemRow...lastItemRow {
            // Only the highlighted row can carry the countdown, and only where iPXE draws it: a
            // label of its own that ends in "(2)" is a label.
            let text = screen.text(row: row)
            let label = row == selectedRow ? stripCountdown(text, columns: screen.columns) : text.trimmingBlanks
            items.append(Item(row: row, label: label, isGap: row != selectedRow && looksLikeGap(label), isSelected: row == selectedRow))
        }
        return IPXEMenu(title: title, items: items)
    }

    /// Where iPXE draws a scrolling menu's window on a screen of `rows` (as on the QEMU rig, 25
    /// rows): "..." above the window on row 2 (0-based), items from row 3 to rows − 3, "..." below
    /// on rows − 2. On a page change iPXE writes both marker rows first, then every item row top
    /// to bottom, so the page is complete once the last item row has been written.
    public static func window(rows: Int) -> (topMarker: Int, lastItem: Int, bottomMarker: Int) {
        (2, rows - 3, rows - 2)
    }

    /// Finds an item by its label: exact first, then ignoring case and surrounding blanks.
    public func item(labelled label: String) -> Item? {
        let wanted = label.trimmingBlanks
        return selectable.first { $0.label == wanted } ?? selectable.first { $0.label.lowercased() == wanted.lowercased() }
    }

    /// The row's text without the countdown iPXE right-aligns in the default item's row:
    /// "  Debian stable netinst        (10)  " → "Debian stable netinst". A "(N)" anywhere else (a
    /// label's own "(2)" right after its text) is kept.
    static func stripCountdown(_ row: String, columns: Int) -> String {
        let chars = Array(row)
        let close = columns - 4
        guard close >= 3, close < chars.count, chars[close] == ")" else { return row.trimmingBlanks }
        var open = close - 1
        while open > 0, chars[open].isNumber { open -= 1 }
        // Digits between "(" and ")", and a blank before it (the label stops short of the countdown).
        guard chars[open] == "(", open < close - 1, open > 0, chars[open - 1] == " " else { return row.trimmingBlanks }
        return String(chars[..<open]).trimmingBlanks
    }

    static func looksLikeGap(_ label: String) -> Bool {
        if label.isEmpty { return true }
        let scalars = label.unicodeScalars
        // Entirely punctuation ("--------") or framed by the same punctuation ("--- Boot options ---").
        if scalars.allSatisfy({ !$0.properties.isAlphabetic && !("0"..."9").contains($0) }) { return true }
        guard let first = scalars.first, let last = scalars.last, first == last, "-=*#~_".unicodeScalars.contains(first) else { return false }
        return true
    }
}

extension String {
    var trimmingBlanks: String {
        var s = Substring(self)
        while s.first == " " || s.first == "\t" { s.removeFirst() }
        while s.last == " " || s.last == "\t" { s.removeLast() }
        return String(s)
    }
}
