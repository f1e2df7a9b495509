/// Codable to and from JSON text over `JSONTree`, for the agent's API answers and its persisted
/// records. Keys are sorted on output (stable files and answers); `snakeCase` converts Swift's
/// camelCase property names to the API's snake_case and back, as JSONEncoder's
/// `convertToSnakeCase` / JSONDecoder's `convertFromSnakeCase` did.
public enum JSONKeys: Sendable { case asIs, snakeCase }

public enum JSONCoding {
    public static func encode<T: Encodable>(_ value: T, keys: JSONKeys = .asIs, pretty: Bool = false) throws -> [UInt8] {
        try tree(value, keys: keys).text(pretty: pretty)
    }

    public static func tree<T: Encodable>(_ value: T, keys: JSONKeys = .asIs) throws -> JSONTree {
        let root = TreeEncoder(keys: keys, path: [])
        try value.encode(to: root)
        guard let tree = root.box.resolve() else {
            throw EncodingError.invalidValue(value, .init(codingPath: [], debugDescription: "\(T.self) encoded nothing"))
        }
        return tree.sortedMembers()
    }

    public static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8], keys: JSONKeys = .asIs) throws -> T {
        let tree: JSONTree
        do { tree = try JSONTree.parse(bytes) } catch {
            throw DecodingError.dataCorrupted(.init(codingPath: [], debugDescription: error.description, underlyingError: error))
        }
        return try decode(type, from: tree, keys: keys)
    }

    public static func decode<T: Decodable>(_ type: T.Type, from tree: JSONTree, keys: JSONKeys = .asIs) throws -> T {
        try T(from: TreeDecoder(tree: tree, keys: keys, path: []))
    }

    /// "expiresInS" → "expires_in_s", "boundAddress" → "bound_address", "URLPath" → "url_path".
    public static func snakeCase(_ key: String) -> String {
        let chars = Array(key)
        guard chars.contains(where: \.isUppercase) else { return key }
        var out = ""
        for (i, c) in chars.enumerated() {
            if c.isUppercase {
                let prevLower = i > 0 && !chars[i - 1].isUppercase && chars[i - 1] != "_"
                let nextLower = i + 1 < chars.count && chars[i + 1].isLowercase && i > 0 && chars[i - 1].isUppercase
                if i > 0 && (prevLower || nextLower) { out.append("_") }
                out += c.lowercased()
            } else {
                out.append(c)
            }
        }
        return out
    }

    /// "expires_in_s" → "expiresInS" (leading and trailing underscores kept; as JSONDecoder's
    /// `convertFromSnakeCase`, the first word as written, the others capitalised).
    public static func camelCase(_ key: String) -> String {
        guard key.contains("_") else { return key }
        let leading = key.prefix { $0 == "_" }
        let trailing = String(key.reversed().prefix { $0 == "_" })
        let core = key.dropFirst(leading.count).dropLast(trailing.count)
        guard !core.isEmpty else { return key }
        var out = String(leading)
        for (i, part) in core.split(separator: "_", omittingEmptySubsequences: true).enumerated() {
            out += i == 0 ? String(part) : part.prefix(1).uppercased() + part.dropFirst().lowercased()
        }
        return out + trailing
    }
}

extension JSONTree {
    /// Every object's members sorted by key, recursively (JSONEncoder's `.sortedKeys`).
    func sortedMembers() -> JSONTree {
        switch self {
        case .array(let items): .array(items.map { $0.sortedMembers() })
        case .object(let members): .object(members.map { ($0.0, $0.1.sortedMembers()) }.sorted { $0.0.utf8.lexicographicallyPrecedes($1.0.utf8) })
        default: self
        }
    }
}

private struct StringKey: CodingKey {
    var stringValue: String
    var intValue: Int?
    init(_ s: String) { stringValue = s }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { stringValue = "\(intValue)"; self.intValue = intValue }
}

// MARK: - Encoding

