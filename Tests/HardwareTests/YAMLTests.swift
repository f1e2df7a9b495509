import Testing
import YAML

/// The libyaml wrapper that replaced Yams (issue 18: no Foundation through the YAML reader).
@Suite struct YAMLTests {
    @Test func nodesKeepTheirTextStyleAndPlace() throws {
        let doc = try #require(try YAML.compose(yaml: "dut:\n  name: apu2\n  board: 'apu2'\nlines: [relay, \"reset\"]\nnote: |\n  two\n  lines\n"))
        let root = try #require(doc.mapping)
        #expect(root.keys.compactMap(\.string) == ["dut", "lines", "note"])
        let dut = try #require(root[Node("dut")]?.mapping)
        #expect(dut[Node("name")] == .scalar(Node.Scalar("apu2", style: .plain, mark: Mark(line: 2, column: 9))))
        guard case .scalar(let board)? = dut[Node("board")] else { Issue.record("no board"); return }
        #expect(board.style == .singleQuoted && board.string == "apu2")
        guard case .sequence(let lines)? = root[Node("lines")] else { Issue.record("no list"); return }
        #expect(lines.items.compactMap(\.string) == ["relay", "reset"] && lines.mark?.line == 4)
        guard case .scalar(let note)? = root[Node("note")] else { Issue.record("no note"); return }
        #expect(note.style == .literal && note.string == "two\nlines\n")
        #expect(try YAML.compose(yaml: "") == nil)
        #expect(try YAML.compose(yaml: "a: 1\n---\nb: 2\n")?.mapping?.keys.compactMap(\.string) == ["a"], "the first document")
    }

    @Test func aliasesExpandAndABillionLaughsIsRefused() throws {
        let doc = try #require(try YAML.compose(yaml: "base: &b {x: 1}\ncopy: *b\n")?.mapping)
        #expect(doc[Node("copy")] == doc[Node("base")])
        var bomb = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
        for i in 1...9 { bomb += "a\(i): &a\(i) [" + Array(repeating: "*a\(i - 1)", count: 10).joined(separator: ", ") + "]\n" }
        do { _ = try YAML.compose(yaml: bomb); Issue.record("a billion laughs was built") } catch {
            #expect(error.message.contains("more than 1000000 nodes"), "\(error)")
        }
        do { _ = try YAML.compose(yaml: "x: *nowhere\n"); Issue.record("dangling alias") } catch {
            #expect(error.mark?.line == 1)
        }
    }

    @Test func badTextAndDeepNestingNameTheirPlace() {
        do { _ = try YAML.compose(yaml: "a: 1\nb: [2, 3\nc: 4\n"); Issue.record("accepted") } catch {
            #expect(error.description.hasPrefix("line ") && error.mark != nil, "\(error)")
        }
        let deep = String(repeating: "[", count: 65) + String(repeating: "]", count: 65)
        do { _ = try YAML.compose(yaml: deep); Issue.record("accepted") } catch {
            #expect(error.message.contains("nested more than 64 levels"), "\(error)")
        }
        #expect((try? YAML.compose(yaml: String(repeating: "[", count: 64) + String(repeating: "]", count: 64))) != nil)
    }
}
