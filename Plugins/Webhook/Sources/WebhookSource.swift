import Logging
import NIOCore
import SwitchboardCore

/// The `webhook` source: an HTTP `POST` route that turns JSON bodies into events.
///
/// Body: one `{"topic","type","data","id"?}` object or an array of them (a batch, accepted
/// or refused as a whole). Authenticated with an API key in `X-API-Key` (header name
/// configurable) or `Authorization: Bearer`.
public struct WebhookSource: SourcePlugin {
    public static let typeName = "webhook"

    public static let spec = PluginSpec(
        summary: "HTTP POST publish API: JSON bodies (one event or a batch) become events",
        examples: [
            "- plugin: webhook\n  path: /api/publish\n  keys: [\"${PUBLISH_KEY}\"]\n  topics: [\"orders:*\"]"
        ]
    )

    /// Policy for topics outside the allow list.
    public enum UnknownTopicPolicy: String, Sendable, ConfigEnum {
        case reject
        case drop
        public static var configPlaceholder: UnknownTopicPolicy { .reject }
    }

    /// How publishers authenticate.
    public enum Auth: String, Sendable, ConfigEnum {
        case apiKey = "api_key"
        case none
        public static var configPlaceholder: Auth { .apiKey }
    }

    /// One publish key, optionally limited to some topics.
    public struct PublishKey: PluginConfig {
        public var name: String
        public var key: String
        /// Topics this key may publish to (within the webhook's `topics`); `nil` = all of them.
        public var topics: [TopicPattern]?

        static let name = DefaultedKey("name", "string", default: "key", "Name of the key in errors and logs.")
        static let key = RequiredKey<String>("key", "string", "The key itself (use ${ENV}), at least 16 characters.")
        static let topics = OptionalKey<[TopicPattern]>(
            "topics", "list of patterns", whenAbsent: "the webhook's topics", "Topics this key may publish to, within the webhook's `topics`."
        )
        public static let keys: [any PluginKey] = [Self.name, Self.key, Self.topics]

        public init(name: String, key: String, topics: [TopicPattern]?) {
            self.name = name
            self.key = key
            self.topics = topics
        }

        public init(from decoder: any Decoder) throws {
            if let probe = decoder as? any ConfigShapeProbing, !probe.isMapping {
                let key = try decoder.singleValueContainer().decode(String.self)
                self.init(name: Self.name.defaultValue, key: key, topics: nil)
                return
            }
            let container = try decoder.container(keyedBy: PluginCodingKey.self)
            self.init(
                name: try container.read(Self.name),
                key: try container.read(Self.key),
                topics: try container.read(Self.topics)
            )
        }
    }

    public struct Config: PluginConfig {
        public var path: String
        public var keys: [PublishKey]
        public var keyHeader: String
        public var auth: Auth
        public var demoKey: Bool
        public var maxBody: ConfigByteSize
        public var maxBatch: Int
        public var topics: [TopicPattern]
        public var unknownTopic: UnknownTopicPolicy
        public var defaultType: String

