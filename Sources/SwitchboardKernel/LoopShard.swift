import NIOConcurrencyHelpers
import NIOCore
import Synchronization
import SwitchboardCore

/// A connection on its way to a shard; released exactly once.
public final class ArrivalReservation: Sendable {
    private let shard: LoopShard
    private let released = Atomic<Bool>(false)

    init(shard: LoopShard) { self.shard = shard }

    public func release() {
        if !released.exchange(true, ordering: .relaxed) {
            shard.arrivingSubscribers.add(-1, ordering: .relaxed)
        }
    }
}

/// The kernel's state for one event loop: the topic router of the connections living on
/// that loop, and the fan-out into them.
///
/// Every method except the atomic counters must run on ``eventLoop``. The kernel hops to
/// each loop once per event; inside the loop, delivery is plain writes with no locks and
/// no allocation per recipient, and flushes are batched once per loop tick so frames for
/// the same connection leave together in one `writev`.
public final class LoopShard: @unchecked Sendable {
    public let eventLoop: any EventLoop
    /// Coarse per-connection deadlines (heartbeats) on this loop, one timer for all.
    public let timers: TimerWheel
    private var router = TopicRouter<any Subscriber>()
    private var sequence: UInt64 = 0
    private var pendingFlush: [any Subscriber] = []
    /// The list a flush round walks; swapped with `pendingFlush` so that neither list is
    /// reallocated per round (frames delivered during the round go to the other one).
    private var flushing: [any Subscriber] = []
    private var flushScheduled = false
    /// The shortest time between two flush rounds; zero flushes on the next loop tick.
    private let flushInterval: Int64
    /// When the last flush round ran (uptime nanoseconds).
    private var lastFlush: UInt64 = 0
    /// Kept events per topic: history (`history:` rules) and the last event of topics
    /// whose source retains (`retain: true`, replayed on subscribe).
    private var logs: [String: TopicLog] = [:]
    /// Beyond this many kept topics, new topics are not kept.
    public static let maximumRetainedTopics = HistoryClock.maximumTopics
    private let counters: KernelCounters
    private let history: HistoryClock
    private let variants: VariantTable
    /// zlib state for messages that stand alone (no context takeover), shared by every
    /// connection on this loop: a client's compressed messages and a shared-mode
    /// connection's own replies need no zlib state per connection. Created on first use.
    private var inflaters: [Int: Inflater] = [:]
    private var deflaters: [DeflateSettings: Deflater] = [:]
    /// Subscriptions on this loop; read from other threads to skip idle loops.
    let subscriptionCount = Atomic<Int>(0)
    /// Frames waiting in the send queues of this loop's connections (their sockets are
    /// full). Kept by the connections, on the loop; read with ``queuedFramesOnLoop()``.
    package var queuedFrames = 0
    /// Socket writes of this loop's connections: straight to the kernel (no NIO pipeline)
    /// and through NIO (TLS, a platform without direct writes, what the kernel did not
    /// take, or while NIO still held bytes). Kept on the loop; read with
    /// ``socketWritesOnLoop()``.
    package var directWrites = 0
    package var pipelineWrites = 0
    /// When the oldest event delivered since the last flush round was published (0: none).
    private var oldestUnwritten: UInt64 = 0
    /// Connections admitted on this loop whose handler is not installed yet: the 101 may
    /// reach the client before the handler subscribes, and an event published in that
    /// window must not skip this loop.
    let arrivingSubscribers = Atomic<Int>(0)
    /// How many connections are arriving on this loop (reservations not yet released).
    package var arrivingSubscriberCount: Int { arrivingSubscribers.load(ordering: .relaxed) }

    /// Marks a connection as arriving; call ``ArrivalReservation/release()`` once it has
    /// subscribed (or is gone).
    public func expectSubscriber() -> ArrivalReservation {
        arrivingSubscribers.add(1, ordering: .relaxed)
        return ArrivalReservation(shard: self)
    }

    init(eventLoop: any EventLoop, counters: KernelCounters, history: HistoryClock, variants: VariantTable, flushInterval: TimeAmount = .zero) {
        self.eventLoop = eventLoop
        self.timers = TimerWheel(eventLoop: eventLoop)
        self.counters = counters
        self.history = history
        self.variants = variants
        self.flushInterval = max(0, flushInterval.nanoseconds)
    }

    /// The kernel's history epoch (positions of this instance).
    public var epoch: String { history.epoch }

