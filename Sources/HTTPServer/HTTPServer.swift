import CMicroHTTPD
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

// The only file that talks to libmicrohttpd. Its callbacks are plain non-isolated C functions
// (a main-actor closure called from MHD's thread would trap), and every pointer stays in here.

public struct HTTPServerError: Error, CustomStringConvertible {
    public var description: String
    public init(description: String) { self.description = description }
}

public struct HTTPServerOptions: Sendable {
    public var host: String
    public var port: Int
    public var maxBodyBytes: Int
    public var connectionTimeoutSeconds: Int
    public var maxConnections: Int
    /// Connections one client address may hold open at once.
    public var maxConnectionsPerAddress: Int
    /// Time a connection has to deliver a request's headers, however slowly it trickles them.
    public var headerTimeoutSeconds: Int
    public var tlsCertificatePEM: String?
    public var tlsKeyPEM: String?
    /// Decides from a request's headers, before any byte of its body is read, what becomes of
    /// the body (who the caller is, then how much it may send): nil keeps up to `maxBodyBytes`.
    public var admit: (@Sendable (HTTPRequest) -> BodyAdmission)?
    /// A body must arrive at this average rate once `bodyGraceSeconds` have passed since its
    /// headers, or the connection is cut (a client trickling a byte every few seconds would
    /// hold it for ever: MHD's own timeout is idle time).
    public var minBodyBytesPerSecond: Int = 1024
    public var bodyGraceSeconds: Int = 10
    /// Called (on the server's thread: keep it short) when the last open connection closes and
    /// at least `quietAfterRequests` requests were served since the last call.
    public var onQuiet: (@Sendable () -> Void)?
    public var quietAfterRequests = 1000

    public init(host: String, port: Int, maxBodyBytes: Int = 1 << 20, connectionTimeoutSeconds: Int = 30,
                maxConnections: Int = 256, maxConnectionsPerAddress: Int = 64, headerTimeoutSeconds: Int = 10,
                tlsCertificatePEM: String? = nil, tlsKeyPEM: String? = nil,
                admit: (@Sendable (HTTPRequest) -> BodyAdmission)? = nil, onQuiet: (@Sendable () -> Void)? = nil,
                minBodyBytesPerSecond: Int = 1024, bodyGraceSeconds: Int = 10) {
        self.minBodyBytesPerSecond = minBodyBytesPerSecond; self.bodyGraceSeconds = bodyGraceSeconds
        self.host = host; self.port = port; self.maxBodyBytes = maxBodyBytes
        self.connectionTimeoutSeconds = connectionTimeoutSeconds; self.maxConnections = maxConnections
        self.maxConnectionsPerAddress = maxConnectionsPerAddress; self.headerTimeoutSeconds = headerTimeoutSeconds
        self.tlsCertificatePEM = tlsCertificatePEM; self.tlsKeyPEM = tlsKeyPEM
        self.admit = admit; self.onQuiet = onQuiet
    }
}

/// What becomes of a request's body, decided from its headers alone.
public enum BodyAdmission: Sendable {
    /// Kept in memory, at most `maxBytes` (more: the `tooLarge` answer).
    case buffer(maxBytes: Int)
    /// Kept in memory like `buffer`; `done` runs once when the request is over (a slot for big
    /// bodies given back).
    case bufferCounted(maxBytes: Int, done: @Sendable () -> Void)
    /// Written to the sink as it arrives, at most `maxBytes`.
    case stream(any RequestBodySink, maxBytes: Int)
    /// Refused from the headers: a body that comes anyway is read and dropped, never kept, and
    /// this is the answer (at once to a client that waits for "100 Continue").
    case refuse(HTTPResponse)
}

/// A connection pointer that may cross to the task answering it (MHD's suspend/resume is thread-safe).
struct ConnectionHandle: @unchecked Sendable { let raw: OpaquePointer }

