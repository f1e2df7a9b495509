import FirmwareUI
import Matching
import Terminal
import Text

/// Chooses an iPXE menu entry by its exact label, and proves what it chose.
///
/// 1. Waits for a *complete* menu: iPXE draws the markers, every window row, then the
///    selection, moving the cursor to each row it draws (`IPXEMenu.isComplete`).
/// 2. Stops the countdown (a key iPXE ignores, ←) so the default cannot boot while the menu is
///    read and the selected row's label is not half hidden under "(N)" — unless the menu is one
///    page, every label is whole beside the countdown and the entry is not the default: then the
///    first arrow towards it stops the countdown (any key does).
/// 3. A menu longer than its window is read page by page (PgDn to the last page, PgUp to the
///    first: iPXE pages in fixed steps of the window's size), into one ordered list.
/// 4. The label must match exactly one entry as the menu shows it (`LabelMatch`); ambiguity,
///    a label wider than the menu shows, or a missing label fail here, before anything boots.
/// 5. Walks to the entry by pages (each checked), then rows: the moves to the row go out in one
///    write (up to 5), and Enter waits until the highlight shows the entry. iPXE does not wrap
///    (`jump_scroll_move` stops at the ends) and each key moves one item, so the highlight can
///    reach the entry only once every key sent was taken: none is still on its way at Enter. A
///    lost key leaves it short; the rest then goes one checked key at a time.
/// 6. Before Enter, the highlighted row on the entry's page must show the chosen label; after
///    Enter, the first line iPXE prints (the kernel it fetches, usually) goes into the detail.
struct IPXEMenuStage {
    var label: String
    var appearTimeout: Duration
    var keyTimeout: Duration = .seconds(5)
    var afterChoiceTimeout: Duration = .seconds(5)

    /// One entry of the whole menu: where it is and what it shows.
    struct Entry: Equatable {
        var page: Int
        var row: Int
        var label: String
        var isGap: Bool
    }

