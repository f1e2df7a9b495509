import Configuration
import JSONDocument
import Text

public struct Identity: Sendable, Equatable {
    public var user: String
    public var admin: Bool
    /// A fleet engine (auth.tokens[].engine): acts under its user's current lease without a lease token.
    public var engine: Bool
    public init(user: String, admin: Bool, engine: Bool = false) { self.user = user; self.admin = admin; self.engine = engine }
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
            (hexToBytes(t.sha256), Identity(user: t.user, admin: t.admin, engine: t.engine))
        }
    }

    public var isEnabled: Bool { enabled }

    /// `authorization` is the raw header value: `Bearer TOKEN`, or `Basic base64(USER:TOKEN)` for
    /// clients that can only put credentials in a URL (`http://USER:TOKEN@rte:8000/…`, as labgrid's
    /// power drivers do); then USER must be the token's user.
    public func identify(authorization: String?) throws(AuthFailure) -> Identity {
        guard enabled else { return .anonymous }
        guard let header = authorization else { throw .missingToken }
        let token: String
        var claimedUser: String?
        if header.lowercased().hasPrefix("bearer ") {
            token = header.dropFirst("bearer ".count).trimming(" ")
        } else if header.lowercased().hasPrefix("basic ") {
            guard let raw = Base64.decode(header.dropFirst("basic ".count).trimming(" ")),
                  let colon = raw.firstIndex(of: UInt8(ascii: ":")) else { throw .invalidToken }
            claimedUser = String(decoding: raw[..<colon], as: UTF8.self)
            token = String(decoding: raw[(colon + 1)...], as: UTF8.self)
        } else {
            throw .missingToken
        }
        guard !token.isEmpty else { throw .missingToken }
        let hash = SHA256.hash(Array(token.utf8))
        var found: Identity?
        // Check every entry so the time taken does not depend on which one matched.
        for entry in tokens where constantTimeEquals(entry.hash, hash) { found = entry.identity }
        guard let found, claimedUser == nil || claimedUser == found.user else { throw .invalidToken }
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

