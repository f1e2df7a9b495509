import AgentClock

/// One stage of one boot: when it ran and how it ended.
public struct StageResult: Codable, Sendable, Equatable {
    public var name: String
    public var startedAt: Timestamp
    public var endedAt: Timestamp
    public var durationMs: Double
    public var passed: Bool
    /// What the stage saw or did ("matched \"iPXE>\"", "selected row 7").
    public var detail: String
    /// Prompt-to-key time for stages that answer a prompt (Ctrl-B, boot menu key), in microseconds.
    public var reactionUs: Double?
    /// Capture offsets the stage covers.
    public var captureFrom: UInt64
    public var captureTo: UInt64
}

/// Where and why an iteration failed, with what the console showed at that moment.
public struct Failure: Codable, Sendable, Equatable {
    public var stage: String
    public var expected: String
    public var message: String
    public var screen: [String]
    public var lastLines: [String]
    public var captureOffset: UInt64
}

public struct CommandResult: Codable, Sendable, Equatable {
    public var command: String
    public var output: String
    public var passed: Bool
    /// The command's exit status, read after its end marker (nil if it could not be read).
    public var exitCode: Int?
}

public struct IterationResult: Codable, Sendable, Equatable {
    public var index: Int
    public var passed: Bool
    public var stages: [StageResult]
    public var failure: Failure?
    public var commands: [CommandResult]
    public var menu: [String]?
    public var kernelVersion: String?
    public var captureFrom: UInt64
    public var captureTo: UInt64
    /// Per `watch:` pattern: how often it matched, when, and the first lines.
    public var watched: [WatchResult]? = nil
    /// What the boot log proves booted (firmware, iPXE, Xen, kernel, IOMMU), and the spec's own facts.
    public var facts: [Fact]? = nil
}

/// A pattern seen in the serial output during an iteration.
public struct PatternHit: Codable, Sendable, Equatable {
    /// The line it was on (up to the match's end, and what followed it on that line by then).
    public var line: String
    /// When its last byte arrived.
    public var at: Timestamp
    public var secondsIntoIteration: Double
    public var stage: String
    public var captureOffset: UInt64
}

public struct WatchResult: Codable, Sendable, Equatable {
    public var pattern: String
    public var count: Int
    /// The first 20 hits.
    public var hits: [PatternHit]
}

/// Per-stage statistics over the iterations of a run (repeat: N).
public struct StageStatistics: Codable, Sendable, Equatable {
    public var count: Int
    public var failures: Int
    public var minMs: Double
    public var medianMs: Double
    public var maxMs: Double
}

public struct RunSummary: Codable, Sendable, Equatable {
    public var iterations: Int
    public var passed: Int
    public var failed: Int
    public var stages: [String: StageStatistics]

    public init(_ results: [IterationResult]) {
        iterations = results.count
        passed = results.filter(\.passed).count
        failed = results.count - passed
        var byStage: [String: [StageResult]] = [:]
        for r in results { for s in r.stages { byStage[s.name, default: []].append(s) } }
        stages = byStage.mapValues { list in
            let d = list.filter(\.passed).map(\.durationMs).sorted()
            let median = d.isEmpty ? 0 : d.count % 2 == 1 ? d[d.count / 2] : (d[d.count / 2 - 1] + d[d.count / 2]) / 2
            return StageStatistics(count: list.count, failures: list.filter { !$0.passed }.count,
                                   minMs: d.first ?? 0, medianMs: median, maxMs: d.last ?? 0)
        }
    }
}

/// Progress as it happens, for the live event stream.
public enum RunProgress: Sendable, Equatable {
    case stageStarted(iteration: Int, stage: String)
    case stageFinished(iteration: Int, StageResult)
    case iterationFinished(IterationResult)
}
