import Foundation
import SwitchboardCore
import SwitchboardTesting
import Testing

/// configs/helios-cluster.yaml plays seed 002's connection flow: token by query or header,
/// admin role required, status immediately on connect, every event type subscribed by
/// default, per-type opt-out.
@Suite struct HeliosClusterTests {
    static let secret = "helios-jwt-secret-0123456789abcdef0123"
    static let eventsKey = "helios-events-key-0123456789abcdef"

    static func token(roles: [String], exp: Int = TestTokens.now + 300) -> String {
        let roleList = roles.map { "\"\($0)\"" }.joined(separator: ",")
        return TestTokens.hs256(#"{"iss":"helios","sub":"ops","roles":[\#(roleList)],"exp":\#(exp)}"#, secret: secret)
    }

    @Test func playsTheSeedsConnectionFlow() async throws {
        // Helios's status API: another gateway's /healthz answers {"status":"ok"}.
        let helios = try await TestGateway.start("endpoints:\n  - path: /unused\n")
        let yaml = try String(contentsOf: CommandLineTests.repository.appendingPathComponent("configs/helios-cluster.yaml"), encoding: .utf8)
        let gateway = try await TestGateway.start(yaml, environment: [
            "HELIOS_STATUS_URL": "http://127.0.0.1:\(helios.port)/healthz",
            "HELIOS_EVENTS_KEY": Self.eventsKey,
            "HELIOS_JWT_SECRET": Self.secret,
        ])
        // The first status poll happens at start; wait until it has been published.
        for _ in 0..<100 {
            if try await gateway.get("/stats").body["events_in"]?.intValue ?? 0 > 0 { break }
            try await Task.sleep(for: .milliseconds(20))
        }

        // 1. Gateway validates the token and checks the admin role.
        await #expect(throws: TestWebSocketClient.HandshakeRefused.self) {
            _ = try await TestWebSocketClient.connect(port: gateway.port, path: "/ws/cluster")
        }
        do {
            _ = try await TestWebSocketClient.connect(port: gateway.port, path: "/ws/cluster?token=\(Self.token(roles: ["viewer"]))")
            Issue.record("a viewer token was admitted")
        } catch let refused as TestWebSocketClient.HandshakeRefused {
            #expect(refused.status == 403)
        }

        // 2. Query token (browser style) and header token; status arrives immediately,
        // long before the next 5 s poll.
        let started = ContinuousClock.now
        let byQuery = try await TestWebSocketClient.connect(port: gateway.port, path: "/ws/cluster?token=\(Self.token(roles: ["admin"]))")
        let byHeader = try await TestWebSocketClient.connect(
            port: gateway.port, path: "/ws/cluster", headers: [("Authorization", "Bearer \(Self.token(roles: ["viewer", "admin"]))")]
        )
        for client in [byQuery, byHeader] {
            let first = try await client.receiveText(timeout: .seconds(2)).json
            #expect(first["type"] == "status")
            #expect(first["data"] == ["status": "ok"])
        }
        #expect(ContinuousClock.now - started < .seconds(2))

        // 3. Real-time events of every type reach everyone by default.
        let peer = #"{"topic":"peer_change","type":"peer_change","data":{"peer_id":"n3","action":"added"}}"#
        #expect(try await gateway.post("/internal/cluster-events", body: peer, key: Self.eventsKey).status == 202)
        for client in [byQuery, byHeader] {
            let event = try await client.receiveText().json
            #expect(event["type"] == "peer_change")
            #expect(event["data"] == ["peer_id": "n3", "action": "added"])
        }

        // 4. UpdateSubscription: one client turns latency off.
        try await byQuery.sendText(#"{"type":"unsubscribe","data":"latency"}"#)
        #expect(try await byQuery.receiveText().json["type"] == "unsubscribed")
        let latency = #"[{"topic":"latency","type":"latency","data":{"p99_ms":4}},{"topic":"state_change","type":"state_change","data":{"state":"leader"}}]"#
        #expect(try await gateway.post("/internal/cluster-events", body: latency, key: Self.eventsKey).status == 202)
        #expect(try await byHeader.receiveText().json["type"] == "latency")
        #expect(try await byHeader.receiveText().json["type"] == "state_change")
        #expect(try await byQuery.receiveText().json["type"] == "state_change")

        // 5. The seed's other events cannot be injected without the key.
        #expect(try await gateway.post("/internal/cluster-events", body: peer, key: "wrong-key-0123456789abcdef").status == 401)

        let stats = try await gateway.get("/stats").body
        let filters = stats["connections"]?["per_endpoint"]?["/ws/cluster"]?["filters"]?.arrayValue?.first
        #expect(filters?["denied"] == ["missing token": 1, "missing required role": 1])

        await byQuery.disconnect()
        await byHeader.disconnect()
        await gateway.stop()
        await helios.stop()
    }
}
