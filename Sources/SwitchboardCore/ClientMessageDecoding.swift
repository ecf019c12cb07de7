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
            return .success(type == "subscribe" ? .subscribe(topic) : .unsubscribe(topic))
        case "ping":
            return .success(.ping)
        default:
            return .success(.other(type: type, message: message))
        }
    }
}
