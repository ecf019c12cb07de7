import JSONPlugin
import NIOCore
import SwitchboardCore

/// `json`: the bytes as one JSON document (webhook bodies, client messages, backend payloads
/// all go through `JSONParser`).
///
/// Invariants: errors point inside the input; a parsed value nests at most
/// `JSONParser.maximumDepth` deep; what `JSONWriter` writes parses back to the same value and
/// is written again byte for byte; the `json` encoder's event envelope and flat layout parse
/// back to the expected objects.
func fuzzJSON(_ input: UnsafeRawBufferPointer) {
    let value: JSONValue
    do {
        value = try JSONParser.parse(input)
    } catch {
        invariant(error.offset >= 0 && error.offset <= input.count, "error offset \(error.offset) outside \(input.count) bytes")
        invariant(error.line >= 1 && error.column >= 1, "error position \(error.line):\(error.column) is not 1-based")
        return
    }
    let nesting = jsonNesting(value)
    invariant(nesting <= JSONParser.maximumDepth, "parsed a value nested \(nesting) deep")

    var written = ByteBuffer()
    JSONWriter.write(value, into: &written)
    let reparsed = parseWritten(written, "JSONWriter output")
    invariant(reparsed == value, "JSONWriter round trip changed the value: \(describeBuffer(written))")
    var rewritten = ByteBuffer()
    JSONWriter.write(reparsed, into: &rewritten)
    invariant(rewritten == written, "JSONWriter is not stable: \(describeBuffer(written)) then \(describeBuffer(rewritten))")

    checkEventEncoding(value)
}

/// Parses bytes our own writers produced; failing to is a bug.
private func parseWritten(_ buffer: ByteBuffer, _ what: String) -> JSONValue {
    do {
        return try JSONParser.parse(buffer.readableBytesView)
    } catch {
        fatalError("fuzz invariant violated: \(what) does not parse (\(error)): \(describeBuffer(buffer))")
    }
}

private let jsonEncoder = JSONEventEncoder()

/// The value as an event's data, through the `json` encoder in both layouts.
private func checkEventEncoding(_ value: JSONValue) {
    // The envelope adds a level: a scalar at the parser's deepest level would end up one
    // level too deep, which the parser (rightly) refuses.
    guard jsonNesting(value) < JSONParser.maximumDepth - 1 else { return }
    let type = value["type"]?.stringValue ?? "fuzz"
    let topic = value["topic"]?.stringValue ?? "topic:fuzz"

    var envelopeBytes = ByteBuffer()
    jsonEncoder.encode(Event(topic: topic, type: type, data: value, timestamp: 1_704_225_600), into: &envelopeBytes)
    let expected = envelope(type: type, topic: topic, timestamp: 1_704_225_600, data: value)
    invariant(parseWritten(envelopeBytes, "json envelope") == expected, "json envelope: \(describeBuffer(envelopeBytes))")

    let flatEvent = Event(topic: topic, type: type, data: value, timestamp: 0, shape: .flat)
    var flatBytes = ByteBuffer()
    jsonEncoder.encode(flatEvent, into: &flatBytes)
    invariant(parseWritten(flatBytes, "json flat event") == flatEvent.flatValue, "json flat event: \(describeBuffer(flatBytes))")
}
