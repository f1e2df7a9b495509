import BootFlow
import Foundation
import JSONDocument
import Matching
import TestSupport
import Testing

/// Issue 32: run specs are fuzzed (generated and mutated JSON and YAML) for a bounded time
/// (`RTE_FUZZ_SECONDS`, 20 s by default): parsing never crashes, and every spec that parses
/// builds every matcher a run will build (the crash of (1) was a spec that parsed and then
/// could not be matched).
@Suite struct SpecFuzzTests {
    static var seeds: [[UInt8]] {
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("deploy/specs").path
        let files = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        return files.sorted().compactMap { FileManager.default.contents(atPath: dir + "/" + $0).map(Array.init) } + [
            Array(#"{"power":"cycle","firmware":{"banner":["SeaBIOS"]},"ipxe":{"commands":["dhcp"],"menu_entry":"Xen Linux dev"},"login":{"username":"root","password":"debian"},"commands":[{"send":"uname -r","expect":"6.1"}],"fail_on":["panic"],"watch":[{"regex":"AMD-Vi.*"}]}"#.utf8),
        ]
    }

    @Test func specsThatParseCanBeMatchedAndNothingCrashes() {
        let seconds = Double(ProcessInfo.processInfo.environment["RTE_FUZZ_SECONDS"] ?? "") ?? 20
        let seed = UInt64(ProcessInfo.processInfo.environment["RTE_FUZZ_SEED"] ?? "") ?? 32
        var fuzzer = SpecFuzzer(seed: seed)
        let seeds = SpecFuzzTests.seeds
        #expect(seeds.count >= 2)
        let end = Date().addingTimeInterval(seconds)
        var tried = 0, parsed = 0
        while Date() < end {
            let input = fuzzer.input(seeds: seeds)
            tried += 1
            let spec: RunSpec?
            if input.first == UInt8(ascii: "{") {
                spec = (try? JSONValue.parseBody(json: input)).flatMap { try? RunSpec.parse($0) }
            } else {
                spec = try? RunSpec.parse(yaml: String(decoding: input, as: UTF8.self))
            }
            guard let spec else { continue }
            parsed += 1
            for set in spec.patternSets {
                do { _ = try StreamMatcher(set.patterns) } catch {
                    Issue.record("seed \(seed), input \(tried): a spec that parsed has \(set.field) that cannot be matched: \(error)")
                }
            }
        }
        #expect(tried > 100, "\(tried) inputs")
        print("spec fuzz: \(tried) inputs in \(seconds) s, \(parsed) parsed (seed \(seed))")
    }
}
