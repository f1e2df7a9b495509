/// Just enough of multipart/form-data (RFC 7578) to take one named file field out of a body
/// already in memory (bounded by the route's body limit): RteCtrl's clients upload firmware as
/// `file` this way (curl -F file=@coreboot.rom).
enum Multipart {
    /// The boundary of a `multipart/form-data; boundary=…` content type.
    static func boundary(_ contentType: String?) -> String? {
        guard let contentType, contentType.lowercased().hasPrefix("multipart/form-data") else { return nil }
        for param in contentType.split(separator: ";").dropFirst() {
            let kv = param.split(separator: "=", maxSplits: 1).map { $0.trimmedOf(" \t") }
            if kv.count == 2, kv[0].lowercased() == "boundary" {
                var b = kv[1]
                if b.hasPrefix("\"") && b.hasSuffix("\"") && b.count >= 2 { b = String(b.dropFirst().dropLast()) }
                return b.isEmpty || b.count > 200 ? nil : b
            }
        }
        return nil
    }

    /// The content of the part whose Content-Disposition names `field`.
    static func field(_ name: String, in body: [UInt8], boundary: String) -> [UInt8]? {
        let delimiter = Array(("--" + boundary).utf8)
        var starts: [Int] = []
        var i = 0
        while let r = body[i...].firstRange(of: delimiter) {
            starts.append(r.lowerBound)
            i = r.upperBound
        }
        for (n, start) in starts.enumerated() where n + 1 < starts.count {
            var partStart = start + delimiter.count
            // The delimiter line ends with CRLF; the part's headers end with an empty line.
            guard body.count >= partStart + 2, body[partStart] == 0x0d, body[partStart + 1] == 0x0a else { continue }
            partStart += 2
            guard let headEnd = body[partStart..<starts[n + 1]].firstRange(of: Array("\r\n\r\n".utf8)) else { continue }
            let headers = String(decoding: body[partStart..<headEnd.lowerBound], as: UTF8.self).lowercased()
            guard headers.contains("content-disposition: form-data"), headers.contains("name=\"\(name.lowercased())\"") else { continue }
            // The content runs up to the CRLF before the next delimiter.
            var end = starts[n + 1]
            if end >= 2, body[end - 2] == 0x0d, body[end - 1] == 0x0a { end -= 2 }
            guard end >= headEnd.upperBound else { return nil }
            return Array(body[headEnd.upperBound..<end])
        }
        return nil
    }
}

extension StringProtocol {
    func trimmedOf(_ set: String) -> String {
        let strip = Set(set.unicodeScalars)
        var s = Substring(String(self)).unicodeScalars
        while let f = s.first, strip.contains(f) { s.removeFirst() }
        while let l = s.last, strip.contains(l) { s.removeLast() }
        return String(s)
    }
}
