import HTTPServer
import JSONDocument
import Leases
import Serial

enum SerialRoutes {
    static func add(_ router: inout Router, _ ctx: APIContext, _ g: Guard) {
        router.add(.GET, "/api/v1/serial/log", g.user { r, _ in
            let end = ctx.capture.endOffset
            let from = try offset(r, "from") ?? ctx.capture.startOffset
            let limitText = r.query["limit"]
            guard let limit = limitText.map({ Int($0) }) ?? 65536, (1...(4 << 20)).contains(limit) else {
                throw Problem.badRequest("limit must be an integer between 1 and 4194304")
            }
            if from > end { throw Problem.unprocessable("from \(from) is beyond the end of the capture (\(end))") }
            struct Page: Encodable {
                var from: UInt64; var next: UInt64; var end: UInt64; var count: Int
                var data: String; var lostUntil: UInt64?
            }
            switch ctx.capture.readPersisted(from: from, limit: limit) {
            case .data(let offset, let bytes, let next):
                return json(200, Page(from: offset, next: next, end: end, count: bytes.count,
                                      data: Base64.encode(bytes), lostUntil: nil))
            case .lost(let lostFrom, let resumeAt):
                // Rotated away: say so and where to resume, never pretend it was empty.
                return json(200, Page(from: lostFrom, next: resumeAt, end: end, count: 0, data: "", lostUntil: resumeAt))
            }
        })

        router.add(.GET, "/api/v1/serial/stream", g.user { r, _ in
            let from = try offset(r, "from")
            let sse = r.query["format"] == "sse" || (r.header("accept") ?? "").contains("text/event-stream")
            let sub = ctx.capture.subscribe(from: from)
            let start = from ?? ctx.capture.endOffset
            return HTTPResponse(
                status: 200,
                headers: [("Content-Type", sse ? "text/event-stream" : "application/octet-stream"), ("Cache-Control", "no-cache"),
                          ("X-Start-Offset", String(start))],
                body: .stream { writer in
                    ctx.metrics.gauge("serial_followers", delta: 1)
                    defer { ctx.metrics.gauge("serial_followers", delta: -1) }
                    let follow = Task {
                        for await item in sub {
                            let ok: Bool
                            switch item {
                            case .data(let offset, let bytes, _):
                                ok = sse ? await writer.write("id: \(offset + UInt64(bytes.count))\nevent: data\ndata: \(Base64.encode(bytes))\n\n")
                                         : await writer.write(bytes)
                            case .lost(let f, let to):
                                ok = sse ? await writer.write("event: lost\ndata: {\"from\":\(f),\"resume_at\":\(to)}\n\n") : true
                            case .event(let e):
                                // Encoded, not pasted: a detail holds whatever a device path or error said.
                                let data = JSONTree.object([("offset", .number("\(e.offset)")), ("detail", .string(e.detail))]).text()
                                ok = sse ? await writer.write("event: \(e.kind.rawValue)\ndata: \(String(decoding: data, as: UTF8.self))\n\n") : true
                            }
                            if !ok { break }
                        }
                    }
                    await writer.waitUntilClosed()
                    follow.cancel()
                })
        })

        router.add(.POST, "/api/v1/serial/input", g.holder { r, _, _ in
            let body = try JSONBody(r, allowed: ["text", "base64"])
            let bytes: [UInt8]
            switch (try body.string("text"), try body.string("base64")) {
            case (let t?, nil): bytes = Array(t.utf8)
            case (nil, let b?):
                guard let d = Base64.decode(b) else { throw Problem.badRequest("field \"base64\" is not valid base64") }
                bytes = d
            default: throw Problem.badRequest("give exactly one of \"text\" or \"base64\"")
            }
            if bytes.isEmpty { throw Problem.unprocessable("nothing to write") }
            do { try ctx.serial.write(bytes) } catch {
                throw Problem(503, "serial-unavailable", "Serial port unavailable", "\(error)")
            }
            ctx.metrics.count("serial_input_bytes_total", by: bytes.count)
            return json(200, ["written": bytes.count])
        })

        router.add(.GET, "/api/v1/console", g.user { r, id in
            guard (r.header("upgrade") ?? "").lowercased() == "rte-console" else {
                throw Problem(426, "upgrade-required", "Upgrade required", "connect with Connection: Upgrade and Upgrade: rte-console")
            }
            // Typing is a change to the DUT: the same credential as every other (an engine needs no token).
            let credential = g.credential(r, id)
            return HTTPResponse(status: 101, headers: [("Connection", "Upgrade")], body: .upgrade(protocolName: "rte-console") { conn in
                await ConsoleBridge.run(socket: conn.socket, initialInput: conn.initialBytes, serial: ctx.serial, capture: ctx.capture) {
                    (try? await ctx.leases.authorize(credential)) != nil
                }
            })
        })
    }

    static func offset(_ r: HTTPRequest, _ name: String) throws(Problem) -> UInt64? {
        guard let text = r.query[name] else { return nil }
        guard let v = UInt64(text) else { throw Problem.badRequest("\(name) must be a non-negative integer, got \"\(text)\"") }
        return v
    }
}
