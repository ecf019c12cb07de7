import NIOCore
import SwitchboardKernel

/// A ``Subscriber`` that records the frames it is given, for kernel tests without sockets.
/// Use it only on its shard's event loop.
public final class CapturingSubscriber: Subscriber, @unchecked Sendable {
    public let variant: VariantID
    public var lastDeliverySequence: UInt64 = 0
    public var isPendingFlush = false
    /// Frames received, in order.
    public private(set) var frames: [ByteBuffer] = []
    /// How many times the shard flushed this subscriber.
    public private(set) var flushes = 0

    public init(variant: VariantID) {
        self.variant = variant
    }

    public func enqueue(_ frame: ByteBuffer, of event: PreparedEvent) -> Bool {
        frames.append(frame)
        return true
    }

    public func flush() -> Bool {
        flushes += 1
        return true
    }
}
