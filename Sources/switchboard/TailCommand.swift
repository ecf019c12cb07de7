import ArgumentParser
import Foundation
import MessagePackPlugin
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket
import SwitchboardCore
import Synchronization

/// `switchboard tail URL [--topic T]… [--format json|msgpack] [--deflate] [--token T] [--raw] [--count N] [--timeout D]`
///
/// Connects to a gateway endpoint like a client would, subscribes, and prints what arrives.
struct TailCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tail",
        abstract: "Connect to a gateway WebSocket endpoint and print its messages as JSON.",
        discussion: """
            Subscribes to every --topic, then prints each server message as it arrives (events and \
            replies such as 'subscribed'): pretty JSON by default, one compact line each with --raw. \
            MessagePack frames are printed as JSON too. Connection notes go to stderr.

            Exit status: 0 after --count events, or when the gateway closes normally (1000, 1001); \
            1 when the upgrade is refused, on a connection error, another close code, or --timeout.

            Examples:
              switchboard tail ws://127.0.0.1:8080/ws --topic metrics
              switchboard tail wss://gateway.example.com/ws --token "$JWT" --topic 'orders:*' --raw | jq .data
              switchboard tail ws://127.0.0.1:8080/ws --format msgpack --deflate --topic demo --count 1 --timeout 10s
            """
    )

    @Argument(help: "Gateway WebSocket URL: ws://host:port/path or wss://host/path.")
    var url: String

    @Option(name: .customLong("topic"), help: "Subscribe to a topic or pattern (repeatable).")
    var topics: [String] = []

    @Option(help: "Wire format: json (subprotocol switchboard.json) or msgpack (switchboard.msgpack).")
    var format: TailFormat = .json

    @Flag(help: "Offer permessage-deflate compression.")
    var deflate = false

    @Option(help: "Send 'Authorization: Bearer TOKEN' with the handshake (a JWT, or an API key).")
    var token: String?

    @Option(name: [.customShort("H"), .customLong("header")], help: "Extra handshake header, 'Name: value' (repeatable).")
    var headers: [String] = []

    @Option(name: .customLong("ca-file"), help: "wss: also trust the CA certificates in this PEM file.")
    var caFile: String?

    @Flag(help: "Print each message as one compact JSON line.")
    var raw = false

    @Option(help: "Exit 0 after this many events (replies such as 'subscribed' do not count).")
    var count: Int?

    @Option(help: "Exit 1 when no event arrives for this long (500ms, 5s, 1m): from the start, then between events.")
    var timeout: CommandDuration?

    func validate() throws {
        guard TailTarget(url) != nil else {
            throw ValidationError("'\(url)' is not a WebSocket URL: use ws://host[:port]/path or wss://host[:port]/path")
        }
        if let count, count < 1 { throw ValidationError("--count must be at least 1") }
        for header in headers where header.firstIndex(of: ":") == nil {
            throw ValidationError("--header '\(header)' is not of the form 'Name: value'")
        }
    }

    func run() async throws {
        guard let target = TailTarget(url) else { throw ValidationError("'\(url)' is not a WebSocket URL") }
        var requestHeaders: [(name: String, value: String)] = []
        if let token { requestHeaders.append((name: "Authorization", value: "Bearer \(token)")) }
        for header in headers {
            guard let colon = header.firstIndex(of: ":") else { continue }
            let name = String(header[..<colon]).trimmingSpaces()
            let value = String(header[header.index(after: colon)...]).trimmingSpaces()
            requestHeaders.append((name: name, value: value))
        }
        var tls: TLSConfiguration?
        if target.secure {
            var configuration = TLSConfiguration.makeClientConfiguration()
            if let caFile { configuration.additionalTrustRoots = [.file(caFile)] }
            tls = configuration
        }
        let session = TailSession(
            request: WebSocketTailClient.Request(
                target: target, subprotocol: format.subprotocol, offerDeflate: deflate, headers: requestHeaders, tls: tls
            ),
            topics: topics,
            messagePack: format == .msgpack,
            raw: raw,
            count: count,
            idleTimeout: timeout?.duration
        )
        switch await session.run() {
        case .countReached:
            return
        case .closed(let code, let reason):
            let status = code.map { String($0) } ?? "no status code"
            CommandOutput.error("tail: closed by the gateway: \(status)\(reason.isEmpty ? "" : " (\(reason))")")
            if code == nil || code == 1000 || code == 1001 { return }
            throw ExitCode(1)
        case .refused(let status, let body):
            let line = status.map { "HTTP \($0.code) \($0.reasonPhrase)" } ?? "no HTTP status"
            CommandOutput.error("tail: the gateway refused the WebSocket upgrade: \(line)")
            if !body.isEmpty { CommandOutput.error(body) }
            throw ExitCode(1)
        case .timedOut:
            CommandOutput.error("tail: no event within \(timeout?.description ?? "the timeout")")
            throw ExitCode(1)
        case .failed(let message):
            CommandOutput.error("tail: \(message)")
            throw ExitCode(1)
        }
    }
}

