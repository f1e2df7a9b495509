import Matching
import Terminal
import Testing

func chunk(_ s: String, at offset: UInt64 = 0) -> TextChunk {
    var c = TextChunk()
    c.bytes = Array(s.utf8)
    c.offsets = (0..<UInt64(c.bytes.count)).map { $0 + offset }
    return c
}

@Suite struct StreamMatcherTests {
    @Test func literalIsFoundAcrossEverySplit() throws {
        let text = "iPXE 1.21.1\r\nPress Ctrl-B for the iPXE command line..."
        let expected = text.utf8.count - " for the iPXE command line...".utf8.count
        for cut in 0...text.utf8.count {
            var m = try StreamMatcher([.literal("login:"), .literal("Ctrl-B")])
            let all = chunk(text, at: 500)
            var first = TextChunk(); first.bytes = Array(all.bytes[..<cut]); first.offsets = Array(all.offsets[..<cut])
            var second = TextChunk(); second.bytes = Array(all.bytes[cut...]); second.offsets = Array(all.offsets[cut...])
            let hit = m.scan(first) ?? m.scan(second)
            let match = try #require(hit?.match, "split at \(cut)")
            #expect(match.patternIndex == 1)
            #expect(match.text == "Ctrl-B")
            #expect(match.end == 500 + UInt64(expected))
            #expect(match.start == match.end - 6)
        }
    }

