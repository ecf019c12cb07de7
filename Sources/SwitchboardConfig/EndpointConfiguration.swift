import SwitchboardCore
import Yams

/// One WebSocket endpoint: a path, the encoders clients may pick, the topics they may
/// subscribe to, filters, heartbeats and limits. Folded into an immutable pipeline at start.
public struct EndpointConfiguration: Sendable, Decodable {
    /// Absolute path such as `/ws`.
    public var path: String
    /// Allowed encoder names; the first is the default.
    public var encoders: [String]
    /// Topic patterns clients may subscribe to (`*` = any).
    public var topics: [TopicPattern]
    /// Subscriptions every new connection starts with.
    public var subscribe: [TopicPattern]
    /// Filters in the order they run.
    public var filters: [FilterConfiguration]
    /// Protocol-level ping/pong.
    public var heartbeat: HeartbeatConfiguration
    /// Largest client message (after reassembly of fragments); larger → close 1009.
    public var maxMessageSize: ConfigByteSize
    /// Most subscriptions one connection may hold.
    public var maxSubscriptions: Int
    /// Longest topic or pattern a client may subscribe to, in bytes (1–256).
    public var maxTopicLength: Int
    /// Deepest nesting of a client message, JSON or MessagePack (1–256; MessagePack stops
    /// at 32 whatever this says); deeper → `bad_message` error reply.
    public var maxMessageDepth: Int
    /// Client messages per second per connection, control frames (ping, pong, close)
    /// included, with a burst of twice that; past it the connection is closed with 1008.
    /// `0` turns the limit off.
    public var maxMessageRate: Int
    /// Outbound queue bounds and the slow-consumer policy.
    public var sendQueue: SendQueueConfiguration
    /// `pubsub` (default) or `echo` (conformance testing: every message is sent back).
    public var mode: EndpointMode
    /// permessage-deflate settings.
    public var compression: CompressionConfiguration
    /// Role → topic patterns its holders may subscribe to; role `*` applies to everyone.
    /// When set, a subscription needs a matching role as well as the endpoint's `topics`.
    public var permissions: [String: [TopicPattern]]?
    /// An extra HTTP path (e.g. `/ws/stats`) answering GET with this endpoint's counters.
    public var statsPath: String?
    /// Events kept per topic for resuming clients (`since`, `last`); off when nil.
    public var history: HistoryConfiguration?
    /// How clients may connect: `websocket` (default) and/or `sse` (Server-Sent Events on
    /// the same path, `GET` with `Accept: text/event-stream`).
    public var transports: [Transport]
    /// What event envelopes carry: `envelope: {topic: false}` leaves the `topic` field out
    /// (for clients of hubs that never sent it; they then cannot tell topics apart).
    public var envelope: EnvelopeConfiguration
    var position: ConfigPosition?
    /// The block's canonical text: a reload keeps an endpoint whose fingerprint did not
    /// change, and re-checks the connections of one where only `filters` changed.
    public var fingerprint = ""
    /// The fingerprint without `filters`.
    public var fingerprintWithoutFilters = ""

    enum CodingKeys: String, CodingKey {
        case path, encoders, topics, subscribe, filters, heartbeat, mode, compression, permissions, history, transports, envelope
        case statsPath = "stats_path"
        case maxMessageSize = "max_message_size"
        case maxSubscriptions = "max_subscriptions"
        case maxTopicLength = "max_topic_length"
        case maxMessageRate = "max_message_rate"
        case maxMessageDepth = "max_message_depth"
        case sendQueue = "send_queue"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let node = decoder as? NodeDecoder
        position = node?.node.mark
        if let node {
            fingerprint = node.session.fingerprint(of: node.node)
            fingerprintWithoutFilters = node.session.fingerprint(of: node.node, excluding: ["filters"])
        }
        path = try container.decode(String.self, forKey: .path)
        encoders = try container.value(.encoders, default: ["json"])
        topics = try container.value(.topics, default: [TopicPattern.everything])
        subscribe = try container.value(.subscribe, default: [])
        if container.contains(.filters) {
            var list = try container.nestedUnkeyedContainer(forKey: .filters)
            filters = list.decodeEach(FilterConfiguration.self)
        } else {
            filters = []
        }
        heartbeat = try container.value(.heartbeat, default: HeartbeatConfiguration())
        maxMessageSize = try container.value(.maxMessageSize, default: ConfigByteSize(bytes: 64 * 1024))
        maxSubscriptions = try container.value(.maxSubscriptions, default: 128)
        maxTopicLength = try container.value(.maxTopicLength, default: 256)
        maxMessageRate = try container.value(.maxMessageRate, default: 100)
        maxMessageDepth = try container.value(.maxMessageDepth, default: 32)
        sendQueue = try container.value(.sendQueue, default: SendQueueConfiguration())
        mode = try container.value(.mode, default: .pubsub)
        compression = try container.value(.compression, default: .off)
        permissions = try container.decodeIfPresent([String: [TopicPattern]].self, forKey: .permissions)
        statsPath = try container.decodeIfPresent(String.self, forKey: .statsPath)
        history = try container.decodeIfPresent(HistoryConfiguration.self, forKey: .history)
        transports = try container.value(.transports, default: [.websocket])
        envelope = try container.value(.envelope, default: EnvelopeConfiguration())

