import AgentClock
import Auth
import Configuration
import Glibc
import HTTPServer
import JSONDocument
import POSIXIO
import Synchronization

/// A file uploaded for the DUT to fetch (a kernel, an initramfs).
public struct Artifact: Sendable, Codable, Equatable {
    public var name: String
    public var bytes: Int64
    public var sha256: String
    public var uploadedBy: String
    public var uploadedAt: Timestamp
    public var lastUsedAt: Timestamp
}

public enum ArtifactError: Error, Sendable, Equatable, CustomStringConvertible {
    case badName(String)
    case notFound(String)
    case tooLarge(limit: Int64)
    case overQuota(needed: Int64, quota: Int64)
    /// Does not fit beside the uploads in flight and the artifacts runs are using (pinned).
    case noRoom(needed: Int64, inFlight: Int64, pinned: Int64, quota: Int64)
    case upload(String)
    case storage(String)

    public var description: String {
        switch self {
        case .badName(let n): "\"\(n)\" is not an artifact name: 1–128 of A–Z a–z 0–9 . _ -, not starting with a dot"
        case .notFound(let n): "no artifact \"\(n)\""
        case .tooLarge(let limit): "an artifact is at most \(limit) bytes (artifacts.max_mib)"
        case .overQuota(let needed, let quota): "\(needed) bytes do not fit the \(quota)-byte quota (artifacts.quota_mib) even with every other artifact removed"
        case .noRoom(let needed, let inFlight, let pinned, let quota):
            "\(needed) bytes do not fit the \(quota)-byte quota (artifacts.quota_mib) beside \(inFlight) bytes of uploads in flight "
                + "and \(pinned) bytes of artifacts that queued or running runs use; try again when they are done"
        case .upload(let why): why
        case .storage(let why): why
        }
    }

    public static func check(_ name: String) throws(ArtifactError) {
        guard (1...128).contains(name.utf8.count), name.first != ".",
              name.unicodeScalars.allSatisfy({ ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || ".-_".unicodeScalars.contains($0) })
        else { throw .badName(name) }
    }
}

/// An upload being written to a temporary file in the store's directory as it arrives, hashed
/// on the way; it becomes an artifact only when committed (a half-finished one never shows).
public final class ArtifactUpload: RequestBodySink {
    struct State {
        var fd: FileDescriptor?
        var bytes: Int64 = 0
        var failure: String?
    }
    let state: Mutex<State>
    let path: String
    let name: String
    let limit: Int64
    let hash = SHA256Stream()
    /// Gives the upload's reservation back to the store, once (finished, abandoned or dropped).
    private let release: Mutex<(@Sendable () -> Void)?>

    init(name: String, path: String, fd: FileDescriptor, limit: Int64, release: @escaping @Sendable () -> Void = {}) {
        self.name = name; self.path = path; self.limit = limit
        state = Mutex(State(fd: fd))
        self.release = Mutex(release)
    }

    deinit { releaseReservation() }

    func releaseReservation() { release.withLock { r in let f = r; r = nil; return f }?() }

    public func write(_ bytes: UnsafeRawBufferPointer) -> Bool {
        state.withLock { s in
            guard let fd = s.fd, s.failure == nil else { return false }
            if s.bytes + Int64(bytes.count) > limit {
                s.failure = ArtifactError.tooLarge(limit: limit).description
                return false
            }
            do { try fd.writeAll(bytes) } catch {
                s.failure = "writing the upload failed: \(error)"
                return false
            }
            hash.update(bytes)
            s.bytes += Int64(bytes.count)
            return true
        }
    }

    public var failure: String? { state.withLock { $0.failure } }
    public var bytes: Int64 { state.withLock { $0.bytes } }

    public func abandon() {
        let fd = state.withLock { s -> FileDescriptor? in defer { s.fd = nil }; return s.fd }
        if let fd { fd.close(); unlink(path) }
        releaseReservation()
    }

    /// Synced and closed; the hash. Nil when the upload failed or was abandoned.
    func finish() -> (bytes: Int64, sha256: String)? {
        let taken = state.withLock { s -> (FileDescriptor, Int64)? in
            guard let fd = s.fd, s.failure == nil else { return nil }
            s.fd = nil
            return (fd, s.bytes)
        }
        guard let (fd, bytes) = taken else { unlink(path); releaseReservation(); return nil }
        let synced = fsync(fd.rawValue) == 0
        fd.close()
        guard synced else { unlink(path); releaseReservation(); return nil }
        return (bytes, hash.finish())
    }
}

