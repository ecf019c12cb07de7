import OriginPlugin
import SwitchboardConfig
import SwitchboardCore
import Testing
import Logging

@Suite struct OriginFilterTests {
    static let allow = #"allow: ["https://console.example.com", "https://*.example.com", "http://localhost:*", "http://127.0.0.1:8080"]"#

    func filter(_ yaml: String) async throws -> any Filter {
        let config = try ConfigurationLoader.decodePluginConfig(OriginFilter.Config.self, yaml: yaml, plugin: "origin")
        return try await OriginFilter.build(config: config, context: FilterContext(endpointPath: "/ws", logger: Logger(label: "test")))
    }

    func decide(_ filter: any Filter, origin: String?) async -> FilterDecision {
        let headers: [(name: String, value: String)] = origin.map { [("Origin", $0)] } ?? []
        return await filter.admit(UpgradeRequest(path: "/ws", query: [], headers: headers, remoteAddress: "127.0.0.1"), principal: nil)
    }

    @Test(arguments: [
        "https://console.example.com",
        "https://CONSOLE.example.com",
        "https://console.example.com:443",
        "https://a.example.com",
        "https://a.b.example.com",
        "http://localhost:3000",
        "http://localhost",
        "http://127.0.0.1:8080",
    ])
    func admits(origin: String) async throws {
        #expect(await decide(try await filter(Self.allow), origin: origin) == .admit(nil))
    }

    @Test(arguments: [
        "https://example.com.evil.io",
        "https://evilexample.com",
        "https://example.com",  // *.example.com means subdomains only
        "http://console.example.com",  // wrong scheme
        "https://console.example.com:8443",  // wrong port
        "https://console.example.com.",  // trailing dot is another name
        "http://127.0.0.1:8081",
        "http://localhost.evil.io:3000",
        "null",
        "https://user@console.example.com",
        "https://console.example.com/path",
        "javascript://console.example.com",
        "",
    ])
    func refusesLookalikesAndMalformed(origin: String) async throws {
        guard case .deny(let status, _, _) = await decide(try await filter(Self.allow), origin: origin) else {
            Issue.record("\(origin) was admitted")
            return
        }
        #expect(status == 403)
    }

    @Test func missingOriginPolicy() async throws {
        #expect(await decide(try await filter(Self.allow), origin: nil) == .deny(status: 403, reason: "missing Origin header", retryAfter: nil))
        #expect(await decide(try await filter(Self.allow + "\nmissing: allow"), origin: nil) == .admit(nil))
    }

    @Test func observeModeDeniesNothing() async throws {
        #expect(await decide(try await filter(Self.allow + "\nmode: observe"), origin: "https://evil.io") == .admit(nil))
    }

    @Test func configErrors() {
        for yaml in ["allow: []", "allow: [\"example.com\"]", "allow: [\"https://a*.example.com\"]", "allow: [\"ftp://x\"]", "allow: [\"https://x\"]\nmissing: maybe"] {
            #expect(throws: ConfigurationError.self, "\(yaml)") {
                try ConfigurationLoader.decodePluginConfig(OriginFilter.Config.self, yaml: yaml, plugin: "origin")
            }
        }
    }
}
