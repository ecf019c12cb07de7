import NIOCore
import SwitchboardCore

/// The `json` sink encoder: text frames carrying the envelope of the host systems' hubs.
///
/// Server → client: `{"type","topic","id"?,"position"?,"timestamp","data"}`. Client → server:
/// `{"type":"subscribe","data":"topic:x"}`, `unsubscribe`, `ping`.
public struct JSONEncoderPlugin: EncoderPlugin {
    public static let typeName = "json"
    public static let spec = PluginSpec(
        summary: "JSON envelopes in WebSocket text frames (subprotocol switchboard.json)",
        examples: [#"{"type":"metrics","topic":"metrics","timestamp":1704225600,"data":{"cpu":0.5}}"#]
    )
    public static func make() -> any EventEncoder { JSONEventEncoder() }
}

/// Encodes events and replies as compact JSON; decodes client JSON messages.
public struct JSONEventEncoder: EventEncoder {
    public let name = "json"
    public let subprotocol = "switchboard.json"
    public let frameKind = FrameKind.text
    /// Whether events carry their `topic` (an endpoint's `envelope: {topic: false}` leaves
    /// it out, as some hosts' hubs did).
    public var includesTopic = true

    public init() {}

    public var variantKey: String { EncoderVariant.key(name: name, includesTopic: includesTopic) }

    public func omittingTopic() -> (any EventEncoder)? {
        var encoder = self
        encoder.includesTopic = false
        return encoder
    }

    public func encode(_ event: Event, into buffer: inout ByteBuffer) {
        if event.shape == .flat {
            JSONWriter.write(event.flatValue, into: &buffer)
            return
        }
        buffer.writeStaticString(#"{"type":"#)
        JSONWriter.writeString(event.type, into: &buffer)
        if includesTopic {
            buffer.writeStaticString(#","topic":"#)
            JSONWriter.writeString(event.topic, into: &buffer)
        }
        if let id = event.id {
            buffer.writeStaticString(#","id":"#)
            JSONWriter.writeString(id, into: &buffer)
        }
        if let position = event.position {
            buffer.writeStaticString(#","position":{"epoch":"#)
            JSONWriter.writeString(position.epoch, into: &buffer)
            buffer.writeStaticString(#","offset":"#)
            JSONWriter.writeInteger(position.offset, into: &buffer)
            buffer.writeStaticString("}")
        }
        buffer.writeStaticString(#","timestamp":"#)
        JSONWriter.writeInteger(event.timestamp, into: &buffer)
        buffer.writeStaticString(#","data":"#)
        JSONWriter.write(event.data, into: &buffer)
        buffer.writeStaticString("}")
    }

    public func encode(_ reply: ServerReply, timestamp: Int64, into buffer: inout ByteBuffer) {
        JSONWriter.write(reply.envelope(timestamp: timestamp), into: &buffer)
    }

    public func decode(_ payload: ByteBuffer) -> Result<ClientMessage, ClientMessageError> {
        decode(payload, maxDepth: JSONParser.maximumDepth)
    }

    public func decode(_ payload: ByteBuffer, maxDepth: Int) -> Result<ClientMessage, ClientMessageError> {
        let message: JSONValue
        do {
            message = try JSONParser.parse(payload.readableBytesView, maxDepth: maxDepth)
        } catch {
            return .failure(ClientMessageError(code: "bad_message", message: "invalid JSON: \(error.description)"))
        }
        return ClientMessageDecoding.interpret(message)
    }
}