        static let path = DefaultedKey("path", "string", default: "/api/publish", "Route path.")
        static let keyEntries = DefaultedKey<[PublishKey]>(
            "keys", "list", default: [], shown: "none",
            "Accepted API keys: a string each (use ${ENV}; empty strings are ignored), or `{name, key, topics}` to limit what that key may publish.",
            nested: PublishKey.keys
        )
        static let keyHeader = DefaultedKey(
            "key_header", "string", default: "X-API-Key", "Header carrying the key; Authorization: Bearer is also accepted."
        )
        static let auth = DefaultedKey(
            "auth", "api_key | none", default: Auth.apiKey, "'none' publishes without a key (only behind a trusted proxy)."
        )
        static let demoKey = DefaultedKey(
            "demo_key", "bool", default: false, "When no key is configured, generate one and print it at start-up."
        )
        static let maxBody = DefaultedKey("max_body", "size", default: ConfigByteSize(bytes: 1024 * 1024), "Larger bodies get 413.")
        static let maxBatch = DefaultedKey("max_batch", "int", default: 1000, "Most events in one body.")
        static let topics = DefaultedKey(
            "topics", "list of patterns", default: [TopicPattern.configPlaceholder], shown: "['*']", "Topics this webhook may publish to."
        )
        static let unknownTopic = DefaultedKey(
            "unknown_topic", "reject | drop", default: UnknownTopicPolicy.reject,
            "What to do with an event whose topic is outside 'topics': 403 for the whole body, or drop it and accept the rest."
        )
        static let defaultType = DefaultedKey("default_type", "string", default: "message", "Event type when the body has none.")
        public static let keys: [any PluginKey] = [
            Self.path, Self.keyEntries, Self.keyHeader, Self.auth, Self.demoKey, Self.maxBody, Self.maxBatch, Self.topics,
            Self.unknownTopic, Self.defaultType,
        ]

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: PluginCodingKey.self)
            path = try container.read(Self.path)
            keys = try container.read(Self.keyEntries).filter { !$0.key.isEmpty }
            keyHeader = try container.read(Self.keyHeader)
            auth = try container.read(Self.auth)
            demoKey = try container.read(Self.demoKey)
            maxBody = try container.read(Self.maxBody)
            maxBatch = try container.read(Self.maxBatch)
            topics = try container.read(Self.topics)
            unknownTopic = try container.read(Self.unknownTopic)
            defaultType = try container.read(Self.defaultType)
            if !path.hasPrefix("/") {
                throw ConfigValidationError("'path' must start with '/', got '\(path)'")
            }
            if auth == .apiKey && keys.isEmpty && !demoKey {
                throw ConfigValidationError(
                    "no API key configured for the webhook",
                    hint: "set keys: [\"${PUBLISH_KEY}\"], or demo_key: true for a generated key, or auth: none"
                )
            }
            if let short = keys.first(where: { $0.key.utf8.count < 16 }) {
                throw ConfigValidationError("API key '\(short.name)' is shorter than 16 characters", hint: "generate one with: openssl rand -hex 24")
            }
            if maxBatch < 1 { throw ConfigValidationError("'max_batch' must be at least 1") }
        }
    }

    public static func build(config: Config, context: any SourceContext) async throws -> any EventSource {
        var keys = config.keys
        var generated: String?
        if config.auth == .apiKey && keys.isEmpty && config.demoKey {
            let key = randomKey()
            keys = [PublishKey(name: "demo", key: key, topics: nil)]
            generated = key
        }
        let handler = WebhookHandler(config: config, keys: keys.map { (Array($0.key.utf8), $0.topics) }, context: context)
        var route = HTTPRoute(method: "POST", path: config.path, maxBodySize: config.maxBody.bytes) { request in
            await handler.handle(request)
        }
        if config.auth == .apiKey {
            route.authorize = { request in handler.authorizationFailure(request) }
        }
        if let generated {
            let path = config.path
            let header = config.keyHeader
            route.announcement = { baseURL in
                """
                webhook \(path): no publish key configured (SWITCHBOARD_PUBLISH_KEY is unset), using the demo key \(generated)
                  try: curl -X POST \(baseURL)\(path) -H '\(header): \(generated)' -H 'Content-Type: application/json' -d '{"topic":"demo","type":"hello","data":{"text":"hi"}}'
                """
            }
        }
        context.registerRoute(route)
        return WebhookRunner()
    }

    static func randomKey() -> String {
        var generator = SystemRandomNumberGenerator()
        let digits = Array("0123456789abcdef")
        return String((0..<48).map { _ in digits[Int(generator.next() % 16)] })
    }
}

/// The webhook needs no background work: its route does everything.
struct WebhookRunner: EventSource {
    func run() async throws {
        while !Task.isCancelled {
            try await Task.sleep(for: .seconds(3600))
        }
    }
}

/// Validates and publishes webhook bodies.
struct WebhookHandler: Sendable {
    let config: WebhookSource.Config
    /// Key bytes and the topics each key may publish to (`nil` = the webhook's topics).
    let keys: [(bytes: [UInt8], topics: [TopicPattern]?)]
    let context: any SourceContext

    /// The index of the key the request presents, or the refusal when it is missing or
    /// wrong. Needs only the headers: the route asks it before reading the body.
    enum KeyCheck {
        case key(Int)
        case refused(HTTPRouteResponse)
    }

    func keyIndex(_ request: HTTPRouteRequest) -> KeyCheck {
        guard let presented = presentedKey(request) else {
            return .refused(.error(401, code: "unauthorized", message: "missing API key: send it in the \(config.keyHeader) header or as Authorization: Bearer"))
        }
        guard let match = matchingKey(Array(presented.utf8)) else {
            return .refused(.error(401, code: "unauthorized", message: "invalid API key"))
        }
        return .key(match)
    }

