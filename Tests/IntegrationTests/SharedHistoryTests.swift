import Foundation
import NIOCore
import SwitchboardCore
import SwitchboardTesting
import Testing

/// History across instances: two gateways sharing one real redis-server through `cluster:`,
/// positions numbered by Redis, a client that drops from one instance and resumes on the
/// other while events keep entering through both.
@Suite(.serialized, .enabled(if: TestRedisServer.isAvailable, "redis-server is not installed"))
struct SharedHistoryTests {
    static func yaml(_ redis: TestRedisServer) -> String {
        """
        cluster:
          redis: \(redis.url)
        sources:
          - name: publish
            plugin: webhook
            keys: ["${SWITCHBOARD_PUBLISH_KEY}"]
        endpoints:
          - path: /ws
            topics: ["feed:*"]
            history: {size: 500, ttl: 5m}
        """
    }

    static func waitUntil(_ condition: () async throws -> Bool) async throws {
        for _ in 0..<300 {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    static func busConnected(_ gateway: TestGateway) async throws -> Bool {
        let sources = try await gateway.get("/readyz").body["sources"]?.arrayValue ?? []
        return sources.contains { $0["name"]?.stringValue == "cluster-bus" && $0["state"]?.stringValue == "connected" }
    }

    /// Reads events until `count` items arrived (skipping replies), or a quiet second.
    static func items(_ client: TestWebSocketClient, count: Int) async -> [JSONValue] {
        var items: [JSONValue] = []
        while items.count < count, let text = try? await client.receiveText(timeout: .seconds(2)) {
            let message = text.json
            if message["type"] == "item" { items.append(message) }
        }
        return items
    }

    @Test func aClientDroppedFromOneInstanceResumesOnTheOther() async throws {
        let redis = try await TestRedisServer()
        let first = try await TestGateway.start(Self.yaml(redis))
        let second = try await TestGateway.start(Self.yaml(redis))
        for gateway in [first, second] { try await Self.waitUntil { try await Self.busConnected(gateway) } }

        let client = try await TestWebSocketClient.connect(port: first.port, path: "/ws")
        try await client.sendText(#"{"type":"subscribe","data":"feed:a"}"#)
        let subscribed = try await client.receiveText().json
        let epoch = subscribed["position"]?["epoch"]?.stringValue
        #expect(epoch != nil && subscribed["position"]?["offset"] == 0)

        // Events enter through both instances, alternately, the whole time.
        let total = 200
        let publisher = Task {
            for n in 0..<total {
                let gateway = n % 2 == 0 ? first : second
                _ = try await gateway.post("/api/publish", body: #"{"topic":"feed:a","type":"item","data":{"n":\#(n)}}"#)
                if n % 10 == 0 { try await Task.sleep(for: .milliseconds(5)) }
            }
        }
        let before = await Self.items(client, count: 60)
        #expect(before.count == 60)
        await client.disconnect()
        try await Task.sleep(for: .milliseconds(100))
        guard let last = before.last?["position"] else {
            Issue.record("no position on the events")
            return
        }
        #expect(last["epoch"]?.stringValue == epoch)

        var lastText = ByteBuffer()
        JSONWriter.write(last, into: &lastText)
        let resumed = try await TestWebSocketClient.connect(port: second.port, path: "/ws")
        try await resumed.sendText(#"{"type":"subscribe","data":"feed:a","since":\#(String(buffer: lastText))}"#)
        let reply = try await resumed.receiveText().json
        #expect(reply["recovered"] == true, "\(reply)")
        _ = try await publisher.value
        let after = await Self.items(resumed, count: total - before.count)
        let offsets = (before + after).compactMap { $0["position"]?["offset"]?.intValue }
        #expect(offsets == Array(1...Int64(total)), "no gap, no duplicate across the instances: \(offsets.count) events")
        let numbers = Set((before + after).compactMap { $0["data"]?["n"]?.intValue })
        #expect(numbers.count == total)

        // Both instances number the same history: a `last` on the first matches.
        let third = try await TestWebSocketClient.connect(port: first.port, path: "/ws")
        try await third.sendText(#"{"type":"subscribe","data":"feed:a","last":2}"#)
        #expect(try await third.receiveText().json["position"]?["offset"] == .int(Int64(total)))
        #expect(await Self.items(third, count: 2).compactMap { $0["position"]?["offset"]?.intValue } == [Int64(total - 1), Int64(total)])

        // An instance started after all of it has none of it in memory: the resume reads
        // Redis's stream, then continues live, without a seam.
        let late = try await TestGateway.start(Self.yaml(redis))
        try await Self.waitUntil { try await Self.busConnected(late) }
        let fromRedis = try await TestWebSocketClient.connect(port: late.port, path: "/ws")
        // Events keep entering (through the other instances) while the late one reads Redis.
        let more = 100
        let publishing = Task {
            for n in 0..<more {
                _ = try await (n % 2 == 0 ? first : second).post("/api/publish", body: #"{"topic":"feed:a","type":"item","data":{"n":\#(total + n)}}"#)
            }
        }
        try await Task.sleep(for: .milliseconds(2))
        try await fromRedis.sendText(#"{"type":"subscribe","data":"feed:a","since":\#(String(buffer: lastText))}"#)
        let fetched = try await fromRedis.receiveText().json
        #expect(fetched["recovered"] == true, "\(fetched)")
        _ = try await publishing.value
        let replayedAndLive = await Self.items(fromRedis, count: total + more - before.count)
        #expect(replayedAndLive.compactMap { $0["position"]?["offset"]?.intValue } == Array(Int64(before.count + 1)...Int64(total + more)))
        await fromRedis.disconnect()
        await late.stop()

        // Redis goes away. An instance whose memory holds the range still resumes from it;
        // one that does not (started meanwhile) says it cannot recover; live delivery goes
        // on without positions, and /readyz says why.
        redis.stop()
        try await Self.waitUntil { try await !Self.busConnected(second) }
        let fromMemory = try await TestWebSocketClient.connect(port: second.port, path: "/ws")
        try await fromMemory.sendText(#"{"type":"subscribe","data":"feed:a","since":\#(String(buffer: lastText))}"#)
        #expect(try await fromMemory.receiveText().json["recovered"] == true)
        let fresh = try await TestGateway.start(Self.yaml(redis))
        let live = try await TestWebSocketClient.connect(port: fresh.port, path: "/ws")
        try await live.sendText(#"{"type":"subscribe","data":"feed:a","since":\#(String(buffer: lastText))}"#)
        let refused = try await live.receiveText().json
        #expect(refused["recovered"] == false, "\(refused)")
        #expect(try await fresh.post("/api/publish", body: #"{"topic":"feed:a","type":"item","data":{"n":-1}}"#).status == 202)
        let during = await Self.items(live, count: 1)
        #expect(during.first?["data"]?["n"] == -1 && during.first?["position"] == nil, "\(during)")
        #expect(try await fresh.get("/readyz").status == 503)

        for each in [resumed, third, fromMemory, live] { await each.disconnect() }
        await first.stop()
        await second.stop()
        await fresh.stop()
    }
}
