import JSONDocument
import YAML
#if canImport(Glibc)
import Glibc
#endif

/// The whole agent configuration, loaded from one YAML file.
public struct AgentConfig: Sendable {
    public var sourceFile: String
    public var dut: DUTConfig
    public var serial: SerialConfig
    public var gpio: GPIOConfig
    public var power: PowerProfile
    public var http: HTTPConfig
    public var stateDirectory: String
    public var auth: AuthConfig
    public var leases: LeaseConfig
    public var simulator: SimulatorConfig
    public var qemu: QEMUConfig = QEMUConfig(binary: "qemu-system-x86_64", arguments: [], softOffSeconds: 30)
    public var compat: CompatConfig
    public var flash: FlashConfig = FlashConfig()
    public var artifacts: ArtifactsConfig = ArtifactsConfig()
    /// An iteration's serial log kept with its run at most this big (`runs.iteration_log_max_mib`).
    public var iterationLogMaxBytes: Int64 = 64 << 20
    public var web: WebConfig = WebConfig()
}

/// The web page (`web:`): where its files, xterm.js and the run specs it offers are. Relative
/// paths are taken from the config file's folder.
public struct WebConfig: Sendable {
    public var enabled = true
    public var root = "/usr/share/rte-agent/web"
    public var xterm = "/usr/share/javascript/xterm"
    public var specs = "/usr/share/rte-agent/specs"
    public init() {}
}

public enum DUTBackend: String, CaseIterable, Sendable { case gpio, simulated, qemu }

public struct DUTConfig: Sendable {
    public var name: String
    public var board: String
    public var backend: DUTBackend
}

public enum Parity: String, CaseIterable, Sendable { case none, even, odd }
public enum FlowControl: String, CaseIterable, Sendable { case none, rtscts, xonxoff }

public struct SerialConfig: Sendable {
    /// Device path; for the simulated backend the agent creates a pty and links it here.
    public var device: String
    public var baud: Int
    public var dataBits: Int
    public var parity: Parity
    public var stopBits: Int
    public var flowControl: FlowControl
    public var exclusive: Bool
    public var ringBytes: Int
    /// 64-bit: a rotated log file may pass 2 GiB even on a 32-bit board.
    public var logMaxFileBytes: Int64
    public var logMaxFiles: Int
    public var reopenInitialMilliseconds: Int
    public var reopenMaxMilliseconds: Int
    /// SCHED_FIFO priority of the serial reader thread (which answers prompts), nil: normal
    /// scheduling. Keeps the prompt → key time near the idle figure while other work loads the CPU.
    public var realtimePriority: Int? = nil

    public init(device: String, baud: Int = 115200, dataBits: Int = 8, parity: Parity = .none, stopBits: Int = 1,
                flowControl: FlowControl = .none, exclusive: Bool = true, ringBytes: Int = 16 << 20,
                logMaxFileBytes: Int64 = 8 << 20, logMaxFiles: Int = 16,
                reopenInitialMilliseconds: Int = 100, reopenMaxMilliseconds: Int = 5000) {
        self.device = device; self.baud = baud; self.dataBits = dataBits; self.parity = parity; self.stopBits = stopBits
        self.flowControl = flowControl; self.exclusive = exclusive; self.ringBytes = ringBytes
        self.logMaxFileBytes = logMaxFileBytes; self.logMaxFiles = logMaxFiles
        self.reopenInitialMilliseconds = reopenInitialMilliseconds; self.reopenMaxMilliseconds = reopenMaxMilliseconds
    }

    public static let standardBauds: [Int] = [
        50, 75, 110, 134, 150, 200, 300, 600, 1200, 1800, 2400, 4800, 9600, 19200, 38400, 57600,
        115200, 230400, 460800, 500000, 576000, 921600, 1000000, 1152000, 1500000, 2000000,
        2500000, 3000000, 3500000, 4000000,
    ]
}

public enum LineDirection: String, CaseIterable, Sendable, Codable { case input, output }
public enum LineDrive: String, CaseIterable, Sendable, Codable { case pushPull = "push-pull", openDrain = "open-drain" }
public enum LineBias: String, CaseIterable, Sendable, Codable { case asIs = "as-is", disable, pullUp = "pull-up", pullDown = "pull-down" }

