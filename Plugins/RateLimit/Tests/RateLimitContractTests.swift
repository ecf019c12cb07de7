import Logging
import RateLimitPlugin
import SwitchboardConfig
import SwitchboardCore
import SwitchboardTesting
import Testing

/// The `rate_limit` filter passes the plugin contract kit: the second connect from one
/// address is over a burst of one.
@Suite struct RateLimitContractTests {
    @Test func passesTheFilterContract() async throws {
        let config = try ConfigurationLoader.decodePluginConfig(
            RateLimitFilter.Config.self, yaml: "connect_rate: 0.01\nconnect_burst: 1", plugin: "rate_limit"
        )
        let filter = try await RateLimitFilter.build(config: config, context: FilterContext(endpointPath: "/ws", logger: Logger(label: "test")))
        let request = UpgradeRequest(path: "/ws", query: [], headers: [], remoteAddress: "10.1.2.3")
        try await FilterContract(filter: filter, admitted: request, denied: request, deniedStatus: 429).verify()
    }
}
