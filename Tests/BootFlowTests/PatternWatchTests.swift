import AgentClock
import TestSupport
@testable import BootFlow
import Matching
import Serial
import Testing

/// fail_on/watch hits name the whole line and the stage whose text it is, however the watch's
/// task is scheduled against the bytes and the stages (CI under load saw both go wrong).
@Suite struct PatternWatchTests {
    /// Polls (yielding, never sleeping) until `done` or a generous bound.
    func until(_ what: String, _ done: () -> Bool) async throws {
        let deadline = SystemClock().now() + .seconds(20)
        while !done() {
            guard SystemClock().now() < deadline else { throw WatchTestTimeout(what: what) }
            await Task.yield()
        }
    }
    struct WatchTestTimeout: Error { let what: String }

    @Test func aFailOnHitInALineStillArrivingReportsTheWholeLine() async throws {
        let capture = SerialCapture(capacity: 1 << 16)
        let clock = ManualClock()  // the line-end bound never passes: only the line's end ends the wait
        let watch = PatternWatch(failOn: [.literal("tsc: Detected")], watch: [])
        watch.start(capture: capture, clock: clock, from: 0, startedAt: clock.now()) {}
        defer { watch.stop() }
        capture.append(Array("[    0.037035] tsc: Detected 99".utf8))
        try await until("the watch saw the match") { watch.seen == 1 }
        #expect(watch.failHit == nil, "not reported before its line is whole")
        capture.append(Array("8.138 MHz processor\r\n[    0.04] next\r\n".utf8))
        try await until("the hit is reported") { watch.failHit != nil }
        #expect(watch.failHit?.hit.line == "[    0.037035] tsc: Detected 998.138 MHz processor")
    }

    /// Issue 34, on the QEMU rig: the hunt spec watched "AMD-Vi:" and failed on "AMD-Vi: Error";
    /// both were one matcher, the shorter watch pattern matched first and the error line was only
    /// counted — the iteration failed later on "Dom0 crashed" instead. Each pattern now matches
    /// on its own: the error fails, and both watch patterns count the lines they are in.
    @Test func aShortWatchPatternNeverHidesALongerOneThatStartsTheSameWay() async throws {
        let capture = SerialCapture(capacity: 1 << 16)
        let clock = ManualClock()
        let watch = PatternWatch(failOn: [.literal("AMD-Vi: Error")], watch: [.literal("AMD-Vi:"), .regex("AMD-Vi: IOMMU [0-9]+ Enabled")])
        watch.start(capture: capture, clock: clock, from: 0, startedAt: clock.now()) {}
        defer { watch.stop() }
        capture.append(Array("(XEN) AMD-Vi: IOMMU 0 Enabled.\r\n(XEN) AMD-Vi: Error: invalid IO pagetable entry dfn = b0000\r\n".utf8))
        // `seen` counts a match as it is taken, before it is recorded: wait for the records.
        try await until("the watch recorded all four matches") {
            watch.seen == 4 && watch.failHit != nil && watch.results(capture: capture).map(\.count) == [2, 1]
        }
        #expect(watch.failHit?.pattern == "\"AMD-Vi: Error\"")
        #expect(watch.failHit?.hit.line == "(XEN) AMD-Vi: Error: invalid IO pagetable entry dfn = b0000")
        #expect(watch.results(capture: capture).map(\.count) == [2, 1])
    }

    @Test func aWatchHitInAnUnfinishedLineIsFinishedWhenTheResultsAreRead() async throws {
        let capture = SerialCapture(capacity: 1 << 16)
        let clock = ManualClock()
        let watch = PatternWatch(failOn: [], watch: [.literal("AMD-Vi:")])
        watch.start(capture: capture, clock: clock, from: 0, startedAt: clock.now()) {}
        defer { watch.stop() }
        capture.append(Array("(XEN) AMD-Vi: IOMMU 0 ena".utf8))
        try await until("the watch saw the match") { watch.seen == 1 }
        capture.append(Array("bled at 0000:00:03.0\r\n".utf8))
        let hits = watch.results(capture: capture).first?.hits ?? []
        #expect(hits.map(\.line) == ["(XEN) AMD-Vi: IOMMU 0 enabled at 0000:00:03.0"])
    }

    /// The kernel's first line came before the kernel stage had begun (the menu stage had read up
    /// to its last match and returned): it is the kernel's, as in the per-stage logs.
    @Test func aLineBetweenTwoStagesBelongsToTheLaterOne() async throws {
        let capture = SerialCapture(capacity: 1 << 16)
        let clock = ManualClock()
        let watch = PatternWatch(failOn: [.literal("tsc: Detected")], watch: [.literal("Booting")])
        watch.enter("ipxe_menu", at: 0)
        let menuText = Array("  Xen Linux dev\r\nBooting 'Xen Linux dev'\r\n".utf8)
        capture.append(menuText)
        let menuRead = UInt64(menuText.count)  // where the menu stage's last wait ended
        watch.start(capture: capture, clock: clock, from: 0, startedAt: clock.now()) {}
        defer { watch.stop() }
        capture.append(Array("[    0.037035] tsc: Detected 998.138 MHz processor\r\n".utf8))
        try await until("the hit is reported") { watch.failHit != nil }
        #expect(watch.failHit?.hit.stage == "ipxe_menu" || watch.failHit?.hit.stage == "kernel")
        watch.enter("kernel", at: menuRead)
        #expect(watch.failHit?.hit.stage == "kernel")
        #expect(watch.results(capture: capture).first?.hits.map(\.stage) == ["ipxe_menu"])
    }
}
