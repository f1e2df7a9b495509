import YAML

/// A JSON value for documents whose shape is checked by hand (strict request bodies, problems).
public enum JSONValue: Sendable, Equatable, Codable {
    case null, bool(Bool), number(Double), string(String), array([JSONValue]), object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let n = try? c.decode(Double.self) { self = .number(n) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .number(let n): if n == n.rounded() && abs(n) < 1e15 { try c.encode(Int64(n)) } else { try c.encode(n) }
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }

    public func serialized() -> [UInt8] { tree.sortedMembers().text() }

    /// The same value as a JSON tree (numbers written as the encoder writes them).
    public var tree: JSONTree {
        switch self {
        case .null: .null
        case .bool(let b): .bool(b)
        case .number(let n): JSONTree.numberText(n).map { .number($0) } ?? .null
        case .string(let s): .string(s)
        case .array(let a): .array(a.map(\.tree))
        case .object(let o): .object(o.map { ($0.key, $0.value.tree) })
        }
    }

    public init(_ tree: JSONTree) {
        switch tree {
        case .null: self = .null
        case .bool(let b): self = .bool(b)
        case .number(let n): self = .number(Double(n) ?? .nan)
        case .string(let s): self = .string(s)
        case .array(let a): self = .array(a.map(JSONValue.init))
        case .object(let members):
            var o: [String: JSONValue] = [:]
            for (k, v) in members { o[k] = JSONValue(v) }  // the last of duplicate members wins
            self = .object(o)
        }
    }

    public var typeName: String {
        switch self {
        case .null: "null"; case .bool: "a boolean"; case .number: "a number"; case .string: "a string"
        case .array: "an array"; case .object: "an object"
        }
    }
}


extension JSONValue {
    /// Parses JSON text; nil when it is not JSON.
    public static func parse(json bytes: [UInt8]) -> JSONValue? {
        (try? JSONTree.parse(bytes)).map(JSONValue.init)
    }

    /// Parses a request body: the same, but a document nested past `YAMLNesting.limit` is refused
    /// by name before the decoder (which recurses per level) sees it.
    public static func parseBody(json bytes: [UInt8]) throws(DocumentError) -> JSONValue {
        let nesting = YAMLNesting.deepest(in: String(decoding: bytes, as: UTF8.self))
        guard nesting.depth <= YAMLNesting.limit else {
            throw DocumentError(path: "", message: "nested \(nesting.depth) levels deep; at most \(YAMLNesting.limit) are accepted", kind: .malformed)
        }
        guard let value = parse(json: bytes) else { throw DocumentError(path: "", message: "is not valid JSON", kind: .malformed) }
        return value
    }

    /// Parses YAML (a superset of JSON) into the same value tree, so a run spec reads the same
    /// from a file as from an API body.
    public static func parse(yaml text: String) throws(DocumentError) -> JSONValue {
        let nesting = YAMLNesting.deepest(in: text)
        guard nesting.depth <= YAMLNesting.limit else {
            throw DocumentError(path: "", message: "nested \(nesting.depth) levels deep at line \(nesting.line); at most \(YAMLNesting.limit) are accepted")
        }
        let node: Node?
        do { node = try YAML.compose(yaml: text) } catch { throw DocumentError(path: "", message: "not valid YAML: \(error)") }
        guard let node else { return .null }
        return try convert(node, path: "")
    }

    static func convert(_ node: Node, path: String) throws(DocumentError) -> JSONValue {
        switch node {
        case .scalar(let s):
            if s.style == .plain {
                switch s.string {
                case "null", "~", "": return .null
                case "true", "True", "yes": return .bool(true)
                case "false", "False", "no": return .bool(false)
                default: if let d = Double(s.string) { return .number(d) }
                }
            }
            return .string(s.string)
        case .sequence(let seq):
            var out: [JSONValue] = []
            for (i, n) in seq.enumerated() { out.append(try convert(n, path: "\(path)[\(i)]")) }
            return .array(out)
        case .mapping(let map):
            var out: [String: JSONValue] = [:]
            for (k, v) in map {
                guard case .scalar(let key) = k else { throw DocumentError(path: path, message: "keys must be strings") }
                out[key.string] = try convert(v, path: path.isEmpty ? key.string : "\(path).\(key.string)")
            }
            return .object(out)
        }
    }
}

