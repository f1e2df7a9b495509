import AgentClock
import Configuration
import POSIXIO
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

public struct SerialError: Error, CustomStringConvertible, Sendable {
    public var device: String
    public var detail: String
    public var description: String { "serial \(device): \(detail)" }
}

public struct SerialPortStatus: Sendable, Codable, Equatable {
    public var device: String
    public var state: String
    public var baud: Int
    public var bytesRead: UInt64
    public var bytesWritten: UInt64
    public var reopenCount: UInt64
    public var lastError: String?
    public var captureStart: UInt64
    public var captureEnd: UInt64
    /// How the reader thread is scheduled: "normal", "fifo N", or why FIFO was refused.
    public var readerScheduling: String = "normal"

    enum CodingKeys: String, CodingKey {
        case device, state, baud
        case bytesRead = "bytes_read", bytesWritten = "bytes_written", reopenCount = "reopen_count"
        case lastError = "last_error", captureStart = "capture_start", captureEnd = "capture_end"
        case readerScheduling = "reader_scheduling"
    }
}

/// The DUT's UART: one reader thread that never stops reading (everything goes into the
/// capture), one serialized writer, and reopen with back-off when the device goes away.
public final class SerialPort: Sendable {
    public enum State: String, Sendable { case opening, open, reopening, stopped }
    struct Shared {
        var state: State = .opening
        var fd: FileDescriptor?
        var bytesRead: UInt64 = 0
        var bytesWritten: UInt64 = 0
        var reopenCount: UInt64 = 0
        var opens: UInt64 = 0
        var lastError: String?
        var scheduling = "normal"
        var running = true
        var started = false
        var openWaiters: [CheckedContinuation<Void, Never>] = []
    }
    public let config: SerialConfig
    public let capture: SerialCapture
    private let shared = Mutex(Shared())
    private let writeLock = Mutex(())
    private let wake: WakePipe
    private let stoppedSignal = Mutex<CheckedContinuation<Void, Never>?>(nil)
    private let finished = Mutex(false)

    public init(config: SerialConfig, capture: SerialCapture) throws(Errno) {
        self.config = config
        self.capture = capture
        self.wake = try WakePipe()
    }

    /// Starts the reader thread. The first open is attempted right away.
    public func start() {
        shared.withLock { $0.started = true }
        startThread(name: "serial-reader") { [self] in readerLoop() }
    }

    public var state: State { shared.withLock { $0.state } }

    public var status: SerialPortStatus {
        shared.withLock { s in
            SerialPortStatus(device: config.device, state: s.state.rawValue, baud: config.baud, bytesRead: s.bytesRead,
                             bytesWritten: s.bytesWritten, reopenCount: s.reopenCount, lastError: s.lastError,
                             captureStart: capture.startOffset, captureEnd: capture.endOffset, readerScheduling: s.scheduling)
        }
    }

    /// How many times the device has been opened so far.
    public var openCount: UInt64 { shared.withLock { $0.opens } }

    /// Retries a failed open now instead of after the back-off (the device was just re-created).
    public func retryOpenNow() { wake.wake() }

