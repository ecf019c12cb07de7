import Foundation
import SwitchboardConfig
import SwitchboardCore
import Testing
import SwitchboardPlugins

/// Every file under configs/ must load, so examples never rot.
@Suite struct ShippedConfigTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let configs = repository.appendingPathComponent("configs")

    static var files: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: configs.path)) ?? [])
            .filter { $0.hasSuffix(".yaml") }
            .sorted()
    }

    @Test func thereAreConfigsToCheck() {
        #expect(Self.files.contains("default.yaml"))
    }

    /// Variables the example configs require (secrets have no defaults on purpose).
    static let exampleEnvironment = [
        "TAKHIN_EVENTS_KEY": "example-key-0123456789abcdef",
        "HELIOS_EVENTS_KEY": "example-key-0123456789abcdef",
        "HELIOS_JWT_SECRET": "example-secret-0123456789abcdef0123456789",
    ]

    @Test(arguments: files)
    func loads(file: String) throws {
        let loader = ConfigurationLoader(registry: BuiltinPlugins.registry, environment: Self.exampleEnvironment)
        let configuration = try loader.load(contentsOf: Self.configs.appendingPathComponent(file).path)
        #expect(!configuration.endpoints.isEmpty)
    }

    @Test func builtInDefaultMatchesTheShippedFile() throws {
        let shipped = try String(contentsOf: Self.configs.appendingPathComponent("default.yaml"), encoding: .utf8)
        #expect(shipped == DefaultConfiguration.yaml)
    }

    @Test func takhinConsoleMatchesTheSeed() throws {
        let loader = ConfigurationLoader(registry: BuiltinPlugins.registry, environment: Self.exampleEnvironment)
        let configuration = try loader.load(contentsOf: Self.configs.appendingPathComponent("takhin-console.yaml").path)
        let endpoint = try #require(configuration.endpoints.first)
        #expect(endpoint.path == "/api/monitoring/ws")
        #expect(endpoint.subscribe.map(\.text) == ["metrics", "topic:*", "group:*"])
        #expect(endpoint.heartbeat.interval == .seconds(54))
        #expect(endpoint.heartbeat.interval.nanoseconds + endpoint.heartbeat.timeout.nanoseconds == ConfigDuration.seconds(60).nanoseconds)
    }

    @Test func heliosClusterMatchesTheSeed() throws {
        let loader = ConfigurationLoader(registry: BuiltinPlugins.registry, environment: Self.exampleEnvironment)
        let configuration = try loader.load(contentsOf: Self.configs.appendingPathComponent("helios-cluster.yaml").path)
        let endpoint = try #require(configuration.endpoints.first)
        #expect(endpoint.path == "/ws/cluster")
        let types = ["status", "status_update", "state_change", "peer_change", "latency", "uptime", "snapshot", "custom_metrics", "error"]
        #expect(endpoint.subscribe.map(\.text) == types)
        #expect(endpoint.heartbeat.interval == .seconds(30))
        #expect(endpoint.heartbeat.interval.nanoseconds + endpoint.heartbeat.timeout.nanoseconds == ConfigDuration.seconds(60).nanoseconds)
        #expect(endpoint.filters.map(\.plugin) == ["jwt"])
        let status = try #require(configuration.sources.first { $0.name == "helios-status" })
        #expect(status.retain)
    }

    @Test func defaultConfigurationIsTheDemo() throws {
        let loader = ConfigurationLoader(registry: BuiltinPlugins.registry, environment: [:])
        let configuration = try loader.load(yaml: DefaultConfiguration.yaml, file: DefaultConfiguration.fileName)
        #expect(configuration.sources.map(\.plugin) == ["timer", "webhook"])
        #expect(configuration.endpoints.map(\.path) == ["/ws"])
        #expect(configuration.endpoints.first?.subscribe.map(\.text) == ["metrics"])
    }
}

/// The committed plugin reference must match what the specs generate.
@Suite struct PluginReferenceTests {
    @Test func docsAreUpToDate() throws {
        let file = ShippedConfigTests.repository.appendingPathComponent("Docs/plugins-reference.md")
        let committed = try String(contentsOf: file, encoding: .utf8)
        let generated = PluginDocumentation.markdown(for: BuiltinPlugins.registry)
        #expect(committed == generated, "regenerate with: swift run switchboard plugins > Docs/plugins-reference.md")
    }
}
