import NIOCore
import SwitchboardCore

/// The outbound side of one WebSocket connection as a value type: the outbox of gathered
/// frames, the bounded send queue with its slow-consumer policy, and the socket's
/// writability. It never touches the channel: every call takes an input and returns the
/// buffers to write, and the handler writes them *after* the call has returned.
///
/// That split is what keeps the process alive. NIO calls back synchronously — a `write`
/// past the high-water mark fires `channelWritabilityChanged`, a `flush` that empties the
/// buffer fires it again, a write error closes the channel — so a handler that wrote from
/// inside a `mutating` method of its own state would be re-entered while that state is
/// being mutated, and Swift's exclusivity check aborts the whole gateway.
///
/// Order is kept: frames leave in the order they were accepted. While the socket is
/// writable, small frames are copied back to back into an outbox (one `write` per flush
/// round, however many frames the interval gathered) and larger ones are handed over
/// after the outbox; while it is not, frames wait in the ``OutboundQueue``.
public struct OutboundStateMachine {
    /// Frames up to this size are copied into the outbox; larger ones are written as they
    /// are (the copy would cost more than the extra write).
    public static let gatherLimit = 4096
    /// An outbox this large is handed to the socket without waiting for the flush round.
    public static let outboxLimit = 65536
    private static let allocator = ByteBufferAllocator()

    /// Buffers to hand to the channel, in order, after the call returned.
    public enum Writes: Equatable {
        case none
        case one(ByteBuffer)
        case two(ByteBuffer, ByteBuffer)
    }

    /// What became of an offered frame.
    public enum Outcome: Equatable {
        /// Gathered, written or queued.
        case accepted
        /// Queued after the policy dropped this many older frames.
        case acceptedAfterDropping(Int)
        /// The policy says disconnect; nothing was taken.
        case overflow
        /// The connection is closing or closed; nothing was taken.
        case closed
    }

    private var queue: OutboundQueue
    /// Frames taken since the last flush; nil when empty, so idle connections hold no buffer.
    /// The first frame of a round is kept as it is — the prepared frame every recipient
    /// shares, so a round of one frame allocates nothing — and copied into a buffer of the
    /// connection's own only when a second frame joins it (`outboxIsShared`).
    private var outbox: ByteBuffer?
    private var outboxIsShared = false
    /// The channel's writability, as reported by NIO's events.
    public private(set) var isWritable = true
    /// Set once the connection starts closing: nothing more is accepted.
    public private(set) var isClosing = false
    /// Under `disconnect`: the topic and position of the newest event with a position
    /// handed to the socket, for the close reason of a slow consumer (so it knows where
    /// to resume). Not kept under the other policies, which never close for slowness.
    public private(set) var lastSent: (topic: String, position: StreamPosition)?

    public init(queue: OutboundQueue) {
        self.queue = queue
    }

    /// Whether a frame offered now goes to the socket (gathered or written) rather than to
    /// the queue, where the policy may drop it.
    public var takesDirectly: Bool { isWritable && !isClosing && queue.isEmpty }

    /// Frames waiting for the socket to become writable.
    public var queuedCount: Int { queue.count }
    /// Bytes waiting for the socket to become writable.
    public var queuedBytes: Int { queue.queuedBytes }
    /// Bytes gathered for the next flush round.
    public var gatheredBytes: Int { outbox?.readableBytes ?? 0 }

    /// Takes a frame (of `event`, for deliveries). The returned writes must be handed to
    /// the channel (without a flush) before anything else is written.
    public mutating func offer(_ frame: ByteBuffer, event: PreparedEvent? = nil) -> (outcome: Outcome, writes: Writes) {
        guard !isClosing else { return (.closed, .none) }
        switch queue.offer(frame, event: event, writable: isWritable) {
        case .writeNow:
            noteSent(event)
            return (.accepted, gather(frame))
        case .queued:
            return (.accepted, .none)
        case .queuedAfterDropping(let count):
            return (.acceptedAfterDropping(count), .none)
        case .overflow:
            return (.overflow, .none)
        }
    }

    private mutating func gather(_ frame: ByteBuffer) -> Writes {
        let size = frame.readableBytes
        guard size <= Self.gatherLimit else {
            if let gathered = takeGathered() { return .two(gathered, frame) }
            return .one(frame)
        }
        // No local copy of `outbox` may be alive while it is appended to: the buffer would
        // not be uniquely referenced, and every append would copy the whole outbox.
        if outbox == nil {
            outbox = frame
            outboxIsShared = true
            return .none
        }
        if outboxIsShared {
            // A second frame this round: gather both into a buffer of our own.
            outbox = Self.ownCopy(of: outbox, adding: size)
            outboxIsShared = false
        }
        outbox?.writeImmutableBuffer(frame)
        if gatheredBytes >= Self.outboxLimit, let gathered = takeGathered() { return .one(gathered) }
        return .none
    }

    private static func ownCopy(of shared: ByteBuffer?, adding size: Int) -> ByteBuffer? {
        guard let shared else { return nil }
        var own = allocator.buffer(capacity: max(512, (shared.readableBytes + size) * 4))
        own.writeImmutableBuffer(shared)
        return own
    }

    /// The outbox, to be written now (a flush round, or before a frame of the connection's
    /// own that must not overtake what was accepted before it).
    public mutating func takeGathered() -> ByteBuffer? {
        defer {
            outbox = nil
            outboxIsShared = false
        }
        return outbox
    }

    /// Records a writability change. `true` means the handler should drain: write
    /// ``takeGathered()`` and then ``nextQueued()`` until it returns nil, then flush.
    public mutating func writabilityChanged(to writable: Bool) -> Bool {
        isWritable = writable
        return writable && !isClosing && (outbox != nil || !queue.isEmpty)
    }

    /// The oldest queued frame while the socket is writable; nil once it is not (a write
    /// during the drain may make it unwritable again) or the queue is empty.
    public mutating func nextQueued() -> ByteBuffer? {
        guard isWritable, !isClosing, let entry = queue.next() else { return nil }
        noteSent(entry.event)
        return entry.frame
    }

    private mutating func noteSent(_ event: PreparedEvent?) {
        guard queue.policy == .disconnect, let event, let position = event.event.position else { return }
        lastSent = (event.event.topic, position)
    }

    /// The connection is closing: queued frames are dropped (the peer is not reading them),
    /// gathered ones are returned to leave before the close frame, and nothing more is taken.
    public mutating func close() -> ByteBuffer? {
        isClosing = true
        queue.removeAll()
        return takeGathered()
    }

    /// Forgets everything (the connection is gone).
    public mutating func removeAll() {
        isClosing = true
        queue.removeAll()
        outbox = nil
        outboxIsShared = false
    }
}