/// Where one GPIO line is (chip + offset or name) and how it is used (direction, polarity, safe value).
public struct GPIOLineConfig: Sendable, Equatable {
    /// The role name, e.g. `relay`, `power_button`.
    public var role: String
    /// Chip as name (`gpiochip0`), label, number or `/dev/gpiochipN` path.
    public var chip: String
    public var offset: Int?
    /// Line name on the chip, used when no offset is given.
    public var lineName: String?
    public var direction: LineDirection
    public var activeLow: Bool
    public var drive: LineDrive
    public var bias: LineBias
    /// Logical value (true = active) the line is put to at start and on every exit.
    public var safeValue: Bool
    public var initialValue: Bool
    public var consumer: String
    /// Number of the line in the RTE's legacy REST API (`/api/v1/gpio/{n}`).
    public var compatNumber: Int?
    /// In the legacy API, open-collector outputs report 1 when driven low.
    public var compatOpenCollector: Bool
    /// The line's name in the legacy API (RteCtrl's `description`, e.g. `apu_pwr`); the role when not set.
    public var compatName: String? = nil
    /// An input that must never be driven (it senses something on the DUT): the legacy API's
    /// `"direction": "out"` is refused for it.
    public var inputOnly: Bool = false

    public var locationDescription: String {
        if let offset { return "\(chip) line \(offset)" }
        return "\(chip) line \"\(lineName ?? "?")\""
    }
}

public struct GPIOConfig: Sendable {
    public var lines: [GPIOLineConfig]
    public func line(_ role: String) -> GPIOLineConfig? { lines.first { $0.role == role } }
}

/// How the DUT is powered through the lines (per board).
public struct PowerProfile: Sendable {
    /// Press the power button after the relay turns on (boards that do not boot on power applied).
    public var pressPowerButtonOnPowerOn: Bool
    public var pressMilliseconds: Int
    public var softOffPressMilliseconds: Int
    public var resetPressMilliseconds: Int
    public var cycleOffMilliseconds: Int
    /// After the relay turns on, wait this long before a power-button press.
    public var settleMilliseconds: Int
}

public struct HTTPConfig: Sendable {
    public var host: String
    public var port: Int
    public var maxBodyBytes: Int
    public var connectionTimeoutSeconds: Int
    public var maxConnections: Int
    /// Connections one client address may hold open (libmicrohttpd's per-IP limit).
    public var maxConnectionsPerAddress: Int = 64
    /// Time a connection has to send a request's headers, however slowly (slowloris).
    public var headerTimeoutSeconds: Int = 10
    /// A request body slower than this on average, once `bodyGraceSeconds` have passed, is cut.
    public var minBodyBytesPerSecond: Int = 1024
    public var bodyGraceSeconds: Int = 10
    /// The body limit for a caller whose token is missing or wrong (decided before the body).
    public var unauthenticatedBodyBytes: Int = 16 << 10
    public var tlsCertificate: String?
    public var tlsKey: String?
    /// Raw TCP console port (ser2net style); nil = off.
    public var consolePort: Int?
    public var consoleHost: String
    /// Telnet negotiation on the console port (char mode); false for raw TCP clients like socat.
    public var consoleTelnet: Bool = true
    /// A second console port that is always raw TCP, beside a telnet one: labgrid's
    /// NetworkSerialPort (protocol raw) reads it while people and LAVA use telnet. nil = off.
    public var consoleRawPort: Int? = nil
    /// The API's OpenAPI document (`http.openapi`), served at `/api/v1/openapi.json`.
    public var openAPIDocument = "/usr/share/rte-agent/openapi.json"
}

public enum ConsoleProtocol: String, CaseIterable, Sendable { case telnet, raw }

public struct TokenConfig: Sendable, Equatable {
    public var user: String
    /// Lower-case hex SHA-256 of the token; the token itself never sits in the config.
    public var sha256: String
    public var admin: Bool
    /// A fleet engine's identity (labgrid, LAVA): its requests act under the lease this user holds
    /// without sending X-Lease-Token, because the engines' stock clients (labgrid's NetworkPowerPort,
    /// HttpDigitalOutput) cannot send headers. Give each engine its own user.
    public var engine: Bool = false
}

public struct AuthConfig: Sendable {
    public var enabled: Bool
    public var tokens: [TokenConfig]
}

