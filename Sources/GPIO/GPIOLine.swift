import Configuration

/// What failed on which line: "gpiochip1 line 8 (reset_button): Device or resource busy".
public struct GPIOError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        case chipNotFound
        case lineNotFound
        case busy
        case notAnOutput
        case unknownRole
        case pressInProgress
        case system(Int32)
    }
    public var kind: Kind
    public var chip: String
    public var line: String
    public var role: String
    public var detail: String

    public init(kind: Kind, chip: String, line: String, role: String, detail: String) {
        self.kind = kind; self.chip = chip; self.line = line; self.role = role; self.detail = detail
    }

    public var description: String {
        if kind == .unknownRole { return "no GPIO line has the role \"\(role)\"" }
        if chip.isEmpty { return "\(role): \(detail)" }
        return "\(chip) line \(line) (\(role)): \(detail)"
    }

    public static func unknownRole(_ role: String) -> GPIOError {
        GPIOError(kind: .unknownRole, chip: "", line: "", role: role, detail: "unknown role")
    }
}

/// One requested line, held for the life of the agent. Values are logical: `true` means
/// active, whatever the line's polarity; the backend applies active-low.
public protocol GPIOLine: AnyObject, Sendable {
    var config: GPIOLineConfig { get }
    /// Resolved chip name (e.g. `gpiochip1`) and offset, for errors and listings.
    var chipName: String { get }
    var resolvedOffset: Int { get }
    func setValue(_ active: Bool) throws(GPIOError)
    func value() throws(GPIOError) -> Bool
    /// Gives the line back to the kernel. Further calls fail.
    func release()
}

/// Requests every configured line at start, all or nothing.
public protocol GPIOBackend: Sendable {
    func request(_ lines: [GPIOLineConfig]) throws(GPIOError) -> [any GPIOLine]
}
