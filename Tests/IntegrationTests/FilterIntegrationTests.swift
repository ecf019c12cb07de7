import SwitchboardCore
import SwitchboardTesting
import Testing

/// Filters decide at the HTTP upgrade, before any WebSocket byte is sent.
@Suite struct FilterIntegrationTests {
    static let config = """
        endpoints:
          - path: /ws
            subscribe: [news]
            filters:
              - plugin: origin
                allow: ["https://*.example.com"]
          - path: /observed
            filters:
              - plugin: origin
                allow: ["https://*.example.com"]
                mode: observe
        """

    @Test func originIsCheckedBeforeTheUpgrade() async throws {
        let gateway = try await TestGateway.start(Self.config)
        for origin in ["https://example.com.evil.io", "https://evilexample.com"] {
            await #expect {
                try await TestWebSocketClient.connect(port: gateway.port, path: "/ws", headers: [("Origin", origin)])
            } throws: { error in
                guard let refused = error as? TestWebSocketClient.HandshakeRefused else { return false }
                return refused.status == 403 && refused.body.contains("origin not allowed")
            }
        }
        await #expect {
            try await TestWebSocketClient.connect(port: gateway.port, path: "/ws")
        } throws: { ($0 as? TestWebSocketClient.HandshakeRefused)?.status == 403 }

        let stats = try await gateway.get("/stats").body
        #expect(stats["connections"]?["per_endpoint"]?["/ws"]?["rejected"] == 3)
        #expect(stats["subscribers"]?["news"] == nil)

        let admitted = try await TestWebSocketClient.connect(port: gateway.port, path: "/ws", headers: [("Origin", "https://console.example.com")])
        try await admitted.sendText(#"{"type":"ping"}"#)
        #expect(try await admitted.receiveText().json["type"] == "pong")
        #expect(try await gateway.get("/stats").body["subscribers"]?["news"] == 1)

        // observe mode lets the same request through
        let observed = try await TestWebSocketClient.connect(port: gateway.port, path: "/observed", headers: [("Origin", "https://evil.io")])
        try await observed.sendText(#"{"type":"ping"}"#)
        #expect(try await observed.receiveText().json["type"] == "pong")
        await gateway.stop()
    }
}

/// API keys give connections roles; roles decide topics.
@Suite struct PermissionIntegrationTests {
    static let config = """
        endpoints:
          - path: /ws
            topics: ["*"]
            permissions:
              "*": ["public:*"]
              admin: ["*"]
              viewer: ["metrics", "topic:*"]
            filters:
              - plugin: api_key
                keys:
                  - name: admin
                    key: admin-key-0123456789abcdef
                    roles: [admin]
                  - name: viewer
                    key: viewer-key-0123456789abcdef
                    roles: [viewer]
                  - name: narrow
                    key: narrow-key-0123456789abcdef
                    roles: [viewer]
                    topics: ["metrics"]
        """

    func attempt(_ client: TestWebSocketClient, _ topic: String) async throws -> String {
        try await client.sendText(#"{"type":"subscribe","data":"\#(topic)"}"#)
        let reply = try await client.receiveText().json
        return reply["type"] == "subscribed" ? "ok" : (reply["data"]?["code"]?.stringValue ?? "?")
    }

    @Test func rolesAndKeyTopicsLimitSubscriptions() async throws {
        let gateway = try await TestGateway.start(Self.config)
        await #expect {
            try await TestWebSocketClient.connect(port: gateway.port, path: "/ws")
        } throws: { ($0 as? TestWebSocketClient.HandshakeRefused)?.status == 401 }
        await #expect {
            try await TestWebSocketClient.connect(port: gateway.port, path: "/ws", headers: [("X-API-Key", "wrong-key-0123456789abcdef")])
        } throws: { ($0 as? TestWebSocketClient.HandshakeRefused)?.status == 401 }

