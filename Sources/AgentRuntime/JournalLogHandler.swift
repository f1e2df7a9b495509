import Logging
import POSIXIO

/// swift-log to standard error, which systemd hands to the journal. Under systemd
/// ($JOURNAL_STREAM set) each line starts with its syslog priority ("<4>"), so the journal keeps
/// the level (`journalctl -p warning -u rte-agent`); on a terminal it prints plain lines.
public struct JournalLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    let label: String
    let prefixPriority: Bool

    public init(label: String, environment: [String: String] = SystemdNotify.currentEnvironment()) {
        self.label = label
        prefixPriority = environment["JOURNAL_STREAM"] != nil
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }

    public func log(level: Logger.Level, message: Logger.Message, metadata extra: Logger.Metadata?, source: String,
                    file: String, function: String, line: UInt) {
        let all = metadata.merging(extra ?? [:]) { _, new in new }
        let fields = all.isEmpty ? "" : " " + all.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        let text = "\(label): \(message)\(fields)"
        printToStandardError(prefixPriority ? "<\(JournalLogHandler.priority(level))>\(text)" : text)
    }
}
