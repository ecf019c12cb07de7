import MessagePackPlugin
import NIOCore
import SwitchboardCore

/// `msgpack`: the bytes as the payload of a client's binary message on a `msgpack` endpoint.
///
/// Invariants: `read` refuses what `validate` refuses, with the same reason, and accepts
/// nothing `validate` refuses; an accepted value nests at most `maximumDepth` + 1 deep;
/// `MessagePackEventEncoder.decode` agrees with `read` + `ClientMessageDecoding`; the value
/// written back by the `msgpack` encoder (flat object, envelope) reads back the same; a
/// value without NaN or infinities survives `JSONWriter` → `JSONParser`; the reply encodes to
/// MessagePack that reads back to its envelope.
func fuzzMessagePack(_ input: UnsafeRawBufferPointer) {
    let payload = ByteBuffer(bytes: input)
    let problem = MessagePackReader.validate(Array(input))
    let result = MessagePackReader.read(payload)
    let decoded = msgpackEncoder.decode(payload)

    switch result {
    case .failure(let error):
        if let problem {
            invariant(error.message == problem, "read failed with '\(error.message)', validate said '\(problem)'")
        }
        guard case .failure(let failure) = decoded else {
            fatalError("fuzz invariant violated: decode accepted what read refused (\(error.message)): \(describeBytes(input))")
        }
        invariant(failure.code == "bad_message", "malformed MessagePack answered with code \(failure.code)")
    case .success(let value):
        invariant(problem == nil, "read accepted what validate refused: \(problem ?? "")")
        let nesting = jsonNesting(value)
        invariant(nesting <= MessagePackReader.maximumDepth + 1, "accepted a value nested \(nesting) deep")
        checkSameDecoding(decoded, ClientMessageDecoding.interpret(value), "MessagePackEventEncoder.decode")
        checkMessagePackRoundTrip(value)
        checkJSONCrossing(value)
    }
    checkMessagePackReply(reply(to: decoded))
}

private let msgpackEncoder = MessagePackEventEncoder()

/// Reads bytes the `msgpack` encoder wrote; failing to is a bug.
private func readWritten(_ buffer: ByteBuffer, _ what: String) -> JSONValue {
    switch MessagePackReader.read(buffer) {
    case .success(let value): return value
    case .failure(let error): fatalError("fuzz invariant violated: \(what) does not read back (\(error.message)): \(describeBuffer(buffer))")
    }
}

/// The value as event data through the `msgpack` encoder.
private func checkMessagePackRoundTrip(_ value: JSONValue) {
    let type = value["type"]?.stringValue ?? "fuzz"
    if case .object = value {
        // The flat layout keeps an object's depth, so it must always read back.
        let event = Event(topic: "topic:fuzz", type: type, data: value, timestamp: 0, shape: .flat)
        var bytes = ByteBuffer()
        msgpackEncoder.encode(event, into: &bytes)
        invariant(sameJSON(readWritten(bytes, "msgpack flat event"), event.flatValue), "msgpack flat event: \(describeBuffer(bytes))")
    }
    // The envelope adds a level; stay well inside the reader's nesting limit.
    guard jsonNesting(value) + 1 < MessagePackReader.maximumDepth else { return }
    var bytes = ByteBuffer()
    msgpackEncoder.encode(Event(topic: "topic:fuzz", type: type, data: value, timestamp: 1_704_225_600), into: &bytes)
    let expected = envelope(type: type, topic: "topic:fuzz", timestamp: 1_704_225_600, data: value)
    invariant(sameJSON(readWritten(bytes, "msgpack envelope"), expected), "msgpack envelope: \(describeBuffer(bytes))")
}

/// Values that JSON can express mean the same after `JSONWriter` and `JSONParser`.
private func checkJSONCrossing(_ value: JSONValue) {
    guard jsonDoublesAreFinite(value) else { return }
    var bytes = ByteBuffer()
    JSONWriter.write(value, into: &bytes)
    let parsed: JSONValue
    do {
        parsed = try JSONParser.parse(bytes.readableBytesView)
    } catch {
        fatalError("fuzz invariant violated: JSONWriter output of a MessagePack value does not parse (\(error)): \(describeBuffer(bytes))")
    }
    invariant(parsed == value, "MessagePack value changed through JSON: \(describeBuffer(bytes))")
}

/// The reply through the `msgpack` encoder reads back to the reply's envelope.
private func checkMessagePackReply(_ reply: ServerReply) {
    var bytes = ByteBuffer()
    msgpackEncoder.encode(reply, timestamp: 1_704_225_600, into: &bytes)
    invariant(sameJSON(readWritten(bytes, "msgpack reply"), reply.envelope(timestamp: 1_704_225_600)), "msgpack reply: \(describeBuffer(bytes))")
}
