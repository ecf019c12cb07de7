import NIOCore
import SwitchboardKernel

/// The outbound side of one WebSocket connection, in the order frames were accepted:
///
/// - while the socket is writable, small frames are copied back to back into an outbox, so
///   that a flush round hands the socket one buffer (one `write`) however many frames the
///   interval gathered; larger frames are written as they are, after the outbox;
/// - while it is not, frames wait in the bounded ``OutboundQueue`` under the endpoint's
///   slow-consumer policy, and drain when NIO reports the socket writable again.
///
/// `output` is the context raw frame bytes are written through (below NIO's frame encoder).
/// Everything runs on the connection's event loop.
struct ConnectionOutput {
    /// Frames up to this size are copied into the outbox; larger ones are written as they
    /// are (the copy would cost more than the extra write).
    static let gatherLimit = 4096
    /// An outbox this large is handed to the socket without waiting for the flush.
    static let outboxLimit = 65536
    private static let allocator = ByteBufferAllocator()

    private var queue: OutboundQueue
    /// Frames taken since the last flush; nil when empty, so idle connections hold no buffer.
    private var outbox: ByteBuffer?
    /// The channel's writability, tracked from events so deliveries need no atomic load.
    private var writable = true

    init(queue: OutboundQueue) {
        self.queue = queue
    }

    /// Takes a frame: gathered (or written, when large) if the socket can take it, otherwise
    /// queued. The outcome says whether the policy dropped older frames or wants the
    /// connection closed.
    mutating func offer(_ frame: ByteBuffer, to output: ChannelHandlerContext) -> OutboundQueue.Outcome {
        let outcome = queue.offer(frame, writable: writable)
        if outcome == .writeNow { gather(frame, to: output) }
        return outcome
    }

    private mutating func gather(_ frame: ByteBuffer, to output: ChannelHandlerContext) {
        let size = frame.readableBytes
        guard size <= Self.gatherLimit else {
            writeGathered(to: output)
            output.write(NIOAny(frame), promise: nil)
            return
        }
        if outbox == nil {
            outbox = Self.allocator.buffer(capacity: max(512, size * 4))
        }
        outbox?.writeImmutableBuffer(frame)
        if let gathered = outbox?.readableBytes, gathered >= Self.outboxLimit { writeGathered(to: output) }
    }

    /// Hands the outbox to the socket (no flush). Call before writing a frame of the
    /// connection's own (pong, close), so that it leaves after what was already accepted.
    mutating func writeGathered(to output: ChannelHandlerContext?) {
        guard let gathered = outbox else { return }
        outbox = nil
        output?.write(NIOAny(gathered), promise: nil)
    }

    /// Writes the outbox and flushes.
    mutating func flush(_ output: ChannelHandlerContext) {
        writeGathered(to: output)
        output.flush()
    }

    /// Records the channel's writability; when it became writable and `output` is given,
    /// writes the outbox and then the queued frames while the socket takes them.
    mutating func writabilityChanged(to isWritable: Bool, draining output: ChannelHandlerContext?) {
        writable = isWritable
        guard isWritable, let output else { return }
        // Gathered frames are older than the queued ones.
        var wrote = outbox != nil
        writeGathered(to: output)
        while output.channel.isWritable, let frame = queue.next() {
            output.write(NIOAny(frame), promise: nil)
            wrote = true
        }
        if wrote { output.flush() }
    }

    /// Drops the queued frames (the connection is closing); gathered ones stay, to leave
    /// before the close frame.
    mutating func discardQueued() {
        queue.removeAll()
    }

    /// Forgets everything (the connection is gone).
    mutating func removeAll() {
        queue.removeAll()
        outbox = nil
    }
}
