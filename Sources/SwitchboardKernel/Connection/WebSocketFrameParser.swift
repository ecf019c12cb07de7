import NIOCore

/// Client frames out of the bytes a socket delivers (RFC 6455 §5.2), one at a time.
///
/// A read that ends on a frame boundary leaves nothing here: an idle connection keeps no
/// buffer. Bytes of an incomplete frame are copied into a buffer of its own, sized to them,
/// never kept as a slice of NIO's receive buffer (which NIO reuses while no one else holds
/// it). A header is checked as soon as it is complete, so a frame over the limit is refused
/// before its payload is buffered; control frames (at most 125 bytes, in the 7-bit length
/// form, not fragmented) are refused before the size limit is looked at.
///
/// Call ``append(_:)`` with each read, then ``next()`` until it returns nil, then
/// ``finishRead()``.
public struct WebSocketFrameParser {
    /// Why the parser stopped; it takes nothing more afterwards.
    public enum Failure: Error, Equatable {
        /// The frame's length is over `maxFrameSize` (close with 1009).
        case frameTooLarge
        /// A control frame without FIN (close with 1002).
        case fragmentedControlFrame
        /// A control frame over 125 bytes (close with 1002).
        case controlFrameTooLong
    }

    /// The largest frame payload accepted.
    public let maxFrameSize: Int
    /// Unparsed bytes: the current read, or an incomplete frame in a buffer of our own.
    private var pending: ByteBuffer?
    private var pendingIsOwn = false
    private var failed = false

    public init(maxFrameSize: Int) {
        self.maxFrameSize = max(125, maxFrameSize)
    }

    /// Bytes held for an incomplete frame.
    public var bufferedBytes: Int { pending?.readableBytes ?? 0 }

    /// Takes the bytes of one read.
    public mutating func append(_ bytes: ByteBuffer) {
        guard !failed, bytes.readableBytes > 0 else { return }
        if (pending?.readableBytes ?? 0) == 0 {
            pending = bytes
            pendingIsOwn = false
            return
        }
        if !pendingIsOwn { makePendingOwn(adding: bytes.readableBytes) }
        pending?.writeImmutableBuffer(bytes)
    }

    /// The next complete frame, a failure (after which nothing more is parsed), or nil when
    /// more bytes are needed.
    public mutating func next() -> Result<WebSocketInboundStateMachine.Frame, Failure>? {
        guard !failed, let available = pending?.readableBytes, available > 0 else { return nil }
        switch Self.header(of: pending) {
        case .needMore:
            return nil
        case .failure(let failure):
            return fail(failure)
        case .header(let first, let length, let extendedLength, let maskKey, let headerSize):
            // The control-frame rules first (1002), then the size limit (1009).
            let isControl = first & 0x08 != 0
            let fin = first & 0x80 != 0
            if isControl && !fin { return fail(.fragmentedControlFrame) }
            // A control frame's length must fit the 7-bit form (RFC 6455 §5.5).
            if isControl && (length > 125 || extendedLength) { return fail(.controlFrameTooLong) }
            guard length <= maxFrameSize else { return fail(.frameTooLarge) }
            guard available - headerSize >= length, let start = pending?.readerIndex else { return nil }
            var payload = ByteBuffer()
            if length > 0 {
                guard let slice = pending?.getSlice(at: start + headerSize, length: length) else { return nil }
                payload = slice
            }
            pending?.moveReaderIndex(forwardBy: headerSize + length)
            if let maskKey, length > 0 { Self.unmask(&payload, key: maskKey) }
            return .success(
                .init(
                    opcode: first & 0x0F, fin: fin,
                    rsv1: first & 0x40 != 0, rsv2: first & 0x20 != 0, rsv3: first & 0x10 != 0,
                    masked: maskKey != nil, payload: payload
                )
            )
        }
    }

    /// Ends a read: nothing is kept when every byte was parsed; the bytes of an incomplete
    /// frame are moved into a buffer of our own, sized to them (a buffer that grew for a
    /// large frame is not kept for the small remainder after it).
    public mutating func finishRead() {
        guard let remaining = pending?.readableBytes, remaining > 0, !failed else {
            discardAll()
            return
        }
        if pendingIsOwn, let capacity = pending?.capacity, capacity <= max(4 * remaining, 65536) {
            if let index = pending?.readerIndex, index > 0 { pending?.discardReadBytes() }
        } else {
            makePendingOwn(adding: 0)
        }
    }

    /// Forgets every byte held (the connection is gone).
    public mutating func discardAll() {
        pending = nil
        pendingIsOwn = false
    }

    private mutating func fail(_ failure: Failure) -> Result<WebSocketInboundStateMachine.Frame, Failure> {
        failed = true
        discardAll()
        return .failure(failure)
    }

    private mutating func makePendingOwn(adding extra: Int) {
        guard let held = pending else { return }
        var own = ByteBufferAllocator().buffer(capacity: held.readableBytes + extra)
        own.writeImmutableBuffer(held)
        pending = own
        pendingIsOwn = true
    }

    private enum Header {
        case needMore
        case failure(Failure)
        case header(first: UInt8, length: Int, extendedLength: Bool, maskKey: UInt32?, headerSize: Int)
    }

    private static func header(of buffer: ByteBuffer?) -> Header {
        guard let buffer, let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self),
            let second = buffer.getInteger(at: buffer.readerIndex + 1, as: UInt8.self)
        else { return .needMore }
        let masked = second & 0x80 != 0
        var offset = buffer.readerIndex + 2
        let length: Int
        switch second & 0x7F {
        case 126:
            guard let word = buffer.getInteger(at: offset, as: UInt16.self) else { return .needMore }
            length = Int(word)
            offset += 2
        case 127:
            guard let quad = buffer.getInteger(at: offset, as: UInt64.self) else { return .needMore }
            // Past Int.max (the top bit, which RFC 6455 requires to be 0) is too large anyway.
            guard quad <= UInt64(Int.max) else { return .failure(.frameTooLarge) }
            length = Int(quad)
            offset += 8
        default:
            length = Int(second & 0x7F)
        }
        var maskKey: UInt32?
        if masked {
            guard let key = buffer.getInteger(at: offset, as: UInt32.self) else { return .needMore }
            maskKey = key
            offset += 4
        }
        return .header(first: first, length: length, extendedLength: second & 0x7F >= 126, maskKey: maskKey, headerSize: offset - buffer.readerIndex)
    }

    /// XORs `payload` with the 4-byte key (network order), in a buffer of its own.
    private static func unmask(_ payload: inout ByteBuffer, key: UInt32) {
        let keyBytes = (UInt8(truncatingIfNeeded: key >> 24), UInt8(truncatingIfNeeded: key >> 16), UInt8(truncatingIfNeeded: key >> 8), UInt8(truncatingIfNeeded: key))
        payload.withUnsafeMutableReadableBytes { bytes in
            var index = 0
            let count = bytes.count
            // Eight bytes at a time with the key repeated, then the tail.
            let wide = UInt64(key.bigEndian) | (UInt64(key.bigEndian) << 32)
            while index + 8 <= count {
                let word = bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self) ^ wide
                bytes.storeBytes(of: word, toByteOffset: index, as: UInt64.self)
                index += 8
            }
            while index < count {
                let k: UInt8
                switch index & 3 {
                case 0: k = keyBytes.0
                case 1: k = keyBytes.1
                case 2: k = keyBytes.2
                default: k = keyBytes.3
                }
                bytes[index] ^= k
                index += 1
            }
        }
    }
}
