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
        /// The config marks the line `input_only`: it senses the DUT and is never driven.
        case inputOnly
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
    /// The direction the line has now: the configured one until `setDirection` changes it.
    var direction: LineDirection { get }
    /// Turns the line into an input, or into an output driven to `active` at once (no glitch
    /// through the other level). Only the legacy API does this; `setValue` on an input fails.
    func setDirection(_ direction: LineDirection, active: Bool) throws(GPIOError)
    /// Gives the line back to the kernel. Further calls fail.
    func release()
}

/// Requests every configured line at start, all or nothing.
public protocol GPIOBackend: Sendable {
    func request(_ lines: [GPIOLineConfig]) throws(GPIOError) -> [any GPIOLine]
}
