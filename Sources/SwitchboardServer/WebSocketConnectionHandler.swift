import Logging
import NIOCore
import NIOWebSocket
import SwitchboardConfig
import Synchronization
import SwitchboardCore
import SwitchboardKernel

/// One WebSocket connection after the upgrade: reassembles and checks client frames, runs
/// the client protocol, heartbeats, and takes prepared frames from its ``LoopShard``.
///
/// NIO's `WebSocketFrameDecoder` sits below this handler. Outbound, the handler writes
/// complete frames as bytes through the context of NIO's `WebSocketFrameEncoder` (which
/// the upgrader installs and which cannot be removed), so they go straight to the socket:
/// prepared broadcast frames, shared by every recipient, are never framed again.
final class WebSocketConnectionHandler: ChannelInboundHandler, Subscriber {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = ByteBuffer

    private enum State {
        case open
        /// We sent a close frame and wait for the peer's (or the timeout).
        case closeSent
        case closed
    }

    private let runtime: EndpointRuntime
    private var pipeline: EndpointPipeline { runtime.pipeline }
    private let choice: EndpointPipeline.EncoderChoice
    private let compression: ConnectionCompression?
    /// Per-connection filter state (rate limits); released by the upgrade code on close.
    private let guards: [any ConnectionGuard]
    /// Who the connection belongs to; replaced by an accepted `refresh`.
    private var principal: Principal?
    private let shard: LoopShard
    /// The server's logger, without per-connection metadata: that is added only when a
    /// line is logged (a metadata dictionary per idle connection costs ~900 bytes).
    private let baseLogger: Logger
    private let remoteAddress: String?

    let variant: VariantID
    var lastDeliverySequence: UInt64 = 0
    var isPendingFlush = false

    private var context: ChannelHandlerContext?
    /// Where raw frame bytes are written: below the frame encoder, or our own context if
    /// there is no encoder in the pipeline (tests on an embedded channel).
    private var output: ChannelHandlerContext?
    private var state = State.open
    private var subscriptions: [TopicPattern] = []
    /// Gathered frames and the send queue.
    private var outbound: ConnectionOutput
    private var heartbeat: HeartbeatStateMachine
    private var heartbeatTask: Scheduled<Void>?
    private var closeTimer: Scheduled<Void>?
    /// Closes the connection when the principal's credential expires.
    private var expiryTask: Scheduled<Void>?
    private var refreshInFlight = false
    private var fragments: (opcode: WebSocketOpcode, data: ByteBuffer, compressed: Bool)?
    private var registered = false

    init(
        runtime: EndpointRuntime,
        choice: EndpointPipeline.EncoderChoice,
        variant: VariantID,
        compression: ConnectionCompression?,
        guards: [any ConnectionGuard],
        principal: Principal?,
        shard: LoopShard,
        logger: Logger,
        remoteAddress: String? = nil
    ) {
        self.runtime = runtime
        self.choice = choice
        self.variant = variant
        self.compression = compression
        self.guards = guards
        self.principal = principal
        self.shard = shard
        self.baseLogger = logger
        self.remoteAddress = remoteAddress
        let pipeline = runtime.pipeline
        self.outbound = ConnectionOutput(
            queue: OutboundQueue(
                maxMessages: pipeline.sendQueue.maxMessages,
                maxBytes: pipeline.sendQueue.maxBytes.bytes,
                policy: pipeline.sendQueue.policy
            )
        )
        self.heartbeat = HeartbeatStateMachine(
            interval: TimeAmount(pipeline.heartbeatInterval).nanoseconds,
            timeout: TimeAmount(pipeline.heartbeatTimeout).nanoseconds,
            now: Self.now()
        )
    }

    /// The logger with this connection's endpoint and remote address.
    private var logger: Logger {
        var logger = baseLogger
        logger[metadataKey: "endpoint"] = .string(pipeline.path)
        if let remoteAddress { logger[metadataKey: "remote"] = .string(remoteAddress) }
        return logger
    }

    private static func now() -> Int64 {
        Int64(NIODeadline.now().uptimeNanoseconds)
    }

