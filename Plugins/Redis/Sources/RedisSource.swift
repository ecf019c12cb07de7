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
    /// Topic from the channel, payload decoding and type (shared with every broker source).
    var mapping: MessageMapping

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
        mapping = try MessageMapping(from: container)
    }

    func event(channel: String, payload: [UInt8], id: String? = nil) -> Event {
        mapping.event(channel: channel, payload: payload, id: id)
    }

    func event(channel: String, data: JSONValue, id: String? = nil) -> Event {
        mapping.event(channel: channel, data: data, id: id)
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
        ] + MessageMapping.specKeys(channel: "the channel name") + [
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
