#if canImport(Glibc)
import Glibc
#endif

/// Whether a client address lies in one of the configured networks ("127.0.0.0/8", "::1/128",
/// "192.168.4.0/24"). IPv4-mapped IPv6 addresses count as their IPv4 address.
public func address(_ address: String, isIn networks: [String]) -> Bool {
    guard let a = ipBytes(address) else { return false }
    for network in networks {
        let parts = network.split(separator: "/", maxSplits: 1)
        guard let n = ipBytes(String(parts[0])), n.count == a.count else { continue }
        let bits = parts.count == 2 ? Int(parts[1]) ?? -1 : n.count * 8
        guard (0...(n.count * 8)).contains(bits) else { continue }
        var matches = true
        for i in 0..<n.count {
            let take = min(8, max(0, bits - i * 8))
            let mask: UInt8 = take == 0 ? 0 : UInt8(truncatingIfNeeded: 0xff << (8 - take))
            if a[i] & mask != n[i] & mask { matches = false; break }
        }
        if matches { return true }
    }
    return false
}

func ipBytes(_ text: String) -> [UInt8]? {
    var v4 = in_addr()
    if inet_pton(AF_INET, text, &v4) == 1 { return withUnsafeBytes(of: v4) { Array($0) } }
    var v6 = in6_addr()
    guard inet_pton(AF_INET6, text, &v6) == 1 else { return nil }
    let bytes = withUnsafeBytes(of: v6) { Array($0) }
    if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xff && bytes[11] == 0xff { return Array(bytes[12...]) }
    return bytes
}
