/// The top-level members of a JSON object with each value's source text, for readers that must
/// tell `1` from `1.0` (JSONValue keeps numbers as Double). Used by the RteCtrl compatibility
/// layer, whose reference decoder refuses a fraction or exponent where it wants an integer.
public enum RawJSONObject {
    public struct Member: Sendable, Equatable {
        public var key: String
        /// The value exactly as written, without surrounding whitespace.
        public var raw: String
        public var value: JSONValue?
    }

    /// The members in document order (duplicates kept), or nil when `bytes` is not one JSON object.
    public static func members(_ bytes: [UInt8]) -> [Member]? {
        guard case .object(let object)? = JSONValue.parse(json: bytes) else { return nil }
        // The text is valid JSON from here on, so a scan that tracks strings and nesting suffices.
        var members: [Member] = []
        var i = 0
        let n = bytes.count
        func skipSpace() { while i < n, bytes[i] == 0x20 || bytes[i] == 0x09 || bytes[i] == 0x0A || bytes[i] == 0x0D { i += 1 } }
        /// Moves past the string that starts at `i` (on its opening quote).
        func skipString() {
            i += 1
            while i < n {
                if bytes[i] == 0x5C { i += 2; continue }
                if bytes[i] == 0x22 { i += 1; return }
                i += 1
            }
        }
        /// Moves past one value starting at `i`.
        func skipValue() {
            if bytes[i] == 0x22 { skipString(); return }
            if bytes[i] == 0x7B || bytes[i] == 0x5B {
                var depth = 0
                while i < n {
                    switch bytes[i] {
                    case 0x22: skipString(); continue
                    case 0x7B, 0x5B: depth += 1
                    case 0x7D, 0x5D:
                        depth -= 1
                        if depth == 0 { i += 1; return }
                    default: break
                    }
                    i += 1
                }
                return
            }
            while i < n, ![0x2C, 0x7D, 0x5D, 0x20, 0x09, 0x0A, 0x0D].contains(bytes[i]) { i += 1 }
        }
        skipSpace()
        guard i < n, bytes[i] == 0x7B else { return nil }
        i += 1
        while true {
            skipSpace()
            guard i < n else { return nil }
            if bytes[i] == 0x7D { break }
            if bytes[i] == 0x2C { i += 1; continue }
            let keyStart = i
            skipString()
            guard case .string(let key)? = JSONValue.parse(json: Array(bytes[keyStart..<i])) else { return nil }
            skipSpace()
            guard i < n, bytes[i] == 0x3A else { return nil }
            i += 1
            skipSpace()
            let valueStart = i
            skipValue()
            let raw = String(decoding: bytes[valueStart..<i], as: UTF8.self)
            members.append(Member(key: key, raw: raw, value: JSONValue.parse(json: Array(bytes[valueStart..<i]))))
        }
        // The parser already agreed on the keys; a mismatch would mean this scan is wrong.
        guard Set(members.map(\.key)) == Set(object.keys) else { return nil }
        return members
    }

    /// An unsigned integer written as digits only (no sign, fraction or exponent), within UInt64.
    public static func unsigned(_ raw: String) -> UInt64? {
        guard !raw.isEmpty, raw.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
        return UInt64(raw)
    }
}
