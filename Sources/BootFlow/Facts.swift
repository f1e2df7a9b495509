import Matching
import Serial
import Terminal
import Text

/// One thing the boot log proves about what booted ("xen_version" = "4.17.7").
public struct Fact: Codable, Sendable, Equatable {
    public var name: String
    public var value: String
    public init(name: String, value: String) { self.name = name; self.value = value }
}

extension [Fact] {
    public subscript(fact name: String) -> String? { first { $0.name == name }?.value }
}

/// A fact a spec adds (`facts: {name: {regex: …}}` or `{after: …}`).
public struct FactRule: Sendable, Equatable {
    public enum Source: Sendable, Equatable {
        /// The value is the text the pattern matched.
        case regex(String)
        /// The value is the rest of the line after this text.
        case after(String)
    }
    public var name: String
    public var source: Source
    public init(name: String, source: Source) { self.name = name; self.source = source }
}

/// Reads facts from a boot's text, line by line. The built-in recognisers know the firmware's
/// banner (SeaBIOS, coreboot's PC Engines banner), iPXE's, Xen's and Linux's; for every fact the
/// last line that gives it wins (a reset re-runs the boot: what booted last is what is up).
public struct FactReader {
    public static let builtIn = ["board", "firmware", "firmware_version", "seabios_version", "ipxe_version", "hypervisor",
                                 "xen_version", "xen_cmdline", "iommu", "iommu_type", "kernel_version", "kernel_cmdline"]
    /// Facts longer than this are cut (a command line that runs away).
    static let maxValue = 512
    /// Lines longer than this are read up to here.
    static let maxLine = 4096

    private var values: [String: String] = [:]
    private var custom: [(rule: FactRule, matcher: StreamMatcher?)]
    private var terminal = Terminal(rows: 2, columns: 80)
    private var line: [UInt8] = []
    private var coreboot = false

    public init(rules: [FactRule]) {
        custom = rules.map { rule in
            if case .regex(let r) = rule.source { return (rule, try? StreamMatcher([.regex(r)])) }
            return (rule, nil)
        }
    }

    /// The facts of the boot text in `capture` from `from` to `to` (at most `limit` bytes of it).
    public static func read(_ capture: SerialCapture, from: UInt64, to: UInt64, rules: [FactRule], limit: UInt64 = 16 << 20) -> [Fact] {
        var reader = FactReader(rules: rules)
        var at = to - from > limit ? to - limit : from
        while at < to {
            switch capture.readPersisted(from: at, limit: Int(min(64 << 10, to - at))) {
            case .data(_, let bytes, let next):
                guard !bytes.isEmpty else { at = to; break }
                reader.feed(bytes)
                at = next
            case .lost(_, let resumeAt):
                guard resumeAt > at else { at = to; break }
                at = resumeAt
            }
        }
        return reader.finish()
    }

    public mutating func feed(_ bytes: [UInt8]) {
        for b in terminal.feed(bytes).bytes {
            if b == 0x0a || b == 0x0d {
                if !line.isEmpty { take(String(decoding: line, as: UTF8.self)); line.removeAll(keepingCapacity: true) }
            } else if line.count < FactReader.maxLine {
                line.append(b)
            }
        }
    }

    public mutating func finish() -> [Fact] {
        if !line.isEmpty { take(String(decoding: line, as: UTF8.self)); line = [] }
        var out: [Fact] = []
        for name in FactReader.builtIn { if let v = values[name] { out.append(Fact(name: name, value: v)) } }
        for (rule, _) in custom { if let v = values[rule.name] { out.append(Fact(name: rule.name, value: v)) } }
        return out
    }

    private mutating func set(_ name: String, _ value: Substring) {
        let trimmed = value.trimmingBlanks
        guard !trimmed.isEmpty else { return }
        values[name] = String(trimmed.prefix(FactReader.maxValue))
    }

    /// The first word of `rest` (up to a space, a comma or a parenthesis).
    private func word(_ rest: Substring) -> Substring {
        rest.prefix { $0 != " " && $0 != "," && $0 != ")" && $0 != "(" }
    }