/// The `--format` of `tail`.
enum TailFormat: String, ExpressibleByArgument, CaseIterable, Sendable {
    case json, msgpack

    var subprotocol: String { "switchboard.\(rawValue)" }
}

/// How a `tail` session ended.
enum TailEnd: Sendable {
    case countReached
    case closed(code: UInt16?, reason: String)
    case refused(status: HTTPResponseStatus?, body: String)
    case timedOut
    case failed(String)
}

/// One `tail` connection: handshake, subscribe, read until the count, a close or an error.
struct TailSession: Sendable {
    var request: WebSocketTailClient.Request
    var topics: [String]
    var messagePack: Bool
    var raw: Bool
    var count: Int?
    var idleTimeout: Duration?

    /// How long to wait for the gateway's answer to our close frame once the count is reached.
    static let closeGrace: Duration = .seconds(2)

    func run() async -> TailEnd {
        let deadline = TailDeadline(after: idleTimeout)
        let watcher = Task { await deadline.watch() }
        defer { watcher.cancel() }

        let handshake: WebSocketTailClient.Handshake
        do {
            handshake = try await WebSocketTailClient.connect(request) { channel in deadline.attach(channel) }
        } catch {
            if deadline.expired { return .timedOut }
            return .failed("cannot connect to \(request.target): \(Self.describe(error))")
        }
        switch handshake {
        case .refused(let response):
            do {
                let (status, body) = try await WebSocketTailClient.readRefusal(response)
                return .refused(status: status, body: body)
            } catch {
                return deadline.expired ? .timedOut : .failed("the handshake failed: \(Self.describe(error))")
            }
        case .upgraded(let frames, let head):
            do {
                return try await frames.executeThenClose { (inbound) -> TailEnd in
                    try await stream(inbound, channel: frames.channel, head: head, deadline: deadline)
                }
            } catch {
                return deadline.expired ? .timedOut : .failed("connection error: \(Self.describe(error))")
            }
        }
    }

