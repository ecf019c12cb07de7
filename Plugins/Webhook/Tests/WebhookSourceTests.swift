import NIOCore
import SwitchboardConfig
import SwitchboardCore
import SwitchboardTesting
import Testing
import WebhookPlugin

@Suite struct WebhookSourceTests {
    static let key = "0123456789abcdef0123456789abcdef"

    func makeRoute(_ yaml: String) async throws -> (HTTPRoute, RecordingSourceContext) {
        let config = try ConfigurationLoader.decodePluginConfig(WebhookSource.Config.self, yaml: yaml, plugin: "webhook")
        let context = RecordingSourceContext()
        _ = try await WebhookSource.build(config: config, context: context)
        let route = try #require(context.routes.first)
        return (route, context)
    }

    func post(_ route: HTTPRoute, _ body: String, headers: [(name: String, value: String)] = [("X-API-Key", key)]) async -> HTTPRouteResponse {
        await route.handler(HTTPRouteRequest(headers: headers, query: [], body: ByteBuffer(string: body), remoteAddress: "127.0.0.1"))
    }

    @Test func publishesOneEventAndABatch() async throws {
        let (route, context) = try await makeRoute("keys: [\"\(Self.key)\"]")
        #expect(route.method == "POST")
        #expect(route.path == "/api/publish")
        let single = await post(route, #"{"topic":"topic:a","type":"topic_created","data":{"name":"a"}}"#)
        #expect(single.status == 202)
        #expect(single.body == ["accepted": 1])
        let batch = await post(route, #"[{"topic":"x","data":1},{"topic":"y","type":"t","id":"7"}]"#)
        #expect(batch.status == 202)
        #expect(context.events.map(\.topic) == ["topic:a", "x", "y"])
        #expect(context.events.map(\.type) == ["topic_created", "message", "t"])
        #expect(context.events[0].data == ["name": "a"])
        #expect(context.events[2].id == "7")
    }

    @Test func bearerTokenIsAcceptedToo() async throws {
        let (route, context) = try await makeRoute("keys: [\"\(Self.key)\"]")
        let response = await post(route, #"{"topic":"x"}"#, headers: [("Authorization", "Bearer \(Self.key)")])
        #expect(response.status == 202)
        #expect(context.events.count == 1)
    }

    @Test func refusesMissingAndWrongKeys() async throws {
        let (route, context) = try await makeRoute("keys: [\"\(Self.key)\"]")
        #expect(await post(route, #"{"topic":"x"}"#, headers: []).status == 401)
        #expect(await post(route, #"{"topic":"x"}"#, headers: [("X-API-Key", Self.key + "x")]).status == 401)
        #expect(await post(route, #"{"topic":"x"}"#, headers: [("X-API-Key", String(Self.key.dropLast()))]).status == 401)
        #expect(context.events.isEmpty)
    }

    @Test func badJSONNamesThePosition() async throws {
        let (route, context) = try await makeRoute("keys: [\"\(Self.key)\"]")
        let response = await post(route, "{\n  \"topic\": \"x\",\n  \"data\": [1, 2,]\n}")
        #expect(response.status == 400)
        #expect(response.body["error"]?["line"] == 3)
        #expect(response.body["error"]?["column"] == 17)
        #expect(response.body["error"]?["code"] == "bad_json")
        #expect(context.events.isEmpty)
    }

    @Test(arguments: [
        (#"{"type":"x"}"#, 400, "missing string field 'topic'"),
        (#"{"topic":"a*"}"#, 400, "invalid topic 'a*': 1–256 visible characters, no '*'"),
        (#"{"topic":"a","extra":1}"#, 400, "unknown field 'extra'; allowed: topic, type, data, id"),
        (#"[{"topic":"a"},{"topic":1}]"#, 400, "event [1]: missing string field 'topic'"),
        (#"[]"#, 400, "the batch is empty"),
        (#""text""#, 400, "expected an event object or an array of them, got a string"),
    ])
    func refusesBadEventsAsAWhole(body: String, status: Int, message: String) async throws {
        let (route, context) = try await makeRoute("keys: [\"\(Self.key)\"]")
        let response = await post(route, body)
        #expect(response.status == status)
        #expect(response.body["error"]?["message"] == .string(message))
        #expect(context.events.isEmpty)
    }

    @Test func topicPolicyRejectOrDrop() async throws {
        let (rejecting, rejected) = try await makeRoute("keys: [\"\(Self.key)\"]\ntopics: [\"public:*\"]")
        let refused = await post(rejecting, #"[{"topic":"public:a"},{"topic":"admin:b"}]"#)
        #expect(refused.status == 403)
        #expect(rejected.events.isEmpty)

        let (dropping, dropped) = try await makeRoute("keys: [\"\(Self.key)\"]\ntopics: [\"public:*\"]\nunknown_topic: drop")
        let accepted = await post(dropping, #"[{"topic":"public:a"},{"topic":"admin:b"}]"#)
        #expect(accepted.status == 202)
        #expect(accepted.body == ["accepted": 1, "dropped": 1])
        #expect(dropped.events.map(\.topic) == ["public:a"])
    }

    @Test func demoKeyIsGeneratedAndAnnounced() async throws {
        let (route, _) = try await makeRoute("demo_key: true")
        let announcement = try #require(route.announcement?("http://localhost:8080"))
        #expect(announcement.contains("curl -X POST http://localhost:8080/api/publish -H 'X-API-Key: "))
        let key = try #require(announcement.split(whereSeparator: { $0 == " " || $0 == "\n" }).first { $0.count == 48 })
        #expect(await post(route, #"{"topic":"x"}"#, headers: [("X-API-Key", String(key))]).status == 202)
    }

    @Test func configErrors() {
        #expect(throws: ConfigurationError.self) {
            try ConfigurationLoader.decodePluginConfig(WebhookSource.Config.self, yaml: "keys: [short]", plugin: "webhook")
        }
        #expect(throws: ConfigurationError.self) {
            try ConfigurationLoader.decodePluginConfig(WebhookSource.Config.self, yaml: "keys: []", plugin: "webhook")
        }
        #expect(throws: ConfigurationError.self) {
            try ConfigurationLoader.decodePluginConfig(WebhookSource.Config.self, yaml: "auth: none\npath: nope", plugin: "webhook")
        }
    }
}

@Suite struct WebhookScopedKeyTests {
    static let yaml = """
        keys:
          - \(WebhookSourceTests.key)
          - name: orders-service
            key: orders-key-0123456789abcdef
            topics: ["orders:*"]
        topics: ["orders:*", "public:*"]
        """

    @Test func aScopedKeyPublishesOnlyWithinItsTopics() async throws {
        let config = try ConfigurationLoader.decodePluginConfig(WebhookSource.Config.self, yaml: Self.yaml, plugin: "webhook")
        #expect(config.keys.map(\.name) == ["key", "orders-service"])
        let context = RecordingSourceContext()
        _ = try await WebhookSource.build(config: config, context: context)
        let route = try #require(context.routes.first)
        func post(_ key: String, _ body: String) async -> HTTPRouteResponse {
            await route.handler(HTTPRouteRequest(headers: [("X-API-Key", key)], query: [], body: ByteBuffer(string: body), remoteAddress: nil))
        }
        #expect(await post("orders-key-0123456789abcdef", #"{"topic":"orders:1"}"#).status == 202)
        let refused = await post("orders-key-0123456789abcdef", #"[{"topic":"orders:2"},{"topic":"public:x"}]"#)
        #expect(refused.status == 403)
        #expect(refused.body["error"]?["code"] == "forbidden")
        // The unscoped key may use every topic of the webhook.
        #expect(await post(WebhookSourceTests.key, #"{"topic":"public:x"}"#).status == 202)
        #expect(context.events.map(\.topic) == ["orders:1", "public:x"])
    }

    @Test func scopedKeyErrorsNameTheKeyButNeverItsValue() {
        do {
            _ = try ConfigurationLoader.decodePluginConfig(WebhookSource.Config.self, yaml: "keys:\n  - name: tiny\n    key: short-secret", plugin: "webhook")
            Issue.record("expected an error")
        } catch {
            #expect(error.description.contains("'tiny'"))
            #expect(!error.description.contains("short-secret"))
        }
        #expect(throws: ConfigurationError.self) {
            try ConfigurationLoader.decodePluginConfig(WebhookSource.Config.self, yaml: "keys:\n  - name: x\n    key: orders-key-0123456789abcdef\n    topics: [\"a*b\"]", plugin: "webhook")
        }
        #expect(throws: ConfigurationError.self) {
            try ConfigurationLoader.decodePluginConfig(WebhookSource.Config.self, yaml: "keys:\n  - name: x\n    kye: orders-key-0123456789abcdef", plugin: "webhook")
        }
    }
}
