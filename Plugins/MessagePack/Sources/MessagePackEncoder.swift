import CMsgPack
import NIOCore
import SwitchboardCore

/// The `msgpack` sink encoder: the same envelope as `json`, as a MessagePack map in binary
/// frames (subprotocol `switchboard.msgpack`). Built on msgpack-c.
public struct MessagePackEncoderPlugin: EncoderPlugin {
    public static let typeName = "msgpack"
    public static let spec = PluginSpec(
        summary: "MessagePack maps in WebSocket binary frames (subprotocol switchboard.msgpack); clients may send MessagePack too",
        examples: ["endpoints:\n  - path: /ws\n    encoders: [json, msgpack]"]
    )
    public static func make() -> any EventEncoder { MessagePackEventEncoder() }
}

/// Encodes events and replies as MessagePack maps; decodes MessagePack client messages.
public struct MessagePackEventEncoder: EventEncoder {
    public let name = "msgpack"
    public let subprotocol = "switchboard.msgpack"
    public let frameKind = FrameKind.binary
    /// Whether events carry their `topic` (see the JSON encoder).
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
            let flat = event.flatValue
            MessagePackWriter.write(into: &buffer) { $0.value(flat) }
            return
        }
        MessagePackWriter.write(into: &buffer) { packer in
            msgpack_pack_map(packer, (includesTopic ? 4 : 3) + (event.id == nil ? 0 : 1) + (event.position == nil ? 0 : 1))
            packer.string("type")
            packer.string(event.type)
            if includesTopic {
                packer.string("topic")
                packer.string(event.topic)
            }
            if let id = event.id {
                packer.string("id")
                packer.string(id)
            }
            if let position = event.position {
                packer.string("position")
                msgpack_pack_map(packer, 2)
                packer.string("epoch")
                packer.string(position.epoch)
                packer.string("offset")
                msgpack_pack_int64(packer, position.offset)
            }
            packer.string("timestamp")
            msgpack_pack_int64(packer, event.timestamp)
            packer.string("data")
            packer.value(event.data)
        }
    }

    public func encode(_ reply: ServerReply, timestamp: Int64, into buffer: inout ByteBuffer) {
        let envelope = reply.envelope(timestamp: timestamp)
        MessagePackWriter.write(into: &buffer) { $0.value(envelope) }
    }

    public func decode(_ payload: ByteBuffer) -> Result<ClientMessage, ClientMessageError> {
        decode(payload, maxDepth: MessagePackReader.maximumDepth)
    }

    public func decode(_ payload: ByteBuffer, maxDepth: Int) -> Result<ClientMessage, ClientMessageError> {
        switch MessagePackReader.read(payload, maxDepth: maxDepth) {
        case .success(let value): return ClientMessageDecoding.interpret(value)
        case .failure(let error): return .failure(ClientMessageError(code: "bad_message", message: "invalid MessagePack: \(error.message)"))
        }
    }
}

/// Packs with msgpack-c straight into a `ByteBuffer` (no intermediate buffer).
public enum MessagePackWriter {
    typealias Packer = UnsafeMutablePointer<msgpack_packer>

    /// `value` as MessagePack (what a client sends; tests and `switchboard publish`).
    public static func buffer(_ value: JSONValue) -> ByteBuffer {
        var buffer = ByteBuffer()
        write(into: &buffer) { $0.value(value) }
        return buffer
    }

    static func write(into buffer: inout ByteBuffer, _ body: (Packer) -> Void) {
        withUnsafeMutablePointer(to: &buffer) { bufferPointer in
            var packer = msgpack_packer()
            msgpack_packer_init(&packer, UnsafeMutableRawPointer(bufferPointer)) { data, bytes, length in
                guard let data, let bytes else { return length == 0 ? 0 : -1 }
                let target = data.assumingMemoryBound(to: ByteBuffer.self)
                target.pointee.writeBytes(UnsafeRawBufferPointer(start: bytes, count: length))
                return 0
            }
            withUnsafeMutablePointer(to: &packer) { body($0) }
        }
    }
}

extension UnsafeMutablePointer where Pointee == msgpack_packer {
    func string(_ text: String) {
        var text = text
        text.withUTF8 { bytes in
            msgpack_pack_str(self, bytes.count)
            msgpack_pack_str_body(self, bytes.baseAddress, bytes.count)
        }
    }

    func value(_ value: JSONValue) {
        switch value {
        case .null: msgpack_pack_nil(self)
        case .bool(let flag): if flag { msgpack_pack_true(self) } else { msgpack_pack_false(self) }
        case .int(let number): msgpack_pack_int64(self, number)
        case .double(let number): msgpack_pack_double(self, number)
        case .string(let text): string(text)
        case .array(let elements):
            msgpack_pack_array(self, elements.count)
            for element in elements { self.value(element) }
        case .object(let object):
            msgpack_pack_map(self, object.entries.count)
            for entry in object.entries {
                string(entry.key)
                self.value(entry.value)
            }
        }
    }
}
