import AgentClock
import Configuration
import Glibc
import JSONDocument
import POSIXIO
import Power
import Serial
import Text

/// A QEMU x86 machine as the device under test: power is the QEMU process and its QMP socket,
/// the console is QEMU's serial pseudo-terminal, opened by the agent's own termios code through
/// a stable link (as `/dev/ttyS1` is on an RTE).
///
/// QEMU starts paused (`-S`) and runs only once the agent has the new pty open, so not even the
/// first byte of the SeaBIOS banner is lost.
public actor QEMUMachine: DUTPower {
    public let config: QEMUConfig
    let stateDirectory: String
    let serialLink: String
    let serial: SerialPort
    let clock: any AgentClock
    let cycleOff: Duration
    private var process: Subprocess?
    private var qmpPath: String { "\(stateDirectory)/qemu-qmp.sock" }
    private var pidPath: String { "\(stateDirectory)/qemu.pid" }
    public private(set) var counters = PowerCounters()

    public init(config: QEMUConfig, stateDirectory: String, serialLink: String, serial: SerialPort, clock: any AgentClock,
                cycleOffMilliseconds: Int) {
        self.config = config; self.stateDirectory = stateDirectory; self.serialLink = serialLink; self.serial = serial
        self.clock = clock; cycleOff = .milliseconds(cycleOffMilliseconds)
    }

    public nonisolated var stateSource: String { get async { "process" } }

    public func state() async -> PowerState { process?.isRunning == true ? .on : .off }

    public func perform(_ action: PowerAction) async throws(PowerError) -> PowerState {
        counters.actions[action.rawValue, default: 0] += 1
        let running = process?.isRunning == true
        switch action {
        case .on:
            if !running { try await start() }
        case .hardOff, .longPress:
            await stop()
        case .off:
            if running {
                try await qmp(.systemPowerdown)
                // The OS decides; report what happened within the configured time.
                let deadline = clock.now() + .seconds(config.softOffSeconds)
                while process?.isRunning == true && clock.now() < deadline {
                    try? await clock.sleep(for: .milliseconds(50))
                }
            }
        case .press:
            if running { try await qmp(.systemPowerdown) } else { try await start() }
        case .reset:
            guard running else { throw PowerError(kind: .refused, detail: "the DUT is off; reset needs it on (power on first)") }
            try await qmp(.systemReset)
        case .cycle:
            await stop()
            try? await clock.sleep(for: cycleOff)
            try await start()
        }
        return await state()
    }

    /// A QEMU left running by an agent that was killed would hold the DUT's "power": end it.
    private func killStale() {
        guard let text = readFile(pidPath).map({ String(decoding: $0, as: UTF8.self) }),
              let pid = Int32(text.trimmingWhitespace), pid > 0 else { return }
        let comm = readFile("/proc/\(pid)/comm").map { String(decoding: $0, as: UTF8.self) } ?? ""
        if comm.hasPrefix("qemu") { kill(pid, SIGKILL) }
        unlink(pidPath)
    }

    private func start() async throws(PowerError) {
        killStale()
        unlink(qmpPath)
        let args = config.arguments.map { $0.replacing("{state_dir}", with: stateDirectory) }
        // QEMU names its pty on stdout ("char device redirected to /dev/pts/5 (label serial0)")
        // and says what is wrong on stderr: both come here.
        let p: Subprocess
        do {
            p = try Subprocess([config.binary] + args + ["-serial", "pty", "-qmp", "unix:\(qmpPath),server=on,wait=off", "-pidfile", pidPath, "-S"],
                               directory: stateDirectory, input: .null, output: .pipe, error: .standardOutput)
        } catch {
            throw PowerError(kind: .hardware, detail: "cannot start \(config.binary): \(error)")
        }
        process = p
        let reader = LineReader(p.standardOutput!)
        let found: (String?, String) = await withCheckedContinuation { c in
            startThread(name: "qemu-output") {
                var text = ""
                while let line = reader.readLine() {
                    text += line + "\n"
                    if let r = line.firstRange(of: "redirected to "), let end = line[r.upperBound...].firstIndex(of: " ") {
                        c.resume(returning: (String(line[r.upperBound..<end]), text))
                        // Keep draining (and forgetting) so QEMU never blocks on a full pipe.
                        while reader.readLine() != nil {}
                        reader.descriptor.close()
                        return
                    }
                }
                reader.descriptor.close()
                // Its output ended before naming the pty: it has exited (or is about to); reap it.
                p.stop(grace: 2)
                c.resume(returning: (nil, text))
            }
        }
        guard let pty = found.0 else {
            process = nil
            throw PowerError(kind: .hardware, detail: "QEMU did not start: \(found.1.trimmingWhitespace)")
        }
        let opens = serial.openCount
        do { try replaceSymlink(serialLink, pointingTo: pty) } catch {
            await stop()
            throw PowerError(kind: .hardware, detail: "cannot link \(serialLink) to \(pty): \(error)")
        }
        // However QEMU ends (powered off from inside, crashed, stopped), its pty number is free
        // from then on: take the console's link away at once.
        let link = serialLink
        startThread(name: "qemu-exit") {
            _ = p.wait()
            removeSymlink(link, ifPointingTo: pty)
        }
        serial.retryOpenNow()
        await serial.waitUntilOpened(after: opens)
        try await qmp(.cont)
    }

    private func stop() async {
        guard let p = process else { return }
        // First take the console's link away: once QEMU is gone its pty number is free, and the
        // serial port, retrying the link, must not open the next pty that number is given to
        // (another QEMU's, another agent's DUT).
        unlink(serialLink)
        if p.isRunning {
            try? await qmp(.quit)
            let deadline = clock.now() + .seconds(3)
            while p.isRunning && clock.now() < deadline { try? await clock.sleep(for: .milliseconds(10)) }
            if p.isRunning { p.terminate() }
        }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            startThread(name: "qemu-wait") { _ = p.wait(); c.resume() }
        }
        process = nil
    }

    /// Runs one QMP command on a fresh connection (QMP serves one client at a time).
    private func qmp(_ command: QMP.Command) async throws(PowerError) {
        let path = qmpPath
        let result: String? = await withCheckedContinuation { c in
            startThread(name: "qmp") { c.resume(returning: QMP.execute(command, socketPath: path)) }
        }
        if let result { throw PowerError(kind: .hardware, detail: "QMP \(command.rawValue): \(result)") }
    }

    /// Ends the machine (agent shutdown).
    public func shutdown() async { await stop() }
}

