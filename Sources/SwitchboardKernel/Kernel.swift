import Logging
import NIOCore
import Synchronization
import SwitchboardCore

/// The routing kernel: takes events from sources and fans them out to subscribers on every
/// event loop, building each event's frame once per wire variant.
///
/// ```swift
/// let kernel = Kernel(eventLoopGroup: group, variants: VariantTable(encoders: [JSONEventEncoder()]))
/// kernel.publish(Event(topic: "metrics", type: "metrics", data: ["cpu": 0.5]))
/// ```
public final class Kernel: Sendable {
    public let variants: VariantTable
    public let counters = KernelCounters()
    public let shards: [LoopShard]
    private let shardsByLoop: [ObjectIdentifier: LoopShard]

    /// Creates a kernel with one shard per event loop of `eventLoopGroup`.
    ///
    /// `flushInterval` is the shortest time between two flush rounds on a loop: frames
    /// delivered within it leave together, one write per connection. Zero flushes on the
    /// next loop tick.
    public init(eventLoopGroup: any EventLoopGroup, variants: VariantTable, flushInterval: TimeAmount = .zero) {
        self.variants = variants
        var shards: [LoopShard] = []
        var byLoop: [ObjectIdentifier: LoopShard] = [:]
        for loop in eventLoopGroup.makeIterator() {
            let shard = LoopShard(eventLoop: loop, counters: counters, flushInterval: flushInterval)
            shards.append(shard)
            byLoop[ObjectIdentifier(loop)] = shard
        }
        self.shards = shards
        self.shardsByLoop = byLoop
    }

    /// The shard for connections on `eventLoop`.
    public func shard(for eventLoop: any EventLoop) -> LoopShard? {
        shardsByLoop[ObjectIdentifier(eventLoop)]
    }

    /// Routes `event` to its subscribers on all loops. Safe from any thread; returns at once.
    ///
    /// With `retain`, every loop also keeps the event as its topic's last one and replays
    /// it to each new subscriber of that topic (``LoopShard/replayRetained(_:to:)``).
    public func publish(_ event: Event, retain: Bool = false) {
        counters.eventsIn.add(1, ordering: .relaxed)
        var prepared: PreparedEvent?
        for shard in shards
        where retain || shard.subscriptionCount.load(ordering: .relaxed) > 0 || shard.arrivingSubscribers.load(ordering: .relaxed) > 0 {
            let event = prepared ?? PreparedEvent(event: event, table: variants, counters: counters)
            prepared = event
            shard.eventLoop.execute { shard.deliver(event, retain: retain) }
        }
    }

    /// Subscriber counts per topic or pattern, summed over all loops.
    public func subscriberCounts() async -> [String: Int] {
        var total: [String: Int] = [:]
        for shard in shards {
            let counts = try? await shard.eventLoop.submit { shard.countsByPattern() }.get()
            for (pattern, count) in counts ?? [:] { total[pattern, default: 0] += count }
        }
        return total
    }
}
