import NIOCore

/// A connection as the kernel sees it: something on one event loop that takes frames.
///
/// Implemented by the server's WebSocket handler (and by test doubles). All calls happen
/// on the subscriber's own event loop, from its ``LoopShard``.
public protocol Subscriber: AnyObject {
    /// Which wire form this subscriber receives.
    var variant: VariantID { get }
    /// Scratch space for the shard: the sequence number of the last event delivered, so a
    /// subscriber matched by several patterns gets each event once.
    var lastDeliverySequence: UInt64 { get set }
    /// Whether the subscriber is in the shard's list of connections to flush.
    var isPendingFlush: Bool { get set }
    /// Takes one complete frame of `event` (no flush): gathers it for the next ``flush()``,
    /// or holds it in the send queue while the socket is full. Returns `false` if the frame
    /// was dropped. `event` tells the slow-consumer policy its topic and position.
    func enqueue(_ frame: ByteBuffer, of event: PreparedEvent) -> Bool
    /// Writes and flushes what ``enqueue(_:of:)`` gathered; `true` if anything was written.
    @discardableResult
    func flush() -> Bool
}
