import NIOConcurrencyHelpers
import Synchronization

/// Process-wide counters, updated with relaxed atomics (never per delivery: shards add
/// their totals once per event).
public final class KernelCounters: Sendable {
    /// Events handed to the kernel by sources.
    public let eventsIn = Atomic<Int>(0)
    /// Frames written to connections.
    public let deliveries = Atomic<Int>(0)
    /// Encoder invocations on the broadcast path (at most one per event and encoder).
    public let encodes = Atomic<Int>(0)
    /// Shared compressions on the broadcast path (at most one per event and compressed variant).
    public let compressions = Atomic<Int>(0)
    /// Complete frames built on the broadcast path (at most one per event and variant).
    public let frameBuilds = Atomic<Int>(0)
    /// Bytes of zlib state reserved by dedicated-mode connections (node-wide budget).
    public let dedicatedCompressionMemory = Atomic<Int>(0)
    /// Flush rounds run by the shards (each writes every connection with pending frames).
    public let flushRounds = Atomic<Int>(0)
    /// Writes handed to connections by flush rounds (deliveries / writes = frames per write).
    public let connectionWrites = Atomic<Int>(0)
    /// Frames dropped by slow-consumer policies.
    public let dropped = Atomic<Int>(0)
    /// Events replayed from history (resume, `last`, retained) to subscribers.
    public let replayed = Atomic<Int>(0)
    /// Events of new topics not kept because the history table was full.
    public let historyTopicsRefused = Atomic<Int>(0)

    /// Payload bytes before and after shared compression, per compressed variant (index in
    /// ``VariantTable/entries``; counted once per event and variant, not per recipient).
    public let compressionBytes = NIOLockedValueBox<[Int: (input: Int, output: Int)]>([:])
    /// Told, once per flush round and loop, how long the round's oldest event waited from
    /// its publication to the round's writes (nanoseconds). Set by the server.
    public let publishToWrite = NIOLockedValueBox<LatencyObserver?>(nil)

    public init() {}
}

/// A function kept in a lock, read as a class reference.
///
/// Do not keep a closure as a lock's value itself: `withLockedValue { $0 }` hands the value
/// to its body `inout`, so the closure is converted to its native form and written back
/// converted again, each time wrapped in one more reabstraction thunk. Every read then
/// makes the next call one thunk deeper: a call that slows down without bound and a leak
/// (the flush-round observer did this, once per round).
public final class LatencyObserver: Sendable {
    public let observe: @Sendable (Int64) -> Void
    public init(_ observe: @escaping @Sendable (Int64) -> Void) { self.observe = observe }
}
