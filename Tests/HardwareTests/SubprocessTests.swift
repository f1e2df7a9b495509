import Foundation
import POSIXIO
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Children as the agent starts them (QEMU) and as the rigs and benchmarks do.
@Suite struct SubprocessTests {
    /// Spawns from a thread that blocks SIGTERM, as Swift's concurrency threads do.
    func spawnFromBlockingThread(_ arguments: [String]) async throws -> Subprocess {
        try await withCheckedThrowingContinuation { c in
            startThread(name: "blocks-term") {
                var set = sigset_t()
                sigemptyset(&set)
                sigaddset(&set, SIGTERM)
                pthread_sigmask(SIG_BLOCK, &set, nil)
                c.resume(with: Result { () throws(Errno) -> Subprocess in try Subprocess(arguments, output: .pipe) })
            }
        }
    }

    @Test func aChildStartsWithNoBlockedSignalsAndStopsOnSIGTERM() async throws {
        let child = try await spawnFromBlockingThread(["sh", "-c", "grep SigBlk /proc/self/status; exec sleep 60"])
        let line = LineReader(child.standardOutput!).readLine()
        #expect(line?.hasSuffix("0000000000000000") == true, "\(line ?? "no output")")
        #expect(child.isRunning)
        child.terminate()
        #expect(child.wait() == .signalled(SIGTERM))
        #expect(!child.isRunning)
    }

    @Test func stopEscalatesToSIGKILLWhenTERMIsIgnored() throws {
        let child = try Subprocess(["sh", "-c", "trap '' TERM; echo ready; exec tail -f /dev/null"], output: .pipe)
        #expect(LineReader(child.standardOutput!).readLine() == "ready")
        #expect(child.stop(grace: 0.2) == .signalled(SIGKILL))
    }

    @Test func outputLinesTheUnterminatedRestAndTheExitCode() throws {
        let child = try Subprocess(["sh", "-c", "echo one; echo; printf two; exit 3"], output: .pipe)
        let reader = LineReader(child.standardOutput!)
        #expect(reader.readLine() == "one")
        #expect(reader.readLine() == "")
        #expect(reader.readLine() == "two")
        #expect(reader.readLine() == nil)
        #expect(child.wait() == .exited(3))
        #expect(child.poll() == .exited(3), "the status is kept once reaped")
    }

    /// Without pidfds (Linux < 5.3, valgrind): the end is polled for, without reaping, and every
    /// wait still works — status, timeout, stop, SIGKILL escalation. The children are started on
    /// a thread whose kernel says pidfd_open does not exist (a seccomp filter, `withoutPidfdOpen`).
    @Test func withoutAPidfdTheEndIsPolledForAndEveryWaitStillWorks() throws {
        let child = try withoutPidfdOpen { try Subprocess(["sh", "-c", "read line; exit 3"], input: .pipe) }
        #expect(child.pollsForExit)
        #expect(!child.waitForExit(timeoutMilliseconds: 50), "still running")
        #expect(child.poll() == nil)
        try child.standardInput!.writeAll(Array("go\n".utf8))
        #expect(child.waitForExit(timeoutMilliseconds: 10_000))
        #expect(child.wait() == .exited(3))
        let stubborn = try withoutPidfdOpen {
            try Subprocess(["sh", "-c", "trap '' TERM; echo ready; exec tail -f /dev/null"], output: .pipe)
        }
        #expect(LineReader(stubborn.standardOutput!).readLine() == "ready")
        #expect(stubborn.stop(grace: 0.2) == .signalled(SIGKILL))
        #expect(try !Subprocess(["true"]).pollsForExit, "this kernel has pidfds")
    }

    @Test func stopReturnsAsSoonAsTheChildIsGone() throws {
        // stop() returns as soon as the child is gone, long before its grace period.
        let child = try Subprocess(["sleep", "60"])
        let started = ContinuousClock.now
        #expect(child.stop(grace: 30) == .signalled(SIGTERM))
        #expect(ContinuousClock.now - started < .seconds(5))
        #expect(child.poll() == .signalled(SIGTERM))
    }

    @Test func inputPipeEnvironmentAndDirectory() throws {
        let cat = try Subprocess(["cat"], input: .pipe, output: .pipe)
        try cat.standardInput!.writeAll(Array("abc\n".utf8))
        cat.standardInput!.close()
        #expect(LineReader(cat.standardOutput!).readToEnd() == "abc\n")
        #expect(cat.wait().succeeded)

        let env = try Subprocess(["/usr/bin/env"], environment: ["ONLY": "this"], output: .pipe)
        #expect(LineReader(env.standardOutput!).readToEnd() == "ONLY=this\n")
        _ = env.wait()

        let pwd = try Subprocess(["pwd"], directory: "/usr/share", output: .pipe, error: .standardOutput)
        #expect(LineReader(pwd.standardOutput!).readLine() == "/usr/share")
        _ = pwd.wait()
    }

    /// A child gets standard input, output and error and nothing else, whatever this process
    /// left inheritable (CI: mmdebstrap, given a dozen stray descriptors, failed in its hooks).
    @Test func aChildInheritsOnlyItsThreeStandardDescriptors() throws {
        let stray = open("/dev/null", O_RDONLY)  // no O_CLOEXEC: inheritable
        #expect(stray >= 0)
        let high = dup2(stray, 40)
        defer { close(stray); close(high) }
        #expect(high == 40)
        let child = try Subprocess(["sh", "-c", "for n in \(stray) 40; do if [ -e /proc/self/fd/$n ]; then echo \"fd $n open\"; fi; done; echo done"],
                                   output: .pipe)
        #expect(LineReader(child.standardOutput!).readToEnd() == "done\n")
        _ = child.wait()
    }

    /// Looked up before the spawn, so the error does not depend on the C library carrying exec's
    /// failure back from the child (glibc's does not under qemu-user: the arm64 check saw a child).
    @Test func aMissingProgramIsAnErrorNotAChild() throws {
        #expect(throws: Errno(ENOENT)) { try Subprocess(["rte-no-such-program-here"]) }
        #expect(throws: Errno(ENOENT)) { try Subprocess(["/nonexistent/rte-no-such-program"]) }
        let notExecutable = scratchDirectory() + "/script"
        #expect(FileManager.default.createFile(atPath: notExecutable, contents: Data("#!/bin/sh\n".utf8)))
        #expect(throws: Errno(EACCES)) { try Subprocess([notExecutable]) }
        // Found in PATH by name, as posix_spawnp finds it.
        let sh = try Subprocess(["sh", "-c", "exit 3"])
        #expect(sh.wait() == .exited(3))
    }

    @Test func relativePathsAreMadeAbsoluteAgainstTheWorkingDirectory() {
        var buffer = [CChar](repeating: 0, count: 4096)
        let cwd = String(cString: getcwd(&buffer, buffer.count)!)
        #expect(absolutePath("/etc/x") == "/etc/x")
        #expect(absolutePath("state/a") == (cwd == "/" ? "" : cwd) + "/state/a")
        #expect(absolutePath("./b") == (cwd == "/" ? "" : cwd) + "/b")
    }
}
