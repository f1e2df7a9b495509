@_exported import JSONDocument
import HTTPServer
import Leases

/// An RFC 9457 problem document: what failed, and what to do about it.
public struct Problem: Error, Sendable {
    public var status: Int
    public var type: String
    public var title: String
    public var detail: String
    public var extra: [String: JSONValue] = [:]
    /// Headers of the answer beside the content type (Retry-After).
    public var headers: [(String, String)] = []

    public init(_ status: Int, _ type: String, _ title: String, _ detail: String, extra: [String: JSONValue] = [:],
                headers: [(String, String)] = []) {
        self.status = status; self.type = type; self.title = title; self.detail = detail; self.extra = extra
        self.headers = headers
    }

    public var response: HTTPResponse {
        var object: [String: JSONValue] = extra
        object["type"] = .string("https://rte-agent.dev/problems/\(type)")
        object["title"] = .string(title)
        object["status"] = .number(Double(status))
        object["detail"] = .string(detail)
        var headers = [("Content-Type", "application/problem+json")] + self.headers
        if status == 401 { headers.append(("WWW-Authenticate", "Bearer realm=\"rte-agent\"")) }
        return HTTPResponse(status: status, headers: headers, body: .bytes(JSONValue.object(object).serialized()))
    }

    static func badRequest(_ detail: String) -> Problem { Problem(400, "bad-request", "Bad request", detail) }
    static func unprocessable(_ detail: String) -> Problem { Problem(422, "invalid-value", "Invalid value", detail) }
    static func notFound(_ detail: String) -> Problem { Problem(404, "not-found", "Not found", detail) }

    static func leaseInfo(_ lease: Lease?) -> [String: JSONValue] {
        guard let lease else { return [:] }
        return ["holder": .string(lease.holder), "purpose": .string(lease.purpose),
                "expires_at": .string(lease.expiresAt.iso8601)]
    }

    static func from(_ error: LeaseError) -> Problem {
        switch error {
        case .busy(let lease, let queueLength):
            var extra = leaseInfo(lease)
            extra["queue_length"] = .number(Double(queueLength))
            let who = lease.map { "\($0.holder) (\($0.purpose)) until \($0.expiresAt.iso8601)" } ?? "the waiting queue"
            return Problem(409, "device-leased", "Device is leased",
                           "the device is held by \(who); retry later or ask to wait with \"wait_s\"", extra: extra)
        case .waitTimedOut(let lease):
            return Problem(409, "wait-timed-out", "Device still leased",
                           "waited without getting the device" + (lease.map { "; \($0.holder) holds it until \($0.expiresAt.iso8601)" } ?? ""),
                           extra: leaseInfo(lease))
        case .leaseRequired(let current):
            if let current {
                return Problem(423, "device-leased", "Device is leased by someone else",
                               "\(current.holder) holds the device until \(current.expiresAt.iso8601) (\(current.purpose)); this change needs their lease token in X-Lease-Token",
                               extra: leaseInfo(current))
            }
            return Problem(409, "lease-required", "Lease required",
                           "changing the DUT needs a lease: POST /api/v1/leases, then send its token in X-Lease-Token")
        case .invalidLeaseToken(let current):
            if let current {
                return Problem(423, "device-leased", "Device is leased by someone else",
                               "the lease token is not the current lease's; \(current.holder) holds the device until \(current.expiresAt.iso8601)",
                               extra: leaseInfo(current))
            }
            return Problem(409, "lease-expired", "Lease is no longer valid",
                           "this lease token has expired, was released or broken; take a new lease with POST /api/v1/leases")
        case .ttlOutOfRange(let max):
            return unprocessable("ttl_s must be between 1 and \(max) seconds (leases.max_ttl_s)")
        case .notAdmin:
            return Problem(403, "forbidden", "Forbidden", "breaking a lease needs an admin token")
        case .noSuchLease:
            return Problem(404, "no-lease", "No lease", "nobody holds the device")
        case .notCurrent(let expected, let current):
            return Problem(409, "not-current", "Lease not current",
                           "lease \(expected) is no longer the current one" + (current.map { "; \($0.holder) holds the device (\($0.id))" } ?? "; nobody holds the device") + "; nothing was broken",
                           extra: leaseInfo(current))
        case .waitCancelled:
            return Problem(409, "wait-cancelled", "Stopped waiting", "the request stopped waiting for the device before it was granted")
        case .notDurable:
            return Problem(503, "state-not-durable", "State could not be saved",
                           "the lease state could not be written to the state directory, so the change was not made; check the disk (the agent's log names the file and the error) and retry")
        }
    }
}

extension Problem {
    /// A document field error as a problem: 400 when malformed, 422 when well-formed but unacceptable.
    static func from(_ e: DocumentError) -> Problem {
        let text = e.path.isEmpty ? e.message : "field \"\(e.path)\" \(e.message)"
        return e.kind == .malformed ? badRequest(text) : unprocessable(text)
    }
}

/// A JSON object request body read field by field (JSONDocument's FieldReader), its errors as problems.
struct JSONBody {
    let fields: FieldReader

    init(_ request: HTTPRequest, allowed: Set<String>, allowEmpty: Bool = false) throws(Problem) {
        var value = JSONValue.object([:])
        if !(request.body.isEmpty && allowEmpty) {
            let parsed: JSONValue
            do { parsed = try JSONValue.parseBody(json: request.body) } catch { throw Problem.badRequest("the body \(error.message)") }
            guard case .object = parsed else { throw Problem.badRequest("the body must be a JSON object, got \(parsed.typeName)") }
            value = parsed
        }
        do { fields = try FieldReader(value, allowed: allowed) } catch { throw Problem.from(error) }
    }

    func string(_ key: String) throws(Problem) -> String? {
        do { return try fields.string(key) } catch { throw Problem.from(error) }
    }

    func int(_ key: String) throws(Problem) -> Int? {
        do { return try fields.int(key) } catch { throw Problem.from(error) }
    }

    func bool(_ key: String) throws(Problem) -> Bool? {
        do { return try fields.bool(key) } catch { throw Problem.from(error) }
    }

    func value(_ key: String) -> JSONValue? { fields.value(key) }
}
