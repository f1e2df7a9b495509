import POSIXIO
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Where this build put its executables: beside the test binary, whatever the scratch path
/// (`swift test`, `swift test --scratch-path X`, the gpio-sim VM running the same binary).
public let productsDirectory: String = {
    var path = CommandLine.arguments[0]
    if !path.hasPrefix("/") { path = absolutePath(path) }
    return String(path[..<(path.lastIndex(of: "/") ?? path.endIndex)])
}()

public func builtProduct(_ name: String) -> String { productsDirectory + "/" + name }

/// A child process a test starts: through POSIXIO.Subprocess (an empty signal mask, so SIGTERM
/// reaches it and whatever it starts), its standard output and error collected, and a deadline
/// that really fires: past it the child gets SIGTERM, then SIGKILL.
public final class TestChild: Sendable {
    public let process: Subprocess
    private struct State {
        var output: [UInt8] = []
        var ended = false
        var waiters: [(text: String, continuation: CheckedContinuation<Bool, Never>)] = []
    }
    private let state = Mutex(State())
    private let finished = Mutex<ExitStatus?>(nil)

    public init(_ arguments: [String], environment: [String: String]? = nil, deadlineSeconds: Double = 300) throws {
        process = try Subprocess(arguments, environment: environment, output: .pipe, error: .standardOutput)
        let reader = LineReader(process.standardOutput!)
        startThread(name: "child-output") { [self] in
            while let line = reader.readLine() { append(Array((line + "\n").utf8)) }
            let waiters = state.withLock { s in s.ended = true; let w = s.waiters; s.waiters = []; return w }
            waiters.forEach { $0.continuation.resume(returning: false) }
        }
        let process = self.process
        startThread(name: "child-deadline") {
            if !process.waitForExit(timeoutMilliseconds: Int32(clamping: Int64(deadlineSeconds * 1000))) {
                printToStandardError("test child \(arguments.joined(separator: " ")) passed its \(deadlineSeconds) s deadline: stopped")
                _ = process.stop(grace: 2)
            }
        }
    }

    private func append(_ bytes: [UInt8]) {
        let ready = state.withLock { s -> [CheckedContinuation<Bool, Never>] in
            s.output += bytes
            let text = String(decoding: s.output, as: UTF8.self)
            var ready: [CheckedContinuation<Bool, Never>] = []
            s.waiters.removeAll { w in
                if text.contains(w.text) { ready.append(w.continuation); return true }
                return false
            }
            return ready
        }
        ready.forEach { $0.resume(returning: true) }
    }

    public var output: String { state.withLock { String(decoding: $0.output, as: UTF8.self) } }
    public var pid: Int32 { process.pid }

    /// True once `text` has appeared in the output; false if the output ended first.
    public func waitForOutput(containing text: String) async -> Bool {
        await withCheckedContinuation { c in
            let now = state.withLock { s -> Bool? in
                if String(decoding: s.output, as: UTF8.self).contains(text) { return true }
                if s.ended { return false }
                s.waiters.append((text, c))
                return nil
            }
            if let now { c.resume(returning: now) }
        }
    }

    /// Waits for the child to end (on a thread of its own, never the cooperative pool).
    public func wait() async -> ExitStatus {
        let process = self.process
        return await withCheckedContinuation { c in startThread(name: "child-wait") { c.resume(returning: process.wait()) } }
    }

    /// Output complete: the child ended and its pipe is drained.
    public func waitForEnd() async -> (ExitStatus, String) {
        let status = await wait()
        _ = await waitForOutput(containing: "\u{0}never\u{0}")
        return (status, output)
    }
}

/// Runs a program (PATH is searched) to its end; returns its exit code (128+signal when killed) and output.
public func runChild(_ arguments: [String], environment: [String: String]? = nil, deadlineSeconds: Double = 300) async throws -> (Int32, String) {
    let child = try TestChild(arguments, environment: environment, deadlineSeconds: deadlineSeconds)
    let (status, output) = await child.waitForEnd()
    switch status {
    case .exited(let code): return (code, output)
    case .signalled(let signal): return (128 + signal, output)
    }
}