    /// Subscribes; `false` if already subscribed to exactly this pattern.
    public func subscribe(_ pattern: TopicPattern, _ subscriber: any Subscriber) -> Bool {
        eventLoop.preconditionInEventLoop()
        let added = router.subscribe(pattern, subscriber)
        subscriptionCount.store(router.subscriptionCount, ordering: .relaxed)
        return added
    }

    /// Unsubscribes; `false` if there was no such subscription.
    @discardableResult
    public func unsubscribe(_ pattern: TopicPattern, _ subscriber: any Subscriber) -> Bool {
        eventLoop.preconditionInEventLoop()
        let removed = router.unsubscribe(pattern, subscriber)
        subscriptionCount.store(router.subscriptionCount, ordering: .relaxed)
        return removed
    }

    /// Delivers one prepared event to every matching subscriber on this loop, keeping it
    /// first when its topic keeps history or is retained.
    func deliver(_ prepared: PreparedEvent, keep: KeepPolicy? = nil) {
        if let keep {
            let topic = prepared.event.topic
            // Stamped topics are bounded by the kernel's clock (which numbered this one):
            // a loop keeps every one of them, so a position is always resumable where it was
            // sent. Retained-only topics are bounded here.
            if keep.stamped || logs[topic] != nil || logs.count < Self.maximumRetainedTopics {
                let now = NIODeadline.now().uptimeNanoseconds
                logs[topic, default: TopicLog(policy: keep)].policy = keep
                logs[topic]?.append(prepared, now: now)
            }
        }
        sequence &+= 1
        let current = sequence
        var delivered = 0
        var cachedVariant = VariantID(index: -1)
        var cachedFrame = ByteBuffer()
        // A local copy (copy-on-write, free unless mutated): a subscriber's write can fail
        // and make NIO read from that socket inside this loop, and the client's subscribe
        // may then change `self.router` while we iterate.
        let router = self.router
        router.forEachMatch(prepared.event.topic) { subscriber in
            guard subscriber.lastDeliverySequence != current else { return }
            subscriber.lastDeliverySequence = current
            let variant = subscriber.variant
            if variant != cachedVariant {
                cachedFrame = prepared.frame(for: variant)
                cachedVariant = variant
            }
            if subscriber.enqueue(cachedFrame, of: prepared) {
                delivered += 1
            }
            if !subscriber.isPendingFlush {
                subscriber.isPendingFlush = true
                pendingFlush.append(subscriber)
            }
        }
        if delivered > 0 {
            counters.deliveries.add(delivered, ordering: .relaxed)
            if oldestUnwritten == 0 { oldestUnwritten = prepared.createdAt }
        }
        scheduleFlush()
    }

    /// Sends `subscriber` the retained event of every topic one of `patterns` matches (each
    /// topic once), as a new subscriber would have seen it last. Returns how many.
    @discardableResult
    public func replayRetained(_ patterns: [TopicPattern], to subscriber: any Subscriber) -> Int {
        eventLoop.preconditionInEventLoop()
        guard !logs.isEmpty, !patterns.isEmpty else { return 0 }
        return send(newestRetained { topic in patterns.contains { $0.matches(topic) } }, to: subscriber)
    }

    /// The newest kept event of every retained topic `matches` accepts (expired ones not).
    private func newestRetained(_ matches: (String) -> Bool) -> [PreparedEvent] {
        let now = NIODeadline.now().uptimeNanoseconds
        var latest: [PreparedEvent] = []
        for topic in logs.keys where matches(topic) && logs[topic]?.policy.replaysLatest == true {
            logs[topic]?.expire(now: now)
            latest.append(contentsOf: logs[topic]?.newest(1) ?? [])
        }
        return latest
    }

