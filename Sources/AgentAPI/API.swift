import AgentClock
import Artifacts
import Auth
import Configuration
import Flashing
import GPIO
import HTTPServer
import Leases
import Logging
import Power
import Runs
import Serial

public let agentVersion = "0.1.0"

/// Everything the API reaches. Built by AgentRuntime from the config.
public struct APIContext: Sendable {
    public var config: AgentConfig
    public var clock: any AgentClock
    public var startedAt: Timestamp
    public var authenticator: Authenticator
    public var leases: LeaseBook
    public var power: any DUTPower
    public var gpio: GPIOController?
    public var serial: SerialPort
    public var capture: SerialCapture
    public var metrics: Metrics
    public var runs: RunEngine?
    public var flasher: Flasher?
    public var artifacts: ArtifactService?
    /// The agent's log (the journal under systemd): refusals worth an operator's attention.
    public var logger: Logger
    public var failedLogins: FailedLogins

    public init(config: AgentConfig, clock: any AgentClock, startedAt: Timestamp, authenticator: Authenticator, leases: LeaseBook,
                power: any DUTPower, gpio: GPIOController?, serial: SerialPort, capture: SerialCapture, metrics: Metrics,
                runs: RunEngine? = nil, flasher: Flasher? = nil, artifacts: ArtifactService? = nil,
                logger: Logger = Logger(label: "rte-agent", factory: { _ in SwiftLogNoOpLogHandler() })) {
        self.config = config; self.clock = clock; self.startedAt = startedAt; self.authenticator = authenticator
        self.leases = leases; self.power = power; self.gpio = gpio; self.serial = serial; self.capture = capture
        self.metrics = metrics; self.runs = runs; self.flasher = flasher; self.artifacts = artifacts; self.logger = logger
        failedLogins = FailedLogins(clock: clock)
    }
}

func json<T: Encodable>(_ status: Int, _ value: T, headers: [(String, String)] = []) -> HTTPResponse {
    let body = (try? JSONCoding.encode(value, keys: .snakeCase)) ?? Array("{}".utf8)
    return HTTPResponse(status: status, headers: [("Content-Type", "application/json")] + headers, body: .bytes(body))
}

/// A lease as the API shows it. The token only goes to whoever just got the lease.
struct LeaseView: Encodable {
    var id: String
    var holder: String
    var purpose: String
    var grantedAt: String
    var expiresAt: String
    var expiresInS: Int
    var boundAddress: String?
    var run: String?
    var token: String?

    init(_ l: Lease, now: Timestamp, withToken: Bool) {
        id = l.id; holder = l.holder; purpose = l.purpose; grantedAt = l.grantedAt.iso8601; expiresAt = l.expiresAt.iso8601
        expiresInS = max(0, Int((l.expiresAt - now).seconds.rounded(.up))); boundAddress = l.boundAddress; run = l.run
        token = withToken ? l.token : nil
    }
}

struct QueueView: Encodable {
    var id: String
    var user: String
    var purpose: String
    var ttlS: Int
    var enqueuedAt: String
    var waitUntil: String
}

/// Wraps handlers with authentication and lease checks; every failure becomes a problem document.
struct Guard: Sendable {
    let ctx: APIContext

    /// Who the request is from. `record`: a failure counts towards the address's lockout and is
    /// logged (false where the headers are looked at before the request is served).
    func identify(_ r: HTTPRequest, record: Bool = true) throws(Problem) -> Identity {
        guard ctx.authenticator.isEnabled else { return .anonymous }
        if let until = ctx.failedLogins.lockedUntil(r.remoteAddress) {
            let wait = max(1, Int((until - ctx.clock.now()).seconds.rounded(.up)))
            if record { ctx.metrics.count("auth_failures_total", labels: ["reason": "locked_out"]) }
            throw Problem(429, "too-many-failed-logins", "Too many failed logins",
                          "\(FailedLogins.burst) failed logins from \(r.remoteAddress) within \(Int(FailedLogins.window.seconds)) s: "
                              + "this address is refused for \(wait) s more; check the token you use",
                          headers: [("Retry-After", String(wait))])
        }
        do { return try ctx.authenticator.identify(authorization: r.header("authorization")) } catch {
            let problem: Problem
            switch error {
            case .missingToken: problem = Problem(401, "unauthenticated", "Authentication required", "send Authorization: Bearer <token>")
            case .invalidToken: problem = Problem(401, "invalid-token", "Invalid token", "the bearer token is not known to this agent")
            }
            // A missing token is a client that has not signed in yet, not a guess.
            if record, error == .invalidToken {
                ctx.metrics.count("auth_failures_total", labels: ["reason": "invalid_token"])
                ctx.logger.warning("\(ctx.failedLogins.record(r.remoteAddress, userAgent: r.header("user-agent"), reason: "invalid token"))")
            }
            throw problem
        }
    }

    func user(_ body: @escaping @Sendable (HTTPRequest, Identity) async throws -> HTTPResponse) -> HTTPHandler {
        { r in
            do { return try await body(r, try identify(r)) } catch { return problem(for: error).response }
        }
    }

