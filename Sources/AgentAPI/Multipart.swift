import POSIXIO
import Text

/// Just enough of multipart/form-data (RFC 7578) to take one named file field out of a body
/// already in memory (bounded by the route's body limit): RteCtrl's clients upload firmware as
/// `file` this way (curl -F file=@coreboot.rom).
enum Multipart {
    /// The boundary of a `multipart/form-data; boundary=…` content type.
    static func boundary(_ contentType: String?) -> String? {
        guard let contentType, contentType.lowercased().hasPrefix("multipart/form-data") else { return nil }
        for param in contentType.split(separator: ";").dropFirst() {
            let kv = param.split(separator: "=", maxSplits: 1).map { $0.trimming(" \t") }
            if kv.count == 2, kv[0].lowercased() == "boundary" {
                var b = kv[1]
                if b.hasPrefix("\"") && b.hasSuffix("\"") && b.count >= 2 { b = String(b.dropFirst().dropLast()) }
                return b.isEmpty || b.count > 200 ? nil : b
            }
        }
        return nil
    }

    /// Parts looked at, at most: RteCtrl's clients send one. A body of many tiny parts costs
    /// time per part, so more than this is refused rather than parsed.
    static let maxParts = 16

    enum Field: Equatable { case found([UInt8]), missing, tooManyParts }

    /// The content of the part whose Content-Disposition names `field`. Delimiters are found with
    /// memmem (linear in the body), and only the first `maxParts` parts are looked at.
    static func field(_ name: String, in body: [UInt8], boundary: String) -> Field {
        let delimiter = Array(("--" + boundary).utf8)
        let wanted = "name=\"\(name.lowercased())\""
        func find(_ needle: [UInt8], from: Int, to: Int) -> Int? { firstOffset(of: needle, in: body, from: from, to: to) }
        guard var start = find(delimiter, from: 0, to: body.count) else { return .missing }
        var parts = 0
        while let next = find(delimiter, from: start + delimiter.count, to: body.count) {
            parts += 1
            if parts > maxParts { return .tooManyParts }
            defer { start = next }
            var partStart = start + delimiter.count
            // The delimiter line ends with CRLF; the part's headers end with an empty line.
            guard body.count >= partStart + 2, body[partStart] == 0x0d, body[partStart + 1] == 0x0a else { continue }
            partStart += 2
            guard let headEnd = find(Array("\r\n\r\n".utf8), from: partStart, to: next) else { continue }
            let headers = String(decoding: body[partStart..<headEnd], as: UTF8.self).lowercased()
            guard headers.contains("content-disposition: form-data"), headers.contains(wanted) else { continue }
            // The content runs up to the CRLF before the next delimiter.
            var end = next
            if end >= 2, body[end - 2] == 0x0d, body[end - 1] == 0x0a { end -= 2 }
            guard end >= headEnd + 4 else { return .missing }
            return .found(Array(body[(headEnd + 4)..<end]))
        }
        return .missing
    }
}

