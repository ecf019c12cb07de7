import NIOCore
import SwitchboardKernel

/// `inflate`: the bytes as permessage-deflate payloads from a client (RFC 7692: raw deflate,
/// the trailing `00 00 ff ff` removed).
///
/// Layout: byte 0 holds flags (bits 0–2: window bits − 8, bit 3: reset after each message
/// (no context takeover), bit 4: cut the payload in two messages), byte 1 picks the output
/// limit (bits 0–2) and, with byte 2, the compressor's settings for the round trip; byte 2
/// is also where the payload is cut; the rest is the payload.
///
/// Invariants: inflated output never exceeds the limit; the input compressed by `Deflater`
/// inflates back to exactly the input, also with context takeover across two messages and
/// with a limit equal to the message size.
func fuzzInflate(_ input: UnsafeRawBufferPointer) {
    guard input.count >= 3 else { return }
    let flags = input[0]
    let windowBits = 8 + Int(flags & 0x07)
    let resetAfter = flags & 0x08 != 0
    let limit = inflateLimits[Int(input[1] & 0x07)]
    let payload = UnsafeRawBufferPointer(rebasing: input[3...])
    let cut = flags & 0x10 != 0 ? Int(input[2]) % (payload.count + 1) : payload.count
    let messages = cut < payload.count ? [payload[..<cut], payload[cut...]] : [payload[...]]

    inflateAsReceived(messages, windowBits: windowBits, limit: limit, resetAfter: resetAfter)

    let settings = DeflateSettings(
        windowBits: max(9, windowBits),  // zlib cannot produce raw deflate with 8 bits
        level: 1 + Int(input[2] % 9),
        memLevel: 1 + Int(input[1] >> 3) % 9
    )
    checkRoundTrip(messages, settings: settings, resetAfter: resetAfter)
}

// The last limits straddle the inflater's 16 KiB output step.
private let inflateLimits = [0, 1, 64, 1000, 4096, 16 * 1024, 16 * 1024 + 1, 1 << 20]

/// Inflates the messages in order on one inflater, as a connection does.
private func inflateAsReceived(_ messages: [Slice<UnsafeRawBufferPointer>], windowBits: Int, limit: Int, resetAfter: Bool) {
    guard let inflater = Inflater(windowBits: windowBits) else { return }
    for message in messages {
        do {
            let output = try inflater.inflate(ByteBuffer(bytes: message), limit: limit, resetAfter: resetAfter)
            invariant(output.readableBytes <= limit, "inflated \(output.readableBytes) bytes with a limit of \(limit)")
        } catch {
            // tooLarge (close 1009) and corrupt (close 1007) are answers, not bugs.
        }
    }
}

/// Compresses each message and inflates it back, with the message's size as the limit.
private func checkRoundTrip(_ messages: [Slice<UnsafeRawBufferPointer>], settings: DeflateSettings, resetAfter: Bool) {
    guard let deflater = Deflater(settings: settings), let inflater = Inflater(windowBits: settings.windowBits) else { return }
    for (index, message) in messages.enumerated() {
        let original = ByteBuffer(bytes: message)
        var compressed = ByteBuffer()
        deflater.compress(original, into: &compressed, resetAfter: resetAfter)
        let restored: ByteBuffer
        do {
            restored = try inflater.inflate(compressed, limit: original.readableBytes, resetAfter: resetAfter)
        } catch {
            fatalError(
                "fuzz invariant violated: message \(index) of \(describeBuffer(original)) compressed with \(settings) "
                    + "(reset after: \(resetAfter)) does not inflate back: \(error); compressed \(describeBuffer(compressed))"
            )
        }
        invariant(restored == original, "message \(index) inflated to \(describeBuffer(restored)), was \(describeBuffer(original))")
    }
}
