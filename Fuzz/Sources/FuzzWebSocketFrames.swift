import NIOCore
import SwitchboardKernel

/// `websocket-frames`: a client's frames through `WebSocketInboundStateMachine`, the way a
/// connection feeds it after NIO's frame decoder: reassembly, size limits, RSV bits,
/// inflate with its output limit, UTF-8, control frames and the close handshake.
///
/// Layout: byte 0 holds settings (bits 0–1: max message size, bit 2: permessage-deflate
/// negotiated, bit 3: we start the close handshake halfway). The rest is a sequence of
/// frames, each a header byte (bits 0–3 opcode, bit 4 FIN, bit 5 RSV1, bit 6 RSV2, bit 7
/// unmasked) and a length byte, then that many payload bytes (fewer at the end).
///
/// Invariants: a delivered message is never larger than the limit; text messages are
/// valid UTF-8; nothing is delivered after a close frame was received or sent; every close
/// code the machine asks us to send is one a peer may receive.
func fuzzWebSocketFrames(_ input: UnsafeRawBufferPointer) {
    guard let settings = input.first else { return }
    let limits = [0, 125, 1000, 65536]
    let limit = limits[Int(settings & 0x03)]
    let decompression = settings & 0x04 != 0 ? InboundDecompression(windowBits: 15, noContextTakeover: settings & 0x10 != 0) : nil
    var machine = WebSocketInboundStateMachine(maxMessageSize: limit, decompression: decompression)
    var index = 1
    var frames = 0
    var closed = false
    var closeAt = settings & 0x08 != 0 ? max(1, (input.count - 1) / 2) : Int.max
    while index + 2 <= input.count {
        if index >= closeAt {
            closeAt = Int.max
            if machine.startClose() { closed = true }
        }
        let header = input[index]
        let length = Int(input[index + 1])
        index += 2
        let end = min(input.count, index + length)
        let payload = ByteBuffer(bytes: UnsafeRawBufferPointer(rebasing: input[index..<end]))
        index = end
        frames += 1
        let frame = WebSocketInboundStateMachine.Frame(
            opcode: header & 0x0F, fin: header & 0x10 != 0, rsv1: header & 0x20 != 0, rsv2: header & 0x40 != 0,
            rsv3: false, masked: header & 0x80 == 0, payload: payload
        )
        switch machine.received(frame) {
        case .message(let text, let message):
            invariant(!closed, "websocket-frames: a message delivered after the close handshake began")
            invariant(message.readableBytes <= limit, "websocket-frames: a message of \(message.readableBytes) bytes passed the limit \(limit)")
            if text {
                invariant(String(validating: message.readableBytesView, as: UTF8.self) != nil, "websocket-frames: invalid UTF-8 delivered as text")
            }
        case .ping(let payload):
            invariant(!closed, "websocket-frames: a ping answered after the close handshake began")
            invariant(payload.readableBytes <= 125, "websocket-frames: a ping payload over 125 bytes")
        case .peerClosed(let code, _, _):
            invariant(WebSocketInboundStateMachine.isValidCloseCode(code), "websocket-frames: we would answer with close code \(code)")
            closed = true
        case .closeHandshakeDone:
            invariant(closed, "websocket-frames: handshake done without a close sent")
        case .fail(let code, _):
            invariant([1002, 1007, 1009].contains(code), "websocket-frames: unexpected failure code \(code)")
            // A connection fails once; the handler stops feeding it.
            if machine.startClose() { closed = true }
        case .none:
            break
        }
    }
    _ = frames
}
