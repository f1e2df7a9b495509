import Configuration
import Leases
import POSIXIO
import Serial
import Synchronization
import Auth
#if canImport(Glibc)
import Glibc
#endif

/// The ser2net-style console: a plain TCP port for telnet, Robot Framework's Telnet library and
/// picocom-over-socat. Everyone connected sees the DUT's output. Such clients send no tokens, so
/// typing is allowed only to a connection from the address the current lease is bound to
/// (`POST /api/v1/leases {"bind_address": true}` or `POST /api/v1/leases/current/bind`); when
/// nobody holds the device, `compat.allow_anonymous_writes` from `compat.trusted_networks` decides.
public final class ConsolePort: Sendable {
    public let port: Int
    private let listener: TCPListener
    private let connections = Mutex<[Int32: Task<Void, Never>]>([:])
    private let stopped = Mutex(false)

    /// `telnet` nil: as `http.console_protocol` says.
    public init(host: String, port: Int, telnet: Bool? = nil, ctx: APIContext) throws(Errno) {
        listener = try TCPListener.listen(host: host, port: port)
        self.port = listener.port
        let listener = self.listener
        let telnet = telnet ?? ctx.config.http.consoleTelnet
        let greeting = "[rte-agent] \(ctx.config.dut.name) console; you may type when your lease is bound to this address\r\n"
        startThread(name: "console-port") { [weak self] in
            while true {
                guard let (fd, peer) = try? listener.accept() else { return }
                guard let self, !self.stopped.withLock({ $0 }) else { close(fd.rawValue); return }
                let socket = fd.rawValue
                let task = Task {
                    // Char-at-a-time mode for telnet clients, so Ctrl-B goes out at once.
                    if telnet { ConsoleBridge.sendAll(socket, [0xff, 0xfb, 0x03, 0xff, 0xfb, 0x01]) }
                    ConsoleBridge.sendAll(socket, Array(greeting.utf8))
                    await ConsoleBridge.run(socket: socket, serial: ctx.serial, capture: ctx.capture, filterTelnet: telnet) {
                        await ConsolePort.mayType(peer: peer, ctx: ctx)
                    }
                    self.connections.withLock { _ = $0.removeValue(forKey: socket) }
                    close(socket)
                }
                self.connections.withLock { $0[socket] = task }
            }
        }
    }

    static func mayType(peer: String, ctx: APIContext) async -> Bool {
        if await ctx.leases.lease(boundTo: peer) != nil { return true }
        if await ctx.leases.isLeased() { return false }
        return ctx.config.compat.allowAnonymousWrites && address(peer, isIn: ctx.config.compat.trustedNetworks)
    }

    public func stop() async {
        stopped.withLock { $0 = true }
        listener.close()
        let open = connections.withLock { c in c }
        for (socket, _) in open { shutdown(socket, Int32(SHUT_RDWR)) }
        for (_, task) in open { await task.value }
    }
}
