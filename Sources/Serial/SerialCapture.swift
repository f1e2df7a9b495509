import AgentClock
import Synchronization

/// Something that happened on the port, placed at a byte offset of the capture.
public struct CaptureEvent: Sendable, Codable, Equatable {
    public enum Kind: String, Sendable, Codable { case opened, closed, gap, restart }
    public var sequence: UInt64
    public var offset: UInt64
    public var at: Timestamp
    public var kind: Kind
    public var detail: String
}

/// What a subscriber receives, in capture order.
public enum CaptureItem: Sendable, Equatable {
    /// Bytes starting at `offset`, received at `at` (arrival time of the chunk that holds the first byte).
    case data(offset: UInt64, bytes: [UInt8], at: Timestamp)
    /// The subscriber fell behind the ring: bytes `from..<resumeAt` are no longer in memory
    /// (they are still in the log files).
    case lost(from: UInt64, resumeAt: UInt64)
    case event(CaptureEvent)
}

/// The lossless record of everything the DUT said: a bounded in-memory ring with monotonic
/// byte offsets and arrival timestamps, fan-out to any number of subscribers that never
/// block the writer, and (optionally) a persistent rotated log.
/// One stream abstraction for every consumer of the port (API log, live stream, console, runs).
public final class SerialCapture: Sendable {
    struct Waiter { let id: UInt64; let continuation: CheckedContinuation<Void, Never> }
    struct State {
        /// Grows as bytes arrive, up to `capacity`: a 16 MiB ring costs nothing until a console
        /// has printed 16 MiB (the rotated files keep the history beyond it).
        var ring: CaptureRing
        /// Offset of the oldest byte still held, and of the next byte to come.
        var start: UInt64
        var end: UInt64
        /// Arrival times: (offset of the chunk's first byte, time), oldest first from `timesHead`.
        var times: [(UInt64, Timestamp)] = []
        var timesHead = 0
        var events: [CaptureEvent] = []
        var nextEventSequence: UInt64 = 1
        var waiters: [Waiter] = []
        var nextWaiter: UInt64 = 0
        var lostTotal: UInt64 = 0
        var taps: [(id: UInt64, tap: Tap)] = []
        var nextTap: UInt64 = 0
    }
    /// Called on the appending (serial reader) thread with each chunk and its offset.
    public typealias Tap = @Sendable (_ offset: UInt64, _ bytes: UnsafeRawBufferPointer) -> Void
    let state: Mutex<State>
    public let capacity: Int
    /// The offset stored at ring index 0: ring positions count from the first byte this capture held.
    private let base: UInt64
    private let log: CaptureLog?
    private let clock: any AgentClock
    static let maxEvents = 4096

    public init(capacity: Int, log: CaptureLog? = nil, clock: any AgentClock = SystemClock()) {
        self.capacity = capacity
        self.log = log
        self.clock = clock
        let start = log?.endOffset ?? 0
        base = start
        state = Mutex(State(ring: CaptureRing(capacity: capacity), start: start, end: start))
        if log != nil && start > 0 {
            mark(.restart, detail: "agent restarted; offsets continue from the log")
        }
    }

    public var endOffset: UInt64 { state.withLock { $0.end } }
    /// Bytes the ring holds in memory now (grows to `capacity`).
    public var allocatedBytes: Int { state.withLock { $0.ring.allocated } }
    public var startOffset: UInt64 { state.withLock { $0.start } }
    public var logDirectory: String? { log?.directory }

    /// Appends bytes that just arrived. Called from the reader thread only.
    public func append(_ bytes: UnsafeRawBufferPointer, at time: Timestamp? = nil) {
        guard bytes.count > 0 else { return }
        let t = time ?? clock.now()
        let offset: UInt64
        let waiters: [Waiter]
        let taps: [(id: UInt64, tap: Tap)]
        (offset, waiters, taps) = state.withLock { s in
            let offset = s.end
            var src = bytes
            // Only the last `capacity` bytes of a huge chunk can be kept; they start that much later.
            var first = s.end
            if src.count > capacity {
                first += UInt64(src.count - capacity)
                src = UnsafeRawBufferPointer(rebasing: src[(src.count - capacity)...])
            }
            // Not wrapped yet: the ring is allocated up to the last byte this chunk reaches.
            s.ring.reserve(Int(min(UInt64(capacity), first - base)) + src.count)
            s.ring.write(src, at: Int((first - base) % UInt64(capacity)))
            s.end += UInt64(bytes.count)
            if s.end - s.start > UInt64(capacity) { s.start = s.end - UInt64(capacity) }
            s.times.append((offset, t))
            // Drop arrival times of bytes that left the ring, compacting now and then.
            while s.timesHead + 1 < s.times.count && s.times[s.timesHead + 1].0 <= s.start { s.timesHead += 1 }
            if s.timesHead > 4096 && s.timesHead * 2 > s.times.count {
                s.times.removeFirst(s.timesHead); s.timesHead = 0
            }
            let w = s.waiters
            s.waiters.removeAll(keepingCapacity: true)
            return (offset, w, s.taps)
        }
        // Taps first (a boot console answering a prompt from this thread), then followers,
        // then the disk: reaction time matters more than the log.
        for t in taps { t.tap(offset, bytes) }
        for w in waiters { w.continuation.resume() }
        log?.append(bytes, offset: offset, at: t)
    }

