import Configuration

public struct Identity: Sendable, Equatable {
    public var user: String
    public var admin: Bool
    public init(user: String, admin: Bool) { self.user = user; self.admin = admin }
    /// Who a request is when auth is off (loopback-only demo agents).
    public static let anonymous = Identity(user: "anonymous", admin: true)
}

public enum AuthFailure: Error, Sendable, Equatable {
    case missingToken
    case invalidToken
}

/// Bearer tokens from the config. Only SHA-256 hashes are held; comparison is constant-time.
public struct Authenticator: Sendable {
    let enabled: Bool
    let tokens: [(hash: [UInt8], identity: Identity)]

    public init(config: AuthConfig) {
        enabled = config.enabled
        tokens = config.tokens.map { t in
            (hexToBytes(t.sha256), Identity(user: t.user, admin: t.admin))
        }
    }

    public var isEnabled: Bool { enabled }

    /// `authorization` is the raw header value (`Bearer TOKEN`).
    public func identify(authorization: String?) throws(AuthFailure) -> Identity {
        guard enabled else { return .anonymous }
        guard let header = authorization, header.lowercased().hasPrefix("bearer ") else { throw .missingToken }
        let token = header.dropFirst("bearer ".count).trimmingCharacters(in: " ")
        guard !token.isEmpty else { throw .missingToken }
        let hash = SHA256.hash(Array(token.utf8))
        var found: Identity?
        // Check every entry so the time taken does not depend on which one matched.
        for entry in tokens where constantTimeEquals(entry.hash, hash) { found = entry.identity }
        guard let found else { throw .invalidToken }
        return found
    }
}

func hexToBytes(_ hex: String) -> [UInt8] {
    var out: [UInt8] = []
    var it = hex.makeIterator()
    while let a = it.next(), let b = it.next() {
        out.append(UInt8(String([a, b]), radix: 16) ?? 0)
    }
    return out
}

extension Substring {
    func trimmingCharacters(in set: Character) -> String {
        String(self.drop { $0 == set }.reversed().drop { $0 == set }.reversed())
    }
}
