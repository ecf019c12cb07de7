import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket
import SwitchboardCore
import SwitchboardKernel

/// A gateway WebSocket address as `switchboard tail` takes it: `ws://host[:port]/path?query`
/// or `wss://…` (`http`/`https` are accepted as aliases).
struct TailTarget: Sendable, CustomStringConvertible {
    var secure: Bool
    /// Host name or IP address, without the brackets of an IPv6 literal.
    var host: String
    var port: Int
    /// Path and query sent in the request line; at least `/`.
    var requestTarget: String

    /// `nil` when `text` is not an absolute ws/wss URL (user info is not supported).
    init?(_ text: String) {
        let schemes: [(prefix: String, secure: Bool)] = [("ws://", false), ("wss://", true), ("http://", false), ("https://", true)]
        let lowered = text.lowercased()
        guard let scheme = schemes.first(where: { lowered.hasPrefix($0.prefix) }) else { return nil }
        let rest = text.dropFirst(scheme.prefix.count)
        let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" || $0 == "#" } ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        var target = rest[authorityEnd...]
        if let fragment = target.firstIndex(of: "#") { target = target[..<fragment] }
        guard !authority.isEmpty, !authority.contains("@") else { return nil }

        let host: Substring
        var portText: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { return nil }
            host = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { return nil }
                portText = after.dropFirst()
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = authority[..<colon]
            portText = authority[authority.index(after: colon)...]
        } else {
            host = authority
        }
        guard !host.isEmpty else { return nil }
        var port = scheme.secure ? 443 : 80
        if let portText {
            guard let value = Int(portText), (1...65535).contains(value) else { return nil }
            port = value
        }
        self.secure = scheme.secure
        self.host = String(host)
        self.port = port
        if target.isEmpty {
            self.requestTarget = "/"
        } else {
            self.requestTarget = target.hasPrefix("?") ? "/" + String(target) : String(target)
        }
    }

    /// The `Host` header: brackets around an IPv6 literal, the port unless it is the default.
    var hostHeader: String {
        let name = host.contains(":") ? "[\(host)]" : host
        return port == (secure ? 443 : 80) ? name : "\(name):\(port)"
    }

    /// Whether `host` is an IP literal (TLS then verifies the certificate's IP SAN and sends no SNI).
    var isIPAddress: Bool { (try? SocketAddress(ipAddress: host, port: 0)) != nil }

    var description: String { "\(secure ? "wss" : "ws")://\(hostHeader)\(requestTarget)" }
}

/// A problem `tail` reports and exits on.
struct TailClientError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// The WebSocket client behind `switchboard tail`: one NIO channel, upgraded with NIO's
/// typed client upgrader; frames arrive through an `NIOAsyncChannel` (an async sequence with
/// back-pressure) and frames are written, masked, straight to the channel.
enum WebSocketTailClient {
    /// The largest message (and frame) accepted from the gateway, after inflation.
    static let maxMessageSize = 16 << 20

    /// RFC 7692 offer. No context takeover in either direction keeps both sides stateless:
    /// the gateway's shared mode answers it as is, and every message inflates on its own.
    static let deflateOffer = "permessage-deflate; client_no_context_takeover; server_no_context_takeover"

    /// How the opening handshake ended.
    enum Handshake: Sendable {
        /// 101: frames follow; the response head carries the negotiated subprotocol and extensions.
        case upgraded(NIOAsyncChannel<WebSocketFrame, Never>, HTTPResponseHead)
        /// Any other status: the HTTP response (head, body, end) follows on the channel.
        case refused(NIOAsyncChannel<HTTPClientResponsePart, Never>)
    }

    /// What the handshake asks for.
    struct Request: Sendable {
        var target: TailTarget
        var subprotocol: String
        var offerDeflate: Bool
        /// Extra request headers (`Authorization`, `-H` options).
        var headers: [(name: String, value: String)]
        /// TLS settings for `wss`; `nil` for plain `ws`.
        var tls: TLSConfiguration?
    }

