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

    /// The shared keys, declared once; `url` and `{channel}` are described per source.
    struct Keys: Sendable {
        let url: DefaultedKey<String>
        let mapping: MessageMapping.Keys
        let protocolVersion: DefaultedKey<Int>
        let connectTimeout = DefaultedKey("connect_timeout", "duration", default: ConfigDuration.seconds(5), "Connect and handshake timeout.")

        init(url summary: String, channel: String, protocolSummary: String) {
            url = DefaultedKey("url", "redis URL", default: "redis://127.0.0.1:6379", summary)
            mapping = MessageMapping.Keys(channel: channel)
            protocolVersion = DefaultedKey("protocol", "2 | 3", default: 2, protocolSummary)
        }
    }

    /// Reads every shared key, then validates.
    init(from container: KeyedDecodingContainer<PluginCodingKey>, keys: Keys) throws {
        let urlText = try container.read(keys.url)
        protocolVersion = try container.read(keys.protocolVersion)
        connectTimeout = try container.read(keys.connectTimeout)
        let mapping = Result { try MessageMapping(from: container, keys: keys.mapping) }
        url = try RedisURL(parsing: urlText)
        guard protocolVersion == 2 || protocolVersion == 3 else { throw ConfigValidationError("'protocol' must be 2 or 3") }
        self.mapping = try mapping.get()
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
        examples: ["sources:\n  - name: jobs\n    plugin: redis\n    url: ${REDIS_URL:-redis://127.0.0.1:6379}\n    channels: [\"botrix:jobs:updates\"]\n    topic: jobs\n    type: job_update\n    shape: flat"]
    )

    public struct Config: PluginConfig {
        var common: RedisCommonConfig
        var channels: [String]
        var patterns: [String]
        var pingInterval: ConfigDuration

        static let common = RedisCommonConfig.Keys(
            url: "`redis://[user:password@]host:port/db`, or `rediss://` for TLS. Use ${REDIS_URL} for secrets.",
            channel: "the channel name",
            protocolSummary: "RESP version (3 uses HELLO 3 and push messages)."
        )
        static let channels = DefaultedKey("channels", "list", default: [String](), shown: "none", "Channels to SUBSCRIBE to.")
        static let patterns = DefaultedKey("patterns", "list", default: [String](), shown: "none", "Glob patterns to PSUBSCRIBE to.")
        static let pingInterval = DefaultedKey(
            "ping_interval", "duration", default: ConfigDuration.seconds(5),
            "PING while subscribed; no answer for two intervals means the connection is dead."
        )
        public static let keys: [any PluginKey] =
            [common.url, channels, patterns] + common.mapping.all + [common.protocolVersion, pingInterval, common.connectTimeout]

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: PluginCodingKey.self)
            let common = Result { try RedisCommonConfig(from: container, keys: Self.common) }
            channels = try container.read(Self.channels)
            patterns = try container.read(Self.patterns)
            pingInterval = try container.read(Self.pingInterval)
            self.common = try common.get()
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