final class ServerCore: @unchecked Sendable {
    let handler: HTTPHandler
    let tooLarge: @Sendable (HTTPRequest, Int) -> HTTPResponse
    let maxBody: Int
    let admit: (@Sendable (HTTPRequest) -> BodyAdmission)?
    // Set once before the daemon starts.
    var minBodyBytesPerSecond = 1024
    var bodyGraceSeconds = 10
    let watch: ConnectionWatch
    /// Connections handed over by an upgrade: no header deadline applies to them any more.
    let upgradedConnections = Mutex(Set<UInt>())
    /// Open connections and requests served, for the quiet hook (memory given back after a burst).
    struct Activity { var open = 0; var served: UInt64 = 0; var servedAtLastQuiet: UInt64 = 0 }
    let activity = Mutex(Activity())
    var onQuiet: (@Sendable () -> Void)?
    var quietAfterRequests: UInt64 = 1000
    struct Parking {
        var suspended: [ObjectIdentifier: ConnectionHandle] = [:]
        /// Upgraded connections still owned by a handler: MHD must not stop before each is closed.
        var upgraded: [ObjectIdentifier: (handle: ConnectionHandle, socket: Int32)] = [:]
        var stopping = false
    }
    /// Connections suspended while a handler or a stream works. Suspend and resume happen under
    /// this lock, and never once the daemon is stopping (its connections may be freed by then).
    let parking = Mutex(Parking())

    /// Suspends `connection`; false when the daemon is stopping (then it is not suspended).
    func park(_ id: ObjectIdentifier, _ connection: ConnectionHandle) -> Bool {
        parking.withLock { p in
            if p.stopping { return false }
            p.suspended[id] = connection
            MHD_suspend_connection(connection.raw)
            return true
        }
    }

    func unpark(_ id: ObjectIdentifier) {
        parking.withLock { p in
            guard !p.stopping, let c = p.suspended.removeValue(forKey: id) else { return }
            MHD_resume_connection(c.raw)
        }
    }

    /// Hands an upgraded connection back to MHD, once (by the handler, or by `stop`).
    func closeUpgraded(_ id: ObjectIdentifier) {
        parking.withLock { p in
            if let u = p.upgraded.removeValue(forKey: id) { rte_mhd_upgrade_close(u.handle.raw) }
        }
    }

    var isStopping: Bool { parking.withLock { $0.stopping } }
    init(handler: @escaping HTTPHandler, tooLarge: @escaping @Sendable (HTTPRequest, Int) -> HTTPResponse, maxBody: Int,
         admit: (@Sendable (HTTPRequest) -> BodyAdmission)? = nil, watch: ConnectionWatch) {
        self.handler = handler; self.tooLarge = tooLarge; self.maxBody = maxBody
        self.admit = admit; self.watch = watch
    }
}

/// The task answering a request, for the hang-up watch to cancel.
final class HandlerTask: Sendable {
    private let task = Mutex<Task<Void, Never>?>(nil)
    private let cancelled = Mutex(false)
    func set(_ t: Task<Void, Never>) {
        let early = cancelled.withLock { $0 }
        task.withLock { $0 = t }
        if early { t.cancel() }
    }
    func cancel() {
        cancelled.withLock { $0 = true }
        task.withLock { $0 }?.cancel()
    }
}

private func monotonicNow() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

func connectionKey(_ c: OpaquePointer) -> UInt { UInt(bitPattern: Int(bitPattern: UnsafeRawPointer(c))) }

private func connectionNotify(_ cls: UnsafeMutableRawPointer?, _ connection: OpaquePointer?, _ started: Int32) {
    guard let cls, let connection else { return }
    let core = Unmanaged<ServerCore>.fromOpaque(cls).takeUnretainedValue()
    let key = connectionKey(connection)
    if started != 0 {
        core.activity.withLock { $0.open += 1 }
        core.watch.expectHeaders(key, fd: rte_mhd_connection_fd(connection))
    } else {
        core.watch.forget(key)
        _ = core.upgradedConnections.withLock { $0.remove(key) }
        // The last connection of a burst closed: say so once per `quietAfterRequests` requests.
        let quiet = core.activity.withLock { a -> Bool in
            a.open -= 1
            guard a.open == 0, a.served - a.servedAtLastQuiet >= core.quietAfterRequests else { return false }
            a.servedAtLastQuiet = a.served
            return true
        }
        if quiet { core.onQuiet?() }
    }
}

final class RequestContext: @unchecked Sendable {
    var request: HTTPRequest
    var maxBody = 0
    /// 64-bit: a streamed upload may pass 2 GiB on a 32-bit board.
    var streamed: Int64 = 0
    var sinkRefused = false
    var tooLarge = false
    /// The answer decided from the headers (`BodyAdmission.refuse`).
    var refusal: HTTPResponse?
    /// When the headers arrived (monotonic ns) and how much body came since: the body's rate.
    var headersAt: UInt64 = 0
    var received: Int64 = 0
    var started = false
    let response = Mutex<HTTPResponse?>(nil)
    var done: (@Sendable () -> Void)?
    init(request: HTTPRequest) { self.request = request }
    deinit { done?() }
}

