import Foundation
import NIOCore
import NIOPosix
import SwitchboardKernel

/// What every load client shares: counters and the latency histogram. Touched only on
/// the load generator's single event loop, so no locks.
final class LoadStats: @unchecked Sendable {
    var connected = 0
    var failed = 0
    var closed = 0
    var deliveries = 0
    var bytes = 0
    /// 10 µs buckets below 20 ms, then 1 ms buckets up to 60 s.
    var histogram = [Int](repeating: 0, count: 2_000 + 60_000)
    var maxLatencyMicros = 0
    var lastDeliveryNanos: UInt64 = 0
    var firstConnectNanos: UInt64 = 0
    var lastConnectNanos: UInt64 = 0

    /// Inflated payloads by compressed bytes. Only used without context takeover, where
    /// the same compressed bytes always inflate to the same message: a shared-compression
    /// server sends every subscriber the same bytes, and inflating them once per event
    /// (the first copy) keeps the load generator off the bottleneck. Bounded.
    var inflated: [ByteBuffer: ByteBuffer] = [:]

    /// The latency a histogram bucket stands for (its middle), in microseconds.
    /// Benchmarks/bench.py's merge uses the same layout.
    static func micros(bucket: Int) -> Int {
        bucket < 2_000 ? bucket * 10 + 5 : 20_000 + (bucket - 2_000) * 1_000 + 500
    }

    func record(latencyNanos: UInt64) {
        let micros = Int(latencyNanos / 1000)
        let bucket = micros < 20_000 ? micros / 10 : 2_000 + (micros - 20_000) / 1_000
        histogram[min(bucket, histogram.count - 1)] += 1
        if micros > maxLatencyMicros { maxLatencyMicros = micros }
    }
}

