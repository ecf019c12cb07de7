import NIOCore
import SwitchboardCore
import Testing

@Suite struct JSONParserTests {
    @Test func parsesAllKindsKeepingKeyOrder() throws {
        let value = try JSONParser.parse(#"{"b":1,"a":[true,false,null,-2.5e3,"x\n\u00e9\ud83d\ude00"],"c":{}}"#)
        guard case .object(let object) = value else {
            Issue.record("not an object")
            return
        }
        #expect(object.keys == ["b", "a", "c"])
        #expect(object["b"] == .int(1))
        #expect(object["a"] == .array([.bool(true), .bool(false), .null, .double(-2500), .string("x\né😀")]))
        #expect(object["c"] == .object(JSONObject()))
    }

    @Test(arguments: [
        ("{\"a\":1,}", "expected a string key", 1, 8),
        ("{\"a\" 1}", "expected ':' after object key", 1, 6),
        ("[1,2", "unexpected end of input inside an array", 1, 5),
        ("{\n  \"a\": tru\n}", "invalid literal", 2, 8),
        ("\"abc", "unterminated string", 1, 1),
        ("01", "unexpected data after the JSON value", 1, 2),
        ("[1] x", "unexpected data after the JSON value", 1, 5),
        ("\"\\q\"", "invalid escape '\\q'", 1, 2),
        ("\"\\ud800\"", "unpaired surrogate in \\u escape", 1, 8),
        ("", "unexpected end of input, expected a value", 1, 1),
        ("-", "invalid number", 1, 1),
        ("1.", "expected digits after '.'", 1, 3),
    ])
    func reportsErrorPositions(input: String, message: String, line: Int, column: Int) {
        #expect(throws: JSONParseError.self) { try JSONParser.parse(input) }
        do {
            _ = try JSONParser.parse(input)
        } catch {
            #expect(error.message == message)
            #expect(error.line == line)
            #expect(error.column == column)
        }
    }

    @Test func rejectsInvalidUTF8InStrings() {
        let bytes: [UInt8] = [0x22, 0xC3, 0x28, 0x22]
        #expect(throws: JSONParseError.self) { try JSONParser.parse(bytes) }
    }

    @Test func rejectsDeepNestingWithoutRecursingForever() {
        let deep = String(repeating: "[", count: 100_000)
        #expect(throws: JSONParseError.self) { try JSONParser.parse(deep) }
    }

    @Test func neverTrapsOnRandomBytes() {
        var generator = SeededRandom.forTest("JSONTests.neverTrapsOnRandomBytes")
        let alphabet = Array(#"{}[]":,-+.eE0123456789tfnrulsa\ "#.utf8) + [0x00, 0xFF, 0xC3, 0x80]
        var parsed = 0
        for _ in 0..<20_000 {
            let length = Int(generator.next() % 24)
            let bytes = (0..<length).map { _ in alphabet[Int(generator.next() % UInt64(alphabet.count))] }
            if (try? JSONParser.parse(bytes)) != nil { parsed += 1 }
        }
        #expect(parsed < 20_000)
    }
}

@Suite struct JSONWriterTests {
    @Test func writesCompactEscapedJSON() {
        let value: JSONValue = ["s": "a\"b\\c\n\u{01}é", "i": -3, "d": 1.5, "whole": 2.0, "n": nil, "l": [true, false]]
        #expect(JSONWriter.string(value) == #"{"s":"a\"b\\c\n\u0001é","i":-3,"d":1.5,"whole":2.0,"n":null,"l":[true,false]}"#)
    }

    @Test func roundTripsThroughTheParser() throws {
        let value: JSONValue = ["k": ["nested": [1, 2, ["deep": "x"]]], "t": "\u{7F}\t"]
        #expect(try JSONParser.parse(JSONWriter.string(value)) == value)
    }

    @Test func nonFiniteNumbersBecomeNull() {
        #expect(JSONWriter.string([.double(.infinity), .double(.nan)]) == "[null,null]")
    }
}

@Suite struct TopicPatternTests {
    @Test func parsesExactAndWildcard() {
        #expect(TopicPattern("metrics")?.isWildcard == false)
        #expect(TopicPattern("topic:*")?.prefix == "topic:")
        #expect(TopicPattern("*")?.prefix == "")
    }

    @Test(arguments: ["", "a*b", "**", "has space", "tab\tx", String(repeating: "x", count: 257)])
    func rejectsInvalid(text: String) {
        #expect(TopicPattern(text) == nil)
    }

    @Test func matchesAndCovers() throws {
        let wildcard = try #require(TopicPattern("topic:*"))
        #expect(wildcard.matches("topic:orders"))
        #expect(wildcard.matches("topic:"))
        #expect(!wildcard.matches("group:x"))
        #expect(try #require(TopicPattern("topic:a")).isCovered(by: wildcard))
        #expect(try #require(TopicPattern("topic:a:*")).isCovered(by: wildcard))
        #expect(!wildcard.isCovered(by: try #require(TopicPattern("topic:a"))))
        #expect(wildcard.isCovered(by: try #require(TopicPattern("*"))))
    }
}

@Suite struct ConfigValueTests {
    @Test(arguments: [("2s", 2_000_000_000), ("500ms", 500_000_000), ("1.5m", 90_000_000_000), ("1h", 3_600_000_000_000), ("3", 3_000_000_000)])
    func parsesDurations(text: String, nanoseconds: Int64) {
        #expect(ConfigDuration(parsing: text)?.nanoseconds == nanoseconds)
    }

    @Test(arguments: ["", "fast", "-1s", "2 parsecs", "1e30h"])
    func rejectsBadDurations(text: String) {
        #expect(ConfigDuration(parsing: text) == nil)
    }

    @Test(arguments: [("64KiB", 65536), ("1MiB", 1_048_576), ("16KB", 16000), ("512", 512), ("2 MiB", 2_097_152)])
    func parsesSizes(text: String, bytes: Int) {
        #expect(ConfigByteSize(parsing: text)?.bytes == bytes)
    }

    @Test func suggestsCloseNames() {
        #expect(Suggestion.closest(to: "evry", in: ["every", "topic", "type"]) == "every")
        #expect(Suggestion.closest(to: "isuer", in: ["issuer", "audience"]) == "issuer")
        #expect(Suggestion.closest(to: "zzzzzz", in: ["every", "topic"]) == nil)
    }
}
