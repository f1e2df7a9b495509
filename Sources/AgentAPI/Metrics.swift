import HTTPServer
import Synchronization

/// Counters, gauges and histograms in Prometheus text format (GET /metrics).
public final class Metrics: Sendable {
    struct Key: Hashable { var name: String; var labels: [String: String] }
    struct Histogram { var buckets: [Double]; var counts: [Int]; var sum: Double; var count: Int }
    struct State {
        var counters: [Key: Double] = [:]
        var gauges: [Key: Double] = [:]
        var histograms: [Key: Histogram] = [:]
    }
    private let state = Mutex(State())
    /// Values read at scrape time (power state, serial counters...).
    private let collectors = Mutex<[@Sendable () async -> [(String, [String: String], Double)]]>([])

    public init() {}

    public func count(_ name: String, labels: [String: String] = [:], by amount: Int = 1) {
        state.withLock { $0.counters[Key(name: name, labels: labels), default: 0] += Double(amount) }
    }

    public func gauge(_ name: String, labels: [String: String] = [:], delta: Double) {
        state.withLock { $0.gauges[Key(name: name, labels: labels), default: 0] += delta }
    }

    public func observe(_ name: String, labels: [String: String] = [:], _ value: Double,
                        buckets: [Double] = [0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600]) {
        state.withLock { s in
            var h = s.histograms[Key(name: name, labels: labels)] ?? Histogram(buckets: buckets, counts: Array(repeating: 0, count: buckets.count), sum: 0, count: 0)
            for (i, b) in h.buckets.enumerated() where value <= b { h.counts[i] += 1 }
            h.sum += value; h.count += 1
            s.histograms[Key(name: name, labels: labels)] = h
        }
    }

    public func addCollector(_ c: @escaping @Sendable () async -> [(String, [String: String], Double)]) {
        collectors.withLock { $0.append(c) }
    }

    static func render(_ labels: [String: String]) -> String {
        guard !labels.isEmpty else { return "" }
        return "{" + labels.sorted { $0.key < $1.key }.map { "\($0.key)=\"\($0.value)\"" }.joined(separator: ",") + "}"
    }

    static func number(_ v: Double) -> String { v == v.rounded() && abs(v) < 1e15 ? String(Int64(v)) : String(v) }

    public func exposition() async -> String {
        var lines: [String] = []
        let s = state.withLock { $0 }
        func block(_ map: [Key: Double], type: String) {
            for name in Set(map.keys.map(\.name)).sorted() {
                lines.append("# TYPE rte_\(name) \(type)")
                for (k, v) in map where k.name == name { lines.append("rte_\(name)\(Metrics.render(k.labels)) \(Metrics.number(v))") }
            }
        }
        block(s.counters, type: "counter")
        block(s.gauges, type: "gauge")
        for name in Set(s.histograms.keys.map(\.name)).sorted() {
            lines.append("# TYPE rte_\(name) histogram")
            for (k, h) in s.histograms where k.name == name {
                for (i, b) in h.buckets.enumerated() {
                    var l = k.labels; l["le"] = Metrics.number(b)
                    lines.append("rte_\(name)_bucket\(Metrics.render(l)) \(h.counts[i])")
                }
                var l = k.labels; l["le"] = "+Inf"
                lines.append("rte_\(name)_bucket\(Metrics.render(l)) \(h.count)")
                lines.append("rte_\(name)_sum\(Metrics.render(k.labels)) \(h.sum)")
                lines.append("rte_\(name)_count\(Metrics.render(k.labels)) \(h.count)")
            }
        }
        for c in collectors.withLock({ $0 }) {
            var seen = Set<String>()
            for (name, labels, value) in await c() {
                if seen.insert(name).inserted { lines.append("# TYPE rte_\(name) gauge") }
                lines.append("rte_\(name)\(Metrics.render(labels)) \(Metrics.number(value))")
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