/// One WebSocket client: handshake, then counts messages whose payload carries a
/// `~T<nanos>|` marker (publish time on the load generator's monotonic clock).
final class WebSocketLoadClient: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer

    let stats: LoadStats
    let request: String
    let onOpen: (WebSocketLoadClient) -> Void
    let topic: Int
    /// Treat every compressed message as standing alone even when the server did not
    /// negotiate `server_no_context_takeover` (Nchan compresses each message once for all
    /// subscribers but does not say so). A wrong assumption shows up as loss.
    let independentMessages: Bool
    var received = 0
    private var buffer = ByteBuffer()
    private var open = false
    private var inflater: Inflater?
    private var inflaterResets = true
    private var fragments: ByteBuffer?
    private var fragmentCompressed = false
    var channel: (any Channel)?

    init(stats: LoadStats, request: String, topic: Int, independentMessages: Bool, onOpen: @escaping (WebSocketLoadClient) -> Void) {
        self.stats = stats
        self.request = request
        self.topic = topic
        self.independentMessages = independentMessages
        self.onOpen = onOpen
    }

    func channelActive(context: ChannelHandlerContext) {
        channel = context.channel
        context.writeAndFlush(NIOAny(ByteBuffer(string: request)), promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if open { stats.closed += 1 } else { stats.failed += 1 }
        open = false
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if buffer.readableBytes == 0 {
            buffer = incoming  // nothing left over: parse the read buffer itself, no copy
        } else {
            buffer.writeBuffer(&incoming)
        }
        if !open {
            guard let view = buffer.readableBytesView.firstRange(of: Array("\r\n\r\n".utf8)) else { return }
            let headEnd = view.upperBound
            let head = String(decoding: buffer.readableBytesView[buffer.readerIndex..<headEnd], as: UTF8.self)
            buffer.moveReaderIndex(to: headEnd)
            guard head.hasPrefix("HTTP/1.1 101") else {
                context.close(promise: nil)
                return
            }
            let lowered = head.lowercased()
            if lowered.contains("permessage-deflate") {
                inflater = Inflater(windowBits: 15)
                inflaterResets = independentMessages || lowered.contains("server_no_context_takeover")
            }
            open = true
            stats.connected += 1
            let now = NIODeadline.now().uptimeNanoseconds
            if stats.firstConnectNanos == 0 { stats.firstConnectNanos = now }
            stats.lastConnectNanos = now
            onOpen(self)
        }
        parseFrames(context: context)
        buffer.discardReadBytes()
    }

    private func parseFrames(context: ChannelHandlerContext) {
        while true {
            let start = buffer.readerIndex
            guard let first = buffer.getInteger(at: start, as: UInt8.self),
                let second = buffer.getInteger(at: start + 1, as: UInt8.self)
            else { return }
            var length = Int(second & 0x7f)
            var offset = 2
            if length == 126 {
                guard let extended = buffer.getInteger(at: start + 2, as: UInt16.self) else { return }
                length = Int(extended)
                offset = 4
            } else if length == 127 {
                guard let extended = buffer.getInteger(at: start + 2, as: UInt64.self) else { return }
                length = Int(min(extended, UInt64(Int32.max)))
                offset = 10
            }
            guard buffer.readableBytes >= offset + length, let payload = buffer.getSlice(at: start + offset, length: length) else { return }
            buffer.moveReaderIndex(forwardBy: offset + length)
            let opcode = first & 0x0f
            let fin = first & 0x80 != 0
            let compressed = first & 0x40 != 0
            switch opcode {
            case 0x1, 0x2:
                if fin { message(payload, compressed: compressed) } else {
                    fragments = payload
                    fragmentCompressed = compressed
                }
            case 0x0:
                guard var assembled = fragments else { continue }
                var more = payload
                assembled.writeBuffer(&more)
                if fin {
                    fragments = nil
                    message(assembled, compressed: fragmentCompressed)
                } else {
                    fragments = assembled
                }
            case 0x9:
                // Answer pings (masked, as a client must).
                context.writeAndFlush(NIOAny(Self.maskedFrame(opcode: 0xA, payload: payload)), promise: nil)
            default:
                break
            }
        }
    }

    private func message(_ payload: ByteBuffer, compressed: Bool) {
        var data = payload
        if compressed, let inflater {
            if inflaterResets, let known = stats.inflated[payload] {
                data = known
            } else {
                guard let inflated = try? inflater.inflate(payload, limit: 1 << 24, resetAfter: inflaterResets) else { return }
                data = inflated
                if inflaterResets {
                    if stats.inflated.count >= 1_024 { stats.inflated.removeAll(keepingCapacity: true) }
                    var key = ByteBufferAllocator().buffer(capacity: payload.readableBytes)
                    key.writeImmutableBuffer(payload)  // a copy: a slice would pin the whole read buffer
                    stats.inflated[key] = inflated
                }
            }
        }
        stats.deliveries += 1
        stats.bytes += data.readableBytes
        stats.lastDeliveryNanos = NIODeadline.now().uptimeNanoseconds
        guard let sent = Self.marker(in: data) else { return }
        received += 1
        let now = NIODeadline.now().uptimeNanoseconds
        stats.record(latencyNanos: now > sent ? now - sent : 0)
    }

    /// The nanoseconds after `~T` in `~T<digits>|` (memchr for `~`, so the scan costs
    /// little even when the marker sits at the end of an envelope).
    static func marker(in data: ByteBuffer) -> UInt64? {
        data.withUnsafeReadableBytes { bytes -> UInt64? in
            guard let base = bytes.baseAddress else { return nil }
            var offset = 0
            while offset < bytes.count {
                guard let found = memchr(base + offset, Int32(UInt8(ascii: "~")), bytes.count - offset) else { return nil }
                let index = base.distance(to: UnsafeRawPointer(found))
                offset = index + 1
                guard index + 1 < bytes.count, bytes[index + 1] == UInt8(ascii: "T") else { continue }
                var value: UInt64 = 0
                var digits = 0
                var position = index + 2
                while position < bytes.count, bytes[position] >= 48, bytes[position] <= 57, digits < 20 {
                    value = value &* 10 &+ UInt64(bytes[position] - 48)
                    position += 1
                    digits += 1
                }
                return digits > 0 ? value : nil
            }
            return nil
        }
    }

    static func maskedFrame(opcode: UInt8, payload: ByteBuffer) -> ByteBuffer {
        var frame = ByteBuffer()
        frame.writeInteger(0x80 | opcode)
        let count = payload.readableBytes
        if count < 126 {
            frame.writeInteger(UInt8(0x80 | count))
        } else {
            frame.writeInteger(UInt8(0x80 | 126))
            frame.writeInteger(UInt16(count))
        }
        let mask: [UInt8] = [0x12, 0x34, 0x56, 0x78]
        frame.writeBytes(mask)
        for (index, byte) in payload.readableBytesView.enumerated() { frame.writeInteger(byte ^ mask[index & 3]) }
        return frame
    }

    /// Sends a text message (masked).
    func send(_ text: String) {
        channel?.writeAndFlush(NIOAny(Self.maskedFrame(opcode: 0x1, payload: ByteBuffer(string: text))), promise: nil)
    }
}
