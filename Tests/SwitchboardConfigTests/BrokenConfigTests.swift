import Foundation
import SwitchboardConfig
import SwitchboardCore
import Testing
import SwitchboardPlugins

/// Golden tests: each broken configuration must produce exactly these diagnostics, with
/// file, line, column, key path, message and hint.
@Suite struct BrokenConfigTests {
    static let loader = ConfigurationLoader(registry: BuiltinPlugins.registry, environment: ["KEY": "0123456789abcdef0123"])

    static func diagnostics(_ yaml: String) -> [String] {
        do {
            _ = try loader.load(yaml: yaml, file: "test.yaml")
            return []
        } catch {
            return error.diagnostics.map(\.description)
        }
    }

    struct Case: CustomTestStringConvertible, Sendable {
        let name: String
        let yaml: String
        let expected: [String]
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(
            name: "misspelt top-level key",
            yaml: """
                listener:
                  port: 8080
                endpoint:
                  - path: /ws
                """,
            expected: [
                "test.yaml:1:1: the configuration defines neither sources nor endpoints (see configs/default.yaml for a starting point)",
                "test.yaml:3:1: unknown key 'endpoint' (did you mean 'endpoints'?)",
            ]
        ),
        Case(
            name: "misspelt plugin key reports the missing one too",
            yaml: """
                sources:
                  - plugin: timer
                    evry: 2s
                    topic: metrics
                """,
            expected: [
                "test.yaml:2:5: sources[0] (timer): missing required key 'every'",
                "test.yaml:3:5: sources[0] (timer): unknown key 'evry' (did you mean 'every'?)",
            ]
        ),
        Case(
            name: "bad duration",
            yaml: """
                sources:
                  - plugin: timer
                    every: fast
                    topic: metrics
                """,
            expected: [
                "test.yaml:3:12: sources[0].every (timer): expected a duration such as 500ms, 2s, 1m or 1h, got 'fast' (units: ms, s, m, h; a plain number means seconds)"
            ]
        ),
        Case(
            name: "unknown source plugin",
            yaml: """
                sources:
                  - name: ticker
                    plugin: timr
                    every: 2s
                """,
            expected: [
                "test.yaml:3:13: sources[0].plugin: unknown source plugin 'timr' (did you mean 'timer'? available: \(BuiltinPlugins.registry.sources.keys.sorted().joined(separator: ", ")))"
            ]
        ),
        Case(
            name: "short jwt secret and a bad cluster URL",
            yaml: """
                cluster:
                  redis: http://cache:6379
                endpoints:
                  - path: /ws
                    filters:
                      - plugin: jwt
                        keys: [{algorithm: HS256, secret: too-short}]
                """,
            expected: [
                "test.yaml:2:3: cluster: Redis URL scheme must be redis or rediss, not 'http'",
                "test.yaml:7:16: endpoints[0].filters[0].keys[0] (jwt): HS256 key: an HS256 secret must be at least 32 bytes (it has 9) (generate one with: openssl rand -base64 32)",
            ]
        ),
        Case(
            name: "flush interval too long or not a duration",
            yaml: """
                flush_interval: 1s
                endpoints:
                  - path: /ws
                """,
            expected: [
                "test.yaml:1:17: flush_interval: flush_interval 1s is too long (it delays every frame under load; use 0s–100ms (default 2ms))",
            ]
        ),
        Case(
            name: "port out of range and not a number",
            yaml: """
                listener:
                  host: 127.0.0.1
                  port: 70000
                endpoints:
                  - path: /ws
                    max_subscriptions: lots
                """,
            expected: [
                "test.yaml:3:9: listener.port: port 70000 is out of range (use 1–65535, or 0 for any free port)",
                "test.yaml:6:24: endpoints[0].max_subscriptions: expected an integer, got 'lots'",
            ]
        ),
        Case(
            name: "unset environment variable",
            yaml: """
                listener:
                  host: ${NOPE_HOST}
                  port: ${NOPE_PORT:-9000}
                endpoints:
                  - path: /ws
                """,
            expected: [
                "test.yaml:2:9: listener.host: environment variable 'NOPE_HOST' is not set (set it, or give a default with ${NOPE_HOST:-value})",
            ]
        ),
        Case(
            name: "several endpoint errors at once",
            yaml: """
                endpoints:
                  - path: ws
                    encoders: [jsn]
                    topics: ["public:*"]
                    subscribe: [metrics]
                """,
            expected: [
                "test.yaml:2:11: endpoints[0].path: endpoint path must start with '/' and contain no query or spaces, got 'ws' (e.g. /ws)",
                "test.yaml:3:15: endpoints[0].encoders: unknown encoder 'jsn' (did you mean 'json'? available: json, msgpack)",
                "test.yaml:5:16: endpoints[0].subscribe: default subscription 'metrics' is outside the endpoint's topics (topics: public:*)",
            ]
        ),
        Case(
            name: "invalid topic pattern",
            yaml: """
                endpoints:
                  - path: /ws
                    topics: ["ok:*", "a*b"]
                """,
            expected: [
                "test.yaml:3:22: endpoints[0].topics[1]: invalid topic pattern 'a*b' (a topic is 1–256 visible characters; '*' is allowed only at the end (e.g. 'topic:*'))"
            ]
        ),
        Case(
            name: "duplicate endpoint path",
            yaml: """
                endpoints:
                  - path: /ws
                  - path: /ws
                """,
            expected: [
                "test.yaml:3:5: endpoints[1].path: duplicate endpoint path '/ws' (already used by endpoints[0])"
            ]
        ),
        Case(
            name: "YAML syntax error",
            yaml: """
                endpoints:
                  - path: /ws
                    topics: [a, b
                """,
            expected: [
                "test.yaml:4:1: invalid YAML: while parsing a flow sequence: did not find expected ',' or ']'"
            ]
        ),
        Case(
            name: "webhook without a key",
            yaml: """
                sources:
                  - plugin: webhook
                    keys: ["${UNSET_KEY:-}"]
                """,
            expected: [
                "test.yaml:2:5: sources[0] (webhook): no API key configured for the webhook (set keys: [\"${PUBLISH_KEY}\"], or demo_key: true for a generated key, or auth: none)"
            ]
        ),
        Case(
            name: "list expected",
            yaml: """
                endpoints:
                  path: /ws
                """,
            expected: [
                "test.yaml:2:3: endpoints: expected a list, got a mapping"
            ]
        ),
        Case(
            name: "policy typo and unknown nested key",
            yaml: """
                endpoints:
                  - path: /ws
                    heartbeat:
                      intervall: 5s
                    send_queue:
                      policy: drop_olderst
                """,
            expected: [
                "test.yaml:4:7: endpoints[0].heartbeat: unknown key 'intervall' (did you mean 'interval'?)",
                "test.yaml:6:15: endpoints[0].send_queue.policy: expected 'drop_oldest', 'disconnect' or 'conflate', got 'drop_olderst' (did you mean 'drop_oldest'?)",
            ]
        ),
        Case(
            name: "history outside the topics, larger than the queue, with a typo",
            yaml: """
                endpoints:
                  - path: /ws
                    topics: [news]
                    send_queue: {max_messages: 10}
                    history:
                      size: 50
                      topics: [other]
                      tll: 5m
                """,
            expected: [
                "test.yaml:6:7: endpoints[0].history: history topic 'other' is outside the endpoint's topics (topics: news)",
                "test.yaml:6:7: endpoints[0].history: history size 50 is larger than send_queue.max_messages (10): a full replay would not fit in the send queue (lower history.size or raise send_queue.max_messages)",
                "test.yaml:8:7: endpoints[0].history: unknown key 'tll' (did you mean 'ttl'?)",
            ]
        ),
        Case(
            name: "duplicate key",
            yaml: """
                endpoints:
                  - path: /ws
                    path: /other
                """,
            expected: [
                "test.yaml:2:5: duplicate keys in mapping: path"
            ]
        ),
        Case(
            name: "timer interval too short",
            yaml: """
                sources:
                  - plugin: timer
                    every: 0ms
                    topic: "t*"
                """,
            expected: [
                "test.yaml:2:5: sources[0] (timer): 'every' must be at least 1ms, got 0s"
            ]
        ),
        Case(
            name: "a swapped pair of letters still gets did you mean",
            yaml: """
                sources:
                  - plugin: timer
                    evrey: 2s
                    topic: metrics
                """,
            expected: [
                "test.yaml:2:5: sources[0] (timer): missing required key 'every'",
                "test.yaml:3:5: sources[0] (timer): unknown key 'evrey' (did you mean 'every'?)",
            ]
        ),
        Case(
            name: "an error that follows from another is not reported",
            yaml: """
                sources:
                  - plugin: timer
                    every: [2s]
                    topic: metrics
                """,
            expected: [
                "test.yaml:3:12: sources[0].every (timer): expected a string, got a list"
            ]
        ),
        Case(
            name: "a placeholder never leaks into a message",
            yaml: """
                endpoints:
                  - path: /ws
                    max_message_size: lots
                    heartbeat: {interval: often}
                """,
            expected: [
                "test.yaml:3:23: endpoints[0].max_message_size: expected a size such as 4096, 64KiB or 1MiB, got 'lots' (units: B, KiB, MiB, GiB (binary) or KB, MB, GB (decimal))",
                "test.yaml:4:27: endpoints[0].heartbeat.interval: expected a duration such as 500ms, 2s, 1m or 1h, got 'often' (units: ms, s, m, h; a plain number means seconds)",
            ]
        ),
        Case(
            name: "an unknown key inside a plugin block whose own validation fails",
            yaml: """
                endpoints:
                  - path: /ws
                    filters:
                      - plugin: api_key
                        kyes: [abc]
                """,
            expected: [
                "test.yaml:4:9: endpoints[0].filters[0] (api_key): no API keys configured (add 'keys' or 'file')",
                "test.yaml:5:9: endpoints[0].filters[0] (api_key): unknown key 'kyes' (did you mean 'keys'?)",
            ]
        ),
        Case(
            name: "a missing required key does not hide a misspelt one, and stand-ins are not checked again",
            yaml: """
                sources:
                  - plugin: postgres
                    chanels: [jobs]
                    topic: t
                endpoints:
                  - path: /ws
                    encoders: [json, "${NOPE_UNSET}"]
                    transports: [websocket, websockt]
                    send_queue: {max_messages: lots}
                    history: {size: 100}
                    filters:
                      - plugin: origin
                        alow: ["https://a.example.com"]
                """,
            expected: [
                "test.yaml:2:5: sources[0] (postgres): missing required key 'channels'",
                "test.yaml:3:5: sources[0] (postgres): unknown key 'chanels' (did you mean 'channels'?)",
                "test.yaml:7:22: endpoints[0].encoders[1]: environment variable 'NOPE_UNSET' is not set (set it, or give a default with ${NOPE_UNSET:-value})",
                "test.yaml:8:29: endpoints[0].transports[1]: expected 'websocket' or 'sse', got 'websockt' (did you mean 'websocket'?)",
                "test.yaml:9:32: endpoints[0].send_queue.max_messages: expected an integer, got 'lots'",
                "test.yaml:12:9: endpoints[0].filters[0] (origin): missing required key 'allow'",
                "test.yaml:13:9: endpoints[0].filters[0] (origin): unknown key 'alow' (did you mean 'allow'?)",
            ]
        ),
        Case(
            name: "a problem that is not about a value is reported after a stand-in",
            yaml: """
                shutdown_grace: soon
                shutdown: {grace: 5s}
                endpoints:
                  - path: /ws
                """,
            expected: [
                "test.yaml:1:17: shutdown_grace: expected a duration such as 500ms, 2s, 1m or 1h, got 'soon' (units: ms, s, m, h; a plain number means seconds)",
                "test.yaml:1:17: shutdown_grace: shutdown_grace and shutdown.grace are both set (keep shutdown.grace (shutdown_grace is its older spelling))",
            ]
        ),
    ]

