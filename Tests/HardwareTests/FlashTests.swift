import AgentClock
@testable import Configuration
import Flashing
import Foundation
import GPIO
import Power
import TestSupport
import Testing

/// flashrom's dummy programmer emulating an 8 MiB SPI chip (flashrom 1.3 in Debian 12 cannot
/// emulate the apu2's W25Q64; the Macronix MX25L6436 is the 8 MiB chip it emulates). The chip's
/// contents live in `chip.bin`, written by flashrom when it exits.
struct EmulatedChip {
    static let name = flashromEmulatedChipName
    let directory: String
    var path: String { directory + "/chip.bin" }
    var programmer: String { "dummy:emulate=MX25L6436,image=\(path)" }
    var contents: [UInt8]? { FileManager.default.contents(atPath: path).map(Array.init) }
    func fill(_ bytes: [UInt8]) { FileManager.default.createFile(atPath: path, contents: Data(bytes)) }
}

func randomImage(_ count: Int = 8 << 20, seed: UInt64) -> [UInt8] {
    var state = seed
    return (0..<count).map { _ in state = state &* 6364136223846793005 &+ 1442695040888963407; return UInt8(truncatingIfNeeded: state >> 33) }
}

@Suite(.serialized) struct FlashTests {
    let lines = [line("relay", offset: 0), line("power_button", offset: 9, activeLow: true), line("cmos_clear", offset: 11, activeLow: true),
                 line("spi_enable", offset: 1, activeLow: true), line("spi_voltage", offset: 2, activeLow: true), line("spi_vcc", offset: 3, activeLow: true)]

    func make(_ configure: (inout FlashConfig) -> Void = { _ in }) async throws -> (Flasher, InMemoryGPIOBank, EmulatedChip, String) {
        let dir = scratchDirectory()
        let chip = EmulatedChip(directory: dir)
        var config = FlashConfig()
        config.programmer = chip.programmer
        config.chip = EmulatedChip.name
        config.s5PressMilliseconds = 60
        config.cmosPressMilliseconds = 20
        config.timeoutSeconds = 60
        configure(&config)
        let clock = SystemClock()
        let bank = InMemoryGPIOBank(clock: clock)
        let gpio = try GPIOController.start(backend: bank, configs: lines, clock: clock)
        let profile = PowerProfile(pressPowerButtonOnPowerOn: false, pressMilliseconds: 20, softOffPressMilliseconds: 60,
                                   resetPressMilliseconds: 20, cycleOffMilliseconds: 20, settleMilliseconds: 0)
        let power = await GPIOPowerController(gpio: gpio, profile: profile, clock: clock)
        return (Flasher(config: config, gpio: gpio, power: power, clock: clock, stateDirectory: dir), bank, chip, dir)
    }

    /// The SPI lines' changes, in order, with flashrom's run between "on" and "off".
    func spiChanges(_ bank: InMemoryGPIOBank) -> [String] {
        bank.history().filter { $0.role.hasPrefix("spi_") || $0.role == "cmos_clear" || $0.role == "power_button" }
            .map { "\($0.role)=\($0.active ? 1 : 0)" }
    }