    /// The refusal of a request whose API key is missing or wrong; nil when it is good.
    func authorizationFailure(_ request: HTTPRouteRequest) -> HTTPRouteResponse? {
        if case .refused(let refusal) = keyIndex(request) { return refusal }
        return nil
    }

    func handle(_ request: HTTPRouteRequest) async -> HTTPRouteResponse {
        var keyTopics: [TopicPattern]?
        if config.auth == .apiKey {
            switch keyIndex(request) {
            case .key(let match): keyTopics = keys[match].topics
            case .refused(let refusal): return refusal
            }
        }
        let body: JSONValue
        do {
            body = try JSONParser.parse(request.body.readableBytesView)
        } catch {
            var response = HTTPRouteResponse.error(400, code: "bad_json", message: "invalid JSON: \(error.description)")
            response.body = [
                "error": [
                    "code": "bad_json", "message": .string("invalid JSON: \(error.message)"),
                    "line": .int(Int64(error.line)), "column": .int(Int64(error.column)),
                ]
            ]
            return response
        }
        let items: [JSONValue]
        switch body {
        case .array(let array): items = array
        case .object: items = [body]
        default:
            return .error(400, code: "bad_event", message: "expected an event object or an array of them, got \(body.kindName)")
        }
        guard !items.isEmpty else { return .error(400, code: "bad_event", message: "the batch is empty") }
        guard items.count <= config.maxBatch else {
            return .error(413, code: "batch_too_large", message: "\(items.count) events in one body; at most \(config.maxBatch)")
        }
        var events: [Event] = []
        var dropped = 0
        let now = UnixTime.nowSeconds()
        for (index, item) in items.enumerated() {
            let label = items.count > 1 || body.arrayValue != nil ? "event [\(index)]: " : ""
            guard case .object(let object) = item else {
                return .error(400, code: "bad_event", message: "\(label)expected an object, got \(item.kindName)")
            }
            for key in object.keys where !["topic", "type", "data", "id"].contains(key) {
                return .error(400, code: "bad_event", message: "\(label)unknown field '\(key)'; allowed: topic, type, data, id")
            }
            guard let topic = object["topic"]?.stringValue else {
                return .error(400, code: "bad_event", message: "\(label)missing string field 'topic'")
            }
            guard let pattern = TopicPattern(topic), !pattern.isWildcard else {
                return .error(400, code: "bad_topic", message: "\(label)invalid topic '\(topic)': 1–256 visible characters, no '*'")
            }
            let type: String
            switch object["type"] {
            case nil: type = config.defaultType
            case .string(let value)?: type = value
            case let other?: return .error(400, code: "bad_event", message: "\(label)'type' must be a string, got \(other.kindName)")
            }
            var id: String?
            switch object["id"] {
            case nil, .null?: id = nil
            case .string(let value)?: id = value
            case .int(let value)?: id = String(value)
            case let other?: return .error(400, code: "bad_event", message: "\(label)'id' must be a string, got \(other.kindName)")
            }
            if let keyTopics, !keyTopics.covers(pattern) {
                // A key's own limit is never "unknown": publishing outside it is refused.
                return .error(403, code: "forbidden", message: "\(label)this key may not publish to '\(topic)'")
            }
            guard config.topics.covers(pattern) else {
                if config.unknownTopic == .drop {
                    dropped += 1
                    continue
                }
                return .error(403, code: "topic_not_allowed", message: "\(label)topic '\(topic)' is not allowed on \(config.path)")
            }
            events.append(Event(topic: topic, type: type, data: object["data"] ?? .null, id: id, timestamp: now))
        }
        for event in events { context.emit(event) }
        var result: JSONObject = JSONObject([("accepted", .int(Int64(events.count)))])
        if dropped > 0 { result["dropped"] = .int(Int64(dropped)) }
        return HTTPRouteResponse(status: 202, body: .object(result))
    }

    private func presentedKey(_ request: HTTPRouteRequest) -> String? {
        if let value = request.header(config.keyHeader), !value.isEmpty { return value }
        return request.bearerToken
    }

    /// The index of the matching key. Every key is compared in full, so timing tells
    /// nothing about which key or how much of a guess was right.
    private func matchingKey(_ presented: [UInt8]) -> Int? {
        var match: Int?
        for (index, key) in keys.enumerated() where ConstantTime.equal(key.bytes, presented) && match == nil {
            match = index
        }
        return match
    }
}
