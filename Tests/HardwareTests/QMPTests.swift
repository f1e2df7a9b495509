@testable import QEMUDUT
import Testing

/// QMP messages are JSON documents: a reply is told by its member, whatever text an event or an
/// error description carries (matching on text took an event mentioning "return" for an answer).
@Suite struct QMPTests {
    @Test func commandsAreJSONAndRepliesAreReadByTheirMembers() {
        #expect(String(decoding: QMP.Command.systemReset.message, as: UTF8.self) == "{\"execute\":\"system_reset\"}\n")
        #expect(String(decoding: QMP.Command.capabilities.message, as: UTF8.self) == "{\"execute\":\"qmp_capabilities\"}\n")
        func reply(_ s: String) -> (Bool, String?) { let r = QMP.reply(Array(s.utf8)); return (r.done, r.error) }
        #expect(reply(#"{"QMP": {"version": {"qemu": {"major": 7}}, "capabilities": ["oob"]}}"#) == (false, nil))
        #expect(reply(#"{"return": {}}"#) == (true, nil))
        #expect(reply(#"{"timestamp": {"seconds": 1}, "event": "RESET", "data": {"guest": false, "reason": "\"return\""}}"#) == (false, nil))
        #expect(reply(#"{"error": {"class": "CommandNotFound", "desc": "The command foo has not been found"}}"#)
            == (true, "The command foo has not been found"))
        #expect(reply("not json at all \"error\"") == (false, nil))
    }
}
