/// What every source that relays a message broker repeats: naming the topic after the
/// backend's channel, decoding the payload, choosing the event type. Redis pub/sub, Redis
/// Streams and PostgreSQL NOTIFY all use it.

/// `topic: jobs`, or `topic: "job:{channel}"` where `{channel}` becomes the backend's
/// channel (a Redis channel or stream key, a PostgreSQL NOTIFY channel).
public struct TopicTemplate: Sendable, Equatable, CustomStringConvertible {
    public let text: String
    public let usesChannel: Bool

    public init(_ text: String) throws(ConfigValidationError) {
        guard !text.isEmpty else { throw ConfigValidationError("'topic' is empty") }
        let withoutPlaceholder = text.replacing("{channel}", with: "x")
        guard !withoutPlaceholder.contains("{"), !withoutPlaceholder.contains("}") else {
            throw ConfigValidationError("'topic' may only use the {channel} placeholder")
        }
        guard TopicPattern(withoutPlaceholder) != nil, !withoutPlaceholder.hasSuffix("*") else {
            throw ConfigValidationError("'topic' must render to a topic, not a pattern: \(TopicPattern.syntaxHelp)")
        }
        self.text = text
        usesChannel = text.contains("{channel}")
    }

    /// The topic of a message from `channel`.
    public func render(channel: String) -> String {
        usesChannel ? text.replacing("{channel}", with: channel) : text
    }

    public var description: String { text }
}

/// How one backend message becomes an event: the payload is parsed as JSON (anything else
/// is kept as a string), the topic comes from the channel, and the type is the configured
/// one unless the payload is a JSON object with its own string `type` field.
public struct MessageMapping: Sendable {
    public var topic: TopicTemplate
    public var type: String
    public var typeFromPayload: Bool
    public var shape: EventShape

    public init(topic: TopicTemplate, type: String = "message", typeFromPayload: Bool = true, shape: EventShape = .envelope) {
        self.topic = topic
        self.type = type
        self.typeFromPayload = typeFromPayload
        self.shape = shape
    }

    /// The keys a mapping reads, declared once for the plugin's ``PluginConfig/keys``.
    /// `channel` names what `{channel}` stands for ("the channel name", "the stream key").
    public struct Keys: Sendable {
        public let topic: RequiredKey<String>
        public let type = DefaultedKey(
            "type", "string", default: "message",
            "Event type; a JSON payload's own string `type` field wins unless `type_from_payload: false`."
        )
        public let typeFromPayload = DefaultedKey("type_from_payload", "bool", default: true, "Use the payload's `type` field when there is one.")
        public let shape = DefaultedKey(
            "shape", "envelope | flat", default: EventShape.envelope,
            "`flat` sends `{\"type\", …payload fields}` instead of the envelope."
        )

        public init(channel: String) {
            topic = RequiredKey("topic", "string", "Topic of the events; `{channel}` is replaced by \(channel) (`job:{channel}`).")
        }

        /// In documentation order.
        public var all: [any PluginKey] { [topic, type, typeFromPayload, shape] }
    }

    /// Reads `topic`, `type`, `type_from_payload` and `shape` from a plugin's container.
    public init(from container: KeyedDecodingContainer<PluginCodingKey>, keys: Keys = Keys(channel: "the channel name")) throws {
        let topicText = try container.read(keys.topic)
        type = try container.read(keys.type)
        typeFromPayload = try container.read(keys.typeFromPayload)
        shape = try container.read(keys.shape)
        topic = try TopicTemplate(topicText)
    }

    /// The event for `payload` received on `channel`.
    public func event(channel: String, payload: [UInt8], id: String? = nil) -> Event {
        let data = (try? JSONParser.parse(payload)) ?? .string(String(decoding: payload, as: UTF8.self))
        return event(channel: channel, data: data, id: id)
    }

    /// The event for already decoded `data` received on `channel`.
    public func event(channel: String, data: JSONValue, id: String? = nil) -> Event {
        var eventType = type
        if typeFromPayload, let declared = data["type"]?.stringValue, !declared.isEmpty { eventType = declared }
        return Event(topic: topic.render(channel: channel), type: eventType, data: data, id: id, shape: shape)
    }
}

/// A configuration value that must not appear in logs, `/readyz` or `--log-level debug`
/// dumps of a plugin's `Config`: it prints as `***`. Decoded from a YAML string.
public struct Secret: Sendable, Hashable, Decodable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// The secret itself, for the code that uses it.
    public let value: String

    public init(_ value: String) { self.value = value }

    public init(from decoder: any Decoder) throws {
        value = try decoder.singleValueContainer().decode(String.self)
    }

    public var description: String { "***" }
    public var debugDescription: String { "***" }
    public var customMirror: Mirror { Mirror(self, children: [], displayStyle: .struct) }
}

/// The text a source's failure shows in `/readyz` and the logs. Errors of client libraries
/// often describe themselves vaguely on purpose (they may hold secrets); a source wraps
/// them with what it was doing and the details it knows are safe.
public struct SourceFailure: Error, CustomStringConvertible, Sendable {
    public let description: String

    /// `what` failed (`"connect to 127.0.0.1:5432"`), because of `reason`.
    public init(_ what: String, reason: String) {
        description = "\(what): \(reason)"
    }
}
