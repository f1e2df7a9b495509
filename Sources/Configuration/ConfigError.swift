/// A configuration problem: which file, which key, what is wrong. Printed as one line at start.
public struct ConfigError: Error, CustomStringConvertible, Sendable, Equatable {
    public var file: String
    public var keyPath: String
    public var message: String
    public var line: Int?

    public init(file: String, keyPath: String, message: String, line: Int? = nil) {
        self.file = file; self.keyPath = keyPath; self.message = message; self.line = line
    }

    public var description: String {
        let location = line.map { "\(file):\($0)" } ?? file
        return keyPath.isEmpty ? "\(location): \(message)" : "\(location): \(keyPath): \(message)"
    }
}
