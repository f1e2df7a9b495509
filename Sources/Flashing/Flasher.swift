import AgentClock
import Auth
import Configuration
import GPIO
import Logging
import Glibc
import POSIXIO
import Power
import Synchronization

/// Why a flash request was refused.
public enum FlashError: Error, Sendable, Equatable, CustomStringConvertible {
    case busy(String)
    case noImage
    case badImage(String)
    case notFound(String)
    case storage(String)

    public var description: String {
        switch self {
        case .busy(let id): "flash job \(id) is still running; one flash operation at a time"
        case .noImage: "no image is uploaded; upload one first (PUT /api/v1/flash/image)"
        case .badImage(let why): why
        case .notFound(let id): "no flash job \(id)"
        case .storage(let why): why
        }
    }
}

/// The uploaded image, as stored.
public struct FlashImageInfo: Sendable, Codable, Equatable {
    public var bytes: Int64
    public var sha256: String
    /// MD5 of the bytes as uploaded (gzip or not): RteCtrl's `file_md5`.
    public var uploadMd5: String
    public var uploadedBy: String
    public var uploadedAt: Timestamp
}

/// A flash operation as the API shows it.
public struct FlashJob: Sendable, Codable, Equatable {
    public enum State: String, Sendable, Codable { case running, succeeded, failed }
    public var id: String
    public var operation: FlashOperation
    public var user: String
    public var state: State
    public var phase: String
    public var percent: Int
    public var startedAt: Timestamp
    public var endedAt: Timestamp?
    public var durationMs: Double?
    /// The flashrom step alone (the rest is GPIO and power).
    public var flashromMs: Double?
    public var chip: String?
    public var imageSha256: String?
    /// A read's result: its size and hash (download at /api/v1/flash/read).
    public var readSha256: String?
    public var steps: [FlashStepRecord]
    public var failure: FlashFailure?
}

/// A change in a flash job, for its event stream.
public struct FlashEvent: Sendable, Codable, Equatable {
    public var type: String
    public var job: String
    public var step: FlashStepRecord?
    public var phase: String?
    public var percent: Int?
    public var state: FlashJob.State?
}

