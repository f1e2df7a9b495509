import Flashing
import HTTPServer
import JSONDocument
import POSIXIO
import Runs

/// Flashing the DUT's SPI chip (the lease holder only): one uploaded image, one operation at a
/// time, progress as server-sent events, a read's result as a download.
enum FlashRoutes {
    static func add(_ router: inout Router, _ ctx: APIContext, _ g: Guard) {
        @Sendable func flasher() throws(Problem) -> Flasher {
            guard let f = ctx.flasher else { throw Problem(422, "not-wired", "Not wired", "this DUT has no GPIO lines for the SPI header, so it cannot be flashed") }
            return f
        }

        router.add(.PUT, "/api/v1/flash/image", g.holder { r, id, _ in
            let f = try flasher()
            if r.body.isEmpty { throw Problem.unprocessable("the body is the image (raw, or gzip); it was empty") }
            let info = try await f.storeImage(r.body, user: id.user)
            ctx.logger.info("flash image uploaded by \(id.user): \(info.bytes) bytes, sha256 \(info.sha256)")
            return json(201, info)
        })
        router.add(.GET, "/api/v1/flash/image", g.user { _, _ in
            guard let info = await (try flasher()).currentImage else { throw FlashError.noImage }
            return json(200, info)
        })
        router.add(.DELETE, "/api/v1/flash/image", g.holder { _, _, _ in
            try await (try flasher()).deleteImage()
            return HTTPResponse(status: 204, headers: [], body: .bytes([]))
        })

        router.add(.POST, "/api/v1/flash/jobs", g.holder { r, id, _ in
            let f = try flasher()
            let body = try JSONBody(r, allowed: ["operation", "verify", "layout", "layout_file", "regions"])
            guard let name = try body.string("operation"), let operation = FlashOperation(rawValue: name) else {
                throw Problem.unprocessable("field \"operation\" must be one of \(FlashOperation.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            let layout = try parseLayout(body, ctx)
            var regions: [String] = []
            if let v = body.value("regions") {
                guard case .array(let items) = v else { throw Problem.unprocessable("field \"regions\" must be a list of region names") }
                for item in items {
                    guard case .string(let s) = item, !s.isEmpty, s.count <= 64, s.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" }) else {
                        throw Problem.unprocessable("a region name is letters, digits, _ and - (e.g. \"bios\")")
                    }
                    regions.append(s)
                }
                if !regions.isEmpty && layout == nil { throw Problem.unprocessable("regions need a layout: \"layout\": \"ifd\" or \"fmap\", or \"layout_file\"") }
            }
            if let runs = ctx.runs, let active = await runs.activeRun {
                throw Problem(409, "device-busy", "Device busy", "run \(active) is using the DUT; flash after it ends")
            }
            let job = try await f.start(operation, verify: try body.bool("verify") ?? true, layout: layout, regions: regions, user: id.user)
            ctx.logger.info("flash \(operation.rawValue) started by \(id.user) (job \(job.id))")
            return json(202, job, headers: [("Location", "/api/v1/flash/jobs/\(job.id)")])
        })
        router.add(.GET, "/api/v1/flash/jobs", g.user { _, _ in
            struct List: Encodable { var jobs: [FlashJob] }
            return json(200, List(jobs: await (try flasher()).recentJobs))
        })
        router.add(.GET, "/api/v1/flash/jobs/{id}", g.user { r, _ in
            json(200, try await (try flasher()).job(r.pathParameters["id"]!))
        })
        router.add(.GET, "/api/v1/flash/jobs/{id}/events", g.user { r, _ in
            let events = try await (try flasher()).events(r.pathParameters["id"]!)
            return HTTPResponse(status: 200, headers: [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")],
                                body: .stream { writer in
                for await e in events {
                    let line = "event: \(e.type)\ndata: " + String(decoding: RunEngine.encode(e), as: UTF8.self) + "\n\n"
                    if !(await writer.write(line)) { break }
                }
            })
        })
        router.add(.GET, "/api/v1/flash/read", g.holder { _, _, _ in
            let f = try flasher()
            guard let last = await f.recentJobs.first(where: { $0.operation == .read && $0.state == .succeeded }),
                  let bytes = readFile(await f.readPath) else {
                throw Problem.notFound("nothing was read yet: start a job with {\"operation\": \"read\"}")
            }
            return HTTPResponse(status: 200, headers: [("Content-Type", "application/octet-stream"), ("X-SHA256", last.readSha256 ?? ""),
                                                        ("Content-Disposition", "attachment; filename=\"flash-read.rom\"")], body: .bytes(bytes))
        })
    }

    /// `layout`: "ifd" or "fmap"; `layout_file`: the text of a flashrom layout file.
    static func parseLayout(_ body: JSONBody, _ ctx: APIContext) throws(Problem) -> FlashLayout? {
        let named = try body.string("layout")
        let text = try body.string("layout_file")
        switch (named, text) {
        case (nil, nil): return nil
        case ("ifd", nil): return .ifd
        case ("fmap", nil): return .fmap
        case (nil, let t?):
            guard t.utf8.count <= 64 * 1024 else { throw Problem.unprocessable("layout_file is at most 64 KiB") }
            for line in t.split(separator: "\n") where line.contains(where: { $0 != " " && $0 != "\t" && $0 != "\r" }) {
                // flashrom's layout lines: "start:end name", both hex.
                let parts = line.split(separator: " ", maxSplits: 1)
                let range = parts.first?.split(separator: ":") ?? []
                guard parts.count == 2, range.count == 2, range.allSatisfy({ UInt64($0, radix: 16) != nil }) else {
                    throw Problem.unprocessable("layout_file line \"\(line)\" is not \"start:end name\" (hex addresses)")
                }
            }
            let path = ctx.config.stateDirectory + "/flash/layout.txt"
            do {
                try makeDirectories(ctx.config.stateDirectory + "/flash")
                try writeFileAtomically(path, Array(t.utf8))
            } catch { throw Problem(503, "storage-failed", "Storage failed", "cannot store the layout: \(error)") }
            return .file(path)
        default:
            throw Problem.unprocessable("give \"layout\" (\"ifd\" or \"fmap\") or \"layout_file\", not both")
        }
    }

    static func problem(_ e: FlashError) -> Problem {
        switch e {
        case .busy: Problem(409, "flash-busy", "Flash in progress", e.description)
        case .noImage: Problem(404, "no-image", "No image", e.description)
        case .badImage: Problem(422, "bad-image", "Bad image", e.description)
        case .notFound: Problem.notFound(e.description)
        case .storage: Problem(503, "storage-failed", "Storage failed", e.description)
        }
    }
}
