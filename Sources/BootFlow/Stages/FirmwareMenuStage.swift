import AgentClock
import FirmwareUI
import Matching
import Text

/// Opens the firmware's boot menu (SeaBIOS: "Press F10 key now for boot menu") and presses the
/// key of the entry with exactly the wanted label.
///
/// SeaBIOS prints the whole list in one burst right after "Select boot device:" and then waits
/// for a key with nothing more to print, so the list is taken as complete once no further entry
/// line followed the last one for `listQuiet` (at 115200 baud a line is ~7 ms; a list of 35
/// entries fits in 0.25 s). The list is read from the text stream, so one longer than the
/// screen is read whole.
struct FirmwareMenuStage {
    var menu: RunSpec.BootMenu
    var promptTimeout: Duration
    var listTimeout: Duration = .seconds(10)
    var listQuiet: Duration = .milliseconds(300)

    func run(on console: ConsoleSession) async throws -> StageOutcome {
        let reaction: Double?
        do {
            let (m, sentAt) = try await console.expect([menu.prompt], thenSend: menu.key.bytes, timeout: promptTimeout)
            reaction = console.arrivalTime(of: m.end - 1).map { max(0, (sentAt - $0).seconds * 1e6) }
        } catch let e as ConsoleWaitError {
            if e == .cancelled { throw e }
            throw StageFailure(expected: "the boot menu prompt \(menu.prompt)", message: "the boot menu prompt \(menu.prompt) did not appear within \(format(promptTimeout.seconds)) s")
        }
        let line = Pattern.regex("^[1-9a-z]\\. [^\\r\\n]*\\r?\\n")
        var entries: [FirmwareBootMenu.Entry] = []
        var wait = listTimeout
        while true {
            let m: Match
            do { m = try await console.expect([line], timeout: wait) } catch {
                if error == .cancelled { throw error }
                break
            }
            if let e = FirmwareBootMenu.entry(inLine: m.text.trimming("\r\n")) { entries.append(e) }
            wait = listQuiet
            if entries.count > 64 { break }
        }
        guard !entries.isEmpty else {
            throw StageFailure(expected: "the boot menu's entries", message: "no \"N. label\" line came within \(format(listTimeout.seconds)) s of pressing \(menu.key.rawValue)")
        }
        let list = FirmwareBootMenu(entries: entries)
        func name(_ i: Int) -> String { "\(Character(Unicode.Scalar(entries[i].key))). \"\(entries[i].label)\"" }
        let found = list.find(menu.entry)
        switch found {
        case .exact(let i), .ignoringCase(let i):
            try console.send([entries[i].key])
            return StageOutcome(detail: "pressed \(menu.key.rawValue) \(format((reaction ?? 0) / 1000)) ms after the prompt, chose \(name(i)) of \(entries.count)"
                                    + (found == .ignoringCase(i) ? " (matched ignoring case)" : ""),
                                reactionUs: reaction)
        case .missing:
            throw StageFailure(expected: "boot menu entry \"\(menu.entry)\"",
                               message: "no boot menu entry is labelled \"\(menu.entry)\"; the menu offers: " + entries.map(\.label).joined(separator: " | "))
        default:
            throw StageFailure(expected: "boot menu entry \"\(menu.entry)\"", message: "boot menu: " + found.problem(wanted: menu.entry, name: name)!)
        }
    }
}