    /// For calls that change the DUT: the user token and the current lease's token.
    func holder(_ body: @escaping @Sendable (HTTPRequest, Identity, Lease) async throws -> HTTPResponse) -> HTTPHandler {
        { r in
            do {
                let id = try identify(r)
                let lease: Lease
                do { lease = try await ctx.leases.authorize(credential(r, id)) } catch { throw problem(for: error) }
                return try await body(r, id, lease)
            } catch { return problem(for: error).response }
        }
    }

    /// The lease token when the request sends one; otherwise an engine identity acts as the holder.
    func credential(_ r: HTTPRequest, _ id: Identity) -> LeaseCredential {
        if let t = r.header("x-lease-token"), !t.isEmpty { return .token(t) }
        return id.engine ? .holder(id.user) : .token(nil)
    }

    func open(_ body: @escaping @Sendable (HTTPRequest) async throws -> HTTPResponse) -> HTTPHandler {
        { r in
            do { return try await body(r) } catch { return problem(for: error).response }
        }
    }
}

/// Maps any error a handler throws to its problem document.
func problem(for error: any Error) -> Problem {
    switch error {
    case let p as Problem: return p
    case let e as LeaseError: return Problem.from(e)
    case let e as PowerError: return powerProblem(e)
    case let e as GPIOError: return gpioProblem(e)
    case let e as RunError: return RunRoutes.problem(e)
    case let e as FlashError: return FlashRoutes.problem(e)
    default: return Problem(500, "internal", "Internal error", "\(error)")
    }
}

func powerProblem(_ e: PowerError) -> Problem {
    switch e.kind {
    case .refused: Problem(409, "power-refused", "Power action refused", e.detail)
    case .notWired: Problem(422, "not-wired", "Not wired", e.detail)
    case .hardware: Problem(503, "hardware-unavailable", "Hardware unavailable", e.detail)
    }
}

func gpioProblem(_ e: GPIOError) -> Problem {
    switch e.kind {
    case .unknownRole, .lineNotFound: Problem(404, "unknown-line", "Unknown line", e.description)
    case .notAnOutput: Problem(422, "not-an-output", "Line is an input", e.description)
    case .inputOnly: Problem(422, "input-only", "Line is input only", e.description)
    case .pressInProgress: Problem(409, "press-in-progress", "Press in progress", e.description)
    case .busy, .chipNotFound, .system: Problem(503, "hardware-unavailable", "Hardware unavailable", e.description)
    }
}

public enum AgentRoutes {
    /// Builds the router for the native API (and, when enabled, the RTE compatibility API).
    public static func router(_ ctx: APIContext) -> Router {
        var router = Router()
        let g = Guard(ctx: ctx)
        router.notFound = { r in Problem.notFound("no route for \(r.path)").response }
        router.methodNotAllowed = { r, allowed in
            var resp = Problem(405, "method-not-allowed", "Method not allowed", "\(r.method) is not allowed on \(r.path); allowed: \(allowed.joined(separator: ", "))").response
            resp.headers.append(("Allow", allowed.joined(separator: ", ")))
            return resp
        }

        router.add(.GET, "/api/v1/health", g.open { _ in json(200, ["status": "ok", "version": agentVersion]) })
        let document = OpenAPIDocument.load(ctx.config.http.openAPIDocument)
        if case .failure(let problem) = document { ctx.logger.error("API document not served: \(problem.detail)") }
        router.add(.GET, "/api/v1/openapi.json", g.open { _ in
            switch document {
            case .success(let bytes): HTTPResponse(status: 200, headers: [("Content-Type", "application/json")], body: .bytes(bytes))
            case .failure(let problem): problem.response
            }
        })
        router.add(.GET, "/api/v1/status", g.user { _, _ in await status(ctx) })
        StatusRoutes.metrics(&router, ctx, g)
        LeaseRoutes.add(&router, ctx, g)
        HardwareRoutes.add(&router, ctx, g)
        SerialRoutes.add(&router, ctx, g)
        RunRoutes.add(&router, ctx, g)
        FlashRoutes.add(&router, ctx, g)
        ArtifactRoutes.add(&router, ctx, g)
        CompatRoutes.add(&router, ctx, g)
        CompatFlashRoutes.add(&router, ctx, g)
        WebRoutes.add(&router, ctx, g)
        return router
    }

    static func status(_ ctx: APIContext) async -> HTTPResponse {
        struct Status: Encodable {
            var version: String
            var uptimeS: Double
            var dut: String
            var board: String
            var backend: String
            var power: String
            var powerStateSource: String
            var lease: LeaseView?
            var queueLength: Int
            var serial: SerialPortStatus
        }
        let now = ctx.clock.now()
        let snap = await ctx.leases.snapshot
        return json(200, Status(
            version: agentVersion, uptimeS: ((now - ctx.startedAt).seconds * 1000).rounded() / 1000, dut: ctx.config.dut.name,
            board: ctx.config.dut.board, backend: ctx.config.dut.backend.rawValue, power: await ctx.power.state().rawValue,
            powerStateSource: await ctx.power.stateSource, lease: snap.current.map { LeaseView($0, now: now, withToken: false) },
            queueLength: snap.queue.count, serial: ctx.serial.status))
    }
}
