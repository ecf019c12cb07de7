import NIOConcurrencyHelpers
import NIOCore
import SwitchboardCore

/// Which topics keep history, and how much: from the endpoints' `history:` blocks.
public struct HistoryRule: Sendable, Equatable {
    /// Topics the rule applies to.
    public var patterns: [TopicPattern]
    /// Most events kept per topic.
    public var size: Int
    /// How long an event is kept, in nanoseconds; 0 keeps it until `size` pushes it out.
    public var ttlNanoseconds: Int64

    public init(patterns: [TopicPattern], size: Int, ttlNanoseconds: Int64) {
        self.patterns = patterns
        self.size = max(1, size)
        self.ttlNanoseconds = max(0, ttlNanoseconds)
    }
}

/// What a loop keeps of one topic: its newest events, and whether a new subscriber gets
/// the newest one without asking (`retain: true` sources: status-on-connect).
struct KeepPolicy: Sendable, Equatable {
    var size: Int
    var ttlNanoseconds: Int64
    /// Events carry positions (a history rule applies); `retain` alone keeps one event
    /// without a position.
    var stamped: Bool
    var replaysLatest: Bool

    /// `retain: true` without a history rule: the newest event, no position.
    static let retainOnly = KeepPolicy(size: 1, ttlNanoseconds: 0, stamped: false, replaysLatest: true)
}

/// The kernel's side of history: the epoch, the rules, and each topic's newest offset.
///
/// Offsets are handed out under one lock, and the event is handed to every loop under the
/// same lock, so each loop sees a topic's events in offset order whichever thread
/// published them.
final class HistoryClock: Sendable {
    /// This history's epoch: random per start, since in-memory history does not survive
    /// one; with shared history, the epoch kept in Redis (``adopt(epoch:)``).
    var epoch: String { currentEpoch.withLockedValue { $0 } }
    private let currentEpoch: NIOLockedValueBox<String>
    let rules: [HistoryRule]
    /// Positions come from a shared store (Redis, with `cluster:`), not from this clock:
    /// events arrive stamped, and events without a position are delivered but not kept.
    let shared: Bool
    private let offsets = NIOLockedValueBox<[String: Int64]>([:])
    /// With `shared`: where resumes the loops cannot serve from memory are looked up.
    let store = NIOLockedValueBox<(any SharedHistoryStore)?>(nil)
    /// Topics with history at most; a new topic past this is delivered live but not kept
    /// (``KernelCounters/historyTopicsRefused``).
    static let maximumTopics = 10_000

    init(rules: [HistoryRule], epoch: String? = nil, shared: Bool = false) {
        self.rules = rules
        self.currentEpoch = NIOLockedValueBox(epoch ?? Self.randomEpoch())
        self.shared = shared
    }

    /// The store serving resumes, with shared history once it is set.
    var sharedStore: (any SharedHistoryStore)? {
        shared ? store.withLockedValue { $0 } : nil
    }

    /// The shared store's epoch (read at connect, and carried by every stamped event).
    func adopt(epoch: String) {
        currentEpoch.withLockedValue { $0 = epoch }
    }

    static func randomEpoch() -> String {
        let alphabet = Array("0123456789abcdefghijklmnopqrstuvwxyz".utf8)
        var generator = SystemRandomNumberGenerator()
        return String(decoding: (0..<12).map { _ in alphabet[Int(generator.next(upperBound: UInt64(alphabet.count)))] }, as: UTF8.self)
    }

    /// How a loop keeps `topic`: the largest size and TTL of the rules that match it; with
    /// `retain`, at least the newest event, replayed to every new subscriber.
    func policy(for topic: String, retain: Bool) -> KeepPolicy? {
        var policy: KeepPolicy?
        for rule in rules where rule.patterns.contains(where: { $0.matches(topic) }) {
            let ttl = policy.map { current in
                current.ttlNanoseconds == 0 || rule.ttlNanoseconds == 0 ? 0 : max(current.ttlNanoseconds, rule.ttlNanoseconds)
            } ?? rule.ttlNanoseconds
            policy = KeepPolicy(size: max(policy?.size ?? 0, rule.size), ttlNanoseconds: ttl, stamped: true, replaysLatest: retain)
        }
        if policy == nil && retain { policy = .retainOnly }
        return policy
    }

    /// Runs `body` under the offset lock with `topic`'s next position (nil when the topic
    /// table is full and `topic` is new).
    func withNextPosition<Result>(for topic: String, _ body: (StreamPosition?) -> Result) -> Result {
        offsets.withLockedValue { offsets in
            if let current = offsets[topic] {
                offsets[topic] = current + 1
                return body(StreamPosition(epoch: epoch, offset: current + 1))
            }
            guard offsets.count < Self.maximumTopics else { return body(nil) }
            offsets[topic] = 1
            return body(StreamPosition(epoch: epoch, offset: 1))
        }
    }

