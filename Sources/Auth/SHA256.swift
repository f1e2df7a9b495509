import CNettle

// The only file that talks to nettle (GnuTLS's crypto library, already on the board for
// libmicrohttpd's TLS): SHA-256 of API tokens and constant-time comparison of their hashes.

/// SHA-256 from nettle.
public enum SHA256 {
    public static let digestBytes = 32

    public static func hash(_ message: [UInt8]) -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: digestBytes)
        message.withUnsafeBufferPointer { m in
            digest.withUnsafeMutableBufferPointer { d in rte_sha256(m.baseAddress, m.count, d.baseAddress) }
        }
        return digest
    }

    public static func hex(_ text: String) -> String { hex(bytes: Array(text.utf8)) }

    public static func hex(bytes: [UInt8]) -> String { hexString(hash(bytes)) }
}

/// Compares two byte strings in time that depends only on their lengths (nettle's memeql_sec),
/// so a wrong token's hash reveals nothing through timing.
public func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    if a.isEmpty { return true }
    return a.withUnsafeBufferPointer { pa in
        b.withUnsafeBufferPointer { pb in nettle_memeql_sec(pa.baseAddress, pb.baseAddress, a.count) != 0 }
    }
}

/// Random bytes from the kernel, as lower-case hex (tokens and ids).
public func randomHex(bytes: Int) -> String {
    var g = SystemRandomNumberGenerator()
    return (0..<bytes).map { _ in
        let b = UInt8.random(in: 0...255, using: &g)
        let s = String(b, radix: 16); return s.count == 1 ? "0" + s : s
    }.joined()
}

/// MD5 from nettle, for RteCtrl's `file_md5` (a name for an upload, not a security check).
public enum MD5 {
    public static func hex(bytes: [UInt8]) -> String {
        var digest = [UInt8](repeating: 0, count: 16)
        bytes.withUnsafeBufferPointer { m in digest.withUnsafeMutableBufferPointer { d in rte_md5(m.baseAddress, m.count, d.baseAddress) } }
        return hexString(digest)
    }
}

/// Lower-case hex of a digest.
func hexString(_ bytes: [UInt8]) -> String {
    let digits = Array("0123456789abcdef".utf8)
    return String(decoding: bytes.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 0xf)]] }, as: UTF8.self)
}

/// SHA-256 of data fed in pieces; one owner at a time (the upload it hashes).
public final class SHA256Stream: @unchecked Sendable {
    private let ctx: OpaquePointer
    private var done = false

    public init() { ctx = OpaquePointer(rte_sha256_new()!) }
    deinit { rte_sha256_free(UnsafeMutablePointer(ctx)) }

    public func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, !done else { return }
        rte_sha256_update(UnsafeMutablePointer(ctx), base.assumingMemoryBound(to: UInt8.self), bytes.count)
    }

    /// The digest, hex; the stream takes no more data after.
    public func finish() -> String {
        var digest = [UInt8](repeating: 0, count: 32)
        digest.withUnsafeMutableBufferPointer { rte_sha256_finish(UnsafeMutablePointer(ctx), $0.baseAddress) }
        done = true
        return hexString(digest)
    }
}
