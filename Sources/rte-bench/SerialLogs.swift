import Foundation

/// Synthetic but realistic console output: a kernel log with debug messages on, the way an
/// apu2 prints it over serial. Deterministic for a seed.
struct KernelLog {
    var rng: SplitMix
    var line = 0
    init(seed: UInt64) { rng = SplitMix(state: seed) }

    static let messages = [
        "pci 0000:00:02.%d: [1022:1439] type 00 class 0x060000",
        "pci 0000:0%d:00.0: reg 0x10: [mem 0xfe600000-0xfe61ffff]",
        "igb 0000:0%d:00.0: added PHC on eth%d",
        "ACPI: \\_SB_.PCI0.GPP%d: _PRT: routing table 0x%x",
        "usb %d-1: new high-speed USB device number %d using ehci-pci",
        "ata%d: SATA link up 6.0 Gbps (SStatus 133 SControl 300)",
        "sd 0:0:0:0: [sda] %d 512-byte logical blocks: (16.0 GB/14.9 GiB)",
        "xen: --> pirq=%d -> irq=%d (gsi=%d)",
        "random: crng init done after %d bytes",
        "EXT4-fs (sda%d): mounted filesystem with ordered data mode. Quota mode: none.",
        "systemd[1]: Started Journal Service (pid %d).",
        "amd_gpio AMD0030:00: debug: pin %d configured as input, debounce %d us",
        "i2c_piix4: debug: SMBus base address 0x%x, port %d selected",
        "sp5100_tco: debug: watchdog timer at 0x%x, heartbeat %d s",
    ]

    /// One log line with a timestamp and CR LF, like a 16550 console.
    mutating func next() -> [UInt8] {
        line += 1
        var text = KernelLog.messages[rng.below(KernelLog.messages.count)]
        while let r = text.range(of: "%d") { text.replaceSubrange(r, with: String(rng.below(4096))) }
        while let r = text.range(of: "%x") { text.replaceSubrange(r, with: String(rng.below(1 << 20), radix: 16)) }
        let seconds = line / 700, micros = (line * 1429) % 1_000_000
        let stamp = String(seconds).leftPadded(5) + "." + String(micros).leftPadded(6, with: "0")
        return Array("[\(stamp)] \(text)\r\n".utf8)
    }

    mutating func bytes(atLeast n: Int) -> [UInt8] {
        var out: [UInt8] = []
        while out.count < n { out += next() }
        return out
    }
}

extension String {
    func leftPadded(_ width: Int, with pad: Character = " ") -> String {
        count >= width ? self : String(repeating: pad, count: width - count) + self
    }
}

/// The 64 MB log for the throughput benchmark: kernel log with debug messages, ANSI-heavy
/// firmware screens and iPXE menu redraws (the real bytes captured from the QEMU apu2), with
/// the awaited prompt only at the very end.
func benchmarkLog(megabytes: Int, fixtures: String, prompt: String) throws -> [UInt8] {
    let menu = try [UInt8](Data(contentsOf: URL(fileURLWithPath: "\(fixtures)/qemu-ipxe-menu-navigate.bin")))
    let shell = try [UInt8](Data(contentsOf: URL(fileURLWithPath: "\(fixtures)/qemu-ipxe-shell-chain.bin")))
    var kernel = KernelLog(seed: 42)
    var out: [UInt8] = []
    let target = megabytes << 20
    out.reserveCapacity(target + 4096)
    var round = 0
    while out.count < target {
        // Per round: ~200 KB of kernel log, one firmware setup screen, one of the two real iPXE captures.
        out += kernel.bytes(atLeast: 200_000)
        out += firmwareScreen(round)
        out += round % 2 == 0 ? menu : shell
        round += 1
    }
    out.removeLast(out.count - target)
    out += Array("\r\nDebian GNU/Linux 12 apu2 ttyS0\r\n\r\n\(prompt)".utf8)
    precondition(out.count - prompt.utf8.count < target + 64)
    return out
}

/// A coreboot/sortbootorder-style setup screen: colours, cursor addressing, box drawing.
func firmwareScreen(_ round: Int) -> [UInt8] {
    var s = "\u{1b}[0m\u{1b}[2J\u{1b}[1;1H\u{1b}[44;37m"
    for row in 1...24 {
        s += "\u{1b}[\(row);1H\u{1b}[K"
        s += row == 1 ? "\u{1b}[1m PC Engines apu2 setup v4.19.0.\(round % 10)   \u{1b}[22m" : ""
        if row > 2 && row < 20 {
            s += "\u{1b}[\(row);4H\u{1b}[7m\u{1b}[1;33m\(row - 2)\u{1b}[0;44;37m  Boot option \(row - 2): PXE / iPXE / USB / SATA / mSATA"
        }
    }
    s += "\u{1b}[23;1H\u{1b}[30;47m r Restore boot order defaults  n Network/PXE boot  t Serial console  x Exit \u{1b}[0m"
    s += "\u{1b}[?25l\u{1b}[24;1H\u{1b}[0m\r\n"
    return Array(s.utf8)
}