/// Where a container writes: a reference, so a nested container fills its parent in place; the
/// tree is assembled once, at the end.
private final class Box {
    enum Content { case empty, value(JSONTree), object(ObjectBox), array(ArrayBox) }
    var content: Content
    init(_ content: Content = .empty) { self.content = content }

    func resolve() -> JSONTree? {
        switch content {
        case .empty: nil
        case .value(let v): v
        case .object(let o): .object(o.members.map { ($0.0, $0.1.resolve() ?? .null) })
        case .array(let a): .array(a.items.map { $0.resolve() ?? .null })
        }
    }
}

private final class ObjectBox { var members: [(String, Box)] = [] }
private final class ArrayBox { var items: [Box] = [] }

private final class TreeEncoder: Encoder {
    let keys: JSONKeys
    let codingPath: [any CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }
    let box: Box

    init(keys: JSONKeys, path: [any CodingKey], box: Box = Box()) {
        self.keys = keys; self.codingPath = path; self.box = box
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        let o: ObjectBox
        if case .object(let existing) = box.content { o = existing } else { o = ObjectBox(); box.content = .object(o) }
        return KeyedEncodingContainer(KeyedEncoder<Key>(encoder: self, object: o))
    }

    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        let a: ArrayBox
        if case .array(let existing) = box.content { a = existing } else { a = ArrayBox(); box.content = .array(a) }
        return UnkeyedEncoder(encoder: self, array: a)
    }

    func singleValueContainer() -> any SingleValueEncodingContainer { SingleEncoder(encoder: self) }

    func name(_ key: any CodingKey) -> String { keys == .snakeCase ? JSONCoding.snakeCase(key.stringValue) : key.stringValue }

    /// Encodes a child value into a new box (primitives directly, the rest through a nested encoder).
    func encodeChild<T: Encodable>(_ value: T, at path: [any CodingKey]) throws -> Box {
        if let primitive = try primitive(value, path: path) { return Box(.value(primitive)) }
        let child = TreeEncoder(keys: keys, path: path)
        try value.encode(to: child)
        if case .empty = child.box.content { child.box.content = .object(ObjectBox()) }  // as JSONEncoder: {}
        return child.box
    }

    func primitive<T: Encodable>(_ value: T, path: [any CodingKey]) throws -> JSONTree? {
        switch value {
        case let v as String: return .string(v)
        case let v as Bool: return .bool(v)
        case let v as Int: return .number(String(v))
        case let v as Int8: return .number(String(v))
        case let v as Int16: return .number(String(v))
        case let v as Int32: return .number(String(v))
        case let v as Int64: return .number(String(v))
        case let v as UInt: return .number(String(v))
        case let v as UInt8: return .number(String(v))
        case let v as UInt16: return .number(String(v))
        case let v as UInt32: return .number(String(v))
        case let v as UInt64: return .number(String(v))
        case let v as Double: return try number(v, path: path)
        case let v as Float: return try number(Double(v), path: path)
        case let v as JSONTree: return v
        default: return nil
        }
    }

    func number(_ d: Double, path: [any CodingKey]) throws -> JSONTree {
        guard let text = JSONTree.numberText(d) else {
            throw EncodingError.invalidValue(d, .init(codingPath: path, debugDescription: "\(d) cannot be written as JSON"))
        }
        return .number(text)
    }
}

private struct KeyedEncoder<Key: CodingKey>: KeyedEncodingContainerProtocol {
    let encoder: TreeEncoder
    let object: ObjectBox
    var codingPath: [any CodingKey] { encoder.codingPath }

    private func put(_ key: Key, _ box: Box) {
        let name = encoder.name(key)
        if let i = object.members.firstIndex(where: { $0.0 == name }) { object.members[i].1 = box } else { object.members.append((name, box)) }
    }