        guard let node else { return }
        if let statsPath, !statsPath.hasPrefix("/") || statsPath.contains("?") || statsPath == path {
            node.report("stats_path must start with '/', contain no query and differ from the endpoint path", key: "stats_path")
        }
        if !path.hasPrefix("/") || path.contains("?") || path.contains(" ") {
            node.report("endpoint path must start with '/' and contain no query or spaces, got '\(path)'", hint: "e.g. /ws", key: "path")
        }
        if encoders.isEmpty {
            node.report("an endpoint needs at least one encoder", hint: "e.g. encoders: [json]", key: "encoders")
        }
        let known = node.session.registry.encoders.keys.sorted()
        for name in encoders where node.session.registry.encoders[name] == nil {
            let suggestion = Suggestion.closest(to: name, in: known).map { "did you mean '\($0)'? " } ?? ""
            node.report("unknown encoder '\(name)'", hint: "\(suggestion)available: \(known.joined(separator: ", "))", key: "encoders")
        }
        if Set(encoders).count != encoders.count {
            node.report("encoders are listed more than once", key: "encoders")
        }
        if !envelope.topic {
            for name in encoders where node.session.registry.encoders[name]?.make().omittingTopic() == nil {
                node.report("encoder '\(name)' cannot leave the topic out of its envelope", hint: "json and msgpack can", key: "envelope")
            }
        }
        for pattern in subscribe where !topics.covers(pattern) {
            node.report(
                "default subscription '\(pattern)' is outside the endpoint's topics",
                hint: "topics: \(topics.map(\.text).joined(separator: ", "))",
                key: "subscribe"
            )
        }
        if maxMessageSize.bytes < 125 || maxMessageSize.bytes > 64 * 1024 * 1024 {
            node.report("max_message_size must be between 125 bytes and 64MiB, got \(maxMessageSize)", key: "max_message_size")
        }
        if maxSubscriptions < 1 {
            node.report("max_subscriptions must be at least 1", key: "max_subscriptions")
        }
        if maxTopicLength < 1 || maxTopicLength > 256 {
            node.report("max_topic_length must be between 1 and 256 bytes, got \(maxTopicLength)", key: "max_topic_length")
        }
        if maxMessageDepth < 1 || maxMessageDepth > 256 {
            node.report("max_message_depth must be between 1 and 256, got \(maxMessageDepth)", key: "max_message_depth")
        }
        if transports.isEmpty || Set(transports).count != transports.count {
            node.report("transports must list websocket and/or sse, each once", hint: "e.g. transports: [websocket, sse]", key: "transports")
        }
        if transports.contains(.sse) && !encoders.contains("json") {
            node.report("the sse transport sends JSON: add json to the endpoint's encoders", key: "transports")
        }
        if transports.contains(.sse) && mode == .echo {
            node.report("an echo endpoint has nothing to stream over sse", key: "transports")
        }
        if let history {
            for pattern in history.topics ?? [] where !topics.covers(pattern) {
                node.report(
                    "history topic '\(pattern)' is outside the endpoint's topics",
                    hint: "topics: \(topics.map(\.text).joined(separator: ", "))",
                    key: "history"
                )
            }
            if history.size > sendQueue.maxMessages {
                node.report(
                    "history size \(history.size) is larger than send_queue.max_messages (\(sendQueue.maxMessages)): a full replay would not fit in the send queue",
                    hint: "lower history.size or raise send_queue.max_messages",
                    key: "history", alsoAbout: ["send_queue"]
                )
            }
            if mode == .echo {
                node.report("history has no effect on an echo endpoint", key: "history")
            }
        }
        if maxMessageRate < 0 || maxMessageRate > 1_000_000 {
            node.report("max_message_rate must be between 0 (off) and 1000000 messages per second, got \(maxMessageRate)", key: "max_message_rate")
        }
    }
}

/// `history: {size: 100, ttl: 5m, topics: [...]}`: how many events the kernel keeps per
/// topic, and for how long, so that clients can resume (`since`) or ask for the newest
/// (`last`). Events of these topics carry their position in the envelope.
public struct HistoryConfiguration: Sendable, Decodable {
    /// Most events kept per topic (1–100000).
    public var size: Int
    /// How long an event is kept; `0s` keeps it until `size` pushes it out.
    public var ttl: ConfigDuration
    /// The topics that keep history; the endpoint's `topics` when omitted.
    public var topics: [TopicPattern]?

