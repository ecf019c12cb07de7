import Synchronization

/// Process-wide counters, updated with relaxed atomics (never per delivery: shards add
/// their totals once per event).
public final class KernelCounters: Sendable {
    /// Events handed to the kernel by sources.
    public let eventsIn = Atomic<Int>(0)
    /// Frames written to connections.
    public let deliveries = Atomic<Int>(0)
    /// Encoder invocations on the broadcast path (one per event and variant at most).
    public let encodes = Atomic<Int>(0)
    /// Frames dropped by slow-consumer policies.
    public let dropped = Atomic<Int>(0)

    public init() {}
}