    @Test func anImageIsWrittenVerifiedReadBackEqualAndErasedOnTheEmulatedChip() async throws {
        let (flasher, bank, chip, dir) = try await make()
        let image = randomImage(seed: 1)
        let info = try await flasher.storeImage(image, user: "alice")
        #expect(info.bytes == 8 << 20 && info.sha256.count == 64)
        let write = try await flasher.perform(.write, user: "alice")
        #expect(write.state == .succeeded, "\(write.failure?.description ?? "")")
        #expect(write.steps.map(\.name) == ["power_s5", "spi_on", "flashrom", "spi_off", "cmos_reset", "power_after"])
        #expect(write.steps.first { $0.name == "flashrom" }?.detail == "write ok, chip \(EmulatedChip.name) (8192 kB), VERIFIED")
        // Compared first: a failing #expect on megabytes spends minutes describing them.
        do { let same = chip.contents == image; #expect(same) }
        #expect(write.imageSha256 == info.sha256 && write.chip == EmulatedChip.name)
        // 3.3 V: spi_voltage stays released (only changes are recorded).
        #expect(spiChanges(bank) == ["power_button=1", "power_button=0", "spi_vcc=1", "spi_enable=1",
                                     "spi_enable=0", "spi_vcc=0", "cmos_clear=1", "cmos_clear=0"])
        // The same image again: flashrom finds the chip identical, writes nothing; that comparison verifies it.
        let again = try await flasher.perform(.write, user: "alice")
        #expect(again.state == .succeeded, "\(again.failure?.description ?? "")")
        let read = try await flasher.perform(.read, user: "alice")
        #expect(read.state == .succeeded)
        // Compared first: a failing #expect on megabytes spends minutes describing them.
        do { let same = FileManager.default.contents(atPath: dir + "/flash/read.rom").map(Array.init) == image; #expect(same) }
        #expect(read.readSha256 == info.sha256)
        let erase = try await flasher.perform(.erase, user: "alice")
        #expect(erase.state == .succeeded)
        // Compared first: a failing #expect on megabytes spends minutes describing them.
        do { let same = chip.contents == [UInt8](repeating: 0xff, count: 8 << 20); #expect(same) }
        let probe = try await flasher.perform(.probe, user: "alice")
        #expect(probe.state == .succeeded && probe.chip == EmulatedChip.name)
        #expect(!bank.isActive("spi_enable") && !bank.isActive("spi_vcc") && !bank.isActive("spi_voltage"))
    }

    @Test func aRegionWriteChangesOnlyThatRegion() async throws {
        let (flasher, _, chip, dir) = try await make()
        let old = randomImage(seed: 2), new = randomImage(seed: 3)
        chip.fill(old)
        let layout = dir + "/layout.txt"
        try "00000000:000fffff bootblock\n00100000:007fffff bios\n".write(toFile: layout, atomically: true, encoding: .utf8)
        _ = try await flasher.storeImage(new, user: "alice")
        let job = try await flasher.start(.write, layout: .file(layout), regions: ["bios"], user: "alice")
        for await _ in try await flasher.events(job.id) {}
        let done = try await flasher.job(job.id)
        #expect(done.state == .succeeded, "\(done.failure?.description ?? "")")
        let now = try #require(chip.contents)
        #expect(Array(now[..<0x100000]) == Array(old[..<0x100000]), "the bootblock region is untouched")
        #expect(Array(now[0x100000...]) == Array(new[0x100000...]))
    }

    @Test func aCorruptedOrWrongSizedUploadIsRefusedAndGzipIsUnpacked() async throws {
        let (flasher, _, _, dir) = try await make()
        let image = randomImage(seed: 4)
        // gzip of the image, by the system's gzip.
        FileManager.default.createFile(atPath: dir + "/img", contents: Data(image))
        let gz = Process()
        gz.executableURL = URL(fileURLWithPath: "/bin/gzip")
        gz.arguments = ["-k", "-f", dir + "/img"]
        try gz.run(); gz.waitUntilExit()
        let packed = try #require(FileManager.default.contents(atPath: dir + "/img.gz").map(Array.init))
        let info = try await flasher.storeImage(packed, user: "bob")
        #expect(info.bytes == 8 << 20)
        let raw = try await flasher.storeImage(image, user: "bob")
        #expect(info.sha256 == raw.sha256)
        await #expect(throws: FlashError.badImage("the image is 1000 bytes; the chip (flash.chip_mib) holds exactly 8388608 — a region write still takes a whole-chip image")) {
            _ = try await flasher.storeImage([UInt8](repeating: 1, count: 1000), user: "bob")
        }
        do { _ = try await flasher.storeImage(Array(packed.prefix(packed.count / 2)), user: "bob"); Issue.record("truncated gzip accepted") } catch {
            #expect(error.description.contains("cannot be unpacked: the gzip data ends early"), "\(error)")
        }
        var corrupt = packed
        corrupt[corrupt.count / 2] ^= 0xff
        do { _ = try await flasher.storeImage(corrupt, user: "bob"); Issue.record("corrupt gzip accepted") } catch {
            #expect(error.description.contains("cannot be unpacked"), "\(error)")
        }
        #expect(await flasher.currentImage?.sha256 == raw.sha256, "a refused upload leaves the stored image as it was")
    }

