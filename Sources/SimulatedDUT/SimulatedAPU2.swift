import Configuration
import GPIO
import POSIXIO
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// How long the simulated board takes for each phase.
public struct SimulatorTimings: Sendable {
    public var step: Duration            // between banner lines
    public var firmware: Duration        // coreboot + memory init
    public var bootMenuWindow: Duration  // "Press F10 key now for boot menu"
    public var ctrlBWindow: Duration     // "Press Ctrl-B for the iPXE command line..."
    public var dhcp: Duration
    public var download: Duration
    public var kernelLine: Duration      // between kernel log lines
    public var kernelLines: Int
    public var menuTimeout: Duration?    // iPXE menu countdown (nil = wait forever)

    public static let fast = SimulatorTimings(
        step: .milliseconds(1), firmware: .milliseconds(20), bootMenuWindow: .milliseconds(300),
        ctrlBWindow: .milliseconds(400), dhcp: .milliseconds(30), download: .milliseconds(10),
        kernelLine: .microseconds(300), kernelLines: 60, menuTimeout: .seconds(1))
    public static let realistic = SimulatorTimings(
        step: .milliseconds(30), firmware: .milliseconds(1500), bootMenuWindow: .milliseconds(2500),
        ctrlBWindow: .milliseconds(2000), dhcp: .milliseconds(1500), download: .milliseconds(400),
        kernelLine: .milliseconds(25), kernelLines: 180, menuTimeout: .seconds(10))

    public init(step: Duration, firmware: Duration, bootMenuWindow: Duration, ctrlBWindow: Duration, dhcp: Duration,
                download: Duration, kernelLine: Duration, kernelLines: Int, menuTimeout: Duration?) {
        self.step = step; self.firmware = firmware; self.bootMenuWindow = bootMenuWindow; self.ctrlBWindow = ctrlBWindow
        self.dhcp = dhcp; self.download = download; self.kernelLine = kernelLine; self.kernelLines = kernelLines
        self.menuTimeout = menuTimeout
    }
}

/// A PC Engines apu2 as seen from an RTE: it reacts to the relay, power and reset lines of an
/// in-memory GPIO bank and talks over a pseudo-terminal (the agent opens its slave side with the
/// real termios code, exactly like /dev/ttyS1). coreboot + SeaBIOS, the F10 boot menu, iPXE with
/// its Ctrl-B window, an `iPXE>` shell, an iPXE menu drawn with iPXE's own escape sequences,
/// a Linux kernel log, a login and a small shell.
public final class SimulatedAPU2: Sendable {
    public let slavePath: String
    private let pty: PseudoTerminal
    private let brain: SimBrain
    private let bank: InMemoryGPIOBank
    private let observerToken: Mutex<UInt64?> = Mutex(nil)
    private let events: AsyncStream<SimInput>.Continuation
    private let pump: Task<Void, Never>
    private let stopped = Mutex(false)
    private let wake: WakePipe

    public init(bank: InMemoryGPIOBank, config: SimulatorConfig, timings: SimulatorTimings? = nil) throws(Errno) {
        pty = try PseudoTerminal.open()
        try pty.master.setNonBlocking(true)
        slavePath = pty.slavePath
        self.bank = bank
        var t = timings ?? (config.timing == .fast ? .fast : .realistic)
        if let ms = config.ctrlBWindowMilliseconds { t.ctrlBWindow = .milliseconds(ms) }
        let brain = SimBrain(master: pty.master, config: config, timings: t, bank: bank)
        self.brain = brain
        let (stream, continuation) = AsyncStream<SimInput>.makeStream()
        events = continuation
        // One consumer keeps GPIO edges and keystrokes in the order they happened.
        pump = Task { for await e in stream { await brain.handle(e) } }
        let token = bank.observe { change in continuation.yield(.line(change)) }
        observerToken.withLock { $0 = token }
        // The board's state at attach time: a relay already on means powered.
        if bank.isActive("relay") { continuation.yield(.line(.init(role: "relay", active: true, at: .init(nanosecondsSinceEpoch: 0)))) }
        wake = try WakePipe()
        startThread(name: "sim-apu2-input") { [self] in inputLoop() }
    }