final class StreamBox: @unchecked Sendable {
    let writer: ResponseStreamWriter
    let connection: ConnectionHandle
    let core: ServerCore
    let suspended = Mutex(false)
    init(writer: ResponseStreamWriter, connection: ConnectionHandle, core: ServerCore) {
        self.writer = writer; self.connection = connection; self.core = core
    }
    func wake() {
        suspended.withLock { s in
            if s {
                s = false
                core.unpark(ObjectIdentifier(self))
            }
        }
    }
}

final class UpgradeBox: @unchecked Sendable {
    let handler: @Sendable (UpgradedConnection) async -> Void
    let core: ServerCore
    init(_ handler: @escaping @Sendable (UpgradedConnection) async -> Void, core: ServerCore) { self.handler = handler; self.core = core }
}

private func headerCollector(_ cls: UnsafeMutableRawPointer?, _ kind: MHD_ValueKind, _ key: UnsafePointer<CChar>?,
                             _ value: UnsafePointer<CChar>?) -> MHD_Result {
    guard let cls, let key else { return rte_mhd_yes() }
    let dict = cls.assumingMemoryBound(to: [String: String].self)
    dict.pointee[String(cString: key).lowercased()] = value.map { String(cString: $0) } ?? ""
    return rte_mhd_yes()
}

private func queryCollector(_ cls: UnsafeMutableRawPointer?, _ kind: MHD_ValueKind, _ key: UnsafePointer<CChar>?,
                            _ value: UnsafePointer<CChar>?) -> MHD_Result {
    guard let cls, let key else { return rte_mhd_yes() }
    let dict = cls.assumingMemoryBound(to: [String: String].self)
    dict.pointee[String(cString: key)] = value.map { String(cString: $0) } ?? ""
    return rte_mhd_yes()
}

private func streamReader(_ cls: UnsafeMutableRawPointer?, _ pos: UInt64, _ buf: UnsafeMutablePointer<CChar>?, _ max: Int) -> Int {
    let box = Unmanaged<StreamBox>.fromOpaque(cls!).takeUnretainedValue()
    while true {
        switch box.writer.take(max: max) {
        case .bytes(let bytes):
            bytes.withUnsafeBytes { memcpy(buf!, $0.baseAddress!, bytes.count) }
            return bytes.count
        case .end:
            return rte_mhd_reader_end()
        case .none:
            // Nothing yet: park the connection (returning 0 alone would spin the epoll thread).
            let parked = box.suspended.withLock { s -> Bool in
                if box.writer.state.withLock({ !$0.buffer.isEmpty || $0.finished || $0.closed }) { return false }
                guard box.core.park(ObjectIdentifier(box), box.connection) else { return false }
                s = true
                return true
            }
            if parked { return 0 }
            if box.writer.isClosed || box.core.isStopping { return rte_mhd_reader_end() }
        }
    }
}

private func streamFree(_ cls: UnsafeMutableRawPointer?) {
    let box = Unmanaged<StreamBox>.fromOpaque(cls!).takeRetainedValue()
    box.writer.close()
}

private func upgradeHandler(_ cls: UnsafeMutableRawPointer?, _ connection: OpaquePointer?, _ reqCls: UnsafeMutableRawPointer?,
                            _ extraIn: UnsafePointer<CChar>?, _ extraInSize: Int, _ sock: Int32, _ urh: OpaquePointer?) {
    let box = Unmanaged<UpgradeBox>.fromOpaque(cls!).takeRetainedValue()
    if let connection {
        let key = connectionKey(connection)
        box.core.upgradedConnections.withLock { _ = $0.insert(key) }
        box.core.watch.forget(key)
    }
    var initial: [UInt8] = []
    if let extraIn, extraInSize > 0 {
        initial = Array(UnsafeRawBufferPointer(start: extraIn, count: extraInSize))
    }
    let core = box.core
    let id = ObjectIdentifier(box)
    let connection = UpgradedConnection(socket: sock, initialBytes: initial)
    let accepted = core.parking.withLock { p -> Bool in
        if p.stopping { return false }
        p.upgraded[id] = (ConnectionHandle(raw: urh!), sock)
        return true
    }
    guard accepted else { rte_mhd_upgrade_close(urh!); return }
    Task.detached {
        await box.handler(connection)
        core.closeUpgraded(id)
    }
}