    /// Connects and performs the opening handshake. `onChannel` sees the channel as soon as
    /// it exists, so a deadline can close it while the connect or the handshake is pending.
    static func connect(_ request: Request, onChannel: @escaping @Sendable (any Channel) -> Void) async throws -> Handshake {
        let sslContext: NIOSSLContext? = try request.tls.map { try NIOSSLContext(configuration: $0) }
        let serverHostname: String? = request.target.isIPAddress ? nil : request.target.host
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: request.target.hostHeader)
        headers.add(name: "User-Agent", value: "switchboard-tail")
        headers.add(name: "Sec-WebSocket-Protocol", value: request.subprotocol)
        if request.offerDeflate { headers.add(name: "Sec-WebSocket-Extensions", value: deflateOffer) }
        for header in request.headers { headers.add(name: header.name, value: header.value) }
        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: request.target.requestTarget, headers: headers)

        let upgrade: EventLoopFuture<Handshake> = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.seconds(10))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connect(host: request.target.host, port: request.target.port) { (channel: any Channel) -> EventLoopFuture<EventLoopFuture<Handshake>> in
                onChannel(channel)
                return channel.eventLoop.makeCompletedFuture { () throws -> EventLoopFuture<Handshake> in
                    if let sslContext {
                        let tlsHandler = try NIOSSLClientHandler(context: sslContext, serverHostname: serverHostname)
                        try channel.pipeline.syncOperations.addHandler(tlsHandler)
                    }
                    return try channel.pipeline.syncOperations.configureUpgradableHTTPClientPipeline(
                        configuration: WebSocketTailClient.pipelineConfiguration(head: head)
                    )
                }
            }
        return try await upgrade.get()
    }

    private static func pipelineConfiguration(head: HTTPRequestHead) -> NIOUpgradableHTTPClientPipelineConfiguration<Handshake> {
        let upgrader = NIOTypedWebSocketClientUpgrader<Handshake>(
            maxFrameSize: maxMessageSize,
            upgradePipelineHandler: { channel, response in
                channel.eventLoop.makeCompletedFuture { () throws -> Handshake in
                    let frames = try NIOAsyncChannel<WebSocketFrame, Never>(wrappingChannelSynchronously: channel)
                    return Handshake.upgraded(frames, response)
                }
            }
        )
        let upgradeConfiguration = NIOTypedHTTPClientUpgradeConfiguration<Handshake>(
            upgradeRequestHead: head,
            upgraders: [upgrader],
            notUpgradingCompletionHandler: { channel in
                channel.eventLoop.makeCompletedFuture { () throws -> Handshake in
                    let response = try NIOAsyncChannel<HTTPClientResponsePart, Never>(wrappingChannelSynchronously: channel)
                    return Handshake.refused(response)
                }
            }
        )
        var configuration = NIOUpgradableHTTPClientPipelineConfiguration<Handshake>(upgradeConfiguration: upgradeConfiguration)
        // Frames the gateway sends right behind its 101 (a retained event, say) arrive in the
        // same read as the response: hand them on to the frame decoder instead of dropping them.
        configuration.leftOverBytesStrategy = .forwardBytes
        return configuration
    }

    /// Reads a refused handshake's response: its status and (the first 64 KiB of) its body.
    static func readRefusal(_ response: NIOAsyncChannel<HTTPClientResponsePart, Never>) async throws -> (status: HTTPResponseStatus?, body: String) {
        let (head, body) = try await response.executeThenClose { (inbound) -> (HTTPResponseHead?, ByteBuffer) in
            var head: HTTPResponseHead?
            var body = ByteBuffer()
            for try await part in inbound {
                switch part {
                case .head(let received): head = received
                case .body(var chunk):
                    if body.readableBytes < 64 * 1024 { body.writeBuffer(&chunk) }
                case .end: return (head, body)
                }
            }
            return (head, body)
        }
        return (head?.status, String(buffer: body))
    }

    /// The permessage-deflate agreement in a 101 response; throws when the gateway accepted
    /// an extension or a parameter that was not offered (RFC 6455 §9.1: fail the connection).
    static func deflateAgreement(in response: HTTPResponseHead, offered: Bool) throws -> TailDeflateAgreement? {
        let extensions = response.headers[canonicalForm: "Sec-WebSocket-Extensions"]
        guard let accepted = extensions.first else { return nil }
        guard offered, extensions.count == 1 else {
            throw TailClientError("the gateway accepted a WebSocket extension that was not offered: \(extensions.joined(separator: ", "))")
        }
        let parameters = accepted.split(separator: ";").map { String($0).trimmingSpaces() }
        guard parameters.first?.lowercased() == "permessage-deflate" else {
            throw TailClientError("the gateway accepted an unknown WebSocket extension: \(accepted)")
        }
        var agreement = TailDeflateAgreement(serverNoContextTakeover: false, header: String(accepted))
        for parameter in parameters.dropFirst() {
            let name = (parameter.split(separator: "=", maxSplits: 1).first.map { String($0) } ?? "").trimmingSpaces().lowercased()
            switch name {
            case "server_no_context_takeover": agreement.serverNoContextTakeover = true
            // Our messages go out uncompressed (allowed by RFC 7692), and a 15-bit inflater reads
            // any smaller window: the other parameters need nothing from us.
            case "client_no_context_takeover", "server_max_window_bits", "client_max_window_bits": break
            default: throw TailClientError("the gateway answered permessage-deflate with an unknown parameter '\(name)'")
            }
        }
        return agreement
    }

    /// Writes one masked, unfragmented frame and waits until it is written.
    static func send(_ opcode: WebSocketOpcode, _ payload: ByteBuffer, on channel: any Channel) async throws {
        let frame = WebSocketFrame(fin: true, opcode: opcode, maskKey: .random(), data: payload)
        try await channel.writeAndFlush(frame)
    }

    /// A close frame's payload: the code, then the reason (RFC 6455 §5.5.1).
    static func closePayload(code: UInt16, reason: String = "") -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(code)
        buffer.writeString(reason)
        return buffer
    }

    /// `{"type":"subscribe","data":TOPIC}` in the connection's format: a text frame of JSON,
    /// or a binary frame holding the same MessagePack map.
    static func subscribeMessage(topic: String, messagePack: Bool) -> (opcode: WebSocketOpcode, payload: ByteBuffer) {
        var buffer = ByteBuffer()
        guard messagePack else {
            JSONWriter.write(["type": "subscribe", "data": .string(topic)], into: &buffer)
            return (.text, buffer)
        }
        buffer.writeInteger(UInt8(0x82))  // fixmap, 2 entries
        for text in ["type", "subscribe", "data", topic] {
            let count = text.utf8.count
            switch count {
            case 0..<32: buffer.writeInteger(UInt8(truncatingIfNeeded: 0xA0 | count))
            case 32..<256: buffer.writeMultipleIntegers(UInt8(0xD9), UInt8(truncatingIfNeeded: count))
            case 256..<65536: buffer.writeMultipleIntegers(UInt8(0xDA), UInt16(truncatingIfNeeded: count))
            default: buffer.writeMultipleIntegers(UInt8(0xDB), UInt32(truncatingIfNeeded: count))
            }
            buffer.writeString(text)
        }
        return (.binary, buffer)
    }
}

