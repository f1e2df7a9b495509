import AgentAPI
import Artifacts
import AgentClock
import Auth
import Configuration
import Flashing
import GPIO
import HTTPServer
import Leases
import Logging
import Power
import Runs
import BootFlow
import POSIXIO

/// The running agent: hardware, lease book, HTTP API. The executable and the tests start it the same way.
public final class Agent: Sendable {
    public let hardware: Hardware
    public let leases: LeaseBook
    public let http: HTTPServer
    public let metrics: Metrics
    public let router: Router
    public let runs: RunEngine
    public let consolePort: ConsolePort?
    /// `http.console_raw_port`: the same console, raw TCP, beside a telnet one.
    public let rawConsolePort: ConsolePort?
    /// The DUT network's read-only listener for artifacts (when `artifacts.listen` is set).
    public let dutFiles: HTTPServer?
    public var config: AgentConfig { hardware.config }
    /// Gives the heap's free pages back every 30 s while requests keep coming (followers hold
    /// connections open, so the server's quiet hook may never fire).
    private let heapTrim: Task<Void, Never>

    init(hardware: Hardware, leases: LeaseBook, http: HTTPServer, metrics: Metrics, router: Router, runs: RunEngine,
         consolePort: ConsolePort?, rawConsolePort: ConsolePort? = nil, dutFiles: HTTPServer? = nil) {
        self.dutFiles = dutFiles
        self.hardware = hardware; self.leases = leases; self.http = http; self.metrics = metrics; self.router = router; self.runs = runs
        self.consolePort = consolePort
        self.rawConsolePort = rawConsolePort
        heapTrim = Task.detached(priority: .background) { [http] in
            var trimmedAt: UInt64 = 0
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(30))
                let served = http.requestsServed
                if served - trimmedAt >= 1000 { trimmedAt = served; releaseFreeHeapMemory() }
            }
        }
    }

    /// The run engine over this hardware: runs drive power and the console the same way a client would.
    static func makeRunEngine(hardware: Hardware, leases: LeaseBook, clock: any AgentClock, metrics: Metrics, flasher: Flasher?,
                              artifacts: ArtifactService, logger: Logger) throws -> RunEngine {
        let serial = hardware.serial
        let power = hardware.power
        var devices = BootDevices(power: power, capture: hardware.capture, clock: clock) { bytes in try serial.write(bytes) }
        // `${artifact:NAME}` becomes the URL the DUT fetches under the run's lease.
        devices.resolve = { spec, leaseId in
            if spec.artifactNames.isEmpty { return spec }
            for name in spec.artifactNames where await artifacts.store.artifact(name) == nil {
                throw ArtifactError.notFound(name)
            }
            guard artifacts.baseURL != nil else { throw ArtifactError.storage("artifacts.url is not configured: the DUT has no address to fetch artifacts from") }
            return spec.expandingArtifacts { artifacts.url($0, lease: leaseId)! }
        }
        if let flasher {
            devices.idle = { await flasher.waitUntilIdle() }
            devices.flash = { step, user in
                let job = try await flasher.perform(.write, verify: step.verify, imageFile: step.image == "uploaded" ? nil : step.image, user: user)
                if let f = job.failure { throw FlashRunError(description: "flashing failed at \(f.step): \(f.message)") }
                let took = Int((job.durationMs ?? 0).rounded())
                return "\(job.id): \(job.imageSha256.map { "image sha256 \($0.prefix(16))…" } ?? "image") written" + (step.verify ? " and verified" : "")
                    + " on \(job.chip ?? "the chip") in \(took) ms (flashrom \(Int((job.flashromMs ?? 0).rounded())) ms)"
            }
        }
        return try RunEngine(clock: clock, leases: leases, devices: devices, stateDirectory: hardware.config.stateDirectory,
                             maxLeaseSeconds: hardware.config.leases.maxTTLSeconds, iterationLogMaxBytes: hardware.config.iterationLogMaxBytes, observer: { event in
            // Run counts and per-stage durations for Prometheus.
            switch event.type {
            case "stage_finished":
                guard let r = event.result else { return }
                metrics.observe("run_stage_duration_seconds", labels: ["stage": r.name], r.durationMs / 1000)
                metrics.count("run_stages_total", labels: ["stage": r.name, "result": r.passed ? "passed" : "failed"])
            case "run_finished":
                metrics.count("runs_finished_total", labels: ["state": event.state?.rawValue ?? "unknown"])
                // The artifacts it used may be evicted again.
                Task { await artifacts.store.unpin(run: event.run) }
            case "run_stuck":
                metrics.count("runs_stuck_total")
                logger.error("run \(event.run): \(event.message ?? "stuck")")
            default: break
            }
        }) {
            // A cancelled or broken run leaves the DUT off, the state the next user expects.
            do { _ = try await power.perform(.hardOff) } catch { logger.error("safe state after a run failed: \(error)") }
        }
    }

    public static func start(config: AgentConfig, clock: any AgentClock = SystemClock(),
                             logger: Logger = Logger(label: "rte-agent") { JournalLogHandler(label: $0) }) async throws -> Agent {
        let hardware = try await Hardware.start(config: config, clock: clock)
        let config = hardware.config
        let metrics = Metrics()
        // Zero from the start, so an alert on it needs no "absent" rule.
        metrics.count("runs_stuck_total", by: 0)
        let leases = try LeaseBook(clock: clock, stateDirectory: config.stateDirectory,
                                   maxTTLSeconds: config.leases.maxTTLSeconds, maxWaitSeconds: config.leases.maxWaitSeconds)
        let power = hardware.power
        let expiryAction = config.leases.expiryAction
        let store: ArtifactStore
        do { store = try ArtifactStore(directory: config.stateDirectory + "/artifacts", config: config.artifacts, clock: clock) } catch {
            _ = await hardware.shutdown()
            throw error
        }
        let artifacts = ArtifactService(store: store, baseURL: config.artifacts.url)
        let flasher = hardware.gpio.map { Flasher(config: config.flash, gpio: $0, power: power, clock: clock, stateDirectory: config.stateDirectory, logger: logger) }
        let runs = try makeRunEngine(hardware: hardware, leases: leases, clock: clock, metrics: metrics, flasher: flasher, artifacts: artifacts, logger: logger)
        // Runs before the next holder is granted the device (LeaseBook.end): runs under the lease stop
        // first, then the expiry action puts the DUT in a known state.
        await leases.start { [runs, flasher] lease, reason in
            logger.log(level: reason == .released ? .info : .notice, "lease \(lease.id) of \(lease.holder) \(reason.rawValue)")
            metrics.count("leases_ended_total", labels: ["reason": reason.rawValue])
            await runs.leaseEnded(lease, reason)
            // A flash under the ended lease finishes before anyone else gets the board.
            await flasher?.waitUntilIdle()
            guard reason != .released, expiryAction != .none else { return }
            // power_off is the soft off (the power-button hold: the OS may see it), hard_off cuts the supply.
            let action: PowerAction = expiryAction == .hardOff ? .hardOff : .off
            do {
                _ = try await power.perform(action)
                logger.notice("expiry action: DUT powered off (\(action.rawValue))")
            } catch let e as PowerError where e.kind == .refused {
                logger.warning("expiry action \(action.rawValue): \(e.detail)")
            } catch {
                logger.error("expiry action \(action.rawValue) failed: \(error)")
            }
        }
        await runs.releaseInterruptedLeases()
        let ctx = APIContext(config: config, clock: clock, startedAt: clock.now(), authenticator: Authenticator(config: config.auth),
                             leases: leases, power: power, gpio: hardware.gpio, serial: hardware.serial,
                             capture: hardware.capture, metrics: metrics, runs: runs, flasher: flasher, artifacts: artifacts, logger: logger)
        metrics.addCollector { [hardware] in
            let s = hardware.serial.status
            let state = await power.state()
            let snap = await leases.snapshot
            return [("serial_bytes_read", [:], Double(s.bytesRead)), ("serial_bytes_written", [:], Double(s.bytesWritten)),
                    ("serial_reopen_count", [:], Double(s.reopenCount)), ("serial_port_open", [:], s.state == "open" ? 1 : 0),
                    ("dut_powered", [:], state == .on ? 1 : 0), ("lease_held", [:], snap.current == nil ? 0 : 1),
                    ("lease_queue_length", [:], Double(snap.queue.count))]
        }
        let router = AgentRoutes.router(ctx)
        // Who the caller is decides the body limit, before the body (UploadAdmission).
        let admission = UploadAdmission(ctx)
        let server: HTTPServer
        do {
            var tlsCert: String?, tlsKey: String?
            if let c = config.http.tlsCertificate, let k = config.http.tlsKey {
                guard let cb = readFile(c), let kb = readFile(k) else {
                    throw HTTPServerError(description: "cannot read TLS certificate \(c) or key \(k)")
                }
                tlsCert = String(decoding: cb, as: UTF8.self); tlsKey = String(decoding: kb, as: UTF8.self)
            }
            server = try HTTPServer(
                options: HTTPServerOptions(host: config.http.host, port: config.http.port, maxBodyBytes: config.http.maxBodyBytes,
                                           connectionTimeoutSeconds: config.http.connectionTimeoutSeconds,
                                           maxConnections: config.http.maxConnections,
                                           maxConnectionsPerAddress: config.http.maxConnectionsPerAddress,
                                           headerTimeoutSeconds: config.http.headerTimeoutSeconds,
                                           tlsCertificatePEM: tlsCert, tlsKeyPEM: tlsKey, admit: { admission.admit($0) },
                                           onQuiet: { Task.detached(priority: .background) { releaseFreeHeapMemory() } },
                                           minBodyBytesPerSecond: config.http.minBodyBytesPerSecond,
                                           bodyGraceSeconds: config.http.bodyGraceSeconds),
                handler: { request in await router.handle(request) },
                tooLarge: { _, max in Problem(413, "body-too-large", "Request body too large", "the body exceeds \(max) bytes, the limit for this request (README, Limits)").response })
        } catch {
            _ = await hardware.shutdown()
            throw error
        }
        var consolePort: ConsolePort?
        if let port = config.http.consolePort {
            do { consolePort = try ConsolePort(host: config.http.consoleHost, port: port, ctx: ctx) } catch {
                server.stop()
                _ = await hardware.shutdown()
                throw HTTPServerError(description: "console port \(config.http.consoleHost):\(port): \(error)")
            }
            logger.info("console on telnet://\(config.http.consoleHost):\(consolePort!.port) (typing needs a lease bound to the client's address)")
        }
        var rawConsolePort: ConsolePort?
        if let port = config.http.consoleRawPort {
            do { rawConsolePort = try ConsolePort(host: config.http.consoleHost, port: port, telnet: false, ctx: ctx) } catch {
                server.stop(); await consolePort?.stop()
                _ = await hardware.shutdown()
                throw HTTPServerError(description: "raw console port \(config.http.consoleHost):\(port): \(error)")
            }
            logger.info("console on raw tcp://\(config.http.consoleHost):\(rawConsolePort!.port) (typing needs a lease bound to the client's address)")
        }
        if !config.auth.enabled {
            logger.warning("WARNING: authentication is OFF (\(config.sourceFile)); listening on loopback \(config.http.host) only")
        }
        if config.dut.backend == .gpio {
            logger.info("GPIO through libgpiod \(LibgpiodBackend.libraryVersion) (API \(LibgpiodBackend.apiMajor).x)")
        }
        logger.info("\(config.dut.name): API on http://\(config.http.host):\(server.port), serial \(config.serial.device)")
        var dutFiles: HTTPServer?
        if let host = config.artifacts.listenHost {
            let files = DUTFileRoutes.router(service: artifacts, leases: leases)
            do {
                dutFiles = try HTTPServer(options: HTTPServerOptions(host: host, port: config.artifacts.listenPort, maxBodyBytes: 1024,
                                                                     connectionTimeoutSeconds: 60, maxConnections: 64, maxConnectionsPerAddress: 16),
                                          handler: { request in await files.handle(request) },
                                          tooLarge: { _, _ in HTTPResponse.text(413, "read-only\n") })
            } catch {
                server.stop(); await consolePort?.stop(); await rawConsolePort?.stop()
                _ = await hardware.shutdown()
                throw HTTPServerError(description: "artifacts listener \(host):\(config.artifacts.listenPort): \(error)")
            }
            logger.info("artifacts for the DUT on http://\(host):\(dutFiles!.port) (the DUT uses \(config.artifacts.url ?? "?"))")
        }
        return Agent(hardware: hardware, leases: leases, http: server, metrics: metrics, router: router, runs: runs, consolePort: consolePort,
                     rawConsolePort: rawConsolePort, dutFiles: dutFiles)
    }

    public var port: Int { http.port }

    /// Stops serving, then puts the hardware in its safe state.
    public func shutdown() async -> [String] {
        heapTrim.cancel()
        http.stop()
        dutFiles?.stop()
        await consolePort?.stop()
        await rawConsolePort?.stop()
        await runs.shutdown()
        await leases.written()
        return await hardware.shutdown()
    }
}

/// A run's flash step that did not end well (its message is the stage's failure).
struct FlashRunError: Error, CustomStringConvertible { var description: String }
