import NIOCore
import SwitchboardConfig

/// The bounded per-connection queue used while the socket is not writable, with the
/// endpoint's slow-consumer policy. A value type: the handler asks it what to do.
public struct OutboundQueue {
    /// What became of an offered frame.
    public enum Outcome: Equatable {
        /// The socket can take it: write it now.
        case writeNow
        /// Held until the socket is writable again.
        case queued
        /// Queued after dropping this many older frames.
        case queuedAfterDropping(Int)
        /// The policy says disconnect.
        case overflow
    }

    public let maxMessages: Int
    public let maxBytes: Int
    public let policy: SlowConsumerPolicy
    /// Starts tiny: most connections never queue (NIO's default of 16 slots would cost
    /// ~400 bytes per idle connection); it grows when a client falls behind.
    private var frames = CircularBuffer<ByteBuffer>(initialCapacity: 1)
    public private(set) var queuedBytes = 0

    public init(maxMessages: Int, maxBytes: Int, policy: SlowConsumerPolicy) {
        self.maxMessages = max(1, maxMessages)
        self.maxBytes = max(1, maxBytes)
        self.policy = policy
    }

    public var count: Int { frames.count }
    public var isEmpty: Bool { frames.isEmpty }

    /// Offers a frame; `writable` is the channel's current writability.
    public mutating func offer(_ frame: ByteBuffer, writable: Bool) -> Outcome {
        if writable && frames.isEmpty { return .writeNow }
        let size = frame.readableBytes
        var dropped = 0
        while !frames.isEmpty && (frames.count + 1 > maxMessages || queuedBytes + size > maxBytes) {
            guard policy == .dropOldest else { return .overflow }
            let oldest = frames.removeFirst()
            queuedBytes -= oldest.readableBytes
            dropped += 1
        }
        if size > maxBytes && policy == .disconnect { return .overflow }
        frames.append(frame)
        queuedBytes += size
        return dropped > 0 ? .queuedAfterDropping(dropped) : .queued
    }

    /// Takes the oldest queued frame.
    public mutating func next() -> ByteBuffer? {
        guard let frame = frames.popFirst() else { return nil }
        queuedBytes -= frame.readableBytes
        return frame
    }

    /// Forgets everything (on close).
    public mutating func removeAll() {
        frames.removeAll()
        queuedBytes = 0
    }
}
