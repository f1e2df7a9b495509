/// Keys as a serial console sends them (VT100/xterm encodings, what SeaBIOS' serial console
/// and iPXE decode).
public enum Key: String, Sendable, CaseIterable, Codable {
    case enter, escape, up, down, left, right, ctrlB = "ctrl-b", ctrlC = "ctrl-c"
    case f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, delete, tab, space

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
        default:
            guard let k = Key(rawValue: n) else { return nil }
            self = k
        }
    }
}

/// Reading the firmware's own boot menu (SeaBIOS "Select boot device:" lists "N. label").
public enum FirmwareBootMenu {
    /// The digit to press for the entry whose label contains `entry` (case-insensitive), from
    /// the lines of the menu; nil when no line matches. Also returns every label seen.
    public static func choose(_ entry: String, in lines: [String]) -> (key: UInt8?, labels: [String]) {
        var labels: [String] = []
        var key: UInt8?
        for line in lines {
            let t = line.trimmingBlanks
            guard t.count > 3, let first = t.unicodeScalars.first, ("1"..."9").contains(first) || ("a"..."z").contains(first),
                  t.unicodeScalars.dropFirst().first == ".", t.unicodeScalars.dropFirst(2).first == " " else { continue }
            let label = String(t.dropFirst(3))
            labels.append(label)
            if key == nil && label.lowercased().contains(entry.lowercased()) { key = UInt8(first.value) }
        }
        return (key, labels)
    }
}
