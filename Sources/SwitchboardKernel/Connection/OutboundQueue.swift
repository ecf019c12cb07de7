import NIOCore
import SwitchboardCore

/// The bounded per-connection queue used while the socket is not writable, with the
/// endpoint's slow-consumer policy. A value type: the handler asks it what to do.
///
/// Under `conflate`, a topic has at most one queued event: a newer one takes the older
/// one's place (so the client reads the newest value of each topic when it catches up).
/// When more topics than `max_messages` are queued, the oldest go, as under `drop_oldest`.
public struct OutboundQueue {
    /// What became of an offered frame.
    public enum Outcome: Equatable {
        /// The socket can take it: write it now.
        case writeNow
        /// Held until the socket is writable again.
        case queued
        /// Queued after dropping (or, under `conflate`, replacing) this many older frames.
        case queuedAfterDropping(Int)
        /// The policy says disconnect.
        case overflow
    }

    /// One queued frame; `event` for deliveries (its topic for `conflate`, its position for
    /// the last position sent), nil for the connection's own frames.
    public struct Entry {
        public var frame: ByteBuffer
        public var event: PreparedEvent?
    }

    public let maxMessages: Int
    public let maxBytes: Int
    public let policy: SlowConsumerPolicy
    /// Starts tiny: most connections never queue (NIO's default of 16 slots would cost
    /// ~400 bytes per idle connection); it grows when a client falls behind.
    private var entries = CircularBuffer<Entry>(initialCapacity: 1)
    public private(set) var queuedBytes = 0
    /// `conflate`: the sequence number of each topic's queued event; entry `i` of the
    /// buffer has sequence `firstSequence + i`.
    private var slots: [String: Int] = [:]
    private var firstSequence = 0

    public init(maxMessages: Int, maxBytes: Int, policy: SlowConsumerPolicy) {
        self.maxMessages = max(1, maxMessages)
        self.maxBytes = max(1, maxBytes)
        self.policy = policy
    }

    public var count: Int { entries.count }
    public var isEmpty: Bool { entries.isEmpty }

    /// Offers a frame; `writable` is the channel's current writability.
    public mutating func offer(_ frame: ByteBuffer, event: PreparedEvent? = nil, writable: Bool) -> Outcome {
        if writable && entries.isEmpty { return .writeNow }
        let size = frame.readableBytes
        if policy == .conflate, let topic = event?.event.topic, let sequence = slots[topic], sequence >= firstSequence,
            sequence - firstSequence < entries.count
        {
            let index = entries.index(entries.startIndex, offsetBy: sequence - firstSequence)
            queuedBytes += size - entries[index].frame.readableBytes
            entries[index] = Entry(frame: frame, event: event)
            var dropped = 1
            while entries.count > 1 && queuedBytes > maxBytes {
                dropFirst()
                dropped += 1
            }
            return .queuedAfterDropping(dropped)
        }
        var dropped = 0
        while !entries.isEmpty && (entries.count + 1 > maxMessages || queuedBytes + size > maxBytes) {
            guard policy != .disconnect else { return .overflow }
            dropFirst()
            dropped += 1
        }
        if size > maxBytes && policy == .disconnect { return .overflow }
        if policy == .conflate, let topic = event?.event.topic { slots[topic] = firstSequence + entries.count }
        entries.append(Entry(frame: frame, event: event))
        queuedBytes += size
        return dropped > 0 ? .queuedAfterDropping(dropped) : .queued
    }

    /// Drops the oldest *event*: the connection's own frames (replies such as `subscribed`,
    /// pongs) are kept while any event can go instead — a client that falls behind may
    /// miss events (their positions show it), not the answers to what it asked.
    private mutating func dropFirst() {
        guard entries.first?.event == nil, let index = entries.firstIndex(where: { $0.event != nil }) else {
            _ = next()
            return
        }
        let droppedSequence = firstSequence + entries.distance(from: entries.startIndex, to: index)
        let dropped = entries.remove(at: index)
        queuedBytes -= dropped.frame.readableBytes
        // Entries after it moved one place forward: their sequences shift with them.
        if !slots.isEmpty {
            if let topic = dropped.event?.event.topic, slots[topic] == droppedSequence { slots[topic] = nil }
            for (topic, sequence) in slots where sequence > droppedSequence { slots[topic] = sequence - 1 }
        }
    }

    /// Takes the oldest queued frame.
    public mutating func next() -> Entry? {
        guard let entry = entries.popFirst() else { return nil }
        queuedBytes -= entry.frame.readableBytes
        if !slots.isEmpty, let topic = entry.event?.event.topic, slots[topic] == firstSequence { slots[topic] = nil }
        firstSequence += 1
        return entry
    }

    /// Forgets everything (on close).
    public mutating func removeAll() {
        entries.removeAll()
        slots.removeAll()
        queuedBytes = 0
        firstSequence = 0
    }
}