    /// Keystrokes from the agent (the pty's slave side) go to the board in arrival order.
    private func inputLoop() {
        let master = pty.master
        var buf = [UInt8](repeating: 0, count: 4096)
        while !stopped.withLock({ $0 }) {
            guard let ev = try? FileDescriptor.poll([(master, Int16(POLLIN)), (wake.readEnd, Int16(POLLIN))], timeoutMilliseconds: 200) else { break }
            if ev[1] != 0 { break }
            if ev[0] & Int16(POLLIN) != 0 {
                let n = buf.withUnsafeMutableBytes { Glibc.read(master.rawValue, $0.baseAddress, $0.count) }
                if n > 0 { events.yield(.keys(Array(buf[0..<n]))) }
            } else if ev[0] & Int16(POLLHUP) != 0 {
                // No slave open right now: nothing to read. Do not spin.
                _ = try? FileDescriptor.poll([(wake.readEnd, Int16(POLLIN))], timeoutMilliseconds: 20)
            }
        }
    }

    /// What the board is doing now (for tests and the demo).
    public var phase: String { get async { await brain.phase } }
    public var powered: Bool { get async { await brain.powered } }
    /// The kernel command line of the last boot (tells which menu entry really booted).
    public var lastCommandLine: String? { get async { await brain.lastCommandLine } }

    /// Returns once every GPIO edge and keystroke sent so far has been handled by the board.
    public func sync() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            if stopped.withLock({ $0 }) { c.resume() } else { events.yield(.sync(c)) }
        }
    }

    public func stop() async {
        if stopped.withLock({ s in let was = s; s = true; return was }) { return }
        if let t = observerToken.withLock({ $0 }) { bank.removeObserver(t) }
        events.finish()
        wake.wake()
        await brain.powerLoss()
        pump.cancel()
        pty.close()
    }
}

enum SimInput: Sendable {
    case line(InMemoryGPIOBank.Change)
    case keys([UInt8])
    case sync(CheckedContinuation<Void, Never>)
}

struct SimCancelled: Error {}

