import Foundation
import JSONDocument
import Testing

/// The daemon's own JSON (it no longer links FoundationEssentials): checked against Foundation's
/// JSONEncoder/JSONDecoder, which the tests may still use, on the shapes the agent writes.
struct JSONCodingTests {
    struct Lease: Codable, Equatable {
        enum State: String, Codable { case granted, queued }
        var id: String
        var holder: String
        var grantedAtMs: Int64
        var expiresInS: Int
        var ttlMs: UInt64
        var boundAddress: String?
        var state: State
        var ratio: Double
        var tags: [String]
        var nested: [String: [Int]]
        var urlPath: String
    }

    let sample = Lease(id: "l-1", holder: "ana \"quoted\" / slash\n\u{1}é😀", grantedAtMs: Int64.max, expiresInS: -3, ttlMs: UInt64.max,
                       boundAddress: nil, state: .queued, ratio: 0.1, tags: ["a", ""], nested: ["b": [1, 2], "a": []], urlPath: "/x/y")

    func foundation(_ value: some Encodable, snake: Bool, pretty: Bool = false) throws -> [UInt8] {
        let e = JSONEncoder()
        e.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys] : [.sortedKeys, .withoutEscapingSlashes]
        if snake { e.keyEncodingStrategy = .convertToSnakeCase }
        return Array(try e.encode(value))
    }

    @Test func writesWhatJSONEncoderWroteByteForByte() throws {
        let ours = try JSONCoding.encode(sample, keys: .snakeCase)
        let theirs = try foundation(sample, snake: true)
        #expect(String(decoding: ours, as: UTF8.self) == String(decoding: theirs, as: UTF8.self))
        // Integral doubles, as the API always showed them.
        struct N: Codable { var a: Double; var b: Double; var c: Double }
        let n = N(a: 3, b: -0.5, c: 1e-5)
        #expect(try JSONCoding.encode(n) == (try foundation(n, snake: false)))
    }

    @Test func prettyLeaseFilesHoldTheSameDocumentAndReadBackEitherWay() throws {
        // Foundation's pretty form escapes "/" and writes an empty object over two lines; the
        // documents are the same.
        #expect(try JSONTree.parse(try JSONCoding.encode(sample, pretty: true)) == JSONTree.parse(try foundation(sample, snake: false, pretty: true)))
        #expect(String(decoding: try JSONCoding.encode(["b": [1]], pretty: true), as: UTF8.self) == "{\n  \"b\" : [\n    1\n  ]\n}")
        // Files written by the old agent (Foundation) are read by the new one, and the reverse.
        let old = try foundation(sample, snake: true)
        #expect(try JSONCoding.decode(Lease.self, from: old, keys: .snakeCase) == sample)
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        #expect(try d.decode(Lease.self, from: Data(try JSONCoding.encode(sample, keys: .snakeCase))) == sample)
    }

    @Test func snakeCaseConvertsLikeFoundation() {
        struct K: CodingKey { var stringValue: String; var intValue: Int? { nil }; init(stringValue: String) { self.stringValue = stringValue }; init?(intValue: Int) { nil } }
        struct One: Encodable {
            let key: String
            func encode(to encoder: any Encoder) throws { var c = encoder.container(keyedBy: K.self); try c.encode(1, forKey: K(stringValue: key)) }
        }
        // Not compared: a leading acronym, which Foundation 6.3 turns into "u_rl_path" (the agent
        // has no such key; ours gives "url_path").
        #expect(JSONCoding.snakeCase("URLPath") == "url_path")
        for key in ["expiresInS", "boundAddress", "id", "urlPath", "iteration2Log", "a", "_private", "maxFileMiB", "lastCRC32"] {
            let e = JSONEncoder()
            e.keyEncodingStrategy = .convertToSnakeCase
            let theirs = (try? e.encode(One(key: key))).flatMap { String(decoding: $0, as: UTF8.self).split(separator: "\"").dropFirst().first.map(String.init) }
            #expect(String(decoding: (try? JSONCoding.encode(One(key: key), keys: .snakeCase)) ?? [], as: UTF8.self) == "{\"\(theirs ?? "?")\":1}")
            #expect(JSONCoding.snakeCase(key) == theirs, "\(key)")
            // Back again, for keys without an acronym (those are lossy in Foundation too: lastCRC32 → lastCrc32).
            let acronym = zip(key, key.dropFirst()).contains { $0.isUppercase && $1.isUppercase }
            if !acronym { #expect(JSONCoding.camelCase(JSONCoding.snakeCase(key)) == key, "\(key)") }
        }
    }

    @Test func theReaderIsStrict() throws {
        let bad = ["", " ", "{", "[1,]", "{\"a\":1,}", "01", "1.", ".5", "-", "1e", "tru", "nul", "\"\\x\"", "\"\u{1}\"", "\"\\ud800\"",
                   "\"\\udc00x\"", "[1] 2", "{'a':1}", "NaN", "Infinity", "{\"a\" 1}", "[\"a\"\"b\"]"]
        for text in bad {
            #expect((try? JSONTree.parse(Array(text.utf8))) == nil, "accepted \(text.debugDescription)")
        }
        #expect((try? JSONTree.parse([0x22, 0xFF, 0x22])) == nil, "invalid UTF-8 in a string")
        let good = ["0", "-0.5e+3", "\"\\ud83d\\ude00\"", " {\"a\" : [true, false, null, {}] } ", "[]", "\"\\/\\b\\f\\n\\r\\t\\u00e9\""]
        for text in good { #expect((try? JSONTree.parse(Array(text.utf8))) != nil, "refused \(text)") }
        #expect(try JSONTree.parse(Array("\"\\ud83d\\ude00\"".utf8)) == .string("😀"))
        // Depth is bounded before the stack is.
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        #expect((try? JSONTree.parse(Array(deep.utf8))) == nil)
        #expect((try? JSONTree.parse(Array((String(repeating: "[", count: 500) + String(repeating: "]", count: 500)).utf8))) != nil)
    }

    @Test func integersAreExactOrRefused() throws {
        struct I: Codable { var v: Int64 }
        struct U8: Codable { var v: UInt8 }
        #expect(try JSONCoding.decode(I.self, from: Array("{\"v\":9223372036854775807}".utf8)).v == Int64.max)
        #expect(try JSONCoding.decode(I.self, from: Array("{\"v\":3.0}".utf8)).v == 3)
        #expect((try? JSONCoding.decode(I.self, from: Array("{\"v\":3.5}".utf8))) == nil)
        #expect((try? JSONCoding.decode(I.self, from: Array("{\"v\":9223372036854775808}".utf8))) == nil)
        #expect((try? JSONCoding.decode(U8.self, from: Array("{\"v\":256}".utf8))) == nil)
        #expect((try? JSONCoding.decode(I.self, from: Array("{\"v\":\"3\"}".utf8))) == nil)
        #expect((try? JSONCoding.decode(I.self, from: Array("{}".utf8))) == nil)
        #expect((try? JSONCoding.encode(["x": Double.nan])) == nil, "NaN cannot be JSON")
    }

    @Test func jsonValueRoundTripsThroughTheTree() throws {
        let text = #"{"a":[1,2.5,"x",null,true],"b":{"c":"/"},"d":-7}"#
        let v = try #require(JSONValue.parse(json: Array(text.utf8)))
        #expect(String(decoding: v.serialized(), as: UTF8.self) == text)
        // Duplicate members: the last wins, as JSONDecoder did.
        #expect(JSONValue.parse(json: Array(#"{"a":1,"a":2}"#.utf8)) == .object(["a": .number(2)]))
    }

    @Test func base64MatchesFoundation() {
        var seed: UInt64 = 7
        for count in [0, 1, 2, 3, 4, 5, 57, 1000] {
            let bytes = (0..<count).map { _ in seed = seed &* 6364136223846793005 &+ 1; return UInt8(truncatingIfNeeded: seed >> 40) }
            let ours = Base64.encode(bytes)
            #expect(ours == Data(bytes).base64EncodedString())
            #expect(Base64.decode(ours) == bytes)
        }
        for bad in ["a", "ab=", "a===", "ab=c", "ab c", "****", "YQ==YQ=="] {
            #expect(Base64.decode(bad) == nil, "\(bad)")  // stricter than Foundation, which takes "ab=c"
        }
    }
}
