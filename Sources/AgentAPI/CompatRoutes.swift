import Auth
import Configuration
import GPIO
import HTTPServer
import JSONDocument
import Leases

/// The RTE's own REST API (3mdeb/RteCtrl), as its clients (osfv_cli, the `rtectrl.robot`
/// keywords, `scripts/rte_ctrl`) call it, translated onto the same GPIO controller and lease book
/// as the native API:
/// - `GET /api/v1/gpio` → every numbered line, `GET /api/v1/gpio/{id}` →
///   `{"id": 9, "state": 1, "description": "apu_pwr", "direction": "out"}` (plus `role`).
/// - `PATCH /api/v1/gpio/{id}` `{"state": N, "direction": "in"|"out", "time": SECONDS}`, any
///   Content-Type: answers at once; with a `time`, the opposite state is written that many seconds
///   later unless another write to the line comes first.
/// - Errors keep the reference's statuses and `{"error": …}` text (403 "bad parameters",
///   404 "id not found") inside an RFC 9457 problem document.
///
/// `state` is the line's level as RteCtrl reports it: for open-collector outputs (1–12 on an
/// RTE) 1 means "driven low"; for the relay and the inputs 1 means "high".
/// These clients send no tokens: a write is accepted from the address the current lease is bound
/// to, or, when nobody holds the device, from `compat.trusted_networks` if
/// `compat.allow_anonymous_writes` is on.
enum CompatRoutes {
    /// RteCtrl's own error strings; its clients print them.
    static let badParameters = "bad parameters"
    static let idNotFound = "id not found"
    /// Longest timed write accepted (RteCtrl takes any; a day is beyond any press or CMOS clear).
    static let maxTimeSeconds: UInt64 = 86_400

    struct LineView: Encodable {
        var id: Int
        var state: Int
        var description: String
        var direction: String
        var role: String
    }

    static func view(_ s: GPIOLineStatus, _ config: GPIOLineConfig) -> LineView? {
        guard let n = s.compatNumber, let active = s.active else { return nil }
        let high = active != s.activeLow
        let state = config.compatOpenCollector ? (high ? 0 : 1) : (high ? 1 : 0)
        return LineView(id: n, state: state, description: config.compatName ?? s.role,
                        direction: s.direction == "input" ? "in" : "out", role: s.role)
    }

    /// What a PATCH asks for, read as RteCtrl's decoder reads it (unknown fields ignored, keys
    /// matched without regard to case, `state` and `time` unsigned integers written without a
    /// fraction or exponent).
    struct Write: Equatable {
        var state: UInt64 = 0
        var direction: LineDirection?
        var seconds: UInt64 = 0

        static func parse(_ body: [UInt8]) -> Write? {
            guard let members = RawJSONObject.members(body) else { return nil }
            var w = Write()
            func field(_ name: String) -> RawJSONObject.Member? {
                // Go's decoder prefers the exact key, then any case-insensitive match; the last one wins.
                members.last { $0.key == name } ?? members.last { $0.key.lowercased() == name }
            }
            if let m = field("state") {
                if m.raw != "null" { guard let n = RawJSONObject.unsigned(m.raw) else { return nil }; w.state = n }
            }
            if let m = field("time") {
                if m.raw != "null" {
                    guard let n = RawJSONObject.unsigned(m.raw), n <= maxTimeSeconds else { return nil }
                    w.seconds = n
                }
            }
            if let m = field("direction"), m.raw != "null" {
                guard case .string(let d)? = m.value else { return nil }
                switch d {
                case "": break  // no change, as in RteCtrl
                case "out", "o": w.direction = .output
                case "in", "i": w.direction = .input
                // RteCtrl turns any other word into "in"; a typo silently making an output an input
                // is worse than an error, so it is refused.
                default: return nil
                }
            }
            return w
        }
    }

    static func failure(_ status: Int, _ error: String, _ detail: String, type: String = "compat-error") -> Problem {
        Problem(status, type, error.prefix(1).uppercased() + error.dropFirst(), detail, extra: ["error": .string(error)])
    }

