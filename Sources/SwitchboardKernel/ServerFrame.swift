import NIOCore

/// Builds complete server-to-client WebSocket frames (RFC 6455 §5.2).
///
/// Server frames are never masked, so one frame's bytes are valid for every recipient:
/// the kernel builds a frame once and writes the same `ByteBuffer` to all of them.
public enum ServerFrame {
    /// Opcodes used by the gateway.
    public enum Opcode: UInt8, Sendable {
        case continuation = 0x0
        case text = 0x1
        case binary = 0x2
        case close = 0x8
        case ping = 0x9
        case pong = 0xA
    }

    /// Bytes of header needed for a payload of `length` bytes.
    public static func headerSize(payloadLength length: Int) -> Int {
        length < 126 ? 2 : (length <= 0xFFFF ? 4 : 10)
    }

    /// Writes a frame header (FIN set, no mask) for a payload of `length` bytes.
    public static func writeHeader(opcode: Opcode, payloadLength length: Int, rsv1: Bool = false, into buffer: inout ByteBuffer) {
        buffer.writeInteger(0x80 | (rsv1 ? 0x40 : 0) | opcode.rawValue)
        if length < 126 {
            buffer.writeInteger(UInt8(length))
        } else if length <= 0xFFFF {
            buffer.writeInteger(UInt8(126))
            buffer.writeInteger(UInt16(length))
        } else {
            buffer.writeInteger(UInt8(127))
            buffer.writeInteger(UInt64(length))
        }
    }

    /// A whole frame whose payload is produced by `body` directly after the header: the
    /// header is reserved at its maximum size and the payload moved once if it turns out
    /// shorter, so no payload is copied into a second buffer.
    public static func make(
        opcode: Opcode,
        allocator: ByteBufferAllocator = ByteBufferAllocator(),
        capacity: Int = 256,
        _ body: (inout ByteBuffer) -> Void
    ) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: capacity + 10)
        buffer.moveWriterIndex(forwardBy: 10)
        buffer.moveReaderIndex(forwardBy: 10)
        body(&buffer)
        let length = buffer.readableBytes
        let header = headerSize(payloadLength: length)
        let start = 10 - header
        var headerBytes = ByteBuffer()
        headerBytes.reserveCapacity(header)
        writeHeader(opcode: opcode, payloadLength: length, into: &headerBytes)
        buffer.setBuffer(headerBytes, at: start)
        buffer.moveReaderIndex(to: start)
        return buffer
    }

    /// A whole frame around an existing payload; `rsv1` marks a compressed message (RFC 7692).
    public static func make(opcode: Opcode, payload: ByteBuffer, rsv1: Bool = false) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(headerSize(payloadLength: payload.readableBytes) + payload.readableBytes)
        writeHeader(opcode: opcode, payloadLength: payload.readableBytes, rsv1: rsv1, into: &buffer)
        var payload = payload
        buffer.writeBuffer(&payload)
        return buffer
    }

    /// The payload of a complete unmasked frame built by this type (a slice, no copy).
    public static func payload(of frame: ByteBuffer) -> ByteBuffer? {
        guard let second = frame.getInteger(at: frame.readerIndex + 1, as: UInt8.self) else { return nil }
        let code = Int(second & 0x7F)
        let header = code < 126 ? 2 : (code == 126 ? 4 : 10)
        return frame.getSlice(at: frame.readerIndex + header, length: frame.readableBytes - header)
    }

    /// The opcode of a complete frame.
    public static func opcode(of frame: ByteBuffer) -> Opcode? {
        frame.getInteger(at: frame.readerIndex, as: UInt8.self).flatMap { Opcode(rawValue: $0 & 0x0F) }
    }

    /// A close frame with `code` and a reason (truncated to fit the 125-byte control limit).
    public static func close(code: UInt16, reason: String) -> ByteBuffer {
        var payload = ByteBuffer()
        payload.writeInteger(code)
        var reasonBytes = Array(reason.utf8.prefix(123))
        while !reasonBytes.isEmpty && String(validating: reasonBytes, as: UTF8.self) == nil {
            reasonBytes.removeLast()
        }
        payload.writeBytes(reasonBytes)
        return make(opcode: .close, payload: payload)
    }
}