    // MARK: lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.output = (try? context.pipeline.syncOperations.context(handlerType: WebSocketFrameEncoder.self)) ?? context
        registered = true
        runtime.connections.add(1, ordering: .relaxed)
        runtime.accepted.add(1, ordering: .relaxed)
        if pipeline.mode == .pubsub {
            for pattern in pipeline.defaultSubscriptions where pipeline.mayTopic(pattern, principal: principal) {
                if shard.subscribe(pattern, self) { subscriptions.append(pattern) }
            }
            shard.replayRetained(subscriptions, to: self)
        }
        scheduleHeartbeat(at: heartbeat.tick(now: Self.now()).nextTick)
        scheduleExpiry()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        tearDown()
    }

    func channelInactive(context: ChannelHandlerContext) {
        tearDown()
        context.fireChannelInactive()
    }

    private func tearDown() {
        guard registered else { return }
        registered = false
        runtime.connections.add(-1, ordering: .relaxed)
        state = .closed
        heartbeatTask?.cancel()
        heartbeatTask = nil
        closeTimer?.cancel()
        closeTimer = nil
        expiryTask?.cancel()
        expiryTask = nil
        outbound.removeAll()
        fragments = nil
        let patterns = subscriptions
        subscriptions = []
        // Unsubscribe on the next tick: this may run inside the shard's fan-out loop.
        if !patterns.isEmpty {
            let shard = self.shard
            let handler = NIOLoopBound(self, eventLoop: shard.eventLoop)
            shard.eventLoop.execute {
                for pattern in patterns { shard.unsubscribe(pattern, handler.value) }
            }
        }
        context = nil
        output = nil
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            failConnection(code: 1001, reason: "server shutting down", countAsCause: false)
            return
        }
        // The server allows remote half-closure (for HTTP); a WebSocket peer that stops
        // sending is gone, so close our side too.
        if let channelEvent = event as? ChannelEvent, channelEvent == .inputClosed {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let error = error as? NIOWebSocketError {
            // The frame decoder cannot read past its error, so the peer's close frame would
            // never arrive: close the socket as soon as our close frame is out.
            switch error {
            case .invalidFrameLength:
                failConnection(code: 1009, reason: "message too big", closeSocketAfterSending: true)
            default:
                failConnection(code: 1002, reason: "protocol error", closeSocketAfterSending: true)
            }
            return
        }
        logger.debug("connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    // MARK: inbound frames

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        heartbeat.heard(now: Self.now())
        guard state != .closed else { return }
        // RSV1 marks a compressed message: only on the first frame of a data message, and
        // only when permessage-deflate was negotiated. RSV2/RSV3 are never in use.
        let rsv1Allowed = compression != nil && (frame.opcode == .text || frame.opcode == .binary)
        if frame.rsv2 || frame.rsv3 || (frame.rsv1 && !rsv1Allowed) {
            failConnection(code: 1002, reason: "reserved bits set")
            return
        }
        guard frame.maskKey != nil else {
            failConnection(code: 1002, reason: "client frames must be masked")
            return
        }
        switch frame.opcode {
        case .text, .binary:
            guard state == .open else { return }
            guard fragments == nil else {
                failConnection(code: 1002, reason: "new message inside a fragmented message")
                return
            }
            let payload = frame.unmaskedData
            guard payload.readableBytes <= pipeline.maxMessageSize else {
                failConnection(code: 1009, reason: "message too big")
                return
            }
            if frame.fin {
                handleMessage(opcode: frame.opcode, payload: payload, compressed: frame.rsv1)
            } else {
                fragments = (frame.opcode, payload, frame.rsv1)
            }
        case .continuation:
            guard state == .open else { return }
            guard var assembling = fragments else {
                failConnection(code: 1002, reason: "continuation frame without a message")
                return
            }
            var payload = frame.unmaskedData
            guard assembling.data.readableBytes + payload.readableBytes <= pipeline.maxMessageSize else {
                fragments = nil
                failConnection(code: 1009, reason: "message too big")
                return
            }
            fragments = nil  // release the reference so the append does not copy
            assembling.data.writeBuffer(&payload)
            if frame.fin {
                handleMessage(opcode: assembling.opcode, payload: assembling.data, compressed: assembling.compressed)
            } else {
                fragments = assembling
            }
        case .ping:
            guard frame.fin else {
                failConnection(code: 1002, reason: "fragmented control frame")
                return
            }
            guard state == .open else { return }
            writeNow(ServerFrame.make(opcode: .pong, payload: frame.unmaskedData))
        case .pong:
            guard frame.fin else {
                failConnection(code: 1002, reason: "fragmented control frame")
                return
            }
        case .connectionClose:
            handlePeerClose(frame)
        default:
            failConnection(code: 1002, reason: "unknown opcode")
        }
    }

    private func handleMessage(opcode: WebSocketOpcode, payload: ByteBuffer, compressed: Bool) {
        var payload = payload
        if compressed, let compression {
            do {
                payload = try compression.inflate(payload, limit: pipeline.maxMessageSize)
            } catch .tooLarge {
                failConnection(code: 1009, reason: "message too big after decompression")
                return
            } catch {
                failConnection(code: 1007, reason: "invalid compressed data")
                return
            }
        }
        if opcode == .text && String(validating: payload.readableBytesView, as: UTF8.self) == nil {
            failConnection(code: 1007, reason: "invalid UTF-8 in text message")
            return
        }
        if !guards.isEmpty {
            let now = Self.now()
            for guardian in guards {
                switch guardian.messageReceived(now: now) {
                case .accept: continue
                case .reject(let code, let message):
                    reply(.error(code: code, message: message))
                    return
                case .close(let code, let reason):
                    failConnection(code: code, reason: reason)
                    return
                }
            }
        }
        switch pipeline.mode {
        case .echo:
            writeNow(dataFrame(opcode: opcode == .text ? .text : .binary, payload: payload))
        case .pubsub:
            switch choice.encoder.decode(payload) {
            case .success(let message): handle(message)
            case .failure(let error): reply(.error(code: error.code, message: error.message))
            }
        }
    }

    private func handle(_ message: ClientMessage) {
        switch message {
        case .ping:
            reply(.pong)
        case .subscribe(let text):
            guard let pattern = TopicPattern(text) else {
                reply(.error(code: "bad_topic", message: "invalid topic '\(text.prefix(64))': \(TopicPattern.syntaxHelp)"))
                return
            }
            guard pipeline.mayTopic(pattern, principal: principal) else {
                runtime.forbiddenSubscriptions.add(1, ordering: .relaxed)
                reply(.error(code: "forbidden", message: "subscription to '\(text.prefix(64))' is not allowed"))
                return
            }
            if subscriptions.contains(pattern) {
                reply(.subscribed(text))
                return
            }
            guard subscriptions.count < pipeline.maxSubscriptions else {
                reply(.error(code: "too_many_subscriptions", message: "at most \(pipeline.maxSubscriptions) subscriptions per connection"))
                return
            }
            let added = shard.subscribe(pattern, self)
            if added { subscriptions.append(pattern) }
            reply(.subscribed(text))
            if added { shard.replayRetained([pattern], to: self) }
        case .unsubscribe(let text):
            guard let pattern = TopicPattern(text), let index = subscriptions.firstIndex(of: pattern) else {
                reply(.error(code: "not_subscribed", message: "not subscribed to '\(text.prefix(64))'"))
                return
            }
            subscriptions.remove(at: index)
            shard.unsubscribe(pattern, self)
            reply(.unsubscribed(text))
        case .other("refresh", let message):
            guard let token = message["data"]?.stringValue ?? message["data"]?["token"]?.stringValue, !token.isEmpty else {
                reply(.error(code: "bad_message", message: "refresh needs the new token in \"data\""))
                return
            }
            startRefresh(token)
        case .other(let type, _):
            reply(.error(code: "unknown_type", message: "unknown message type '\(type.prefix(64))'; expected subscribe, unsubscribe, ping or refresh"))
        }
    }

    // MARK: credential expiry and refresh

    /// Arms (or re-arms) the close at the principal's expiry.
    private func scheduleExpiry() {
        expiryTask?.cancel()
        expiryTask = nil
        guard let expiresAt = principal?.expiresAt, let context else { return }
        let delay = expiresAt * 1000 - UnixTime.nowMilliseconds()
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        expiryTask = context.eventLoop.scheduleTask(in: .milliseconds(max(0, delay))) {
            handler.value.failConnection(code: 1008, reason: "token expired")
        }
    }

    /// Asks the endpoint's filters to verify a new credential, off the event loop, and
    /// applies the answer back on it.
    private func startRefresh(_ token: String) {
        guard let context else { return }
        guard !refreshInFlight else {
            reply(.error(code: "refresh_in_progress", message: "a refresh is already being verified"))
            return
        }
        refreshInFlight = true
        let filters = pipeline.filters
        let current = principal
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        context.eventLoop.makeFutureWithTask { () async -> FilterDecision? in
            for filter in filters {
                if let decision = await filter.refresh(credential: token, current: current) { return decision }
            }
            return nil
        }.whenSuccess { decision in
            handler.value.finishRefresh(decision)
        }
    }

    private func finishRefresh(_ decision: FilterDecision?) {
        refreshInFlight = false
        guard state == .open else { return }
        switch decision {
        case nil:
            reply(.error(code: "unknown_type", message: "no filter on this endpoint takes refresh"))
        case .deny(_, let reason, _)?:
            reply(.error(code: "refresh_failed", message: reason))
        case .admit(let established)?:
            guard let established else {
                reply(.error(code: "refresh_failed", message: "the new credential establishes no identity"))
                return
            }
            if let current = principal, current.identity != established.identity {
                reply(.error(code: "refresh_failed", message: "the new token is for a different subject"))
                return
            }
            principal = established
            scheduleExpiry()
            // The new credential may grant less: drop what it no longer allows.
            for pattern in subscriptions where !pipeline.mayTopic(pattern, principal: established) {
                shard.unsubscribe(pattern, self)
                subscriptions.removeAll { $0 == pattern }
                reply(.unsubscribed(pattern.text))
            }
            reply(.refreshed(expiresAt: established.expiresAt))
        }
    }

    private func handlePeerClose(_ frame: WebSocketFrame) {
        guard let context else { return }
        if state == .closeSent {
            context.close(promise: nil)
            return
        }
        var payload = frame.unmaskedData
        var code: UInt16 = 1000
        var reason = ""
        if payload.readableBytes == 1 {
            code = 1002
            reason = "invalid close payload"
        } else if let received = payload.readInteger(as: UInt16.self) {
            if !Self.isValidCloseCode(received) {
                code = 1002
                reason = "invalid close code"
            } else if String(validating: payload.readableBytesView, as: UTF8.self) == nil {
                code = 1007
                reason = "invalid UTF-8 in close reason"
            } else {
                code = received
            }
        }
        outbound.writeGathered(to: output)
        state = .closeSent
        if code != 1000 && !reason.isEmpty { runtime.closedForCause.add(1, ordering: .relaxed) }
        let closeFrame = ServerFrame.close(code: code, reason: reason)
        let closePromise = context.eventLoop.makePromise(of: Void.self)
        let channel = context.channel
        closePromise.futureResult.whenComplete { _ in channel.close(promise: nil) }
        output?.writeAndFlush(wrapOutboundOut(closeFrame), promise: closePromise)
    }

    /// RFC 6455 §7.4: codes a peer may send.
    static func isValidCloseCode(_ code: UInt16) -> Bool {
        switch code {
        case 1000...1003, 1007...1011, 1012...1014: return true
        case 3000...4999: return true
        default: return false
        }
    }

    // MARK: outbound

    /// Sends a close frame, stops reading data, and closes the socket once the peer answers
    /// or the close timeout passes.
    func failConnection(code: UInt16, reason: String, countAsCause: Bool = true, closeSocketAfterSending: Bool = false) {
        guard state == .open, let context else { return }
        state = .closeSent
        if countAsCause { runtime.closedForCause.add(1, ordering: .relaxed) }
        logger.debug("closing connection", metadata: ["code": "\(code)", "reason": "\(reason)"])
        fragments = nil
        // Frames already gathered were accepted for this connection: they leave before the close.
        outbound.discardQueued()
        outbound.writeGathered(to: output)
        let frame = ServerFrame.close(code: code, reason: reason)
        if closeSocketAfterSending {
            let promise = context.eventLoop.makePromise(of: Void.self)
            let channel = context.channel
            promise.futureResult.whenComplete { _ in channel.close(promise: nil) }
            output?.writeAndFlush(wrapOutboundOut(frame), promise: promise)
            return
        }
        output?.writeAndFlush(wrapOutboundOut(frame), promise: nil)
        let timeout = TimeAmount(pipeline.closeTimeout)
        let channel = context.channel
        closeTimer = context.eventLoop.scheduleTask(in: timeout) {
            channel.close(promise: nil)
        }
    }

    private func reply(_ message: ServerReply) {
        let encoder = choice.encoder
        var payload = ByteBuffer()
        encoder.encode(message, timestamp: UnixTime.nowSeconds(), into: &payload)
        let frame = dataFrame(opcode: encoder.frameKind == .text ? .text : .binary, payload: payload)
        if enqueueFrame(frame) { shard.needsFlush(self) }
    }

    /// A data frame built for this connection only, compressed when negotiated and large enough.
    private func dataFrame(opcode: ServerFrame.Opcode, payload: ByteBuffer) -> ByteBuffer {
        if let compressed = compression?.compress(payload) {
            return ServerFrame.make(opcode: opcode, payload: compressed, rsv1: true)
        }
        return ServerFrame.make(opcode: opcode, payload: payload)
    }

    /// Writes one frame of this connection's own (pong, ping, echo) and flushes, after
    /// whatever was gathered before it.
    private func writeNow(_ frame: ByteBuffer) {
        guard let output, state == .open else { return }
        outbound.writeGathered(to: output)
        output.writeAndFlush(wrapOutboundOut(frame), promise: nil)
    }

    func enqueue(_ frame: ByteBuffer) -> Bool {
        // Dedicated compression keeps a per-connection context: the shared plain frame is
        // compressed here, per recipient, which is the point of that mode.
        if let compression, compression.isDedicated, let opcode = ServerFrame.opcode(of: frame),
            let payload = ServerFrame.payload(of: frame), let compressed = compression.compress(payload)
        {
            return enqueueFrame(ServerFrame.make(opcode: opcode, payload: compressed, rsv1: true))
        }
        return enqueueFrame(frame)
    }

    private func enqueueFrame(_ frame: ByteBuffer) -> Bool {
        guard state == .open, let output else { return false }
        switch outbound.offer(frame, to: output) {
        case .writeNow, .queued:
            return true
        case .queuedAfterDropping(let count):
            shard.recordDrops(count)
            return true
        case .overflow:
            failConnection(code: 1008, reason: "send queue overflow: client reads too slowly")
            return false
        }
    }

    func flush() -> Bool {
        guard state != .closed, let output else { return false }
        outbound.flush(output)
        return true
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        outbound.writabilityChanged(to: context.channel.isWritable, draining: state == .open ? output : nil)
        context.fireChannelWritabilityChanged()
    }

    // MARK: heartbeat

    private func scheduleHeartbeat(at deadline: Int64) {
        guard deadline != Int64.max, let context else { return }
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        heartbeatTask = context.eventLoop.scheduleTask(deadline: .uptimeNanoseconds(UInt64(max(0, deadline)))) {
            handler.value.heartbeatFired()
        }
    }

    private func heartbeatFired() {
        guard state != .closed, let context else { return }
        let (action, next) = heartbeat.tick(now: Self.now())
        switch action {
        case .none:
            break
        case .sendPing:
            writeNow(ServerFrame.make(opcode: .ping, payload: ByteBuffer()))
        case .closeDeadPeer:
            logger.debug("no answer to ping; dropping connection")
            runtime.closedForCause.add(1, ordering: .relaxed)
            context.close(promise: nil)
            return
        }
        scheduleHeartbeat(at: next)
    }
}