    func run(on console: ConsoleSession, listing: inout [String]?) async throws -> StageOutcome {
        var keys = 0
        var menu = try await console.awaitScreen(
            within: appearTimeout, expected: "an iPXE menu",
            message: "no complete iPXE menu was drawn within \(format(appearTimeout.seconds)) s") { screen -> IPXEMenu? in
            guard let m = IPXEMenu.read(from: screen), m.isComplete else { return nil }
            return m
        }

        /// Sends `key` and waits for the menu it leads to: a page redrawn to its last row, or
        /// (`needsMove`) the highlight on another row, or the highlighted row drawn again.
        func press(_ key: Key, needsRedraw: Bool, what: String) async throws -> (IPXEMenu, paged: Bool) {
            let before = console.screen
            let mark = before.addressCount
            let from = menu.selected
            try console.send(key.bytes)
            keys += 1
            return try await console.awaitScreen(
                within: keyTimeout, expected: what,
                message: "after \(key.rawValue) the menu did not change (highlight on \"\(from?.label ?? "?")\")") { screen -> (IPXEMenu, Bool)? in
                guard let m = IPXEMenu.read(from: screen, countdownMayShow: false), m.isComplete, let s = m.selected else { return nil }
                let markers = IPXELayout.markerRows(rows: screen.rows)
                let paged = screen.lastAddressed(row: markers.above) > mark || screen.lastAddressed(row: markers.below) > mark
                if needsRedraw { return paged ? (m, true) : nil }
                if paged || s.row != from?.row { return (m, paged) }
                return nil
            }
        }

        // The countdown: stopped at once, whatever is chosen. On a one-page menu whose entry is not
        // the default one, the first arrow key towards it stops it as well (any key does), so no
        // separate key is spent — when every label is whole despite the countdown, so the entry is
        // already known for sure.
        let arrowStopsCountdown: Bool = {
            guard menu.countdown != nil, !menu.moreAbove, !menu.moreBelow, !menu.items.contains(where: \.mayBeCut),
                  let selected = menu.selected else { return false }
            let choices = menu.items.filter { !$0.isGap }
            switch LabelMatch.find(label, in: choices.map(\.label), width: menu.labelWidth) {
            case .exact(let i), .ignoringCase(let i): return choices[i].row != selected.row
            default: return false
            }
        }()
        if let seconds = menu.countdown, let row = menu.selected?.row, !arrowStopsCountdown {
            let mark = console.screen.addressCount
            try console.send(Key.left.bytes)
            keys += 1
            menu = try await console.awaitScreen(
                within: keyTimeout, expected: "the menu's countdown to stop",
                message: "iPXE did not redraw the selected row after a key; its countdown showed \(seconds) s") { screen -> IPXEMenu? in
                // Redrawn after the key and without the countdown: a tick of the countdown may
                // redraw the row first. (Only a label exactly as wide as the menu could look like a
                // countdown here, and such a label cannot be proven on screen anyway.)
                guard screen.lastAddressed(row: row) > mark, IPXEMenu.readCountdown(screen, row: row) == nil,
                      let m = IPXEMenu.read(from: screen, countdownMayShow: false), m.isComplete, m.selected != nil else { return nil }
                return m
            }
        }

        // Every page, in order.
        var page = 0
        var pages: [Int: [IPXEMenu.Item]] = [0: menu.items]
        func turn(_ key: Key) async throws {
            let (m, paged) = try await press(key, needsRedraw: true, what: "the next page of the menu")
            guard paged else { throw StageFailure(expected: "a new page", message: "\(key.rawValue) did not turn the page") }
            menu = m
            page += key == .pageDown ? 1 : -1
            if let known = pages[page], known.map(\.label) != m.items.map(\.label) {
                throw StageFailure(expected: "the same menu", message: "a page changed while the menu was read: first "
                                   + known.map(\.label).joined(separator: " | ") + ", then " + m.items.map(\.label).joined(separator: " | "))
            }
            pages[page] = m.items
            if keys > 4096 { throw StageFailure(expected: "to read the menu", message: "paging did not end after \(keys) keys") }
        }
        while menu.moreBelow { try await turn(.pageDown) }
        while menu.moreAbove { try await turn(.pageUp) }
        let firstPage = pages.keys.min()!
        let size = max(1, IPXELayout.windowSize(rows: console.screen.rows))
        var entries: [Entry] = []
        for p in firstPage...pages.keys.max()! {
            for item in pages[p] ?? [] { entries.append(Entry(page: p - firstPage, row: item.row, label: item.label, isGap: item.isGap)) }
        }
        let pageCount = pages.count
        listing = entries.map { ($0.isGap ? "(gap) " : "") + $0.label }
        let choices = entries.filter { !$0.isGap }
        func name(_ i: Int) -> String {
            let e = choices[i]
            return "entry \(i + 1) \"\(e.label)\"" + (pageCount > 1 ? " (page \(e.page + 1), row \(e.row + 1))" : " (row \(e.row + 1))")
        }

        let found = LabelMatch.find(label, in: choices.map(\.label), width: menu.labelWidth)
        let index: Int
        switch found {
        case .exact(let i), .ignoringCase(let i): index = i
        case .missing:
            throw StageFailure(expected: "menu entry \"\(label)\"",
                               message: "the menu \"\(menu.title)\" has no entry \"\(label)\"; all \(choices.count) entries"
                                   + (pageCount > 1 ? ", read over \(pageCount) pages of \(size)" : "") + ": "
                                   + choices.map(\.label).joined(separator: " | "))
        default:
            throw StageFailure(expected: "menu entry \"\(label)\"",
                               message: "the menu \"\(menu.title)\": " + found.problem(wanted: label, name: name)!)
        }
        let target = choices[index]

        // `page` counts from the page first shown; entries count from the first page.
        while page != target.page + firstPage {
            try await turn(target.page + firstPage > page ? .pageDown : .pageUp)
        }
        // The moves to the entry's row go out together: each key moves the highlight to the next
        // item (gaps are skipped) and iPXE does not wrap, so the highlight can only reach the
        // entry once every key has been taken — none is still on its way when Enter follows.
        // (SeaBIOS's serial console passes keys at its 55 ms timer ticks: one round trip per key
        // would cost a tick or two each.) At most 5 at once (15 bytes: a 16-byte UART FIFO). A
        // key lost on the way shows as the highlight stopping short; after the key timeout (long
        // past any tick) the rest goes one key at a time, each checked.
        var burst = true
        while let s = menu.selected, s.row != target.row {
            let key: Key = target.row > s.row ? .down : .up
            let rows = menu.items.filter { !$0.isGap }.map(\.row)
            let steps = abs((rows.firstIndex(of: target.row) ?? 0) - (rows.firstIndex(of: s.row) ?? 0))
            if burst && steps > 1 {
                let count = min(steps, 5)
                try console.send(Array([[UInt8]](repeating: key.bytes, count: count).joined()))
                keys += count
                do {
                    let goal = count == steps ? target.row : nil
                    let m = try await console.waitForScreen(timeout: keyTimeout) { screen -> IPXEMenu? in
                        guard let m = IPXEMenu.read(from: screen, countdownMayShow: false), m.isComplete, let now = m.selected,
                              !m.moreAbove || menu.moreAbove, !m.moreBelow || menu.moreBelow else { return nil }
                        let moved = abs((rows.firstIndex(of: now.row) ?? 0) - (rows.firstIndex(of: s.row) ?? 0))
                        return (goal.map { now.row == $0 } ?? (moved == count)) ? m : nil
                    }
                    menu = m
                } catch {
                    if error == .cancelled { throw ConsoleWaitError.cancelled }
                    burst = false
                    guard let m = IPXEMenu.read(from: console.screen, countdownMayShow: false), m.isComplete, m.selected != nil else {
                        throw StageFailure(expected: "the highlight to move \(key.rawValue)", message: "after \(count) × \(key.rawValue) the menu was not shown whole")
                    }
                    menu = m
                }
                continue
            }
            let (m, paged) = try await press(key, needsRedraw: false, what: "the highlight to move \(key.rawValue)")
            if paged { throw StageFailure(expected: "the highlight to stay on page \(target.page + 1)", message: "\(key.rawValue) turned the page") }
            menu = m
            if keys > 4 * entries.count + 16 {
                throw StageFailure(expected: "to reach \"\(target.label)\"", message: "navigation did not converge after \(keys) keys")
            }
        }

        // Proof: what is highlighted now, on the page read for this entry, is the entry.
        let now = console.screen
        guard let shown = IPXEMenu.read(from: now, countdownMayShow: false), let s = shown.selected,
              s.row == target.row, s.label == target.label,
              shown.items.map(\.label) == (pages[target.page + firstPage] ?? []).map(\.label) else {
            throw StageFailure(expected: "\"\(target.label)\" highlighted",
                               message: "before Enter the highlight is on \"\(IPXEMenu.read(from: now, countdownMayShow: false)?.selected?.label ?? "nothing")\"")
        }
        // The menu's own text is done with; what comes after Enter is iPXE's next words.
        console.skipUnread()
        try console.send(Key.enter.bytes)
        var detail = "chose \(name(index))" + (found == .ignoringCase(index) ? " (matched ignoring case)" : "") + " with \(keys) key(s)"
        // What iPXE did next, in its own words (usually the kernel URL it fetches).
        do {
            let line = try await console.expect([.regex("[^ \\r\\n][^\\n]*\\n")], timeout: afterChoiceTimeout)
            detail += "; then: \(line.text.trimming(" \r\n").debugDescription)"
        } catch {
            if error == .cancelled { throw ConsoleWaitError.cancelled }
            detail += "; nothing printed within \(format(afterChoiceTimeout.seconds)) s"
        }
        return StageOutcome(detail: detail)
    }
}
