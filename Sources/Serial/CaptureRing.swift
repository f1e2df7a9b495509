/// The capture's bytes in memory: fixed-size segments, each allocated the first time the
/// capture reaches it and never moved after. Growing a single array instead re-allocates it
/// and copies everything held (up to 15 MiB of a 16 MiB ring) under the capture's lock on the
/// serial reader thread — milliseconds added to the prompt that arrives then.
struct CaptureRing {
    let capacity: Int
    let segmentSize: Int
    private(set) var segments: [[UInt8]] = []
    /// Bytes allocated so far (grows to `capacity`).
    private(set) var allocated = 0

    init(capacity: Int, segmentSize: Int = 1 << 20) {
        precondition(capacity > 0 && segmentSize > 0)
        self.capacity = capacity
        self.segmentSize = min(segmentSize, capacity)
    }

    /// Allocates segments until positions `0..<min(count, capacity)` exist.
    mutating func reserve(_ count: Int) {
        let target = min(count, capacity)
        while allocated < target {
            let size = min(segmentSize, capacity - allocated)
            // Uninitialized: a position is only ever read after it was written.
            segments.append([UInt8](unsafeUninitializedCapacity: size) { _, n in n = size })
            allocated += size
        }
    }

    /// Writes `bytes` (at most `capacity`) from ring position `position`, wrapping at the end.
    /// The positions must have been reserved.
    mutating func write(_ bytes: UnsafeRawBufferPointer, at position: Int) {
        var pos = position, done = 0
        while done < bytes.count {
            let segment = pos / segmentSize, within = pos - segment * segmentSize
            let n = min(bytes.count - done, segments[segment].count - within)
            segments[segment].withUnsafeMutableBytes { dst in
                dst.baseAddress!.advanced(by: within).copyMemory(from: bytes.baseAddress!.advanced(by: done), byteCount: n)
            }
            done += n
            pos += n
            if pos == capacity { pos = 0 }
        }
    }

    /// Appends `count` bytes from ring position `position` (wrapping) to `out`.
    func copy(from position: Int, count: Int, into out: inout [UInt8]) {
        var pos = position, left = count
        while left > 0 {
            let segment = pos / segmentSize, within = pos - segment * segmentSize
            let n = min(left, segments[segment].count - within)
            out.append(contentsOf: segments[segment][within..<(within + n)])
            left -= n
            pos += n
            if pos == capacity { pos = 0 }
        }
    }
}
