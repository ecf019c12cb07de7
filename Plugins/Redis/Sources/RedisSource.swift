import Foundation
import Logging
import NIOCore
import SwitchboardCore
import SwitchboardRedis

/// Keys shared by the Redis sources.
struct RedisCommonConfig: Sendable {
    var url: RedisURL
    var protocolVersion: Int
    var connectTimeout: ConfigDuration
    var topic: TopicTemplate
    var type: String
    var typeFromPayload: Bool
    var shape: EventShape

    enum Keys: String, CodingKey {
        case url, channels, patterns, topic, type, shape, streams, group, consumer, start, batch, block, field
        case protocolVersion = "protocol", connectTimeout = "connect_timeout", typeFromPayload = "type_from_payload"
        case pingInterval = "ping_interval"
    }

    init(from container: KeyedDecodingContainer<Keys>) throws {
        url = try RedisURL(parsing: container.value(.url, default: "redis://127.0.0.1:6379"))
        protocolVersion = try container.value(.protocolVersion, default: 2)
        guard protocolVersion == 2 || protocolVersion == 3 else { throw ConfigValidationError("'protocol' must be 2 or 3") }
        connectTimeout = try container.value(.connectTimeout, default: .seconds(5))
        topic = try TopicTemplate(container.decode(String.self, forKey: .topic))
        type = try container.value(.type, default: "message")
        typeFromPayload = try container.value(.typeFromPayload, default: true)
        shape = try container.value(.shape, default: .envelope)
    }

    /// Turns one Redis payload into an event: JSON is parsed, anything else is kept as a
    /// string.
    func event(channel: String, payload: [UInt8], id: String? = nil) -> Event {
        let data = (try? JSONParser.parse(payload)) ?? .string(String(decoding: payload, as: UTF8.self))
        return event(channel: channel, data: data, id: id)
    }

    /// An event with `data`; a string `type` field in a JSON object wins over the
    /// configured type.
    func event(channel: String, data: JSONValue, id: String? = nil) -> Event {
        var eventType = type
        if typeFromPayload, let declared = data["type"]?.stringValue, !declared.isEmpty { eventType = declared }
        return Event(topic: topic.render(channel: channel), type: eventType, data: data, id: id, shape: shape)
    }
}

/// `topic: jobs` or `topic: "job:{channel}"`.
struct TopicTemplate: Sendable {
    let text: String
    let usesChannel: Bool

    init(_ text: String) throws {
        guard !text.isEmpty else { throw ConfigValidationError("'topic' is empty") }
        let withoutPlaceholder = text.replacingOccurrences(of: "{channel}", with: "x")
        guard !withoutPlaceholder.contains("{"), !withoutPlaceholder.contains("}") else {
            throw ConfigValidationError("'topic' may only use the {channel} placeholder")
        }
        guard TopicPattern(withoutPlaceholder) != nil, !withoutPlaceholder.hasSuffix("*") else {
            throw ConfigValidationError("'topic' must render to a topic, not a pattern: \(TopicPattern.syntaxHelp)")
        }
        self.text = text
        usesChannel = text.contains("{channel}")
    }

    func render(channel: String) -> String {
        usesChannel ? text.replacingOccurrences(of: "{channel}", with: channel) : text
    }
}

/// The `redis` source: Redis pub/sub channels and patterns as events.
public struct RedisSource: SourcePlugin {
    public static let typeName = "redis"
    public static let spec = PluginSpec(
        summary: "Subscribe to Redis pub/sub channels and patterns; each message becomes an event",
        keys: [
            .init("url", "redis URL, default: redis://127.0.0.1:6379", "`redis://[user:password@]host:port/db`, or `rediss://` for TLS. Use ${REDIS_URL} for secrets."),
            .init("channels", "list", "Channels to SUBSCRIBE to."),
            .init("patterns", "list", "Glob patterns to PSUBSCRIBE to."),
            .init("topic", "string, required", "Topic of the events; `{channel}` is replaced by the channel name (`job:{channel}`)."),
            .init("type", "string, default: message", "Event type; a JSON payload's own string `type` field wins unless `type_from_payload: false`."),
            .init("type_from_payload", "bool, default: true", "Use the payload's `type` field when there is one."),
            .init("shape", "envelope | flat, default: envelope", "`flat` sends `{\"type\", …payload fields}` instead of the envelope (Botrix's job_update)."),
            .init("protocol", "2 | 3, default: 2", "RESP version (3 uses HELLO 3 and push messages)."),
            .init("ping_interval", "duration, default: 5s", "PING while subscribed; no answer for two intervals means the connection is dead."),
            .init("connect_timeout", "duration, default: 5s", "Connect and handshake timeout."),
        ],
        examples: ["sources:\n  - name: jobs\n    plugin: redis\n    url: ${REDIS_URL:-redis://127.0.0.1:6379}\n    channels: [\"botrix:jobs:updates\"]\n    topic: jobs\n    type: job_update\n    shape: flat"]
    )

    public struct Config: Decodable, Sendable {
        var common: RedisCommonConfig
        var channels: [String]
        var patterns: [String]
        var pingInterval: ConfigDuration

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: RedisCommonConfig.Keys.self)
            common = try RedisCommonConfig(from: container)
            channels = try container.value(.channels, default: [])
            patterns = try container.value(.patterns, default: [])
            pingInterval = try container.value(.pingInterval, default: .seconds(5))
            if channels.isEmpty && patterns.isEmpty { throw ConfigValidationError("give 'channels' or 'patterns'") }
            if pingInterval.nanoseconds < 100_000_000 { throw ConfigValidationError("'ping_interval' must be at least 100ms") }
        }
    }

    /// Every instance subscribes and receives each message itself: no forwarding on the
    /// cluster bus (that would deliver it twice), unless the source runs `once`.
    public static var receivesOnEveryInstance: Bool { true }

    public static func build(config: Config, context: any SourceContext) async throws -> any EventSource {
        RedisPubSubRunner(config: config, context: context)
    }
}

/// One subscription session per `run()`; the supervisor reconnects with backoff.
struct RedisPubSubRunner: EventSource {
    let config: RedisSource.Config
    let context: any SourceContext
    var reportsOwnHealth: Bool { true }

    func run() async throws {
        let common = config.common
        let context = self.context
        let subscription = try await RedisSubscription.open(
            to: common.url,
            channels: config.channels,
            patterns: config.patterns,
            protocolVersion: common.protocolVersion,
            timeout: common.connectTimeout.duration
        ) { channel, payload in
            context.emit(common.event(channel: channel, payload: payload))
        }
        context.reportHealth(.connected)
        try await subscription.watch(pingInterval: config.pingInterval.duration)
    }
}
