import AgentClock
import Artifacts
import HTTPServer
import Glibc
import Leases
import Text

/// Boot files for the DUT: uploaded by the lease holder (streamed to disk as they arrive), listed
/// and removed here; fetched by the DUT from its own listener (`DUTFileRoutes`).
enum ArtifactRoutes {
    struct View: Encodable {
        var name: String
        var bytes: Int64
        var sha256: String
        var uploadedBy: String
        var uploadedAt: String
        var lastUsedAt: String
        var ageS: Int
        /// What iPXE fetches, while the current lease holds the board.
        var url: String?
    }

    static func view(_ a: Artifact, _ ctx: APIContext, lease: String?) -> View {
        View(name: a.name, bytes: a.bytes, sha256: a.sha256, uploadedBy: a.uploadedBy, uploadedAt: a.uploadedAt.iso8601,
             lastUsedAt: a.lastUsedAt.iso8601, ageS: max(0, Int((ctx.clock.now() - a.uploadedAt).seconds)),
             url: lease.flatMap { ctx.artifacts?.url(a.name, lease: $0) })
    }

    static func problem(_ error: ArtifactError) -> Problem {
        switch error {
        case .tooLarge: Problem(413, "body-too-large", "Artifact too large", error.description)
        case .overQuota, .noRoom: Problem(507, "over-quota", "Over quota", error.description)
        case .badName: Problem.unprocessable(error.description)
        default: Problem(422, "upload-failed", "Upload failed", error.description)
        }
    }

    static func add(_ router: inout Router, _ ctx: APIContext, _ g: Guard) {
        guard let service = ctx.artifacts else { return }
        let store = service.store
        let upload = g.holder { r, id, lease in
            guard let sink = r.upload as? ArtifactUpload else {
                throw Problem.unprocessable("the body must be sent as the artifact's bytes (PUT with a Content-Length or chunked)")
            }
            do {
                let a = try await store.commit(sink, user: id.user)
                ctx.logger.info("artifact \(a.name) uploaded by \(id.user): \(a.bytes) bytes, sha256 \(a.sha256)")
                return json(201, view(a, ctx, lease: lease.id))
            } catch let error as ArtifactError { throw problem(error) }
        }
        router.add(.PUT, "/api/v1/artifacts/{name}", { r in
            // Whatever the outcome, an upload that was not committed leaves no file behind.
            defer { r.upload?.abandon() }
            if r.upload == nil {
                do { try ArtifactError.check(r.pathParameters["name"] ?? "") } catch let e as ArtifactError { return Problem.unprocessable(e.description).response } catch { return Problem.unprocessable("\(error)").response }
            }
            return await upload(r)
        })
        router.add(.GET, "/api/v1/artifacts", g.user { _, _ in
            struct List: Encodable { var artifacts: [View]; var totalBytes: Int64; var quotaBytes: Int64 }
            let current = await ctx.leases.snapshot.current?.id
            let all = await store.list()
            return json(200, List(artifacts: all.map { view($0, ctx, lease: current) }, totalBytes: all.reduce(0) { $0 + $1.bytes },
                                  quotaBytes: ctx.config.artifacts.quotaBytes))
        })
        router.add(.GET, "/api/v1/artifacts/{name}", g.user { r, _ in
            let name = r.pathParameters["name"]!
            guard let a = await store.artifact(name), let (fd, size) = await store.open(name) else { throw Problem.notFound("no artifact \"\(name)\"") }
            return HTTPResponse(status: 200, headers: [("Content-Type", "application/octet-stream"), ("X-SHA256", a.sha256)],
                                body: .file(descriptor: fd, offset: 0, length: UInt64(size)))
        })
        router.add(.DELETE, "/api/v1/artifacts/{name}", g.holder { r, id, _ in
            let name = r.pathParameters["name"]!
            do { try await store.delete(name) } catch let e as ArtifactError { throw Problem.notFound(e.description) }
            ctx.logger.info("artifact \(name) deleted by \(id.user)")
            return HTTPResponse(status: 204)
        })
    }
}

/// The DUT's side: `GET`/`HEAD /a/{prefix}/{name}`, read-only, no tokens (iPXE cannot send them),
/// only while the lease the prefix belongs to holds the board; single `Range`s for iPXE and
/// kernels that fetch in parts.
public enum DUTFileRoutes {
    public static func router(service: ArtifactService, leases: LeaseBook) -> Router {
        var router = Router()
        router.notFound = { _ in HTTPResponse.text(404, "not found\n") }
        router.methodNotAllowed = { _, _ in HTTPResponse.text(405, "read-only\n") }
        let serve: HTTPHandler = { r in
            let prefix = r.pathParameters["prefix"] ?? "", name = r.pathParameters["name"] ?? ""
            // Nothing about other leases' files or names is told: every refusal is the same 404.
            guard let lease = await leases.snapshot.current, prefix == service.prefix(forLease: lease.id),
                  let (fd, size) = await service.store.open(name) else {
                return HTTPResponse.text(404, "not found\n")
            }
            var headers = [("Content-Type", "application/octet-stream"), ("Accept-Ranges", "bytes")]
            switch byteRange(r.header("range"), size: size) {
            case .whole:
                return HTTPResponse(status: 200, headers: headers, body: .file(descriptor: fd, offset: 0, length: UInt64(size)))
            case .part(let from, let to):
                headers.append(("Content-Range", "bytes \(from)-\(to)/\(size)"))
                return HTTPResponse(status: 206, headers: headers, body: .file(descriptor: fd, offset: UInt64(from), length: UInt64(to - from + 1)))
            case .unsatisfiable:
                close(fd)
                return HTTPResponse(status: 416, headers: [("Content-Range", "bytes */\(size)")], body: .bytes([]))
            }
        }
        router.add(.GET, "/a/{prefix}/{name}", serve)
        router.add(.HEAD, "/a/{prefix}/{name}", serve)
        return router
    }

    public enum ByteRange: Equatable { case whole, part(Int64, Int64), unsatisfiable }

    /// One `bytes=` range (RFC 9110 §14.1.2): `a-b`, `a-`, `-n`. Several ranges, or a header that is
    /// not a valid byte range (`-1-2`, `--1`, `+1-2`), get the whole file: RFC 9110 says to ignore
    /// an invalid range, and a server may ignore Range.
    public static func byteRange(_ header: String?, size: Int64) -> ByteRange {
        guard let header, header.hasPrefix("bytes="), !header.contains(",") else { return .whole }
        let spec = header.dropFirst(6).split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        guard spec.count == 2 else { return .whole }
        /// Digits only: Int64("+1") and Int64("-1") parse, a byte position may not be written so.
        func position(_ s: String) -> Int64? { s.isEmpty || !s.utf8.allSatisfy { $0 >= 0x30 && $0 <= 0x39 } ? nil : Int64(s) }
        let first = spec[0].trimming(" "), last = spec[1].trimming(" ")
        if first.isEmpty {
            guard let n = position(last) else { return .whole }
            if n == 0 || size == 0 { return .unsatisfiable }
            return .part(max(0, size - n), size - 1)
        }
        guard let a = position(first) else { return .whole }
        guard a < size else { return .unsatisfiable }
        if last.isEmpty { return .part(a, size - 1) }
        guard let b = position(last), b >= a else { return .whole }
        return .part(a, min(b, size - 1))
    }
}