    /// Subscribes, then reads frames and executes what ``TailMessageAssembler`` asks for.
    private func stream(
        _ inbound: NIOAsyncChannelInboundStream<WebSocketFrame>, channel: any Channel, head: HTTPResponseHead, deadline: TailDeadline
    ) async throws -> TailEnd {
        let chosen = head.headers.first(name: "Sec-WebSocket-Protocol")
        if let chosen, chosen != request.subprotocol {
            return .failed("the gateway chose the subprotocol '\(chosen)', not '\(request.subprotocol)'")
        }
        let agreement: TailDeflateAgreement?
        var assembler: TailMessageAssembler
        do {
            agreement = try WebSocketTailClient.deflateAgreement(in: head, offered: request.offerDeflate)
            assembler = try TailMessageAssembler(deflate: agreement, maxMessageSize: WebSocketTailClient.maxMessageSize)
        } catch {
            return .failed("\(error)")
        }
        let compression = agreement.map { ", \($0.header)" } ?? ""
        CommandOutput.error("tail: connected to \(request.target) (\(chosen ?? "no subprotocol")\(compression))")

        for topic in topics {
            let message = WebSocketTailClient.subscribeMessage(topic: topic, messagePack: messagePack)
            try await WebSocketTailClient.send(message.opcode, message.payload, on: channel)
        }

        var events = 0
        var closing = false  // we sent close 1000 after the count; waiting for the answer
        do {
            for try await frame in inbound {
                switch assembler.receive(frame) {
                case .nothing:
                    continue
                case .pong(let payload):
                    try await WebSocketTailClient.send(.pong, payload, on: channel)
                case .close(let code, let reason):
                    if closing { return .countReached }
                    let echo = code.map { WebSocketTailClient.closePayload(code: $0) } ?? ByteBuffer()
                    try? await WebSocketTailClient.send(.connectionClose, echo, on: channel)
                    return .closed(code: code, reason: reason)
                case .fail(let code, let reason):
                    try? await WebSocketTailClient.send(.connectionClose, WebSocketTailClient.closePayload(code: code, reason: reason), on: channel)
                    return closing ? .countReached : .failed("protocol error from the gateway: \(reason)")
                case .message(let binary, let payload):
                    if closing { continue }
                    guard let value = decode(binary: binary, payload: payload) else { continue }
                    CommandOutput.line(TailPrinter.render(value, raw: raw))
                    if Self.isReply(value) { continue }
                    events += 1
                    deadline.restart(idleTimeout)
                    if let count, events >= count {
                        closing = true
                        try await WebSocketTailClient.send(.connectionClose, WebSocketTailClient.closePayload(code: 1000), on: channel)
                        deadline.restart(Self.closeGrace)
                    }
                }
            }
        } catch {
            if closing { return .countReached }
            throw error
        }
        if closing { return .countReached }
        return deadline.expired ? .timedOut : .failed("the connection ended without a close frame")
    }

    /// The `type`s of the gateway's replies to one client (Docs/protocol.md, "Server → client").
    static let replyTypes: Set<String> = ["subscribed", "unsubscribed", "pong", "error", "refreshed"]

    /// Whether a message is a reply rather than an event: replies never carry a `topic`
    /// (events do, unless the endpoint leaves it out with `envelope: {topic: false}`).
    static func isReply(_ value: JSONValue) -> Bool {
        guard value["topic"] == nil, let type = value["type"]?.stringValue else { return false }
        return replyTypes.contains(type)
    }

    /// The message as JSON; `nil` (with a note on stderr) when it cannot be decoded.
    private func decode(binary: Bool, payload: ByteBuffer) -> JSONValue? {
        if binary {
            switch MessagePackReader.read(payload) {
            case .success(let value): return value
            case .failure(let error):
                CommandOutput.error("tail: skipped a binary message that is not valid MessagePack (\(payload.readableBytes) bytes): \(error.message)")
                return nil
            }
        }
        do {
            return try JSONParser.parse(payload.readableBytesView)
        } catch {
            CommandOutput.error("tail: a text message is not JSON (\(error)); printed as is")
            CommandOutput.line(String(buffer: payload))
            return nil
        }
    }

    /// A short description of a connection error (NIO's own are long).
    static func describe(_ error: any Error) -> String {
        if let connection = error as? NIOConnectionError {
            if let failure = connection.connectionErrors.first { return "\(failure.error)" }
            if connection.dnsAError != nil || connection.dnsAAAAError != nil { return "cannot resolve '\(connection.host)'" }
        }
        return "\(error)"
    }
}

/// `--timeout` for `tail`: a deadline that events push back, and that closes the channel when
/// it passes (which ends a pending connect, handshake or read).
final class TailDeadline: Sendable {
    private struct State {
        var deadline: ContinuousClock.Instant?
        var channel: (any Channel)?
        var expired = false
    }

    private let state: Mutex<State>

    /// `nil`: no deadline until ``restart(_:)`` sets one.
    init(after duration: Duration?) {
        state = Mutex(State(deadline: duration.map { ContinuousClock.now + $0 }))
    }

