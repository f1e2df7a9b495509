import Flashing
import HTTPServer
import JSONDocument
import POSIXIO

/// RteCtrl's flashing endpoints, translated onto the Flasher (the whole S5 → SPI → flashrom →
/// SPI off sequence, not flashrom alone), with the compat layer's lease rules for writes:
/// - `POST /api/v1/flash/file` (multipart field `file`, gzip accepted) → `{"file_md5", "file_size"}`
/// - `GET` / `DELETE /api/v1/flash/file`, `GET` / `PATCH /api/v1/flash/config` (`{"speed": kHz}`)
/// - `PUT /api/v1/flash` `{"file_md5": …}` starts the write → `{"status": "starting", "percent": 1}`
/// - `GET /api/v1/flash` → `{"status": …, "percent": …}`, or `{"error": …}` as RteCtrl answers.
enum CompatFlashRoutes {
    struct FileDetails: Encodable { var fileMd5: String; var fileSize: Int64 }
    struct Status: Encodable { var status: String; var percent: Int? }
    struct Speed: Encodable { var speed: Int }

    static let noFile = "no file uploaded"
    static let cantUpload = "can't upload file"

    static func add(_ router: inout Router, _ ctx: APIContext, _ g: Guard) {
        guard ctx.config.compat.enabled, let flasher = ctx.flasher else { return }
        let fail = CompatRoutes.failure

        router.add(.POST, "/api/v1/flash/file", g.open { r in
            try await CompatRoutes.authorizeLegacyWrite(from: r.remoteAddress, ctx)
            let howTo = "send the image as multipart/form-data field \"file\" (curl -F file=@coreboot.rom)"
            guard let boundary = Multipart.boundary(r.header("content-type")) else { throw fail(404, cantUpload, howTo, "compat-error") }
            let file: [UInt8]
            let body = r.body
            switch await onOwnThread(name: "multipart", { Multipart.field("file", in: body, boundary: boundary) }) {
            case .found(let bytes): file = bytes
            case .missing: throw fail(404, cantUpload, howTo, "compat-error")
            case .tooManyParts: throw fail(404, cantUpload, "the body has more than \(Multipart.maxParts) parts; " + howTo, "compat-error")
            }
            do {
                let info = try await flasher.storeImage(file, user: "compat \(r.remoteAddress)")
                ctx.logger.info("compat: flash file uploaded from \(r.remoteAddress): \(info.bytes) bytes, md5 \(info.uploadMd5)")
                return json(200, FileDetails(fileMd5: info.uploadMd5, fileSize: info.bytes))
            } catch let e as FlashError {
                throw fail(404, cantUpload, e.description, "compat-error")
            }
        })
        router.add(.GET, "/api/v1/flash/file", g.open { _ in
            guard let info = await flasher.currentImage else { throw fail(404, noFile, "upload one with POST /api/v1/flash/file", "not-found") }
            return json(200, FileDetails(fileMd5: info.uploadMd5, fileSize: info.bytes))
        })
        router.add(.DELETE, "/api/v1/flash/file", g.open { r in
            try await CompatRoutes.authorizeLegacyWrite(from: r.remoteAddress, ctx)
            do { try await flasher.deleteImage() } catch let e as FlashError {
                if case .noImage = e { throw fail(404, noFile, "nothing to delete", "not-found") }
                throw FlashRoutes.problem(e)
            }
            return json(200, Status(status: "ok"))
        })
        router.add(.GET, "/api/v1/flash/config", g.open { _ in json(200, Speed(speed: await flasher.speed)) })
        router.add(.PATCH, "/api/v1/flash/config", g.open { r in
            try await CompatRoutes.authorizeLegacyWrite(from: r.remoteAddress, ctx)
            guard let members = RawJSONObject.members(r.body) else { throw fail(403, CompatRoutes.badParameters, "the body must be {\"speed\": kHz}", "compat-error") }
            let m = members.last { $0.key == "speed" } ?? members.last { $0.key.lowercased() == "speed" }
            guard let raw = m?.raw, let kHz = RawJSONObject.unsigned(raw), (1...100_000).contains(kHz) else {
                throw fail(403, CompatRoutes.badParameters, "\"speed\" is the SPI clock in kHz, 1 to 100000", "compat-error")
            }
            try await flasher.setSpeed(Int(kHz))
            return json(200, Speed(speed: await flasher.speed))
        })
        router.add(.PUT, "/api/v1/flash", g.open { r in
            try await CompatRoutes.authorizeLegacyWrite(from: r.remoteAddress, ctx)
            guard let info = await flasher.currentImage else { throw fail(404, noFile, "upload one with POST /api/v1/flash/file", "not-found") }
            let members = RawJSONObject.members(r.body)
            guard case .string(let md5)?? = (members?.last { $0.key.lowercased() == "file_md5" }).map({ $0.value }), !md5.isEmpty else {
                throw fail(403, CompatRoutes.badParameters, "the body must be {\"file_md5\": \"…\"} naming the uploaded file", "compat-error")
            }
            guard md5.lowercased() == info.uploadMd5 else {
                throw fail(403, "checksum mismatch", "file_md5 \(md5) is not the uploaded file's (\(info.uploadMd5))", "compat-error")
            }
            if await flasher.isBusy { return try await state(flasher) }
            if let runs = ctx.runs, let active = await runs.activeRun {
                throw Problem(409, "device-busy", "Device busy", "run \(active) is using the DUT", extra: ["error": .string("internal error")])
            }
            do {
                let job = try await flasher.start(.write, user: "compat \(r.remoteAddress)")
                ctx.logger.info("compat: flash started from \(r.remoteAddress) (job \(job.id))")
            } catch { return try await state(flasher) }
            return json(200, Status(status: "starting", percent: 1))
        })
        router.add(.GET, "/api/v1/flash", g.open { _ in try await state(flasher) })
    }

    /// The last job in RteCtrl's words and percentages.
    static func state(_ flasher: Flasher) async throws -> HTTPResponse {
        guard let job = await flasher.lastJob else {
            return json(200, ["error": "no flashing operation performed"])
        }
        switch job.state {
        case .succeeded: return json(200, Status(status: "done", percent: 100))
        case .failed:
            struct Failed: Encodable { var error: String; var detail: String }
            return json(200, Failed(error: "flash verification failed", detail: job.failure?.description ?? ""))
        case .running:
            let (status, percent) = switch job.phase {
            case "reading the chip's old contents": ("reading old contents", 40)
            case "erasing and writing": ("erasing flash and writing", 60)
            case "verifying": ("verifying", 80)
            default: ("preparing", 20)
            }
            return json(200, Status(status: status, percent: percent))
        }
    }
}