private func queue(_ response: HTTPResponse, on connection: OpaquePointer, core: ServerCore) -> MHD_Result {
    let mhdResponse: OpaquePointer?
    var headers = response.headers
    switch response.body {
    case .bytes(let bytes):
        mhdResponse = bytes.withUnsafeBytes { rte_mhd_response_copy(bytes.count, $0.baseAddress) }
    case .stream(let producer):
        let writer = ResponseStreamWriter()
        let box = StreamBox(writer: writer, connection: ConnectionHandle(raw: connection), core: core)
        writer.onData.withLock { $0 = { [weak box] in box?.wake() } }
        mhdResponse = rte_mhd_response_stream(streamReader, Unmanaged.passRetained(box).toOpaque(), streamFree)
        Task.detached {
            await producer(writer)
            writer.finish()
        }
    case .upgrade(let protocolName, let handler):
        let box = UpgradeBox(handler, core: core)
        mhdResponse = rte_mhd_response_upgrade(upgradeHandler, Unmanaged.passRetained(box).toOpaque())
        headers.append(("Upgrade", protocolName))
    case .file(let fd, let offset, let length):
        mhdResponse = rte_mhd_response_file(length, fd, offset)
    }
    guard let mhdResponse else { return rte_mhd_no() }
    for (name, value) in headers { MHD_add_response_header(mhdResponse, name, value) }
    // Every answer is what its Content-Type says (no browser guessing a problem document into HTML).
    if !headers.contains(where: { $0.0.lowercased() == "x-content-type-options" }) {
        MHD_add_response_header(mhdResponse, "X-Content-Type-Options", "nosniff")
    }
    let result = MHD_queue_response(connection, UInt32(response.status), mhdResponse)
    MHD_destroy_response(mhdResponse)
    return result
}

