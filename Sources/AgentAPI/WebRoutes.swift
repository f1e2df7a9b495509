import Auth
import Configuration
import HTTPServer
import JSONDocument
import POSIXIO
#if canImport(Glibc)
import Glibc
#endif

/// The web page: its static files at `/` and `/ui/…`, Debian's xterm.js, and the run specs the
/// page offers. The page itself is public; everything it shows comes from the API with the
/// user's bearer token (kept in the browser's session storage, so no cookies and no CSRF).
enum WebRoutes {
    /// Only plain file names: no folders, no dot files, so nothing outside the folders is reachable.
    static func safeName(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 128 && !name.hasPrefix(".")
            && name.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A) || $0 == 0x2E || $0 == 0x2D || $0 == 0x5F }
    }

    static func contentType(_ name: String) -> String {
        switch name.split(separator: ".").last.map(String.init) ?? "" {
        case "html": "text/html; charset=utf-8"
        case "js": "text/javascript; charset=utf-8"
        case "css": "text/css; charset=utf-8"
        case "svg": "image/svg+xml"
        case "png": "image/png"
        case "json": "application/json"
        case "yaml", "yml": "text/yaml; charset=utf-8"
        default: "application/octet-stream"
        }
    }

    /// Same-origin only: no CDN, font or tracker can load. xterm.js adds its own <style> elements.
    static let securityHeaders = [
        ("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'"),
        ("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer"), ("Cache-Control", "no-cache"),
    ]

    static func file(_ path: String, name: String) -> HTTPResponse {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return Problem.notFound("no file \(name) (web.root / web.xterm in the config)").response }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            return Problem.notFound("no file \(name)").response
        }
        return HTTPResponse(status: 200, headers: [("Content-Type", contentType(name))] + securityHeaders,
                            body: .file(descriptor: fd, offset: 0, length: UInt64(st.st_size)))
    }

    /// xterm.js files by the names the page asks for (Debian keeps addons in subfolders).
    static let xtermFiles = ["xterm.js": "xterm.js", "xterm.css": "xterm.css", "xterm-addon-fit.js": "addons/fit/xterm-addon-fit.js"]

    static func add(_ router: inout Router, _ ctx: APIContext, _ g: Guard) {
        let web = ctx.config.web
        router.add(.GET, "/api/v1/me", g.user { _, id in
            struct Me: Encodable { var user: String; var admin: Bool; var authentication: Bool }
            return json(200, Me(user: id.user, admin: id.admin, authentication: ctx.config.auth.enabled))
        })
        router.add(.GET, "/api/v1/specs", g.user { _, _ in
            struct Spec: Encodable { var name: String; var bytes: Int }
            let names = ((try? listDirectory(web.specs)) ?? []).filter { safeName($0) && ($0.hasSuffix(".yaml") || $0.hasSuffix(".yml") || $0.hasSuffix(".json")) }
            let specs = names.sorted().compactMap { n in readFile(web.specs + "/" + n).map { Spec(name: n, bytes: $0.count) } }
            return json(200, ["specs": specs])
        })
        router.add(.GET, "/api/v1/specs/{name}", g.user { r, _ in
            let name = r.pathParameters["name"] ?? ""
            guard safeName(name), let bytes = readFile(web.specs + "/" + name), bytes.count <= 1 << 20 else {
                throw Problem.notFound("no run spec \"\(name)\" in \(web.specs)")
            }
            return HTTPResponse(status: 200, headers: [("Content-Type", "text/yaml; charset=utf-8")], body: .bytes(bytes))
        })
        guard web.enabled else { return }
        router.add(.GET, "/", g.open { _ in file(web.root + "/index.html", name: "index.html") })
        router.add(.GET, "/ui/{name}", g.open { r in
            let name = r.pathParameters["name"] ?? ""
            guard safeName(name) else { throw Problem.notFound("no file \(name)") }
            return file(web.root + "/" + name, name: name)
        })
        router.add(.GET, "/ui/xterm/{name}", g.open { r in
            let name = r.pathParameters["name"] ?? ""
            guard let relative = xtermFiles[name] else { throw Problem.notFound("no file \(name)") }
            return file(web.xterm + "/" + relative, name: name)
        })
    }
}