    @Test(arguments: cases)
    func reportsExactDiagnostics(_ testCase: Case) {
        #expect(Self.diagnostics(testCase.yaml) == testCase.expected)
    }

    @Test func emptyFileIsAnError() {
        #expect(Self.diagnostics("") == ["test.yaml:1:1: the configuration is empty (see configs/default.yaml)"])
    }

    /// A reload keeps what has the same fingerprint: key order and comments do not count;
    /// quoting, a different value and the contents of a referenced file do.
    @Test func fingerprintsCountWhatConfigures() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fingerprint-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let keyFile = directory.appendingPathComponent("keys.txt")
        try "alice key:0123456789abcdef0123\n".write(to: keyFile, atomically: true, encoding: .utf8)
        func endpoint(_ body: String) throws -> EndpointConfiguration {
            let configuration = try Self.loader.load(yaml: "endpoints:\n" + body, file: "fp.yaml")
            return try #require(configuration.endpoints.first)
        }
        let base = try endpoint("""
              - path: /ws
                encoders: [json]
                filters:
                  - {plugin: api_key, file: \(keyFile.path)}
            """)
        let reordered = try endpoint("""
              # a comment
              - encoders: [json]
                filters:
                  - {file: \(keyFile.path), plugin: api_key}
                path: /ws
            """)
        #expect(base.fingerprint == reordered.fingerprint)
        #expect(base.fingerprintWithoutFilters == reordered.fingerprintWithoutFilters)
        // Quoting a string changes nothing; quoting what would be a number or null does.
        let quoted = try endpoint("""
              - path: "/ws"
                encoders: ["json"]
                filters:
                  - {plugin: api_key, file: \(keyFile.path)}
            """)
        #expect(base.fingerprint == quoted.fingerprint)
        let numbers = try endpoint("""
              - path: /ws
                encoders: [json]
                max_subscriptions: 10
            """)
        let numberAsString = try endpoint("""
              - path: /ws
                encoders: [json]
                max_subscriptions: "10"
            """)
        #expect(numbers.fingerprint != numberAsString.fingerprint)
        // The key file changes, the YAML does not: the filters changed.
        try "alice key:0123456789abcdef0123\nbob key:abcdef0123456789abcd\n".write(to: keyFile, atomically: true, encoding: .utf8)
        let edited = try endpoint("""
              - path: /ws
                encoders: [json]
                filters:
                  - {plugin: api_key, file: \(keyFile.path)}
            """)
        #expect(base.fingerprint != edited.fingerprint)
        #expect(base.fingerprintWithoutFilters == edited.fingerprintWithoutFilters)
    }

    /// Plugin names are snake_case like every YAML key; a former spelling still loads, with
    /// a deprecation warning that names today's.
    @Test func pluginNamesFollowOneConventionAndFormerNamesStillWork() throws {
        let registry = BuiltinPlugins.registry
        for name in Array(registry.sources.keys) + Array(registry.filters.keys) + Array(registry.encoders.keys) {
            #expect(PluginRegistry.isConventional(name), "plugin name '\(name)' is not snake_case")
        }
        #expect(registry.formerNames["redis-stream"] == "redis_stream")
        #expect(registry.duplicateNames.isEmpty, "registered twice: \(registry.duplicateNames)")
        let result = Self.loader.check(yaml: """
            sources:
              - name: jobs
                plugin: redis-stream
                url: redis://127.0.0.1:6379
                streams: [jobs]
                topic: jobs
            endpoints:
              - path: /ws
                encoders: [json]
            """, file: "former.yaml")
        #expect(result.errors.isEmpty, "\(result.errors)")
        #expect(result.configuration?.sources.first?.plugin == "redis_stream")
        #expect(result.warnings.map(\.description) == [
            "former.yaml:3:13: sources[0].plugin: warning: plugin name 'redis-stream' is deprecated (write plugin: redis_stream; the old spelling will stop working in a later release)",
        ])
        // The warning never softens an error in the same block.
        let broken = Self.loader.check(yaml: """
            sources:
              - name: jobs
                plugin: redis-stream
                streams: [jobs]
                topic: jobs
                protocol: 7
            endpoints:
              - path: /ws
                encoders: [json]
            """, file: "former.yaml")
        #expect(broken.errors.map(\.description) == ["former.yaml:2:5: sources[0] (redis_stream): 'protocol' must be 2 or 3"])
        #expect(broken.warnings.count == 1)
    }

    @Test func builtInPathsCannotBeTaken() {
        let messages = Self.diagnostics("""
            endpoints:
              - path: /metrics
                encoders: [json]
              - path: /ws
                encoders: [json]
                stats_path: /admin/reload
              - path: /other
                encoders: [json]
                stats_path: /ws
              - path: /third
                encoders: [json]
                stats_path: /client.js
              - path: /fourth
                encoders: [json]
                stats_path: /admin/reload
            """)
        #expect(messages.contains { $0.contains("endpoints[0].path: path '/metrics' is taken by a built-in route") }, "\(messages)")
        #expect(messages.contains { $0.contains("endpoints[1].stats_path: stats_path '/admin/reload' is taken by a built-in route") }, "\(messages)")
        #expect(messages.contains { $0.contains("endpoints[2].stats_path: stats_path '/ws' is the path of endpoints[1]") }, "\(messages)")
        #expect(messages.contains { $0.contains("endpoints[3].stats_path: stats_path '/client.js' is taken by the dashboard") }, "\(messages)")
        #expect(messages.contains { $0.contains("endpoints[4].stats_path: stats_path '/admin/reload' is also the stats_path of endpoints[1]") }, "\(messages)")
    }

    @Test func interpolationWithDefaultsAndEscapes() throws {
        let loader = ConfigurationLoader(registry: BuiltinPlugins.registry, environment: ["PORT": "9001", "EMPTY": ""])
        let configuration = try loader.load(
            yaml: """
                listener:
                  host: ${EMPTY:-127.0.0.2}
                  port: ${PORT}
                endpoints:
                  - path: /ws$${literal}
                """,
            file: "ok.yaml"
        )
        #expect(configuration.listener.port == 9001)
        #expect(configuration.listener.host == "127.0.0.2")
        #expect(configuration.endpoints.first?.path == "/ws${literal}")
    }
}