/// The artifacts on disk (`state_dir/artifacts`): one data file and one `.NAME.json` record each,
/// both written and synced before an upload is acknowledged; leftovers of interrupted uploads
/// and records without data are removed at start. Room is made least recently used first.
public actor ArtifactStore {
    public let directory: String
    let config: ArtifactsConfig
    let clock: any AgentClock
    private var artifacts: [String: Artifact] = [:]
    /// What uploads may not take, read where a request's headers arrive (the server's thread):
    /// bytes reserved by uploads in flight, and bytes of artifacts runs use (never evicted).
    private final class Ledger: Sendable {
        struct Counts { var inFlight: Int64 = 0; var pinned: Int64 = 0 }
        let counts = Mutex(Counts())
        func withLock<T>(_ body: (inout Counts) -> T) -> T { counts.withLock { body(&$0) } }
    }
    private nonisolated let ledger = Ledger()
    /// The artifacts each queued or running run uses.
    private var pins: [String: Set<String>] = [:]

    public init(directory: String, config: ArtifactsConfig, clock: any AgentClock) throws(ArtifactError) {
        self.directory = directory; self.config = config; self.clock = clock
        do { try makeDirectories(directory) } catch { throw .storage("cannot create \(directory): \(error)") }
        let entries = (try? listDirectory(directory)) ?? []
        var found: [String: Artifact] = [:]
        for entry in entries where entry.hasPrefix(".upload-") { unlink(directory + "/" + entry) }
        for entry in entries where entry.hasPrefix(".") && entry.hasSuffix(".json") {
            let name = String(entry.dropFirst().dropLast(5))
            guard let bytes = readFile(directory + "/" + entry), let a = ArtifactStore.decode(bytes), a.name == name,
                  fileSize(directory + "/" + name) == a.bytes else {
                unlink(directory + "/" + entry)
                continue
            }
            found[name] = a
        }
        // Data without a record is an upload that never completed its commit.
        for entry in entries where !entry.hasPrefix(".") && found[entry] == nil { unlink(directory + "/" + entry) }
        artifacts = found
    }

    /// Opens a temporary file for an upload of `name` (called where the request's headers arrive).
    /// `expectedBytes` (the request's Content-Length; nil: chunked, up to the maximum) is
    /// reserved against the quota until the upload ends, so uploads in flight together never
    /// pass it: one that cannot fit is refused before a byte is written.
    public nonisolated func begin(_ name: String, expectedBytes: Int64? = nil) throws(ArtifactError) -> ArtifactUpload {
        try ArtifactError.check(name)
        let reserve = expectedBytes ?? config.maxBytes
        guard reserve <= config.maxBytes else { throw .tooLarge(limit: config.maxBytes) }
        let quota = config.quotaBytes
        let refusal = ledger.withLock { l -> ArtifactError? in
            guard l.inFlight + l.pinned + reserve <= quota else {
                return .noRoom(needed: reserve, inFlight: l.inFlight, pinned: l.pinned, quota: quota)
            }
            l.inFlight += reserve
            return nil
        }
        if let refusal { throw refusal }
        let release: @Sendable () -> Void = { [ledger] in ledger.withLock { $0.inFlight -= reserve } }
        let path = directory + "/.upload-" + String(UInt64.random(in: 0...UInt64.max), radix: 36) + ".part"
        let fd = Glibc.open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { release(); throw .storage("cannot create an upload file in \(directory): \(Errno.current)") }
        return ArtifactUpload(name: name, path: path, fd: FileDescriptor(rawValue: fd), limit: reserve, release: release)
    }

    /// A queued or running run uses these artifacts: they are not evicted until `unpin(run:)`.
    public func pin(_ names: [String], run: String) {
        pins[run, default: []].formUnion(names)
        updatePinned()
    }

    public func unpin(run: String) {
        guard pins.removeValue(forKey: run) != nil else { return }
        updatePinned()
    }

    public func isPinned(_ name: String) -> Bool { pins.values.contains { $0.contains(name) } }

    private func updatePinned() {
        let names = pins.values.reduce(into: Set<String>()) { $0.formUnion($1) }
        let bytes = names.compactMap { artifacts[$0]?.bytes }.reduce(0, +)
        ledger.withLock { $0.pinned = bytes }
    }

    /// Makes the finished upload the artifact `name` (replacing an older one), after making room.
    public func commit(_ upload: ArtifactUpload, user: String) throws(ArtifactError) -> Artifact {
        if let why = upload.failure { upload.abandon(); throw .upload(why) }
        guard let (bytes, sha) = upload.finish() else { throw .upload("the upload did not complete") }
        guard bytes <= config.quotaBytes else { unlink(upload.path); throw .overQuota(needed: bytes, quota: config.quotaBytes) }
        defer { upload.releaseReservation() }
        expire()
        // Least recently used first, never the one being replaced (it goes anyway), never one a run uses.
        let others = artifacts.values.filter { $0.name != upload.name }
        var used = others.reduce(Int64(0)) { $0 + $1.bytes }
        let pinnedBytes = others.filter { isPinned($0.name) }.reduce(Int64(0)) { $0 + $1.bytes }
        guard pinnedBytes + bytes <= config.quotaBytes else {
            unlink(upload.path)
            throw .noRoom(needed: bytes, inFlight: 0, pinned: pinnedBytes, quota: config.quotaBytes)
        }
        for old in others.filter({ !isPinned($0.name) }).sorted(by: { $0.lastUsedAt < $1.lastUsedAt }) where used + bytes > config.quotaBytes {
            remove(old.name)
            used -= old.bytes
        }
        let now = clock.now()
        let a = Artifact(name: upload.name, bytes: bytes, sha256: sha, uploadedBy: user, uploadedAt: now, lastUsedAt: now)
        do {
            // The record after the data: a crash in between leaves data without a record, removed at start.
            guard rename(upload.path, directory + "/" + upload.name) == 0 else { throw Errno.current }
            try writeFileAtomically(recordPath(upload.name), ArtifactStore.encode(a))
        } catch {
            unlink(upload.path)
            throw .storage("storing \(upload.name) failed: \(error)")
        }
        artifacts[upload.name] = a
        updatePinned()
        return a
    }

    public func list() -> [Artifact] {
        expire()
        return artifacts.values.sorted { $0.name < $1.name }
    }

    public func artifact(_ name: String) -> Artifact? { artifacts[name] }

    public func delete(_ name: String) throws(ArtifactError) {
        guard artifacts[name] != nil else { throw .notFound(name) }
        remove(name)
    }

    /// Opens an artifact for sending and marks it used: the descriptor (the caller closes it) and size.
    public func open(_ name: String) -> (fd: Int32, bytes: Int64)? {
        guard var a = artifacts[name] else { return nil }
        let fd = Glibc.open(directory + "/" + name, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        a.lastUsedAt = clock.now()
        artifacts[name] = a
        // The use time is kept in memory; a restart falls back to the last upload time, which only
        // makes an eviction a little less fair.
        return (fd, a.bytes)
    }

    private func expire() {
        let cutoff = clock.now() - .seconds(config.maxAgeSeconds)
        for a in artifacts.values where a.lastUsedAt < cutoff && !isPinned(a.name) { remove(a.name) }
    }

    private func remove(_ name: String) {
        unlink(recordPath(name))
        unlink(directory + "/" + name)
        artifacts[name] = nil
        updatePinned()
    }

    private func recordPath(_ name: String) -> String { directory + "/." + name + ".json" }

    static func encode(_ a: Artifact) -> [UInt8] {
        JSONValue.object(["name": .string(a.name), "bytes": .number(Double(a.bytes)), "sha256": .string(a.sha256),
                          "uploaded_by": .string(a.uploadedBy), "uploaded_at_ns": .string(String(a.uploadedAt.nanosecondsSinceEpoch)),
                          "last_used_at_ns": .string(String(a.lastUsedAt.nanosecondsSinceEpoch))]).serialized()
    }

    static func decode(_ bytes: [UInt8]) -> Artifact? {
        guard case .object(let o)? = JSONValue.parse(json: bytes), case .string(let name)? = o["name"], case .number(let size)? = o["bytes"],
              case .string(let sha)? = o["sha256"], case .string(let by)? = o["uploaded_by"],
              case .string(let up)? = o["uploaded_at_ns"], let upNs = Int64(up), case .string(let used)? = o["last_used_at_ns"], let usedNs = Int64(used)
        else { return nil }
        return Artifact(name: name, bytes: Int64(size), sha256: sha, uploadedBy: by, uploadedAt: Timestamp(nanosecondsSinceEpoch: upNs),
                        lastUsedAt: Timestamp(nanosecondsSinceEpoch: usedNs))
    }
}

func fileSize(_ path: String) -> Int64? {
    var st = stat()
    guard stat(path, &st) == 0 else { return nil }
    return Int64(st.st_size)
}
