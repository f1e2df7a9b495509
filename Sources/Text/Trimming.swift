/// The one trimming helper of the agent (the standard library has none, and Foundation's stays
/// out of the daemon).
extension StringProtocol {
    /// Without the given characters at either end, compared by Unicode scalar: "\r\n" is one
    /// `Character`, so a set of "\n" alone would not strip it by character.
    public func trimming(_ set: String) -> String {
        let strip = Set(set.unicodeScalars)
        var s = Substring(self).unicodeScalars
        while let f = s.first, strip.contains(f) { s.removeFirst() }
        while let l = s.last, strip.contains(l) { s.removeLast() }
        return String(s)
    }

    /// Without spaces and tabs at either end.
    public var trimmingBlanks: String { trimming(" \t") }

    /// Without blanks and line breaks at either end.
    public var trimmingWhitespace: String { trimming(" \t\r\n\u{0B}\u{0C}") }
}
