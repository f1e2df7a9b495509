#if canImport(Glibc)
import Glibc
#endif

/// The 8 MiB chip flashrom's dummy programmer emulates (MX25L6436), named as the installed
/// flashrom spells it: 1.3 (bookworm) "MX25L6436E/MX25L6445E/MX25L6465E/MX25L6473E/MX25L6473F",
/// 1.4 (trixie, sid) "MX25L6436E/MX25L6445E/MX25L6465E". Read off flashrom's own probe.
public let flashromEmulatedChipName: String = {
    let bookworm = "MX25L6436E/MX25L6445E/MX25L6465E/MX25L6473E/MX25L6473F"
    guard let pipe = popen("flashrom -p dummy:emulate=MX25L6436 2>&1", "r") else { return bookworm }
    var text = ""
    var buffer = [CChar](repeating: 0, count: 4096)
    while fgets(&buffer, Int32(buffer.count), pipe) != nil { text += String(cString: buffer) }
    pclose(pipe)
    let found = text.split(separator: "\n").first { $0.contains("flash chip \"MX25L6436") }
    return found.flatMap { $0.split(separator: "\"", omittingEmptySubsequences: false).dropFirst().first }.map(String.init) ?? bookworm
}()
