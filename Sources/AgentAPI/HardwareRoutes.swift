import GPIO
import HTTPServer
import Power

enum HardwareRoutes {
    static func add(_ router: inout Router, _ ctx: APIContext, _ g: Guard) {
        struct PowerView: Encodable { var state: String; var source: String; var action: String? }

        router.add(.GET, "/api/v1/power", g.user { _, _ in
            json(200, PowerView(state: await ctx.power.state().rawValue, source: await ctx.power.stateSource, action: nil))
        })

        router.add(.POST, "/api/v1/power", g.holder { r, _, _ in
            try await refuseWhileFlashing(ctx)
            let body = try JSONBody(r, allowed: ["action"])
            guard let name = try body.string("action") else { throw Problem.badRequest("field \"action\" is required") }
            guard let action = PowerAction(rawValue: name) else {
                throw Problem.unprocessable("unknown action \"\(name)\" (one of \(PowerAction.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            do {
                let state = try await ctx.power.perform(action)
                ctx.metrics.count("power_actions_total", labels: ["action": action.rawValue])
                return json(200, PowerView(state: state.rawValue, source: await ctx.power.stateSource, action: action.rawValue))
            } catch { throw problem(for: error) }
        })

        router.add(.GET, "/api/v1/lines", g.user { _, _ in
            guard let gpio = ctx.gpio else { return json(200, [GPIOLineStatus]()) }
            return json(200, await gpio.status())
        })

        router.add(.GET, "/api/v1/lines/{role}", g.user { r, _ in
            let role = r.pathParameters["role"] ?? ""
            guard let gpio = ctx.gpio, let line = await gpio.status().first(where: { $0.role == role }) else {
                throw gpioProblem(.unknownRole(role))
            }
            return json(200, line)
        })

        router.add(.POST, "/api/v1/lines/{role}", g.holder { r, _, _ in
            try await refuseWhileFlashing(ctx)
            let role = r.pathParameters["role"] ?? ""
            let body = try JSONBody(r, allowed: ["active", "pulse_ms"])
            guard let gpio = ctx.gpio, await gpio.has(role) else { throw gpioProblem(.unknownRole(role)) }
            let active = try body.bool("active")
            let pulse = try body.int("pulse_ms")
            switch (active, pulse) {
            case (nil, nil): throw Problem.badRequest("give \"active\" (true/false) or \"pulse_ms\"")
            case (.some, .some): throw Problem.badRequest("give either \"active\" or \"pulse_ms\", not both")
            case (let a?, nil):
                do { try await gpio.set(role, active: a) } catch { throw problem(for: error) }
            case (nil, let ms?):
                guard (1...60_000).contains(ms) else { throw Problem.unprocessable("pulse_ms must be between 1 and 60000") }
                do { try await gpio.pulse(role, for: .milliseconds(ms)) } catch { throw problem(for: error) }
            }
            ctx.metrics.count("gpio_writes_total", labels: ["line": role])
            guard let line = await gpio.status().first(where: { $0.role == role }) else { throw gpioProblem(.unknownRole(role)) }
            return json(200, line)
        })
    }
}

/// While the RTE drives the SPI bus, nobody else switches power or lines (not even the holder).
func refuseWhileFlashing(_ ctx: APIContext) async throws(Problem) {
    if let f = ctx.flasher, await f.isBusy {
        throw Problem(409, "flash-busy", "Flash in progress", "the SPI chip is being flashed; power and lines are held until the flash job ends")
    }
}
