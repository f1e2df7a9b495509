import CZlib

// The only file that talks to zlib: uploaded firmware images may come gzip-compressed.

public struct GzipError: Error, Sendable, CustomStringConvertible {
    public var description: String
}

public enum Gzip {
    /// True for data that starts with gzip's magic bytes.
    public static func isGzip(_ data: [UInt8]) -> Bool { data.count >= 2 && data[0] == 0x1f && data[1] == 0x8b }

    /// Inflates a gzip stream, refusing to produce more than `limit` bytes (a small upload must
    /// not unpack into the board's whole memory).
    public static func inflate(_ data: [UInt8], limit: Int) throws(GzipError) -> [UInt8] {
        var stream = z_stream()
        guard rte_inflate_init_gzip(&stream) == Z_OK else { throw GzipError(description: "zlib could not start inflating") }
        defer { inflateEnd(&stream) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        var input = data
        let status: Int32 = input.withUnsafeMutableBufferPointer { inBuf in
            stream.next_in = inBuf.baseAddress
            stream.avail_in = UInt32(inBuf.count)
            while true {
                let (code, produced) = chunk.withUnsafeMutableBufferPointer { c -> (Int32, Int) in
                    stream.next_out = c.baseAddress
                    stream.avail_out = UInt32(c.count)
                    let code = CZlib.inflate(&stream, Z_NO_FLUSH)
                    return (code, c.count - Int(stream.avail_out))
                }
                out.append(contentsOf: chunk[0..<produced])
                if out.count > limit { return -100 }
                if code == Z_STREAM_END { return Z_STREAM_END }
                if code != Z_OK { return code }
                if stream.avail_in == 0 && produced == 0 { return Z_BUF_ERROR }
            }
        }
        switch status {
        case Z_STREAM_END: return out
        case -100: throw GzipError(description: "the gzip data unpacks to more than \(limit) bytes")
        case Z_BUF_ERROR: throw GzipError(description: "the gzip data ends early (truncated upload?)")
        default: throw GzipError(description: "the gzip data is corrupt (zlib error \(status))")
        }
    }
}
