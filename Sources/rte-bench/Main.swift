import ArgumentParser

// Figures for the README and for regressions: prints, never asserts. All of them at once:
// scripts/bench (builds with --static-swift-stdlib and writes Benchmarks/RESULTS.md).
@main
struct RTEBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rte-bench",
        abstract: "rte-agent benchmarks, side by side with pexpect where a comparison exists.",
        subcommands: [Reaction.self, Throughput.self, CaptureLoad.self, APILoad.self, Footprint.self, BootTime.self, FlashTime.self, Instructions.self, InstructionOperation.self, BareMHD.self,
                      DUTPrompter.self, PTYWriter.self])
}
