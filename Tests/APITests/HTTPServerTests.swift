import HTTPServer
import Testing

/// The server's quiet hook (the agent gives heap pages back there): once per burst of at least
/// `quietAfterRequests` requests, when the burst's last connection closes — not per connection.
@Suite struct QuietHookTests {
    @Test(.timeLimit(.minutes(1))) func theHookFiresWhenTheLastConnectionOfABurstCloses() async throws {
        let (quiet, signal) = AsyncStream<Void>.makeStream()
        var options = HTTPServerOptions(host: "127.0.0.1", port: 0)
        options.quietAfterRequests = 3
        options.onQuiet = { signal.yield() }
        let server = try HTTPServer(options: options, handler: { _ in HTTPResponse.text(200, "ok\n") },
                                    tooLarge: { _, _ in HTTPResponse.text(413, "too large\n") })
        defer { server.stop() }
        let client = HTTP(port: server.port, token: nil)
        var events = quiet.makeAsyncIterator()
        // Three requests, each on its own connection: the hook fires at the third close only.
        for _ in 0..<3 { #expect(try await client.request("GET", "/x").status == 200) }
        _ = await events.next()
        #expect(server.requestsServed == 3)
        // One more: fewer than three since the last call, so no call; two more make three.
        for _ in 0..<3 { #expect(try await client.request("GET", "/x").status == 200) }
        _ = await events.next()
        #expect(server.requestsServed == 6)
        signal.finish()
        // Exactly two calls for six requests (nothing else was queued).
        var rest = 0
        while await events.next() != nil { rest += 1 }
        #expect(rest == 0)
    }
}
