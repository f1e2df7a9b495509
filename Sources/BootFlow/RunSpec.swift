import FirmwareUI
import JSONDocument
import Matching

/// One boot test: how to power the DUT, what to do in the firmware and iPXE, how to log in and
/// what to check. Read from JSON (API) or YAML (file) with every field checked by path.
public struct RunSpec: Sendable, Equatable {
    public enum PowerStep: String, Sendable, CaseIterable { case on, cycle, reset, none }

    public struct BootMenu: Sendable, Equatable {
        public var key: Key
        public var entry: String
        /// What the firmware prints when it offers the boot menu.
        public var prompt: Pattern
    }

    public struct Firmware: Sendable, Equatable {
        public var banner: [Pattern]
        public var bootMenu: BootMenu?
    }

    /// Flash the DUT's SPI chip before powering it (first iteration only).
    public struct Flash: Sendable, Equatable {
        /// "uploaded" (PUT /api/v1/flash/image) or an absolute path on the RTE.
        public var image: String
        public var verify: Bool
    }

    public struct IPXE: Sendable, Equatable {
        public var interrupt: Bool
        /// Without `interrupt`: a space answers iPXE's "Press Ctrl-B" prompt, so its autoboot
        /// (DHCP, then the DHCP filename) starts at once instead of after the wait for a human.
        public var skipBannerWait: Bool = false
        public var commands: [String]
        /// Typed at `iPXE>` after the commands; the last line (usually `boot`) hands over to the kernel.
        public var script: [String]
        public var menuEntry: String?
        public var dhcpRetries: Int
    }

    public struct Login: Sendable, Equatable {
        public var prompt: String
        public var username: String
        public var password: String?
        public var passwordPrompt: String
        public var shellPrompt: String
    }

    public struct Command: Sendable, Equatable {
        public var send: String
        public var expect: Pattern?
        public var timeoutSeconds: Double
        /// When set, the exit status the command must end with (always recorded).
        public var expectExit: Int? = nil
        /// Instead of a shell command: keys for Xen's debug console (Ctrl-A three times switches
        /// the serial input to Xen, the keys go, Xen's answer is read until it has been quiet for
        /// `quietMs`, and Ctrl-A three times gives the input back to dom0).
        public var xenDebugKeys: String? = nil
        public var quietMs: Int = 1000
    }

    /// A fact the run must find in the boot log (`expect_facts: {xen_version: "4.17*"}`).
    public struct ExpectedFact: Sendable, Equatable {
        public var name: String
        /// A glob: `*` any run of characters, `?` any one.
        public var pattern: String
    }

    public struct Timeouts: Sendable, Equatable {
        public var firmware: Double = 60
        public var ipxe: Double = 60
        public var kernel: Double = 300
        public var login: Double = 60
    }

    public var name: String
    public var flash: Flash? = nil
    /// Watched over the whole iteration: the first match fails it at once (a bug you chase).
    public var failOn: [Pattern] = []
    /// Watched over the whole iteration: matches are counted and timestamped, nothing fails.
    public var watch: [Pattern] = []
    /// Facts of the spec's own, read from the boot log beside the built-in ones.
    public var facts: [FactRule] = []
    /// Checked once the boot has reached its login (or the end of the iPXE stages without one).
    public var expectFacts: [ExpectedFact] = []
    public var power: PowerStep
    public var firmware: Firmware
    public var ipxe: IPXE?
    public var login: Login?
    public var commands: [Command]
    public var timeouts: Timeouts
    public var repeatCount: Int
    /// How long a run without its own lease may wait in the lease queue for the device.
    public var waitSeconds: Int

    public static let maxRepeat = 10_000

    /// The document as it was given (echoed in results).
    public var source: JSONValue

    public static func parse(yaml text: String) throws(DocumentError) -> RunSpec {
        try parse(JSONValue.parse(yaml: text))
    }

    /// A text the run waits for: an empty one would match everywhere.
    static func nonEmpty(_ r: FieldReader, _ key: String, text: Bool = false) throws(DocumentError) -> String? {
        guard let v = text ? try r.text(key) : try r.string(key) else { return nil }
        guard !v.isEmpty else { throw DocumentError(path: r.at(key), message: "must not be empty (it would match anywhere)", kind: .invalid) }
        return v
    }

