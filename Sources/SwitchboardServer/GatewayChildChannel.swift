import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOSSL
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOWebSocket
import Synchronization
import SwitchboardConfig
import SwitchboardCore
import SwitchboardKernel

/// Closes a socket whose request was not read to the end: the output first, so the answer
/// and a FIN reach the client, then the whole socket a moment later. Closing at once with
/// unread input sends a reset, which can destroy the answer in the client's buffer.
///
/// Refused sockets are not counted against `max_connections` but still hold a descriptor
/// while they linger; with `limiter`, at most ``ConnectionLimiter/maximumLingering`` linger
/// at once and the rest are closed at once, so a refusal flood cannot use up the files the
/// gateway keeps for its clients and backends.
func lingeringClose(_ channel: any Channel, limiter: ConnectionLimiter? = nil) {
    guard limiter?.startLingering() ?? true else {
        channel.close(promise: nil)
        return
    }
    channel.close(mode: .output, promise: nil)
    channel.eventLoop.scheduleTask(in: .milliseconds(250)) { channel.close(promise: nil) }
    if let limiter { channel.closeFuture.whenComplete { _ in limiter.stopLingering() } }
}

/// A complete HTTP/1.1 response with a JSON error body, as bytes, for the paths that answer
/// below (or without) the HTTP codec.
func rawResponse(status: String, code: String, message: String, retryAfter: Int? = nil) -> ByteBuffer {
    var body = ByteBuffer()
    JSONWriter.write(["error": ["code": .string(code), "message": .string(message)]], into: &body)
    body.writeStaticString("\n")
    var response = ByteBuffer()
    response.writeString("HTTP/1.1 \(status)\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: \(body.readableBytes)\r\n")
    if let retryAfter { response.writeString("Retry-After: \(retryAfter)\r\n") }
    response.writeStaticString("\r\n")
    response.writeBuffer(&body)
    return response
}

/// The child channel of the gateway's one port: HTTP/1.1 handled by Hummingbird, and
/// WebSocket upgrades on configured endpoint paths handed to ``WebSocketConnectionHandler``.
///
/// Hummingbird's own WebSocket channel runs an async handler per connection; the gateway
/// needs a plain NIO handler bound to the connection's event loop so that the kernel can
/// write shared prepared frames directly, hence this channel type.
struct GatewayChildChannel: ServerChildChannel, HTTPChannelHandler {
    /// What the upgrade negotiation decided.
    enum UpgradeResult: Sendable {
        case websocket(any Channel)
        case notUpgraded(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>)
        case refused(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>, UpgradeRefusal)
        /// Admitted past `max_connections`: answers `/healthz` only.
        case probesOnly(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>)
    }

    /// An HTTP answer to a refused upgrade.
    struct UpgradeRefusal: Sendable {
        var status: Int
        var code: String
        var message: String
        var retryAfter: Int? = nil
    }

    struct Value: ServerChildChannelValue {
        let upgradeResult: EventLoopFuture<UpgradeResult>
        let channel: any Channel
    }

    /// What `shouldUpgrade` hands to the pipeline set-up.
    struct Admission {
        let runtime: EndpointRuntime
        let choice: EndpointPipeline.EncoderChoice
        let principal: Principal?
        let compression: CompressionSetup?
        var guards: [any ConnectionGuard] = []
        /// Releases the guards exactly once (on close, or when a reload replaces them).
        var attachedGuards: AttachedGuards?
        /// The upgrade request, kept when the endpoint has filters (a reload may re-run them).
        var request: UpgradeRequest?
        /// The pipeline whose filters and settings admitted the request.
        var pipeline: EndpointPipeline
    }

    /// The negotiated permessage-deflate parameters and the variant deliveries use.
    struct CompressionSetup: Sendable {
        let agreement: PerMessageDeflate.Agreement
        let settings: DeflateSettings
        let minSize: Int
        let variant: VariantID
    }

