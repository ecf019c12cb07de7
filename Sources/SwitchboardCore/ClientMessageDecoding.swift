/// Turns a parsed client message (from JSON or any other format) into a ``ClientMessage``.
public enum ClientMessageDecoding {
    public static func interpret(_ message: JSONValue) -> Result<ClientMessage, ClientMessageError> {
        guard case .object(let object) = message else {
            return .failure(ClientMessageError(code: "bad_message", message: "expected a JSON object, got \(message.kindName)"))
        }
        guard let type = object["type"]?.stringValue else {
            return .failure(ClientMessageError(code: "bad_message", message: "missing string field 'type'"))
        }
        switch type {
        case "subscribe", "unsubscribe":
            guard let topic = object["data"]?.stringValue ?? object["topic"]?.stringValue else {
                return .failure(ClientMessageError(code: "bad_message", message: "'\(type)' needs the topic as a string in 'data', e.g. \"data\":\"topic:orders\""))
            }
            guard type == "subscribe" else { return .success(.unsubscribe(topic)) }
            return subscribeOptions(object).map { .subscribe(topic, $0) }
        case "ping":
            return .success(.ping)
        default:
            return .success(.other(type: type, message: message))
        }
    }

    /// `since` and `last` of a subscribe; at most one of them.
    static func subscribeOptions(_ object: JSONObject) -> Result<SubscribeOptions, ClientMessageError> {
        var options = SubscribeOptions()
        if let since = object["since"], since != .null {
            guard let position = StreamPosition(json: since) else {
                return .failure(ClientMessageError(code: "bad_message", message: #"'since' must be a position, e.g. {"epoch":"k3x9f2","offset":41}"#))
            }
            options.since = position
        }
        if let last = object["last"], last != .null {
            guard case .int(let count) = last, count >= 0, count <= Int64(Int32.max) else {
                return .failure(ClientMessageError(code: "bad_message", message: "'last' must be a whole number of events, 0 or more"))
            }
            options.last = Int(count)
        }
        if options.since != nil && options.last != nil {
            return .failure(ClientMessageError(code: "bad_message", message: "a subscribe takes 'since' or 'last', not both"))
        }
        return .success(options)
    }
}
