/// How a wanted label is found among the labels a menu shows, for the iPXE menu and the
/// firmware's boot menu alike. A menu shows each label cut at a width and (iPXE) with its words
/// joined by single spaces, so different labels can look the same on screen: a pick is made
/// only when exactly one entry can be what was asked for, and never on a guess.
public enum LabelMatch: Sendable, Equatable {
    /// Exactly one entry shows the wanted label.
    case exact(Int)
    /// No entry shows it exactly; exactly one does ignoring case.
    case ignoringCase(Int)
    /// No entry shows it, even ignoring case.
    case missing
    /// More than one entry shows it (`ignoringCase`: only when case is ignored).
    case ambiguous([Int], ignoringCase: Bool)
    /// The wanted label is wider than the menu shows labels: it cannot be told on screen.
    /// `showing` lists the entries that show its visible part.
    case wider(width: Int, showing: [Int])
    /// The entry shows the wanted label filling the whole width: a longer label cut there would
    /// look the same, so the screen cannot prove which one it is.
    case atWidth(Int, width: Int)

    /// Matches `wanted` against `labels` (as shown, in menu order), each at most `width` columns.
    public static func find(_ wanted: String, in labels: [String], width: Int) -> LabelMatch {
        let w = normalized(wanted)
        let shown = labels.map(normalized)
        if w.count > width {
            let visible = String(w.prefix(width))
            return .wider(width: width, showing: shown.indices.filter { shown[$0] == visible })
        }
        let exact = shown.indices.filter { shown[$0] == w }
        if exact.count > 1 { return .ambiguous(exact, ignoringCase: false) }
        if let i = exact.first { return shown[i].count >= width ? .atWidth(i, width: width) : .exact(i) }
        let lower = w.lowercased()
        let folded = shown.indices.filter { shown[$0].lowercased() == lower }
        if folded.count > 1 { return .ambiguous(folded, ignoringCase: true) }
        if let i = folded.first { return shown[i].count >= width ? .atWidth(i, width: width) : .ignoringCase(i) }
        return .missing
    }

    /// A label as a menu shows it: words joined by single spaces (iPXE's `item` joins its
    /// arguments that way), no blanks around.
    public static func normalized(_ label: String) -> String {
        label.split(whereSeparator: { $0 == " " || $0 == "\t" }).joined(separator: " ")
    }

    /// Why the match picks nothing, in words, given how to name entry `i` (nil when it picks one).
    public func problem(wanted: String, name: (Int) -> String) -> String? {
        let w = "\"" + LabelMatch.normalized(wanted) + "\""
        switch self {
        case .exact, .ignoringCase:
            return nil
        case .missing:
            return "no entry is labelled \(w)"
        case .ambiguous(let rows, let folded):
            return "\(w) is ambiguous: \(rows.map(name).joined(separator: " and ")) "
                + (folded ? "differ from it only in case" : "look exactly like it on screen") + "; nothing was chosen"
        case .wider(let width, let showing):
            return "\(w) is \(LabelMatch.normalized(wanted).count) characters, but the menu shows only the first \(width) of a label, "
                + "so the entry cannot be told on screen" + (showing.isEmpty ? "" : " (\(showing.map(name).joined(separator: " and ")) show those \(width))")
                + "; nothing was chosen"
        case .atWidth(let i, let width):
            return "\(name(i)) fills the whole \(width) columns the menu gives a label, so a longer label cut there would look the same; "
                + "the screen cannot prove it is \(w); nothing was chosen"
        }
    }
}
