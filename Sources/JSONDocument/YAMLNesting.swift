/// How deeply a YAML text nests, found by a scan of the text before any parser sees it: the YAML
/// parser and the tree built from it recurse once per level, and a document nested some
/// thousands of levels deep (`[[[[…]]]]`) overflows the stack of whatever thread parses it.
/// Configs and run specs need a handful of levels; anything past `limit` is refused by name.
public enum YAMLNesting {
    public static let limit = 64

    /// The deepest level the text reaches and the 1-based line where it first gets there.
    /// Counts flow collections (`[`, `{` outside quotes and comments), block indentation levels
    /// and `- ` / `? ` entries that open a collection on the same line; block scalar contents
    /// (after `|` or `>`) are text and are skipped.
    public static func deepest(in text: String) -> (depth: Int, line: Int) {
        var best = (depth: 0, line: 0)
        var indents: [Int] = []           // open block levels by indentation
        var flow = 0                      // open flow collections, across lines
        var blockScalarIndent: Int?       // inside a block scalar whose parent had this indentation
        var lineNumber = 0
        for rawLine in text.utf8.split(separator: 0x0A, omittingEmptySubsequences: false) {
            lineNumber += 1
            let line = Array(rawLine)
            var i = 0
            while i < line.count, line[i] == 0x20 { i += 1 }
            let indent = i
            let blank = i >= line.count || line[i] == 0x0D || line[i] == 0x23  // empty or comment
            if let parent = blockScalarIndent {
                if blank || indent > parent { continue }
                blockScalarIndent = nil
            }
            if blank { continue }
            var depth = flow
            if flow == 0 {
                while let last = indents.last, last >= indent { indents.removeLast() }
                indents.append(indent)
                depth = indents.count
                // "- - - x" nests a sequence per marker on one line.
                while i + 1 < line.count, line[i] == 0x2D || line[i] == 0x3F, line[i + 1] == 0x20 {
                    depth += 1
                    i += 2
                    while i < line.count, line[i] == 0x20 { i += 1 }
                }
            }
            if depth > best.depth { best = (depth, lineNumber) }
            var previous: UInt8 = 0x20
            var lastSignificant: UInt8 = 0x20  // 0x20: nothing yet on this line
            while i < line.count {
                let c = line[i]
                // A quote opens a quoted scalar only where a scalar can start.
                if c == 0x22 || c == 0x27, [0x20, 0x3A, 0x2D, 0x5B, 0x7B, 0x2C, 0x3F].contains(lastSignificant) {
                    i += 1
                    while i < line.count {
                        if c == 0x22 && line[i] == 0x5C { i += 2; continue }
                        if line[i] == c {
                            if c == 0x27 && i + 1 < line.count && line[i + 1] == 0x27 { i += 2; continue }
                            break
                        }
                        i += 1
                    }
                    i += 1
                    previous = c; lastSignificant = c
                    continue
                }
                if c == 0x23 && previous == 0x20 { break }  // comment
                if c == 0x5B || c == 0x7B {
                    flow += 1
                    if indents.count + flow > best.depth { best = (indents.count + flow, lineNumber) }
                } else if (c == 0x5D || c == 0x7D) && flow > 0 {
                    flow -= 1
                }
                if c != 0x20 { lastSignificant = c }
                previous = c
                i += 1
            }
            // `key: |`, `- >-`, `|2`: the lines that follow, indented deeper, are text.
            if flow == 0, let marker = line.lastIndex(where: { $0 != 0x20 && $0 != 0x0D }) {
                var j = marker
                while j > 0, line[j] == 0x2D || line[j] == 0x2B || (0x30...0x39).contains(line[j]) { j -= 1 }
                if line[j] == 0x7C || line[j] == 0x3E, j == 0 || line[j - 1] == 0x20 { blockScalarIndent = indent }
            }
        }
        return best
    }
}
