import AgentClient
import ArgumentParser
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The interactive console: the terminal goes raw (keys such as Ctrl-B and Ctrl-C go to the DUT),
/// Ctrl-] leaves, and the terminal is restored on exit and on SIGTERM/SIGHUP.
struct Console: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Interactive serial console of the DUT (Ctrl-] leaves).")
    @OptionGroup var c: Connection

    func run() async throws {
        let (socket, initial) = try c.client().openConsole()
        if !initial.isEmpty { FileHandle.standardOutput.write(Data(initial)) }
        let restore = TerminalMode.makeRaw(STDIN_FILENO)
        defer { restore?.apply() }
        if isatty(STDIN_FILENO) == 1 { printError("[rtectl] console of the DUT; Ctrl-] leaves") }
        // Socket → screen on its own thread; keyboard → socket here.
        let reader = Thread {
            var buf = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = buf.withUnsafeMutableBytes { recv(socket, $0.baseAddress, $0.count, 0) }
                if n <= 0 { break }
                buf.withUnsafeBytes { _ = write(STDOUT_FILENO, $0.baseAddress, n) }
            }
            // The agent ended the console: stop reading the keyboard.
            shutdown(socket, Int32(SHUT_RDWR))
            close(STDIN_FILENO)
        }
        reader.start()
        var buf = [UInt8](repeating: 0, count: 1024)
        loop: while true {
            let n = buf.withUnsafeMutableBytes { read(STDIN_FILENO, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            var chunk = Array(buf[0..<n])
            if let escape = chunk.firstIndex(of: 0x1d) {  // Ctrl-]
                chunk = Array(chunk[..<escape])
                if !chunk.isEmpty { _ = send(socket, chunk, chunk.count, Int32(MSG_NOSIGNAL)) }
                break loop
            }
            if send(socket, chunk, chunk.count, Int32(MSG_NOSIGNAL)) <= 0 { break }
        }
        shutdown(socket, Int32(SHUT_RDWR))
        close(socket)
    }
}

/// A saved terminal mode, put back once.
final class TerminalMode: @unchecked Sendable {
    let fd: Int32
    let saved: termios
    nonisolated(unsafe) static var active: TerminalMode?

    init(fd: Int32, saved: termios) { self.fd = fd; self.saved = saved }

    /// Raw mode on `fd` if it is a terminal; nil otherwise (piped input stays as it is).
    static func makeRaw(_ fd: Int32) -> TerminalMode? {
        guard isatty(fd) == 1 else { return nil }
        var t = termios()
        guard tcgetattr(fd, &t) == 0 else { return nil }
        let mode = TerminalMode(fd: fd, saved: t)
        var raw = t
        cfmakeraw(&raw)
        tcsetattr(fd, TCSANOW, &raw)
        active = mode
        // A terminated rtectl must not leave the user's shell in raw mode.
        for sig in [SIGTERM, SIGHUP] {
            signal(sig) { s in
                if var saved = TerminalMode.active?.saved, let fd = TerminalMode.active?.fd { tcsetattr(fd, TCSANOW, &saved) }
                signal(s, SIG_DFL)
                raise(s)
            }
        }
        return mode
    }

    func apply() {
        var s = saved
        tcsetattr(fd, TCSANOW, &s)
        TerminalMode.active = nil
    }
}
