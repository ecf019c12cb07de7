import NIOCore

/// The inbound side of one WebSocket connection as a value type: control-frame rules,
/// reassembly of fragmented messages under the size limit, permessage-deflate inflate with
/// an output limit, UTF-8 validation of text, and the close handshake.
///
/// It takes one frame as NIO's `WebSocketFrameDecoder` produced it (masking and header
/// lengths are checked there) and returns what the connection should do; it never touches
/// the channel, so nothing NIO calls back can find it in the middle of a mutation.
public struct WebSocketInboundStateMachine {
    /// RFC 6455 opcodes (the same values the server's own frames use).
    public typealias Opcode = ServerFrame.Opcode

    /// One frame from the client.
    public struct Frame {
        public var opcode: UInt8
        public var fin: Bool
        public var rsv1: Bool
        public var rsv2: Bool
        public var rsv3: Bool
        public var masked: Bool
        /// The unmasked payload.
        public var payload: ByteBuffer

        public init(opcode: UInt8, fin: Bool = true, rsv1: Bool = false, rsv2: Bool = false, rsv3: Bool = false, masked: Bool = true, payload: ByteBuffer) {
            self.opcode = opcode
            self.fin = fin
            self.rsv1 = rsv1
            self.rsv2 = rsv2
            self.rsv3 = rsv3
            self.masked = masked
            self.payload = payload
        }
    }

    /// What the connection should do with a frame.
    public enum Action: Equatable {
        /// Nothing (a pong, or data after the close handshake began).
        case none
        /// A complete message, inflated and validated.
        case message(text: Bool, payload: ByteBuffer)
        /// Answer with a pong carrying this payload.
        case ping(ByteBuffer)
        /// The peer started the close handshake: answer with a close frame with this code
        /// and reason, then close the socket. `violation` when the peer's close frame
        /// itself was invalid.
        case peerClosed(code: UInt16, reason: String, violation: Bool)
        /// The peer answered our close frame: close the socket.
        case closeHandshakeDone
        /// The peer broke the protocol or a limit: fail the connection with this code.
        case fail(code: UInt16, reason: String)
    }

    private enum State {
        case open
        /// We sent a close frame and wait for the peer's.
        case closeSent
        case closed
    }

    /// The largest message accepted, before and after inflating.
    public let maxMessageSize: Int
    private var state = State.open
    private var fragments: (text: Bool, data: ByteBuffer, compressed: Bool)?
    private var decompression: InboundDecompression?

    public init(maxMessageSize: Int, decompression: InboundDecompression? = nil) {
        self.maxMessageSize = max(0, maxMessageSize)
        self.decompression = decompression
    }

    /// Whether data messages are still taken (no close frame was sent or received).
    public var isOpen: Bool { state == .open }

    /// Bytes of a fragmented message held until its last frame.
    public var bufferedBytes: Int { fragments?.data.readableBytes ?? 0 }

    /// Takes one frame from the client.
    public mutating func received(_ frame: Frame) -> Action {
        guard state != .closed else { return .none }
        // RSV1 marks a compressed message: only on the first frame of a data message, and
        // only when permessage-deflate was negotiated. RSV2/RSV3 are never in use.
        let isData = frame.opcode == Opcode.text.rawValue || frame.opcode == Opcode.binary.rawValue
        if frame.rsv2 || frame.rsv3 || (frame.rsv1 && !(decompression != nil && isData)) {
            return .fail(code: 1002, reason: "reserved bits set")
        }
        guard frame.masked else { return .fail(code: 1002, reason: "client frames must be masked") }
        guard let opcode = Opcode(rawValue: frame.opcode) else {
            return .fail(code: 1002, reason: "unknown opcode")
        }
        switch opcode {
        case .text, .binary:
            guard state == .open else { return .none }
            guard fragments == nil else { return .fail(code: 1002, reason: "new message inside a fragmented message") }
            guard frame.payload.readableBytes <= maxMessageSize else { return .fail(code: 1009, reason: "message too big") }
            if frame.fin {
                return finish(text: opcode == .text, payload: frame.payload, compressed: frame.rsv1)
            }
            fragments = (opcode == .text, frame.payload, frame.rsv1)
            return .none
        case .continuation:
            guard state == .open else { return .none }
            guard var assembling = fragments else { return .fail(code: 1002, reason: "continuation frame without a message") }
            fragments = nil  // release the reference so the append does not copy
            guard frame.payload.readableBytes <= maxMessageSize - assembling.data.readableBytes else {
                return .fail(code: 1009, reason: "message too big")
            }
            var payload = frame.payload
            assembling.data.writeBuffer(&payload)
            if frame.fin {
                return finish(text: assembling.text, payload: assembling.data, compressed: assembling.compressed)
            }
            fragments = assembling
            return .none
        case .ping:
            guard frame.fin, frame.payload.readableBytes <= 125 else { return .fail(code: 1002, reason: "invalid control frame") }
            guard state == .open else { return .none }
            return .ping(frame.payload)
        case .pong:
            guard frame.fin, frame.payload.readableBytes <= 125 else { return .fail(code: 1002, reason: "invalid control frame") }
            return .none
        case .close:
            return peerClose(frame)
        }
    }

