import NIOConcurrencyHelpers
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
    /// Where the bytes this connection compresses are counted (its endpoint, its encoder).
    var tally: (counter: CompressionTally, encoder: String)?

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
        if let tally { tally.counter.add(encoder: tally.encoder, mode: agreement.mode, input: payload.readableBytes, output: output.readableBytes) }
        return output
    }

    /// This connection's own compressor (dedicated mode), created on first use.
    private func ownDeflater() -> Deflater? {
        if deflater == nil { deflater = Deflater(settings: settings) }
        return deflater
    }

    /// Reserves dedicated-mode memory from the node-wide budget; `false` when it is spent.
    static func reserve(_ bytes: Int, budget: Int, counter: borrowing Synchronization.Atomic<Int>) -> Bool {
        var current = counter.load(ordering: .relaxed)
        while current + bytes <= budget {
            let (exchanged, original) = counter.compareExchange(expected: current, desired: current + bytes, ordering: .relaxed)
            if exchanged { return true }
            current = original
        }
        return false
    }
}

/// Bytes one endpoint's connections compressed themselves (dedicated-mode deliveries,
/// replies and echoes), per encoder and mode. One lock per compressed message: small next
/// to the deflate it counts.
public final class CompressionTally: Sendable {
    public struct Key: Hashable, Sendable {
        public let encoder: String
        public let mode: PerMessageDeflate.Mode
    }

    private let totals = NIOLockedValueBox<[Key: (input: Int, output: Int)]>([:])

    public init() {}

    func add(encoder: String, mode: PerMessageDeflate.Mode, input: Int, output: Int) {
        totals.withLockedValue { totals in
            let current = totals[Key(encoder: encoder, mode: mode)] ?? (0, 0)
            totals[Key(encoder: encoder, mode: mode)] = (current.input + input, current.output + output)
        }
    }

    var all: [Key: (input: Int, output: Int)] { totals.withLockedValue { $0 } }
}