    public static func parse(_ doc: JSONValue) throws(DocumentError) -> RunSpec {
        let r = try FieldReader(doc, allowed: ["name", "flash", "power", "firmware", "ipxe", "login", "commands", "timeouts", "repeat", "wait_s", "fail_on", "watch",
                                                   "facts", "expect_facts"])
        /// A list of texts, or of {regex: …}: patterns watched over the iteration.
        func watched(_ key: String) throws(DocumentError) -> [Pattern] {
            var out: [Pattern] = []
            for (n, item) in (try r.array(key) ?? []).enumerated() {
                let path = "\(key)[\(n)]"
                switch item {
                case .string(let t):
                    guard !t.isEmpty else { throw DocumentError(path: path, message: "must not be empty (it would match anywhere)", kind: .invalid) }
                    out.append(.literal(t))
                case .object:
                    let o = try FieldReader(item, path: path, allowed: ["regex"])
                    guard let e = try o.string("regex"), !e.isEmpty else { throw DocumentError(path: o.at("regex"), message: "is required", kind: .invalid) }
                    do { _ = try StreamMatcher([.regex(e)]) } catch { throw DocumentError(path: o.at("regex"), message: error.message, kind: .invalid) }
                    out.append(.regex(e))
                default:
                    throw DocumentError(path: path, message: "must be a text or {regex: …}", kind: .invalid)
                }
            }
            if out.count > 64 { throw DocumentError(path: key, message: "at most 64 patterns", kind: .invalid) }
            return out
        }
        let failOn = try watched("fail_on"), watch = try watched("watch")
        var factRules: [FactRule] = []
        if let f = r.value("facts") {
            guard case .object(let members) = f else {
                throw DocumentError(path: "facts", message: "must be an object of name: {regex: …} or {after: …}, got \(f.typeName)", kind: .invalid)
            }
            if members.count > 32 { throw DocumentError(path: "facts", message: "at most 32 facts of your own", kind: .invalid) }
            for name in members.keys.sorted() {
                let path = "facts.\(name)"
                guard RunSpec.isFactName(name) else {
                    throw DocumentError(path: path, message: "a fact's name is a lowercase word: a-z, 0-9 and _, starting with a letter, at most 40", kind: .invalid)
                }
                guard !FactReader.builtIn.contains(name) else {
                    throw DocumentError(path: path, message: "is a built-in fact (\(FactReader.builtIn.joined(separator: ", "))): name yours otherwise", kind: .invalid)
                }
                let rule = try FieldReader(members[name]!, path: path, allowed: ["regex", "after"])
                if let e = try rule.string("regex") {
                    guard !e.isEmpty, !rule.has("after") else {
                        throw DocumentError(path: rule.at("regex"), message: "give a non-empty regex or after, not both", kind: .invalid)
                    }
                    do { _ = try StreamMatcher([.regex(e)]) } catch { throw DocumentError(path: rule.at("regex"), message: error.message, kind: .invalid) }
                    factRules.append(FactRule(name: name, source: .regex(e)))
                } else if let a = try nonEmpty(rule, "after", text: true) {
                    guard a.utf8.count <= 1024 else { throw DocumentError(path: rule.at("after"), message: "at most 1024 bytes", kind: .invalid) }
                    factRules.append(FactRule(name: name, source: .after(a)))
                } else {
                    throw DocumentError(path: path, message: "needs regex (the value is what it matches) or after (the value is the rest of the line)", kind: .invalid)
                }
            }
        }
        var expectFacts: [ExpectedFact] = []
        if let e = r.value("expect_facts") {
            guard case .object(let members) = e else {
                throw DocumentError(path: "expect_facts", message: "must be an object of fact: pattern, got \(e.typeName)", kind: .invalid)
            }
            for name in members.keys.sorted() {
                guard FactReader.builtIn.contains(name) || factRules.contains(where: { $0.name == name }) else {
                    throw DocumentError(path: "expect_facts.\(name)", message: "is no fact this run reads (built-in: \(FactReader.builtIn.joined(separator: ", ")); or add it under facts)", kind: .invalid)
                }
                guard case .string(let pattern) = members[name]!, !pattern.isEmpty, pattern.utf8.count <= 1024 else {
                    throw DocumentError(path: "expect_facts.\(name)", message: "must be a non-empty text of at most 1024 bytes (a glob: * and ?)", kind: .invalid)
                }
                expectFacts.append(ExpectedFact(name: name, pattern: pattern))
            }
        }
        var flash: Flash?
        if let f = try r.object("flash", allowed: ["image", "verify"]) {
            let image = try f.string("image") ?? "uploaded"
            guard image == "uploaded" || (image.hasPrefix("/") && !image.split(separator: "/").contains("..")) else {
                throw DocumentError(path: f.at("image"), message: "is \"uploaded\" (the image sent to /api/v1/flash/image) or an absolute path on the RTE", kind: .invalid)
            }
            flash = Flash(image: image, verify: try f.bool("verify") ?? true)
        }
        let power: PowerStep
        if let p = try r.string("power") {
            guard let step = PowerStep(rawValue: p) else {
                throw DocumentError(path: "power", message: "must be one of \(PowerStep.allCases.map(\.rawValue).joined(separator: ", ")), got \"\(p)\"", kind: .invalid)
            }
            power = step
        } else { power = .cycle }

        var firmware = Firmware(banner: [.literal("SeaBIOS"), .literal("coreboot"), .literal("PC Engines")], bootMenu: nil)
        if let f = try r.object("firmware", allowed: ["banner", "boot_menu"]) {
            if let banners = try f.strings("banner") {
                guard !banners.isEmpty, !banners.contains("") else {
                    throw DocumentError(path: f.at("banner"), message: "needs at least one non-empty text", kind: .invalid)
                }
                firmware.banner = banners.map(Pattern.literal)
            }
            if let m = try f.object("boot_menu", allowed: ["key", "entry", "prompt"]) {
                let keyName = try m.string("key") ?? "F10"
                guard let key = Key(name: keyName) else {
                    throw DocumentError(path: m.at("key"), message: "unknown key \"\(keyName)\" (known: \(Key.allCases.map(\.rawValue).joined(separator: ", ")))", kind: .invalid)
                }
                guard let entry = try m.text("entry"), !entry.isEmpty else {
                    throw DocumentError(path: m.at("entry"), message: "is required: the boot menu entry to pick, e.g. \"iPXE\"", kind: .invalid)
                }
                let prompt = try nonEmpty(m, "prompt").map(Pattern.literal) ?? .regex("(?i)press (\\S+ )+(key )?(now )?for boot menu")
                firmware.bootMenu = BootMenu(key: key, entry: entry, prompt: prompt)
            }
        }

        var ipxe: IPXE?
        if let i = try r.object("ipxe", allowed: ["interrupt", "skip_banner_wait", "commands", "script", "menu_entry", "dhcp_retries"]) {
            let commands = try i.strings("commands") ?? []
            let script = try i.strings("script").map { $0.flatMap { $0.split(separator: "\n", omittingEmptySubsequences: true).map(String.init) } } ?? []
            let entry = try i.text("menu_entry")
            // Commands or a script need the shell; only a menu pick can do without Ctrl-B.
            let interrupt = try i.bool("interrupt") ?? (!commands.isEmpty || !script.isEmpty)
            if !interrupt && (!commands.isEmpty || !script.isEmpty) {
                throw DocumentError(path: i.at("interrupt"), message: "commands and script are typed at iPXE>, which needs interrupt: true", kind: .invalid)
            }
            if !script.isEmpty && entry != nil {
                throw DocumentError(path: i.at("script"), message: "give either a script (boot a kernel directly) or a menu_entry, not both", kind: .invalid)
            }
            if interrupt && script.isEmpty && entry == nil && commands.isEmpty {
                throw DocumentError(path: i.path, message: "interrupting iPXE needs commands, a script or a menu_entry to continue with", kind: .invalid)
            }
            let skipWait = try i.bool("skip_banner_wait") ?? false
            if skipWait && interrupt {
                throw DocumentError(path: i.at("skip_banner_wait"), message: "skip_banner_wait lets iPXE autoboot at once; with interrupt: true the agent presses Ctrl-B instead", kind: .invalid)
            }
            ipxe = IPXE(interrupt: interrupt, skipBannerWait: skipWait, commands: commands, script: script, menuEntry: entry,
                        dhcpRetries: try i.int("dhcp_retries", range: 0...20) ?? 2)
        }

        var login: Login?
        if let l = try r.object("login", allowed: ["prompt", "username", "password", "password_prompt", "shell_prompt"]) {
            guard let user = try l.string("username"), !user.isEmpty else {
                throw DocumentError(path: l.at("username"), message: "is required", kind: .invalid)
            }
            login = Login(prompt: try nonEmpty(l, "prompt") ?? "login:", username: user, password: try l.text("password"),
                          passwordPrompt: try nonEmpty(l, "password_prompt") ?? "Password:", shellPrompt: try nonEmpty(l, "shell_prompt") ?? "# ")
        }

        var commands: [Command] = []
        for (n, item) in (try r.array("commands") ?? []).enumerated() {
            let c: FieldReader
            if case .string(let s) = item {
                commands.append(Command(send: s, expect: nil, timeoutSeconds: 30)); continue
            }
            c = try FieldReader(item, path: "commands[\(n)]", allowed: ["send", "expect", "expect_regex", "expect_exit", "timeout_s",
                                                                          "xen_debug_keys", "quiet_ms"])
            let keys = try c.string("xen_debug_keys")
            if let keys {
                guard !keys.isEmpty, keys.utf8.count <= 16, keys.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else {
                    throw DocumentError(path: c.at("xen_debug_keys"), message: "1 to 16 printable keys (Xen's debug keys, e.g. \"q\" or \"ei\")", kind: .invalid)
                }
                guard !c.has("send"), !c.has("expect_exit") else {
                    throw DocumentError(path: c.at("xen_debug_keys"), message: "a Xen debug key command has no send or expect_exit (Xen's answer is its output)", kind: .invalid)
                }
            } else if c.has("quiet_ms") {
                throw DocumentError(path: c.at("quiet_ms"), message: "belongs to xen_debug_keys", kind: .invalid)
            }
            let typed = try c.text("send")
            guard let send = keys.map({ "xen debug keys \($0)" }) ?? typed else {
                throw DocumentError(path: c.at("send"), message: "is required", kind: .invalid)
            }
            var expect: Pattern?
            if let e = try nonEmpty(c, "expect", text: true) { expect = .literal(e) }
            if let e = try c.string("expect_regex") {
                guard expect == nil else { throw DocumentError(path: c.at("expect_regex"), message: "give expect or expect_regex, not both", kind: .invalid) }
                do { _ = try StreamMatcher([.regex(e)]) } catch {
                    throw DocumentError(path: c.at("expect_regex"), message: error.message, kind: .invalid)
                }
                expect = .regex(e)
            }
            let expectExit = try c.int("expect_exit")
            if let expectExit, !(0...255).contains(expectExit) {
                throw DocumentError(path: c.at("expect_exit"), message: "must be an exit status between 0 and 255", kind: .invalid)
            }
            commands.append(Command(send: send, expect: expect, timeoutSeconds: try c.number("timeout_s", range: 0.001...86400) ?? 30,
                                    expectExit: expectExit, xenDebugKeys: keys, quietMs: try c.int("quiet_ms", range: 50...60_000) ?? 1000))
        }
        if !commands.isEmpty && login == nil {
            throw DocumentError(path: "commands", message: "shell commands need a login section", kind: .invalid)
        }

        var timeouts = Timeouts()
        if let t = try r.object("timeouts", allowed: ["firmware", "ipxe", "kernel", "login"]) {
            timeouts.firmware = try t.number("firmware", range: 0.001...86400) ?? timeouts.firmware
            timeouts.ipxe = try t.number("ipxe", range: 0.001...86400) ?? timeouts.ipxe
            timeouts.kernel = try t.number("kernel", range: 0.001...86400) ?? timeouts.kernel
            timeouts.login = try t.number("login", range: 0.001...86400) ?? timeouts.login
        }
        if power == .none && (firmware.bootMenu != nil || ipxe?.interrupt == true || ipxe?.skipBannerWait == true) {
            // Without a power step there is no firmware to catch.
            throw DocumentError(path: "power", message: "\"none\" cannot catch firmware or iPXE prompts; use on, cycle or reset", kind: .invalid)
        }
        if flash != nil && power == .none {
            throw DocumentError(path: "power", message: "a flashed board must be powered up again to boot: use on or cycle", kind: .invalid)
        }
        let spec = RunSpec(name: try r.string("name") ?? "", flash: flash, failOn: failOn, watch: watch, facts: factRules,
                           expectFacts: expectFacts, power: power, firmware: firmware,
                           ipxe: ipxe, login: login, commands: commands, timeouts: timeouts,
                           repeatCount: try r.int("repeat", range: 1...maxRepeat) ?? 1,
                           waitSeconds: try r.int("wait_s", range: 0...(7 * 86400)) ?? 3600, source: doc)
        // Every matcher the run will build is built now: a spec that would fail later is refused
        // here, naming its field (one pattern can be fine alone and too big beside the others).
        for set in spec.patternSets {
            do { _ = try StreamMatcher(set.patterns) } catch {
                throw DocumentError(path: set.field, message: set.together ? "these patterns are compiled together: \(error.message)" : error.message,
                                    kind: .invalid)
            }
        }
        return spec
    }
}