        let admin = try await TestWebSocketClient.connect(port: gateway.port, path: "/ws", headers: [("X-API-Key", "admin-key-0123456789abcdef")])
        #expect(try await attempt(admin, "cluster:status") == "ok")
        let viewer = try await TestWebSocketClient.connect(port: gateway.port, path: "/ws", headers: [("Authorization", "Bearer viewer-key-0123456789abcdef")])
        #expect(try await attempt(viewer, "cluster:status") == "forbidden")
        #expect(try await attempt(viewer, "cluster:*") == "forbidden")
        #expect(try await attempt(viewer, "*") == "forbidden")
        #expect(try await attempt(viewer, "topic:orders") == "ok")
        #expect(try await attempt(viewer, "public:news") == "ok")
        let narrow = try await TestWebSocketClient.connect(port: gateway.port, path: "/ws", headers: [("X-API-Key", "narrow-key-0123456789abcdef")])
        #expect(try await attempt(narrow, "topic:orders") == "forbidden")
        #expect(try await attempt(narrow, "metrics") == "ok")

        let subscribers = try await gateway.get("/stats").body["subscribers"]
        #expect(subscribers?["cluster:status"] == 1)
        #expect(subscribers?["cluster:*"] == nil)
        await gateway.stop()
    }
}

/// Rate limits over real sockets.
@Suite struct RateLimitIntegrationTests {
    static let config = """
        endpoints:
          - path: /attempts
            filters:
              - plugin: rate_limit
                connect_rate: 0.05
                connect_burst: 3
          - path: /concurrent
            filters:
              - plugin: rate_limit
                max_connections_per_ip: 2
          - path: /full
            filters:
              - plugin: rate_limit
                max_connections: 1
          - path: /messages
            filters:
              - plugin: rate_limit
                message_rate: 1
                message_burst: 3
                max_violations: 3
        """

    func refusal(_ gateway: TestGateway, _ path: String) async -> TestWebSocketClient.HandshakeRefused? {
        do {
            _ = try await TestWebSocketClient.connect(port: gateway.port, path: path)
            return nil
        } catch {
            return error as? TestWebSocketClient.HandshakeRefused
        }
    }

    @Test func floodsAreRefusedWithTheRightStatus() async throws {
        let gateway = try await TestGateway.start(Self.config)
        var open: [TestWebSocketClient] = []
        for _ in 0..<3 { open.append(try await TestWebSocketClient.connect(port: gateway.port, path: "/attempts")) }
        let flooded = await refusal(gateway, "/attempts")
        #expect(flooded?.status == 429)
        #expect(flooded?.headers.first { $0.0 == "retry-after" }.map { Int($0.1) ?? 0 } ?? 0 >= 1)

        for _ in 0..<2 { open.append(try await TestWebSocketClient.connect(port: gateway.port, path: "/concurrent")) }
        #expect(await refusal(gateway, "/concurrent")?.status == 429)
        await open.removeLast().disconnect()
        // The slot comes back once the server notices the close.
        var reopened: TestWebSocketClient?
        for _ in 0..<50 where reopened == nil {
            try await Task.sleep(for: .milliseconds(20))
            reopened = try? await TestWebSocketClient.connect(port: gateway.port, path: "/concurrent")
        }
        #expect(reopened != nil)

        open.append(try await TestWebSocketClient.connect(port: gateway.port, path: "/full"))
        let full = await refusal(gateway, "/full")
        #expect(full?.status == 503)
        #expect(full?.headers.contains { $0.0 == "retry-after" } == true)
        await gateway.stop()
    }

    @Test func messageFloodGetsErrorsThenClose1008() async throws {
        let gateway = try await TestGateway.start(Self.config)
        let client = try await TestWebSocketClient.connect(port: gateway.port, path: "/messages")
        for _ in 0..<3 { try await client.sendText(#"{"type":"ping"}"#) }
        for _ in 0..<3 { #expect(try await client.receiveText().json["type"] == "pong") }
        for _ in 0..<2 {
            try await client.sendText(#"{"type":"ping"}"#)
            let reply = try await client.receiveText().json
            #expect(reply["data"]?["code"] == "rate_limited")
        }
        try await client.sendText(#"{"type":"ping"}"#)
        let close = try await client.receiveClose()
        #expect(close.closeCode == 1008)
        #expect(close.closeReason == "message rate exceeded")
        await gateway.stop()
    }
}