    mutating func encodeNil(forKey key: Key) throws { put(key, Box(.value(.null))) }
    mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
        put(key, try encoder.encodeChild(value, at: codingPath + [key]))
    }
    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key) -> KeyedEncodingContainer<NestedKey> {
        let child = TreeEncoder(keys: encoder.keys, path: codingPath + [key])
        put(key, child.box)
        return child.container(keyedBy: keyType)
    }
    mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
        let child = TreeEncoder(keys: encoder.keys, path: codingPath + [key])
        put(key, child.box)
        return child.unkeyedContainer()
    }
    mutating func superEncoder() -> any Encoder { superEncoder(forKey: Key(stringValue: "super")!) }
    mutating func superEncoder(forKey key: Key) -> any Encoder {
        let child = TreeEncoder(keys: encoder.keys, path: codingPath + [key])
        put(key, child.box)
        return child
    }
}

private struct UnkeyedEncoder: UnkeyedEncodingContainer {
    let encoder: TreeEncoder
    let array: ArrayBox
    var codingPath: [any CodingKey] { encoder.codingPath }
    var count: Int { array.items.count }
    private var nextKey: any CodingKey { StringKey(intValue: array.items.count)! }

    init(encoder: TreeEncoder, array: ArrayBox) { self.encoder = encoder; self.array = array }

    mutating func encodeNil() throws { array.items.append(Box(.value(.null))) }
    mutating func encode<T: Encodable>(_ value: T) throws { array.items.append(try encoder.encodeChild(value, at: codingPath + [nextKey])) }
    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
        let child = TreeEncoder(keys: encoder.keys, path: codingPath + [nextKey])
        array.items.append(child.box)
        return child.container(keyedBy: keyType)
    }
    mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
        let child = TreeEncoder(keys: encoder.keys, path: codingPath + [nextKey])
        array.items.append(child.box)
        return child.unkeyedContainer()
    }
    mutating func superEncoder() -> any Encoder {
        let child = TreeEncoder(keys: encoder.keys, path: codingPath + [nextKey])
        array.items.append(child.box)
        return child
    }
}

private struct SingleEncoder: SingleValueEncodingContainer {
    let encoder: TreeEncoder
    var codingPath: [any CodingKey] { encoder.codingPath }
    mutating func encodeNil() throws { encoder.box.content = .value(.null) }
    mutating func encode<T: Encodable>(_ value: T) throws {
        encoder.box.content = try encoder.encodeChild(value, at: codingPath).content
    }
}

// MARK: - Decoding

