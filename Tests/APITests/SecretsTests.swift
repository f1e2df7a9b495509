import AgentClock
@testable import Leases
import Testing

/// A value that holds a secret prints without it, however it is printed (issue 16, D1).
@Suite struct SecretsTests {
    @Test func aLeaseAndEveryLeaseErrorPrintWithoutTheToken() {
        let secret = "0123456789abcdef-secret-lease-token"
        let lease = Lease(id: "lease-1", holder: "bob", purpose: "flash", token: secret, grantedAt: Timestamp(nanosecondsSinceEpoch: 0),
                          expiresAt: Timestamp(nanosecondsSinceEpoch: 3_600_000_000_000), boundAddress: "10.0.0.2", requestID: "req-secret", run: nil)
        let errors: [LeaseError] = [.busy(lease, queueLength: 2), .waitTimedOut(lease), .leaseRequired(current: lease),
                                    .invalidLeaseToken(current: lease)]
        var dumped = ""
        dump(lease, to: &dumped)
        var texts = ["\(lease)", String(describing: lease), String(reflecting: lease), dumped, "\([lease])", "\(Optional(lease) as Any)"]
        for e in errors {
            var d = ""
            dump(e, to: &d)
            texts += ["\(e)", String(describing: e), String(reflecting: e), "\(e as any Error)", d]
        }
        for t in texts {
            #expect(!t.contains(secret), "token printed: \(t)")
            #expect(!t.contains("req-secret"), "idempotency key printed: \(t)")
        }
        #expect("\(errors[0])".contains("bob"), "the holder is still named")
    }
}
