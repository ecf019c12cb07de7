import NIOCore

/// Whether an encoder's output travels in WebSocket text or binary frames.
public enum FrameKind: Sendable, Equatable {
    case text
    case binary
}

/// A message a client sends to the gateway, decoded by the connection's encoder.
public enum ClientMessage: Sendable, Equatable {
    /// Start receiving events of a topic or trailing-wildcard pattern (`"data":"topic:x"`),
    /// optionally replaying history first (`since`, `last`).
    case subscribe(String, SubscribeOptions = SubscribeOptions())
    /// Stop receiving events of a topic or pattern.
    case unsubscribe(String)
    /// Application-level keep-alive; answered with `pong`.
    case ping
    /// Any other message kind this encoder understands but the kernel does not handle itself
    /// (for example a token `refresh`); carries the type name and the whole message.
    case other(type: String, message: JSONValue)
}

/// What a `subscribe` asks of the topic's history.
public struct SubscribeOptions: Sendable, Equatable {
    /// Resume: replay every kept event after this position (`"since":{"epoch","offset"}`).
    public var since: StreamPosition?
    /// Replay the newest this many kept events (`"last": N`).
    public var last: Int?

    public init(since: StreamPosition? = nil, last: Int? = nil) {
        self.since = since
        self.last = last
    }

    /// Neither `since` nor `last`.
    public var isEmpty: Bool { since == nil && last == nil }
}

/// What a subscribe found in the topic's history, for the `subscribed` reply.
public struct SubscriptionHistory: Sendable, Equatable {
    /// The topic's newest kept position (offset 0 before its first event); nil when the
    /// topic keeps no history (a `since` is then answered `recovered: false`).
    public var position: StreamPosition?
    /// With `since`: whether every event after it was replayed (`false`: the history no
    /// longer covers it, or it is from another epoch; nothing was replayed).
    public var recovered: Bool?
    /// How many kept events were replayed after the reply.
    public var replayed: Int

    public init(position: StreamPosition?, recovered: Bool? = nil, replayed: Int = 0) {
        self.position = position
        self.recovered = recovered
        self.replayed = replayed
    }
}

/// Why a client message could not be decoded; sent back as an `error` reply.
public struct ClientMessageError: Error, Sendable, Equatable {
    /// Machine-readable code (`bad_message`, `unknown_type`, …).
    public var code: String
    /// Human-readable explanation, including the parse position when there is one.
    public var message: String

    public init(code: String, message: String) {
        self.code = code
        self.message = message
    }
}

/// A reply the gateway sends to one client (not a broadcast).
public enum ServerReply: Sendable, Equatable {
    /// Answer to a `ping` message.
    case pong
    /// Acknowledges a subscription so the client knows events will flow from now on; for a
    /// topic that keeps history, with its position and what was replayed.
    case subscribed(String, SubscriptionHistory? = nil)
    /// Acknowledges an unsubscription.
    case unsubscribed(String)
    /// Something the client sent was refused; the connection stays open.
    case error(code: String, message: String)
    /// A `refresh` message's new credential was accepted; `expiresAt` (seconds since the
    /// epoch) is when the connection will now be closed unless refreshed again.
    case refreshed(expiresAt: Int64?)
}

extension ServerReply {
    /// The reply as the envelope every encoder sends: `{"type","timestamp","data"?}`.
    public func envelope(timestamp: Int64) -> JSONValue {
        switch self {
        case .pong:
            return ["type": "pong", "timestamp": .int(timestamp)]
        case .subscribed(let topic, nil):
            return ["type": "subscribed", "timestamp": .int(timestamp), "data": .string(topic)]
        case .subscribed(let topic, let history?):
            var object = JSONObject([
                ("type", "subscribed"), ("timestamp", .int(timestamp)), ("data", .string(topic)), ("position", history.position?.jsonValue ?? .null),
            ])
            if let recovered = history.recovered { object.entries.append(("recovered", .bool(recovered))) }
            object.entries.append(("replayed", .int(Int64(history.replayed))))
            return .object(object)
        case .unsubscribed(let topic):
            return ["type": "unsubscribed", "timestamp": .int(timestamp), "data": .string(topic)]
        case .error(let code, let message):
            return ["type": "error", "timestamp": .int(timestamp), "data": ["code": .string(code), "message": .string(message)]]
        case .refreshed(let expiresAt):
            return ["type": "refreshed", "timestamp": .int(timestamp), "data": ["expires_at": expiresAt.map { .int($0) } ?? .null]]
        }
    }
}

/// Turns events into the bytes of one WebSocket message payload, and client payloads into
/// ``ClientMessage``s.
///
/// Encoders run once per event and variant on the broadcast path, never per recipient, so
/// they must be pure: the same event always yields the same bytes.
public protocol EventEncoder: Sendable {
    /// The format name used in YAML (`encoders: [json]`) and in `?format=`.
    var name: String { get }
    /// The `Sec-WebSocket-Protocol` value that selects this encoder.
    var subprotocol: String { get }
    /// Text or binary frames.
    var frameKind: FrameKind { get }
    /// Appends the payload for `event`.
    func encode(_ event: Event, into buffer: inout ByteBuffer)
    /// Appends the payload for a reply to one client; `timestamp` is seconds since the epoch.
    func encode(_ reply: ServerReply, timestamp: Int64, into buffer: inout ByteBuffer)
    /// Decodes one complete client message.
    func decode(_ payload: ByteBuffer) -> Result<ClientMessage, ClientMessageError>
    /// Identifies the wire form (default: `name`); see the extension.
    var variantKey: String { get }
    /// The encoder without the envelope's `topic` field (default: nil).
    func omittingTopic() -> (any EventEncoder)?
    /// Decodes one complete client message nesting at most `maxDepth` levels (the
    /// endpoint's `max_message_depth`); deeper input is a `bad_message` error.
    func decode(_ payload: ByteBuffer, maxDepth: Int) -> Result<ClientMessage, ClientMessageError>
}

extension EventEncoder {
    /// Identifies the encoder's wire form among the kernel's variants: two encoders with
    /// the same key produce the same bytes for every event.
    public var variantKey: String { name }



    /// The same encoder with events' `topic` field left out of the envelope (an endpoint's
    /// `envelope: {topic: false}`), or nil when it cannot.
    public func omittingTopic() -> (any EventEncoder)? { nil }

    /// Encoders that know no depth limit of their own decode as usual.
    public func decode(_ payload: ByteBuffer, maxDepth: Int) -> Result<ClientMessage, ClientMessageError> {
        decode(payload)
    }
}

/// A sink encoder plugin: registered by ``typeName`` and named in endpoint `encoders:` lists.
public protocol EncoderPlugin: SendableMetatype {
    /// The name used in YAML.
    static var typeName: String { get }
    /// Summary and examples for generated docs.
    static var spec: PluginSpec { get }
    /// Creates the encoder.
    static func make() -> any EventEncoder
}

/// The ``EventEncoder/variantKey`` convention: the encoder's name, with `;no-topic` when its
/// envelope leaves the topic out.
public enum EncoderVariant {
    public static func key(name: String, includesTopic: Bool) -> String {
        includesTopic ? name : name + ";no-topic"
    }
}
