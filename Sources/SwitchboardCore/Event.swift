/// One message travelling from a source to subscribers.
///
/// Sources build events; the kernel routes them by `topic`; encoders turn them into bytes.
/// An event is immutable once published and shared by every recipient.
public struct Event: Sendable, Equatable {
    /// Routing key, e.g. `metrics` or `topic:orders`.
    public var topic: String
    /// Message type shown to clients (`metrics`, `topic_created`, `job_update`, …).
    public var type: String
    /// Payload.
    public var data: JSONValue
    /// Offset or id, when the source has one (stream ids, history sequence numbers).
    public var id: String?
    /// Seconds since the Unix epoch, as the host systems' protocols use.
    public var timestamp: Int64
    /// How encoders lay the event out for clients.
    public var shape: EventShape
    /// The event's place in its topic's history; set by the kernel when the topic keeps
    /// history (`history:`), nil otherwise. Sources leave it nil.
    public var position: StreamPosition?

    /// Creates an event; `timestamp` defaults to now.
    public init(
        topic: String, type: String, data: JSONValue, id: String? = nil, timestamp: Int64? = nil, shape: EventShape = .envelope,
        position: StreamPosition? = nil
    ) {
        self.topic = topic
        self.type = type
        self.data = data
        self.id = id
        self.timestamp = timestamp ?? UnixTime.nowSeconds()
        self.shape = shape
        self.position = position
    }

    /// The `envelope` layout as a value: `{"type","topic","id"?,"position"?,"timestamp","data"}`
    /// (`topic` left out when `includesTopic` is false). The built-in encoders write the same
    /// fields straight into bytes; this is for other formats and for checking them.
    public func envelopeValue(includesTopic: Bool = true) -> JSONValue {
        var object = JSONObject([("type", .string(type))])
        if includesTopic { object.entries.append(("topic", .string(topic))) }
        if let id { object.entries.append(("id", .string(id))) }
        if let position { object.entries.append(("position", position.jsonValue)) }
        object.entries.append(("timestamp", .int(timestamp)))
        object.entries.append(("data", data))
        return .object(object)
    }

    /// The `flat` layout: `{"type": …, <the data object's fields>}`, or
    /// `{"type": …, "data": …}` when the data is not an object; with a position, a
    /// `position` field follows `type` (replacing one of the data's own).
    public var flatValue: JSONValue {
        guard case .object(let object) = data else {
            var flat = JSONObject([("type", .string(type))])
            if let position { flat.entries.append(("position", position.jsonValue)) }
            flat.entries.append(("data", data))
            return .object(flat)
        }
        var flat = JSONObject([("type", .string(type))])
        if let position { flat.entries.append(("position", position.jsonValue)) }
        for entry in object.entries where entry.key != "type" && (position == nil || entry.key != "position") { flat.entries.append(entry) }
        return .object(flat)
    }
}

/// The layout of an event on the wire.
public enum EventShape: String, Sendable, ConfigEnum {
    /// `{"type","topic","id"?,"timestamp","data"}`: the default.
    case envelope
    /// `{"type", …data's fields}`: what hubs that relay a backend's JSON objects with an
    /// added `type` send (Botrix's `job_update`).
    case flat
    public static var configPlaceholder: EventShape { .envelope }
}

/// Wall-clock helpers (seconds and milliseconds since the Unix epoch).
public enum UnixTime {
    /// Current time in whole seconds.
    public static func nowSeconds() -> Int64 {
        nowMilliseconds() / 1000
    }

    /// Current time in milliseconds.
    public static func nowMilliseconds() -> Int64 {
        let duration = ContinuousClockReference.wallNow()
        return duration
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

enum ContinuousClockReference {
    static func wallNow() -> Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Int64(spec.tv_sec) * 1000 + Int64(spec.tv_nsec) / 1_000_000
    }
}