    /// What a subscribe to `pattern` gets from this loop's history: the topic's position
    /// for the reply and the events to replay after it.
    ///
    /// - `since`: every kept event after it (`recovered: true`), or nothing and
    ///   `recovered: false` when the history no longer reaches back to it or it is from
    ///   another epoch. A `since` ahead of this loop, but not of the kernel, answers
    ///   ``HistoryReplay/loopIsBehind`` while `allowLoopBehind`: ask again after the loop's
    ///   queued deliveries.
    /// - `last`: the newest that many kept events.
    /// - neither: the newest event of a retained topic.
    ///
    /// Call ``send(_:to:)`` with the events in the same loop tick as the subscription, so
    /// that no event falls between the replay and the live ones, or arrives twice.
    public func replay(for pattern: TopicPattern, options: SubscribeOptions, allowLoopBehind: Bool = true) -> HistoryReplay {
        eventLoop.preconditionInEventLoop()
        guard !pattern.isWildcard else {
            return HistoryReplay(events: newestRetained { pattern.matches($0) })
        }
        let topic = pattern.text
        logs[topic]?.expire(now: NIODeadline.now().uptimeNanoseconds)
        let log = logs[topic]
        // Without `since` or `last`, a retained topic's newest event only.
        let count = options.last ?? (log?.policy.replaysLatest == true ? 1 : 0)
        let stamped = log?.policy.stamped ?? history.stamps(topic)
        guard stamped else {
            // No positions on this topic: a resume cannot be honoured, and says so.
            if options.since != nil { return HistoryReplay(history: SubscriptionHistory(position: nil, recovered: false)) }
            return HistoryReplay(events: log?.newest(count) ?? [])
        }
        let latest = log?.latestOffset ?? 0
        let position = StreamPosition(epoch: history.epoch, offset: latest)
        if let since = options.since {
            guard since.epoch == history.epoch else {
                return HistoryReplay(history: SubscriptionHistory(position: position, recovered: false))
            }
            // Shared history: what this loop's memory cannot serve, the store may.
            let canFetch = history.sharedStore != nil
            if since.offset > latest {
                if canFetch { return HistoryReplay(needsFetch: true) }
                if allowLoopBehind && since.offset <= history.latestOffset(of: topic) { return HistoryReplay(loopIsBehind: true) }
                return HistoryReplay(history: SubscriptionHistory(position: position, recovered: false))
            }
            guard let missed = log?.after(since.offset) ?? (since.offset == latest ? [] : nil) else {
                if canFetch { return HistoryReplay(needsFetch: true) }
                return HistoryReplay(history: SubscriptionHistory(position: position, recovered: false))
            }
            return HistoryReplay(history: SubscriptionHistory(position: position, recovered: true, replayed: missed.count), events: missed)
        }
        let events = log?.newest(count) ?? []
        return HistoryReplay(history: SubscriptionHistory(position: position, replayed: events.count), events: events)
    }

    /// The store that serves resumes with shared history (nil otherwise).
    public var sharedHistoryStore: (any SharedHistoryStore)? { history.sharedStore }

    /// Most events a resume of `topic` may need (its history size).
    public func historySize(of topic: String) -> Int {
        logs[topic]?.policy.size ?? history.policy(for: topic, retain: false)?.size ?? 1
    }

    /// A resume of `topic` after `since` from a page of the shared store (nil: the store
    /// could not be reached), merged with what this loop has kept since the page was read.
    /// Returns the replay and the subscriber's floor for the topic: live events up to it
    /// are already in the replay (or older than the page) and must be skipped; they may
    /// still be on their way over the bus.
    ///
    /// Call it, subscribe and send the events in one loop tick.
    public func resume(_ topic: String, since: StreamPosition, page: SharedHistoryPage?) -> (replay: HistoryReplay, floor: Int64?) {
        eventLoop.preconditionInEventLoop()
        let log = logs[topic]
        let local = log?.latestOffset ?? 0
        guard let page, page.epoch == since.epoch, since.offset <= max(page.latest, local) else {
            let position = StreamPosition(epoch: page?.epoch ?? history.epoch, offset: max(page?.latest ?? 0, local))
            return (HistoryReplay(history: SubscriptionHistory(position: position, recovered: false)), nil)
        }
        let failed = (HistoryReplay(history: SubscriptionHistory(position: StreamPosition(epoch: page.epoch, offset: max(page.latest, local)), recovered: false)), Int64?.none)
        // The page must start right after `since` (else the store trimmed what followed).
        let fetched = page.events.filter { ($0.position?.offset ?? 0) > since.offset }
        if let first = fetched.first?.position?.offset, first - 1 != since.offset { return failed }
        var lastFetched = fetched.last?.position?.offset ?? since.offset
        var events = fetched.map { PreparedEvent(event: $0, table: variants, counters: counters) }
        // What this loop kept after the page: must follow it without a hole.
        if let log, local > lastFetched, log.events.first?.event.event.position?.epoch == page.epoch {
            guard let tail = log.after(lastFetched) else { return failed }
            events += tail
            lastFetched = local
        }
        // Everything up to the store's newest offset when it was read must be here: a page
        // cut short (COUNT) with nothing in memory after it would leave a hole.
        if lastFetched < page.latest { return failed }
        let position = StreamPosition(epoch: page.epoch, offset: lastFetched)
        return (HistoryReplay(history: SubscriptionHistory(position: position, recovered: true, replayed: events.count), events: events), lastFetched)
    }

