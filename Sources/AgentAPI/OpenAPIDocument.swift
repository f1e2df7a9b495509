import JSONDocument
import POSIXIO

/// The OpenAPI 3.1 description of the whole API lives in `deploy/openapi.json` (installed as
/// `/usr/share/rte-agent/openapi.json`, `http.openapi`), where it can be reviewed and linted; a
/// test checks it against the router's routes and with openapi-spec-validator. The agent serves
/// it with `info.version` set to its own version, so the version is kept in one place.
enum OpenAPIDocument {
    /// Read once, when the router is built; a missing or broken file is a 503 that says where.
    static func load(_ path: String) -> Result<[UInt8], Problem> {
        guard let bytes = readFile(path) else {
            return .failure(Problem(503, "api-document-missing", "API document not installed",
                                    "cannot read \(path): install deploy/openapi.json there or set http.openapi"))
        }
        let tree: JSONTree
        do { tree = try JSONTree.parse(bytes) } catch {
            return .failure(Problem(503, "api-document-broken", "API document not valid", "\(path): \(error)"))
        }
        guard case .object(var members) = tree,
              let i = members.firstIndex(where: { $0.0 == "info" }), case .object(var info) = members[i].1 else {
            return .failure(Problem(503, "api-document-broken", "API document not valid", "\(path): no info object"))
        }
        info.removeAll { $0.0 == "version" }
        info.append(("version", .string(agentVersion)))
        members[i].1 = .object(info)
        return .success(JSONTree.object(members).text())
    }
}
