import FirmwareUI
import Foundation
import Terminal
import Testing

func fixture(_ name: String) throws -> [UInt8] {
    let url = Bundle.module.url(forResource: "Fixtures/\(name)", withExtension: nil)!
    return Array(try Data(contentsOf: url))
}

/// The fixture's bytes up to (not including) the first occurrence of `marker`.
func prefix(_ bytes: [UInt8], before marker: String) -> [UInt8] {
    let m = Array(marker.utf8)
    for i in 0...(bytes.count - m.count) where bytes[i..<(i + m.count)].elementsEqual(m) { return Array(bytes[..<i]) }
    return bytes
}

@Suite struct TerminalModelTests {
    @Test func realIPXEMenuIsReadWithTitleItemsGapAndTheNavigatedSelection() throws {
        // Captured from QEMU (SeaBIOS 1.16.2 + iPXE): menu drawn, Down, Down, Up, Down, then Enter.
        let bytes = prefix(try fixture("qemu-ipxe-menu-navigate.bin"), before: "\r\n\n\n\n\n\n\n")
        var t = Terminal()
        t.feed(bytes)
        let menu = try #require(IPXEMenu.read(from: t.screen))
        #expect(menu.title == "3mdeb lab boot menu")
        #expect(menu.items.map(\.label) == ["--- Boot options ---", "Debian stable netinst", "Xen Linux dev", "Xen Linux release",
                                             "Linux kernel dev", "iPXE shell"])
        #expect(menu.items.map(\.isGap) == [true, false, false, false, false, false])
        #expect(menu.selected?.label == "Xen Linux release")
        #expect(menu.selected?.row == 6)  // ESC[07;02H: row 7, 1-based
        #expect(menu.isComplete && !menu.moreAbove && !menu.moreBelow)
        #expect(LabelMatch.find("xen linux DEV", in: menu.selectable.map(\.label), width: menu.labelWidth) == .ignoringCase(1))
        #expect(t.screen.cell(row: 6, column: 3).attributes == CellAttributes(bold: true, background: 1))
        #expect(t.screen.cell(row: 5, column: 3).attributes.background == 4)
        #expect(!t.screen.cursorVisible || t.screen.cursorVisible)  // iPXE leaves the cursor as it is
    }

    @Test func countdownIsNotPartOfTheDefaultItemsLabel() throws {
        let bytes = prefix(try fixture("qemu-ipxe-shell-chain.bin"), before: "\r\n\n\n\n\n\n\n")
        var t = Terminal()
        t.feed(bytes)
        let menu = try #require(IPXEMenu.read(from: t.screen))
        #expect(menu.selected?.label == "Debian stable netinst")
        #expect(t.screen.text(row: 4).hasSuffix("Debian stable netinst"))  // the "(9)" was overwritten when the countdown stopped
        #expect(t.lines.tail(400).contains("Configuring (net0 52:54:00:12:34:56)...... ok"))
        #expect(t.lines.tail(400).contains("\"net7\": no such network device"))
    }

    /// Issue 15 (1): a trailing "(N)" was cut from every row, so "Xen Linux dev (2)" read as
    /// "Xen Linux dev" and the wrong entry booted. Only the countdown iPXE right-aligns in the
    /// highlighted row is not part of a label.
    @Test func aLabelEndingInANumberInParenthesesIsALabel() throws {
        func row(_ n: Int, _ attr: String, _ label: String, countdown: String? = nil) -> String {
            var text = Array(("  " + label).padding(toLength: 78, withPad: " ", startingAt: 0))
            if let countdown { let m = Array(countdown); text.replaceSubrange((76 - m.count)..<76, with: m) }
            return "\u{1b}[\(n < 10 ? "0" : "")\(n);02H\(attr)" + String(text)
        }
        let labels = ["Xen Linux dev (2)", "Xen Linux dev", "Xen Linux dev (debug)", "Xen Linux dev-old", "Xen Linux (3)"]
        // Drawn as the QEMU rig's iPXE draws it: the default item highlighted with its countdown.
        var bytes = "\u{1b}[2J\u{1b}[0;44m\u{1b}[2J\u{1b}[01;30H\u{1b}[0;44;1mlab menu"
        for (i, l) in labels.enumerated() {
            bytes += row(i + 4, i == 0 ? "\u{1b}[0;41;1m" : "\u{1b}[0;44m", l, countdown: i == 0 ? "(10)" : nil)
        }
        var t = Terminal()
        t.feed(Array(bytes.utf8))
        let menu = try #require(IPXEMenu.read(from: t.screen))
        #expect(menu.items.map(\.label) == labels)
        #expect(menu.selected?.label == "Xen Linux dev (2)")
        #expect(LabelMatch.find("Xen Linux dev", in: menu.selectable.map(\.label), width: menu.labelWidth) == .exact(1), "the exact label, not the (2) one")
        // After the first key the countdown is gone and the row is redrawn: still the same label.
        var after = Terminal()
        after.feed(Array((bytes + row(4, "\u{1b}[0;41;1m", labels[0])).utf8))
        #expect(IPXEMenu.read(from: after.screen)?.selected?.label == "Xen Linux dev (2)")
    }

    /// Issue 15 (2): a 50-entry menu on the QEMU rig's iPXE, default in the middle. The window's
    /// geometry and drawing order the navigator relies on, checked against the real bytes: "..."
    /// markers on rows 2 and 23, items on rows 3–22, markers first, the last item row last.
    @Test func aLongMenusWindowIsReadWithItsMarkersAndIsCompleteOnlyOnceItsLastRowIsDrawn() throws {
        let bytes = try fixture("qemu-ipxe-menu-page-down.bin")
        var t = Terminal()
        t.feed(bytes)
        let menu = try #require(IPXEMenu.read(from: t.screen))
        let rows = (topMarker: IPXELayout.markerRows(rows: 25).above, lastItem: IPXELayout.lastItemRow(rows: 25), bottomMarker: IPXELayout.markerRows(rows: 25).below)
        #expect(t.screen.rows == 25 && rows == (2, 22, 23))
        #expect(menu.moreAbove && menu.moreBelow)
        #expect(menu.selectable.map(\.label) == (20...39).map { "Entry \($0)" })
        #expect(menu.selected?.label == "Entry 26", "the countdown is not part of the label")
        #expect(menu.countdown == 3 && menu.isComplete)
        #expect(t.screen.text(row: rows.lastItem).trimmingCharacters(in: .whitespaces) == "Entry 39")
        // Cut right after the highlighted row: the markers are there, the last item row is not yet.
        let cut = try #require(bytes.firstRange(of: Array("\u{1b}[11;02H".utf8))).lowerBound
        var partial = Terminal()
        partial.feed(Array(bytes[..<cut]))
        #expect(IPXEMenu.read(from: partial.screen)?.selected?.label == "Entry 26")
        #expect(IPXEMenu.read(from: partial.screen)?.isComplete == false, "issue 15 (4): a menu still being drawn is not read as complete")
        #expect(partial.screen.text(row: rows.topMarker).contains("...") && partial.screen.text(row: rows.bottomMarker).contains("..."))
        #expect(partial.screen.text(row: rows.lastItem).trimmingCharacters(in: .whitespaces).isEmpty, "not drawn yet: not complete")
    }

    @Test func splittingTheRealBytesAtEveryBoundaryGivesTheSameScreenAndText() throws {
        for name in ["qemu-ipxe-menu-navigate.bin", "qemu-ipxe-shell-chain.bin"] {
            let bytes = try fixture(name)
            var whole = Terminal()
            let wholeText = whole.feed(bytes)
            for cut in 0...bytes.count {
                var t = Terminal()
                var text = t.feed(bytes[..<cut])
                let rest = t.feed(bytes[cut...])
                text.append(contentsOf: rest)
                #expect(t.screen == whole.screen, "\(name) split at \(cut)")
                #expect(text == wholeText, "\(name) split at \(cut)")
                if t.screen != whole.screen || text != wholeText { return }
            }
        }
    }

    @Test func aRealLinuxBootAndLoginReadTheSameByteByByteAsWhole() throws {
        // QEMU apu2 rig: SeaBIOS, iPXE menu (two Downs), kernel log, getty login, a command.
        let bytes = try fixture("qemu-linux-boot-login.bin")
        var whole = Terminal()
        let wholeText = whole.feed(bytes)
        // One byte at a time crosses every possible boundary in one pass.
        var t = Terminal()
        var text = TextChunk()
        for b in bytes {
            let c = t.feed([b])
            text.append(contentsOf: c)
        }
        #expect(t.screen == whole.screen)
        #expect(text == wholeText)
        let lines = whole.lines.tail(400)
        #expect(wholeText.string.contains("] Linux version 6.1.0-"))
        #expect(wholeText.string.contains("Command line: console=ttyS0,115200 rte.entry=xen-linux-dev\r\n"))
        #expect(lines.contains("apu2 login: root"))
        #expect(lines.contains("console=ttyS0,115200 rte.entry=xen-linux-dev"))
        #expect(whole.screen.text(row: whole.screen.cursorRow).hasPrefix("root@apu2:~#"))
        // The kernel's RIS (ESC c) wiped iPXE's blue menu: nothing highlighted is left.
        #expect(IPXEMenu.read(from: whole.screen) == nil)
    }

    /// Printable runs are drawn a row at a time; the screen must be the same as drawing each
    /// character on its own (a no-op sequence between characters makes every run one long).
    @Test func drawingRunsEqualsDrawingCharacterByCharacterWithAndWithoutWrap() {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<300 {
            var parts: [String] = []
            for _ in 0..<Int.random(in: 1...6, using: &rng) {
                let wrap = Bool.random(using: &rng) ? "\u{1b}[?7h" : "\u{1b}[?7l"
                let at = "\u{1b}[\(Int.random(in: 1...5, using: &rng));\(Int.random(in: 1...10, using: &rng))H"
                let text = String((0..<Int.random(in: 0...35, using: &rng)).map { _ in Character(Unicode.Scalar(UInt8.random(in: 0x21...0x7e, using: &rng))) })
                parts.append(wrap + at + text)
            }
            var runs = Terminal(rows: 5, columns: 10)
            var single = Terminal(rows: 5, columns: 10)
            runs.feed(Array(parts.joined().utf8))
            for p in parts {
                // Split each part's text into one-character runs; its escape sequences stay whole.
                let head = p.prefix { $0 != "H" } + "H"
                single.feed(Array(head.utf8))
                for c in p.dropFirst(head.count) { single.feed(Array("\(c)\u{1b}[?25h".utf8)) }
            }
            #expect(runs.screen == single.screen, "\(parts)")
            if runs.screen != single.screen { return }
        }
    }

    @Test func textStreamDropsEscapesAndKeepsCaptureOffsets() {
        var t = Terminal(offset: 1000)
        let text = t.feed(Array("a\u{1b}[0;41;1mb\u{1b}]0;title\u{07}c\r\n".utf8))
        #expect(text.string == "abc\r\n")
        #expect(text.offsets == [1000, 1010, 1021, 1022, 1023])
        #expect(t.offset == 1024)
    }

    @Test func cursorAddressingEraseScrollAndWrap() {
        var t = Terminal(rows: 4, columns: 10)
        t.feed(Array("\u{1b}[2;3HXY\u{1b}[1;1Habc\u{1b}[K".utf8))
        #expect(t.screen.text(row: 0) == "abc")
        #expect(t.screen.text(row: 1) == "  XY")
        t.feed(Array("\u{1b}[2J\u{1b}[H0123456789wrap".utf8))
        #expect(t.screen.text(row: 0) == "0123456789")
        #expect(t.screen.text(row: 1) == "wrap")
        t.feed(Array("\r\nl3\r\nl4\r\nl5".utf8))  // scrolls the first line off
        #expect(t.screen.text(row: 0) == "wrap")
        #expect(t.screen.text(row: 3) == "l5")
        t.feed(Array("\u{1b}[?7l\u{1b}[4;1H0123456789ZZ".utf8))  // autowrap off: the last column is overwritten
        #expect(t.screen.text(row: 3) == "012345678Z")
        t.feed(Array("\u{1b}[1;1Hab\u{8}X\tT".utf8))
        #expect(t.screen.text(row: 0) == "aXap    T")  // TAB moves, it does not erase
        t.feed(Array("\u{1b}[?25l".utf8))
        #expect(!t.screen.cursorVisible)
        t.feed(Array("\u{1b}[7m\u{1b}[2;1HR\u{1b}[27;32;104mG".utf8))
        #expect(t.screen.cell(row: 1, column: 0).attributes.reverse)
        #expect(t.screen.cell(row: 1, column: 1).attributes == CellAttributes(foreground: 2, background: 12))
    }

    @Test func utf8IsDecodedEvenWhenSplit() {
        var t = Terminal()
        let bytes = Array("zażółć".utf8)
        for b in bytes { t.feed([b]) }
        #expect(t.screen.text(row: 0) == "zażółć")
    }

    @Test func randomInputNeverCrashesAndKeepsTheCursorOnScreen() {
        var rng = SystemRandomNumberGenerator()
        let alphabet: [UInt8] = Array("\u{1b}[;?0123456789HJKmABCDrsu()#]\u{07}\u{18}\r\n\u{8}\tabc".utf8) + [0xff, 0xc3, 0x80, 0xe2]
        for _ in 0..<300 {
            var t = Terminal(rows: Int.random(in: 1...30, using: &rng), columns: Int.random(in: 1...100, using: &rng))
            var chunk: [UInt8] = []
            for _ in 0..<Int.random(in: 0...3000, using: &rng) {
                chunk.append(Bool.random(using: &rng) ? alphabet.randomElement(using: &rng)! : UInt8.random(in: 0...255, using: &rng))
            }
            t.feed(chunk)
            _ = IPXEMenu.read(from: t.screen)
            #expect(t.screen.cursorRow < t.screen.rows && t.screen.cursorColumn < t.screen.columns)
        }
    }

    @Test func hugeParametersAreClampedNotOverflowed() {
        var t = Terminal()
        t.feed(Array("\u{1b}[99999999999999999999999;99999999999999999999999H\u{1b}[99999999999999999999L\u{1b}[9999999999999999999999999999m".utf8))
        #expect(t.screen.cursorRow == 24 && t.screen.cursorColumn == 79)
    }

    @Test func firmwareBootMenuEntryIsFoundByLabel() {
        let lines = ["Select boot device:", "", "1. USB MSC Drive Generic Flash Disk 8.07", "2. AHCI/0: SATA SSD", "3. iPXE (PCI 00:00.0)"]
        let menu = FirmwareBootMenu.read(lines: lines)
        #expect(menu.entries.map(\.key) == Array("123".utf8))
        guard case .ignoringCase(let i) = menu.find("ipxe (pci 00:00.0)") else { Issue.record("not found"); return }
        #expect(menu.entries[i].key == UInt8(ascii: "3"))
        #expect(menu.find("ipxe") == .missing, "exact labels: a part of one is not a match")
    }
}
