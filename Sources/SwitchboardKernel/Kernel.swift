import NIOConcurrencyHelpers
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
    let history: HistoryClock

    /// Creates a kernel with one shard per event loop of `eventLoopGroup`.
    ///
    /// `flushInterval` is the shortest time between two flush rounds on a loop: frames
    /// delivered within it leave together, one write per connection. Zero flushes on the
    /// next loop tick.
    ///
    /// `history` names the topics whose events are kept and stamped with a position
    /// (``HistoryRule``); `epoch` fixes the history's epoch (tests), random otherwise.
    public init(
        eventLoopGroup: any EventLoopGroup, variants: VariantTable, flushInterval: TimeAmount = .zero, history: [HistoryRule] = [],
        epoch: String? = nil, sharedHistory: Bool = false
    ) {
        self.variants = variants
        self.history = HistoryClock(rules: history, epoch: epoch, shared: sharedHistory)
        let history = self.history
        var shards: [LoopShard] = []
        var byLoop: [ObjectIdentifier: LoopShard] = [:]
        for loop in eventLoopGroup.makeIterator() {
            let shard = LoopShard(eventLoop: loop, counters: counters, history: history, variants: variants, flushInterval: flushInterval)
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

    /// This instance's history epoch (positions of another epoch cannot be resumed).
    public var epoch: String { history.epoch }

    /// Whether positions come from a shared store (``SharedHistoryStore``) rather than from
    /// this kernel: with `cluster:`, history topics travel through Redis, which numbers them.
    public var historyIsShared: Bool { history.shared }

    /// A new random epoch (12 characters of [0-9a-z]).
    public static func randomEpoch() -> String { HistoryClock.randomEpoch() }

    /// How many events of `topic` are kept and for how long (nil: no history).
    public func historyLimits(of topic: String) -> (size: Int, ttlNanoseconds: Int64)? {
        guard let policy = history.policy(for: topic, retain: false), policy.stamped else { return nil }
        return (policy.size, policy.ttlNanoseconds)
    }

    /// The shared store's epoch, learned at connect and from every stamped event.
    public func adoptEpoch(_ epoch: String) {
        history.adopt(epoch: epoch)
    }

    /// Where a resume that this instance's loops cannot serve from memory is looked up
    /// (set by the server once the cluster bus exists).
    public var sharedHistoryStore: (any SharedHistoryStore)? {
        get { history.store.withLockedValue { $0 } }
        set { history.store.withLockedValue { $0 = newValue } }
    }

    /// Routes `event` to its subscribers on all loops. Safe from any thread; returns at once.
    ///
    /// When a history rule covers the topic, the event gets the topic's next position and
    /// every loop keeps it for resuming subscribers (``LoopShard/replay(for:options:allowLoopBehind:)``).
    /// With `retain`, every loop also keeps the event as its topic's last one and replays
    /// it to each new subscriber of that topic (``LoopShard/replayRetained(_:to:)``).
    public func publish(_ event: Event, retain: Bool = false) {
        counters.eventsIn.add(1, ordering: .relaxed)
        if !history.rules.isEmpty || retain, let policy = history.policy(for: event.topic, retain: retain) {
            publishKept(event, policy: policy)
            return
        }
        var prepared: PreparedEvent?
        for shard in shards
        where retain || shard.subscriptionCount.load(ordering: .relaxed) > 0 || shard.arrivingSubscribers.load(ordering: .relaxed) > 0 {
            let event = prepared ?? PreparedEvent(event: event, table: variants, counters: counters)
            prepared = event
            shard.eventLoop.execute { shard.deliver(event) }
        }
    }

    /// An event every loop keeps: positions are handed out and the event is queued on the
    /// loops under one lock, so every loop keeps a topic's events in offset order.
    private func publishKept(_ event: Event, policy: KeepPolicy) {
        let shards = self.shards
        let deliver = { (event: Event, policy: KeepPolicy?) in
            let prepared = PreparedEvent(event: event, table: self.variants, counters: self.counters)
            for shard in shards { shard.eventLoop.execute { shard.deliver(prepared, keep: policy) } }
        }
        guard policy.stamped else {
            history.withLock { deliver(event, policy) }
            return
        }
        if history.shared {
            // Numbered by the shared store: keep the event at its position. Without one (the
            // store was unreachable) it is delivered live, not kept.
            history.withSharedAdmission(of: event.topic, offset: event.position?.offset) { admitted in
                if admitted, let position = event.position {
                    if position.epoch != history.epoch { history.adopt(epoch: position.epoch) }
                    deliver(event, policy)
                } else {
                    if event.position != nil { counters.historyTopicsRefused.add(1, ordering: .relaxed) }
                    var event = event
                    event.position = nil
                    deliver(event, policy.replaysLatest ? .retainOnly : nil)
                }
            }
            return
        }
        history.withNextPosition(for: event.topic) { position in
            guard let position else {
                counters.historyTopicsRefused.add(1, ordering: .relaxed)
                deliver(event, policy.replaysLatest ? .retainOnly : nil)
                return
            }
            var stamped = event
            stamped.position = position
            deliver(stamped, policy)
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
