import Auth
import HTTPServer
import Leases

enum LeaseRoutes {
    static func add(_ router: inout Router, _ ctx: APIContext, _ g: Guard) {
        router.add(.GET, "/api/v1/leases", g.user { _, _ in
            let snap = await ctx.leases.snapshot
            let now = ctx.clock.now()
            struct Book: Encodable { var current: LeaseView?; var queue: [QueueView] }
            return json(200, Book(
                current: snap.current.map { LeaseView($0, now: now, withToken: false) },
                queue: snap.queue.map { QueueView(id: $0.id, user: $0.user, purpose: $0.purpose, ttlS: $0.ttlSeconds,
                                                  enqueuedAt: $0.enqueuedAt.iso8601, waitUntil: $0.waitUntil.iso8601) }))
        })

        router.add(.POST, "/api/v1/leases", g.user { r, id in
            let body = try JSONBody(r, allowed: ["ttl_s", "purpose", "wait_s", "request_id", "bind_address"], allowEmpty: true)
            let ttl = try body.int("ttl_s") ?? ctx.config.leases.defaultTTLSeconds
            let wait = try body.int("wait_s") ?? 0
            if wait < 0 { throw Problem.unprocessable("wait_s must not be negative") }
            let purpose = try body.string("purpose") ?? ""
            if purpose.count > 500 { throw Problem.unprocessable("purpose is limited to 500 characters") }
            let bindAddress = try body.bool("bind_address") ?? false
            do {
                var lease = try await ctx.leases.acquire(user: id.user, purpose: purpose, ttlSeconds: ttl, waitSeconds: wait,
                                                         requestID: try body.string("request_id"))
                if bindAddress { lease = try await ctx.leases.bind(token: lease.token, address: r.remoteAddress) }
                ctx.metrics.count("leases_granted_total")
                return json(201, LeaseView(lease, now: ctx.clock.now(), withToken: true),
                            headers: [("Location", "/api/v1/leases/current")])
            } catch {
                ctx.metrics.count("leases_refused_total")
                throw problem(for: error)
            }
        })

        router.add(.GET, "/api/v1/leases/current", g.user { _, _ in
            guard let c = await ctx.leases.snapshot.current else { throw Problem.from(.noSuchLease) }
            return json(200, LeaseView(c, now: ctx.clock.now(), withToken: false))
        })

        router.add(.POST, "/api/v1/leases/current/renew", g.user { r, id in
            let body = try JSONBody(r, allowed: ["ttl_s"], allowEmpty: true)
            let ttl = try body.int("ttl_s") ?? ctx.config.leases.defaultTTLSeconds
            do {
                let lease = try await ctx.leases.renew(g.credential(r, id), ttlSeconds: ttl)
                return json(200, LeaseView(lease, now: ctx.clock.now(), withToken: false))
            } catch { throw problem(for: error) }
        })

        router.add(.POST, "/api/v1/leases/current/bind", g.user { r, id in
            let body = try JSONBody(r, allowed: ["address"], allowEmpty: true)
            let address = try body.string("address") ?? r.remoteAddress
            do {
                let lease = try await ctx.leases.bind(g.credential(r, id), address: address.isEmpty ? nil : address)
                return json(200, LeaseView(lease, now: ctx.clock.now(), withToken: false))
            } catch { throw problem(for: error) }
        })

        router.add(.DELETE, "/api/v1/leases/current", g.user { r, id in
            do { try await ctx.leases.release(g.credential(r, id)) } catch { throw problem(for: error) }
            return HTTPResponse(status: 204)
        })

        router.add(.POST, "/api/v1/leases/current/break", g.user { r, id in
            // {"lease_id": …} breaks only that lease: the one the admin looked at, not a newer one.
            let body = try JSONBody(r, allowed: ["lease_id"], allowEmpty: true)
            let expected = try body.string("lease_id")
            do {
                let broken = try await ctx.leases.breakLease(by: id, expected: expected)
                return json(200, LeaseView(broken, now: ctx.clock.now(), withToken: false))
            } catch { throw problem(for: error) }
        })
    }
}
