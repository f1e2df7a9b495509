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

        // Power and lines as one-digit text resources ("1"/"0"): the shape labgrid's stock
        // NetworkPowerPort (model "rest") and HttpDigitalOutput speak. Writes need the lease like
        // every change; those clients authenticate with http://USER:TOKEN@… (an engine identity).
        // Power behaves like the PDU outlet such a client expects: 0 cuts the supply (hard_off).
        router.add(.GET, "/api/v1/power/value", g.user { _, _ in
            HTTPResponse.text(200, await ctx.power.state() == .on ? "1" : "0", contentType: "text/plain")
        })
        router.add(.PUT, "/api/v1/power/value", g.holder { r, _, _ in
            try await refuseWhileFlashing(ctx)
            let action: PowerAction = try digit(r) ? .on : .hardOff
            do {
                let state = try await ctx.power.perform(action)
                ctx.metrics.count("power_actions_total", labels: ["action": action.rawValue])
                return HTTPResponse.text(200, state == .on ? "1" : "0", contentType: "text/plain")
            } catch { throw problem(for: error) }
        })
        router.add(.GET, "/api/v1/lines/{role}/value", g.user { r, _ in
            let role = r.pathParameters["role"] ?? ""
            guard let gpio = ctx.gpio, let line = await gpio.status().first(where: { $0.role == role }) else {
                throw gpioProblem(.unknownRole(role))
            }
            return HTTPResponse.text(200, line.active == true ? "1" : "0", contentType: "text/plain")
        })
        router.add(.PUT, "/api/v1/lines/{role}/value", g.holder { r, _, _ in
            try await refuseWhileFlashing(ctx)
            let role = r.pathParameters["role"] ?? ""
            guard let gpio = ctx.gpio, await gpio.has(role) else { throw gpioProblem(.unknownRole(role)) }
            let active = try digit(r)
            do { try await gpio.set(role, active: active) } catch { throw problem(for: error) }
            ctx.metrics.count("gpio_writes_total", labels: ["line": role])
            return HTTPResponse.text(200, active ? "1" : "0", contentType: "text/plain")
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

/// The body of a value write: "1" or "0" (a trailing newline allowed, for curl -d and echo).
private func digit(_ r: HTTPRequest) throws(Problem) -> Bool {
    var body = r.body[...]
    while let last = body.last, last == 0x0A || last == 0x0D || last == 0x20 { body = body.dropLast() }
    switch Array(body) {
    case [UInt8(ascii: "1")]: return true
    case [UInt8(ascii: "0")]: return false
    default: throw Problem.badRequest("the body is 1 (on, active) or 0 (off, inactive)")
    }
}

/// While the RTE drives the SPI bus, nobody else switches power or lines (not even the holder).
func refuseWhileFlashing(_ ctx: APIContext) async throws(Problem) {
    if let f = ctx.flasher, await f.isBusy {
        throw Problem(409, "flash-busy", "Flash in progress", "the SPI chip is being flashed; power and lines are held until the flash job ends")
    }
}
