import CGPIOD
import Configuration
#if canImport(Glibc)
import Glibc
#endif

// The only file that talks to libgpiod (v1 API, Debian libgpiod-dev 1.6). Pointers stay in here.

/// An open gpiochip, closed when the last line on it is released.
final class LibgpiodChip: @unchecked Sendable {
    fileprivate let handle: OpaquePointer
    let name: String
    let label: String

    init(lookup description: String) throws(GPIOError) {
        errno = 0
        guard let h = gpiod_chip_open_lookup(description) else {
            let code = errno == 0 ? ENOENT : errno
            let detail = code == ENOENT || code == ENODEV || code == ENOTTY
                ? "no such GPIO chip (is the driver loaded? `gpiodetect` lists chips)"
                : String(cString: strerror(code))
            throw GPIOError(kind: code == ENOENT || code == ENODEV || code == ENOTTY ? .chipNotFound : .system(code),
                            chip: description, line: "-", role: "-", detail: detail)
        }
        handle = h
        name = String(cString: gpiod_chip_name(h))
        label = String(cString: gpiod_chip_label(h))
    }

    deinit { gpiod_chip_close(handle) }
}

/// A line requested through libgpiod.
final class LibgpiodLine: GPIOLine, @unchecked Sendable {
    let config: GPIOLineConfig
    private let chip: LibgpiodChip
    private var line: OpaquePointer?
    private(set) var direction: LineDirection
    let resolvedOffset: Int
    var chipName: String { chip.name }

    init(chip: LibgpiodChip, config: GPIOLineConfig) throws(GPIOError) {
        self.chip = chip
        self.config = config
        self.direction = config.direction
        let found: OpaquePointer?
        let lineText: String
        if let offset = config.offset {
            found = gpiod_chip_get_line(chip.handle, UInt32(offset))
            lineText = "\(offset)"
        } else {
            found = gpiod_chip_find_line(chip.handle, config.lineName ?? "")
            lineText = "\"\(config.lineName ?? "")\""
        }
        guard let l = found else {
            throw GPIOError(kind: .lineNotFound, chip: chip.name, line: lineText, role: config.role,
                            detail: "no such line on this chip (\(chip.label))")
        }
        resolvedOffset = Int(gpiod_line_offset(l))
        var flags: Int32 = 0
        if config.activeLow { flags |= rte_gpiod_flag_active_low() }
        if config.direction == .output && config.drive == .openDrain { flags |= rte_gpiod_flag_open_drain() }
        switch config.bias {
        case .asIs: break
        case .disable: flags |= rte_gpiod_flag_bias_disable()
        case .pullUp: flags |= rte_gpiod_flag_bias_pull_up()
        case .pullDown: flags |= rte_gpiod_flag_bias_pull_down()
        }
        let requestType = config.direction == .output
            ? Int32(GPIOD_LINE_REQUEST_DIRECTION_OUTPUT)
            : Int32(GPIOD_LINE_REQUEST_DIRECTION_INPUT)
        let result = config.consumer.withCString { consumer -> Int32 in
            var request = gpiod_line_request_config(consumer: consumer, request_type: requestType, flags: flags)
            return gpiod_line_request(l, &request, config.initialValue ? 1 : 0)
        }
        if result != 0 {
            let code = errno
            throw GPIOError(kind: code == EBUSY ? .busy : .system(code), chip: chip.name, line: "\(resolvedOffset)",
                            role: config.role, detail: String(cString: strerror(code)))
        }
        line = l
    }

    private func failure(_ code: Int32) -> GPIOError {
        GPIOError(kind: .system(code), chip: chip.name, line: "\(resolvedOffset)", role: config.role, detail: String(cString: strerror(code)))
    }

    func setValue(_ active: Bool) throws(GPIOError) {
        guard let line else { throw failure(EBADF) }
        guard direction == .output else {
            throw GPIOError(kind: .notAnOutput, chip: chip.name, line: "\(resolvedOffset)", role: config.role, detail: "is an input line")
        }
        if gpiod_line_set_value(line, active ? 1 : 0) != 0 { throw failure(errno) }
    }

    func setDirection(_ newDirection: LineDirection, active: Bool) throws(GPIOError) {
        guard let line else { throw failure(EBADF) }
        // libgpiod 1.5+ reconfigures a held line in place; the request's flags (active-low,
        // drive, bias) stay as requested.
        let result = newDirection == .output
            ? gpiod_line_set_direction_output(line, active ? 1 : 0)
            : gpiod_line_set_direction_input(line)
        if result != 0 { throw failure(errno) }
        direction = newDirection
    }

    func value() throws(GPIOError) -> Bool {
        guard let line else { throw failure(EBADF) }
        let v = gpiod_line_get_value(line)
        if v < 0 { throw failure(errno) }
        return v == 1
    }

    func release() {
        if let line { gpiod_line_release(line) }
        line = nil
    }
}

/// The backend for real hardware: `/dev/gpiochipN` through libgpiod.
public struct LibgpiodBackend: GPIOBackend {
    public init() {}

    public func request(_ lines: [GPIOLineConfig]) throws(GPIOError) -> [any GPIOLine] {
        var chips: [String: LibgpiodChip] = [:]
        var requested: [LibgpiodLine] = []
        do throws(GPIOError) {
            for config in lines {
                do {
                    let chip: LibgpiodChip
                    if let c = chips[config.chip] { chip = c } else {
                        chip = try LibgpiodChip(lookup: config.chip)
                        chips[config.chip] = chip
                    }
                    requested.append(try LibgpiodLine(chip: chip, config: config))
                } catch {
                    // Say which role failed even when the chip was looked up by another line.
                    var e = error
                    e.role = config.role
                    if e.line == "-" { e.line = config.offset.map(String.init) ?? "\"\(config.lineName ?? "")\"" }
                    throw e
                }
            }
        } catch {
            requested.forEach { $0.release() }
            throw error
        }
        return requested
    }

    /// libgpiod's version string, to prove at start which library is linked.
    public static var libraryVersion: String { String(cString: gpiod_version_string()) }
}
