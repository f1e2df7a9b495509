import CYAML

// The only file that talks to libyaml (the system's `libyaml-0-2`): a YAML text becomes a tree
// of nodes with their line and column, for the config reader and the run specs. It replaces a
// Swift YAML package that pulled all of Foundation (and ICU) into the daemon.

/// Where a node starts in the text, 1-based.
public struct Mark: Sendable, Equatable, CustomStringConvertible {
    public var line: Int
    public var column: Int
    public init(line: Int, column: Int) { self.line = line; self.column = column }
    public var description: String { "\(line):\(column)" }
}

/// A YAML document's node: a scalar (its text and how it was written), a mapping or a list.
public enum Node: Sendable, Equatable {
    case scalar(Scalar)
    case mapping(Mapping)
    case sequence(Sequence)

    public struct Scalar: Sendable, Equatable {
        public enum Style: Sendable, Equatable { case plain, singleQuoted, doubleQuoted, literal, folded }
        public var string: String
        public var style: Style
        public var mark: Mark?
        public init(_ string: String, style: Style = .plain, mark: Mark? = nil) { self.string = string; self.style = style; self.mark = mark }
    }

    /// Key–value pairs in document order.
    public struct Mapping: Sendable, Equatable, Swift.Sequence {
        public var pairs: [(key: Node, value: Node)]
        public var mark: Mark?
        public init(_ pairs: [(Node, Node)], mark: Mark? = nil) { self.pairs = pairs.map { (key: $0.0, value: $0.1) }; self.mark = mark }
        public func makeIterator() -> IndexingIterator<[(key: Node, value: Node)]> { pairs.makeIterator() }
        public var keys: [Node] { pairs.map(\.key) }
        /// The value of the last pair whose key is a scalar with `key`'s text.
        public subscript(key: Node) -> Node? {
            guard let wanted = key.string else { return nil }
            return pairs.last { $0.key.string == wanted }?.value
        }
        public static func == (a: Mapping, b: Mapping) -> Bool {
            a.pairs.count == b.pairs.count && zip(a.pairs, b.pairs).allSatisfy { $0.key == $1.key && $0.value == $1.value }
        }
    }

    public struct Sequence: Sendable, Equatable, Swift.Sequence {
        public var items: [Node]
        public var mark: Mark?
        public init(_ items: [Node], mark: Mark? = nil) { self.items = items; self.mark = mark }
        public func makeIterator() -> IndexingIterator<[Node]> { items.makeIterator() }
    }

    /// A plain scalar (e.g. a key to look up).
    public init(_ string: String) { self = .scalar(Scalar(string)) }

    public var mapping: Mapping? { if case .mapping(let m) = self { return m }; return nil }
    public var string: String? { if case .scalar(let s) = self { return s.string }; return nil }
    public var mark: Mark? {
        switch self {
        case .scalar(let s): s.mark
        case .mapping(let m): m.mark
        case .sequence(let q): q.mark
        }
    }
}

/// Text that is not YAML, or a document past the limits, with where it went wrong.
public struct YAMLError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public var mark: Mark?
    public var description: String { (mark.map { "line \($0.line), column \($0.column): " } ?? "") + message }
}

public enum YAML {
    /// Deepest nesting accepted (the tree is built iteratively; consumers recurse over it).
    public static let maxDepth = 64
    /// Nodes a document may become once aliases are expanded (a "billion laughs" text is refused).
    public static let maxNodes = 1_000_000

    /// The first document of `text`, or nil when it has none.
    public static func compose(yaml text: String) throws(YAMLError) -> Node? {
        var parser = yaml_parser_t()
        guard yaml_parser_initialize(&parser) != 0 else { throw YAMLError(message: "libyaml could not start", mark: nil) }
        defer { yaml_parser_delete(&parser) }
        let bytes = Array(text.utf8)
        return try bytes.withUnsafeBufferPointer { (buf) throws(YAMLError) -> Node? in
            yaml_parser_set_input_string(&parser, buf.baseAddress ?? UnsafePointer(bitPattern: 1)!, buf.count)
            return try build(&parser)
        }
    }

    /// A collection being filled: its items, and for a mapping a key waiting for its value.
    private struct Open {
        var isMapping: Bool
        var items: [Node] = []
        var pairs: [(Node, Node)] = []
        var pendingKey: Node?
        var anchor: String?
        var mark: Mark
    }

