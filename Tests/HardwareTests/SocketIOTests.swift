import POSIXIO
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Socket I/O goes through POSIXIO's one EINTR-retrying path, with deadlines (issue 16).
@Suite struct SocketIOTests {
    /// `writeAll` polled for ever when the peer stopped reading; `sendAll` gives up at its deadline.
    @Test func aPeerThatStopsReadingEndsTheSendAtItsDeadline() throws {
        var fds: [Int32] = [0, 0]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0)
        let (mine, theirs) = (FileDescriptor(rawValue: fds[0]), FileDescriptor(rawValue: fds[1]))
        defer { mine.close(); theirs.close() }
        let started = monotonicMilliseconds()
        // Far more than the socket buffers hold; nobody reads the other end.
        let big = [UInt8](repeating: 0x41, count: 16 << 20)
        #expect(throws: Errno.timedOut) { try mine.sendAll(big, timeoutMilliseconds: 300) }
        let took = monotonicMilliseconds() - started
        #expect(took >= 300 && took < 5000, "\(took) ms")
        // The same on a non-blocking descriptor through writeAll with a deadline.
        try mine.setNonBlocking(true)
        #expect(throws: Errno.timedOut) { try mine.writeAll(big, timeoutMilliseconds: 200) }
    }

    /// A signal landing in a blocked recv (EINTR) ended console sessions as if the peer had hung up.
    @Test func aSignalInABlockedReceiveIsNotAHangUp() async throws {
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { _ in }
        action.sa_flags = 0  // no SA_RESTART: the blocked recv really returns EINTR
        sigaction(SIGUSR2, &action, nil)
        var fds: [Int32] = [0, 0]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0)
        let (reader, writer) = (FileDescriptor(rawValue: fds[0]), FileDescriptor(rawValue: fds[1]))
        defer { reader.close(); writer.close() }
        let (started, startedSink) = AsyncStream<pthread_t>.makeStream()
        let (result, resultSink) = AsyncStream<String>.makeStream()
        startThread(name: "recv-under-sig") {
            // Swift's threads block most signals; this one takes SIGUSR2, as any thread may take some signal.
            var set = sigset_t()
            sigemptyset(&set)
            sigaddset(&set, SIGUSR2)
            pthread_sigmask(SIG_UNBLOCK, &set, nil)
            startedSink.yield(pthread_self())
            var buf = [UInt8](repeating: 0, count: 16)
            do {
                let n = try buf.withUnsafeMutableBytes { (b) throws(Errno) -> Int in try reader.receive(into: b) }
                resultSink.yield(String(decoding: buf[0..<n], as: UTF8.self))
            } catch {
                resultSink.yield("error: \(error)")
            }
        }
        var it = started.makeAsyncIterator()
        let thread = try #require(await it.next())
        // Signal it until it is surely blocked in recv, then give it data.
        for _ in 0..<50 {
            pthread_kill(thread, SIGUSR2)
            var p = pollfd(fd: reader.rawValue, events: 0, revents: 0)
            _ = poll(&p, 0, 2)
        }
        try writer.writeAll(Array("still here".utf8))
        var results = result.makeAsyncIterator()
        #expect(await results.next() == "still here")
    }

    /// An upgraded libmicrohttpd connection is non-blocking: receive waits for data there too.
    @Test func receiveWaitsOnANonBlockingSocket() async throws {
        var fds: [Int32] = [0, 0]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0)
        let (reader, writer) = (FileDescriptor(rawValue: fds[0]), FileDescriptor(rawValue: fds[1]))
        defer { reader.close(); writer.close() }
        try reader.setNonBlocking(true)
        let (got, sink) = AsyncStream<String>.makeStream()
        startThread(name: "nb-recv") {
            var buf = [UInt8](repeating: 0, count: 16)
            let n = (try? buf.withUnsafeMutableBytes { (b) throws(Errno) -> Int in try reader.receive(into: b) }) ?? -1
            sink.yield(n > 0 ? String(decoding: buf[0..<n], as: UTF8.self) : "n=\(n)")
        }
        try writer.writeAll(Array("late".utf8))
        var it = got.makeAsyncIterator()
        #expect(await it.next() == "late")
    }

    @Test func aClosedPeerEndsTheSendAtOnce() throws {
        var fds: [Int32] = [0, 0]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0)
        let mine = FileDescriptor(rawValue: fds[0])
        defer { mine.close() }
        close(fds[1])
        #expect(throws: Errno.self) { try mine.sendAll([1, 2, 3], timeoutMilliseconds: 60_000) }
        var buf = [UInt8](repeating: 0, count: 8)
        #expect(try buf.withUnsafeMutableBytes { (b) throws(Errno) -> Int in try mine.receive(into: b) } == 0)
    }
}