public enum ExpiryAction: String, CaseIterable, Sendable { case powerOff = "power_off", hardOff = "hard_off", none }

public struct LeaseConfig: Sendable {
    public var defaultTTLSeconds: Int
    public var maxTTLSeconds: Int
    public var maxWaitSeconds: Int
    public var expiryAction: ExpiryAction
}

public enum SimulatorTiming: String, CaseIterable, Sendable { case fast, realistic }

public struct SimulatorConfig: Sendable {
    public var timing: SimulatorTiming
    public var menuEntries: [String]
    public var defaultEntry: Int
    public var password: String
    /// How many `dhcp` attempts fail before one succeeds (to exercise retries).
    public var dhcpFailures: Int
    /// Overrides the Ctrl-B window (0 makes every Ctrl-B come too late, to test that failure).
    public var ctrlBWindowMilliseconds: Int? = nil
}

/// The QEMU virtual apu2 backend: the agent adds the serial pty, the QMP socket and `-S`.
public struct QEMUConfig: Sendable {
    public var binary: String
    /// Machine, CPU, memory, network, firmware settings (relative file paths are inside state_dir).
    public var arguments: [String]
    /// How long a soft power-off (ACPI) may take before the state is reported as still on.
    public var softOffSeconds: Int
}

extension String {
    public func replacingAll(_ target: String, with replacement: String) -> String {
        guard !target.isEmpty else { return self }
        var out = "", rest = Substring(self)
        while let r = rest.firstRange(of: target) { out += rest[..<r.lowerBound] + replacement; rest = rest[r.upperBound...] }
        return out + rest
    }
}

/// Boot files uploaded to the agent and served to the DUT (`artifacts:`).
public struct ArtifactsConfig: Sendable {
    /// Where the DUT fetches them (host:port on the DUT's network); nil: not served.
    public var listenHost: String?
    public var listenPort: Int = 8080
    /// The base URL the DUT uses to reach that listener (what iPXE is told), e.g. http://192.168.4.1:8080.
    public var url: String?
    /// One artifact at most (a kernel, an initramfs): 64-bit, boards' files pass 2 GiB rarely but may.
    public var maxBytes: Int64 = 512 << 20
    /// All artifacts together; the least recently used go first when a new one needs room.
    public var quotaBytes: Int64 = 2 << 30
    /// Artifacts not used for this long are removed.
    public var maxAgeSeconds: Int64 = 7 * 86400
    public init() {}
}

/// Flashing the DUT's SPI chip through the RTE's SPI header with flashrom (`flash:`).
public struct FlashConfig: Sendable {
    public enum Voltage: String, Sendable, CaseIterable { case v3_3 = "3.3", v1_8 = "1.8" }
    public enum PowerAfter: String, Sendable, CaseIterable { case off, on }
    /// The flashrom binary (searched in PATH).
    public var flashrom = "flashrom"
    /// flashrom's `-p` argument: the RTE's spidev.
    public var programmer = "linux_spi:dev=/dev/spidev1.0,spispeed=16000"
    /// flashrom's `-c` argument, when probing finds more than one definition.
    public var chip: String?
    /// The chip's size: uploaded images must have exactly this many bytes (apu2: W25Q64, 8 MiB).
    public var chipBytes: Int64 = 8 << 20
    public var voltage: Voltage = .v3_3
    /// How long the power button is held to put the board in S5 before the SPI lines switch.
    public var s5PressMilliseconds = 6000
    /// Pulse `cmos_clear` after a write or an erase (the apu2 needs it after a new firmware).
    public var cmosResetAfterWrite = true
    public var cmosPressMilliseconds = 1000
    /// What the DUT is left at after flashing.
    public var powerAfter: PowerAfter = .off
    /// A flashrom run longer than this is killed (an 8 MiB write+verify takes ~1–3 min at 16 MHz).
    public var timeoutSeconds = 900
    public init() {}
}

public struct CompatConfig: Sendable {
    public var enabled: Bool
    /// CIDR networks whose anonymous legacy writes are accepted when nobody holds a lease.
    public var trustedNetworks: [String]
    public var allowAnonymousWrites: Bool
}

