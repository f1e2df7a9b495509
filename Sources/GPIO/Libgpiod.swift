import CGPIOD
import Configuration
#if canImport(Glibc)
import Glibc
#endif

// The only file that talks to libgpiod, through Sources/CGPIOD/shim.h: the same calls on libgpiod
// 1.6 and 2.x (the system's <gpiod.h> picks one at build time). Pointers stay in here.

/// An open gpiochip, closed when the last line on it is released.
final class LibgpiodChip: @unchecked Sendable {
    fileprivate let handle: UnsafeMutablePointer<rte_gpio_chip>
    let name: String
    let label: String

    init(lookup description: String) throws(GPIOError) {
        guard let h = rte_gpio_chip_open(description) else {
            let code = errno == 0 ? ENOENT : errno
            let missing = code == ENOENT || code == ENODEV || code == ENOTTY
            let detail = missing ? "no such GPIO chip (is the driver loaded? `gpiodetect` lists chips)" : String(cString: strerror(code))
            throw GPIOError(kind: missing ? .chipNotFound : .system(code), chip: description, line: "-", role: "-", detail: detail)
        }
        handle = h
        name = String(cString: rte_gpio_chip_name(h))
        label = String(cString: rte_gpio_chip_label(h))
    }

    deinit { rte_gpio_chip_close(handle) }
}

/// A line requested through libgpiod.
final class LibgpiodLine: GPIOLine, @unchecked Sendable {
    let config: GPIOLineConfig
    private let chip: LibgpiodChip
    private var request: UnsafeMutablePointer<rte_gpio_request>?
    private(set) var direction: LineDirection
    let resolvedOffset: Int
    var chipName: String { chip.name }

    init(chip: LibgpiodChip, config: GPIOLineConfig) throws(GPIOError) {
        self.chip = chip
        self.config = config
        self.direction = config.direction
        let offset: Int
        if let o = config.offset {
            guard o >= 0, o < Int(rte_gpio_chip_num_lines(chip.handle)) else {
                throw GPIOError(kind: .lineNotFound, chip: chip.name, line: "\(o)", role: config.role,
                                detail: "no such line on this chip (\(chip.label) has \(rte_gpio_chip_num_lines(chip.handle)))")
            }
            offset = o
        } else {
            let found = rte_gpio_chip_find_line(chip.handle, config.lineName ?? "")
            guard found >= 0 else {
                throw GPIOError(kind: .lineNotFound, chip: chip.name, line: "\"\(config.lineName ?? "")\"", role: config.role,
                                detail: "no such line on this chip (\(chip.label))")
            }
            offset = Int(found)
        }
        resolvedOffset = offset
        let bias: Int32 = switch config.bias {
        case .asIs: Int32(RTE_GPIO_BIAS_AS_IS)
        case .disable: Int32(RTE_GPIO_BIAS_DISABLE)
        case .pullUp: Int32(RTE_GPIO_BIAS_PULL_UP)
        case .pullDown: Int32(RTE_GPIO_BIAS_PULL_DOWN)
        }
        let output = config.direction == .output
        guard let r = rte_gpio_request_line(chip.handle, UInt32(offset), config.consumer, output ? 1 : 0, config.initialValue ? 1 : 0,
                                            config.activeLow ? 1 : 0, output && config.drive == .openDrain ? 1 : 0, bias) else {
            let code = errno
            throw GPIOError(kind: code == EBUSY ? .busy : .system(code), chip: chip.name, line: "\(offset)",
                            role: config.role, detail: String(cString: strerror(code)))
        }
        request = r
    }

    private func failure(_ code: Int32) -> GPIOError {
        GPIOError(kind: .system(code), chip: chip.name, line: "\(resolvedOffset)", role: config.role, detail: String(cString: strerror(code)))
    }

    func setValue(_ active: Bool) throws(GPIOError) {
        guard let request else { throw failure(EBADF) }
        guard direction == .output else {
            throw GPIOError(kind: .notAnOutput, chip: chip.name, line: "\(resolvedOffset)", role: config.role, detail: "is an input line")
        }
        if rte_gpio_set_value(request, active ? 1 : 0) != 0 { throw failure(errno) }
    }

    func setDirection(_ newDirection: LineDirection, active: Bool) throws(GPIOError) {
        guard let request else { throw failure(EBADF) }
        // Reconfigured in place (no release, so no glitch); active-low, drive and bias stay as requested.
        if rte_gpio_set_direction(request, newDirection == .output ? 1 : 0, active ? 1 : 0) != 0 { throw failure(errno) }
        direction = newDirection
    }

    func value() throws(GPIOError) -> Bool {
        guard let request else { throw failure(EBADF) }
        let v = rte_gpio_get_value(request)
        if v < 0 { throw failure(errno) }
        return v == 1
    }

    func release() {
        if let request { rte_gpio_release(request) }
        request = nil
    }

    // libgpiod 1.x gave a line back when its chip closed; a 2.x request outlives the chip, so a
    // line dropped without release() would stay taken.
    deinit { release() }
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
    public static var libraryVersion: String { String(cString: rte_gpio_library_version()) }
    /// The libgpiod API this build uses: 1 (libgpiod 1.x) or 2 (libgpiod 2.x).
    public static var apiMajor: Int { Int(rte_gpio_api_major()) }
}
