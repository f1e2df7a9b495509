import YAML

/// Walks a YAML mapping with typed accessors that report the exact key path on error,
/// and rejects keys nobody read (a typo in a config must not be silently ignored).
struct YAMLReader {
    let file: String
    let path: String
    let node: Node
    private let mapping: Node.Mapping?
    private var knownKeys: Set<String> = []

    init(file: String, path: String, node: Node) throws(ConfigError) {
        self.file = file; self.path = path; self.node = node
        guard let m = node.mapping else {
            throw ConfigError(file: file, keyPath: path, message: "expected a mapping, got \(YAMLReader.describe(node))", line: node.mark.map { $0.line })
        }
        // Last-wins duplicates hide mistakes (two `relay:` lines, one of them ignored): refused.
        var seen: [String: Node] = [:]
        for (k, _) in m {
            guard let key = k.string else { continue }
            if let first = seen[key] {
                let lines = [first, k].compactMap { $0.mark.map { String($0.line) } }.joined(separator: " and ")
                throw ConfigError(file: file, keyPath: path.isEmpty ? key : "\(path).\(key)",
                                  message: "appears twice (lines \(lines)); keep one", line: k.mark.map { $0.line })
            }
            seen[key] = k
        }
        mapping = m
    }

    func child(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    static func describe(_ node: Node) -> String {
        switch node {
        case .scalar(let s):
            if s.style == .plain && ["", "~", "null", "Null", "NULL"].contains(s.string) { return "null" }
            return "\"\(s.string)\""
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        }
    }

    func error(_ key: String, _ message: String, at node: Node? = nil) -> ConfigError {
        ConfigError(file: file, keyPath: child(key), message: message, line: (node ?? self.node).mark.map { $0.line })
    }

    mutating func raw(_ key: String) -> Node? {
        knownKeys.insert(key)
        return mapping?[Node(key)]
    }

    var keys: [String] { mapping?.keys.compactMap { $0.string } ?? [] }

    mutating func string(_ key: String) throws(ConfigError) -> String? {
        guard let n = raw(key) else { return nil }
        guard case .scalar(let s) = n, YAMLReader.describe(n) != "null" else {
            throw error(key, "expected a string, got \(YAMLReader.describe(n))", at: n)
        }
        return s.string
    }

    mutating func string(_ key: String, default value: String) throws(ConfigError) -> String {
        try string(key) ?? value
    }

    mutating func requiredString(_ key: String) throws(ConfigError) -> String {
        guard let s = try string(key) else { throw error(key, "is required") }
        guard !s.isEmpty else { throw error(key, "must not be empty") }
        return s
    }

    mutating func int(_ key: String) throws(ConfigError) -> Int? {
        guard let n = raw(key) else { return nil }
        guard case .scalar(let s) = n, s.style == .plain, let v = Int(s.string.filter { $0 != "_" }) else {
            throw error(key, "expected an integer, got \(YAMLReader.describe(n))", at: n)
        }
        return v
    }

    mutating func int(_ key: String, default value: Int, range: ClosedRange<Int>? = nil) throws(ConfigError) -> Int {
        let v = try int(key) ?? value
        if let range, !range.contains(v) {
            throw error(key, "must be between \(range.lowerBound) and \(range.upperBound), got \(v)")
        }
        return v
    }

    /// For sizes and durations that can pass 2^31: 64-bit whatever the board's word size.
    mutating func int64(_ key: String, default value: Int64, range: ClosedRange<Int64>) throws(ConfigError) -> Int64 {
        guard let n = raw(key) else { return value }
        guard case .scalar(let s) = n, s.style == .plain, let v = Int64(s.string.filter { $0 != "_" }) else {
            throw error(key, "expected an integer, got \(YAMLReader.describe(n))", at: n)
        }
        guard range.contains(v) else { throw error(key, "must be between \(range.lowerBound) and \(range.upperBound), got \(v)") }
        return v
    }

    mutating func double(_ key: String) throws(ConfigError) -> Double? {
        guard let n = raw(key) else { return nil }
        guard case .scalar(let s) = n, s.style == .plain, let v = Double(s.string) else {
            throw error(key, "expected a number, got \(YAMLReader.describe(n))", at: n)
        }
        return v
    }

    mutating func bool(_ key: String, default value: Bool) throws(ConfigError) -> Bool {
        guard let n = raw(key) else { return value }
        guard case .scalar(let s) = n, s.style == .plain else {
            throw error(key, "expected true or false, got \(YAMLReader.describe(n))", at: n)
        }
        switch s.string.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default: throw error(key, "expected true or false, got \(YAMLReader.describe(n))", at: n)
        }
    }

    mutating func choice<E: RawRepresentable & CaseIterable>(_ key: String, default value: E) throws(ConfigError) -> E where E.RawValue == String {
        guard let s = try string(key) else { return value }
        guard let v = E(rawValue: s) else {
            let allowed = E.allCases.map { $0.rawValue }.joined(separator: ", ")
            throw error(key, "expected one of \(allowed), got \"\(s)\"")
        }
        return v
    }

    mutating func section(_ key: String) throws(ConfigError) -> YAMLReader? {
        guard let n = raw(key) else { return nil }
        if YAMLReader.describe(n) == "null" { return nil }
        return try YAMLReader(file: file, path: child(key), node: n)
    }

    mutating func list(_ key: String) throws(ConfigError) -> [(String, Node)] {
        guard let n = raw(key) else { return [] }
        guard case .sequence(let seq) = n else { throw error(key, "expected a list, got \(YAMLReader.describe(n))", at: n) }
        return seq.enumerated().map { ("\(child(key))[\($0.offset)]", $0.element) }
    }

    mutating func stringList(_ key: String) throws(ConfigError) -> [String] {
        var out: [String] = []
        for (p, n) in try list(key) {
            guard case .scalar(let s) = n else {
                throw ConfigError(file: file, keyPath: p, message: "expected a string, got \(YAMLReader.describe(n))", line: n.mark.map { $0.line })
            }
            out.append(s.string)
        }
        return out
    }

    /// Fails on the first key that no accessor asked for.
    func rejectUnknownKeys() throws(ConfigError) {
        for key in keys where !knownKeys.contains(key) {
            let n = mapping?[Node(key)]
            throw ConfigError(file: file, keyPath: child(key), message: "unknown key (allowed: \(knownKeys.sorted().joined(separator: ", ")))", line: n?.mark.map { $0.line })
        }
    }
}