/// The permessage-deflate parameters the gateway agreed to.
struct TailDeflateAgreement: Sendable, Equatable {
    /// The gateway starts every message with an empty window: reset the inflater after each.
    var serverNoContextTakeover: Bool
    /// The response's extension header, for the "connected" line.
    var header: String
}

/// Turns frames into complete messages: reassembles fragments, inflates RSV1 messages (RFC
/// 7692 §7.2.2: the `00 00 ff ff` tail is appended by ``Inflater``) and says how to answer
/// control frames. A value type: the read loop executes its actions.
struct TailMessageAssembler {
    enum Action {
        case nothing
        /// A complete data message (binary or text), inflated.
        case message(binary: Bool, payload: ByteBuffer)
        /// Answer a ping with this payload.
        case pong(ByteBuffer)
        /// The gateway's close frame (`code` is `nil` when it carried none).
        case close(code: UInt16?, reason: String)
        /// The gateway broke the protocol: close with `code` and give up.
        case fail(code: UInt16, reason: String)
    }

    private var partial: (binary: Bool, compressed: Bool, payload: ByteBuffer)?
    private let inflater: Inflater?
    private let resetAfterMessage: Bool
    private let maxMessageSize: Int

    /// Throws when permessage-deflate was agreed but zlib cannot start an inflater.
    init(deflate: TailDeflateAgreement?, maxMessageSize: Int) throws {
        if deflate != nil {
            guard let inflater = Inflater(windowBits: 15) else { throw TailClientError("zlib could not start an inflater") }
            self.inflater = inflater
        } else {
            self.inflater = nil
        }
        self.resetAfterMessage = deflate?.serverNoContextTakeover ?? false
        self.maxMessageSize = maxMessageSize
    }

    mutating func receive(_ frame: WebSocketFrame) -> Action {
        if frame.rsv2 || frame.rsv3 { return .fail(code: 1002, reason: "reserved bits set") }
        switch frame.opcode {
        case .ping:
            return .pong(frame.unmaskedData)
        case .pong:
            return .nothing
        case .connectionClose:
            var payload = frame.unmaskedData
            guard payload.readableBytes > 0 else { return .close(code: nil, reason: "") }
            guard let code = payload.readInteger(as: UInt16.self) else { return .fail(code: 1002, reason: "malformed close frame") }
            let reason = payload.readString(length: payload.readableBytes) ?? ""
            return .close(code: code, reason: reason)
        case .text, .binary:
            guard partial == nil else { return .fail(code: 1002, reason: "a new message began inside a fragmented one") }
            if frame.rsv1 && inflater == nil { return .fail(code: 1002, reason: "compressed frame without permessage-deflate") }
            let message = (binary: frame.opcode == .binary, compressed: frame.rsv1, payload: frame.unmaskedData)
            if frame.fin { return finish(message) }
            partial = message
            return .nothing
        case .continuation:
            guard var message = partial else { return .fail(code: 1002, reason: "continuation frame without a message") }
            if frame.rsv1 { return .fail(code: 1002, reason: "RSV1 set on a continuation frame") }
            guard message.payload.readableBytes + frame.length <= maxMessageSize else {
                return .fail(code: 1009, reason: "message larger than \(maxMessageSize) bytes")
            }
            var fragment = frame.unmaskedData
            message.payload.writeBuffer(&fragment)
            if frame.fin {
                partial = nil
                return finish(message)
            }
            partial = message
            return .nothing
        default:
            return .fail(code: 1002, reason: "unknown opcode")
        }
    }

    private func finish(_ message: (binary: Bool, compressed: Bool, payload: ByteBuffer)) -> Action {
        guard message.compressed, let inflater else { return .message(binary: message.binary, payload: message.payload) }
        do {
            let inflated = try inflater.inflate(message.payload, limit: maxMessageSize, resetAfter: resetAfterMessage)
            return .message(binary: message.binary, payload: inflated)
        } catch InflateError.tooLarge {
            return .fail(code: 1009, reason: "inflated message larger than \(maxMessageSize) bytes")
        } catch {
            return .fail(code: 1007, reason: "invalid compressed data")
        }
    }
}
