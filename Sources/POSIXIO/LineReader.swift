/// Text read from a blocking descriptor (a child's output pipe): by line, or to the end.
/// One thread reads at a time (it is handed to a reader thread, never shared).
public final class LineReader: @unchecked Sendable {
    public let descriptor: FileDescriptor
    private var buffered: [UInt8] = []
    private var ended = false

    public init(_ descriptor: FileDescriptor) { self.descriptor = descriptor }

    /// The next line without its "\n"; the unterminated rest at end of input; nil after that.
    public func readLine() -> String? {
        var scanned = 0
        while true {
            if let nl = buffered[scanned...].firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: buffered[..<nl], as: UTF8.self)
                buffered.removeSubrange(...nl)
                return line
            }
            scanned = buffered.count
            if !fill() {
                if buffered.isEmpty { return nil }
                defer { buffered = [] }
                return String(decoding: buffered, as: UTF8.self)
            }
        }
    }

    /// All that is left, until end of input.
    public func readToEnd() -> String {
        while fill() {}
        defer { buffered = [] }
        return String(decoding: buffered, as: UTF8.self)
    }

    private func fill() -> Bool {
        if ended { return false }
        var chunk = [UInt8](repeating: 0, count: 16384)
        let n = (try? chunk.withUnsafeMutableBytes { try descriptor.read(into: $0) }) ?? 0
        if n <= 0 { ended = true; return false }
        buffered += chunk[..<n]
        return true
    }
}