    /// Suspends until the device has been opened more than `count` times (or the port stopped).
    public func waitUntilOpened(after count: UInt64) async {
        while true {
            let done = shared.withLock { $0.opens > count || !$0.running }
            if done { return }
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let ready = shared.withLock { s -> Bool in
                    if s.opens > count || !s.running { return true }
                    s.openWaiters.append(c); return false
                }
                if ready { c.resume() }
            }
        }
    }

    /// Suspends until the port is open (returns at once if it is).
    public func waitUntilOpen() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let ready = shared.withLock { s -> Bool in
                if s.state == .open || !s.running { return true }
                s.openWaiters.append(c); return false
            }
            if ready { c.resume() }
        }
    }

    /// Writes every byte to the DUT, in order with other writers.
    public func write(_ bytes: [UInt8]) throws(SerialError) {
        guard !bytes.isEmpty else { return }
        let result: Result<Void, SerialError> = writeLock.withLock { _ in
            guard let fd = shared.withLock({ $0.fd }) else {
                return .failure(SerialError(device: config.device, detail: "port is not open (\(shared.withLock { $0.lastError ?? $0.state.rawValue }))"))
            }
            do {
                try fd.writeAll(bytes)
            } catch {
                return .failure(SerialError(device: config.device, detail: "write failed: \(error)"))
            }
            shared.withLock { $0.bytesWritten += UInt64(bytes.count) }
            return .success(())
        }
        try result.get()
    }

    /// Stops the reader and closes the device; returns when the reader thread has finished.
    public func stop() async {
        let wasStarted = shared.withLock { s -> Bool in s.running = false; return s.started }
        wake.wake()
        guard wasStarted else { return }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let done = finished.withLock { f -> Bool in
                if f { return true }
                stoppedSignal.withLock { $0 = c }
                return false
            }
            if done { c.resume() }
        }
    }

    private var running: Bool { shared.withLock { $0.running } }

    private func readerLoop() {
        if let priority = config.realtimePriority {
            // The prompt's answer is written from this thread: under load it must not wait for
            // a time slice. Refused (no CAP_SYS_NICE, RLIMIT_RTPRIO too low): normal scheduling.
            do {
                try setCurrentThreadRealtime(priority: Int32(priority))
                shared.withLock { $0.scheduling = "fifo \(priority)" }
            } catch {
                shared.withLock { $0.scheduling = "normal (SCHED_FIFO \(priority) refused: \(error); allow it with LimitRTPRIO=\(priority) or CAP_SYS_NICE)" }
            }
        }
        var backoff = config.reopenInitialMilliseconds
        var everOpened = false
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)
        defer { buffer.deallocate() }
        while running {
            let fd: FileDescriptor
            do {
                fd = try Termios.open(config)
            } catch {
                shared.withLock { $0.lastError = "open \(config.device): \(error)"; $0.state = everOpened ? .reopening : .opening }
                waitOrWake(milliseconds: backoff)
                backoff = min(backoff * 2, config.reopenMaxMilliseconds)
                continue
            }
            backoff = config.reopenInitialMilliseconds
            let waiters = shared.withLock { s -> [CheckedContinuation<Void, Never>] in
                s.fd = fd; s.state = .open; s.lastError = nil; s.opens += 1
                if everOpened { s.reopenCount += 1 }
                let w = s.openWaiters; s.openWaiters.removeAll(); return w
            }
            capture.mark(.opened, detail: "\(config.device) opened at \(config.baud) baud")
            everOpened = true
            waiters.forEach { $0.resume() }

            var closeReason = "stopped"
            reading: while running {
                let revents: [Int16]
                do {
                    revents = try FileDescriptor.poll([(fd, Int16(POLLIN)), (wake.readEnd, Int16(POLLIN))], timeoutMilliseconds: -1)
                } catch {
                    closeReason = "poll failed: \(error)"; break
                }
                if revents[1] != 0 { wake.drain(); continue }
                if revents[0] & Int16(POLLIN) != 0 || revents[0] & Int16(POLLHUP | POLLERR) != 0 {
                    // Drain everything available before going back to poll.
                    while true {
                        let n: Int
                        do { n = try fd.read(into: buffer) } catch {
                            if error == .wouldBlock { break }
                            closeReason = "device went away (\(error))"
                            break reading
                        }
                        if n == 0 { closeReason = "device went away (end of file)"; break reading }
                        let chunk = UnsafeRawBufferPointer(rebasing: buffer[0..<n])
                        shared.withLock { $0.bytesRead += UInt64(n) }
                        capture.append(chunk)
                    }
                }
            }
            let stillRunning = running
            writeLock.withLock { _ in
                shared.withLock { s in s.fd = nil; s.state = stillRunning ? .reopening : .stopped; if stillRunning { s.lastError = closeReason } }
                fd.close()
            }
            if stillRunning {
                capture.mark(.gap, detail: "\(config.device): \(closeReason); reopening")
            } else {
                capture.mark(.closed, detail: "\(config.device) closed")
            }
        }
        let waiters = shared.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.state = .stopped
            let w = s.openWaiters; s.openWaiters.removeAll(); return w
        }
        waiters.forEach { $0.resume() }
        let c = finished.withLock { f -> CheckedContinuation<Void, Never>? in
            f = true
            return stoppedSignal.withLock { c in let x = c; c = nil; return x }
        }
        c?.resume()
    }

    private func waitOrWake(milliseconds: Int) {
        _ = try? FileDescriptor.poll([(wake.readEnd, Int16(POLLIN))], timeoutMilliseconds: Int32(milliseconds))
        wake.drain()
    }
}