/// Owns flashing: the uploaded image (one, in `state_dir/flash/`), one operation at a time, its
/// progress and result. Runs and the API both come through here.
public actor Flasher {
    public let config: FlashConfig
    let sequence: FlashSequence
    let clock: any AgentClock
    let directory: String
    /// flashrom's `-p` with "{state_dir}" expanded.
    let programmer: String
    private var image: FlashImageInfo?
    private var jobs: [String: FlashJob] = [:]
    private var order: [String] = []
    private var running: String?
    /// Events in the order they happened: steps and flashrom's progress are published from
    /// where they happen (the flashrom thread included), not through the actor's mailbox.
    let log = FlashEventLog()
    private var counter = 0
    /// The SPI clock set through RteCtrl's `PATCH /api/v1/flash/config` (kHz), in memory like RteCtrl's.
    public private(set) var speedKHz: Int?

    public var imagePath: String { directory + "/image.rom" }
    public var readPath: String { directory + "/read.rom" }
    public var isBusy: Bool { running != nil }
    private var idleWaiters: [CheckedContinuation<Void, Never>] = []

    /// Returns once no flash operation runs (at once when none does). A write is never cut
    /// short: whoever needs the board next waits for it (a run, the next lease holder).
    public func waitUntilIdle() async {
        if running == nil { return }
        await withCheckedContinuation { idleWaiters.append($0) }
    }

    /// The agent's log (the journal): every step of every flash, with its time and outcome.
    let logger: Logger

    public init(config: FlashConfig, gpio: GPIOController, power: any DUTPower, clock: any AgentClock, stateDirectory: String,
                logger: Logger = Logger(label: "rte-agent", factory: { _ in SwiftLogNoOpLogHandler() })) {
        self.config = config
        self.logger = logger
        self.clock = clock
        directory = stateDirectory + "/flash"
        let programmer = config.programmer.replacingAll("{state_dir}", with: stateDirectory)
        self.programmer = programmer
        let timeout = config.timeoutSeconds
        let binary = config.flashrom, chip = config.chip
        sequence = FlashSequence(config: config, gpio: gpio, power: power, clock: clock) { request, progress async throws(FlashromFailure) -> FlashromReport in
            let outcome: Result<FlashromReport, FlashromFailure> = await withCheckedContinuation { c in
                // flashrom blocks on its child: never on the cooperative pool.
                let tool = Flashrom(binary: binary, programmer: request.programmer ?? programmer, chip: chip)
                startThread(name: "flashrom") {
                    c.resume(returning: Result { () throws(FlashromFailure) -> FlashromReport in
                        try tool.run(request.operation, file: request.file, verify: request.verify, layout: request.layout,
                                     regions: request.regions, timeoutSeconds: timeout, progress: progress)
                    })
                }
            }
            return try outcome.get()
        }
        if config.programmer.contains("{state_dir}") { try? makeDirectories(directory) }
        // An image uploaded before a restart is still there (its hash is taken again).
        if let bytes = readFile(directory + "/image.rom") {
            image = FlashImageInfo(bytes: Int64(bytes.count), sha256: SHA256.hex(bytes: bytes),
                                   uploadMd5: String(decoding: readFile(directory + "/image.md5") ?? [], as: UTF8.self),
                                   uploadedBy: "(before restart)", uploadedAt: clock.now())
        }
    }

    public var currentImage: FlashImageInfo? { image }

    /// Stores an uploaded image (raw, or gzip which is unpacked) after checking it fits the chip.
    /// On disk (written and synced) before it is acknowledged.
    public func storeImage(_ upload: [UInt8], user: String) throws(FlashError) -> FlashImageInfo {
        if let running { throw .busy(running) }
        let size = config.chipBytes
        var bytes = upload
        if Gzip.isGzip(upload) {
            do { bytes = try Gzip.inflate(upload, limit: Int(min(size, Int64(Int.max - 1)))) } catch { throw .badImage("the upload is gzip but cannot be unpacked: \(error)") }
        }
        guard Int64(bytes.count) == size else {
            throw .badImage("the image is \(bytes.count) bytes; the chip (flash.chip_mib) holds exactly \(size) — a region write still takes a whole-chip image")
        }
        let md5 = MD5.hex(bytes: upload)
        do {
            try makeDirectories(directory)
            try writeFileAtomically(directory + "/image.md5", Array(md5.utf8))
            try writeFileAtomically(imagePath, bytes)
        } catch { throw .storage("storing the image failed: \(error)") }
        let info = FlashImageInfo(bytes: Int64(bytes.count), sha256: SHA256.hex(bytes: bytes), uploadMd5: md5, uploadedBy: user, uploadedAt: clock.now())
        image = info
        return info
    }

    public func deleteImage() throws(FlashError) {
        if let running { throw .busy(running) }
        guard image != nil else { throw .noImage }
        unlink(imagePath)
        unlink(directory + "/image.md5")
        image = nil
    }

    public func job(_ id: String) throws(FlashError) -> FlashJob {
        guard let j = jobs[id] else { throw .notFound(id) }
        return live(j)
    }

    /// A running job with the phase and share its events have reported so far.
    private func live(_ j: FlashJob) -> FlashJob {
        guard j.state == .running, let (phase, percent) = log.progress(of: j.id) else { return j }
        var v = j
        v.phase = phase; v.percent = percent
        return v
    }

    public var recentJobs: [FlashJob] { order.suffix(20).reversed().compactMap { jobs[$0].map(live) } }
    public var lastJob: FlashJob? { order.last.flatMap { jobs[$0].map(live) } }

    /// Starts an operation on the uploaded image (write) or into `read.rom` (read); returns at once.
    public func start(_ operation: FlashOperation, verify: Bool = true, layout: FlashLayout? = nil, regions: [String] = [],
                      user: String) throws(FlashError) -> FlashJob {
        let request = withSpeed(try prepare(operation, verify: verify, layout: layout, regions: regions))
        let job = begin(request, user: user)
        Task { await self.execute(request, job: job.id) }
        return job
    }

    /// Runs an operation to its end (for a run's `flash:` step). `imageFile`: write this file on
    /// the RTE instead of the uploaded image (checked against the chip's size like an upload).
    public func perform(_ operation: FlashOperation, verify: Bool = true, imageFile: String? = nil, user: String) async throws(FlashError) -> FlashJob {
        var request = withSpeed(try prepare(operation, verify: verify, layout: nil, regions: [], needsUpload: imageFile == nil))
        if let imageFile {
            var st = stat()
            guard stat(imageFile, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { throw .badImage("\(imageFile) is not a file on the RTE") }
            guard Int64(st.st_size) == config.chipBytes else {
                throw .badImage("\(imageFile) is \(st.st_size) bytes; the chip (flash.chip_mib) holds exactly \(config.chipBytes)")
            }
            request.file = imageFile
        }
        var job = begin(request, user: user)
        if imageFile != nil, let bytes = readFile(request.file!) { job.imageSha256 = SHA256.hex(bytes: bytes); jobs[job.id] = job }
        await execute(request, job: job.id)
        return jobs[job.id]!
    }

    private func prepare(_ operation: FlashOperation, verify: Bool, layout: FlashLayout?, regions: [String], needsUpload: Bool = true) throws(FlashError) -> FlashRequest {
        if let running { throw .busy(running) }
        switch operation {
        case .write:
            guard image != nil || !needsUpload else { throw .noImage }
            return FlashRequest(operation: .write, file: imagePath, verify: verify, layout: layout, regions: regions)
        case .read:
            do { try makeDirectories(directory) } catch { throw .storage("\(error)") }
            unlink(readPath + ".part")
            return FlashRequest(operation: .read, file: readPath + ".part", layout: layout, regions: regions)
        case .probe, .erase:
            return FlashRequest(operation: operation)
        }
    }

    /// The programmer's `spispeed` (kHz): the override, else what the config says (RteCtrl's default 16000).
    public var speed: Int {
        if let speedKHz { return speedKHz }
        for part in config.programmer.split(separator: ",") where part.hasPrefix("spispeed=") || part.contains(":spispeed=") {
            if let v = Int(part.split(separator: "=").last ?? "") { return v }
        }
        return 16000
    }

    public func setSpeed(_ kHz: Int) throws(FlashError) {
        if let running { throw .busy(running) }
        speedKHz = kHz
    }

    private func withSpeed(_ request: FlashRequest) -> FlashRequest {
        guard let speedKHz else { return request }
        var r = request
        var parts = programmer.split(separator: ",").map(String.init)
        // Only a programmer with an SPI clock takes it (linux_spi, ch341a_spi…: `spispeed=`); the
        // simulated board's dummy programmer has none, so there the speed is only remembered.
        guard let i = parts.firstIndex(where: { $0.hasPrefix("spispeed=") || $0.contains(":spispeed=") }) else { return request }
        let head = parts[i].split(separator: "=", maxSplits: 1)[0]
        parts[i] = head + "=" + String(speedKHz)
        r.programmer = parts.joined(separator: ",")
        return r
    }

    private func begin(_ request: FlashRequest, user: String) -> FlashJob {
        counter += 1
        let id = "flash-" + String(clock.now().nanosecondsSinceEpoch / 1_000_000, radix: 36) + "-" + String(counter)
        let job = FlashJob(id: id, operation: request.operation, user: user, state: .running, phase: "starting", percent: 0,
                           startedAt: clock.now(), imageSha256: request.operation == .write ? image?.sha256 : nil, steps: [])
        jobs[id] = job
        order.append(id)
        if order.count > 50 { jobs[order.removeFirst()] = nil }
        running = id
        return job
    }

    private func execute(_ request: FlashRequest, job id: String) async {
        let log = self.log, logger = self.logger
        let (report, steps, failure) = await sequence.run(request, onStep: { s in
            logger.log(level: s.passed ? .info : .error,
                       "flash \(id): \(s.name) \(s.passed ? "ok" : "FAILED") in \(Int(s.durationMs.rounded())) ms: \(s.detail)")
            log.publish(FlashEvent(type: "step", job: id, step: s))
        }, onProgress: { p in
            log.publish(FlashEvent(type: "progress", job: id, phase: p.phase, percent: p.percent))
        })
        var j = jobs[id]!
        j.steps = steps
        j.chip = report?.chip
        j.failure = failure
        j.endedAt = clock.now()
        j.durationMs = (j.endedAt! - j.startedAt).milliseconds
        j.flashromMs = steps.first { $0.name == FlashSequence.Step.flashrom.rawValue }?.durationMs
        j.state = failure == nil ? .succeeded : .failed
        j.percent = failure == nil ? 100 : (log.progress(of: id)?.1 ?? 0)
        j.phase = failure == nil ? "done" : "failed at \(failure!.step)"
        if request.operation == .read {
            if failure == nil, let bytes = readFile(readPath + ".part") {
                rename(readPath + ".part", readPath)
                j.readSha256 = SHA256.hex(bytes: bytes)
            } else {
                unlink(readPath + ".part")
            }
        }
        jobs[id] = j
        running = nil
        log.publish(FlashEvent(type: "finished", job: id, state: j.state))
        let waiters = idleWaiters
        idleWaiters.removeAll()
        waiters.forEach { $0.resume() }
    }

    /// The job's events so far, then live ones until it ends.
    public func events(_ id: String) throws(FlashError) -> AsyncStream<FlashEvent> {
        guard jobs[id] != nil else { throw .notFound(id) }
        return log.subscribe(id)
    }
}

/// A flash job's events, in order, for any number of followers.
final class FlashEventLog: Sendable {
    struct State {
        var history: [String: [FlashEvent]] = [:]
        var subscribers: [String: [Int: AsyncStream<FlashEvent>.Continuation]] = [:]
        var next = 0
        var progress: [String: (String, Int)] = [:]
    }
    let state = Mutex(State())

    func publish(_ e: FlashEvent) {
        let targets = state.withLock { s -> [AsyncStream<FlashEvent>.Continuation] in
            s.history[e.job, default: []].append(e)
            if s.history[e.job]!.count > 1000 { s.history[e.job]!.removeFirst(500) }
            if let phase = e.phase ?? e.step?.name {
                s.progress[e.job] = (phase, max(s.progress[e.job]?.1 ?? 0, e.percent ?? 0))
            }
            // Keep the last few jobs' events only.
            if s.history.count > 50, let old = s.history.keys.first(where: { s.subscribers[$0] == nil && $0 != e.job }) {
                s.history[old] = nil; s.progress[old] = nil
            }
            return Array(s.subscribers[e.job]?.values ?? [:].values)
        }
        // Yield outside the lock, in the order published (one publisher at a time per job).
        for c in targets { c.yield(e) }
        if e.type == "finished" {
            let ended = state.withLock { s -> [AsyncStream<FlashEvent>.Continuation] in
                defer { s.subscribers[e.job] = nil }
                return Array(s.subscribers[e.job]?.values ?? [:].values)
            }
            for c in ended { c.finish() }
        }
    }

    func progress(of job: String) -> (String, Int)? { state.withLock { $0.progress[job] } }

    func subscribe(_ job: String) -> AsyncStream<FlashEvent> {
        let (stream, continuation) = AsyncStream<FlashEvent>.makeStream()
        let key = state.withLock { s -> Int? in
            for e in s.history[job] ?? [] { continuation.yield(e) }
            if s.history[job]?.last?.type == "finished" { return nil }
            s.next += 1
            s.subscribers[job, default: [:]][s.next] = continuation
            return s.next
        }
        guard let key else { continuation.finish(); return stream }
        continuation.onTermination = { [weak self] _ in self?.state.withLock { _ = $0.subscribers[job]?.removeValue(forKey: key) } }
        return stream
    }
}
