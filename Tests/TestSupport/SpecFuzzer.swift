/// Run specs for fuzzing: documents built from the spec's own keys with hostile values (long
/// literals, many patterns, regex syntax, odd types, deep nesting), and seed specs mutated byte
/// by byte. Seeded: the same seed gives the same inputs, so a failure can be replayed.
public struct SpecFuzzer {
    private var state: UInt64
    /// Characters left for the document being generated: specs are at most 64 KiB when posted.
    private var budget = 0

    public init(seed: UInt64) { state = seed == 0 ? 0x9e37_79b9_7f4a_7c15 : seed }

    /// xorshift64*: small, fast, good enough to pick shapes.
    public mutating func next() -> UInt64 {
        state ^= state >> 12; state ^= state << 25; state ^= state >> 27
        return state &* 2_685_821_657_736_338_717
    }

    mutating func below(_ n: Int) -> Int { n <= 1 ? 0 : Int(next() % UInt64(n)) }
    mutating func chance(_ percent: Int) -> Bool { below(100) < percent }

    static let topKeys = ["name", "flash", "power", "firmware", "ipxe", "login", "commands", "timeouts", "repeat", "wait_s",
                          "fail_on", "watch"]
    static let innerKeys = ["banner", "boot_menu", "key", "entry", "prompt", "interrupt", "skip_banner_wait", "commands", "script",
                            "menu_entry", "dhcp_retries", "username", "password", "password_prompt", "shell_prompt", "send",
                            "expect", "expect_regex", "expect_exit", "timeout_s", "firmware", "ipxe", "kernel", "login",
                            "image", "verify", "regex"]
    static let fragments = ["SeaBIOS", "iPXE> ", "login:", "# ", "(?i)", "(a|b)*", "[^\\n]", "\\x00", "${artifact:k}", "a{1000}",
                            "(?:){1000}", "\\", "(", ")", "[", "]", "*", "+", "?", "{", "}", "^", "$", ".", "|", "é", "\u{0}",
                            "\r\n", "Xen Linux dev", "on", "cycle", "none", "F10", "uploaded", "/etc/passwd", "-1", "1e308"]

    mutating func text() -> String {
        switch below(6) {
        case 0: return String(repeating: "x", count: [1, 100, 3000, 4096, 4097, 5000, 20_000][below(7)])
        case 1: return String(repeating: SpecFuzzer.fragments[below(SpecFuzzer.fragments.count)], count: 1 + below(800))
        default: return (0..<(1 + below(8))).map { _ in SpecFuzzer.fragments[below(SpecFuzzer.fragments.count)] }.joined()
        }
    }

    /// A JSON value, as text.
    mutating func value(depth: Int) -> String {
        if budget <= 0 { return "0" }
        let v = rawValue(depth: depth)
        budget -= v.utf8.count
        return v
    }

    mutating func rawValue(depth: Int) -> String {
        switch depth > 6 ? below(4) : below(8) {
        case 0: return "\"" + escape(text()) + "\""
        case 1: return ["0", "-1", "1", "3", "86400", "1e12", "-0.5", "99999999999999999999", "1.5"][below(9)]
        case 2: return ["true", "false", "null"][below(3)]
        case 3: return "\"" + ["on", "cycle", "reset", "none", "login:", "# ", "F10", "root"][below(8)] + "\""
        case 4, 5: return "[" + (0..<below(depth > 3 ? 4 : 70)).map { _ in value(depth: depth + 1) }.joined(separator: ",") + "]"
        default: return object(depth: depth + 1)
        }
    }

    mutating func object(depth: Int) -> String {
        let keys = depth <= 1 ? SpecFuzzer.topKeys : SpecFuzzer.innerKeys
        return "{" + (0..<below(6)).map { _ in
            "\"" + (chance(95) ? keys[below(keys.count)] : escape(text())) + "\":" + value(depth: depth)
        }.joined(separator: ",") + "}"
    }

    func escape(_ s: String) -> String {
        var out = ""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case _ where u.value < 0x20: out += "\\u" + String(repeating: "0", count: 4 - String(u.value, radix: 16).count) + String(u.value, radix: 16)
            default: out.unicodeScalars.append(u)
            }
        }
        return out
    }

    /// A seed document changed a little: bytes flipped, cut, repeated or spliced with a value.
    public mutating func mutate(_ seed: [UInt8]) -> [UInt8] {
        var b = seed
        for _ in 0..<(1 + below(6)) where !b.isEmpty {
            let at = below(b.count)
            switch below(5) {
            case 0: b[at] = UInt8(truncatingIfNeeded: next())
            case 1: b.removeSubrange(at..<min(b.count, at + 1 + below(40)))
            case 2: b.insert(contentsOf: b[at..<min(b.count, at + 1 + below(200))], at: at)
            case 3: b.insert(contentsOf: Array(value(depth: 2).utf8), at: at)
            default: b = Array(b[0..<at])
            }
        }
        return b
    }

    /// The next input: a generated spec (JSON) or a mutated seed (`seeds`, JSON or YAML text).
    public mutating func input(seeds: [[UInt8]]) -> [UInt8] {
        budget = 64 << 10
        if seeds.isEmpty || chance(50) { return Array(object(depth: 1).utf8) }
        return mutate(seeds[below(seeds.count)])
    }
}
