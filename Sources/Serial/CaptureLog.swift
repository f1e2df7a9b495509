import AgentClock
import POSIXIO
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The capture on disk: rotated files named by the offset of their first byte
/// (`serial-00000000000000123456.log`), each with an index of arrival times and events
/// (`.idx`, one text line per chunk: `T offset ns`, `E offset ns kind detail`).
/// Because file names carry offsets, offsets continue across restarts and old bytes can be
/// served back by offset after they left the memory ring.
public final class CaptureLog: Sendable {
    struct Segment { var start: UInt64; var size: UInt64 }
    struct State {
        var segments: [Segment] = []
        var data: FileDescriptor?
        var index: FileDescriptor?
        var writeErrors: UInt64 = 0
        var lastError: String?
    }
    public let directory: String
    public let maxFileBytes: Int64
    public let maxFiles: Int
    private let state: Mutex<State>

    public init(directory: String, maxFileBytes: Int64, maxFiles: Int) throws(Errno) {
        self.directory = directory
        self.maxFileBytes = maxFileBytes
        self.maxFiles = maxFiles
        try makeDirectories(directory)
        var segments: [Segment] = []
        for name in try listDirectory(directory) where name.hasPrefix("serial-") && name.hasSuffix(".log") {
            let digits = name.dropFirst("serial-".count).dropLast(".log".count)
            guard let start = UInt64(digits) else { continue }
            var st = stat()
            guard stat("\(directory)/\(name)", &st) == 0 else { continue }
            segments.append(Segment(start: start, size: UInt64(st.st_size)))
        }
        segments.sort { $0.start < $1.start }
        state = Mutex(State(segments: segments))
    }

    func path(_ start: UInt64, _ ext: String) -> String {
        let digits = String(start)
        return "\(directory)/serial-\(String(repeating: "0", count: max(0, 20 - digits.count)))\(digits).\(ext)"
    }

    public var startOffset: UInt64 { state.withLock { $0.segments.first?.start ?? 0 } }
    public var endOffset: UInt64 { state.withLock { s in s.segments.last.map { $0.start + $0.size } ?? 0 } }
    public var fileCount: Int { state.withLock { $0.segments.count } }
    public var writeErrors: UInt64 { state.withLock { $0.writeErrors } }

    /// Appends bytes whose first byte has capture offset `offset`.
    func append(_ bytes: UnsafeRawBufferPointer, offset: UInt64, at: Timestamp) {
        state.withLock { s in
            do {
                try openForAppend(&s, at: offset)
                guard let data = s.data, let index = s.index else { return }
                try data.writeAll(bytes)
                try index.writeAll(Array("T \(offset) \(at.nanosecondsSinceEpoch)\n".utf8))
                s.segments[s.segments.count - 1].size += UInt64(bytes.count)
            } catch {
                s.writeErrors += 1
                s.lastError = "\(error)"
            }
        }
    }

    func appendEvent(_ e: CaptureEvent) {
        state.withLock { s in
            do {
                try openForAppend(&s, at: e.offset)
                let detail = e.detail.map { $0 == "\n" ? " " : $0 }
                try s.index?.writeAll(Array("E \(e.offset) \(e.at.nanosecondsSinceEpoch) \(e.kind.rawValue) \(String(detail))\n".utf8))
            } catch {
                s.writeErrors += 1
            }
        }
    }

    private func openForAppend(_ s: inout State, at offset: UInt64) throws(Errno) {
        if let last = s.segments.last, s.data != nil, last.size < UInt64(maxFileBytes) { return }
        if let data = s.data { try? data.fsync(); data.close() }
        if let index = s.index { index.close() }
        s.data = nil; s.index = nil
        // Continue the last file after a restart if it still has room; else start a new one.
        let reuse = s.segments.last.map { $0.start + $0.size == offset && $0.size < UInt64(maxFileBytes) } ?? false
        if !reuse { s.segments.append(Segment(start: offset, size: 0)) }
        let start = s.segments[s.segments.count - 1].start
        s.data = try FileDescriptor.open(path(start, "log"), [.writeOnly, .create, .append])
        s.index = try FileDescriptor.open(path(start, "idx"), [.writeOnly, .create, .append])
        while s.segments.count > maxFiles {
            let old = s.segments.removeFirst()
            unlink(path(old.start, "log")); unlink(path(old.start, "idx"))
        }
    }

    /// Reads persisted bytes from `offset` (possibly fewer than `limit`, never across a file end).
    public func read(from offset: UInt64, limit: Int) -> [UInt8]? {
        let seg: Segment? = state.withLock { s in s.segments.last(where: { $0.start <= offset && offset < $0.start + $0.size }) }
        guard let seg else { return nil }
        guard let fd = try? FileDescriptor.open(path(seg.start, "log"), [.readOnly]) else { return nil }
        defer { fd.close() }
        let count = Int(min(UInt64(limit), seg.start + seg.size - offset))
        var out = [UInt8](repeating: 0, count: count)
        let n = out.withUnsafeMutableBytes { pread(fd.rawValue, $0.baseAddress, count, off_t(offset - seg.start)) }
        guard n >= 0 else { return nil }
        return Array(out[0..<n])
    }

    /// Flushes and closes the current files.
    public func close() {
        state.withLock { s in
            if let d = s.data { try? d.fsync(); d.close() }
            s.index?.close()
            s.data = nil; s.index = nil
        }
    }
}