    private mutating func finish(text: Bool, payload: ByteBuffer, compressed: Bool) -> Action {
        var payload = payload
        if compressed {
            guard decompression != nil else { return .fail(code: 1002, reason: "reserved bits set") }
            do {
                payload = try decompression!.inflate(payload, limit: maxMessageSize)
            } catch .tooLarge {
                return .fail(code: 1009, reason: "message too big after decompression")
            } catch {
                return .fail(code: 1007, reason: "invalid compressed data")
            }
        }
        if text && !Self.isValidUTF8(payload) {
            return .fail(code: 1007, reason: "invalid UTF-8 in text message")
        }
        return .message(text: text, payload: payload)
    }

    private static func isValidUTF8(_ buffer: ByteBuffer) -> Bool {
        String(validating: buffer.readableBytesView, as: UTF8.self) != nil
    }

    private mutating func peerClose(_ frame: Frame) -> Action {
        guard frame.fin, frame.payload.readableBytes <= 125 else { return .fail(code: 1002, reason: "invalid control frame") }
        if state == .closeSent {
            state = .closed
            return .closeHandshakeDone
        }
        state = .closed
        fragments = nil
        var payload = frame.payload
        if payload.readableBytes == 1 {
            return .peerClosed(code: 1002, reason: "invalid close payload", violation: true)
        }
        guard let received = payload.readInteger(as: UInt16.self) else {
            return .peerClosed(code: 1000, reason: "", violation: false)
        }
        guard Self.isValidCloseCode(received) else {
            return .peerClosed(code: 1002, reason: "invalid close code", violation: true)
        }
        guard Self.isValidUTF8(payload) else {
            return .peerClosed(code: 1007, reason: "invalid UTF-8 in close reason", violation: true)
        }
        return .peerClosed(code: received, reason: "", violation: false)
    }

    /// We are closing (a close frame goes out now): data frames are ignored from here on,
    /// and the peer's close frame completes the handshake. `false` if already closing.
    public mutating func startClose() -> Bool {
        guard state == .open else { return false }
        state = .closeSent
        fragments = nil
        return true
    }

    /// The connection is gone: forget buffered fragments and the inflater.
    public mutating func closed() {
        state = .closed
        fragments = nil
        decompression = nil
    }

    /// RFC 6455 §7.4: codes a peer may send.
    public static func isValidCloseCode(_ code: UInt16) -> Bool {
        switch code {
        case 1000...1003, 1007...1011, 1012...1014: return true
        case 3000...4999: return true
        default: return false
        }
    }
}

/// Client-to-server permessage-deflate state: the agreed parameters, and where the
/// inflater comes from — the event loop's shared one when every message stands alone (the
/// gateway always asks clients for `client_no_context_takeover`), otherwise one of the
/// connection's own, created on the first compressed message.
public struct InboundDecompression {
    public let windowBits: Int
    public let noContextTakeover: Bool
    private let shard: LoopShard?
    private var inflater: Inflater?

    /// With `shard` and `noContextTakeover`, messages are inflated by the shard's shared
    /// inflater and the connection holds no zlib state.
    public init(windowBits: Int, noContextTakeover: Bool, shard: LoopShard? = nil) {
        self.windowBits = windowBits
        self.noContextTakeover = noContextTakeover
        self.shard = noContextTakeover ? shard : nil
    }

    /// zlib memory held by this connection (zero with a shared inflater).
    public var memory: Int { inflater == nil ? 0 : DeflateSettings.decompressorMemory(windowBits: windowBits) }

    /// Inflates one message, refusing output beyond `limit`.
    public mutating func inflate(_ payload: ByteBuffer, limit: Int) throws(InflateError) -> ByteBuffer {
        if let shard {
            guard let shared = shard.sharedInflater(windowBits: windowBits) else { throw .corrupt }
            return try shared.inflate(payload, limit: limit, resetAfter: true)
        }
        if inflater == nil { inflater = Inflater(windowBits: windowBits) }
        guard let inflater else { throw .corrupt }
        return try inflater.inflate(payload, limit: limit, resetAfter: noContextTakeover)
    }
}
