import Foundation
import SwitchboardCore
import SwitchboardServer
import SwitchboardTesting
import Testing

/// Reloads against a real redis-server: a source whose block did not change keeps its
/// Redis connection (and its subscribers their events); a changed one reconnects.
@Suite(.serialized, .enabled(if: TestRedisServer.isAvailable, "redis-server is not installed"))
struct ReloadTests {
    static func config(_ redis: TestRedisServer, topic: String = "jobs", extra: String = "") -> String {
        """
        sources:
          - name: jobs
            plugin: redis
            url: \(redis.url)
            channels: ["jobs:updates"]
            topic: \(topic)
            type: job_update
        endpoints:
          - path: /ws
            subscribe: [jobs]
        \(extra)
        """
    }

    /// The ids of Redis clients subscribed to something.
    static func subscriberIDs(_ redis: TestRedisServer) async throws -> Set<String> {
        let list = try await redis.run("CLIENT", "LIST")
        return Set(list.split(whereSeparator: \.isNewline).filter { $0.contains("sub=1") || $0.contains("psub=1") }.compactMap { line in
            line.split(separator: " ").first { $0.hasPrefix("id=") }.map(String.init)
        })
    }

    static func waitReady(_ gateway: TestGateway) async throws {
        for _ in 0..<250 {
            if try await gateway.get("/readyz").status == 200 { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        Issue.record("the gateway did not become ready")
    }

    @Test func unchangedSourcesKeepTheirConnectionAcrossReloads() async throws {
        let redis = try await TestRedisServer()
        let gateway = try await TestGateway.start(Self.config(redis))
        try await Self.waitReady(gateway)
        let client = try await TestWebSocketClient.connect(port: gateway.port, path: "/ws")
        let before = try await Self.subscriberIDs(redis)
        let list = try await redis.run("CLIENT", "LIST")
        #expect(before.count == 1, "\(list)")

        // A new endpoint, the source untouched (only reformatted).
        let added = Self.config(redis, extra: "  - path: /more\n    subscribe: [jobs]\n").replacingOccurrences(of: "channels: [\"jobs:updates\"]", with: "channels:\n      - jobs:updates")
        let outcome = await gateway.reload(added)
        #expect(outcome.applied, "\(outcome.errors)")
        #expect(outcome.changes == ["endpoint /more added"])
        #expect(try await Self.subscriberIDs(redis) == before, "the unchanged source reconnected to Redis")
        _ = try await redis.run("PUBLISH", "jobs:updates", #"{"n":1}"#)
        #expect(try await client.receiveText().json["data"] == ["n": 1])
        let more = try await TestWebSocketClient.connect(port: gateway.port, path: "/more")
        _ = try await redis.run("PUBLISH", "jobs:updates", #"{"n":2}"#)
        #expect(try await client.receiveText().json["data"] == ["n": 2])
        #expect(try await more.receiveText().json["data"] == ["n": 2])

        // An invalid file changes nothing.
        let rejected = await gateway.reload(Self.config(redis) + "\nendpoints_typo: 1\n")
        #expect(!rejected.applied)
        #expect(rejected.errors.contains { $0.contains("unknown key 'endpoints_typo'") })
        #expect(try await gateway.get("/readyz").status == 200)

        // A changed source restarts with its new settings: a new Redis connection.
        let changed = await gateway.reload(Self.config(redis, topic: "jobs-v2", extra: "  - path: /more\n    subscribe: [jobs]\n"))
        #expect(changed.applied, "\(changed.errors)")
        #expect(changed.changes.contains("source jobs (redis) restarted with its new settings"))
        try await Self.waitReady(gateway)
        var after: Set<String> = []
        for _ in 0..<100 {
            after = try await Self.subscriberIDs(redis)
            if after.count == 1 && after != before { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(after.count == 1 && after != before)

        // A change only a restart can make is refused, by name.
        let restart = await gateway.reload(Self.config(redis) + "\nflush_interval: 10ms\n")
        #expect(!restart.applied)
        #expect(restart.errors == ["flush_interval changed: takes effect only after a restart"])
        await gateway.stop()
    }
}