/// A document field that is missing, of the wrong type or out of range, by its path.
public struct DocumentError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable { case malformed, invalid }
    public var path: String
    public var message: String
    /// `malformed`: wrong type or unknown field (HTTP 400); `invalid`: well-formed but not acceptable (422).
    public var kind: Kind
    public init(path: String, message: String, kind: Kind = .malformed) { self.path = path; self.message = message; self.kind = kind }
    public var description: String { path.isEmpty ? message : "\(path): \(message)" }
}

/// Reads an object field by field with its path, rejecting unknown fields and wrong types.
public struct FieldReader {
    public let path: String
    public let object: [String: JSONValue]

    public init(_ value: JSONValue, path: String = "", allowed: Set<String>) throws(DocumentError) {
        guard case .object(let o) = value else { throw DocumentError(path: path, message: "must be an object, got \(value.typeName)") }
        for key in o.keys.sorted() where !allowed.contains(key) {
            throw DocumentError(path: path, message: "unknown field \"\(key)\" (allowed: \(allowed.sorted().joined(separator: ", ")))")
        }
        self.path = path
        object = o
    }

    public func at(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    public func has(_ key: String) -> Bool { object[key].map { $0 != .null } ?? false }

    public func value(_ key: String) -> JSONValue? { object[key].flatMap { $0 == .null ? nil : $0 } }

    public func string(_ key: String) throws(DocumentError) -> String? {
        guard let v = value(key) else { return nil }
        guard case .string(let s) = v else { throw DocumentError(path: at(key), message: "must be a string, got \(v.typeName)") }
        return s
    }

    /// Text where YAML may have read a number (`expect: 4.14`, `password: 1234`).
    public func text(_ key: String) throws(DocumentError) -> String? {
        if case .number(let n)? = value(key) { return n == n.rounded() && abs(n) < 1e15 ? String(Int64(n)) : String(n) }
        return try string(key)
    }

    public func number(_ key: String, range: ClosedRange<Double>? = nil) throws(DocumentError) -> Double? {
        guard let v = value(key) else { return nil }
        guard case .number(let n) = v else { throw DocumentError(path: at(key), message: "must be a number, got \(v.typeName)") }
        if let range, !range.contains(n) {
            throw DocumentError(path: at(key), message: "must be between \(range.lowerBound) and \(range.upperBound), got \(n)", kind: .invalid)
        }
        return n
    }

    public func int(_ key: String, range: ClosedRange<Int>? = nil) throws(DocumentError) -> Int? {
        guard let v = value(key) else { return nil }
        guard case .number(let n) = v, n == n.rounded(), abs(n) < 1e12 else {
            throw DocumentError(path: at(key), message: "must be an integer, got \(v.typeName == "a number" ? "a fraction" : v.typeName)")
        }
        if let range, !range.contains(Int(n)) {
            throw DocumentError(path: at(key), message: "must be between \(range.lowerBound) and \(range.upperBound), got \(Int(n))", kind: .invalid)
        }
        return Int(n)
    }

    public func bool(_ key: String) throws(DocumentError) -> Bool? {
        guard let v = value(key) else { return nil }
        guard case .bool(let b) = v else { throw DocumentError(path: at(key), message: "must be true or false, got \(v.typeName)") }
        return b
    }

    public func strings(_ key: String) throws(DocumentError) -> [String]? {
        guard let v = value(key) else { return nil }
        if case .string(let s) = v { return [s] }
        guard case .array(let items) = v else { throw DocumentError(path: at(key), message: "must be a list of strings, got \(v.typeName)") }
        var out: [String] = []
        for (i, item) in items.enumerated() {
            guard case .string(let s) = item else { throw DocumentError(path: "\(at(key))[\(i)]", message: "must be a string, got \(item.typeName)") }
            out.append(s)
        }
        return out
    }

    public func object(_ key: String, allowed: Set<String>) throws(DocumentError) -> FieldReader? {
        guard let v = value(key) else { return nil }
        return try FieldReader(v, path: at(key), allowed: allowed)
    }

    public func array(_ key: String) throws(DocumentError) -> [JSONValue]? {
        guard let v = value(key) else { return nil }
        guard case .array(let items) = v else { throw DocumentError(path: at(key), message: "must be a list, got \(v.typeName)") }
        return items
    }
}
