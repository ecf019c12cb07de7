import RedisPlugin
import SwitchboardConfig
import SwitchboardCore
import SwitchboardTesting
import Testing

/// Both Redis sources pass the plugin contract kit against a real redis-server that the kit
/// kills and restarts on the same port; afterwards no connection of theirs is left.
@Suite(.serialized, .enabled(if: TestRedisServer.isAvailable, "redis-server is not installed"))
struct RedisContractTests {
    /// Clients connected besides the one asking (`CLIENT LIST` runs on its own connection).
    static func clients(of redis: TestRedisServer) async throws -> Int {
        let list = try await redis.run("CLIENT", "LIST")
        return list.split(separator: "\n").filter { $0.contains("addr=") && !$0.contains("cmd=client|list") }.count
    }

    /// The kit against `plugin` configured by `yaml`, with `redis` killed and restarted.
    func verify<P: SourcePlugin>(
        _ plugin: P.Type, yaml: String, on redis: TestRedisServer, trigger: @escaping @Sendable (Int) async throws -> Void
    ) async throws -> [Event] {
        let config = try ConfigurationLoader.decodePluginConfig(P.Config.self, yaml: yaml, plugin: P.typeName)
        return try await SourceContract(
            build: { context in try await P.build(config: config, context: context) },
            trigger: { round, _ in try await trigger(round) },
            matches: SourceContract.roundInData,
            backend: .init(stop: { redis.stop() }, start: { try await redis.start() }, connections: { try await Self.clients(of: redis) })
        ).verify()
    }

    @Test func pubSubPassesTheSourceContract() async throws {
        let redis = try await TestRedisServer()
        defer { redis.stop() }
        let events = try await verify(
            RedisSource.self, yaml: "url: \(redis.url)\nchannels: [\"jobs:1\"]\ntopic: \"job:{channel}\"\nping_interval: 200ms", on: redis
        ) { round in _ = try await redis.run("PUBLISH", "jobs:1", #"{"type":"progress","round":\#(round)}"#) }
        #expect(events.first?.topic == "job:jobs:1")
        #expect(events.first?.type == "progress")
    }

    @Test func streamsPassTheSourceContract() async throws {
        let redis = try await TestRedisServer()
        defer { redis.stop() }
        let events = try await verify(
            RedisStreamSource.self, yaml: "url: \(redis.url)\nstreams: [log]\nfield: payload\ntopic: \"{channel}\"\nblock: 100ms", on: redis
        ) { round in _ = try await redis.run("XADD", "log", "*", "payload", #"{"round":\#(round)}"#) }
        #expect(events.first?.topic == "log")
        #expect(events.first?.data == ["round": 1])
    }
}
