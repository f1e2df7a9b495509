import Auth
import GPIO
import HTTPServer
import Leases

/// The RTE's existing REST API (what 3mdeb's `rtectrl`, osfv_cli and Robot Framework suites
/// call), served next to the native one so those keep working unchanged:
/// `GET /api/v1/gpio`, `GET /api/v1/gpio/{n}` → `{"state": 0|1, ...}`,
/// `PATCH /api/v1/gpio/{n}` with `{"state": 0|1, "direction": "out", "time": SECONDS}`.
///
/// Numbers come from each line's `compat_number`. For open-collector lines (1–12 on an RTE)
/// state 1 means "driven low"; for regular lines (relay 0, 13–19) state 1 means "high".
/// These clients send no tokens: a write is accepted from the address the current lease is bound
/// to, or, when nobody holds the device, from `compat.trusted_networks` if
/// `compat.allow_anonymous_writes` is on.
enum CompatRoutes {
    struct LineView: Encodable {
        var id: Int
        var name: String
        var direction: String
        var state: Int
        var time: Double
    }

    static func view(_ s: GPIOLineStatus, openCollector: Bool) -> LineView? {
        guard let n = s.compatNumber, let active = s.active else { return nil }
        let high = active != s.activeLow
        let state = openCollector ? (high ? 0 : 1) : (high ? 1 : 0)
        return LineView(id: n, name: s.role, direction: s.direction == "input" ? "in" : "out", state: state, time: 0)
    }

    static func add(_ router: inout Router, _ ctx: APIContext, _ g: Guard) {
        guard ctx.config.compat.enabled, let gpio = ctx.gpio else { return }

        @Sendable func lookup(_ r: HTTPRequest) async throws -> (GPIOLineStatus, Bool) {
            guard let n = Int(r.pathParameters["n"] ?? "") else { throw Problem.notFound("GPIO numbers are integers") }
            let all = await gpio.status()
            guard let s = all.first(where: { $0.compatNumber == n }), let config = await gpio.config(of: s.role) else {
                throw Problem.notFound("no line has compat_number \(n); numbered lines: \(all.compactMap(\.compatNumber).sorted().map(String.init).joined(separator: ", "))")
            }
            return (s, config.compatOpenCollector)
        }

        router.add(.GET, "/api/v1/gpio", g.open { _ in
            var out: [LineView] = []
            for s in await gpio.status() {
                if let v = view(s, openCollector: await gpio.config(of: s.role)?.compatOpenCollector ?? false) { out.append(v) }
            }
            return json(200, out.sorted { $0.id < $1.id })
        })

        router.add(.GET, "/api/v1/gpio/{n}", g.open { r in
            let (s, oc) = try await lookup(r)
            guard let v = view(s, openCollector: oc) else { throw gpioProblem(.unknownRole(s.role)) }
            return json(200, v)
        })

        router.add(.PATCH, "/api/v1/gpio/{n}", g.open { r in
            let (s, oc) = try await lookup(r)
            try await authorizeLegacyWrite(from: r.remoteAddress, ctx)
            let body = try JSONBody(r, allowed: ["state", "direction", "time"])
            guard let state = try body.int("state"), state == 0 || state == 1 else {
                throw Problem.unprocessable("\"state\" must be 0 or 1")
            }
            if let d = try body.string("direction"), d != "out" {
                throw Problem.unprocessable("only \"direction\": \"out\" can be written; \(s.role) keeps its configured direction")
            }
            let seconds: Double
            switch body.value("time") {
            case nil, .null?: seconds = 0
            case .number(let t)? where t >= 0 && t <= 600: seconds = t
            default: throw Problem.unprocessable("\"time\" must be a number of seconds between 0 and 600")
            }
            let high = oc ? state == 0 : state == 1
            let active = high != s.activeLow
            do {
                if seconds > 0 {
                    try await gpio.hold(s.role, active: active, for: .milliseconds(Int64(seconds * 1000)))
                } else {
                    try await gpio.set(s.role, active: active)
                }
            } catch { throw problem(for: error) }
            ctx.metrics.count("compat_gpio_writes_total", labels: ["line": s.role])
            guard let now = await gpio.status().first(where: { $0.role == s.role }), let v = view(now, openCollector: oc) else {
                throw gpioProblem(.unknownRole(s.role))
            }
            return json(200, v)
        })
    }

    /// Lease safety for clients that carry no token: the holder is known by address.
    static func authorizeLegacyWrite(from client: String, _ ctx: APIContext) async throws {
        if await ctx.leases.lease(boundTo: client) != nil { return }
        if let current = await ctx.leases.snapshot.current {
            throw Problem(423, "device-leased", "Device is leased by someone else",
                          "\(current.holder) holds the device until \(current.expiresAt.iso8601) (\(current.purpose)); a legacy client may change it only from the address the lease is bound to (POST /api/v1/leases {\"bind_address\": true})",
                          extra: Problem.leaseInfo(current))
        }
        guard ctx.config.compat.allowAnonymousWrites, address(client, isIn: ctx.config.compat.trustedNetworks) else {
            throw Problem(403, "untrusted-address", "Not allowed from this address",
                          "anonymous legacy writes are accepted only from compat.trusted_networks (\(ctx.config.compat.trustedNetworks.joined(separator: ", "))); take a lease bound to \(client) instead")
        }
    }
}
