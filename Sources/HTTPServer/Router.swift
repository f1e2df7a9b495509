/// A small router: method + path pattern (`/api/v1/runs/{id}`) → plain async handler.
/// Unknown paths give 404, known paths with another method 405 (with `Allow`).
public struct Router: Sendable {
    struct Route: Sendable {
        let method: String
        let pattern: String
        let segments: [Substring]
        let handler: HTTPHandler
    }
    private var routes: [Route] = []
    /// Builds the error responses for 404/405 (so they are problem documents too).
    public var notFound: @Sendable (HTTPRequest) -> HTTPResponse = { _ in .text(404, "not found") }
    public var methodNotAllowed: @Sendable (HTTPRequest, [String]) -> HTTPResponse = { _, allowed in
        HTTPResponse(status: 405, headers: [("Allow", allowed.joined(separator: ", "))])
    }

    public init() {}

    public mutating func add(_ method: HTTPMethod, _ pattern: String, _ handler: @escaping HTTPHandler) {
        routes.append(Route(method: method.rawValue, pattern: pattern, segments: pattern.split(separator: "/"), handler: handler))
    }

    /// Every (method, pattern) pair, for checking the OpenAPI document against reality.
    public var table: [(method: String, pattern: String)] { routes.map { ($0.method, $0.pattern) } }

    static func match(_ segments: [Substring], _ path: [Substring]) -> [String: String]? {
        guard segments.count == path.count else { return nil }
        var params: [String: String] = [:]
        for (s, p) in zip(segments, path) {
            if s.hasPrefix("{") && s.hasSuffix("}") {
                params[String(s.dropFirst().dropLast())] = String(p)
            } else if s != p {
                return nil
            }
        }
        return params
    }

    public func handle(_ request: HTTPRequest) async -> HTTPResponse {
        let path = request.path.split(separator: "/")
        var allowed: [String] = []
        for route in routes {
            guard let params = Router.match(route.segments, path) else { continue }
            if route.method == request.method || (request.method == "HEAD" && route.method == "GET") {
                var r = request
                r.pathParameters = params
                return await route.handler(r)
            }
            allowed.append(route.method)
        }
        return allowed.isEmpty ? notFound(request) : methodNotAllowed(request, allowed)
    }
}
