import NIOCore
import SwitchboardCore
import SwitchboardRedis
import Testing

@Suite struct RESPParserTests {
    static let vectors: [(String, RESPValue)] = [
        ("+OK\r\n", .simpleString("OK")),
        ("-ERR unknown command\r\n", .error("ERR unknown command")),
        (":-42\r\n", .integer(-42)),
        ("$5\r\nhello\r\n", .bulkString(Array("hello".utf8))),
        ("$0\r\n\r\n", .bulkString([])),
        ("$-1\r\n", .null),
        ("*-1\r\n", .null),
        ("*2\r\n$7\r\nmessage\r\n:1\r\n", .array([.bulkString(Array("message".utf8)), .integer(1)])),
        ("_\r\n", .null),
        ("#t\r\n", .boolean(true)),
        (",3.5\r\n", .double(3.5)),
        ("(3492890328409238509324850943850943825024385\r\n", .bigNumber("3492890328409238509324850943850943825024385")),
        ("=15\r\ntxt:Some string\r\n", .verbatim("Some string")),
        ("!21\r\nSYNTAX invalid syntax\r\n", .error("SYNTAX invalid syntax")),
        ("%1\r\n+key\r\n:1\r\n", .map([.simpleString("key"), .integer(1)])),
        ("~2\r\n+a\r\n+b\r\n", .set([.simpleString("a"), .simpleString("b")])),
        (">3\r\n+message\r\n+ch\r\n$2\r\nhi\r\n", .push([.simpleString("message"), .simpleString("ch"), .bulkString(Array("hi".utf8))])),
        ("|1\r\n+ttl\r\n:3600\r\n:7\r\n", .integer(7)),
    ]

    @Test func parsesEveryTypeWhateverTheChunking() throws {
        let parser = RESPParser()
        for (text, expected) in Self.vectors {
            let bytes = Array(text.utf8)
            // Fed byte by byte: nil until complete, then the value, nothing left over.
            var buffer = ByteBuffer()
            var result: RESPValue?
            for (index, byte) in bytes.enumerated() {
                buffer.writeInteger(byte)
                result = try parser.parse(&buffer)
                if index < bytes.count - 1 { #expect(result == nil, "\(text) parsed early at \(index)") }
            }
            #expect(result == expected, "\(text)")
            #expect(buffer.readableBytes == 0)
        }
    }

    @Test func parsesBackToBackValues() throws {
        var buffer = ByteBuffer(string: Self.vectors.map(\.0).joined())
        var parsed: [RESPValue] = []
        while let value = try RESPParser().parse(&buffer) { parsed.append(value) }
        #expect(parsed == Self.vectors.map(\.1))
    }

    @Test(arguments: ["?x\r\n", ":abc\r\n", "$3\r\nabcd\r\n", "$-5\r\n", "*-2\r\n", "+a\nb\r\n", "#x\r\n", ",1.2.3\r\n", "$99999999999\r\n"])
    func refusesMalformedInput(_ text: String) {
        var buffer = ByteBuffer(string: text)
        #expect(throws: RESPError.self) { _ = try RESPParser().parse(&buffer) }
    }

    @Test func refusesDeepNestingAndHugeClaimsWithoutAllocating() {
        var deep = ByteBuffer(string: String(repeating: "*1\r\n", count: 100) + ":1\r\n")
        #expect(throws: RESPError.self) { _ = try RESPParser().parse(&deep) }
        var huge = ByteBuffer(string: "*1000000\r\n:1\r\n")
        #expect((try? RESPParser().parse(&huge)) == .some(nil))  // waits for more; reserved little
        var tooMany = ByteBuffer(string: "*99999999\r\n")
        #expect(throws: RESPError.self) { _ = try RESPParser().parse(&tooMany) }
    }

    /// Random bytes and mutated valid replies never trap.
    @Test func neverTrapsOnRandomBytes() {
        var generator = SeededRandom.forTest("RESPTests.neverTrapsOnRandomBytes")
        let alphabet = Array("+-:$*_#,(=!%~>|\r\n0123456789-abc".utf8)
        let valid = Array(Self.vectors.map(\.0).joined().utf8)
        for round in 0..<20_000 {
            var bytes: [UInt8]
            if round % 2 == 0 {
                bytes = (0..<Int.random(in: 0...40, using: &generator)).map { _ in alphabet.randomElement(using: &generator) ?? 0 }
            } else {
                bytes = valid
                for _ in 0..<3 { bytes[Int.random(in: 0..<bytes.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator) }
            }
            var buffer = ByteBuffer(bytes: bytes)
            while let value = try? RESPParser().parse(&buffer), value != nil {}
        }
    }

    @Test func encodesCommandsAsBulkStrings() {
        var buffer = ByteBuffer()
        RESPCommand.write(["SET", "k", .bytes([0, 255])], into: &buffer)
        #expect(Array(buffer.readableBytesView) == Array("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n".utf8) + [0, 255] + Array("\r\n".utf8))
    }
}

@Suite struct RedisURLTests {
    @Test func parsesEveryPart() throws {
        let url = try RedisURL(parsing: "rediss://app:p%40ss@cache.internal:6380/2")
        #expect(url == (try RedisURL(parsing: "rediss://app:p%40ss@cache.internal:6380/2")))
        #expect((url.host, url.port, url.user, url.password, url.database, url.tls) == ("cache.internal", 6380, "app", "p@ss", 2, true))
        #expect(url.description == "rediss://app:***@cache.internal:6380/2")
        let plain = try RedisURL(parsing: "redis://:secret@127.0.0.1")
        #expect((plain.user, plain.password, plain.port, plain.database) == (nil, "secret", 6379, 0))
    }

    @Test(arguments: ["http://x", "redis://", "redis://h:0", "redis://h/x", "redis://h/-1", "redis://h?ca=/x.pem", "rediss://h?verify=no"])
    func refuses(_ text: String) {
        #expect(throws: ConfigValidationError.self) { _ = try RedisURL(parsing: text) }
    }
}