private func accessHandler(_ cls: UnsafeMutableRawPointer?, _ connection: OpaquePointer?, _ url: UnsafePointer<CChar>?,
                           _ method: UnsafePointer<CChar>?, _ version: UnsafePointer<CChar>?, _ uploadData: UnsafePointer<CChar>?,
                           _ uploadDataSize: UnsafeMutablePointer<Int>?,
                           _ reqCls: UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> MHD_Result {
    guard let cls, let connection, let reqCls, let uploadDataSize else { return rte_mhd_no() }
    let core = Unmanaged<ServerCore>.fromOpaque(cls).takeUnretainedValue()
    guard let existing = reqCls.pointee else {
        core.watch.headersArrived(connectionKey(connection))
        var headers: [String: String] = [:]
        _ = withUnsafeMutablePointer(to: &headers) { rte_mhd_headers(connection, headerCollector, $0) }
        var query: [String: String] = [:]
        _ = withUnsafeMutablePointer(to: &query) { rte_mhd_query(connection, queryCollector, $0) }
        var address = [CChar](repeating: 0, count: 64)
        rte_mhd_client_address(connection, &address, address.count)
        let request = HTTPRequest(method: method.map { String(cString: $0) } ?? "GET", path: url.map { String(cString: $0) } ?? "/",
                                  query: query, headers: headers, body: [],
                                  remoteAddress: String(decoding: address.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        let ctx = RequestContext(request: request)
        ctx.headersAt = monotonicNow()
        switch core.admit?(request) ?? .buffer(maxBytes: core.maxBody) {
        case .buffer(let max): ctx.maxBody = max
        case .bufferCounted(let max, let done): ctx.maxBody = max; ctx.done = done
        case .stream(let sink, let max): ctx.request.upload = sink; ctx.maxBody = max
        case .refuse(let answer): ctx.refusal = answer; ctx.tooLarge = true
        }
        reqCls.pointee = Unmanaged.passRetained(ctx).toOpaque()
        let length = headers["content-length"].flatMap { Int64($0) }
        if let length, length > Int64(ctx.maxBody), ctx.refusal == nil { ctx.tooLarge = true }
        if ctx.tooLarge {
            ctx.request.upload?.abandon()
            ctx.request.upload = nil
            // A client that waits for "100 Continue" (or sends no body) is answered now and never
            // sends the body. MHD accepts a response only before the body or after all of it, so
            // others are answered once their body is in, read and dropped (at the minimum rate).
            if headers["expect"]?.lowercased() == "100-continue" || length == 0 {
                return queue(ctx.refusal ?? core.tooLarge(ctx.request, ctx.maxBody), on: connection, core: core)
            }
        }
        return rte_mhd_yes()
    }
    let ctx = Unmanaged<RequestContext>.fromOpaque(existing).takeUnretainedValue()
    if uploadDataSize.pointee > 0 {
        ctx.received += Int64(uploadDataSize.pointee)
        // Too slow on average once the grace is over: cut (MHD_NO closes the connection).
        let elapsed = Int64(monotonicNow() - ctx.headersAt) / 1_000_000
        let grace = Int64(core.bodyGraceSeconds) * 1000
        if elapsed > grace, ctx.received * 1000 < Int64(core.minBodyBytesPerSecond) * (elapsed - grace) {
            ctx.request.upload?.abandon()
            ctx.request.upload = nil
            return rte_mhd_no()
        }
        if ctx.tooLarge {
            uploadDataSize.pointee = 0
            return rte_mhd_yes()
        }
        if let sink = ctx.request.upload {
            // Streamed: counted here, kept by the sink (a refusal keeps the connection, drops the rest).
            ctx.streamed += Int64(uploadDataSize.pointee)
            if ctx.streamed > Int64(ctx.maxBody) {
                ctx.tooLarge = true
                sink.abandon()
            } else if let uploadData, !sink.write(UnsafeRawBufferPointer(start: uploadData, count: uploadDataSize.pointee)) {
                ctx.sinkRefused = true
            }
        } else if ctx.request.body.count + uploadDataSize.pointee > ctx.maxBody {
            ctx.tooLarge = true
            ctx.request.body = []
        } else if let uploadData {
            ctx.request.body.append(contentsOf: UnsafeRawBufferPointer(start: uploadData, count: uploadDataSize.pointee))
        }
        uploadDataSize.pointee = 0
        return rte_mhd_yes()
    }
    if let response = ctx.response.withLock({ r in let x = r; r = nil; return x }) {
        return queue(response, on: connection, core: core)
    }
    if ctx.tooLarge { return queue(ctx.refusal ?? core.tooLarge(ctx.request, ctx.maxBody), on: connection, core: core) }
    if !ctx.started {
        ctx.started = true
        guard core.park(ObjectIdentifier(ctx), ConnectionHandle(raw: connection)) else { return rte_mhd_no() }
        let request = ctx.request
        let key = connectionKey(connection)
        let running = HandlerTask()
        // MHD does not poll a suspended connection: a client that leaves while its handler waits
        // (a long poll in the lease queue) is noticed here, and the handler is cancelled.
        core.watch.watchHangup(key, fd: rte_mhd_connection_fd(connection)) { running.cancel() }
        running.set(Task.detached {
            let response = await core.handler(request)
            core.watch.unwatchHangup(key)
            ctx.response.withLock { $0 = response }
            core.unpark(ObjectIdentifier(ctx))
        })
    }
    return rte_mhd_yes()
}

private func completedHandler(_ cls: UnsafeMutableRawPointer?, _ connection: OpaquePointer?,
                              _ reqCls: UnsafeMutablePointer<UnsafeMutableRawPointer?>?, _ toe: MHD_RequestTerminationCode) {
    if let cls { Unmanaged<ServerCore>.fromOpaque(cls).takeUnretainedValue().activity.withLock { $0.served += 1 } }
    // A kept-alive connection waits for its next request: the header deadline starts again.
    if let cls, let connection, rte_mhd_completed_ok(toe) != 0 {
        let core = Unmanaged<ServerCore>.fromOpaque(cls).takeUnretainedValue()
        let key = connectionKey(connection)
        if !core.upgradedConnections.withLock({ $0.contains(key) }) {
            core.watch.expectHeaders(key, fd: rte_mhd_connection_fd(connection))
        }
    }
    guard let reqCls, let p = reqCls.pointee else { return }
    let ctx = Unmanaged<RequestContext>.fromOpaque(p).takeUnretainedValue()
    // A body that never reached its handler (the client left mid-upload) is thrown away.
    if !ctx.started { ctx.request.upload?.abandon() }
    Unmanaged<RequestContext>.fromOpaque(p).release()
    reqCls.pointee = nil
}

/// HTTP/1.1 server on libmicrohttpd: one internal epoll thread, suspend/resume around async
/// handlers, chunked streaming responses, protocol upgrade, body and connection limits.
public final class HTTPServer: Sendable {
    private nonisolated(unsafe) let daemon: OpaquePointer
    private let core: ServerCore
    private let retained: Unmanaged<ServerCore>
    private nonisolated(unsafe) let notify: UnsafeMutablePointer<rte_mhd_connection_notify>
    public let port: Int
    private let stopped = Mutex(false)

    public init(options: HTTPServerOptions, handler: @escaping HTTPHandler,
                tooLarge: @escaping @Sendable (HTTPRequest, Int) -> HTTPResponse) throws(HTTPServerError) {
        let watch: ConnectionWatch
        do { watch = try ConnectionWatch(headerTimeoutSeconds: options.headerTimeoutSeconds) } catch {
            throw HTTPServerError(description: "cannot start the connection watch: \(error)")
        }
        core = ServerCore(handler: handler, tooLarge: tooLarge, maxBody: options.maxBodyBytes, admit: options.admit, watch: watch)
        core.minBodyBytesPerSecond = options.minBodyBytesPerSecond
        core.bodyGraceSeconds = options.bodyGraceSeconds
        core.onQuiet = options.onQuiet
        core.quietAfterRequests = UInt64(max(1, options.quietAfterRequests))
        retained = Unmanaged.passRetained(core)
        notify = .allocate(capacity: 1)
        notify.initialize(to: rte_mhd_connection_notify(handler: connectionNotify, cls: retained.toOpaque()))
        let tls = options.tlsCertificatePEM != nil && options.tlsKeyPEM != nil
        // A libmicrohttpd built without HTTPS (a small board build) says so here, not as an errno.
        if tls && rte_mhd_supports_tls() == 0 {
            watch.stop()
            notify.deallocate()
            retained.release()
            throw HTTPServerError(description: "this libmicrohttpd was built without HTTPS (configure --disable-https): remove http.tls from the config, or link one with TLS")
        }
        let started = rte_mhd_start(options.host, UInt16(options.port), tls ? 1 : 0, accessHandler, retained.toOpaque(),
                                    completedHandler, UInt32(options.connectionTimeoutSeconds), UInt32(options.maxConnections),
                                    UInt32(options.maxConnectionsPerAddress), notify,
                                    options.tlsCertificatePEM ?? "", options.tlsKeyPEM ?? "")
        guard let started else {
            let code = errno
            watch.stop()
            notify.deallocate()
            retained.release()
            throw HTTPServerError(description: "cannot listen on \(options.host):\(options.port): \(String(cString: strerror(code)))")
        }
        daemon = started
        port = Int(rte_mhd_bound_port(started))
    }

    public static var libraryVersion: String { String(cString: MHD_get_version()) }

    /// Requests completed since the server started.
    public var requestsServed: UInt64 { core.activity.withLock { $0.served } }

    public func stop() {
        if stopped.withLock({ s in let was = s; s = true; return was }) { return }
        // First: connections ended by this stop are not clients leaving (a queued lease request
        // must survive a restart, not be cancelled by it).
        core.watch.stop()
        // MHD must not stop with suspended connections: wake them so they end, and let no
        // handler finishing later touch a connection that is gone.
        let sockets = core.parking.withLock { p -> [Int32] in
            p.stopping = true
            for (_, c) in p.suspended { MHD_resume_connection(c.raw) }
            p.suspended.removeAll()
            return p.upgraded.values.map(\.socket)
        }
        // Upgraded connections (consoles) must be handed back before MHD stops: end their
        // sockets so the handlers return and close them; close any straggler after 2 s.
        for socket in sockets { shutdown(socket, Int32(SHUT_RDWR)) }
        var waited = 0
        while waited < 2000 && core.parking.withLock({ !$0.upgraded.isEmpty }) {
            usleep(1000)
            waited += 1
        }
        core.parking.withLock { p in
            for (_, u) in p.upgraded { rte_mhd_upgrade_close(u.handle.raw) }
            p.upgraded.removeAll()
        }
        MHD_stop_daemon(daemon)
        notify.deallocate()
        retained.release()
    }
}