    public init(size: Int = 100, ttl: ConfigDuration = .seconds(300), topics: [TopicPattern]? = nil) {
        self.size = size
        self.ttl = ttl
        self.topics = topics
    }

    enum CodingKeys: String, CodingKey { case size, ttl, topics }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        size = try container.value(.size, default: 100)
        ttl = try container.value(.ttl, default: .seconds(300))
        topics = try container.decodeIfPresent([TopicPattern].self, forKey: .topics)
        let node = decoder as? NodeDecoder
        if size < 1 || size > 100_000 {
            node?.report("history size must be between 1 and 100000 events, got \(size)", key: "size")
        }
        if ttl.nanoseconds < 0 {
            node?.report("history ttl must not be negative", key: "ttl")
        }
        if let topics, topics.isEmpty {
            node?.report("history topics must not be empty (omit the key for the endpoint's topics)", key: "topics")
        }
    }
}

/// A way clients connect to an endpoint.
public enum Transport: String, Sendable, ConfigEnum {
    case websocket
    /// Server-Sent Events: a long-lived `GET` answered with `text/event-stream`.
    case sse

    public static var configPlaceholder: Transport { .websocket }
}

/// One filter from an endpoint's `filters:` list.
public struct FilterConfiguration: Sendable, Decodable {
    /// The plugin's registered name.
    public var plugin: String
    /// The decoded plugin configuration, ready to build.
    public var builder: FilterBuilder

    enum CodingKeys: String, CodingKey { case plugin, enabled }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        plugin = try container.decode(String.self, forKey: .plugin)
        guard let nodeDecoder = decoder as? NodeDecoder, !plugin.isEmpty else { throw ReportedError() }
        // `enabled: false` (typically `enabled: ${AUTH_ENABLED:-false}`) leaves the filter
        // out; its other keys are not read, so they may name unset variables.
        if try !container.value(.enabled, default: true) {
            nodeDecoder.session.markAborted(nodeDecoder.path)
            throw ReportedError()
        }
        let registry = nodeDecoder.session.registry
        plugin = nodeDecoder.currentPluginName(plugin, registry: registry)
        guard let factory = registry.filters[plugin] else {
            let known = registry.filters.keys.sorted()
            let suggestion = Suggestion.closest(to: plugin, in: known).map { "did you mean '\($0)'? " } ?? ""
            let available = known.isEmpty ? "no filter plugins are registered in this build" : "available: \(known.joined(separator: ", "))"
            nodeDecoder.report("unknown filter plugin '\(plugin)'", hint: "\(suggestion)\(available)", key: "plugin")
            throw ReportedError()
        }
        builder = try nodeDecoder.forPlugin(plugin).decodePlugin(declaring: factory.keys.map(\.name), factory.decode)
    }
}

/// Protocol-level ping/pong: a ping every `interval`; no frame from the peer within
/// `timeout` after a ping → the connection is dropped as dead.
public struct HeartbeatConfiguration: Sendable, Decodable {
    /// Time between pings; `0s` turns heartbeats off.
    public var interval: ConfigDuration = .seconds(30)
    /// How long to wait for any frame after a ping.
    public var timeout: ConfigDuration = .seconds(10)

    public init() {}

    enum CodingKeys: String, CodingKey { case interval, timeout }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        interval = try container.value(.interval, default: .seconds(30))
        timeout = try container.value(.timeout, default: .seconds(10))
        if interval.nanoseconds > 0 && timeout.nanoseconds == 0 {
            (decoder as? NodeDecoder)?.report("timeout must be greater than 0 when heartbeats are on", key: "timeout")
        }
    }
}

/// Outbound queue bounds per connection and what happens when a client reads too slowly.
public struct SendQueueConfiguration: Sendable, Decodable {
    /// Most messages waiting for one connection.
    public var maxMessages: Int = 1024
    /// Most bytes waiting for one connection.
    public var maxBytes: ConfigByteSize = ConfigByteSize(bytes: 4 * 1024 * 1024)
    /// What to do when either bound is hit.
    public var policy: SlowConsumerPolicy = .dropOldest

    public init() {}

    enum CodingKeys: String, CodingKey {
        case policy
        case maxMessages = "max_messages"
        case maxBytes = "max_bytes"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        maxMessages = try container.value(.maxMessages, default: 1024)
        maxBytes = try container.value(.maxBytes, default: ConfigByteSize(bytes: 4 * 1024 * 1024))
        policy = try container.value(.policy, default: .dropOldest)
        if maxMessages < 1 {
            (decoder as? NodeDecoder)?.report("max_messages must be at least 1", key: "max_messages")
        }
    }
}

/// `envelope:` on an endpoint.
public struct EnvelopeConfiguration: Sendable, Decodable, Equatable {
    /// Whether events carry their `topic` field (default true).
    public var topic = true

    public init() {}

    enum CodingKeys: String, CodingKey { case topic }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        topic = try container.value(.topic, default: true)
    }
}