    /// With shared history: runs `body` under the offset lock with whether `topic` may be
    /// kept at `offset` (the 10,000-topic cap, as for local history; nil offset: no).
    func withSharedAdmission<Result>(of topic: String, offset: Int64?, _ body: (Bool) -> Result) -> Result {
        offsets.withLockedValue { offsets in
            guard let offset, offsets[topic] != nil || offsets.count < Self.maximumTopics else { return body(false) }
            offsets[topic] = max(offsets[topic] ?? 0, offset)
            return body(true)
        }
    }

    /// Runs `body` under the offset lock (events without positions keep their order too).
    func withLock<Result>(_ body: () -> Result) -> Result {
        offsets.withLockedValue { _ in body() }
    }

    /// The newest offset handed out for `topic` (0 before its first event).
    func latestOffset(of topic: String) -> Int64 {
        offsets.withLockedValue { $0[topic] ?? 0 }
    }

    /// Whether `topic`'s events get positions: a rule covers it, and the clock numbers it
    /// already or still has room for it. The one gate for stamping and for the `position`
    /// of a `subscribed` reply, so a reply never promises positions the events will lack.
    func stamps(_ topic: String) -> Bool {
        guard rules.contains(where: { rule in rule.patterns.contains { $0.matches(topic) } }) else { return false }
        return offsets.withLockedValue { $0[topic] != nil || $0.count < Self.maximumTopics }
    }
}

/// One topic's kept events on one loop, oldest first.
struct TopicLog {
    var policy: KeepPolicy
    private(set) var events = CircularBuffer<(event: PreparedEvent, keptAt: UInt64)>(initialCapacity: 1)
    /// The newest offset this loop has seen, even after its event expired.
    private(set) var latestOffset: Int64 = 0

    init(policy: KeepPolicy) { self.policy = policy }

    mutating func append(_ event: PreparedEvent, now: UInt64) {
        if let position = event.event.position {
            // Kept events are always one unbroken run: after a hole (events this loop never
            // got, e.g. while the cluster bus was down) or a new epoch, the older ones can no
            // longer serve a resume across it, so they go (a resume then asks the store).
            if let newest = events.last?.event.event.position,
                newest.epoch != position.epoch || newest.offset + 1 != position.offset
            {
                events.removeAll()
            }
            latestOffset = position.offset
        }
        events.append((event, now))
        while events.count > policy.size { events.removeFirst() }
        expire(now: now)
    }

    /// Drops events older than the TTL.
    mutating func expire(now: UInt64) {
        guard policy.ttlNanoseconds > 0 else { return }
        while let oldest = events.first, now &- oldest.keptAt > UInt64(policy.ttlNanoseconds) { events.removeFirst() }
    }

    /// The newest `count` kept events, oldest first.
    func newest(_ count: Int) -> [PreparedEvent] {
        events.suffix(max(0, count)).map(\.event)
    }

    /// Every kept event after `offset`, or nil when the log no longer reaches back to it.
    func after(_ offset: Int64) -> [PreparedEvent]? {
        if offset == latestOffset { return [] }
        // `oldest - 1`, not `offset + 1`: `offset` comes from a client and may be Int64.max.
        guard let oldest = events.first?.event.event.position?.offset, oldest - 1 <= offset else { return nil }
        return events.compactMap { entry in
            guard let position = entry.event.event.position, position.offset > offset else { return nil }
            return entry.event
        }
    }
}

/// What a subscribe gets from its shard's history.
public struct HistoryReplay {
    /// For the `subscribed` reply; nil for a topic without history and no `since`.
    public var history: SubscriptionHistory?
    /// Events to send after the reply, oldest first.
    public var events: [PreparedEvent]
    /// The client's `since` is ahead of what this loop has delivered (it saw the event on
    /// another loop, which got there first): ask again after the loop's queued deliveries.
    public var loopIsBehind: Bool
    /// With shared history: this loop's memory does not reach back to `since`; ask the
    /// ``LoopShard/sharedHistoryStore`` and call ``LoopShard/resume(_:since:page:)``.
    public var needsFetch: Bool

    init(history: SubscriptionHistory? = nil, events: [PreparedEvent] = [], loopIsBehind: Bool = false, needsFetch: Bool = false) {
        self.history = history
        self.events = events
        self.loopIsBehind = loopIsBehind
        self.needsFetch = needsFetch
    }
}

/// History kept outside the process (Redis Streams, with `cluster:`), so that a client can
/// resume on any instance.
public protocol SharedHistoryStore: Sendable {
    /// The events of `topic` after `offset`, oldest first, at most `limit`, with the store's
    /// current epoch and the topic's newest offset.
    func events(of topic: String, after offset: Int64, limit: Int) async throws -> SharedHistoryPage
}

/// One answer of a ``SharedHistoryStore``.
public struct SharedHistoryPage: Sendable {
    public var epoch: String
    /// The topic's newest offset in the store (0 before its first event).
    public var latest: Int64
    /// Stamped events after the asked offset, oldest first.
    public var events: [Event]

    public init(epoch: String, latest: Int64, events: [Event]) {
        self.epoch = epoch
        self.latest = latest
        self.events = events
    }
}