extension AgentConfig {
    /// Loads and validates a config file. Every failure names the file and the key.
    public static func load(path: String) throws(ConfigError) -> AgentConfig {
        var info = stat()
        if stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR {
            throw ConfigError(file: path, keyPath: "", message: "is a directory; give the config file itself (e.g. \(path.hasSuffix("/") ? path : path + "/")rte-agent.yaml)")
        }
        guard let text = readTextFile(path) else {
            throw ConfigError(file: path, keyPath: "", message: "cannot read the file (\(String(cString: strerror(errno))))")
        }
        return try parse(yaml: text, file: path)
    }

    public static func parse(yaml: String, file: String = "<config>") throws(ConfigError) -> AgentConfig {
        let nesting = YAMLNesting.deepest(in: yaml)
        guard nesting.depth <= YAMLNesting.limit else {
            throw ConfigError(file: file, keyPath: "", message: "nested \(nesting.depth) levels deep; at most \(YAMLNesting.limit) are accepted",
                              line: nesting.line)
        }
        let composed: Node?
        do { composed = try YAML.compose(yaml: yaml) } catch {
            throw ConfigError(file: file, keyPath: "", message: "not valid YAML: \(error)", line: error.mark?.line)
        }
        guard let node = composed else { throw ConfigError(file: file, keyPath: "", message: "the file is empty") }
        var root = try YAMLReader(file: file, path: "", node: node)
        let config = try parseRoot(&root, file: file)
        try root.rejectUnknownKeys()
        return config
    }

