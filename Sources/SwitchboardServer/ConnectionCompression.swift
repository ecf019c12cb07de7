import NIOCore
import Synchronization
import SwitchboardKernel

/// One connection's outbound permessage-deflate state: the agreed parameters and a
/// compressor for what is built per connection (dedicated-mode deliveries, replies,
/// echoes), created on first use. (Client messages are inflated by the connection's
/// ``WebSocketInboundStateMachine``.) Lives on the connection's event loop.
public final class ConnectionCompression {
    let agreement: PerMessageDeflate.Agreement
    let settings: DeflateSettings
    let minSize: Int
    private var deflater: Deflater?

    /// Where shared-mode connections take their compressor from (the loop's shared one).
    private let shard: LoopShard?

    /// With `shard`, a shared-mode connection (no server context takeover) compresses its
    /// own frames with the loop's shared compressor and holds no zlib state.
    public init(agreement: PerMessageDeflate.Agreement, settings: DeflateSettings, minSize: Int, shard: LoopShard? = nil) {
        self.agreement = agreement
        self.settings = settings
        self.minSize = minSize
        self.shard = agreement.serverNoContextTakeover ? shard : nil
    }

    /// Whether deliveries are compressed here (context takeover) rather than shared.
    var isDedicated: Bool { agreement.mode == .dedicated }

    /// The compressed form of `payload`, or `nil` to send it as it is (small, or no zlib).
    func compress(_ payload: ByteBuffer) -> ByteBuffer? {
        guard payload.readableBytes >= minSize, let deflater = shard?.sharedDeflater(settings) ?? ownDeflater() else { return nil }
        var output = ByteBuffer()
        output.reserveCapacity(payload.readableBytes / 2 + 64)
        // A shared compressor is only ever used without context takeover.
        deflater.compress(payload, into: &output, resetAfter: agreement.serverNoContextTakeover)
        return output
    }

    /// This connection's own compressor (dedicated mode), created on first use.
    private func ownDeflater() -> Deflater? {
        if deflater == nil { deflater = Deflater(settings: settings) }
        return deflater
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
