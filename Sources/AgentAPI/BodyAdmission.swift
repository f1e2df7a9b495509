import Artifacts
import Auth
import HTTPServer
import Leases
import Synchronization

/// Who may send a request body, and how big, decided from the headers before the first byte of
/// it (on the server's thread: nothing here awaits). A caller without a valid token gets a small
/// limit; firmware images and artifacts are only for the lease holder (legacy clients: the bound
/// address or the trusted network), so nobody else makes the agent keep megabytes.
public struct UploadAdmission: Sendable {
    let ctx: APIContext
    /// Firmware images held in memory at once (the holder's, a trusted legacy client's): each is
    /// up to the chip's size, so the agent's memory for them is bounded by this many.
    static let imagesAtOnce = 2
    private let imagesInFlight = ImageSlots()

    final class ImageSlots: Sendable {
        private let count = Mutex(0)
        func take(max: Int) -> Bool { count.withLock { c in guard c < max else { return false }; c += 1; return true } }
        func give() { count.withLock { $0 -= 1 } }
    }

    public init(_ ctx: APIContext) { self.ctx = ctx }

    private func image(_ maxBytes: Int) -> BodyAdmission {
        guard imagesInFlight.take(max: UploadAdmission.imagesAtOnce) else {
            return .refuse(Problem(503, "uploads-busy", "Too many uploads", "\(UploadAdmission.imagesAtOnce) firmware images are being "
                                   + "uploaded already; send this one when they are done", headers: [("Retry-After", "5")]).response)
        }
        let slots = imagesInFlight
        return .bufferCounted(maxBytes: maxBytes, done: { slots.give() })
    }

    /// A firmware image is the chip's size (gzip may add a little): bounded, not the default limit.
    var imageBytes: Int { Int(ctx.config.flash.chipBytes) + (1 << 20) }

    public func admit(_ r: HTTPRequest) -> BodyAdmission {
        let http = ctx.config.http
        let guardian = Guard(ctx: ctx)
        let identity = try? guardian.identify(r, record: false)
        if r.method == "PUT", r.path == "/api/v1/flash/image" {
            if let refusal = holderRefusal(r, identity) { return .refuse(refusal.response) }
            return image(imageBytes)
        }
        if r.method == "PUT", r.path.hasPrefix("/api/v1/artifacts/"), let store = ctx.artifacts?.store {
            if let refusal = holderRefusal(r, identity) { return .refuse(refusal.response) }
            let name = String(r.path.dropFirst("/api/v1/artifacts/".count))
            let length = r.header("content-length").flatMap { Int64($0) }
            do {
                let upload = try store.begin(name, expectedBytes: length)
                return .stream(upload, maxBytes: Int(clamping: ctx.config.artifacts.maxBytes))
            } catch { return .refuse(ArtifactRoutes.problem(error).response) }
        }
        if ctx.config.compat.enabled, ctx.flasher != nil, r.method == "POST", r.path == "/api/v1/flash/file" {
            if let refusal = legacyRefusal(r.remoteAddress) { return .refuse(refusal.response) }
            return image(imageBytes + (64 << 10))
        }
        // Legacy routes take no token and small JSON bodies: the small limit covers them too.
        if identity == nil, ctx.authenticator.isEnabled { return .buffer(maxBytes: min(http.maxBodyBytes, http.unauthenticatedBodyBytes)) }
        // A run spec is a few KiB; parsing one costs ~80× its size (YAML), so its size is bounded.
        if r.method == "POST", r.path == "/api/v1/runs" { return .buffer(maxBytes: min(http.maxBodyBytes, RunRoutes.maxSpecBytes)) }
        return .buffer(maxBytes: http.maxBodyBytes)
    }

    /// Why the caller may not send a holder's upload (nil: it may), as `Guard.holder` would answer.
    func holderRefusal(_ r: HTTPRequest, _ identity: Identity?) -> Problem? {
        let guardian = Guard(ctx: ctx)
        guard let identity else {
            do { _ = try guardian.identify(r, record: false) } catch { return error }
            return nil
        }
        let credential = guardian.credential(r, identity)
        if ctx.leases.currentLease.admits(credential) { return nil }
        let current = ctx.leases.currentLease.current
        if case .token(let t) = credential, let t, !t.isEmpty { return Problem.from(LeaseError.invalidLeaseToken(current: current)) }
        return Problem.from(LeaseError.leaseRequired(current: current))
    }

    /// `CompatRoutes.authorizeLegacyWrite`, from the headers.
    func legacyRefusal(_ client: String) -> Problem? {
        if let c = ctx.leases.currentLease.current {
            return c.boundAddress == client ? nil : CompatRoutes.leasedElsewhere(c)
        }
        return ctx.config.compat.allowAnonymousWrites && address(client, isIn: ctx.config.compat.trustedNetworks)
            ? nil : CompatRoutes.untrusted(client, ctx)
    }
}

/// A counting semaphore for async callers, FIFO.
final class AsyncSlots: Sendable {
    private struct State { var free: Int; var waiters: [CheckedContinuation<Void, Never>] = [] }
    private let state: Mutex<State>
    init(_ count: Int) { state = Mutex(State(free: count)) }

    func take() async {
        await withCheckedContinuation { c in
            let now = state.withLock { s -> Bool in
                if s.free > 0 { s.free -= 1; return true }
                s.waiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }

    func give() {
        let next = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if s.waiters.isEmpty { s.free += 1; return nil }
            return s.waiters.removeFirst()
        }
        next?.resume()
    }
}
