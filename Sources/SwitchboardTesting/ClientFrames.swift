import NIOCore

/// A client's frame as it crosses the wire (RFC 6455 §5.2), for tests that feed a
/// connection handler bytes: the header, the 4-byte masking key when there is one, and the
/// payload exactly as given (already masked, or not, as the test wants).
public func clientFrameBytes(opcode: UInt8, fin: Bool = true, rsv1: Bool = false, rsv2: Bool = false, rsv3: Bool = false, maskKey: [UInt8]?, payload: ByteBuffer) -> ByteBuffer {
    var bytes = ByteBuffer()
    var first = opcode & 0x0F
    if fin { first |= 0x80 }
    if rsv1 { first |= 0x40 }
    if rsv2 { first |= 0x20 }
    if rsv3 { first |= 0x10 }
    bytes.writeInteger(first)
    let maskBit: UInt8 = maskKey == nil ? 0 : 0x80
    let length = payload.readableBytes
    if length < 126 {
        bytes.writeInteger(maskBit | UInt8(length))
    } else if length <= 0xFFFF {
        bytes.writeInteger(maskBit | 126)
        bytes.writeInteger(UInt16(length))
    } else {
        bytes.writeInteger(maskBit | 127)
        bytes.writeInteger(UInt64(length))
    }
    if let maskKey { bytes.writeBytes(maskKey.prefix(4)) }
    bytes.writeImmutableBuffer(payload)
    return bytes
}
