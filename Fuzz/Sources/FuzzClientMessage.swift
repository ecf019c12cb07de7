import JSONPlugin
import NIOCore
import SwitchboardCore

/// `client-message`: the bytes as the payload of a client's text message on a `json`
/// endpoint.
///
/// Invariants: `JSONEventEncoder.decode` agrees with `JSONParser` + `ClientMessageDecoding`
/// (and says `bad_message` for anything that is not JSON); an `.other` message carries its
/// own `type`; the reply the kernel would send encodes to JSON that parses back to its
/// envelope; a topic that `TopicPattern` accepts matches and covers itself and is covered by
/// `*`.
func fuzzClientMessage(_ input: UnsafeRawBufferPointer) {
    let decoded = clientJSONEncoder.decode(ByteBuffer(bytes: input))
    let direct: Result<ClientMessage, ClientMessageError>
    do {
        direct = ClientMessageDecoding.interpret(try JSONParser.parse(input))
    } catch {
        guard case .failure(let failure) = decoded else {
            fatalError("fuzz invariant violated: decode accepted input JSONParser rejects (\(error)): \(describeBytes(input))")
        }
        invariant(failure.code == "bad_message", "non-JSON input answered with code \(failure.code)")
        checkReplyEncoding(reply(to: decoded))
        return
    }
    checkSameDecoding(decoded, direct, "JSONEventEncoder.decode")

    switch decoded {
    case .success(.subscribe(let topic, _)), .success(.unsubscribe(let topic)):
        checkTopicPattern(topic)
    case .success(.other(let type, let message)):
        invariant(message["type"]?.stringValue == type, "an .other message whose type is not its 'type' field")
    default:
        break
    }
    checkReplyEncoding(reply(to: decoded))
}

private let clientJSONEncoder = JSONEventEncoder()

/// The reply through the `json` encoder parses back to the reply's envelope.
private func checkReplyEncoding(_ reply: ServerReply) {
    var bytes = ByteBuffer()
    clientJSONEncoder.encode(reply, timestamp: 1_704_225_600, into: &bytes)
    let parsed: JSONValue
    do {
        parsed = try JSONParser.parse(bytes.readableBytesView)
    } catch {
        fatalError("fuzz invariant violated: json reply does not parse (\(error)): \(describeBuffer(bytes))")
    }
    invariant(parsed == reply.envelope(timestamp: 1_704_225_600), "json reply: \(describeBuffer(bytes))")
}

/// Properties every accepted topic pattern has, whatever its text.
private func checkTopicPattern(_ topic: String) {
    guard let pattern = TopicPattern(topic) else { return }
    invariant(pattern.text == topic, "pattern text \(pattern.text) differs from \(topic)")
    invariant(pattern.isCovered(by: pattern), "pattern \(topic) does not cover itself")
    invariant(pattern.isCovered(by: .everything), "pattern \(topic) is not covered by *")
    invariant([TopicPattern.everything].covers(pattern), "[*] does not cover \(topic)")
    if let prefix = pattern.prefix {
        invariant(pattern.isWildcard, "pattern \(topic) has a prefix but is no wildcard")
        invariant(pattern.matches(prefix), "wildcard \(topic) does not match its own prefix")
    } else {
        invariant(pattern.matches(topic), "topic \(topic) does not match itself")
    }
}