    /// Registers a tap: synchronous, on the appending thread, for consumers that must react
    /// without a thread hop. Keep it short; it delays everyone else.
    public func addTap(_ tap: @escaping Tap) -> UInt64 {
        state.withLock { s in
            s.nextTap += 1
            s.taps.append((s.nextTap, tap))
            return s.nextTap
        }
    }

    public func removeTap(_ id: UInt64) {
        state.withLock { s in s.taps.removeAll { $0.id == id } }
    }

    public func append(_ bytes: [UInt8], at time: Timestamp? = nil) {
        bytes.withUnsafeBytes { append($0, at: time) }
    }

    /// Records an event (port opened/closed, a gap) at the current end of the capture.
    @discardableResult
    public func mark(_ kind: CaptureEvent.Kind, detail: String) -> CaptureEvent {
        let t = clock.now()
        let (event, waiters) = state.withLock { s -> (CaptureEvent, [Waiter]) in
            let e = CaptureEvent(sequence: s.nextEventSequence, offset: s.end, at: t, kind: kind, detail: detail)
            s.nextEventSequence += 1
            s.events.append(e)
            if s.events.count > SerialCapture.maxEvents { s.events.removeFirst(s.events.count - SerialCapture.maxEvents) }
            let w = s.waiters; s.waiters.removeAll()
            return (e, w)
        }
        for w in waiters { w.continuation.resume() }
        log?.appendEvent(event)
        return event
    }

    public func events(from offset: UInt64 = 0) -> [CaptureEvent] {
        state.withLock { s in s.events.filter { $0.offset >= offset } }
    }

    public enum ReadResult: Sendable, Equatable {
        case data(offset: UInt64, bytes: [UInt8], next: UInt64)
        case lost(from: UInt64, resumeAt: UInt64)
    }

    /// Bytes from `offset` (at most `limit`), as held in memory. If `offset` is older than the ring,
    /// tells where memory resumes; `readPersisted` serves the older bytes from the log files.
    public func read(from offset: UInt64, limit: Int) -> ReadResult {
        state.withLock { s in
            if offset < s.start { return .lost(from: offset, resumeAt: s.start) }
            let from = min(offset, s.end)
            let count = Int(min(UInt64(max(0, limit)), s.end - from))
            return .data(offset: from, bytes: copyOut(s, from: from, count: count), next: from + UInt64(count))
        }
    }

    /// Bytes from `offset`, falling back to the log files for what the ring no longer holds.
    public func readPersisted(from offset: UInt64, limit: Int) -> ReadResult {
        switch read(from: offset, limit: limit) {
        case .lost(let from, let resumeAt):
            if let log, let bytes = log.read(from: from, limit: min(limit, Int(resumeAt - from))), !bytes.isEmpty {
                return .data(offset: from, bytes: bytes, next: from + UInt64(bytes.count))
            }
            return .lost(from: from, resumeAt: max(resumeAt, log?.startOffset ?? resumeAt))
        case let r: return r
        }
    }

    /// Arrival time of the byte at `offset`, if still known.
    public func arrivalTime(of offset: UInt64) -> Timestamp? {
        state.withLock { s in
            guard offset >= s.start, offset < s.end else { return nil }
            var lo = s.timesHead, hi = s.times.count - 1, found: Timestamp? = nil
            while lo <= hi {
                let mid = (lo + hi) / 2
                if s.times[mid].0 <= offset { found = s.times[mid].1; lo = mid + 1 } else { hi = mid - 1 }
            }
            return found
        }
    }

    private func copyOut(_ s: State, from: UInt64, count: Int) -> [UInt8] {
        guard count > 0 else { return [] }
        var out = [UInt8](); out.reserveCapacity(count)
        s.ring.copy(from: Int((from - base) % UInt64(capacity)), count: count, into: &out)
        return out
    }

