import Foundation
import SwitchboardCore
import SwitchboardTesting
import Testing

/// A gateway with the `postgres` source against a real PostgreSQL: a NOTIFY reaches a
/// WebSocket client; PostgreSQL stopped and started again shows in /readyz and delivery
/// resumes.
@Suite(.serialized) struct PostgresGatewayTests {
    @Test(.timeLimit(.minutes(2))) func notifyReachesAWebSocketClientAndSurvivesARestart() async throws {
        let postgres = try await TestPostgresServer()
        let gateway = try await TestGateway.start("""
            listener: {host: 127.0.0.1, port: 0}
            sources:
              - name: orders
                plugin: postgres
                port: \(postgres.port)
                channels: [orders_changed]
                topic: "db:{channel}"
                type: row_change
            endpoints:
              - path: /ws
                topics: ["db:*"]
                subscribe: ["db:orders_changed"]
            """)
        _ = try await RedisGatewayTests.waitFor(gateway, ready: true)
        let client = try await TestWebSocketClient.connect(port: gateway.port, path: "/ws")
        try await postgres.notify("orders_changed", #"{"id":7,"status":"paid"}"#)
        let event = try await client.receiveText().json
        #expect(event["type"] == "row_change" && event["topic"] == "db:orders_changed" && event["data"] == ["id": 7, "status": "paid"], "\(event)")

        postgres.stop()
        let outage = try await RedisGatewayTests.waitFor(gateway, ready: false)
        let source = outage["sources"]?.arrayValue?.first
        #expect(source?["state"] == "retrying", "\(outage)")
        let reason = source?["last_error"]?.stringValue ?? ""
        #expect(!reason.isEmpty && !reason.contains("Generic description"), "\(reason)")
        #expect(try await gateway.get("/healthz").status == 200)

        try await postgres.start()
        _ = try await RedisGatewayTests.waitFor(gateway, ready: true, within: .seconds(20))
        try await postgres.notify("orders_changed", "plain text")
        let again = try await client.receiveText().json
        #expect(again["data"] == "plain text" && again["type"] == "row_change", "\(again)")
        await client.disconnect()
        await gateway.stop()
    }
}
