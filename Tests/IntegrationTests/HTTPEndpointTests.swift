import SwitchboardConfig
import SwitchboardCore
import SwitchboardTesting
import Testing

@Suite struct HTTPEndpointTests {
    static let config = """
        sources:
          - name: publish
            plugin: webhook
            keys: ["${SWITCHBOARD_PUBLISH_KEY}"]
            max_body: 1KiB
        endpoints:
          - path: /ws
          - path: /other
        """

    @Test func healthReadinessAndStats() async throws {
        let gateway = try await TestGateway.start(Self.config)
        #expect(try await gateway.get("/healthz").status == 200)
        let ready = try await gateway.get("/readyz")
        #expect(ready.status == 200)
        #expect(ready.body["status"] == "ready")
        #expect(ready.body["sources"]?.arrayValue?.first?["state"] == "connected")

        let client = try await TestWebSocketClient.connect(port: gateway.port, path: "/ws")
        try await client.sendText(#"{"type":"subscribe","data":"news"}"#)
        _ = try await client.receiveText()
        _ = try await gateway.post("/api/publish", body: #"{"topic":"news","type":"x"}"#)
        _ = try await client.receiveText()

        let stats = try await gateway.get("/stats").body
        #expect(stats["connections"]?["total"] == 1)
        #expect(stats["connections"]?["per_endpoint"]?["/ws"]?["connections"] == 1)
        #expect(stats["connections"]?["per_endpoint"]?["/other"]?["connections"] == 0)
        #expect(stats["subscribers"]?["news"] == 1)
        #expect(stats["events_in"] == 1)
        #expect(stats["deliveries_out"] == 1)
        #expect(stats["encodes"] == 1)

        await client.disconnect()
        var open: Int64? = 1
        for _ in 0..<50 where open != 0 {
            try await Task.sleep(for: .milliseconds(20))
            open = try await gateway.get("/stats").body["connections"]?["total"]?.intValue
        }
        #expect(open == 0)
        #expect(try await gateway.get("/stats").body["subscribers"]?["news"] == nil)
        await gateway.stop()
    }

    @Test func webhookErrors() async throws {
        let gateway = try await TestGateway.start(Self.config)
        let unauthorized = try await gateway.post("/api/publish", body: #"{"topic":"x"}"#, key: nil)
        #expect(unauthorized.status == 401)
        let wrongKey = try await gateway.post("/api/publish", body: #"{"topic":"x"}"#, key: "not-the-key-at-all-0000")
        #expect(wrongKey.status == 401)
        #expect(!(JSONWriter.string(wrongKey.body).contains(TestGateway.publishKey)))

        let badJSON = try await gateway.post("/api/publish", body: "{\"topic\": x}")
        #expect(badJSON.status == 400)
        #expect(badJSON.body["error"]?["line"] == 1)
        #expect(badJSON.body["error"]?["column"] == 11)

        let tooLarge = try await gateway.post("/api/publish", body: #"{"topic":"x","data":""# + String(repeating: "y", count: 2000) + #""}"#)
        #expect(tooLarge.status == 413)
        #expect(try await gateway.get("/stats").body["events_in"] == 0)
        await gateway.stop()
    }
}

/// The built-in default configuration, as a new user runs it.
@Suite struct DefaultConfigurationTests {
    @Test func demoDeliversMetricsEveryTwoSecondsAndWebhookEvents() async throws {
        let gateway = try await TestGateway.start(DefaultConfiguration.yaml)
        let client = try await TestWebSocketClient.connect(port: gateway.port, path: "/ws")
        // The timer fires at start-up and every 2 s; the client starts subscribed to metrics.
        let first = try await client.receiveText(timeout: .seconds(3)).json
        #expect(first["type"] == "metrics")
        #expect(first["data"]?["connections"]?["total"]?.intValue != nil)
        let started = ContinuousClock.now
        let second = try await client.receiveText(timeout: .seconds(4)).json
        #expect(second["type"] == "metrics")
        #expect(ContinuousClock.now - started > .milliseconds(1000))

        try await client.sendText(#"{"type":"subscribe","data":"demo"}"#)
        var reply = try await client.receiveText().json
        while reply["type"] == "metrics" { reply = try await client.receiveText().json }
        #expect(reply["type"] == "subscribed")
        let posted = try await gateway.post("/api/publish", body: #"{"topic":"demo","type":"hello","data":{"text":"hi"}}"#)
        #expect(posted.status == 202)
        var event = try await client.receiveText().json
        while event["type"] == "metrics" { event = try await client.receiveText().json }
        #expect(event["type"] == "hello")
        #expect(event["data"] == ["text": "hi"])
        await gateway.stop()
    }
}
