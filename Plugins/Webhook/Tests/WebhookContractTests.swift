import NIOCore
import SwitchboardConfig
import SwitchboardCore
import SwitchboardTesting
import Testing
import WebhookPlugin

/// The `webhook` source passes the plugin contract kit: events posted to its route reach
/// a real kernel's subscriber.
@Suite struct WebhookContractTests {
    @Test func passesTheSourceContract() async throws {
        let key = "0123456789abcdef0123456789abcdef"
        let config = try ConfigurationLoader.decodePluginConfig(WebhookSource.Config.self, yaml: "keys: [\"\(key)\"]", plugin: "webhook")
        let events = try await SourceContract(
            build: { context in try await WebhookSource.build(config: config, context: context) },
            trigger: { round, routes in
                guard let route = routes.first else { throw ContractViolation("the webhook registered no route") }
                let request = HTTPRouteRequest(
                    headers: [("X-API-Key", key)], query: [], body: ByteBuffer(string: #"{"topic":"orders","data":{"round":\#(round)}}"#),
                    remoteAddress: "127.0.0.1"
                )
                let response = await route.handler(request)
                guard response.status == 202 else { throw ContractViolation("POST answered \(response.status): \(response.body)") }
            },
            matches: SourceContract.roundInData
        ).verify()
        #expect(events.first?.topic == "orders")
        #expect(events.first?.data == ["round": 1])
    }
}
