import NIOCore
import SwitchboardCore

/// Traps with `message` when `condition` is false.
///
/// Used instead of `precondition`, whose message `-O` builds drop: the fuzzer runs release
/// builds, and a crash report should say which invariant broke. Only for invariants that
/// hold for every input; a violation is a bug in the code under test (or in the invariant).
func invariant(
    _ condition: @autoclosure () -> Bool,
    _ message: @autoclosure () -> String,
    file: StaticString = #fileID,
    line: UInt = #line
) {
    if !condition() {
        fatalError("fuzz invariant violated: \(message())", file: file, line: line)
    }
}

/// Container nesting of a value: 0 for a scalar, 1 + the deepest member for an array or object.
func jsonNesting(_ value: JSONValue) -> Int {
    switch value {
    case .array(let elements):
        return 1 + (elements.map { jsonNesting($0) }.max() ?? 0)
    case .object(let object):
        return 1 + (object.entries.map { jsonNesting($0.value) }.max() ?? 0)
    default:
        return 0
    }
}

/// Whether every double in the value is finite (JSON cannot carry NaN or infinities;
/// MessagePack can).
func jsonDoublesAreFinite(_ value: JSONValue) -> Bool {
    switch value {
    case .double(let number): return number.isFinite
    case .array(let elements): return elements.allSatisfy { jsonDoublesAreFinite($0) }
    case .object(let object): return object.entries.allSatisfy { jsonDoublesAreFinite($0.value) }
    default: return true
    }
}

/// `==`, except that NaN equals NaN (`JSONValue`'s synthesized `==` says a value holding NaN
/// differs from itself).
func sameJSON(_ lhs: JSONValue, _ rhs: JSONValue) -> Bool {
    switch (lhs, rhs) {
    case (.double(let l), .double(let r)):
        return l == r || (l.isNaN && r.isNaN)
    case (.array(let l), .array(let r)):
        return l.count == r.count && zip(l, r).allSatisfy { sameJSON($0, $1) }
    case (.object(let l), .object(let r)):
        return l.entries.count == r.entries.count
            && zip(l.entries, r.entries).allSatisfy { $0.key == $1.key && sameJSON($0.value, $1.value) }
    default:
        return lhs == rhs
    }
}

/// `==` on client messages with ``sameJSON(_:_:)`` for the message an `.other` carries.
func sameClientMessage(_ lhs: ClientMessage, _ rhs: ClientMessage) -> Bool {
    if case .other(let lType, let lMessage) = lhs, case .other(let rType, let rMessage) = rhs {
        return lType == rType && sameJSON(lMessage, rMessage)
    }
    return lhs == rhs
}

/// Checks that two decodings of the same payload agree.
func checkSameDecoding(
    _ lhs: Result<ClientMessage, ClientMessageError>,
    _ rhs: Result<ClientMessage, ClientMessageError>,
    _ what: String
) {
    switch (lhs, rhs) {
    case (.success(let l), .success(let r)):
        invariant(sameClientMessage(l, r), "\(what): decoded \(l), expected \(r)")
    case (.failure(let l), .failure(let r)):
        invariant(l == r, "\(what): failed with \(l), expected \(r)")
    default:
        invariant(false, "\(what): \(lhs), expected \(rhs)")
    }
}

/// The reply the kernel sends for a decoded client message (ClientSession's answers), so the
/// encoders' reply path sees every topic and error text a client can provoke.
func reply(to decoded: Result<ClientMessage, ClientMessageError>) -> ServerReply {
    switch decoded {
    case .success(.subscribe(let topic, let options)):
        return .subscribed(topic, options.since.map { SubscriptionHistory(position: $0, recovered: false) })
    case .success(.unsubscribe(let topic)): return .unsubscribed(topic)
    case .success(.ping): return .pong
    case .success(.other(let type, _)): return .error(code: "unknown_type", message: "unknown message type '\(type)'")
    case .failure(let error): return .error(code: error.code, message: error.message)
    }
}

/// The envelope layout both encoders write for an event without an `id`:
/// `{"type","topic","timestamp","data"}`.
func envelope(type: String, topic: String, timestamp: Int64, data: JSONValue) -> JSONValue {
    .object(JSONObject([("type", .string(type)), ("topic", .string(topic)), ("timestamp", .int(timestamp)), ("data", data)]))
}

/// A short printable form of bytes for invariant messages.
func describeBytes<Bytes: Collection<UInt8>>(_ bytes: Bytes) -> String {
    let shown = bytes.prefix(64).map { byte -> String in
        let hex = String(byte, radix: 16)
        return hex.count == 1 ? "0" + hex : hex
    }
    return "\(bytes.count) bytes [\(shown.joined(separator: " "))\(bytes.count > 64 ? " …" : "")]"
}

/// `describeBytes` of a buffer's readable bytes.
func describeBuffer(_ buffer: ByteBuffer) -> String {
    describeBytes(buffer.readableBytesView)
}