    static func add(_ router: inout Router, _ ctx: APIContext, _ g: Guard) {
        guard ctx.config.compat.enabled, let gpio = ctx.gpio else { return }

        /// The line numbered `id` and its config, or 404 "id not found".
        @Sendable func lookup(_ r: HTTPRequest) async throws -> (GPIOLineStatus, GPIOLineConfig) {
            let text = r.pathParameters["n"] ?? ""
            guard let n = Int(text), let s = await gpio.status().first(where: { $0.compatNumber == n }),
                  let config = await gpio.config(of: s.role) else {
                let numbered = await gpio.status().compactMap(\.compatNumber).sorted().map(String.init).joined(separator: ", ")
                throw failure(404, idNotFound, "no line has compat_number \(text); numbered lines: \(numbered)", type: "not-found")
            }
            return (s, config)
        }

        router.add(.GET, "/api/v1/gpio", g.open { _ in
            var out: [LineView] = []
            for s in await gpio.status() {
                if let c = await gpio.config(of: s.role), let v = view(s, c) { out.append(v) }
            }
            return json(200, out.sorted { $0.id < $1.id })
        })

        router.add(.GET, "/api/v1/gpio/{n}", g.open { r in
            let (s, c) = try await lookup(r)
            guard let v = view(s, c) else { throw gpioProblem(.unknownRole(s.role)) }
            return json(200, v)
        })

        router.add(.PATCH, "/api/v1/gpio/{n}", g.open { r in
            // Who may write is decided before the number is looked up: a caller without the right
            // learns nothing about which lines exist.
            try await authorizeLegacyWrite(from: r.remoteAddress, ctx)
            // Lines are held while the RTE drives the SPI bus, for legacy clients as for the native API.
            do { try await refuseWhileFlashing(ctx) } catch let problem as Problem {
                var busy = problem
                busy.extra["error"] = .string("device busy")  // RteCtrl clients print "error"
                throw busy
            }
            let (s, c) = try await lookup(r)
            guard let w = Write.parse(r.body) else {
                throw failure(403, badParameters,
                              "the body must be a JSON object with \"state\" (unsigned integer), optional \"direction\" (\"in\" or \"out\") and \"time\" (whole seconds, at most \(maxTimeSeconds))")
            }
            // The requested level as the line sees it: state 0 writes 0, any other integer writes 1.
            let high = c.compatOpenCollector ? w.state == 0 : w.state != 0
            let active = high != c.activeLow
            do {
                if let d = w.direction {
                    do {
                        try await gpio.setDirection(s.role, d, active: active)
                    } catch let error as GPIOError where error.kind == .inputOnly {
                        ctx.logger.warning("compat: PATCH /api/v1/gpio/\(c.compatNumber ?? -1) from \(r.remoteAddress) refused: \(error)")
                        throw failure(403, badParameters, "\(error)")
                    }
                }
                // RteCtrl ignores the state of an input.
                if try await gpio.direction(of: s.role) == .output {
                    if w.seconds > 0 {
                        try await gpio.write(s.role, active: active, revertAfter: .seconds(Int64(w.seconds)))
                    } else {
                        try await gpio.set(s.role, active: active)
                    }
                }
            } catch let e as GPIOError {
                let p = gpioProblem(e)
                throw Problem(p.status, p.type, p.title, p.detail, extra: ["error": .string("can't read GPIO states")])
            }
            ctx.metrics.count("compat_gpio_writes_total", labels: ["line": s.role])
            guard let now = await gpio.status().first(where: { $0.role == s.role }), let v = view(now, c) else {
                throw gpioProblem(.unknownRole(s.role))
            }
            return json(200, v)
        })
    }

    /// Lease safety for clients that carry no token: the holder is known by address.
    static func authorizeLegacyWrite(from client: String, _ ctx: APIContext) async throws {
        if await ctx.leases.lease(boundTo: client) != nil { return }
        if let current = await ctx.leases.snapshot.current { throw leasedElsewhere(current) }
        guard ctx.config.compat.allowAnonymousWrites, address(client, isIn: ctx.config.compat.trustedNetworks) else {
            throw untrusted(client, ctx)
        }
    }

    static func leasedElsewhere(_ current: Lease) -> Problem {
        Problem(423, "device-leased", "Device is leased by someone else",
                "\(current.holder) holds the device until \(current.expiresAt.iso8601) (\(current.purpose)); a legacy client may change it "
                    + "only from the address the lease is bound to (POST /api/v1/leases {\"bind_address\": true})",
                extra: Problem.leaseInfo(current).merging(["error": .string("device leased")]) { a, _ in a })
    }

    static func untrusted(_ client: String, _ ctx: APIContext) -> Problem {
        Problem(403, "untrusted-address", "Not allowed from this address",
                "anonymous legacy writes are accepted only from compat.trusted_networks "
                    + "(\(ctx.config.compat.trustedNetworks.joined(separator: ", "))); take a lease bound to \(client) instead",
                extra: ["error": .string("not allowed from this address")])
    }
}