    @Test func flashromFailingPutsEveryLineBackAndNamesTheStep() async throws {
        // A chip that is not there: flashrom probes for another one.
        let (missing, bank, _, _) = try await make { $0.chip = "W25Q64BV/W25Q64CV/W25Q64FV" }
        _ = try await missing.storeImage(randomImage(seed: 5), user: "alice")
        let job = try await missing.perform(.write, user: "alice")
        #expect(job.state == .failed)
        #expect(job.failure?.step == "flashrom")
        #expect(job.failure?.message.contains("No EEPROM/flash device found") == true, "\(job.failure?.message ?? "") \(job.failure?.lastLines ?? [])")
        #expect(job.steps.map(\.name) == ["power_s5", "spi_on", "flashrom", "spi_off", "power_after"], "no CMOS reset after a failed write")
        #expect(job.steps.first { $0.name == "spi_off" }?.detail == "every line back to its safe value")
        #expect(!bank.isActive("spi_enable") && !bank.isActive("spi_vcc") && !bank.isActive("spi_voltage"))
        // An image the chip cannot take: the configured size says 16 MiB, the chip holds 8.
        let (wrongSize, bank2, chip, _) = try await make { $0.chipBytes = 16 << 20 }
        chip.fill(randomImage(seed: 6))
        _ = try await wrongSize.storeImage(randomImage(16 << 20, seed: 7), user: "alice")
        let job2 = try await wrongSize.perform(.write, user: "alice")
        #expect(job2.failure?.step == "flashrom")
        #expect(job2.failure?.message.contains("size") == true, "\(job2.failure?.message ?? "")")
        #expect(!job2.failure!.lastLines.isEmpty)
        #expect(!bank2.isActive("spi_enable") && !bank2.isActive("spi_vcc"))
        // Compared first: a failing #expect on megabytes spends minutes describing them.
        do { let same = chip.contents == randomImage(seed: 6); #expect(same, "nothing was written") }
    }

    @Test func aHungFlashromIsKilledAtItsDeadline() async throws {
        let dir = scratchDirectory()
        let fake = dir + "/flashrom"
        try "#!/bin/sh\necho 'Found Winbond flash chip \"W25Q64.V\" (8192 kB, SPI) on linux_spi.'\nexec sleep 600\n".write(toFile: fake, atomically: true, encoding: .utf8)
        chmod(fake, 0o755)
        let (flasher, bank, _, _) = try await make { $0.flashrom = fake; $0.timeoutSeconds = 1 }
        let started = Date()
        let job = try await flasher.perform(.probe, user: "alice")
        #expect(Date().timeIntervalSince(started) < 10)
        #expect(job.failure?.message == "flashrom did not finish within 1 s and was stopped")
        #expect(job.failure?.lastLines.first?.contains("W25Q64.V") == true)
        #expect(!bank.isActive("spi_enable"))
    }

    /// RteCtrl's PATCH /api/v1/flash/config {"speed"} changes linux_spi's spispeed for the next run.
    @Test func aChangedSPISpeedReachesFlashromsProgrammer() async throws {
        let dir = scratchDirectory()
        let fake = dir + "/flashrom"
        try "#!/bin/sh\necho \"$@\" > \(dir)/args\necho 'Found Winbond flash chip \"W25Q64BV/W25Q64CV/W25Q64FV\" (8192 kB, SPI) on linux_spi.'\n".write(toFile: fake, atomically: true, encoding: .utf8)
        chmod(fake, 0o755)
        let (flasher, _, _, _) = try await make { $0.flashrom = fake; $0.programmer = "linux_spi:dev=/dev/spidev1.0,spispeed=16000"; $0.chip = nil }
        #expect(await flasher.speed == 16000)
        _ = try await flasher.perform(.probe, user: "alice")
        #expect(try String(contentsOfFile: dir + "/args", encoding: .utf8) == "-p linux_spi:dev=/dev/spidev1.0,spispeed=16000\n")
        try await flasher.setSpeed(8000)
        let job = try await flasher.perform(.probe, user: "alice")
        #expect(job.chip == "W25Q64BV/W25Q64CV/W25Q64FV")
        #expect(try String(contentsOfFile: dir + "/args", encoding: .utf8) == "-p linux_spi:dev=/dev/spidev1.0,spispeed=8000\n")
        #expect(await flasher.speed == 8000)
    }
}
