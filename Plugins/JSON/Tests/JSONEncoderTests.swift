import JSONPlugin
import NIOCore
import SwitchboardCore
import Testing

@Suite struct JSONEncoderTests {
    let encoder = JSONEventEncoder()

    func encoded(_ event: Event) -> String {
        var buffer = ByteBuffer()
        encoder.encode(event, into: &buffer)
        return String(buffer: buffer)
    }

    @Test func envelopeMatchesTheSeedFormat() {
        let event = Event(topic: "topic:new-topic", type: "topic_created", data: ["name": "new-topic", "partitions": 5], timestamp: 1_704_225_600)
        #expect(encoded(event) == #"{"type":"topic_created","topic":"topic:new-topic","timestamp":1704225600,"data":{"name":"new-topic","partitions":5}}"#)
    }

    @Test func idIsIncludedWhenPresent() {
        let event = Event(topic: "t", type: "x", data: nil, id: "1700000000000-0", timestamp: 1)
        #expect(encoded(event) == #"{"type":"x","topic":"t","id":"1700000000000-0","timestamp":1,"data":null}"#)
    }

    @Test func replies() {
        func reply(_ message: ServerReply) -> String {
            var buffer = ByteBuffer()
            encoder.encode(message, timestamp: 1_704_225_600, into: &buffer)
            return String(buffer: buffer)
        }
        #expect(reply(.pong) == #"{"type":"pong","timestamp":1704225600}"#)
        #expect(reply(.subscribed("topic:x")) == #"{"type":"subscribed","timestamp":1704225600,"data":"topic:x"}"#)
        #expect(reply(.error(code: "bad_message", message: "no")) == #"{"type":"error","timestamp":1704225600,"data":{"code":"bad_message","message":"no"}}"#)
    }

    @Test(arguments: [
        (#"{"type":"subscribe","data":"topic:my-topic","timestamp":1704225600}"#, ClientMessage.subscribe("topic:my-topic")),
        (#"{"type":"unsubscribe","data":"topic:my-topic"}"#, ClientMessage.unsubscribe("topic:my-topic")),
        (#"{"type":"subscribe","topic":"metrics"}"#, ClientMessage.subscribe("metrics")),
        (#"{"type":"ping","timestamp":1704225600}"#, ClientMessage.ping),
    ])
    func decodesClientMessages(text: String, expected: ClientMessage) {
        #expect(encoder.decode(ByteBuffer(string: text)) == .success(expected))
    }

    @Test(arguments: [
        ("{bad", "bad_message", "invalid JSON: expected a string key at line 1, column 2"),
        ("[1]", "bad_message", "expected a JSON object, got an array"),
        (#"{"data":"x"}"#, "bad_message", "missing string field 'type'"),
        (#"{"type":"subscribe"}"#, "bad_message", "'subscribe' needs the topic as a string in 'data', e.g. \"data\":\"topic:orders\""),
    ])
    func rejectsBadMessages(text: String, code: String, message: String) {
        let result = encoder.decode(ByteBuffer(string: text))
        #expect(result == .failure(ClientMessageError(code: code, message: message)))
    }

    @Test func unknownTypesArePassedOn() {
        guard case .success(.other(let type, _)) = encoder.decode(ByteBuffer(string: #"{"type":"refresh","token":"x"}"#)) else {
            Issue.record("expected .other")
            return
        }
        #expect(type == "refresh")
    }

    /// The endpoint's `max_message_depth` bounds a client message's nesting.
    @Test func decodeHonoursTheEndpointDepth() {
        let encoder = JSONEventEncoder()
        let shallow = ByteBuffer(string: #"{"type":"subscribe","data":"t","x":[1]}"#)
        guard case .success = encoder.decode(shallow, maxDepth: 3) else {
            Issue.record("depth 3 should be accepted")
            return
        }
        let deep = ByteBuffer(string: #"{"type":"subscribe","data":"t","x":[[1]]}"#)
        guard case .failure(let error) = encoder.decode(deep, maxDepth: 3) else {
            Issue.record("depth 4 should be refused")
            return
        }
        #expect(error.code == "bad_message")
        #expect(error.message.contains("nesting deeper than 3 levels"))
    }
}