    private mutating func take(_ line: String) {
        let l = Substring(line)
        // Firmware: coreboot's PC Engines banner ("PC Engines apu2", "BIOS version v4.19.0.1"),
        // coreboot's own console ("coreboot-4.19 ..."), SeaBIOS's ("SeaBIOS (version 1.16.2-...)").
        if l.hasPrefix("PC Engines ") { set("board", l) }
        if l.hasPrefix("BIOS version ") {
            coreboot = true
            set("firmware", "coreboot")
            set("firmware_version", word(l.dropFirst("BIOS version ".count)))
        }
        if l.hasPrefix("coreboot-") {
            coreboot = true
            set("firmware", "coreboot")
            if values["firmware_version"] == nil { set("firmware_version", word(l.dropFirst("coreboot-".count))) }
        }
        if let r = l.firstRange(of: "SeaBIOS (version ") {
            let v = word(l[r.upperBound...])
            set("seabios_version", v)
            if !coreboot { set("firmware", "SeaBIOS"); set("firmware_version", v) }
        }
        if let r = l.firstRange(of: " -- Open Source Network Boot Firmware"), let i = l[..<r.lowerBound].firstRange(of: "iPXE ") {
            set("ipxe_version", word(l[i.upperBound...]))
        }
        // Xen: its banner, its command line, what it decided about the IOMMU.
        if let r = l.firstRange(of: "(XEN) Xen version ") {
            set("hypervisor", "xen")
            set("xen_version", word(l[r.upperBound...]))
        }
        if let r = l.firstRange(of: "(XEN) Command line: ") { set("xen_cmdline", l[r.upperBound...]) }
        if l.contains("(XEN) I/O virtualisation enabled") { set("iommu", "enabled") }
        if l.contains("(XEN) I/O virtualisation disabled") { set("iommu", "disabled") }
        if l.contains("(XEN) AMD-Vi: IOMMU ") && l.hasSuffix("Enabled.") { set("iommu_type", "amd-vi") }
        if l.contains("(XEN) Intel VT-d iommu ") { set("iommu_type", "vt-d") }
        // Linux (dom0 or bare metal). Without Xen the kernel's own IOMMU lines decide.
        if let r = l.firstRange(of: "Linux version ") { set("kernel_version", word(l[r.upperBound...])) }
        if let r = l.firstRange(of: "Kernel command line: ") { set("kernel_cmdline", l[r.upperBound...]) }
        if values["hypervisor"] == nil {
            if l.contains("AMD-Vi: Found IOMMU") || l.contains("AMD-Vi: Interrupt remapping enabled") {
                set("iommu", "enabled"); set("iommu_type", "amd-vi")
            }
            if l.contains("DMAR: IOMMU enabled") { set("iommu", "enabled"); set("iommu_type", "vt-d") }
        }
        for i in custom.indices {
            switch custom[i].rule.source {
            case .after(let text):
                if let r = l.firstRange(of: text) { set(custom[i].rule.name, l[r.upperBound...]) }
            case .regex:
                guard var m = custom[i].matcher else { continue }
                m.reset()
                var chunk = TextChunk()
                chunk.bytes = Array(line.utf8)
                chunk.offsets = Array(0..<UInt64(chunk.bytes.count))
                if let (match, _) = m.scan(chunk) { set(custom[i].rule.name, Substring(match.text)) }
            }
        }
    }
}

/// A glob over a fact's value: `*` any run of characters, `?` any one; the rest is literal.
public func globMatches(_ pattern: String, _ value: String) -> Bool {
    let p = Array(pattern), v = Array(value)
    var pi = 0, vi = 0, star = -1, mark = 0
    while vi < v.count {
        if pi < p.count && (p[pi] == "?" || p[pi] == v[vi]) { pi += 1; vi += 1 }
        else if pi < p.count && p[pi] == "*" { star = pi; mark = vi; pi += 1 }
        else if star >= 0 { pi = star + 1; mark += 1; vi = mark }
        else { return false }
    }
    while pi < p.count && p[pi] == "*" { pi += 1 }
    return pi == p.count
}
