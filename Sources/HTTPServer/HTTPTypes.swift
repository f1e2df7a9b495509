import Synchronization

public enum HTTPMethod: String, Sendable, CaseIterable {
    case GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS
}

public struct HTTPRequest: Sendable {
    public var method: String
    public var path: String
    public var query: [String: String]
    /// Header names in lower case.
    public var headers: [String: String]
    public var body: [UInt8]
    public var remoteAddress: String
    /// Path parameters filled by the router (`{id}`).
    public var pathParameters: [String: String] = [:]
    /// Where the body went instead of `body`, for routes that stream uploads (see `HTTPServerOptions.bodySink`).
    public var upload: (any RequestBodySink)?

    public init(method: String, path: String, query: [String: String] = [:], headers: [String: String] = [:],
                body: [UInt8] = [], remoteAddress: String = "") {
        self.method = method; self.path = path; self.query = query; self.headers = headers
        self.body = body; self.remoteAddress = remoteAddress
    }

    public func header(_ name: String) -> String? { headers[name.lowercased()] }
}

/// Takes a request body as it arrives, instead of it being kept whole in memory (a kernel image
/// uploaded to disk). Called on the server's thread, in order; `write` returns false to refuse
/// the rest (too large, disk full): the handler then sees `failure`.
public protocol RequestBodySink: AnyObject, Sendable {
    func write(_ bytes: UnsafeRawBufferPointer) -> Bool
    /// Why the body was refused, if it was.
    var failure: String? { get }
    /// The request ended before its body did (the client hung up): clean up.
    func abandon()
}

/// Pushes bytes of a streaming response to the client (chunked). `write` waits while the
/// client is slow (bounded buffer) and returns false once the client has gone.
public final class ResponseStreamWriter: Sendable {
    struct State {
        var buffer: [UInt8] = []
        var finished = false
        var closed = false
        var spaceWaiters: [CheckedContinuation<Void, Never>] = []
        var closeWaiters: [CheckedContinuation<Void, Never>] = []
    }
    let state = Mutex(State())
    /// What a slow reader can make the agent hold for it (the producer waits beyond this).
    let limit = 256 << 10
    /// Called when there is new data for a suspended connection.
    let onData: Mutex<(@Sendable () -> Void)?> = Mutex(nil)

    public init() {}

    public var isClosed: Bool { state.withLock { $0.closed } }

    @discardableResult
    public func write(_ bytes: [UInt8]) async -> Bool {
        while true {
            let outcome: Int = state.withLock { s in
                if s.closed { return 0 }
                if s.buffer.count < limit { s.buffer += bytes; return 1 }
                return 2
            }
            if outcome == 0 { return false }
            if outcome == 1 { onData.withLock { $0 }?(); return true }
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let wait = state.withLock { s -> Bool in
                    if s.closed || s.buffer.count < limit { return false }
                    s.spaceWaiters.append(c); return true
                }
                if !wait { c.resume() }
            }
        }
    }

    public func write(_ text: String) async -> Bool { await write(Array(text.utf8)) }

    /// Ends the response after the buffered bytes are sent.
    public func finish() {
        state.withLock { $0.finished = true }
        onData.withLock { $0 }?()
    }

    /// Suspends until the client disconnects (or the stream is finished and sent).
    public func waitUntilClosed() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let done = state.withLock { s -> Bool in
                if s.closed { return true }
                s.closeWaiters.append(c); return false
            }
            if done { c.resume() }
        }
    }

    enum Take { case bytes([UInt8]), none, end }

    /// Called by the server: up to `max` bytes, or `.none` (nothing yet), or `.end`.
    func take(max: Int) -> Take {
        let (result, waiters) = state.withLock { s -> (Take, [CheckedContinuation<Void, Never>]) in
            if s.buffer.isEmpty { return (s.finished ? .end : .none, []) }
            let n = Swift.min(max, s.buffer.count)
            let out = Array(s.buffer[0..<n])
            s.buffer.removeFirst(n)
            let w = s.spaceWaiters; s.spaceWaiters.removeAll()
            return (.bytes(out), w)
        }
        waiters.forEach { $0.resume() }
        return result
    }

    func close() {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.closed = true
            let w = s.spaceWaiters + s.closeWaiters
            s.spaceWaiters.removeAll(); s.closeWaiters.removeAll()
            return w
        }
        waiters.forEach { $0.resume() }
    }
}

/// A raw, bidirectional socket handed over after `101 Switching Protocols`.
public struct UpgradedConnection: Sendable {
    public let socket: Int32
    /// Bytes the client sent after its request, before the upgrade completed.
    public let initialBytes: [UInt8]
}

public struct HTTPResponse: Sendable {
    public enum Body: Sendable {
        case bytes([UInt8])
        /// Produced while being sent; the closure runs in its own task.
        case stream(@Sendable (ResponseStreamWriter) async -> Void)
        /// Switches protocols; the closure owns the socket until it returns.
        case upgrade(protocolName: String, @Sendable (UpgradedConnection) async -> Void)
        /// `length` bytes of an open file from `offset`, sent by the server (sendfile where it
        /// can); the server closes the descriptor.
        case file(descriptor: Int32, offset: UInt64, length: UInt64)
    }
    public var status: Int
    public var headers: [(String, String)]
    public var body: Body

    public init(status: Int, headers: [(String, String)] = [], body: Body = .bytes([])) {
        self.status = status; self.headers = headers; self.body = body
    }

    public static func text(_ status: Int, _ text: String, contentType: String = "text/plain; charset=utf-8") -> HTTPResponse {
        HTTPResponse(status: status, headers: [("Content-Type", contentType)], body: .bytes(Array(text.utf8)))
    }
}

public typealias HTTPHandler = @Sendable (HTTPRequest) async -> HTTPResponse
