import Matching

/// Logs in at the getty: user name typed against its echo, then the password, until the shell
/// prompt. Kernel messages may land on top of the prompt; if the password prompt does not come,
/// a fresh login prompt is asked for (Enter) and the login tried again, three times at most.
struct LoginStage {
    var login: RunSpec.Login
    var timeout: Duration

    func run(on console: ConsoleSession) async throws -> StageOutcome {
        for attempt in 1...3 {
            console.skipUnread()
            _ = try await console.typeEchoed(login.username, timeout: .seconds(5))
            try console.send("\r")
            let m: Match
            do { m = try await console.expect(login.afterUserName, timeout: min(.seconds(10), timeout)) } catch {
                if error == .cancelled { throw error }
                if case .invalidPatterns(let why) = error { throw StageFailure(expected: "a login", message: why) }
                if attempt < 3 { try console.send([0x0d]); _ = try? await console.expect([.literal(login.prompt)], timeout: .seconds(5)); continue }
                throw StageFailure(expected: "\"\(login.passwordPrompt)\" after the user name", message: "no password prompt or shell after sending the user name")
            }
            if m.text == login.shellPrompt { return StageOutcome(detail: "logged in as \(login.username) without a password") }
            if m.text == RunSpec.Login.incorrect { throw StageFailure(expected: "a shell", message: "Login incorrect for \(login.username)") }
            try console.send((login.password ?? "") + "\r")
            let r = try await console.await(login.afterPassword, within: timeout, "the shell prompt \"\(login.shellPrompt)\"")
            if r.patternIndex != 0 {
                throw StageFailure(expected: "the shell prompt \"\(login.shellPrompt)\"",
                                   message: "Login incorrect: the DUT refused the password for \(login.username)")
            }
            return StageOutcome(detail: "logged in as \(login.username)")
        }
        throw StageFailure(expected: "a login", message: "login did not succeed")
    }
}
