import Matching
import Terminal

/// A stage that did not get what it needed.
struct StageFailure: Error {
    var expected: String
    var message: String
}

/// What a stage reports when it passes.
struct StageOutcome {
    var detail: String
    /// Prompt-to-key time for stages that answer a prompt, in microseconds.
    var reactionUs: Double? = nil
}

extension ConsoleSession {
    /// Waits for patterns; a timeout becomes a stage failure saying what was awaited.
    func await(_ patterns: [Pattern], within timeout: Duration, _ what: String) async throws -> Match {
        do { return try await expect(patterns, timeout: timeout) } catch {
            if error == .cancelled { throw ConsoleWaitError.cancelled }
            if case .invalidPatterns(let why) = error { throw StageFailure(expected: what, message: "cannot wait for \(what): \(why)") }
            throw StageFailure(expected: what, message: "\(what) did not appear within \(format(timeout.seconds)) s")
        }
    }

    /// Waits for a state of the screen; a timeout becomes a stage failure with `message`.
    func awaitScreen<T>(within timeout: Duration, expected: String, message: @autoclosure () -> String,
                        _ read: (Screen) -> T?) async throws -> T {
        do { return try await waitForScreen(timeout: timeout, read) } catch {
            if error == .cancelled { throw ConsoleWaitError.cancelled }
            throw StageFailure(expected: expected, message: message())
        }
    }
}

/// True for a wait that ended because the run was cancelled (not a timeout).
func isCancellation(_ error: any Error) -> Bool { (error as? ConsoleWaitError) == .cancelled }

func format(_ x: Double) -> String {
    let r = (x * 10).rounded() / 10
    return r == r.rounded() ? String(Int(r)) : String(r)
}
