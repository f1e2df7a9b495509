import Logging

/// A swift-log handler that hands every line to a closure, with its level: tests read what the
/// agent logs, and at which level, as an operator's journal would show it.
public struct ClosureLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .trace
    let sink: @Sendable (Logger.Level, String) -> Void

    public init(_ sink: @escaping @Sendable (Logger.Level, String) -> Void) { self.sink = sink }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String,
                    file: String, function: String, line: UInt) {
        sink(level, message.description)
    }
}

/// A logger whose lines go to `sink` (level and text).
public func recordingLogger(_ sink: @escaping @Sendable (Logger.Level, String) -> Void) -> Logger {
    Logger(label: "rte-agent") { _ in ClosureLogHandler(sink) }
}
