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
