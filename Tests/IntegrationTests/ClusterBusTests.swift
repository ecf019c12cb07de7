import Foundation
import SwitchboardCore
import SwitchboardTesting
import Testing

/// Two gateway instances sharing one real redis-server through `cluster:`.
@Suite(.serialized, .enabled(if: TestRedisServer.isAvailable, "redis-server is not installed"))
struct ClusterBusTests {
    static func yaml(_ redis: TestRedisServer) -> String {
        """
        cluster:
          redis: \(redis.url)
          lease_ttl: 1s
        sources:
          - name: publish
            plugin: webhook
            keys: ["${SWITCHBOARD_PUBLISH_KEY}"]
          - name: poller
            plugin: timer
            every: 100ms
            topic: ticks
            type: tick
            data: {n: 1}
            run: once
          - name: jobs
            plugin: redis
            url: \(redis.url)
            channels: [jobs]
            topic: news
        endpoints:
          - path: /news
            subscribe: [news]
          - path: /ticks
            subscribe: [ticks]
        """
    }

    static func sourceStates(_ gateway: TestGateway) async throws -> [String: String] {
        var states: [String: String] = [:]
        for source in try await gateway.get("/readyz").body["sources"]?.arrayValue ?? [] {
            if let name = source["name"]?.stringValue, let state = source["state"]?.stringValue { states[name] = state }
        }
        return states
    }

    static func waitUntil(_ condition: () async throws -> Bool) async throws {
        for _ in 0..<300 {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    @Test func eventsReachEveryInstanceOnceAndOnceSourcesRunOnOneInstance() async throws {
        let redis = try await TestRedisServer()
        let first = try await TestGateway.start(Self.yaml(redis))
        let second = try await TestGateway.start(Self.yaml(redis))
        for gateway in [first, second] {
            try await Self.waitUntil {
                let states = try await Self.sourceStates(gateway)
                return states["cluster-bus"] == "connected" && states["jobs"] == "connected"
            }
        }
        let onFirst = try await TestWebSocketClient.connect(port: first.port, path: "/news")
        let onSecond = try await TestWebSocketClient.connect(port: second.port, path: "/news")

        // 20 events enter through each instance's webhook.
        for n in 0..<20 {
            for (gateway, origin) in [(first, "first"), (second, "second")] {
                let body = #"{"topic":"news","type":"item","data":{"origin":"\#(origin)","n":\#(n)}}"#
                #expect(try await gateway.post("/api/publish", body: body).status == 202)
            }
        }
        // And one through Redis pub/sub, which both instances receive by themselves.
        _ = try await redis.run("PUBLISH", "jobs", #"{"origin":"redis","n":0}"#)
        for client in [onFirst, onSecond] {
            var seen: [JSONValue] = []
            while let text = try? await client.receiveText(timeout: .milliseconds(500)) { seen.append(text.json["data"] ?? .null) }
            #expect(seen.count == 41, "every event once: \(seen.count)")
            #expect(Set(seen.map { "\($0)" }).count == 41, "no duplicates")
        }

        // The `run: once` timer runs on exactly one instance …
        try await Self.waitUntil {
            let states = [try await Self.sourceStates(first)["poller"], try await Self.sourceStates(second)["poller"]]
            return states.compactMap { $0 }.sorted() == ["connected", "standby"]
        }
        let firstRuns = try await Self.sourceStates(first)["poller"] == "connected"
        let ticks = try await TestWebSocketClient.connect(port: (firstRuns ? second : first).port, path: "/ticks")
        var count = 0
        let window = ContinuousClock.now + .seconds(1)
        while ContinuousClock.now < window { if (try? await ticks.receiveText(timeout: .milliseconds(200))) != nil { count += 1 } }
        #expect((5...14).contains(count), "about 10 ticks a second from one runner, got \(count)")

        // … and moves when that instance goes away.
        let (leaving, staying) = firstRuns ? (first, second) : (second, first)
        await ticks.disconnect()
        await leaving.stop()
        try await Self.waitUntil { try await Self.sourceStates(staying)["poller"] == "connected" }
        #expect(try await Self.sourceStates(staying)["poller"] == "connected")
        let stats = try await staying.get("/stats").body
        #expect(stats["cluster"]?["received"]?.intValue ?? 0 >= 20)
        #expect(stats["cluster"]?["sent"]?.intValue ?? 0 >= 20)

        await onFirst.disconnect()
        await onSecond.disconnect()
        await staying.stop()
    }
}
