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
            while true {
                guard let ev = try? fd.poll(events: Int16(POLLIN), timeoutMilliseconds: -1), ev != 0 else { break }
                let n = buf.withUnsafeMutableBytes { Glibc.recv(socket, $0.baseAddress, $0.count, 0) }
                if n <= 0 { break }
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

    @discardableResult
    static func sendAll(_ socket: Int32, _ bytes: [UInt8]) -> Bool {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(socket, $0.baseAddress! + done, $0.count - done, Int32(MSG_NOSIGNAL)) }
            if n > 0 { done += n; continue }
            if n < 0 && (errno == EINTR) { continue }
            if n < 0 && errno == EAGAIN {
                var p = pollfd(fd: socket, events: Int16(POLLOUT), revents: 0)
                if poll(&p, 1, 5000) <= 0 { return false }
                continue
            }
            return false
        }
        return true
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
