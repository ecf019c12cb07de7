import SwitchboardCore

/// Subscribers of one topic or pattern: O(1) insert and remove, contiguous iteration.
struct SubscriberList<Subscriber> {
    private(set) var items: ContiguousArray<Subscriber> = []
    private var positions: [ObjectIdentifier: Int] = [:]

    var count: Int { items.count }
    var isEmpty: Bool { items.isEmpty }

    mutating func insert(_ subscriber: Subscriber) -> Bool {
        let id = ObjectIdentifier(subscriber as AnyObject)
        guard positions[id] == nil else { return false }
        positions[id] = items.count
        items.append(subscriber)
        return true
    }

    mutating func remove(_ subscriber: Subscriber) -> Bool {
        let id = ObjectIdentifier(subscriber as AnyObject)
        guard let position = positions.removeValue(forKey: id) else { return false }
        let last = items.count - 1
        if position != last {
            items.swapAt(position, last)
            positions[ObjectIdentifier(items[position] as AnyObject)] = position
        }
        items.removeLast()
        return true
    }
}

/// Maps topics to subscribers (class instances, compared by identity): exact topics and trailing-wildcard patterns (`topic:*`, `*`).
///
/// A value type owned by one event loop's shard, so it needs no locks. Matching an event
/// costs one hash lookup for the exact topic plus one per distinct wildcard prefix length,
/// independent of the number of subscribers.
public struct TopicRouter<Subscriber> {
    private var exact: [String: SubscriberList<Subscriber>] = [:]
    private var wildcards: [String: SubscriberList<Subscriber>] = [:]
    /// Prefix length (in UTF-8 bytes) → number of wildcard patterns with that length.
    private var prefixLengths: [Int: Int] = [:]
    private var sortedPrefixLengths: [Int] = []

    public init() {}

    /// Total (pattern, subscriber) pairs.
    public private(set) var subscriptionCount = 0

    /// Adds `subscriber` to `pattern`; `false` if it was already there.
    @discardableResult
    public mutating func subscribe(_ pattern: TopicPattern, _ subscriber: Subscriber) -> Bool {
        let added: Bool
        if let prefix = pattern.prefix {
            added = wildcards[prefix, default: SubscriberList()].insert(subscriber)
            if added, wildcards[prefix]?.count == 1 {
                let length = prefix.utf8.count
                prefixLengths[length, default: 0] += 1
                if prefixLengths[length] == 1 { sortedPrefixLengths = prefixLengths.keys.sorted() }
            }
        } else {
            added = exact[pattern.text, default: SubscriberList()].insert(subscriber)
        }
        if added { subscriptionCount += 1 }
        return added
    }

    /// Removes `subscriber` from `pattern`; `false` if it was not there.
    @discardableResult
    public mutating func unsubscribe(_ pattern: TopicPattern, _ subscriber: Subscriber) -> Bool {
        let removed: Bool
        if let prefix = pattern.prefix {
            removed = wildcards[prefix]?.remove(subscriber) ?? false
            if removed, wildcards[prefix]?.isEmpty == true {
                wildcards[prefix] = nil
                let length = prefix.utf8.count
                prefixLengths[length, default: 1] -= 1
                if prefixLengths[length] == 0 {
                    prefixLengths[length] = nil
                    sortedPrefixLengths = prefixLengths.keys.sorted()
                }
            }
        } else {
            removed = exact[pattern.text]?.remove(subscriber) ?? false
            if removed, exact[pattern.text]?.isEmpty == true { exact[pattern.text] = nil }
        }
        if removed { subscriptionCount -= 1 }
        return removed
    }

    /// Calls `body` for each (pattern, subscriber) pair matching `topic`. A subscriber with
    /// several matching patterns is visited once per pattern; callers deduplicate.
    public func forEachMatch(_ topic: String, _ body: (Subscriber) -> Void) {
        if let list = exact[topic] {
            for subscriber in list.items { body(subscriber) }
        }
        guard !sortedPrefixLengths.isEmpty else { return }
        let utf8 = topic.utf8
        let topicLength = utf8.count
        for length in sortedPrefixLengths {
            guard length <= topicLength else { break }
            let end = utf8.index(utf8.startIndex, offsetBy: length)
            guard let prefix = String(utf8[utf8.startIndex..<end]) else { continue }
            if let list = wildcards[prefix] {
                for subscriber in list.items { body(subscriber) }
            }
        }
    }

    /// Whether anyone listens to `topic`.
    public func hasSubscribers(for topic: String) -> Bool {
        var found = false
        forEachMatch(topic) { _ in found = true }
        return found
    }

    /// Subscriber count per pattern text (exact topics and wildcard patterns).
    public var countsByPattern: [String: Int] {
        var counts: [String: Int] = [:]
        for (topic, list) in exact { counts[topic] = list.count }
        for (prefix, list) in wildcards { counts[prefix + "*"] = list.count }
        return counts
    }
}
