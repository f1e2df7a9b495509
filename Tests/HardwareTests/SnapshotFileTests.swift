import Foundation
import POSIXIO
import Synchronization
import Testing

/// The lease book's persistence: the newest snapshot on disk, written off the caller's thread.
@Suite struct SnapshotFileTests {
    @Test func aBurstCostsFewerWritesAndTheNewestSnapshotWins() async throws {
        let path = scratchDirectory() + "/state.json"
        let file = SnapshotFile(path: path) { Issue.record("write failed: \($0)") }
        var last: UInt64 = 0
        for n in 1...500 { last = file.submit(Array("{\"n\": \(n)}".utf8)) }
        #expect(last == 500)
        await file.waitUntilWritten(last)
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "{\"n\": 500}")
        #expect(file.writeCount < 500, "snapshots that came during a write share the next one")
        // An old version is already covered.
        await file.waitUntilWritten(3)
        #expect(!FileManager.default.fileExists(atPath: path + ".tmp-\(getpid())"), "no temporary file left")
    }

    @Test func concurrentWritersEachSeeTheirChangeOnDisk() async throws {
        let path = scratchDirectory() + "/state.json"
        let file = SnapshotFile(path: path) { Issue.record("write failed: \($0)") }
        await withTaskGroup(of: Void.self) { group in
            for n in 0..<64 {
                group.addTask {
                    let v = file.submit(Array("writer \(n)".utf8))
                    await file.waitUntilWritten(v)
                    // Whatever is there now is this change or a newer one: never older.
                    let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
                    #expect(text.hasPrefix("writer "))
                }
            }
        }
        #expect(file.writeCount >= 1 && file.writeCount <= 64)
    }

    @Test func aFailedWriteIsReportedAndDoesNotHangTheWaiters() async {
        let failures = Mutex<[Errno]>([])
        let file = SnapshotFile(path: "/nonexistent-rte-dir/state.json") { e in failures.withLock { $0.append(e) } }
        await file.waitUntilWritten(file.submit([1, 2, 3]))
        #expect(failures.withLock { $0 } == [Errno(ENOENT)])
    }
}