    @Test func aFreshCopyOfAUsedMatcherFindsWhatANewOneFinds() throws {
        // fresh() keeps the DFA states a wait built (the session's matcher cache); it must start
        // clean: no half-match, no history, `^` at the start as after a newline.
        let patterns: [Pattern] = [.regex("^login: *"), .literal("Ctrl-B"), .regex("[a-z]+@[a-z0-9]+:[^ ]*# ")]
        var used = try StreamMatcher(patterns)
        _ = used.scan(chunk("noise root@apu2:~# more Ctr"))  // matches, then leaves "more Ctr" unscanned
        _ = used.scan(chunk("xx Ctr"))                        // a half-match left in it
        let texts = ["l-B no\r\nlogin: ", "Ctrl", "-B", "x login: \nlogin:\r\n", "root@rte1:/tmp# ", "Press Ctrl-B now"]
        for text in texts {
            var new = try StreamMatcher(patterns)
            var again = used.fresh()
            let a = new.scan(chunk(text, at: 100)), b = again.scan(chunk(text, at: 100))
            #expect(a?.match.patternIndex == b?.match.patternIndex && a?.match.start == b?.match.start
                    && a?.match.end == b?.match.end && a?.match.text == b?.match.text && a?.next == b?.next, "\(text)")
            #expect(again.position == new.position)
            used = again
        }
    }

    @Test func regexesMatchWithClassesGroupsAndRepeats() throws {
        var m = try StreamMatcher([.regex("Linux version (\\d+\\.)+\\d+-\\d+-amd64"), .literal("never")])
        let scanned = m.scan(chunk("[    0.000000] Linux version 6.1.0-27-amd64 (debian-kernel@lists)"))
        let r = try #require(scanned)
        #expect(r.match.text == "Linux version 6.1.0-27-amd64")
        #expect(r.match.patternIndex == 0)
        var ci = try StreamMatcher([.regex("(?i)login incorrect|password:")])
        #expect(ci.scan(chunk("PASSWORD: "))?.match.text == "PASSWORD:")
        var anchored = try StreamMatcher([.regex("^# ")])
        #expect(anchored.scan(chunk("echo # not this\r\n# ")).map { $0.match.start } == 17)
        var braces = try StreamMatcher([.regex("x{2,3}y"), .regex("[^a-z ]+!")])
        #expect(braces.scan(chunk("xy xxxxy"))?.match.text == "xxxy")
        #expect(braces.scan(chunk("abc ABC!"))?.match.text == "ABC!")
    }

    @Test func theRestOfAChunkIsLeftForTheNextWait() throws {
        let c = chunk("dhcp ok\r\niPXE> chain\r\niPXE> ")
        var first = try StreamMatcher([.literal("iPXE> ")])
        let sa = first.scan(c)
        let a = try #require(sa)
        var second = try StreamMatcher([.literal("iPXE> ")])
        let sb = second.scan(c, from: a.next)
        let b = try #require(sb)
        #expect(a.match.start == 9 && b.match.start == 22)
    }

    @Test func pathologicalPatternsRunInLinearTime() throws {
        // (a*)*b on a long run of a's takes exponential time in a backtracking engine.
        var m = try StreamMatcher([.regex("(a*)*b"), .regex("(a|aa)+c")])
        let long = String(repeating: "a", count: 200_000)
        #expect(m.scan(chunk(long)) == nil)
        #expect(m.scan(chunk("b"))?.match.patternIndex == 0)
    }

    /// Issue 16 D6: empty groups emit no instructions, so `(?:){1000}{1000}…` never reached the
    /// instruction budget and compiled for ever on every core; a 1 MB pattern cost ~76 MB to parse.
    @Test func patternBombsAreRefusedBeforeTheyCostAnything() {
        for bomb in ["a(?:){1000}{1000}{1000}{1000}", "(?:(?:(?:ab?){1000}){1000}){1000}", "(?:){1000}{1000}x", "(?:x{1000}){1000}"] {
            #expect(throws: PatternError.self, "\(bomb)") { _ = try StreamMatcher([.regex(bomb)]) }
            do { _ = try StreamMatcher([.regex(bomb)]) } catch {
                #expect(error.description.contains("too large once repeats are expanded"), "\(error)")
            }
        }
        let huge = String(repeating: "a", count: 1 << 20)
        for p in [Pattern.regex(huge), .literal(huge)] {
            do { _ = try StreamMatcher([p]); Issue.record("a 1 MB pattern was accepted") } catch {
                #expect(error.description.contains("patterns are limited to 4096 bytes, this one has 1048576"), "\(error)")
                #expect(error.description.count < 300, "the error does not echo the whole pattern")
            }
        }
        // Large but legitimate patterns still compile.
        #expect((try? StreamMatcher([.regex("[0-9a-f]{64}"), .literal(String(repeating: "=", count: 4096))])) != nil)
    }

    @Test func badPatternsAreRejectedWithAReason() {
        for (p, reason) in [("", "empty"), ("a$", "'$'"), ("(a)\\1", "backreferences"), ("*a", "nothing to repeat"),
                            ("(ab", "missing ')'"), ("[z-a]", "out of order"), ("x*", "empty string"), ("(?=a)", "only (?:")] {
            do {
                _ = try StreamMatcher([p.isEmpty ? .literal(p) : .regex(p)])
                Issue.record("\(p) was accepted")
            } catch {
                #expect(error.description.contains(reason), "\(p): \(error)")
            }
        }
    }

    /// A single literal takes a shortcut to its start; with a second pattern the NFA finds it.
    /// Both must agree on every match, wherever the chunks split the text.
    @Test func aSingleLiteralsShortcutAgreesWithTheNFA() throws {
        var rng = SystemRandomNumberGenerator()
        let text = String((0..<20_000).map { _ in Array("aab\n")[Int.random(in: 0..<4, using: &rng)] })
        let all = chunk(text, at: 1000)
        func matches(_ patterns: [Pattern]) throws -> [Match] {
            var m = try StreamMatcher(patterns)
            var found: [Match] = []
            var i = 0
            var calls = 0
            while i < all.bytes.count {
                let n = min(all.bytes.count - i, Int.random(in: 1...300, using: &rng))
                var piece = TextChunk()
                piece.append(all, i..<(i + n))
                var from = 0
                while let hit = m.scan(piece, from: from, onMatchEnd: { calls += 1 }) {
                    #expect(calls == found.count + 1, "called once, before the match is returned")
                    found.append(hit.match); from = hit.next
                }
                #expect(calls == found.count, "never called without a match")
                i += n
            }
            return found
        }
        let shortcut = try matches([.literal("aab\na")])
        let nfa = try matches([.literal("aab\na"), .literal("never here")])
        #expect(shortcut.count > 100)
        #expect(shortcut == nfa)
        #expect(shortcut.allSatisfy { $0.text == "aab\na" && $0.end - $0.start == 5 })
    }

    @Test func aMatchFarIntoALongLogHasItsExactOffset() throws {
        var m = try StreamMatcher([.literal("apu2 login: ")])
        var fed: UInt64 = 0
        let line = "[    1.234567] some driver: probing device with debug output enabled\r\n"
        for _ in 0..<20_000 {
            #expect(m.scan(chunk(line, at: fed)) == nil)
            fed += UInt64(line.utf8.count)
        }
        let last = m.scan(chunk("Debian\r\napu2 login: ", at: fed))
        let hit = try #require(last)
        #expect(hit.match.start == fed + 8)
        #expect(m.position == fed + 20)
    }
}