    /// Receive buffers. NIO keeps one per channel for reuse and never shrinks it, so the
    /// size it reaches while the handshake is read is what every idle connection holds.
    /// Until the request head is in, a plain-TCP socket reads its first KiB 128 bytes per
    /// wakeup, and larger pieces after that: one read per wakeup, because NIO's HTTP decoder
    /// holds on to a partial head and a second read in the same wakeup would make NIO keep
    /// a second pooled buffer. A browser's 500-byte upgrade request costs four wakeups
    /// instead of one, once per connection; a 32 KiB head (the limit) about twenty. A
    /// WebSocket connection then grows the buffer only when a read fills it; an HTTP
    /// request (a publisher's body) gets the larger allocator.
    enum ReceiveBuffers {
        static let handshake = HandshakeReceiveAllocator()
        static let handshakeReadsPerWakeup: UInt = 1
        static let webSocket = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 128, maximum: 65536)
        /// HTTP requests, and TLS from the first byte (a record is read whole before the
        /// handshake parser sees any of it, and TLS holds buffers of its own anyway).
        static let http = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 65536)
        /// NIO's default number of reads per wakeup, restored once the head is in.
        static let readsPerWakeup: UInt = 4

        /// Once the request head is in: the allocator for what the connection has become.
        /// Best effort: a channel closing under us keeps the handshake setting, harmlessly.
        static func handshakeDone(_ channel: any Channel, secure: Bool, allocator: AdaptiveRecvByteBufferAllocator) {
            guard !secure, let options = channel.syncOptions else { return }
            try? options.setOption(.recvAllocator, value: allocator)
            try? options.setOption(.maxMessagesPerRead, value: readsPerWakeup)
        }
    }

    /// 128-byte reads for a request head's first KiB, 2 KiB reads after it: typical heads
    /// leave a 128-byte pooled buffer, and a long one (many cookies, or a hostile client
    /// near `max_header_size`) does not cost a wakeup per 128 bytes.
    struct HandshakeReceiveAllocator: RecvByteBufferAllocator {
        static let small = 128
        static let large = 2048
        static let smallReadsUpTo = 1024
        private var received = 0

        func nextBufferSize() -> Int? { received < Self.smallReadsUpTo ? Self.small : Self.large }

        func buffer(allocator: ByteBufferAllocator) -> ByteBuffer {
            allocator.buffer(capacity: nextBufferSize() ?? Self.small)
        }

        mutating func record(actualReadBytes: Int) -> Bool {
            let before = received
            received = min(received &+ max(0, actualReadBytes), Int.max / 2)
            return before < Self.smallReadsUpTo && received >= Self.smallReadsUpTo
        }
    }

    /// The limits a socket meets before any endpoint sees it.
    struct ListenerLimits: Sendable {
        let connections: ConnectionLimiter
        let handshakeTimeout: TimeAmount
        let idleTimeout: ConfigDuration
        let maxHeaderSize: Int
        let refusals: RefusalCounters
    }

    let responder: HTTPChannelHandler.Responder
    let endpoints: EndpointTable
    let kernel: Kernel
    let limits: ListenerLimits
    /// `listener.tls`: every socket starts with a TLS handshake.
    let tls: TLSContextBox?
    let logger: Logger

    init(
        responder: @escaping HTTPChannelHandler.Responder, endpoints: EndpointTable, kernel: Kernel, limits: ListenerLimits,
        tls: TLSContextBox? = nil, logger: Logger
    ) {
        self.responder = Self.redirectingLateUpgrades(responder)
        self.endpoints = endpoints
        self.kernel = kernel
        self.limits = limits
        self.tls = tls
        self.logger = logger
    }

    /// Refused before any handler: why, as a raw HTTP response.
    struct ConnectionRefused: Error {}

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let address = channel.remoteAddress?.ipAddress
        let limits = self.limits
        let secure = tls != nil
        if let tls {
            // First in the pipeline, so even a refusal below reaches the client encrypted.
            do {
                try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls.current))
            } catch {
                channel.close(promise: nil)
                return channel.eventLoop.makeSucceededFuture(Value(upgradeResult: channel.eventLoop.makeFailedFuture(error), channel: channel))
            }
        }
        let admission = limits.connections.admit(address)
        switch admission {
        case .tooManyConnections, .tooManyFromAddress:
            let kind: Refusal = admission == .tooManyConnections ? .maxConnections : .maxConnectionsPerIP
            limits.refusals.record(kind)
            Self.refuseRaw(channel, limiter: limits.connections, status: "503 Service Unavailable", code: kind.name, message: "the gateway holds as many connections as it allows; retry later")
            // A failed initializer would reach the server channel's error path; the accept
            // loop must not see this refusal at all.
            return channel.eventLoop.makeSucceededFuture(Value(upgradeResult: channel.eventLoop.makeFailedFuture(ConnectionRefused()), channel: channel))
        case .probesOnly, .admitted:
            break
        }
        let probesOnly = admission == .probesOnly
        let lifetime = SocketLifetime(limiter: limits.connections, address: address)
        channel.closeFuture.whenComplete { _ in lifetime.socketClosed() }
        // Until the request head (or the upgrade) is complete; cancelled by either.
        // A probe-only socket gets one second: silent sockets must not hold the probe headroom.
        lifetime.startHandshakeTimer(
            channel.eventLoop.scheduleTask(in: probesOnly ? min(limits.handshakeTimeout, .seconds(1)) : limits.handshakeTimeout) {
                limits.refusals.record(.handshakeTimeout)
                channel.close(promise: nil)
            })
        return channel.eventLoop.makeCompletedFuture {
            // Real-time traffic: never hold small frames back for Nagle's algorithm.
            try channel.syncOptions?.setOption(.socketOption(.tcp_nodelay), value: 1)
            // Each channel keeps its receive buffer for reuse; NIO's default starts at 2 KiB,
            // which an idle WebSocket connection would hold forever (see ReceiveBuffers).
            if secure {
                try channel.syncOptions?.setOption(.recvAllocator, value: ReceiveBuffers.http)
            } else {
                try channel.syncOptions?.setOption(.recvAllocator, value: ReceiveBuffers.handshake)
                try channel.syncOptions?.setOption(.maxMessagesPerRead, value: ReceiveBuffers.handshakeReadsPerWakeup)
            }
            let admission = NIOLoopBoundBox<Admission?>(nil, eventLoop: channel.eventLoop)
            let refusal = NIOLoopBoundBox<UpgradeRefusal?>(nil, eventLoop: channel.eventLoop)
            let endpoints = self.endpoints
            let kernel = self.kernel
            let connectionLogger = self.logger

            let upgrader = EndpointWebSocketUpgrader<UpgradeResult>(
                shouldUpgrade: { channel, head in
                    if probesOnly {
                        limits.refusals.record(.maxConnections)
                        refusal.value = UpgradeRefusal(status: 503, code: "max_connections", message: "the gateway holds as many connections as it allows; retry later", retryAfter: 1)
                        return channel.eventLoop.makeSucceededFuture(nil)
                    }
                    return Self.decide(head: head, channel: channel, endpoints: endpoints, kernel: kernel, lifetime: lifetime, admission: admission, refusal: refusal)
                },
                upgradePipelineHandler: { channel, _ in
                    lifetime.cancelHandshakeTimer()
                    return channel.eventLoop.makeCompletedFuture {
                        if let errorResponder = try? channel.pipeline.syncOperations.handler(type: HTTPParseErrorResponder.self) {
                            _ = channel.pipeline.syncOperations.removeHandler(errorResponder)
                        }
                        guard let admitted = admission.value, let shard = kernel.shard(for: channel.eventLoop) else {
                            throw ChannelError.inappropriateOperationForState
                        }
                        ReceiveBuffers.handshakeDone(channel, secure: secure, allocator: ReceiveBuffers.webSocket)
                        let compression = admitted.compression.map {
                            ConnectionCompression(agreement: $0.agreement, settings: $0.settings, minSize: $0.minSize, shard: shard)
                        }
                        let handler = WebSocketConnectionHandler(
                            runtime: admitted.runtime,
                            choice: admitted.choice,
                            variant: admitted.compression?.variant ?? admitted.choice.variant,
                            compression: compression,
                            guards: admitted.guards,
                            principal: admitted.principal,
                            shard: shard,
                            logger: connectionLogger,
                            request: admitted.request,
                            attachedGuards: admitted.attachedGuards,
                            pipeline: admitted.pipeline,
                            allowsDirectWrites: !secure
                        )
                        handler.table = endpoints
                        try channel.pipeline.syncOperations.addHandler(handler)
                        lifetime.releaseArrival()  // subscribed in handlerAdded
                        return UpgradeResult.websocket(channel)
                    }
                }
            )

            let serverUpgradeConfiguration = NIOTypedHTTPServerUpgradeConfiguration(
                upgraders: [upgrader],
                notUpgradingCompletionHandler: { channel in
                    lifetime.cancelHandshakeTimer()
                    return channel.eventLoop.makeCompletedFuture {
                        ReceiveBuffers.handshakeDone(channel, secure: secure, allocator: ReceiveBuffers.http)
                        // From here Hummingbird owns the connection's HTTP, errors included.
                        if let errorResponder = try? channel.pipeline.syncOperations.handler(type: HTTPParseErrorResponder.self) {
                            _ = channel.pipeline.syncOperations.removeHandler(errorResponder)
                        }
                        try channel.pipeline.syncOperations.addHandler(HTTP1ToHTTPServerCodec(secure: secure))
                        try channel.pipeline.syncOperations.addHandler(HTTPConnectionStateHandler(idleTimeout: limits.idleTimeout.duration, logger: logger))
                        // The server's quiesce event reached this connection before the
                        // handler that acts on it existed: replay it once the request is
                        // in, or a kept-alive client (a dashboard polling /stats) holds the
                        // shutdown open until its idle timeout.
                        if endpoints.draining.load(ordering: .relaxed) {
                            try channel.pipeline.syncOperations.addHandler(QuiesceReplay())
                        }
                        let asyncChannel = try NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>(
                            wrappingChannelSynchronously: channel,
                            configuration: .init(isOutboundHalfClosureEnabled: true)
                        )
                        if let refused = refusal.value {
                            return UpgradeResult.refused(asyncChannel, refused)
                        }
                        if probesOnly { return UpgradeResult.probesOnly(asyncChannel) }
                        return UpgradeResult.notUpgraded(asyncChannel)
                    }
                }
            )
            var configuration = NIOUpgradableHTTPServerPipelineConfiguration<UpgradeResult>(upgradeConfiguration: serverUpgradeConfiguration)
            configuration.enablePipelining = false
            configuration.enableErrorHandling = false
            configuration.enableResponseHeaderValidation = false
            configuration.decoderConfiguration.maxHeaderFieldSize = limits.maxHeaderSize
            configuration.decoderConfiguration.maxHeaderListSize = limits.maxHeaderSize
            let result = try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(configuration: configuration)
            // NIO's own error handler asserts on the responses it sees; ours answers a parse
            // error with raw bytes below the encoder and closes.
            try channel.pipeline.syncOperations.addHandler(HTTPParseErrorResponder(refusals: limits.refusals))
            return Value(upgradeResult: result, channel: channel)
        }
    }

    /// Writes a complete HTTP response as raw bytes (no HTTP handler is installed yet, or
    /// the HTTP codec cannot be trusted any more) and closes the socket once it is out.
    static func refuseRaw(_ channel: any Channel, limiter: ConnectionLimiter?, status: String, code: String, message: String, retryAfter: Int? = 1) {
        let response = rawResponse(status: status, code: code, message: message, retryAfter: retryAfter)
        channel.writeAndFlush(response).whenComplete { _ in lingeringClose(channel, limiter: limiter) }
    }

    /// Matches the endpoint, negotiates the encoder and runs the filter chain.
    private static func decide(
        head: HTTPRequestHead,
        channel: any Channel,
        endpoints: EndpointTable,
        kernel: Kernel,
        lifetime: SocketLifetime,
        admission: NIOLoopBoundBox<Admission?>,
        refusal: NIOLoopBoundBox<UpgradeRefusal?>
    ) -> EventLoopFuture<HTTPHeaders?> {
        let (path, query) = RequestTarget.split(head.uri)
        if endpoints.draining.load(ordering: .relaxed) {
            refusal.value = UpgradeRefusal(status: 503, code: "shutting_down", message: "the gateway is shutting down; connect again (another instance)", retryAfter: 1)
            return channel.eventLoop.makeSucceededFuture(nil)
        }
        guard let runtime = endpoints[path], runtime.transports.contains(.websocket) else {
            refusal.value = UpgradeRefusal(status: 404, code: "not_found", message: "no WebSocket endpoint at \(path)")
            return channel.eventLoop.makeSucceededFuture(nil)
        }
        let offers = head.headers[canonicalForm: "Sec-WebSocket-Protocol"].map { String($0) }
        let pipeline = runtime.pipeline
        let format = query.first { $0.name == "format" }?.value
        let negotiated: (EndpointPipeline.EncoderChoice, String?)
        switch pipeline.negotiate(format: format, offeredSubprotocols: offers) {
        case .success(let result): negotiated = result
        case .failure(let error):
            runtime.rejected.add(1, ordering: .relaxed)
            refusal.value = UpgradeRefusal(status: 400, code: "unsupported_format", message: error.message)
            return channel.eventLoop.makeSucceededFuture(nil)
        }
        var headers = HTTPHeaders()
        if let subprotocol = negotiated.1 { headers.add(name: "Sec-WebSocket-Protocol", value: subprotocol) }
        let compression = negotiateCompression(head: head, pipeline: pipeline, encoder: negotiated.0, kernel: kernel, channel: channel)
        if let compression { headers.add(name: "Sec-WebSocket-Extensions", value: compression.agreement.responseHeader) }
        if pipeline.filters.isEmpty {
            Self.reserveArrival(kernel: kernel, channel: channel, lifetime: lifetime)
            admission.value = Admission(
                runtime: runtime, choice: negotiated.0, principal: nil, compression: compression,
                pipeline: pipeline
            )
            return channel.eventLoop.makeSucceededFuture(headers)
        }
        let request = UpgradeRequest(
            path: path,
            query: query,
            headers: head.headers.map { (name: $0.name, value: $0.value) },
            remoteAddress: channel.remoteAddress?.ipAddress
        )
        let responseHeaders = headers
        let promise = channel.eventLoop.makePromise(of: FilterChainDecision.self)
        promise.completeWithTask { await pipeline.runFilters(request) }
        return promise.futureResult.map { decision in
            switch decision {
            case .admit(let principal, let guards):
                // Reservations end with the socket, whatever happens to the upgrade.
                let attached = AttachedGuards(guards)
                channel.closeFuture.whenComplete { _ in attached.releaseAll() }
                Self.reserveArrival(kernel: kernel, channel: channel, lifetime: lifetime)
                admission.value = Admission(
                    runtime: runtime, choice: negotiated.0, principal: principal, compression: compression, guards: guards,
                    attachedGuards: attached, request: request.keptForConnection(),
                    pipeline: pipeline
                )
                return responseHeaders
            case .refuse(let status, let reason, let retryAfter):
                runtime.rejected.add(1, ordering: .relaxed)
                refusal.value = UpgradeRefusal(status: status, code: "denied", message: reason, retryAfter: retryAfter)
                return nil
            }
        }
    }

    /// Reserves the connection's arrival on its loop's shard, released by the handler once
    /// subscribed, or when the socket closes first.
    private static func reserveArrival(kernel: Kernel, channel: any Channel, lifetime: SocketLifetime) {
        guard let reservation = kernel.shard(for: channel.eventLoop)?.expectSubscriber() else { return }
        lifetime.holdArrival(reservation)
    }

    /// Negotiates permessage-deflate; a dedicated agreement that does not fit the node-wide
    /// memory budget falls back to shared. Reserved memory is returned when the channel closes.
    private static func negotiateCompression(
        head: HTTPRequestHead,
        pipeline: EndpointPipeline,
        encoder: EndpointPipeline.EncoderChoice,
        kernel: Kernel,
        channel: any Channel
    ) -> CompressionSetup? {
        guard let endpoint = pipeline.compression else { return nil }
        let offers = PerMessageDeflate.parseOffers(head.headers["Sec-WebSocket-Extensions"])
        guard var agreement = PerMessageDeflate.negotiate(offers: offers, policy: endpoint.policy) else { return nil }
        var settings = endpoint.settings(for: agreement)
        if agreement.mode == .dedicated {
            let cost = settings.compressorMemory
            if ConnectionCompression.reserve(cost, budget: endpoint.maxMemory, counter: kernel.counters.dedicatedCompressionMemory) {
                let counters = kernel.counters
                channel.closeFuture.whenComplete { _ in counters.dedicatedCompressionMemory.add(-cost, ordering: .relaxed) }
            } else {
                var shared = endpoint.policy
                shared.mode = .shared
                guard let fallback = PerMessageDeflate.negotiate(offers: offers, policy: shared) else { return nil }
                agreement = fallback
                settings = endpoint.settings(for: agreement)
            }
        }
        let variant: VariantID?
        if agreement.mode == .dedicated {
            variant = encoder.variant
        } else {
            variant = kernel.variants.variant(forEncoder: encoder.encoder.variantKey, profile: endpoint.profile, windowBits: agreement.serverWindowBits)
        }
        guard let variant else { return nil }
        return CompressionSetup(agreement: agreement, settings: settings, minSize: endpoint.profile.minSize, variant: variant)
    }

    func handle(value: Value, logger: Logger) async {
        do {
            switch try await value.upgradeResult.get() {
            case .websocket:
                // The connection lives on as a plain NIO handler on its loop; no task waits
                // for it (a parked task per connection would cost ~4 KiB). Shutdown reaches it
                // through the server's quiescing helper, and `Gateway.run` waits for it.
                return
            case .notUpgraded(let http):
                await handleHTTP(asyncChannel: http, logger: logger)
            case .refused(let http, let refusal):
                await writeRefusal(refusal, on: http)
            case .probesOnly(let http):
                await serveProbesOnly(http, logger: logger)
            }
        } catch let error as ChannelError where error == .inputClosed {
            logger.trace("connection closed before the request completed")
        } catch is ConnectionRefused {
            return
        } catch {
            // The handshake timer is already cancelled: nothing else would close it.
            value.channel.close(promise: nil)
            logger.debug("upgrade failed", metadata: ["error": "\(error)"])
        }
    }

    /// At `max_connections`: one request; `/healthz` answers 200 (the process is alive),
    /// everything else 503, `/readyz` included; then the socket closes.
    private func serveProbesOnly(_ http: NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>, logger: Logger) async {
        var path: String?
        do {
            try await http.executeThenClose { inbound, outbound in
                // Answer right after the head: a body trickled slowly must not hold the slot.
                for try await part in inbound {
                    if case .head(let head) = part { path = head.path.map { String($0.split(separator: "?").first ?? "") } }
                    break
                }
                // /readyz answers 503 here, truthfully: this instance takes no more clients.
                let probe = path == "/healthz"
                if !probe { limits.refusals.record(.maxConnections) }
                var body = ByteBuffer()
                if probe {
                    body.writeString(#"{"status":"ok","note":"at max_connections"}"# + "\n")
                } else {
                    JSONWriter.write(["error": ["code": "max_connections", "message": "the gateway holds as many connections as it allows; retry later"]], into: &body)
                }
                let headers: HTTPFields = [.connection: "close", .contentType: "application/json", .contentLength: String(body.readableBytes)]
                try await outbound.write(contentsOf: [
                    .head(HTTPResponse(status: probe ? .ok : .serviceUnavailable, headerFields: headers)),
                    .body(body),
                    .end(nil),
                ])
            }
        } catch {
            logger.trace("probe-only connection failed", metadata: ["error": "\(error)"])
        }
    }

    private func writeRefusal(_ refusal: UpgradeRefusal, on channel: NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>) async {
        var body = ByteBuffer()
        JSONWriter.write(["error": ["code": .string(refusal.code), "message": .string(refusal.message)]], into: &body)
        do {
            try await channel.executeThenClose { _, outbound in
                var headers: HTTPFields = [
                    .connection: "close",
                    .contentType: "application/json",
                    .contentLength: String(body.readableBytes),
                ]
                if let retryAfter = refusal.retryAfter { headers[.retryAfter] = String(retryAfter) }
                try await outbound.write(contentsOf: [
                    .head(HTTPResponse(status: .init(code: refusal.status), headerFields: headers)),
                    .body(body),
                    .end(nil),
                ])
            }
        } catch {
            logger.trace("failed to write upgrade refusal", metadata: ["error": "\(error)"])
        }
    }

    /// NIO only upgrades on a connection's first request; a later upgrade request on a
    /// kept-alive connection gets a redirect to itself on a fresh connection.
    static func redirectingLateUpgrades(_ responder: @escaping HTTPChannelHandler.Responder) -> HTTPChannelHandler.Responder {
        struct RedirectCloseError: Error {}
        return { request, responseWriter, channel in
            if request.headers[.upgrade]?.lowercased() == "websocket" {
                var target = request.uri.path
                if let query = request.uri.query { target += "?\(query)" }
                let headers: HTTPFields = [.connection: "close", .location: target]
                try await responseWriter.writeResponse(HTTPResponse(status: .temporaryRedirect, headerFields: headers))
                throw RedirectCloseError()
            }
            try await responder(request, responseWriter, channel)
        }
    }
}

/// Fires `ChannelShouldQuiesceEvent` through the pipeline right after the first request
/// part has passed the connection-state handler (which then closes after the response),
/// and leaves.
final class QuiesceReplay: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    private var replayed = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.fireChannelRead(data)
        guard !replayed else { return }
        replayed = true
        context.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}
