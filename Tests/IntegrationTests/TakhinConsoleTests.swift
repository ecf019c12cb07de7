import Foundation
import SwitchboardCore
import SwitchboardTesting
import Testing

/// configs/takhin-console.yaml plays seed 001 ("WebSocket Real-Time Updates API") message
/// by message: the envelopes are the seed's exactly (`type`, `timestamp`, `data`; no
/// `topic`), ping gets pong, 512 KB messages, the optional Bearer API key and the origin
/// check.
@Suite struct TakhinConsoleTests {
    static let eventsKey = "takhin-events-key-0123456789abcdef"
    static let apiKey = "takhin-api-key-0123456789abcdef"

    static func yaml() throws -> String {
        try String(contentsOf: CommandLineTests.repository.appendingPathComponent("configs/takhin-console.yaml"), encoding: .utf8)
    }

    /// The keys of a JSON object, in order.
    static func keys(_ value: JSONValue) -> [String] {
        value.objectValue?.entries.map(\.key) ?? []
    }

    /// A message as the seed documents it: exactly these fields, a current timestamp.
    static func expectSeedEnvelope(_ message: JSONValue, type: String, data: JSONValue?, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(keys(message) == (data == nil ? ["type", "timestamp"] : ["type", "timestamp", "data"]), "\(message)", sourceLocation: sourceLocation)
        #expect(message["type"] == .string(type), sourceLocation: sourceLocation)
        let now = Int64(Date().timeIntervalSince1970)
        #expect(abs((message["timestamp"]?.intValue ?? 0) - now) <= 5, sourceLocation: sourceLocation)
        if let data { #expect(message["data"] == data, sourceLocation: sourceLocation) }
    }

    @Test func playsTheSeedsMessages() async throws {
        // Takhin's metrics API: another gateway's /healthz stands in for it.
        let takhin = try await TestGateway.start("endpoints:\n  - path: /unused\n")
        let gateway = try await TestGateway.start(try Self.yaml(), environment: [
            "TAKHIN_METRICS_URL": "http://127.0.0.1:\(takhin.port)/healthz",
            "TAKHIN_EVENTS_KEY": Self.eventsKey,
        ])
        let client = try await TestWebSocketClient.connect(port: gateway.port, path: "/api/monitoring/ws")

        // 1. Metrics every 2 s, as polled: {"type":"metrics","timestamp":…,"data":{…}}.
        let metrics = try await client.receiveText(timeout: .seconds(5)).json
        Self.expectSeedEnvelope(metrics, type: "metrics", data: ["status": "ok"])

        // 2.–4. Topic and group changes, as Takhin posts them.
        let changes: [(topic: String, type: String, data: String)] = [
            ("topic:new-topic", "topic_created", #"{"name":"new-topic","partitions":5}"#),
            ("topic:old-topic", "topic_deleted", #"{"name":"old-topic"}"#),
            ("group:consumer-group-1", "group_updated", #"{"groupId":"consumer-group-1","state":"Stable","members":3}"#),
        ]
        for change in changes {
            let body = #"{"topic":"\#(change.topic)","type":"\#(change.type)","data":\#(change.data)}"#
            #expect(try await gateway.post("/internal/events", body: body, key: Self.eventsKey).status == 202)
            var message = try await client.receiveText(timeout: .seconds(5)).json
            while message["type"] == "metrics" { message = try await client.receiveText(timeout: .seconds(5)).json }
            Self.expectSeedEnvelope(message, type: change.type, data: change.data.json)
        }

        // 5. Ping with the seed's timestamp field → pong with exactly type and timestamp.
        try await client.sendText(#"{"type":"ping","timestamp":1704225600}"#)
        var pong = try await client.receiveText(timeout: .seconds(5)).json
        while pong["type"] == "metrics" { pong = try await client.receiveText(timeout: .seconds(5)).json }
        Self.expectSeedEnvelope(pong, type: "pong", data: nil)

        // Client → server: subscribe and unsubscribe as the seed writes them.
        try await client.sendText(#"{"type":"subscribe","data":"topic:my-topic","timestamp":1704225600}"#)
        var reply = try await client.receiveText(timeout: .seconds(5)).json
        while reply["type"] == "metrics" { reply = try await client.receiveText(timeout: .seconds(5)).json }
        #expect(reply["type"] == "subscribed" && reply["data"] == "topic:my-topic")
        try await client.sendText(#"{"type":"unsubscribe","data":"topic:my-topic","timestamp":1704225600}"#)
        reply = try await client.receiveText(timeout: .seconds(5)).json
        while reply["type"] == "metrics" { reply = try await client.receiveText(timeout: .seconds(5)).json }
        #expect(reply["type"] == "unsubscribed")

        // Messages up to the hub's 512 KB are read; larger ones close with 1009.
        let padding = String(repeating: "p", count: 400 * 1024)
        try await client.sendText(#"{"type":"ping","padding":"\#(padding)"}"#)
        reply = try await client.receiveText(timeout: .seconds(5)).json
        while reply["type"] == "metrics" { reply = try await client.receiveText(timeout: .seconds(5)).json }
        #expect(reply["type"] == "pong")
        try await client.sendText(String(repeating: "x", count: 513 * 1024))
        #expect(try await client.receiveClose(timeout: .seconds(5)).closeCode == 1009)

        // The origin check: the hub's CORS origins (localhost by default); no Origin header
        // (servers, scripts) is let through.
        do {
            _ = try await TestWebSocketClient.connect(port: gateway.port, path: "/api/monitoring/ws", headers: [("Origin", "https://evil.example")])
            Issue.record("a foreign origin was admitted")
        } catch let refused as TestWebSocketClient.HandshakeRefused {
            #expect(refused.status == 403)
        }
        let browser = try await TestWebSocketClient.connect(port: gateway.port, path: "/api/monitoring/ws", headers: [("Origin", "http://localhost:3000")])
        try await browser.sendClose(code: 1000)
        await gateway.stop()
        await takhin.stop()
    }

    @Test func apiKeyWhenAuthenticationIsEnabled() async throws {
        let gateway = try await TestGateway.start(try Self.yaml(), environment: [
            "TAKHIN_METRICS_URL": "http://127.0.0.1:9/unused",
            "TAKHIN_EVENTS_KEY": Self.eventsKey,
            "TAKHIN_AUTH_ENABLED": "true",
            "TAKHIN_API_KEY": Self.apiKey,
        ])
        do {
            _ = try await TestWebSocketClient.connect(port: gateway.port, path: "/api/monitoring/ws")
            Issue.record("a client without the API key was admitted")
        } catch let refused as TestWebSocketClient.HandshakeRefused {
            #expect(refused.status == 401)
        }
        // The seed's way: `Authorization: Bearer your-api-key-here`.
        let client = try await TestWebSocketClient.connect(
            port: gateway.port, path: "/api/monitoring/ws", headers: [("Authorization", "Bearer \(Self.apiKey)")]
        )
        try await client.sendText(#"{"type":"ping"}"#)
        #expect(try await client.receiveText(timeout: .seconds(5)).json["type"] == "pong")
        try await client.sendClose(code: 1000)
        await gateway.stop()
    }
}