extension RunSpec {
    static func isFactName(_ name: String) -> Bool {
        guard let first = name.utf8.first, (0x61...0x7a).contains(first), name.utf8.count <= 40 else { return false }
        return name.utf8.allSatisfy { (0x61...0x7a).contains($0) || (0x30...0x39).contains($0) || $0 == 0x5f }
    }
}

extension RunSpec.Login {
    /// What the kernel stage waits for: the getty's prompt, or a shell that is already there.
    public var atBoot: [Pattern] { [.literal(prompt), .literal(shellPrompt)] }
    /// After the user name: the password prompt (when a password is given), a shell, a refusal.
    public var afterUserName: [Pattern] {
        (password == nil ? [] : [.literal(passwordPrompt)]) + [.literal(shellPrompt), .literal(RunSpec.Login.incorrect)]
    }
    /// After the password: the shell, a refusal, or the getty again.
    public var afterPassword: [Pattern] { [.literal(shellPrompt), .literal(RunSpec.Login.incorrect), .literal(prompt)] }
    static let incorrect = "Login incorrect"
}

extension RunSpec {
    /// Every set of patterns from the spec that a run compiles into one matcher, with the field
    /// it comes from. The stages wait for exactly these (`Login.atBoot`, …), so the check at
    /// parse time covers what they build.
    public var patternSets: [(field: String, patterns: [Pattern], together: Bool)] {
        var sets: [(field: String, patterns: [Pattern], together: Bool)] = []
        if power != .none { sets.append(("firmware.banner", firmware.banner, firmware.banner.count > 1)) }
        if let menu = firmware.bootMenu { sets.append(("firmware.boot_menu.prompt", [menu.prompt], false)) }
        if let login {
            sets.append(("login.prompt", [.literal(login.prompt)], false))
            sets.append(("login.shell_prompt", [.literal(login.shellPrompt)], false))
            sets.append(("login", login.atBoot, true))
            sets.append(("login", login.afterUserName, true))
            sets.append(("login", login.afterPassword, true))
        }
        for (n, c) in commands.enumerated() {
            if let e = c.expect { sets.append(("commands[\(n)].expect", [e], false)) }
        }
        if !(failOn + watch).isEmpty { sets.append((watch.isEmpty ? "fail_on" : failOn.isEmpty ? "watch" : "fail_on", failOn + watch, true)) }
        return sets
    }
}