    /// Whether the deadline passed (and the channel was closed because of it).
    var expired: Bool { state.withLock { $0.expired } }

    /// The channel to close when the deadline passes.
    func attach(_ channel: any Channel) {
        let expired = state.withLock { current in
            current.channel = channel
            return current.expired
        }
        if expired { channel.close(promise: nil) }
    }

    /// Moves the deadline to `duration` from now (`nil`: no deadline).
    func restart(_ duration: Duration?) {
        let deadline = duration.map { ContinuousClock.now + $0 }
        state.withLock { $0.deadline = deadline }
    }

    /// Polls until the deadline passes (then closes the channel) or the task is cancelled.
    func watch() async {
        while !Task.isCancelled {
            let now = ContinuousClock.now
            let fired: (fired: Bool, channel: (any Channel)?) = state.withLock { current in
                guard !current.expired, let deadline = current.deadline, now >= deadline else { return (false, nil) }
                current.expired = true
                return (true, current.channel)
            }
            if fired.fired {
                fired.channel?.close(promise: nil)
                return
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
    }
}

/// Renders messages for `tail`: pretty JSON with a 2-space indent and keys in the order
/// received, or compact JSON on one line.
enum TailPrinter {
    static func render(_ value: JSONValue, raw: Bool) -> String {
        var buffer = ByteBuffer()
        if raw {
            JSONWriter.write(value, into: &buffer)
        } else {
            writePretty(value, indent: 0, into: &buffer)
        }
        return String(buffer: buffer)
    }

    private static func writePretty(_ value: JSONValue, indent: Int, into buffer: inout ByteBuffer) {
        switch value {
        case .array(let elements) where !elements.isEmpty:
            buffer.writeStaticString("[\n")
            for (index, element) in elements.enumerated() {
                if index > 0 { buffer.writeStaticString(",\n") }
                buffer.writeRepeatingByte(UInt8(ascii: " "), count: indent + 2)
                writePretty(element, indent: indent + 2, into: &buffer)
            }
            buffer.writeStaticString("\n")
            buffer.writeRepeatingByte(UInt8(ascii: " "), count: indent)
            buffer.writeStaticString("]")
        case .object(let object) where !object.entries.isEmpty:
            buffer.writeStaticString("{\n")
            for (index, entry) in object.entries.enumerated() {
                if index > 0 { buffer.writeStaticString(",\n") }
                buffer.writeRepeatingByte(UInt8(ascii: " "), count: indent + 2)
                JSONWriter.writeString(entry.key, into: &buffer)
                buffer.writeStaticString(": ")
                writePretty(entry.value, indent: indent + 2, into: &buffer)
            }
            buffer.writeStaticString("\n")
            buffer.writeRepeatingByte(UInt8(ascii: " "), count: indent)
            buffer.writeStaticString("}")
        default:
            JSONWriter.write(value, into: &buffer)
        }
    }
}

/// Writes whole lines straight to the file descriptors (no stdio buffering), so a pipe sees
/// each message as soon as it is printed.
enum CommandOutput {
    /// One line on stdout.
    static func line(_ text: String) { write(text, to: FileHandle.standardOutput) }

    /// One line on stderr.
    static func error(_ text: String) { write(text, to: FileHandle.standardError) }

    private static func write(_ text: String, to handle: FileHandle) {
        try? handle.write(contentsOf: Data((text + "\n").utf8))
    }
}

/// A duration option (`500ms`, `5s`, `1m`), parsed like durations in the configuration.
struct CommandDuration: ExpressibleByArgument, Sendable, CustomStringConvertible {
    var duration: Duration
    /// As written on the command line.
    var description: String

    init?(argument: String) {
        guard let parsed = ConfigDuration(parsing: argument), parsed.nanoseconds > 0 else { return nil }
        duration = parsed.duration
        description = argument
    }

    init(seconds: Int64) {
        duration = .seconds(seconds)
        description = "\(seconds)s"
    }

    var defaultValueDescription: String { description }
}