private struct TreeDecoder: Decoder {
    let tree: JSONTree
    let keys: JSONKeys
    let codingPath: [any CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    init(tree: JSONTree, keys: JSONKeys, path: [any CodingKey]) { self.tree = tree; self.keys = keys; self.codingPath = path }

    func mismatch(_ type: Any.Type, _ expected: String) -> DecodingError {
        .typeMismatch(type, .init(codingPath: codingPath, debugDescription: "expected \(expected), found \(tree.typeName)"))
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard case .object(let members) = tree else { throw mismatch([String: Any].self, "an object") }
        var byName: [String: JSONTree] = [:]
        // As JSONDecoder: the last of duplicate members wins.
        for (k, v) in members { byName[keys == .snakeCase ? JSONCoding.camelCase(k) : k] = v }
        return KeyedDecodingContainer(KeyedDecoder<Key>(decoder: self, members: byName))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        guard case .array(let items) = tree else { throw mismatch([Any].self, "an array") }
        return UnkeyedDecoder(decoder: self, items: items)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer { SingleDecoder(decoder: self) }

    func child(_ tree: JSONTree, _ key: any CodingKey) -> TreeDecoder {
        TreeDecoder(tree: tree, keys: keys, path: codingPath + [key])
    }

    func decodeValue<T: Decodable>(_ type: T.Type) throws -> T {
        switch type {
        case is String.Type:
            guard case .string(let s) = tree else { throw mismatch(type, "a string") }
            return s as! T
        case is Bool.Type:
            guard case .bool(let b) = tree else { throw mismatch(type, "a boolean") }
            return b as! T
        case is Double.Type: return try double() as! T
        case is Float.Type: return Float(try double()) as! T
        case is Int.Type: return try integer(Int.self) as! T
        case is Int8.Type: return try integer(Int8.self) as! T
        case is Int16.Type: return try integer(Int16.self) as! T
        case is Int32.Type: return try integer(Int32.self) as! T
        case is Int64.Type: return try integer(Int64.self) as! T
        case is UInt.Type: return try integer(UInt.self) as! T
        case is UInt8.Type: return try integer(UInt8.self) as! T
        case is UInt16.Type: return try integer(UInt16.self) as! T
        case is UInt32.Type: return try integer(UInt32.self) as! T
        case is UInt64.Type: return try integer(UInt64.self) as! T
        case is JSONTree.Type: return tree as! T
        default: return try T(from: self)
        }
    }

    func double() throws -> Double {
        guard case .number(let text) = tree, let d = Double(text) else { throw mismatch(Double.self, "a number") }
        return d
    }

    /// Exact or refused: "3" and "3.0" are 3; "3.5", "1e400" or a value out of the type's range are errors.
    func integer<I: FixedWidthInteger>(_ type: I.Type) throws -> I {
        guard case .number(let text) = tree else { throw mismatch(type, "a number") }
        if let i = I(text) { return i }
        if let d = Double(text), d.isFinite, d == d.rounded(), let i = I(exactly: d) { return i }
        throw DecodingError.dataCorrupted(.init(codingPath: codingPath, debugDescription: "\(text) does not fit in \(I.self)"))
    }
}

private struct KeyedDecoder<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let decoder: TreeDecoder
    let members: [String: JSONTree]
    var codingPath: [any CodingKey] { decoder.codingPath }
    var allKeys: [Key] { members.keys.compactMap { Key(stringValue: $0) } }

    func contains(_ key: Key) -> Bool { members[key.stringValue] != nil }

    private func member(_ key: Key) throws -> JSONTree {
        guard let v = members[key.stringValue] else {
            throw DecodingError.keyNotFound(key, .init(codingPath: codingPath, debugDescription: "no member \"\(key.stringValue)\""))
        }
        return v
    }

    func decodeNil(forKey key: Key) throws -> Bool { try member(key) == .null }
    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
        try decoder.child(try member(key), key).decodeValue(type)
    }
    func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
        try decoder.child(try member(key), key).container(keyedBy: type)
    }
    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        try decoder.child(try member(key), key).unkeyedContainer()
    }
    func superDecoder() throws -> any Decoder { decoder.child(members["super"] ?? .null, StringKey("super")) }
    func superDecoder(forKey key: Key) throws -> any Decoder { decoder.child(members[key.stringValue] ?? .null, key) }
}

private struct UnkeyedDecoder: UnkeyedDecodingContainer {
    let decoder: TreeDecoder
    let items: [JSONTree]
    var currentIndex = 0
    var codingPath: [any CodingKey] { decoder.codingPath }
    var count: Int? { items.count }
    var isAtEnd: Bool { currentIndex >= items.count }

    init(decoder: TreeDecoder, items: [JSONTree]) { self.decoder = decoder; self.items = items }

    private mutating func next() throws -> TreeDecoder {
        guard !isAtEnd else {
            throw DecodingError.valueNotFound(Any.self, .init(codingPath: codingPath, debugDescription: "the array has only \(items.count) items"))
        }
        defer { currentIndex += 1 }
        return decoder.child(items[currentIndex], StringKey(intValue: currentIndex)!)
    }

    mutating func decodeNil() throws -> Bool {
        guard !isAtEnd else { return false }
        if items[currentIndex] == .null { currentIndex += 1; return true }
        return false
    }
    mutating func decode<T: Decodable>(_ type: T.Type) throws -> T { try next().decodeValue(type) }
    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
        try next().container(keyedBy: type)
    }
    mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer { try next().unkeyedContainer() }
    mutating func superDecoder() throws -> any Decoder { try next() }
}

private struct SingleDecoder: SingleValueDecodingContainer {
    let decoder: TreeDecoder
    var codingPath: [any CodingKey] { decoder.codingPath }
    func decodeNil() -> Bool { decoder.tree == .null }
    func decode<T: Decodable>(_ type: T.Type) throws -> T { try decoder.decodeValue(type) }
}