extension RunSpec {
    /// The artifacts the iPXE lines name as `${artifact:NAME}`.
    public var artifactNames: [String] {
        var names: [String] = []
        for line in (ipxe?.commands ?? []) + (ipxe?.script ?? []) {
            var rest = Substring(line)
            while let open = rest.firstRange(of: "${artifact:") {
                guard let close = rest[open.upperBound...].firstIndex(of: "}") else { break }
                let name = String(rest[open.upperBound..<close])
                if !names.contains(name) { names.append(name) }
                rest = rest[rest.index(after: close)...]
            }
        }
        return names
    }

    /// The spec with every `${artifact:NAME}` replaced by `url(NAME)` (the address the DUT fetches).
    public func expandingArtifacts(_ url: (String) throws -> String) rethrows -> RunSpec {
        guard var ipxe, !artifactNames.isEmpty else { return self }
        func expand(_ line: String) throws -> String {
            var out = "", rest = Substring(line)
            while let open = rest.firstRange(of: "${artifact:"), let close = rest[open.upperBound...].firstIndex(of: "}") {
                out += rest[..<open.lowerBound]
                out += try url(String(rest[open.upperBound..<close]))
                rest = rest[rest.index(after: close)...]
            }
            return out + rest
        }
        ipxe.commands = try ipxe.commands.map(expand)
        ipxe.script = try ipxe.script.map(expand)
        var s = self
        s.ipxe = ipxe
        return s
    }
}
