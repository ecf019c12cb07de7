import SwitchboardConfig
import SwitchboardCore
import SwitchboardTesting
import Testing
import TimerPlugin

/// The `timer` source passes the plugin contract kit (it has no backend to lose).
@Suite struct TimerContractTests {
    @Test func passesTheSourceContract() async throws {
        let config = try ConfigurationLoader.decodePluginConfig(TimerSource.Config.self, yaml: "every: 50ms\ntopic: ticks\ndata: {n: 1}", plugin: "timer")
        let events = try await SourceContract(
            build: { context in try await TimerSource.build(config: config, context: context) },
            trigger: { _, _ in }
        ).verify()
        #expect(events.allSatisfy { $0.topic == "ticks" && $0.data == ["n": 1] })
    }
}
