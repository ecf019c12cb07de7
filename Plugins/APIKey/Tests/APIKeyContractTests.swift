import APIKeyPlugin
import Logging
import SwitchboardConfig
import SwitchboardCore
import SwitchboardTesting
import Testing

/// The `api_key` filter passes the plugin contract kit.
@Suite struct APIKeyContractTests {
    @Test func passesTheFilterContract() async throws {
        let config = try ConfigurationLoader.decodePluginConfig(
            APIKeyFilter.Config.self, yaml: "keys:\n  - name: viewer\n    key: \(APIKeyFilterTests.viewerKey)", plugin: "api_key"
        )
        let filter = try await APIKeyFilter.build(config: config, context: FilterContext(endpointPath: "/ws", logger: Logger(label: "test")))
        try await FilterContract(
            filter: filter,
            admitted: UpgradeRequest(path: "/ws", query: [], headers: [("X-API-Key", APIKeyFilterTests.viewerKey)], remoteAddress: "127.0.0.1"),
            denied: UpgradeRequest(path: "/ws", query: [], headers: [("X-API-Key", "wrong-key-0123456789abcdef")], remoteAddress: "127.0.0.1"),
            deniedStatus: 401
        ).verify()
    }
}