    private static func parseRoot(_ root: inout YAMLReader, file: String) throws(ConfigError) -> AgentConfig {
        // dut
        var dutR: YAMLReader
        if let r = try root.section("dut") { dutR = r } else { dutR = try YAMLReader(file: file, path: "dut", node: Node.mapping(Node.Mapping([]))) }
        let dut = DUTConfig(
            name: try dutR.string("name", default: "apu2"),
            board: try dutR.string("board", default: "apu2"),
            backend: try dutR.choice("backend", default: DUTBackend.gpio))
        try dutR.rejectUnknownKeys()

        // serial
        guard var sR = try root.section("serial") else { throw root.error("serial", "is required") }
        let baud = try sR.int("baud", default: 115200)
        guard SerialConfig.standardBauds.contains(baud) else {
            throw sR.error("baud", "\(baud) is not a standard rate (allowed: \(SerialConfig.standardBauds.map(String.init).joined(separator: ", ")))")
        }
        var logR = try sR.section("log")
        var reopenR = try sR.section("reopen_backoff_ms")
        let serial = SerialConfig(
            device: try sR.requiredString("device"),
            baud: baud,
            dataBits: try sR.int("data_bits", default: 8, range: 5...8),
            parity: try sR.choice("parity", default: Parity.none),
            stopBits: try sR.int("stop_bits", default: 1, range: 1...2),
            flowControl: try sR.choice("flow_control", default: FlowControl.none),
            exclusive: try sR.bool("exclusive", default: true),
            // The ring is memory (allocated as it fills): at most 1 GiB, which fits a 32-bit Int.
            ringBytes: try sR.int("ring_bytes", default: 16 << 20, range: 4096...(1 << 30)),
            logMaxFileBytes: try logR?.int64("max_file_bytes", default: 8 << 20, range: 4096...(Int64(1) << 40)) ?? (8 << 20),
            logMaxFiles: try logR?.int("max_files", default: 16, range: 1...100_000) ?? 16,
            reopenInitialMilliseconds: try reopenR?.int("initial", default: 100, range: 1...600_000) ?? 100,
            reopenMaxMilliseconds: try reopenR?.int("max", default: 5000, range: 1...600_000) ?? 5000)
        var serialConfig = serial
        if let priority = try sR.int("realtime_priority") {
            guard (1...99).contains(priority) else { throw sR.error("realtime_priority", "must be between 1 and 99, got \(priority)") }
            serialConfig.realtimePriority = priority
        }
        try logR?.rejectUnknownKeys()
        try reopenR?.rejectUnknownKeys()
        try sR.rejectUnknownKeys()

        // gpio
        var lines: [GPIOLineConfig] = []
        if var gR = try root.section("gpio") {
            let defaultChip = try gR.string("chip")
            let defaultConsumer = try gR.string("consumer", default: "rte-agent")
            if var linesR = try gR.section("lines") {
                for role in linesR.keys {
                    guard var lR = try linesR.section(role) else { throw linesR.error(role, "expected a mapping, got null") }
                    lines.append(try parseLine(&lR, role: role, defaultChip: defaultChip, consumer: defaultConsumer))
                    try lR.rejectUnknownKeys()
                }
            }
            try gR.rejectUnknownKeys()
        }
        var seenCompat: [Int: String] = [:]
        for l in lines {
            if let n = l.compatNumber {
                if let other = seenCompat[n] {
                    throw ConfigError(file: file, keyPath: "gpio.lines.\(l.role).compat_number", message: "\(n) is already used by \(other)")
                }
                seenCompat[n] = l.role
            }
        }

        // power
        var pR = try root.section("power")
        let power = PowerProfile(
            pressPowerButtonOnPowerOn: try pR?.bool("press_power_button_on_power_on", default: false) ?? false,
            pressMilliseconds: try pR?.int("press_ms", default: 200, range: 1...60_000) ?? 200,
            softOffPressMilliseconds: try pR?.int("soft_off_press_ms", default: 4000, range: 1...60_000) ?? 4000,
            resetPressMilliseconds: try pR?.int("reset_press_ms", default: 200, range: 1...60_000) ?? 200,
            cycleOffMilliseconds: try pR?.int("cycle_off_ms", default: 3000, range: 0...600_000) ?? 3000,
            settleMilliseconds: try pR?.int("settle_ms", default: 500, range: 0...60_000) ?? 500)
        try pR?.rejectUnknownKeys()
        if dut.backend == .gpio {
            guard lines.contains(where: { $0.role == "relay" }) || lines.contains(where: { $0.role == "power_button" }) else {
                throw ConfigError(file: file, keyPath: "gpio.lines", message: "the gpio backend needs a relay or power_button line to power the DUT")
            }
        }

        // http
        var hR = try root.section("http")
        let listen = try hR?.string("listen", default: "127.0.0.1:8000") ?? "127.0.0.1:8000"
        guard let (host, port) = parseHostPort(listen) else {
            throw ConfigError(file: file, keyPath: "http.listen", message: "expected HOST:PORT, got \"\(listen)\"")
        }
        var tlsR = try hR?.section("tls")
        let cert = try tlsR?.string("certificate")
        let key = try tlsR?.string("key")
        if (cert == nil) != (key == nil) {
            throw ConfigError(file: file, keyPath: "http.tls", message: "needs both certificate and key")
        }
        try tlsR?.rejectUnknownKeys()
        let consolePort = try hR?.int("console_port")
        if let consolePort, !(0...65535).contains(consolePort) {
            throw ConfigError(file: file, keyPath: "http.console_port", message: "must be between 0 and 65535, got \(consolePort)")
        }
        let consoleRawPort = try hR?.int("console_raw_port")
        if let consoleRawPort, !(0...65535).contains(consoleRawPort) {
            throw ConfigError(file: file, keyPath: "http.console_raw_port", message: "must be between 0 and 65535, got \(consoleRawPort)")
        }
        let httpConfig = HTTPConfig(
            host: host, port: port,
            maxBodyBytes: try hR?.int("max_body_bytes", default: 1 << 20, range: 1024...(1 << 30)) ?? (1 << 20),
            connectionTimeoutSeconds: try hR?.int("connection_timeout_s", default: 30, range: 1...3600) ?? 30,
            maxConnections: try hR?.int("max_connections", default: 256, range: 1...65536) ?? 256,
            maxConnectionsPerAddress: try hR?.int("max_connections_per_address", default: 64, range: 1...65536) ?? 64,
            headerTimeoutSeconds: try hR?.int("header_timeout_s", default: 10, range: 1...600) ?? 10,
            minBodyBytesPerSecond: try hR?.int("min_body_bytes_per_s", default: 1024, range: 0...(1 << 30)) ?? 1024,
            bodyGraceSeconds: try hR?.int("body_grace_s", default: 10, range: 1...3600) ?? 10,
            unauthenticatedBodyBytes: try hR?.int("unauthenticated_body_bytes", default: 16 << 10, range: 0...(1 << 20)) ?? (16 << 10),
            tlsCertificate: cert, tlsKey: key,
            consolePort: consolePort,
            consoleHost: try hR?.string("console_host", default: host) ?? host,
            consoleTelnet: (try hR?.choice("console_protocol", default: ConsoleProtocol.telnet) ?? .telnet) == .telnet,
            consoleRawPort: consoleRawPort)
        var http = httpConfig
        if let p = try hR?.string("openapi") {
            let base = file.contains("/") ? String(file[..<file.lastIndex(of: "/")!]) : "."
            http.openAPIDocument = p.hasPrefix("/") ? p : base + "/" + p
        }
        try hR?.rejectUnknownKeys()

        let stateDirectory = try root.string("state_dir", default: "/var/lib/rte-agent")

        // auth
        var aR = try root.section("auth")
        let authEnabled = try aR?.bool("enabled", default: true) ?? true
        var tokens: [TokenConfig] = []
        if var a = aR {
            for (p, n) in try a.list("tokens") {
                var tR = try YAMLReader(file: file, path: p, node: n)
                let hash = try tR.requiredString("sha256").lowercased()
                guard hash.count == 64, hash.allSatisfy({ $0.isHexDigit }) else {
                    throw tR.error("sha256", "expected 64 hex digits (sha256sum of the token), got \"\(hash)\"")
                }
                tokens.append(TokenConfig(user: try tR.requiredString("user"), sha256: hash, admin: try tR.bool("admin", default: false),
                                          engine: try tR.bool("engine", default: false)))
                try tR.rejectUnknownKeys()
            }
            aR = a
        }
        try aR?.rejectUnknownKeys()
        if authEnabled && tokens.isEmpty {
            throw ConfigError(file: file, keyPath: "auth.tokens", message: "auth is enabled but no token is configured (add tokens or set auth.enabled: false on a loopback-only agent)")
        }
        if !authEnabled && !isLoopback(host) {
            throw ConfigError(file: file, keyPath: "auth.enabled", message: "auth may only be off when http.listen is a loopback address, got \"\(host)\"")
        }
        // Every listener, not only the API: the console types into the DUT.
        if !authEnabled && http.consolePort != nil && !isLoopback(http.consoleHost) {
            throw ConfigError(file: file, keyPath: "http.console_host",
                              message: "auth is off, so the console may only listen on a loopback address, got \"\(http.consoleHost)\" (turn auth on or use 127.0.0.1)")
        }
        let auth = AuthConfig(enabled: authEnabled, tokens: tokens)

        // leases
        var lR = try root.section("leases")
        let maxTTL = try lR?.int("max_ttl_s", default: 8 * 3600, range: 1...(30 * 86400)) ?? 8 * 3600
        let leases = LeaseConfig(
            defaultTTLSeconds: try lR?.int("default_ttl_s", default: min(3600, maxTTL), range: 1...maxTTL) ?? min(3600, maxTTL),
            maxTTLSeconds: maxTTL,
            maxWaitSeconds: try lR?.int("max_wait_s", default: 3600, range: 0...(7 * 86400)) ?? 3600,
            expiryAction: try lR?.choice("expiry_action", default: ExpiryAction.powerOff) ?? .powerOff)
        try lR?.rejectUnknownKeys()

        // simulator
        var simR = try root.section("simulator")
        let defaultEntries = ["Debian stable netboot", "Debian stable netinst", "Xen Linux dev", "Linux dev", "iPXE shell"]
        let entries = try simR?.stringList("menu_entries") ?? []
        let simulator = SimulatorConfig(
            timing: try simR?.choice("timing", default: SimulatorTiming.realistic) ?? .realistic,
            menuEntries: entries.isEmpty ? defaultEntries : entries,
            defaultEntry: try simR?.int("default_entry", default: 0, range: 0...((entries.isEmpty ? defaultEntries : entries).count - 1)) ?? 0,
            password: try simR?.string("password", default: "debian") ?? "debian",
            dhcpFailures: try simR?.int("dhcp_failures", default: 0, range: 0...100) ?? 0,
            ctrlBWindowMilliseconds: try simR?.int("ctrl_b_window_ms"))
        try simR?.rejectUnknownKeys()

        // qemu
        var qR = try root.section("qemu")
        let qemu = QEMUConfig(binary: try qR?.string("binary", default: "qemu-system-x86_64") ?? "qemu-system-x86_64",
                              arguments: try qR?.stringList("args") ?? [],
                              softOffSeconds: try qR?.int("soft_off_s", default: 30, range: 1...3600) ?? 30)
        try qR?.rejectUnknownKeys()
        if dut.backend == .qemu && qemu.arguments.isEmpty {
            throw ConfigError(file: file, keyPath: "qemu.args", message: "the qemu backend needs the machine's arguments (see deploy/qemu-apu2.yaml)")
        }

        // compat
        var cR = try root.section("compat")
        // An absent or empty list means loopback only; allow_anonymous_writes: false closes it.
        let networks = try cR?.stringList("trusted_networks") ?? []
        let compat = CompatConfig(
            enabled: try cR?.bool("enabled", default: false) ?? false,
            trustedNetworks: networks.isEmpty ? ["127.0.0.0/8", "::1/128"] : networks,
            allowAnonymousWrites: try cR?.bool("allow_anonymous_writes", default: true) ?? true)
        try cR?.rejectUnknownKeys()

        // flash
        var flash = FlashConfig()
        if var fR = try root.section("flash") {
            flash.flashrom = try fR.string("flashrom", default: flash.flashrom)
            // "{state_dir}" (expanded when the agent starts) keeps an emulated chip beside the agent's state.
            flash.programmer = try fR.string("programmer", default: flash.programmer)
            flash.chip = try fR.string("chip")
            if let mib = try fR.int("chip_mib") {
                guard [1, 2, 4, 8, 16, 32, 64, 128].contains(mib) else { throw fR.error("chip_mib", "must be a power of two from 1 to 128, got \(mib)") }
                flash.chipBytes = Int64(mib) << 20
            }
            flash.voltage = try fR.choice("voltage", default: flash.voltage)
            flash.s5PressMilliseconds = try fR.int("s5_press_ms", default: flash.s5PressMilliseconds, range: 0...30_000)
            flash.cmosResetAfterWrite = try fR.bool("cmos_reset_after_write", default: flash.cmosResetAfterWrite)
            flash.cmosPressMilliseconds = try fR.int("cmos_press_ms", default: flash.cmosPressMilliseconds, range: 1...30_000)
            flash.powerAfter = try fR.choice("power_after", default: flash.powerAfter)
            flash.timeoutSeconds = try fR.int("timeout_s", default: flash.timeoutSeconds, range: 1...7200)
            try fR.rejectUnknownKeys()
        }

        // artifacts
        var artifacts = ArtifactsConfig()
        if var aR = try root.section("artifacts") {
            if let listen = try aR.string("listen") {
                guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]), (0...65535).contains(port) else {
                    throw aR.error("listen", "must be host:port, e.g. 0.0.0.0:8080")
                }
                artifacts.listenHost = String(listen[..<colon].filter { $0 != "[" && $0 != "]" })
                artifacts.listenPort = port
            }
            artifacts.url = try aR.string("url")
            if artifacts.listenHost != nil && artifacts.url == nil {
                throw aR.error("url", "is required with listen: the URL the DUT uses to reach it, e.g. http://192.168.4.1:8080")
            }
            if let mib = try aR.int("max_mib") {
                guard (1...65536).contains(mib) else { throw aR.error("max_mib", "must be 1 to 65536, got \(mib)") }
                artifacts.maxBytes = Int64(mib) << 20
            }
            if let mib = try aR.int("quota_mib") {
                guard (1...1_048_576).contains(mib) else { throw aR.error("quota_mib", "must be 1 to 1048576, got \(mib)") }
                artifacts.quotaBytes = Int64(mib) << 20
            }
            if let h = try aR.int("max_age_h") {
                guard (1...87600).contains(h) else { throw aR.error("max_age_h", "must be 1 to 87600 hours, got \(h)") }
                artifacts.maxAgeSeconds = Int64(h) * 3600
            }
            try aR.rejectUnknownKeys()
        }

        var iterationLog: Int64 = 64 << 20
        if var rR = try root.section("runs") {
            if let mib = try rR.int("iteration_log_max_mib") {
                guard (1...4096).contains(mib) else { throw rR.error("iteration_log_max_mib", "must be 1 to 4096, got \(mib)") }
                iterationLog = Int64(mib) << 20
            }
            try rR.rejectUnknownKeys()
        }

        var web = WebConfig()
        if var wR = try root.section("web") {
            let base = file.contains("/") ? String(file[..<file.lastIndex(of: "/")!]) : "."
            func place(_ p: String) -> String { p.hasPrefix("/") ? p : base + "/" + p }
            web.enabled = try wR.bool("enabled", default: true)
            if let p = try wR.string("root") { web.root = place(p) }
            if let p = try wR.string("xterm") { web.xterm = place(p) }
            if let p = try wR.string("specs") { web.specs = place(p) }
            try wR.rejectUnknownKeys()
        }

        var config = AgentConfig(
            sourceFile: file, dut: dut, serial: serialConfig, gpio: GPIOConfig(lines: lines), power: power, http: http,
            stateDirectory: stateDirectory, auth: auth, leases: leases, simulator: simulator, qemu: qemu, compat: compat)
        config.flash = flash
        config.artifacts = artifacts
        config.iterationLogMaxBytes = iterationLog
        config.web = web
        return config
    }

    private static func parseLine(_ r: inout YAMLReader, role: String, defaultChip: String?, consumer: String) throws(ConfigError) -> GPIOLineConfig {
        guard let chip = try r.string("chip") ?? defaultChip else { throw r.error("chip", "is required (or set gpio.chip)") }
        let offset = try r.int("offset")
        if let offset, offset < 0 || offset > 4095 { throw r.error("offset", "must be between 0 and 4095, got \(offset)") }
        let name = try r.string("name")
        if offset == nil && name == nil { throw r.error("offset", "is required (or give the line's name)") }
        let direction = try r.choice("direction", default: role == "power_led" ? LineDirection.input : .output)
        let safe = try r.int("safe", default: 0, range: 0...1) == 1
        let initial = try r.int("initial", default: safe ? 1 : 0, range: 0...1) == 1
        let drive = try r.choice("drive", default: LineDrive.pushPull)
        let compatNumber = try r.int("compat_number")
        if let compatNumber, !(0...255).contains(compatNumber) {
            throw r.error("compat_number", "must be between 0 and 255, got \(compatNumber)")
        }
        let compatName = try r.string("compat_name")
        if let compatName, compatName.isEmpty || compatName.count > 64 {
            throw r.error("compat_name", "must be 1 to 64 characters")
        }
        let inputOnly = try r.bool("input_only", default: false)
        if inputOnly && direction == .output {
            throw r.error("input_only", "is only for input lines (direction: input)")
        }
        return GPIOLineConfig(
            role: role, chip: chip, offset: offset, lineName: name, direction: direction,
            activeLow: try r.bool("active_low", default: false),
            drive: drive,
            bias: try r.choice("bias", default: LineBias.asIs),
            safeValue: safe, initialValue: initial,
            consumer: try r.string("consumer", default: consumer),
            compatNumber: compatNumber,
            compatOpenCollector: try r.bool("compat_open_collector", default: drive == .openDrain),
            compatName: compatName, inputOnly: inputOnly)
    }

    static func parseHostPort(_ s: String) -> (String, Int)? {
        guard let colon = s.lastIndex(of: ":") else { return nil }
        var host = String(s[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard let port = Int(s[s.index(after: colon)...]), (0...65535).contains(port), !host.isEmpty else { return nil }
        return (host, port)
    }

    public static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }

    /// Returns a copy with the listen address replaced (`--listen HOST:PORT`).
    public func overridingListen(_ hostPort: String) throws(ConfigError) -> AgentConfig {
        guard let (host, port) = AgentConfig.parseHostPort(hostPort) else {
            throw ConfigError(file: "--listen", keyPath: "", message: "expected HOST:PORT, got \"\(hostPort)\"")
        }
        if !auth.enabled && !AgentConfig.isLoopback(host) {
            throw ConfigError(file: "--listen", keyPath: "", message: "auth is off in \(sourceFile); refusing to listen on non-loopback \(host)")
        }
        var c = self
        c.http.host = host; c.http.port = port
        if c.http.consoleHost == http.host { c.http.consoleHost = host }
        return c
    }
}

func readTextFile(_ path: String) -> String? {
    guard let f = fopen(path, "r") else { return nil }
    defer { fclose(f) }
    var bytes: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = fread(&buf, 1, buf.count, f)
        if n > 0 { bytes.append(contentsOf: buf[0..<n]) }
        if n < buf.count { break }
    }
    return String(decoding: bytes, as: UTF8.self)
}