    /// Sends kept events to one subscriber (a replay), oldest first; returns how many it took.
    @discardableResult
    public func send(_ events: [PreparedEvent], to subscriber: any Subscriber) -> Int {
        eventLoop.preconditionInEventLoop()
        guard !events.isEmpty else { return 0 }
        var sent = 0
        for prepared in events where subscriber.enqueue(prepared.frame(for: subscriber.variant), of: prepared) { sent += 1 }
        if sent > 0 {
            counters.deliveries.add(sent, ordering: .relaxed)
            counters.replayed.add(sent, ordering: .relaxed)
            needsFlush(subscriber)
        }
        return sent
    }

    /// Marks a subscriber for the next batched flush (used for replies as well).
    public func needsFlush(_ subscriber: any Subscriber) {
        eventLoop.preconditionInEventLoop()
        if !subscriber.isPendingFlush {
            subscriber.isPendingFlush = true
            pendingFlush.append(subscriber)
        }
        scheduleFlush()
    }

    /// Flushes on the next loop tick, or, when the last round was less than the flush
    /// interval ago, at the end of that interval: a quiet connection gets its frame at
    /// once, and under load the frames of one interval leave in one write per connection.
    private func scheduleFlush() {
        guard !flushScheduled, !pendingFlush.isEmpty else { return }
        flushScheduled = true
        if flushInterval > 0 {
            let due = lastFlush &+ UInt64(flushInterval)
            if NIODeadline.now().uptimeNanoseconds < due {
                eventLoop.scheduleTask(deadline: .uptimeNanoseconds(due)) { self.flushPending() }
                return
            }
        }
        // Runs after the deliveries already queued on this loop, so bursts coalesce.
        eventLoop.execute { self.flushPending() }
    }

    private func flushPending() {
        flushScheduled = false
        if flushInterval > 0 { lastFlush = NIODeadline.now().uptimeNanoseconds }
        counters.flushRounds.add(1, ordering: .relaxed)
        swap(&flushing, &pendingFlush)
        var writes = 0
        for subscriber in flushing {
            subscriber.isPendingFlush = false
            if subscriber.flush() { writes += 1 }
        }
        flushing.removeAll(keepingCapacity: true)
        if writes > 0 { counters.connectionWrites.add(writes, ordering: .relaxed) }
        if oldestUnwritten != 0 {
            let waited = Int64(NIODeadline.now().uptimeNanoseconds &- oldestUnwritten)
            oldestUnwritten = 0
            if writes > 0, let observer = counters.publishToWrite.withLockedValue({ $0 }) { observer.observe(waited) }
        }
    }

    /// This loop's inflater for stand-alone messages compressed with `windowBits`; the caller
    /// must reset it after each message (`Inflater.inflate(_:limit:resetAfter: true)`).
    public func sharedInflater(windowBits: Int) -> Inflater? {
        eventLoop.preconditionInEventLoop()
        if let inflater = inflaters[windowBits] { return inflater }
        let created = Inflater(windowBits: windowBits)
        inflaters[windowBits] = created
        return created
    }

    /// This loop's compressor for stand-alone messages with `settings`; the caller must
    /// reset it after each message (`resetAfter: true`).
    public func sharedDeflater(_ settings: DeflateSettings) -> Deflater? {
        eventLoop.preconditionInEventLoop()
        if let deflater = deflaters[settings] { return deflater }
        let created = Deflater(settings: settings)
        deflaters[settings] = created
        return created
    }

    /// Counts frames a slow-consumer policy dropped.
    public func recordDrops(_ count: Int) {
        counters.dropped.add(count, ordering: .relaxed)
    }

    /// ``queuedFrames``, read on the loop.
    public func queuedFramesOnLoop() async -> Int {
        (try? await eventLoop.submit { self.queuedFrames }.get()) ?? 0
    }

    /// ``directWrites`` and ``pipelineWrites``, read on the loop.
    public func socketWritesOnLoop() async -> (direct: Int, pipeline: Int) {
        (try? await eventLoop.submit { (self.directWrites, self.pipelineWrites) }.get()) ?? (0, 0)
    }

    /// Subscriber counts per pattern on this loop.
    func countsByPattern() -> [String: Int] {
        router.countsByPattern
    }
}
