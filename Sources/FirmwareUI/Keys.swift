import Text
/// Keys as a serial console sends them (VT100/xterm encodings, what SeaBIOS' serial console
/// and iPXE decode).
public enum Key: String, Sendable, CaseIterable, Codable {
    case enter, escape, up, down, left, right, ctrlB = "ctrl-b", ctrlC = "ctrl-c"
    case f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, delete, tab, space
    case pageUp = "page-up", pageDown = "page-down"

    public var bytes: [UInt8] {
        switch self {
        case .enter: [0x0d]
        case .escape: [0x1b]
        case .up: Array("\u{1b}[A".utf8)
        case .down: Array("\u{1b}[B".utf8)
        case .right: Array("\u{1b}[C".utf8)
        case .left: Array("\u{1b}[D".utf8)
        case .ctrlB: [0x02]
        case .ctrlC: [0x03]
        case .f1: Array("\u{1b}OP".utf8)
        case .f2: Array("\u{1b}OQ".utf8)
        case .f3: Array("\u{1b}OR".utf8)
        case .f4: Array("\u{1b}OS".utf8)
        case .f5: Array("\u{1b}[15~".utf8)
        case .f6: Array("\u{1b}[17~".utf8)
        case .f7: Array("\u{1b}[18~".utf8)
        case .f8: Array("\u{1b}[19~".utf8)
        case .f9: Array("\u{1b}[20~".utf8)
        case .f10: Array("\u{1b}[21~".utf8)
        case .f11: Array("\u{1b}[23~".utf8)
        case .f12: Array("\u{1b}[24~".utf8)
        case .delete: Array("\u{1b}[3~".utf8)
        case .tab: [0x09]
        case .space: [0x20]
        case .pageUp: Array("\u{1b}[5~".utf8)
        case .pageDown: Array("\u{1b}[6~".utf8)
        }
    }

    /// Parses "F10", "esc", "ctrl-b", "Enter".
    public init?(name: String) {
        let n = String(name.lowercased().map { $0 == "_" ? "-" : $0 })
        switch n {
        case "esc": self = .escape
        case "return", "cr": self = .enter
        case "ctrl+b", "^b": self = .ctrlB
        case "ctrl+c", "^c": self = .ctrlC
        case "del": self = .delete
        case "pgup", "pageup": self = .pageUp
        case "pgdn", "pagedown": self = .pageDown
        default:
            guard let k = Key(rawValue: n) else { return nil }
            self = k
        }
    }
}

/// The firmware's own boot menu as SeaBIOS prints it: "Select boot device:", a blank line,
/// then one "K. label" line per device, K being 1–9 then a–z (`menuchars` in SeaBIOS' boot.c),
/// each label cut at 76 characters. The list is plain lines, not a screen: a list longer than
/// the screen scrolls, so it is read from the text stream.
public struct FirmwareBootMenu: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        public var key: UInt8
        public var label: String
    }
    public var entries: [Entry] = []
    public static let labelWidth = 76

    public init(entries: [Entry] = []) { self.entries = entries }

    /// The entry of a "K. label" line, nil for any other line.
    public static func entry(inLine line: String) -> Entry? {
        let t = Substring(line.trimmingBlanks)
        let s = t.unicodeScalars
        guard s.count > 3, let first = s.first, ("1"..."9").contains(first) || ("a"..."z").contains(first),
              s.dropFirst().first == ".", s.dropFirst(2).first == " " else { return nil }
        return Entry(key: UInt8(first.value), label: String(String.UnicodeScalarView(s.dropFirst(3))))
    }

    /// The entries of the lines that are menu lines, in order.
    public static func read(lines: [String]) -> FirmwareBootMenu {
        FirmwareBootMenu(entries: lines.compactMap(entry(inLine:)))
    }

    public func find(_ wanted: String) -> LabelMatch {
        LabelMatch.find(wanted, in: entries.map(\.label), width: FirmwareBootMenu.labelWidth)
    }
}
