import NIOCore
import SwitchboardKernel

/// `websocket-wire`: a client's raw bytes through `WebSocketFrameParser`, the way the
/// connection handler reads them: cut into reads, each parsed to the last whole frame,
/// then `finishRead`. Headers of every length form, masks, limits, garbage.
///
/// Layout: byte 0 holds settings (bits 0–1: max frame size 125 / 1,000 / 65,536 / 0,
/// bits 2–7: bytes per read minus one, 1–64). The rest is the byte stream.
///
/// Invariants: no frame's payload is over the limit; control frames are final and at most
/// 125 bytes; payloads never add up to more than the bytes fed; what the parser holds
/// between reads is at most one incomplete frame (the limit plus a 14-byte header) plus one
/// read; nothing is produced after a failure.
func fuzzWebSocketWire(_ input: UnsafeRawBufferPointer) {
    guard let settings = input.first else { return }
    let limit = [125, 1000, 65536, 0][Int(settings & 0x03)]
    let readSize = Int(settings >> 2) + 1
    var parser = WebSocketFrameParser(maxFrameSize: limit)
    let effectiveLimit = parser.maxFrameSize
    var index = 1
    var payloadBytes = 0
    var failed = false
    while index < input.count {
        let end = min(input.count, index + readSize)
        parser.append(ByteBuffer(bytes: UnsafeRawBufferPointer(rebasing: input[index..<end])))
        index = end
        while let next = parser.next() {
            invariant(!failed, "websocket-wire: a result after a failure")
            switch next {
            case .success(let frame):
                invariant(frame.payload.readableBytes <= effectiveLimit, "websocket-wire: a \(frame.payload.readableBytes)-byte frame passed the limit \(effectiveLimit)")
                if frame.opcode & 0x08 != 0 {
                    invariant(frame.fin && frame.payload.readableBytes <= 125, "websocket-wire: a fragmented or long control frame passed")
                }
                payloadBytes += frame.payload.readableBytes
                invariant(payloadBytes <= index - 1, "websocket-wire: more payload than bytes fed")
            case .failure:
                failed = true
            }
        }
        parser.finishRead()
        invariant(parser.bufferedBytes <= effectiveLimit + 14 + readSize, "websocket-wire: \(parser.bufferedBytes) bytes held")
    }
}
