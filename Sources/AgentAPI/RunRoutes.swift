import BootFlow
import Glibc
import HTTPServer
import JSONDocument
import POSIXIO
import Leases
import Runs
import Serial

enum RunRoutes {
    /// The largest run spec accepted (a spec is a few KiB).
    static let maxSpecBytes = 64 << 10
    /// Specs parsed at once: parsing costs memory in proportion to the text (~80× for YAML), so
    /// 16 clients posting at once wait their turn instead of adding up.
    static let specParses = AsyncSlots(2)

    static func add(_ router: inout Router, _ ctx: APIContext, _ g: Guard) {
        guard let engine = ctx.runs else { return }

        router.add(.POST, "/api/v1/runs", g.user { r, id in
            guard r.body.count <= maxSpecBytes else {
                throw Problem(413, "body-too-large", "Run spec too large", "a run spec is at most \(maxSpecBytes) bytes, this one has \(r.body.count)")
            }
            // JSON, or YAML as written in a spec file (the web page posts what was pasted).
            let yaml = (r.header("content-type") ?? "").contains("yaml")
            await specParses.take()
            defer { specParses.give() }
            // Off the cooperative pool: a big spec's parse and its matchers take milliseconds.
            let body = r.body
            let parsed = await onOwnThread(name: "spec-parse") { () -> Result<RunSpec, Problem> in
                do {
                    let doc = yaml ? try JSONValue.parse(yaml: String(decoding: body, as: UTF8.self)) : try JSONValue.parseBody(json: body)
                    do { return .success(try RunSpec.parse(doc)) } catch let e as DocumentError { return .failure(Problem.from(e)) }
                } catch let e as DocumentError { return .failure(Problem.badRequest("the body (a run spec) \(e.message)")) }
                catch { return .failure(Problem.badRequest("the body (a run spec) cannot be read: \(error)")) }
            }
            let spec = try parsed.get()
            // Artifacts the spec names must be here before anything is powered.
            for name in spec.artifactNames {
                guard let service = ctx.artifacts, service.baseURL != nil else {
                    throw Problem.unprocessable("the spec uses ${artifact:\(name)} but this agent serves no artifacts to the DUT (set artifacts.listen and artifacts.url)")
                }
                if await service.store.artifact(name) == nil {
                    throw Problem.unprocessable("the spec uses ${artifact:\(name)}, which is not uploaded (PUT /api/v1/artifacts/\(name))")
                }
            }
            // The caller's lease as every change presents it (an engine needs no X-Lease-Token); none: the run's own.
            let credential = g.credential(r, id)
            let record = try await engine.submit(spec, user: id.user, under: credential == .token(nil) ? nil : credential)
            // Not evicted while the run is queued or running (unpinned when it finishes).
            if !spec.artifactNames.isEmpty, let store = ctx.artifacts?.store {
                await store.pin(spec.artifactNames, run: record.id)
                if (try? await engine.get(record.id))?.state.isFinished == true { await store.unpin(run: record.id) }
            }
            ctx.metrics.count("runs_submitted_total")
            return json(202, record, headers: [("Location", "/api/v1/runs/\(record.id)")])
        })

        router.add(.GET, "/api/v1/runs", g.user { _, _ in
            struct Item: Encodable {
                var id: String; var name: String; var user: String; var state: RunState; var createdAt: String
                var currentStage: String?; var passed: Int?; var failed: Int?; var repeatCount: Int
            }
            let items = await engine.list().map {
                Item(id: $0.id, name: $0.name, user: $0.user, state: $0.state, createdAt: $0.createdAt.iso8601,
                     currentStage: $0.currentStage, passed: $0.summary?.passed, failed: $0.summary?.failed, repeatCount: $0.repeatCount)
            }
            return json(200, ["runs": items])
        })

        router.add(.GET, "/api/v1/runs/{id}", g.user { r, _ in
            json(200, try await engine.get(r.pathParameters["id"]!))
        })

        router.add(.DELETE, "/api/v1/runs/{id}", g.user { r, id in
            json(200, try await engine.cancel(r.pathParameters["id"]!, by: id))
        })

        router.add(.GET, "/api/v1/runs/{id}/iterations/{n}/log", g.user { r, _ in
            let run = try await engine.get(r.pathParameters["id"]!)
            guard let n = Int(r.pathParameters["n"] ?? ""), run.iterations.contains(where: { $0.index == n }),
                  let path = engine.iterationLogPath(run.id, n) else {
                throw Problem.notFound("run \(run.id) has no finished iteration \(r.pathParameters["n"] ?? "")")
            }
            guard let fd = Optional(open(path, O_RDONLY | O_CLOEXEC)), fd >= 0 else {
                throw Problem.notFound("the log of iteration \(n) of run \(run.id) was not kept (no state directory, or it was pruned)")
            }
            var st = stat()
            fstat(fd, &st)
            return HTTPResponse(status: 200, headers: [("Content-Type", "application/octet-stream")],
                                body: .file(descriptor: fd, offset: 0, length: UInt64(st.st_size)))
        })

        router.add(.GET, "/api/v1/runs/{id}/transcript", g.user { r, _ in
            let run = try await engine.get(r.pathParameters["id"]!)
            guard let from = run.captureFrom else { throw Problem(409, "not-started", "Run not started", "run \(run.id) has not started; it has no transcript yet") }
            let to = run.captureTo ?? ctx.capture.endOffset
            let capture = ctx.capture
            // Streamed from the capture (its ring, then its log files) a chunk at a time: a reader
            // costs its chunk and the writer's bounded buffer, not a copy of the transcript.
            return HTTPResponse(status: 200, headers: [("Content-Type", "application/octet-stream"),
                                                        ("X-Capture-From", String(from)), ("X-Capture-To", String(to))],
                                body: .stream { writer in
                var offset = from
                while offset < to {
                    switch capture.readPersisted(from: offset, limit: Int(min(to - offset, 64 << 10))) {
                    case .data(_, let chunk, let next):
                        if chunk.isEmpty { return }
                        guard await writer.write(chunk) else { return }
                        offset = next
                    case .lost(_, let resumeAt):
                        offset = resumeAt
                    }
                }
            })
        })

        router.add(.GET, "/api/v1/runs/{id}/events", g.user { r, _ in
            let events = try await engine.events(r.pathParameters["id"]!)
            return HTTPResponse(status: 200, headers: [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")],
                                body: .stream { writer in
                for await e in events {
                    let line = "event: \(e.type)\ndata: " + String(decoding: RunEngine.encode(e), as: UTF8.self) + "\n\n"
                    if !(await writer.write(line)) { break }
                }
            })
        })
    }

    static func problem(_ e: RunError) -> Problem {
        switch e {
        case .notFound(let id): Problem.notFound("no run \(id)")
        case .notYours(let owner): Problem(403, "forbidden", "Forbidden", "the run belongs to \(owner); only they or an admin may cancel it")
        case .alreadyFinished(let id, let state): Problem(409, "run-finished", "Run already finished", "run \(id) is \(state.rawValue)")
        case .lease(let l): Problem.from(l)
        }
    }
}