/// The board's behaviour. An actor so GPIO edges, keystrokes and the boot task never race.
actor SimBrain {
    let master: FileDescriptor
    let config: SimulatorConfig
    let t: SimulatorTimings
    let bank: InMemoryGPIOBank

    private(set) var powered = false
    private(set) var phase = "off"
    private(set) var lastCommandLine: String?
    private var bootTask: Task<Void, Never>?
    private var generation = 0
    private var inbox: [UInt8] = []
    private var inputWaiter: (id: Int, continuation: CheckedContinuation<Void, Never>)?
    private var nextWaiterID = 0
    private var powerButtonPressedAt: Int64?
    private var dhcpAttempts = 0
    private var networkUp = false

    init(master: FileDescriptor, config: SimulatorConfig, timings: SimulatorTimings, bank: InMemoryGPIOBank) {
        self.master = master; self.config = config; self.t = timings; self.bank = bank
    }

    func handle(_ input: SimInput) {
        switch input {
        case .sync(let c):
            c.resume()
        case .keys(let bytes):
            guard powered else { return }  // an unpowered UART hears nothing
            inbox.append(contentsOf: bytes)
            wakeInput()
        case .line(let change):
            switch (change.role, change.active) {
            case ("relay", true): if !powered { powerOn() }
            case ("relay", false): powerLoss()
            case ("reset_button", false): if powered { startBoot() }  // boots when the button is released
            case ("reset_button", true): if powered { stopBoot(); phase = "reset" }
            case ("power_button", true): powerButtonPressedAt = change.at.nanosecondsSinceEpoch
            case ("power_button", false):
                let held = powerButtonPressedAt.map { change.at.nanosecondsSinceEpoch - $0 } ?? 0
                powerButtonPressedAt = nil
                guard bank.isActive("relay") || !bank.isHeld("relay") else { return }
                if held >= 4_000_000_000 {
                    if powered { powerLoss() }  // forced off, like the real board after a 4 s hold
                } else if !powered {
                    powerOn()
                } else if phase == "shell" || phase == "login" {
                    stopBoot()
                    bootTask = Task { await self.acpiShutdown() }
                }
            default: break
            }
        }
    }

    private func powerOn() {
        powered = true
        if bank.isHeld("power_led") { bank.drive("power_led", active: true) }
        startBoot()
    }

    func powerLoss() {
        stopBoot()
        powered = false
        phase = "off"
        inbox.removeAll()
        networkUp = false
        if bank.isHeld("power_led") { bank.drive("power_led", active: false) }
    }

    private func stopBoot() {
        generation += 1
        xenRunning = false
        inputToXen = false
        ctrlARun = 0
        bootTask?.cancel()
        bootTask = nil
        wakeInput()
    }

    private func startBoot() {
        stopBoot()
        inbox.removeAll()
        networkUp = false
        dhcpAttempts = 0
        let g = generation
        bootTask = Task { await self.boot(generation: g) }
    }

    // MARK: output and input primitives

    private func alive(_ g: Int) throws(SimCancelled) {
        if g != generation || Task.isCancelled { throw SimCancelled() }
    }

    private func emit(_ text: String) {
        let bytes = Array(text.utf8)
        bytes.withUnsafeBytes { raw in
            var done = 0
            while done < raw.count {
                let n = Glibc.write(master.rawValue, raw.baseAddress! + done, raw.count - done)
                if n > 0 { done += n; continue }
                if n < 0 && errno == EINTR { continue }
                if n < 0 && errno == EAGAIN {
                    // A UART with nobody reading drops bytes; a pty buffer that is merely full drains soon.
                    if (try? master.poll(events: Int16(POLLOUT), timeoutMilliseconds: 100)) ?? 0 != 0 { continue }
                }
                return
            }
        }
    }

    private func pause(_ d: Duration, _ g: Int) async throws(SimCancelled) {
        do { try await Task.sleep(for: d) } catch { throw SimCancelled() }
        try alive(g)
    }

    private func wakeInput() {
        if let w = inputWaiter { inputWaiter = nil; w.continuation.resume() }
    }

    /// Waits until input is there, the deadline passes or the boot is cancelled.
    private func waitForInput(timeout: Duration?, _ g: Int) async throws(SimCancelled) {
        try alive(g)
        if !inbox.isEmpty { return }
        nextWaiterID += 1
        let id = nextWaiterID
        var timer: Task<Void, Never>?
        if let timeout {
            timer = Task { [weak self] in
                try? await Task.sleep(for: timeout)
                await self?.timeoutWaiter(id)
            }
        }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            inputWaiter = (id, c)
        }
        timer?.cancel()
        try alive(g)
    }

    private func timeoutWaiter(_ id: Int) {
        if let w = inputWaiter, w.id == id { inputWaiter = nil; w.continuation.resume() }
    }

    enum Key: Equatable { case char(UInt8), up, down, pageUp, pageDown, f10, enter, escape, other }

    /// Next key within `timeout` (nil = none came).
    private func readKey(timeout: Duration?, _ g: Int) async throws(SimCancelled) -> Key? {
        let deadline = timeout.map { ContinuousClock.now + $0 }
        while inbox.isEmpty {
            let left = deadline.map { $0 - ContinuousClock.now }
            if let left, left <= .zero { return nil }
            try await waitForInput(timeout: left, g)
        }
        let b = inbox.removeFirst()
        if b == 0x1b {
            // Escape sequences arrive together from a terminal; give the rest a moment.
            if inbox.isEmpty { try await waitForInput(timeout: .milliseconds(50), g) }
            if inbox.first == UInt8(ascii: "[") {
                inbox.removeFirst()
                var params: [UInt8] = []
                while true {
                    if inbox.isEmpty { try await waitForInput(timeout: .milliseconds(50), g) }
                    guard !inbox.isEmpty else { return .other }
                    let c = inbox.removeFirst()
                    if (0x40...0x7e).contains(c) {
                        switch (c, params) {
                        case (UInt8(ascii: "A"), _): return .up
                        case (UInt8(ascii: "B"), _): return .down
                        case (UInt8(ascii: "~"), Array("21".utf8)): return .f10
                        case (UInt8(ascii: "~"), Array("5".utf8)): return .pageUp
                        case (UInt8(ascii: "~"), Array("6".utf8)): return .pageDown
                        default: return .other
                        }
                    }
                    params.append(c)
                }
            }
            return .escape
        }
        if b == 0x0d || b == 0x0a {
            if b == 0x0d, inbox.first == 0x0a { inbox.removeFirst() }
            return .enter
        }
        return .char(b)
    }

    /// Reads a line the way a terminal line editor does: echo, backspace, Enter.
    private func readLine(echo: Bool, _ g: Int) async throws(SimCancelled) -> String {
        var line: [UInt8] = []
        while true {
            guard let key = try await readKey(timeout: nil, g) else { continue }
            switch key {
            case .enter where inputToXen:
                ctrlARun = 0
                continue
            case .enter:
                emit("\r\n")
                return String(decoding: line, as: UTF8.self)
            case .char(let c) where c == 0x7f || c == 0x08:
                if !line.isEmpty { line.removeLast(); if echo { emit("\u{8} \u{8}") } }
            case .char(0x01) where xenRunning:
                ctrlARun += 1
                if ctrlARun == 3 {
                    ctrlARun = 0
                    inputToXen.toggle()
                    emit("(XEN) *** Serial input to \(inputToXen ? "Xen" : "DOM0") (type 'CTRL-a' three times to switch input)\r\n")
                }
                continue
            case .char(let c) where inputToXen:
                ctrlARun = 0
                xenDebugKey(c)
                continue
            case .char(let c) where c == 0x03:
                emit("^C\r\n"); return ""
            case .char(let c) where c >= 0x20:
                line.append(c)
                if echo { emit(String(decoding: [c], as: UTF8.self)) }
            default: break
            }
        }
    }

    // MARK: the boot

    private func boot(generation g: Int) async {
        do {
            try await firmware(g)
        } catch {}
    }

    private func firmware(_ g: Int) async throws(SimCancelled) {
        phase = "firmware"
        emit("\r\nPC Engines apu2\r\ncoreboot build 20231212\r\nBIOS version v4.19.0.1\r\n")
        try await pause(t.step, g)
        emit("4080 MB ECC DRAM\r\n")
        try await pause(t.firmware, g)
        emit("SeaBIOS (version rel-1.16.0.1)\r\n\r\n")
        try await pause(t.step, g)
        phase = "boot_menu_window"
        emit("Press F10 key now for boot menu\r\n\r\n")
        let deadline = ContinuousClock.now + t.bootMenuWindow
        var choice = "3"
        while let left = Optional(deadline - ContinuousClock.now), left > .zero {
            guard let key = try await readKey(timeout: left, g) else { break }
            if key == .f10 {
                phase = "boot_menu"
                emit("Select boot device:\r\n\r\n1. USB MSC Drive Generic Flash Disk 8.07\r\n2. AHCI/0: SATA SSD ATA-11 Hard-Disk (111 GiBytes)\r\n"
                     + "3. iPXE (PCI 00:00.0)\r\n4. Payload [memtest]\r\n5. Payload [setup]\r\n\r\n")
                while true {
                    guard case .char(let c)? = try await readKey(timeout: nil, g) else { continue }
                    if (UInt8(ascii: "1")...UInt8(ascii: "5")).contains(c) { choice = String(UnicodeScalar(c)); break }
                }
                break
            }
        }
        switch choice {
        case "1", "2":
            emit("Booting from Hard Disk...\r\nBoot failed: not a bootable disk\r\n\r\n")
            try await pause(t.step, g)
        case "4", "5":
            emit("Booting from CBFS...\r\nPayload not found.\r\n\r\n")
            try await pause(t.step, g)
        default: break
        }
        try await ipxe(g)
    }

    private func ipxe(_ g: Int) async throws(SimCancelled) {
        phase = "ipxe_banner"
        emit("Booting from ROM...\r\n")
        emit("iPXE (http://ipxe.org) 00:00.0 C000 PCI2.10 PnP PMM+CFF9B3A0+CFEFB3A0 C000\r\n")
        try await pause(t.step, g)
        emit("Press Ctrl-B for the iPXE command line...")
        phase = "ctrl_b_window"
        // Any key ends iPXE's wait (`shell_banner` reads one key); only Ctrl-B opens the shell.
        let interrupted = try await readKey(timeout: t.ctrlBWindow, g) == .char(0x02)
        if interrupted {
            emit("\r\n\r\niPXE 1.21.1+ (g3c040) -- Open Source Network Boot Firmware -- https://ipxe.org\r\n"
                 + "Features: DNS HTTP HTTPS iSCSI NFS TFTP VLAN AoE ELF MBOOT PXE bzImage Menu PXEXT\r\n")
            try await shell(g)
        } else {
            emit("\r\nnet0: 00:0d:b9:4b:49:60 using i210 on 0000:01:00.0 (Ethernet) [open]\r\n")
            if try await dhcp(g) {
                emit("Next server: 192.168.4.2\r\nFilename: http://192.168.4.2:8000/menu.ipxe\r\n")
                emit("http://192.168.4.2:8000/menu.ipxe... ok\r\n")
                try await menu(g)
            } else {
                emit("No more network devices\r\n\r\nNo bootable device.\r\n")
                phase = "halted"
            }
        }
    }

    private func dhcp(_ g: Int) async throws(SimCancelled) -> Bool {
        emit("Configuring (net0 00:0d:b9:4b:49:60)...")
        dhcpAttempts += 1
        for _ in 0..<4 { try await pause(t.dhcp / 4, g); emit(".") }
        if dhcpAttempts <= config.dhcpFailures {
            emit(" No configuration methods succeeded (https://ipxe.org/040ee186)\r\n")
            return false
        }
        emit(" ok\r\n")
        networkUp = true
        return true
    }

    private func shell(_ g: Int) async throws(SimCancelled) {
        var kernel: (url: String, args: String)?
        var initrd: String?
        while true {
            phase = "ipxe_shell"
            emit("iPXE> ")
            let line = try await readLine(echo: true, g)
            let words = line.split(separator: " ").map(String.init)
            guard let command = words.first else { continue }
            let args = Array(words.dropFirst())
            switch command {
            case "dhcp", "ifconf":
                if args.first.map({ $0 != "net0" }) ?? false {
                    emit("Could not configure \(args[0]): No such device (https://ipxe.org/2c0d203b)\r\n"); continue
                }
                _ = try await dhcp(g)
            case "ifstat":
                emit("net0: 00:0d:b9:4b:49:60 using i210 on 0000:01:00.0 (Ethernet) [\(networkUp ? "open" : "closed")]\r\n"
                     + "  [Link:up, TX:12 TXE:0 RX:34 RXE:0]\r\n")
            case "chain", "imgexec":
                let urls = args.filter { !$0.hasPrefix("--") }
                guard let url = urls.first else { emit("Usage:\r\n  chain [--name <name>] [--autofree] [--replace] <uri|image> [<arguments>...]\r\n"); continue }
                guard networkUp else { emit("Could not start download: Network unreachable (https://ipxe.org/280a6090)\r\n"); continue }
                try await pause(t.download, g)
                if url.hasSuffix(".ipxe") {
                    emit("\(url)... ok\r\n")
                    try await menu(g)
                    return
                }
                emit("\(url)... No such file or directory (https://ipxe.org/2d0c618e)\r\n")
            case "menu":
                try await menu(g); return
            case "kernel":
                guard let url = args.first else { emit("Usage:\r\n  kernel <uri> [<arguments>...]\r\n"); continue }
                guard networkUp else { emit("Could not start download: Network unreachable (https://ipxe.org/280a6090)\r\n"); continue }
                try await pause(t.download, g)
                emit("\(url)... ok\r\n")
                kernel = (url, args.dropFirst().joined(separator: " "))
            case "initrd":
                guard let url = args.first, networkUp else { emit("Could not start download: Network unreachable (https://ipxe.org/280a6090)\r\n"); continue }
                try await pause(t.download, g)
                emit("\(url)... ok\r\n")
                initrd = url
            case "boot":
                guard let k = kernel else { emit("No executable image available (https://ipxe.org/2e008081)\r\n"); continue }
                _ = initrd
                try await linux(entry: "custom", commandLine: k.args, g)
                return
            case "exit":
                emit("\r\nNo bootable device.\r\n"); phase = "halted"; return
            case "echo":
                emit(args.joined(separator: " ") + "\r\n")
            default:
                emit("\(command): command not found\r\n")
            }
        }
    }

    static func slug(_ s: String) -> String {
        String(s.lowercased().map { $0.isLetter || $0.isNumber ? $0 : "-" })
    }

    /// Draws and drives the iPXE menu with the escape sequences real iPXE sends on a serial
    /// console (the QEMU rig's iPXE, `menu_ui.c`): layout, colour pairs, paging and drawing order
    /// are `IPXEMenuDrawing`'s.
    private func menu(_ g: Int) async throws(SimCancelled) {
        phase = "ipxe_menu"
        // A gap first, like the lab's menu.ipxe; an entry written "--gap TEXT" is a gap too.
        var items = [IPXEMenuDrawing.Item(text: "--- Boot options ---", isGap: true)]
        var named: [Int] = []
        for e in config.menuEntries {
            if e.hasPrefix("--gap") {
                items.append(.init(text: String(e.dropFirst(5).drop { $0 == " " }), isGap: true))
            } else {
                named.append(items.count)
                items.append(.init(text: e, isGap: false))
            }
        }
        let timeout = t.menuTimeout.map { Int($0.components.seconds) }
        var ui = IPXEMenuDrawing(title: "3mdeb lab boot menu", items: items, current: named[min(config.defaultEntry, named.count - 1)], timeout: timeout)
        emit(ui.start())
        var remaining = timeout
        while true {
            let key = try await readKey(timeout: remaining != nil ? .seconds(1) : nil, g)
            guard let key else {
                if var r = remaining {
                    r -= 1; remaining = r
                    if r <= 0 { break }
                    emit(ui.tick(r))
                }
                continue
            }
            remaining = nil
            switch key {
            case .enter:
                emit("\u{1b}[0m\u{1b}[2J")
                return try await choose(items[ui.current].text, g)
            case .escape:
                emit("\u{1b}[0m\u{1b}[2J")
                return try await shell(g)
            case .up: emit(ui.press(.up))
            case .down: emit(ui.press(.down))
            case .pageUp: emit(ui.press(.pageUp))
            case .pageDown: emit(ui.press(.pageDown))
            default: emit(ui.press(.none))
            }
        }
        emit("\u{1b}[0m\u{1b}[2J")
        try await choose(items[ui.current].text, g)
    }

    private func choose(_ entry: String, _ g: Int) async throws(SimCancelled) {
        if entry.lowercased().contains("shell") {
            try await shell(g); return
        }
        let slug = SimBrain.slug(entry)
        if entry.contains("Xen") {
            // As 3mdeb's netboot menu booted Xen: the hypervisor, dom0's kernel and initrd as modules.
            emit("http://192.168.4.2:8000/\(slug)/xen-4.17-amd64... ok\r\nhttp://192.168.4.2:8000/\(slug)/vmlinuz... ok\r\n"
                 + "http://192.168.4.2:8000/\(slug)/initrd.img... ok\r\n")
            try await pause(t.download, g)
            try await xen(g)
            try await linux(entry: entry, commandLine: "console=hvc0 earlyprintk=xen rte.entry=\(slug)", console: "hvc0", g)
            return
        }
        emit("http://192.168.4.2:8000/\(slug)/vmlinuz... ok\r\nhttp://192.168.4.2:8000/\(slug)/initrd.img... ok\r\n")
        try await pause(t.download, g)
        try await linux(entry: entry, commandLine: "console=ttyS0,115200 earlyprintk=serial,ttyS0,115200 rte.entry=\(slug)", g)
    }

    static let xenVersion = "4.17.7"
    static let xenCommandLine = "dom0_mem=512M loglvl=all guest_loglvl=all com1=115200,8n1 console=com1"
    /// Serial input goes to Xen (its debug keys) instead of dom0 (Ctrl-A three times switches).
    private var inputToXen = false
    private var xenRunning = false
    private var ctrlARun = 0

    /// Xen's boot on the apu2 as its logs show it (the IOMMU found and enabled), short.
    private func xen(_ g: Int) async throws(SimCancelled) {
        phase = "hypervisor"
        xenRunning = true
        inputToXen = false
        let lines = [
            " Xen \(SimBrain.xenVersion)", "(XEN) Xen version \(SimBrain.xenVersion) (Debian \(SimBrain.xenVersion)-0+deb12u1) "
            + "(pkg-xen-devel@lists.alioth.debian.org) (x86_64-linux-gnu-gcc (Debian 12.2.0-14) 12.2.0) debug=n",
            "(XEN) Bootloader: iPXE 1.21.1+ (g7e8e)", "(XEN) Command line: \(SimBrain.xenCommandLine)",
            "(XEN) Video information:", "(XEN) Disc information:", "(XEN) Xen-e820 RAM map:",
            "(XEN)  [0000000000000000, 000000000009fbff] (usable)", "(XEN) System RAM: 4079MB (4177580kB)",
            "(XEN) ACPI: RSDP 000F2A70, 0024 (r2 CORE  )", "(XEN) Using APIC driver default",
            "(XEN) AMD-Vi: IOMMU Extended Features:", "(XEN) AMD-Vi: IOMMU 0 Enabled.", "(XEN) I/O virtualisation enabled",
            "(XEN)  - Dom0 mode: Relaxed", "(XEN) Interrupt remapping enabled", "(XEN) Brought up 4 CPUs",
            "(XEN) *** Building a PV Dom0 ***", "(XEN)  Dom0 alloc.:   0000000018000000->000000001c000000 (126976 pages to be allocated)",
            "(XEN) *** Serial input to DOM0 (type 'CTRL-a' three times to switch input)",
            "(XEN) Freed 648kB init memory",
        ]
        for (i, line) in lines.enumerated() {
            emit(line + "\r\n")
            if i % 5 == 4 { try await pause(t.kernelLine * 10, g) }
        }
    }

    /// What Xen prints for its debug keys (while it has the serial input).
    private func xenDebugKey(_ c: UInt8) {
        switch c {
        case UInt8(ascii: "h"):
            emit("(XEN) 'h' pressed -> showing installed handlers\r\n")
            for (k, what) in [("d", "dump registers"), ("e", "dump evtchn info"), ("h", "show this message"), ("i", "dump interrupt bindings"),
                              ("q", "dump domain (and guest debug) info"), ("r", "dump run queues")] {
                emit("(XEN)  key '\(k)' (ascii '\(String(UInt8(ascii: Unicode.Scalar(k)!), radix: 16))') => \(what)\r\n")
            }
        case UInt8(ascii: "q"):
            emit("(XEN) 'q' pressed -> dumping domain info (now = 1234567890)\r\n(XEN) General information for domain 0:\r\n"
                 + "(XEN)     refcnt=3 dying=0 pause_count=0\r\n(XEN)     nr_pages=131072 xenheap_pages=5 dirty_cpus={0-3} max_pages=131072\r\n")
        default:
            emit("(XEN) '\(String(decoding: [c], as: UTF8.self))' pressed -> no handler\r\n")
        }
    }

    private var kernelRelease: String { "6.1.0-27-amd64" }

    private func linux(entry: String, commandLine: String, console: String = "ttyS0", _ g: Int) async throws(SimCancelled) {
        phase = "kernel"
        lastCommandLine = commandLine
        func stamp(_ i: Int) -> String {
            let us = i * 12_345
            let s = String(us / 1_000_000), frac = String(us % 1_000_000)
            return "[" + String(repeating: " ", count: max(0, 5 - s.count)) + s + "." + String(repeating: "0", count: 6 - frac.count) + frac + "]"
        }
        emit("\(stamp(0)) Linux version \(kernelRelease) (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14) 12.2.0) #1 SMP PREEMPT_DYNAMIC Debian 6.1.115-1 (2024-11-01)\r\n")
        emit("\(stamp(0)) Command line: \(commandLine)\r\n")
        emit("\(stamp(0)) Booting entry: \(entry)\r\n")
        let messages = [
            "x86/fpu: Supporting XSAVE feature 0x001: 'x87 floating point registers'",
            "BIOS-provided physical RAM map:", "DMI: PC Engines apu2/apu2, BIOS v4.19.0.1 12/12/2023",
            "tsc: Detected 998.138 MHz processor", "ACPI: Early table checksum verification disabled",
            "pci 0000:00:02.2: PCI bridge to [bus 01]", "igb 0000:01:00.0: added PHC on eth0",
            "ahci 0000:00:11.0: AHCI 0001.0300 32 slots 2 ports 6 Gbps 0x3 impl SATA mode",
            "serial8250: ttyS0 at I/O 0x3f8 (irq = 4, base_baud = 115200) is a 16550A",
            "EXT4-fs (sda1): mounted filesystem with ordered data mode. Quota mode: none.",
        ]
        for i in 1...max(1, t.kernelLines) {
            emit("\(stamp(i)) \(messages[i % messages.count])\r\n")
            if i % 10 == 0 { try await pause(t.kernelLine * 10, g) }
        }
        emit("\r\nDebian GNU/Linux 12 apu2 \(console)\r\n\r\n")
        try await login(g)
    }

    private func login(_ g: Int) async throws(SimCancelled) {
        var first = true
        while true {
            phase = "login"
            emit("apu2 login: ")
            if first {
                // Late kernel messages interleave with the prompt on a real console.
                first = false
                try await pause(t.step, g)
                emit("[   14.201337] random: crng init done\r\n")
            }
            let user = try await readLine(echo: true, g)
            if user.isEmpty { continue }
            emit("Password: ")
            let password = try await readLine(echo: false, g)
            try await pause(t.step, g)
            if user == "root" && password == config.password {
                emit("Linux apu2 \(kernelRelease) #1 SMP PREEMPT_DYNAMIC Debian 6.1.115-1 x86_64\r\n\r\n")
                if try await rootShell(g) { return }
            } else {
                try await pause(t.step * 10, g)
                emit("\r\nLogin incorrect\r\n")
            }
        }
    }

    /// Returns true when the shell ended the boot (poweroff/reboot), false on logout.
    private func rootShell(_ g: Int) async throws(SimCancelled) -> Bool {
        while true {
            phase = "shell"
            emit("root@apu2:~# ")
            let line = try await readLine(echo: true, g)
            if let ended = await runLine(line) { return ended }
        }
    }

    /// The exit status of the last command, for `$?`.
    private var lastStatus = 0

    /// A small sh: `;`-separated statements, quotes, `eval`, `$?` — enough for the framed commands
    /// the agent types. Returns true/false when the shell ended (see rootShell), nil to go on.
    private func runLine(_ line: String) async -> Bool? {
        for statement in SimBrain.statements(line) {
            let words = SimBrain.words(statement, status: lastStatus)
            guard let cmd = words.first else { continue }
            var status = 0
            switch cmd {
            case "eval":
                if let ended = await runLine(words.dropFirst().joined(separator: " ")) { return ended }
                continue
            case "uname":
                emit(words.contains("-r") ? "\(kernelRelease)\r\n" : words.contains("-a")
                     ? "Linux apu2 \(kernelRelease) #1 SMP PREEMPT_DYNAMIC Debian 6.1.115-1 x86_64 GNU/Linux\r\n" : "Linux\r\n")
            case "cat" where words.count > 1 && words[1] == "/proc/cmdline":
                emit("\(lastCommandLine ?? "")\r\n")
            case "cat" where words.count > 1 && words[1] == "/proc/xen/capabilities" && xenRunning:
                emit("control_d\r\n")
            case "cat" where words.count > 1 && words[1] == "/sys/hypervisor/type" && xenRunning:
                emit("xen\r\n")
            case "cat":
                emit("cat: \(words.dropFirst().first ?? ""): No such file or directory\r\n"); status = 1
            case "hostname": emit("apu2\r\n")
            case "echo": emit(words.dropFirst().joined(separator: " ") + "\r\n")
            case "printf":
                let format = words.dropFirst().first ?? ""
                emit(format.replacing("\\n", with: "\r\n"))
            case "true", ":": break
            case "false": status = 1
            case "exit", "logout": return false
            case "poweroff":
                await acpiShutdown(); return true
            case "reboot":
                emit("[   99.000000] reboot: Restarting system\r\n")
                let g2 = generation
                Task { await self.restartIfCurrent(g2) }
                return true
            default:
                emit("-sh: \(cmd): not found\r\n"); status = 127
            }
            lastStatus = status
        }
        return nil
    }

    /// Splits a command line at `;` outside quotes.
    static func statements(_ line: String) -> [String] {
        var out: [String] = [], current = "", quote: Character?, escaped = false
        for c in line {
            if escaped { escaped = false } else if let q = quote { if c == q { quote = nil } } else if c == "\\" { escaped = true }
            else if c == "'" || c == "\"" { quote = c } else if c == ";" {
                out.append(current); current = ""; continue
            }
            current.append(c)
        }
        out.append(current)
        return out
    }

    /// Words of one statement, quotes removed (adjacent pieces join, as in sh), `$?` expanded
    /// outside single quotes.
    static func words(_ statement: String, status: Int) -> [String] {
        var out: [String] = [], word = "", inWord = false, quote: Character?
        var chars = Array(statement)[...]
        while let c = chars.first {
            chars = chars.dropFirst()
            if let q = quote {
                if c == q { quote = nil }
                else if q == "\"", c == "$", chars.first == "?" { chars = chars.dropFirst(); word += String(status) }
                else { word.append(c) }
                continue
            }
            switch c {
            case " ", "\t": if inWord { out.append(word); word = ""; inWord = false }
            case "'", "\"": quote = c; inWord = true
            case "\\":
                if let next = chars.first { word.append(next); chars = chars.dropFirst() }
                inWord = true
            case "$" where chars.first == "?": chars = chars.dropFirst(); word += String(status); inWord = true
            default: word.append(c); inWord = true
            }
        }
        if inWord { out.append(word) }
        return out
    }

    private func restartIfCurrent(_ g: Int) {
        if g == generation && powered { startBoot() }
    }

    /// An ACPI power-off: the OS shuts down, the board leaves S0 (relay stays as it is).
    private func acpiShutdown() async {
        phase = "shutting_down"
        emit("[  100.000000] systemd-shutdown[1]: Powering off.\r\n[  100.100000] reboot: Power down\r\n")
        powered = false
        phase = "off"
        if bank.isHeld("power_led") { bank.drive("power_led", active: false) }
    }
}