    /// Suspends until the capture has grown past `offset` or an event newer than `eventSequence` exists.
    func waitForChange(beyond offset: UInt64, eventSequence: UInt64) async {
        let id = state.withLock { s -> UInt64 in s.nextWaiter += 1; return s.nextWaiter }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let ready = state.withLock { s -> Bool in
                    if s.end > offset || s.nextEventSequence - 1 > eventSequence || Task.isCancelled { return true }
                    s.waiters.append(Waiter(id: id, continuation: c))
                    return false
                }
                if ready { c.resume() }
            }
        } onCancel: {
            let w = state.withLock { s -> Waiter? in
                guard let i = s.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return s.waiters.remove(at: i)
            }
            w?.continuation.resume()
        }
    }

    /// Returns once the capture's end has reached `offset`, or when `limit` has passed.
    public func waitUntilEnd(reaches offset: UInt64, within limit: Duration) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                while !Task.isCancelled, case let end = self.endOffset, end < offset {
                    await self.waitForChange(beyond: end, eventSequence: .max)
                }
            }
            group.addTask { try? await self.clock.sleep(for: limit) }
            await group.next()
            group.cancelAll()
        }
    }

    /// Follows the capture from `offset` (nil = from now). Each subscriber pulls at its own pace.
    public func subscribe(from offset: UInt64? = nil, maxChunk: Int = 64 * 1024) -> Subscription {
        let (start, seq) = state.withLock { s in (offset ?? s.end, s.nextEventSequence - 1) }
        // Events at or after the start offset are replayed; older ones are not.
        let replaySeq = state.withLock { s in s.events.first(where: { $0.offset >= start })?.sequence }
        return Subscription(capture: self, cursor: start, seenEvents: replaySeq.map { $0 - 1 } ?? seq, maxChunk: maxChunk)
    }

    public struct Subscription: AsyncSequence, Sendable {
        public typealias Element = CaptureItem
        let capture: SerialCapture
        let cursor: UInt64
        let seenEvents: UInt64
        let maxChunk: Int

        public func makeAsyncIterator() -> Iterator {
            Iterator(capture: capture, cursor: cursor, seenEvents: seenEvents, maxChunk: maxChunk)
        }

        public struct Iterator: AsyncIteratorProtocol {
            let capture: SerialCapture
            public private(set) var cursor: UInt64
            var seenEvents: UInt64
            let maxChunk: Int

            init(capture: SerialCapture, cursor: UInt64, seenEvents: UInt64, maxChunk: Int) {
                self.capture = capture; self.cursor = cursor; self.seenEvents = seenEvents; self.maxChunk = maxChunk
            }

            /// Next item; nil only when the task is cancelled.
            public mutating func next() async -> CaptureItem? {
                while !Task.isCancelled {
                    if let item = poll() { return item }
                    await capture.waitForChange(beyond: cursor, eventSequence: seenEvents)
                }
                return nil
            }

            /// Non-blocking: the next item if one is ready.
            public mutating func poll() -> CaptureItem? {
                let cursor = self.cursor, seen = self.seenEvents, maxChunk = self.maxChunk
                let capture = self.capture
                let result: CaptureItem? = capture.state.withLock { s in
                    // Events due at or before the cursor come first, in order.
                    if let e = s.events.first(where: { $0.sequence > seen && $0.offset <= cursor }) {
                        return .event(e)
                    }
                    if cursor < s.start {
                        return .lost(from: cursor, resumeAt: s.start)
                    }
                    if cursor < s.end {
                        // Stop at the next event so it is delivered at its place.
                        var limit = s.end
                        if let e = s.events.first(where: { $0.sequence > seen && $0.offset > cursor }) { limit = Swift.min(limit, e.offset) }
                        let count = Int(Swift.min(UInt64(maxChunk), limit - cursor))
                        let bytes = capture.copyOut(s, from: cursor, count: count)
                        var at = Timestamp(nanosecondsSinceEpoch: 0)
                        var lo = s.timesHead, hi = s.times.count - 1
                        while lo <= hi {
                            let mid = (lo + hi) / 2
                            if s.times[mid].0 <= cursor { at = s.times[mid].1; lo = mid + 1 } else { hi = mid - 1 }
                        }
                        return .data(offset: cursor, bytes: bytes, at: at)
                    }
                    return nil
                }
                switch result {
                case .event(let e)?: seenEvents = e.sequence
                case .lost(_, let resumeAt)?:
                    self.cursor = resumeAt
                    capture.state.withLock { $0.lostTotal += resumeAt - cursor }
                case .data(let offset, let bytes, _)?: self.cursor = offset + UInt64(bytes.count)
                case nil: break
                }
                return result
            }
        }
    }

    /// Bytes subscribers have skipped because they fell behind (for metrics).
    public var subscriberLostBytes: UInt64 { state.withLock { $0.lostTotal } }
}
