import Logging
import OriginPlugin
import SwitchboardConfig
import SwitchboardCore
import SwitchboardTesting
import Testing

/// The `origin` filter passes the plugin contract kit.
@Suite struct OriginContractTests {
    @Test func passesTheFilterContract() async throws {
        let config = try ConfigurationLoader.decodePluginConfig(OriginFilter.Config.self, yaml: #"allow: ["https://*.example.com"]"#, plugin: "origin")
        let filter = try await OriginFilter.build(config: config, context: FilterContext(endpointPath: "/ws", logger: Logger(label: "test")))
        try await FilterContract(
            filter: filter,
            admitted: UpgradeRequest(path: "/ws", query: [], headers: [("Origin", "https://a.example.com")], remoteAddress: "127.0.0.1"),
            denied: UpgradeRequest(path: "/ws", query: [], headers: [("Origin", "https://evil.test")], remoteAddress: "127.0.0.1"),
            deniedStatus: 403
        ).verify()
    }
}
