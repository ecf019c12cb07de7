import MessagePackPlugin
import NIOCore
import SwitchboardCore
import Testing

@Suite struct MessagePackEncoderTests {
    let encoder = MessagePackEventEncoder()

    @Test func envelopeBytesAreExact() {
        var buffer = ByteBuffer()
        encoder.encode(Event(topic: "t", type: "x", data: ["a": 1, "b": [true, nil, 1.5, "é"]], timestamp: 1_704_225_600), into: &buffer)
        let expected: [UInt8] = [
            0x84,  // map of 4
            0xA4] + Array("type".utf8) + [0xA1] + Array("x".utf8)
            + [0xA5] + Array("topic".utf8) + [0xA1] + Array("t".utf8)
            + [0xA9] + Array("timestamp".utf8) + [0xCE, 0x65, 0x94, 0x6B, 0x40]
            + [0xA4] + Array("data".utf8)
            + [0x82, 0xA1, 0x61, 0x01, 0xA1, 0x62, 0x94, 0xC3, 0xC0, 0xCB, 0x3F, 0xF8, 0, 0, 0, 0, 0, 0, 0xA2, 0xC3, 0xA9]
        #expect(Array(buffer.readableBytesView) == expected)
    }

    @Test func idAddsAFifthEntry() {
        var buffer = ByteBuffer()
        encoder.encode(Event(topic: "t", type: "x", data: nil, id: "7", timestamp: 1), into: &buffer)
        #expect(buffer.getInteger(at: 0, as: UInt8.self) == 0x85)
    }

    @Test func positionIsAMapAfterTheTopic() {
        var buffer = ByteBuffer()
        let position = StreamPosition(epoch: "e1", offset: 41)
        encoder.encode(Event(topic: "t", type: "x", data: nil, timestamp: 1, position: position), into: &buffer)
        let expected: [UInt8] = [0x85, 0xA4] + Array("type".utf8) + [0xA1] + Array("x".utf8)
            + [0xA5] + Array("topic".utf8) + [0xA1] + Array("t".utf8)
            + [0xA8] + Array("position".utf8) + [0x82, 0xA5] + Array("epoch".utf8) + [0xA2] + Array("e1".utf8)
            + [0xA6] + Array("offset".utf8) + [0x29]
        #expect(Array(buffer.readableBytesView.prefix(expected.count)) == expected)
        // And a client's `since` in MessagePack reads back as the same position.
        let since: [UInt8] = [0x83, 0xA4] + Array("type".utf8) + [0xA9] + Array("subscribe".utf8) + [0xA4] + Array("data".utf8) + [0xA1] + Array("t".utf8)
            + [0xA5] + Array("since".utf8) + [0x82, 0xA5] + Array("epoch".utf8) + [0xA2] + Array("e1".utf8) + [0xA6] + Array("offset".utf8) + [0x29]
        #expect(pack(since) == .success(.subscribe("t", SubscribeOptions(since: position))))
    }

    func pack(_ bytes: [UInt8]) -> Result<ClientMessage, ClientMessageError> {
        encoder.decode(ByteBuffer(bytes: bytes))
    }

    @Test func decodesClientMessages() {
        // {"type":"subscribe","data":"topic:a"}
        let subscribe: [UInt8] = [0x82, 0xA4] + Array("type".utf8) + [0xA9] + Array("subscribe".utf8) + [0xA4] + Array("data".utf8) + [0xA7] + Array("topic:a".utf8)
        #expect(pack(subscribe) == .success(.subscribe("topic:a")))
        let ping: [UInt8] = [0x81, 0xA4] + Array("type".utf8) + [0xA4] + Array("ping".utf8)
        #expect(pack(ping) == .success(.ping))
    }

    @Test(arguments: [
        ([0xC1], "invalid type byte 0xc1"),
        ([0x92, 0x01], "container claims more elements than the message holds"),
        ([0x92, 0x01, 0xCD, 0x01], "truncated data"),
        ([0xDD, 0x7F, 0xFF, 0xFF, 0xFF, 0x00], "container claims more elements than the message holds"),
        ([0xDF, 0x10, 0x00, 0x00, 0x00], "container claims more elements than the message holds"),
        ([0xDB, 0xFF, 0xFF, 0xFF, 0xFF, 0x61], "truncated data"),
        ([0x01, 0x02], "unexpected data after the value"),
        ([0xA2, 0xC3, 0x28], "invalid UTF-8 in string"),
        ([0x81, 0x01, 0x02], "map keys must be strings"),
        ([0xC4, 0x01, 0x00], "binary values are not accepted"),
    ] as [([UInt8], String)])
    func refusesMalformedInputWithAReason(bytes: [UInt8], reason: String) {
        #expect(pack(bytes) == .failure(ClientMessageError(code: "bad_message", message: "invalid MessagePack: \(reason)")))
    }

    @Test func deepNestingIsRefused() {
        let bytes = [UInt8](repeating: 0x91, count: 100) + [0xC0]
        #expect(pack(bytes) == .failure(ClientMessageError(code: "bad_message", message: "invalid MessagePack: nesting deeper than 32 levels")))
    }

    @Test func neverTrapsOnRandomBytes() {
        var generator = SeededRandom.forTest("MessagePackEncoderTests.neverTrapsOnRandomBytes")
        for _ in 0..<20_000 {
            let bytes = (0..<Int(generator.next() % 16)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            _ = pack(bytes)
        }
    }

    @Test func repliesRoundTripThroughTheReader() {
        var buffer = ByteBuffer()
        encoder.encode(.error(code: "bad", message: "no"), timestamp: 5, into: &buffer)
        #expect(MessagePackReader.read(buffer) == .success(["type": "error", "timestamp": 5, "data": ["code": "bad", "message": "no"]]))
    }
}
