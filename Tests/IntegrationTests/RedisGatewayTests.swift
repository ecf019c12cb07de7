import Foundation
import SwitchboardCore
import SwitchboardTesting
import Testing

/// Gateways with Redis sources against a real redis-server: the Botrix config byte for
/// byte, Redis killed and restarted mid-stream, Redis down at start.
@Suite(.serialized, .enabled(if: TestRedisServer.isAvailable, "redis-server is not installed"))
struct RedisGatewayTests {
    static func botrix(_ redis: TestRedisServer) async throws -> TestGateway {
        let yaml = try String(contentsOf: CommandLineTests.repository.appendingPathComponent("configs/botrix-jobs.yaml"), encoding: .utf8)
        return try await TestGateway.start(yaml, environment: ["REDIS_URL": redis.url])
    }

    static func waitFor(_ gateway: TestGateway, ready: Bool, within limit: Duration = .seconds(10)) async throws -> JSONValue {
        let deadline = ContinuousClock.now + limit
        while true {
            let readiness = try await gateway.get("/readyz")
            if (readiness.status == 200) == ready || ContinuousClock.now > deadline { return readiness.body }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    @Test func botrixJobUpdatesReachTheBrowserByteForByte() async throws {
        let redis = try await TestRedisServer()
        let gateway = try await Self.botrix(redis)
        _ = try await Self.waitFor(gateway, ready: true)
        let browser = try await TestWebSocketClient.connect(port: gateway.port, path: "/ws")
        // What the Python worker sends: json.dumps({...}) with its default separators.
        _ = try await redis.run("PUBLISH", "botrix:jobs:updates", #"{"job_id": "5f0c", "status": "completed", "data": {"account": "acme", "items": 3}}"#)
        #expect(try await browser.receiveText() == #"{"type":"job_update","job_id":"5f0c","status":"completed","data":{"account":"acme","items":3}}"#)
        _ = try await redis.run("PUBLISH", "botrix:jobs:updates", #"{"job_id":"test","status":"completed"}"#)
        #expect(try await browser.receiveText() == #"{"type":"job_update","job_id":"test","status":"completed"}"#)
        #expect(try await gateway.get("/ws/stats").body["connected_clients"] == 1)
        await browser.disconnect()
        await gateway.stop()
    }

    @Test func redisRestartMidStreamResumesWithinFiveSeconds() async throws {
        let redis = try await TestRedisServer()
        let gateway = try await Self.botrix(redis)
        _ = try await Self.waitFor(gateway, ready: true)
        let browser = try await TestWebSocketClient.connect(port: gateway.port, path: "/ws")
        for n in 0..<5 { _ = try await redis.run("PUBLISH", "botrix:jobs:updates", #"{"job_id":"\#(n)"}"#) }
        for _ in 0..<5 { _ = try await browser.receiveText() }

        redis.stop()
        let outage = try await Self.waitFor(gateway, ready: false)
        let source = outage["sources"]?.arrayValue?.first
        #expect(source?["state"] == "retrying")
        #expect(source?["last_error"]?.stringValue?.isEmpty == false)
        let metrics = try await gateway.text("/metrics")
        #expect(metrics.contains(#"switchboard_source_up{source="botrix-jobs",plugin="redis",state="retrying"} 0"#), "\(metrics)")
        #expect(metrics.contains("switchboard_ready 0"))
        // Everything else keeps serving.
        #expect(try await gateway.get("/healthz").status == 200)
        let other = try await TestWebSocketClient.connect(port: gateway.port, path: "/ws")
        try await other.sendText(#"{"type":"ping"}"#)
        #expect(try await other.receiveText().json["type"] == "pong")

        try await Task.sleep(for: .seconds(1))
        try await redis.start()
        let restarted = ContinuousClock.now
        // Publish until one arrives: subscribers only get what is published after resubscribing.
        var received: String?
        while received == nil && ContinuousClock.now - restarted < .seconds(5) {
            _ = try await redis.run("PUBLISH", "botrix:jobs:updates", #"{"job_id":"after"}"#)
            received = try? await browser.receiveText(timeout: .milliseconds(100))
        }
        #expect(received == #"{"type":"job_update","job_id":"after"}"#)
        #expect(ContinuousClock.now - restarted < .seconds(5))
        _ = try await Self.waitFor(gateway, ready: true)
        let stats = try await gateway.get("/stats").body
        #expect(stats["sources"]?.arrayValue?.first?["restarts"]?.intValue ?? 0 >= 1)
        await browser.disconnect()
        await other.disconnect()
        await gateway.stop()
    }

    @Test func redisDownAtStartThenUp() async throws {
        let redis = try await TestRedisServer()
        redis.stop()
        let gateway = try await Self.botrix(redis)
        let body = try await Self.waitFor(gateway, ready: false, within: .seconds(2))
        #expect(body["status"] == "degraded")
        #expect(try await gateway.get("/healthz").status == 200)
        let browser = try await TestWebSocketClient.connect(port: gateway.port, path: "/ws")
        try await redis.start()
        _ = try await Self.waitFor(gateway, ready: true)
        _ = try await redis.run("PUBLISH", "botrix:jobs:updates", #"{"job_id":"late"}"#)
        #expect(try await browser.receiveText() == #"{"type":"job_update","job_id":"late"}"#)
        await browser.disconnect()
        await gateway.stop()
    }
}