    private static func build(_ parser: inout yaml_parser_t) throws(YAMLError) -> Node? {
        var stack: [Open] = []
        var anchors: [String: (node: Node, size: Int)] = [:]
        var nodes = 0
        var root: Node?
        var inDocument = false

        func mark(_ m: yaml_mark_t) -> Mark { Mark(line: Int(m.line) + 1, column: Int(m.column) + 1) }
        func string(_ p: UnsafeMutablePointer<yaml_char_t>?, _ n: Int) -> String {
            guard let p else { return "" }
            return String(decoding: UnsafeBufferPointer(start: p, count: n), as: UTF8.self)
        }
        func cString(_ p: UnsafeMutablePointer<yaml_char_t>?) -> String? {
            guard let p else { return nil }
            return String(cString: UnsafeRawPointer(p).assumingMemoryBound(to: CChar.self))
        }
        /// Puts a finished node where it belongs: the root, a list, or a mapping's key or value.
        func place(_ node: Node, size: Int, anchor: String?) throws(YAMLError) {
            if let anchor { anchors[anchor] = (node, size) }
            guard !stack.isEmpty else { root = node; return }
            if stack[stack.count - 1].isMapping {
                if let key = stack[stack.count - 1].pendingKey {
                    stack[stack.count - 1].pairs.append((key, node))
                    stack[stack.count - 1].pendingKey = nil
                } else {
                    stack[stack.count - 1].pendingKey = node
                }
            } else {
                stack[stack.count - 1].items.append(node)
            }
        }
        func count(_ n: Int, at m: Mark) throws(YAMLError) {
            nodes += n
            if nodes > maxNodes { throw YAMLError(message: "the document becomes more than \(maxNodes) nodes (aliases expanding?); refused", mark: m) }
        }
        // Sizes of open collections' subtrees, for anchors on them.
        var sizes: [Int] = []

        while true {
            var event = yaml_event_t()
            guard yaml_parser_parse(&parser, &event) != 0 else {
                let problem = parser.problem.map { String(cString: $0) } ?? "not valid YAML"
                let context = parser.context.map { String(cString: $0) + ": " } ?? ""
                throw YAMLError(message: context + problem, mark: mark(parser.problem_mark))
            }
            defer { yaml_event_delete(&event) }
            let m = mark(event.start_mark)
            switch event.type {
            case YAML_STREAM_END_EVENT:
                return root
            case YAML_DOCUMENT_START_EVENT:
                if inDocument || root != nil { return root }  // only the first document
                inDocument = true
            case YAML_DOCUMENT_END_EVENT:
                return root
            case YAML_SCALAR_EVENT:
                let s = event.data.scalar
                let style: Node.Scalar.Style = switch s.style {
                case YAML_SINGLE_QUOTED_SCALAR_STYLE: .singleQuoted
                case YAML_DOUBLE_QUOTED_SCALAR_STYLE: .doubleQuoted
                case YAML_LITERAL_SCALAR_STYLE: .literal
                case YAML_FOLDED_SCALAR_STYLE: .folded
                default: .plain
                }
                try count(1, at: m)
                try place(.scalar(Node.Scalar(string(s.value, Int(s.length)), style: style, mark: m)), size: 1, anchor: cString(s.anchor))
                for i in sizes.indices { sizes[i] += 1 }
            case YAML_SEQUENCE_START_EVENT, YAML_MAPPING_START_EVENT:
                guard stack.count < maxDepth else { throw YAMLError(message: "nested more than \(maxDepth) levels deep; refused", mark: m) }
                let isMapping = event.type == YAML_MAPPING_START_EVENT
                let anchor = isMapping ? cString(event.data.mapping_start.anchor) : cString(event.data.sequence_start.anchor)
                try count(1, at: m)
                for i in sizes.indices { sizes[i] += 1 }
                stack.append(Open(isMapping: isMapping, anchor: anchor, mark: m))
                sizes.append(1)
            case YAML_SEQUENCE_END_EVENT, YAML_MAPPING_END_EVENT:
                guard let open = stack.popLast(), let size = sizes.popLast() else { throw YAMLError(message: "unbalanced collection", mark: m) }
                let node: Node = open.isMapping ? .mapping(Node.Mapping(open.pairs, mark: open.mark)) : .sequence(Node.Sequence(open.items, mark: open.mark))
                try place(node, size: size, anchor: open.anchor)
            case YAML_ALIAS_EVENT:
                let name = cString(event.data.alias.anchor) ?? ""
                guard let target = anchors[name] else { throw YAMLError(message: "alias *\(name) names no anchor", mark: m) }
                try count(target.size, at: m)
                for i in sizes.indices { sizes[i] += target.size }
                try place(target.node, size: target.size, anchor: nil)
            default:
                break
            }
        }
    }
}