/// The QEMU Machine Protocol over its unix socket: greeting, capabilities, one command. Messages
/// are JSON documents written and read as such (a reply is told by its member, not by text in it).
enum QMP {
    /// The commands the agent gives (argument-less).
    enum Command: String, Sendable {
        case capabilities = "qmp_capabilities", systemPowerdown = "system_powerdown", systemReset = "system_reset"
        case cont, quit
        var message: [UInt8] { JSONTree.object([("execute", .string(rawValue))]).text() + [0x0a] }
    }

    /// What a line from QEMU is: the command's answer, its error, or something else (an event).
    static func reply(_ line: [UInt8]) -> (done: Bool, error: String?) {
        guard case .object(let members)? = try? JSONTree.parse(line) else { return (false, nil) }
        if members.contains(where: { $0.0 == "return" }) { return (true, nil) }
        if let (_, e) = members.first(where: { $0.0 == "error" }) {
            if case .object(let fields) = e, let (_, d) = fields.first(where: { $0.0 == "desc" }), case .string(let desc) = d {
                return (true, desc)
            }
            return (true, String(decoding: e.text(), as: UTF8.self))
        }
        return (false, nil)
    }

    /// nil on success, else what went wrong.
    static func execute(_ command: Command, socketPath: String) -> String? {
        let fd: FileDescriptor
        do { fd = try UnixSocket.connect(path: socketPath, attempts: 100) } catch { return "cannot connect to \(socketPath): \(error)" }
        defer { fd.close() }
        var pending: [UInt8] = []
        func line() -> [UInt8]? {
            var buf = [UInt8](repeating: 0, count: 4096)
            while true {
                if let nl = pending.firstIndex(of: 0x0a) {
                    let l = Array(pending[..<nl])
                    pending.removeSubrange(...nl)
                    return l
                }
                let n = buf.withUnsafeMutableBytes { read(fd.rawValue, $0.baseAddress, $0.count) }
                if n <= 0 { return nil }
                pending += buf[0..<n]
            }
        }
        func send(_ c: Command) -> Bool { (try? fd.writeAll(c.message)) != nil }
        /// The reply to the last command (events in between are skipped).
        func answer() -> String? {
            while let l = line() {
                let r = reply(l)
                if r.done { return r.error }
            }
            return "connection closed"
        }
        guard line() != nil else { return "no QMP greeting" }
        guard send(.capabilities) else { return "write failed" }
        if let e = answer() { return e }
        guard send(command) else { return "write failed" }
        let r = answer()
        // `quit` may close the socket before answering; that is its success.
        if command == .quit && r == "connection closed" { return nil }
        return r
    }
}

