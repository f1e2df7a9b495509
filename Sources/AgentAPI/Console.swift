import POSIXIO
import Serial
#if canImport(Glibc)
import Glibc
#endif

/// Bridges a raw socket to the DUT's serial port: everyone sees the output; keystrokes go to the
/// DUT only while `mayType` says so (the lease holder), the rest are dropped with one notice.
/// Used by the HTTP Upgrade console and by the ser2net-style TCP port.
public enum ConsoleBridge {
    public static func run(socket: Int32, initialInput: [UInt8] = [], serial: SerialPort, capture: SerialCapture,
                           filterTelnet: Bool = false, mayType: @escaping @Sendable () async -> Bool) async {
        let fd = FileDescriptor(rawValue: socket)
        let (input, continuation) = AsyncStream<[UInt8]>.makeStream()
        if !initialInput.isEmpty { continuation.yield(initialInput) }
        // A blocking reader thread per console: keystrokes are rare, latency matters more than threads.
        startThread(name: "console-input") {
            var buf = [UInt8](repeating: 0, count: 4096)
            // A signal is not a hang-up: POSIXIO retries interrupted calls.
            while let n = try? buf.withUnsafeMutableBytes({ (b) throws(Errno) -> Int in try fd.receive(into: b) }), n > 0 {
                continuation.yield(Array(buf[0..<n]))
            }
            continuation.finish()
        }
        let output = Task {
            for await item in capture.subscribe() {
                guard case .data(_, let bytes, _) = item else { continue }
                if !sendAll(socket, bytes) { break }
            }
        }
        var telnet = TelnetFilter()
        var warned = false
        for await chunk in input {
            let bytes = filterTelnet ? telnet.filter(chunk) : chunk
            if bytes.isEmpty { continue }
            if await mayType() {
                try? serial.write(bytes)
            } else if !warned {
                warned = true
                _ = sendAll(socket, Array("\r\n[rte-agent] read-only console: the device is leased by someone else or you hold no lease\r\n".utf8))
            }
        }
        output.cancel()
        shutdown(socket, Int32(SHUT_RDWR))
    }

    /// A console client that takes no bytes for this long is cut off (it would hold a writer and
    /// a capture follower for ever otherwise).
    static let sendTimeoutMilliseconds = 10_000

    @discardableResult
    static func sendAll(_ socket: Int32, _ bytes: [UInt8]) -> Bool {
        (try? FileDescriptor(rawValue: socket).sendAll(bytes, timeoutMilliseconds: sendTimeoutMilliseconds)) != nil
    }
}

/// Strips telnet negotiation (IAC ...) and the NUL a telnet client sends after CR.
struct TelnetFilter {
    enum State { case data, iac, option, subnegotiation, subIAC, afterCR }
    var state = State.data

    mutating func filter(_ input: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        for b in input {
            switch state {
            case .data, .afterCR:
                if state == .afterCR && (b == 0 || b == 0x0a) { state = .data; if b == 0 { continue } }
                state = .data
                if b == 0xff { state = .iac } else { out.append(b); if b == 0x0d { state = .afterCR } }
            case .iac:
                switch b {
                case 0xff: out.append(0xff); state = .data
                case 0xfb...0xfe: state = .option
                case 0xfa: state = .subnegotiation
                default: state = .data
                }
            case .option: state = .data
            case .subnegotiation: if b == 0xff { state = .subIAC }
            case .subIAC: state = b == 0xf0 ? .data : .subnegotiation
            }
        }
        return out
    }
}
