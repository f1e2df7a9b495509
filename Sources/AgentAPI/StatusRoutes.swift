import HTTPServer

/// `/metrics`: the Prometheus exposition of what the modules counted.
enum StatusRoutes {
    static func metrics(_ router: inout Router, _ ctx: APIContext, _ g: Guard) {
        router.add(.GET, "/metrics", g.open { _ in
            HTTPResponse.text(200, await ctx.metrics.exposition(), contentType: "text/plain; version=0.0.4")
        })
    }
}
