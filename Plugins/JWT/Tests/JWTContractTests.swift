import JWTPlugin
import Logging
import SwitchboardConfig
import SwitchboardCore
import SwitchboardTesting
import Testing

/// The `jwt` filter passes the plugin contract kit (its hostile table includes malformed
/// and 64 KiB bearer tokens, and refreshes with junk credentials).
@Suite struct JWTContractTests {
    @Test func passesTheFilterContract() async throws {
        let secret = JWTFilterTests.secret
        let config = try ConfigurationLoader.decodePluginConfig(JWTFilter.Config.self, yaml: "keys: [{algorithm: HS256, secret: \(secret)}]", plugin: "jwt")
        let filter = try await JWTFilter.build(config: config, context: FilterContext(endpointPath: "/ws", logger: Logger(label: "test")))
        let good = TestTokens.hs256(#"{"sub":"alice","exp":\#(TestTokens.now + 600)}"#, secret: secret)
        let forged = TestTokens.hs256(#"{"sub":"alice","exp":\#(TestTokens.now + 600)}"#, secret: secret + "x")
        try await FilterContract(
            filter: filter,
            admitted: UpgradeRequest(path: "/ws", query: [], headers: [("Authorization", "Bearer \(good)")], remoteAddress: "127.0.0.1"),
            denied: UpgradeRequest(path: "/ws", query: [], headers: [("Authorization", "Bearer \(forged)")], remoteAddress: "127.0.0.1"),
            deniedStatus: 401
        ).verify()
    }
}