@Suite struct MatcherOnRealBytesTests {
    /// The boot's prompts, matched in the text of a real QEMU boot however the bytes arrive.
    @Test func promptsInARealBootAreFoundAtTheSameOffsetsForAnyChunking() throws {
        let bytes = try fixture("qemu-linux-boot-login.bin")
        let patterns: [Pattern] = [.literal("Ctrl-B"), .regex("Linux version \\d+\\.\\d+\\.\\d+"), .literal("login: "), .literal("Password: "),
                                   .regex("root@apu2:~# ")]
        func matches(chunkSizes: () -> Int) throws -> [Match] {
            var terminal = Terminal()
            var matcher = try StreamMatcher(patterns)
            var found: [Match] = []
            var i = 0
            while i < bytes.count {
                let n = min(bytes.count - i, chunkSizes())
                let text = terminal.feed(bytes[i..<(i + n)])
                var from = 0
                while let hit = matcher.scan(text, from: from) { found.append(hit.match); from = hit.next }
                i += n
            }
            return found
        }
        let whole = try matches { bytes.count }
        #expect(whole.map(\.patternIndex).contains(0) && whole.map(\.patternIndex).contains(1))
        #expect(whole.map(\.patternIndex).contains(2) && whole.map(\.patternIndex).contains(3) && whole.map(\.patternIndex).contains(4))
        #expect(whole.first { $0.patternIndex == 1 }?.text.hasPrefix("Linux version 6.1.0") == true)
        // One byte at a time crosses every boundary; random chunk sizes cross them in other ways.
        #expect(try matches { 1 } == whole)
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<20 { #expect(try matches { Int.random(in: 1...700, using: &rng) } == whole) }
    }
}

@Suite struct LazyDFATests {
    /// `a[ab]{13}!` needs 2^14 DFA states over random a/b text: the state cache is dropped and
    /// rebuilt several times, and every match must still be the one a plain scan finds.
    @Test func matchesStayExactWhenTheStateCacheOverflows() throws {
        var rng = SystemRandomNumberGenerator()
        var text = (0..<150_000).map { _ in Bool.random(using: &rng) ? UInt8(ascii: "a") : UInt8(ascii: "b") }
        for p in [40_000, 90_000, 149_000] { text[p] = UInt8(ascii: "!") }
        // Reference: the first "!" preceded by 14 bytes of a/b that start with "a", from `from` on.
        func expected(from: Int) -> Int? {
            for p in [40_000, 90_000, 149_000] where p - 14 >= from && text[p - 14] == UInt8(ascii: "a") { return p }
            return nil
        }
        var m = try StreamMatcher([.regex("a[ab]{13}!")])
        var c = TextChunk()
        c.bytes = text
        c.offsets = (0..<UInt64(text.count)).map { $0 + 7 }
        var from = 0
        while let r = m.scan(c, from: from) {
            let p = try #require(expected(from: from))
            #expect(r.match.end == UInt64(p) + 8)
            #expect(r.match.start == UInt64(p - 14) + 7)
            #expect(r.match.text.count == 15)
            from = r.next
        }
        #expect(expected(from: from) == nil)
    }

    @Test func leftmostStartWinsAndTiesGoToTheEarlierPattern() throws {
        var m = try StreamMatcher([.literal("login:"), .regex("apu2 login:"), .regex("gin:")])
        let scanned = m.scan(chunk("Debian apu2 login: "))
        let r = try #require(scanned)
        #expect(r.match.patternIndex == 1)
        #expect(r.match.text == "apu2 login:")
        var tie = try StreamMatcher([.regex("[a-z]+:"), .literal("login:")])
        #expect(tie.scan(chunk(" login:"))?.match.patternIndex == 0)
    }
}
