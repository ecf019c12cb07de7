import NIOCore
import Synchronization
import SwitchboardKernel

/// One connection's permessage-deflate state: the agreed parameters, a compressor for
/// what is built per connection (dedicated-mode deliveries, replies, echoes) and an
/// inflater for compressed client messages. Both zlib states are created on first use.
/// Lives on the connection's event loop.
final class ConnectionCompression {
    let agreement: PerMessageDeflate.Agreement
    let settings: DeflateSettings
    let minSize: Int
    private var deflater: Deflater?
    private var inflater: Inflater?

    init(agreement: PerMessageDeflate.Agreement, settings: DeflateSettings, minSize: Int) {
        self.agreement = agreement
        self.settings = settings
        self.minSize = minSize
    }

    /// Whether deliveries are compressed here (context takeover) rather than shared.
    var isDedicated: Bool { agreement.mode == .dedicated }

    /// The compressed form of `payload`, or `nil` to send it as it is (small, or no zlib).
    func compress(_ payload: ByteBuffer) -> ByteBuffer? {
        guard payload.readableBytes >= minSize else { return nil }
        if deflater == nil { deflater = Deflater(settings: settings) }
        guard let deflater else { return nil }
        var output = ByteBuffer()
        output.reserveCapacity(payload.readableBytes / 2 + 64)
        deflater.compress(payload, into: &output, resetAfter: agreement.serverNoContextTakeover)
        return output
    }

    /// Inflates a compressed client message, refusing output beyond `limit`.
    func inflate(_ payload: ByteBuffer, limit: Int) throws(InflateError) -> ByteBuffer {
        if inflater == nil { inflater = Inflater(windowBits: agreement.clientWindowBits) }
        guard let inflater else { throw .corrupt }
        return try inflater.inflate(payload, limit: limit, resetAfter: agreement.clientNoContextTakeover)
    }

    /// Reserves dedicated-mode memory from the node-wide budget; `false` when it is spent.
    static func reserve(_ bytes: Int, budget: Int, counter: borrowing Atomic<Int>) -> Bool {
        var current = counter.load(ordering: .relaxed)
        while current + bytes <= budget {
            let (exchanged, original) = counter.compareExchange(expected: current, desired: current + bytes, ordering: .relaxed)
            if exchanged { return true }
            current = original
        }
        return false
    }
}
