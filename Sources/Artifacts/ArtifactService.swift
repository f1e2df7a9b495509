import Auth
import Configuration

/// Where the DUT fetches artifacts: `URL/a/PREFIX/NAME`, PREFIX unguessable and tied to one
/// lease (a hash of the lease id and a secret drawn when the agent starts), so a URL works only
/// while that lease holds the board and never for the next holder.
public struct ArtifactService: Sendable {
    public let store: ArtifactStore
    public let baseURL: String?
    let secret: String

    public init(store: ArtifactStore, baseURL: String?) {
        self.store = store
        self.baseURL = baseURL.map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 }
        secret = (0..<4).map { _ in String(UInt64.random(in: 0...UInt64.max), radix: 16) }.joined()
    }

    public func prefix(forLease id: String) -> String { String(SHA256.hex(secret + "/" + id).prefix(32)) }

    public func url(_ name: String, lease id: String) -> String? {
        baseURL.map { "\($0)/a/\(prefix(forLease: id))/\(name)" }
    }
}
