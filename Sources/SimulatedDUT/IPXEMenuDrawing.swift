/// iPXE's menu as it goes out on a serial console (`src/hci/tui/menu_ui.c` and jump scrolling,
/// as the QEMU rig's iPXE draws it): the bytes for the first draw, a countdown tick and each
/// key. 80×25: title on row 2 (1-based), "..." markers on rows 3 and 24, a window of 20 item
/// rows from row 4, pages in fixed steps of 20, no wrap at the ends, gaps skipped.
public struct IPXEMenuDrawing: Sendable {
    public struct Item: Sendable {
        public var text: String
        public var isGap: Bool
        public init(text: String, isGap: Bool) { self.text = text; self.isGap = isGap }
    }
    public enum Move: Sendable { case up, down, pageUp, pageDown, none }

    public let title: String
    public let items: [Item]
    public private(set) var current: Int
    private(set) var first = 0
    /// Seconds left while the timeout runs (drawn on the selected row), nil once stopped.
    private var timeout: Int?
    let rows = 20, columns = 80

    public init(title: String, items: [Item], current: Int, timeout: Int?) {
        self.title = title; self.items = items; self.current = current; self.timeout = timeout
        jumpScroll()
    }

    private static let normal = "\u{1b}[0;44m", separator = "\u{1b}[0;36;44m", select = "\u{1b}[0;41;1m"

    private func at(_ row: Int, _ column: Int) -> String {
        func two(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }
        return "\u{1b}[\(two(row));\(two(column))H"
    }

    /// One item row: 78 columns from column 2, the text after two blanks cut at 74, the countdown
    /// right-aligned two columns before the end.
    private func drawItem(_ index: Int) -> String {
        let row = 4 + index - first
        guard index < items.count else { return at(row, 2) + Self.normal + String(repeating: " ", count: columns - 1) }
        var buf = Array(repeating: Character(" "), count: columns - 2)
        let text = Array(items[index].text.prefix(columns - 2 - 4))
        buf.replaceSubrange(2..<(2 + text.count), with: text)
        if index == current, let t = timeout {
            let mark = Array("(\(t))")
            buf.replaceSubrange((columns - 2 - 2 - mark.count)..<(columns - 2 - 2), with: mark)
        }
        let colour = index == current ? Self.select : items[index].isGap ? Self.separator : Self.normal
        return at(row, 2) + colour + String(buf)
    }

    private func drawItems() -> String {
        var out = at(3, 4) + Self.separator + (first == 0 ? "   " : "...")
        out += at(rows + 4, 4) + (first + rows >= items.count ? "   " : "...")
        for i in first..<(first + rows) { out += drawItem(i) }
        return out
    }

    private mutating func jumpScroll() -> Bool {
        if current >= first && current < first + rows { return false }
        while first < current { first += rows }
        while first > current { first -= rows }
        return true
    }

    public func start() -> String {
        "\u{1b}[2J" + Self.normal + "\u{1b}[2J" + at(2, max(1, (columns - title.count) / 2 + 1)) + "\u{1b}[0;44;1m" + title
            + drawItems() + drawItem(current)
    }

    /// The countdown's redraw each second.
    public mutating func tick(_ seconds: Int) -> String {
        timeout = seconds
        return drawItem(current)
    }

    /// A key: the timeout stops; the selection moves (skipping gaps, stopping at the ends); the
    /// old row, the page if it changed and the new row are drawn.
    public mutating func press(_ move: Move) -> String {
        let wasCounting = timeout != nil
        timeout = nil
        let previous = current
        var step: Int
        switch move {
        case .up: step = -1
        case .down: step = 1
        case .pageUp: step = first - current - 1
        case .pageDown: step = first - current + rows
        case .none: step = 0
        }
        while step != 0 {
            let next = current + step
            if next < 0 { current = 0; step = 1 } else if next > items.count - 1 { current = items.count - 1; step = -1 } else {
                current = next; step = step > 0 ? 1 : -1
            }
            if !items[current].isGap { break }
        }
        guard current != previous || wasCounting else { return "" }
        var out = drawItem(previous)
        if jumpScroll() { out += drawItems() }
        return out + drawItem(current)
    }
}
