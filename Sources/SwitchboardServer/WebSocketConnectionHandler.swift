import Logging
import NIOCore
import SwitchboardConfig
import SwitchboardCore
import SwitchboardKernel
import Synchronization

/// One WebSocket connection after the upgrade: a thin shell around three value-type state
/// machines — ``WebSocketInboundStateMachine`` (frames, reassembly, limits, inflate, close
/// handshake), ``ClientSession`` (the client protocol) and ``OutboundStateMachine``
/// (outbox, send queue, writability, slow-consumer policy) — plus the heartbeat.
///
/// The rule that keeps the process alive: a state machine is called, returns what to do,
/// and only then does the handler touch the channel. NIO calls back synchronously from
/// `write`, `flush` and `close` (writability changes, `channelInactive`, errors), so those
/// callbacks always find every state machine between two calls, never inside one.
///
/// Inbound, the handler parses the client's frames from the socket's bytes itself
/// (``WebSocketFrameParser``: nothing held between frames). Outbound, the handler writes
/// complete frames as bytes — with one `send` to the socket itself while NIO holds nothing
/// for it (``DirectSocket``), else through its own context, which no other handler follows
/// on plain TCP — so prepared broadcast frames, shared by every recipient, are never
/// framed again. The pipeline has no frame encoder (`EndpointWebSocketUpgrader`). Reading
/// stops while the socket is not writable, so a client that sends without reading cannot
/// make the gateway buffer answers for it.
public final class WebSocketConnectionHandler: ChannelDuplexHandler, Subscriber, WheelTimed {
    public typealias InboundIn = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    let runtime: EndpointRuntime
    /// The endpoint's pipeline as this connection got it (a reload that changes filters
    /// hands it the new one).
    var pipeline: EndpointPipeline
    let choice: EndpointPipeline.EncoderChoice
    /// Outbound permessage-deflate (replies, echoes, dedicated-mode deliveries).
    let compression: ConnectionCompression?
    /// Per-connection filter state (rate limits); released by `attachedGuards` on close.
    var guards: [any ConnectionGuard]
    let attachedGuards: AttachedGuards?
    /// The gateway's endpoint table: an upgrade that completes after a drain or a reload
    /// took its snapshot of open connections is closed here (``closeIfStale()``).
    var table: EndpointTable?
    let shard: LoopShard
    /// The server's logger, without per-connection metadata: that is added only when a
    /// line is logged (a metadata dictionary per idle connection costs ~900 bytes).
    let baseLogger: Logger

    public let variant: VariantID
    public var lastDeliverySequence: UInt64 = 0
    public var isPendingFlush = false

    /// Also where raw frame bytes are written through NIO: no other handler follows this
    /// one on its way to the socket (or to NIOSSL, with TLS).
    var context: ChannelHandlerContext?
    var registered = false
    /// The socket itself, written below NIO's pipeline (plain TCP listeners; nil on TLS, on
    /// test channels, or when the descriptor could not be verified).
    var directSocket: DirectSocket?
    /// Whether ``directSocket`` may be used (false when TLS sits in the pipeline).
    let allowsDirectWrites: Bool
    /// A `read` held back while the socket was not writable.
    var readPending = false
    /// Whether this connection already logged that its policy dropped frames.
    var loggedDrops = false
    /// Bytes NIO held for the socket at the last heartbeat tick while it was not writable.
    var bufferedAtLastTick = Int.max

    var parser: WebSocketFrameParser
    /// Set while `channelRead` hands frames on (a nested read only appends its bytes).
    var inReadLoop = false
    var inbound: WebSocketInboundStateMachine
    var session: ClientSession
    var outbound: OutboundStateMachine
    var heartbeat: HeartbeatStateMachine
    var messageRate: TokenBucket?
    /// The next heartbeat tick, in the loop's ``TimerWheel`` (no scheduled task per connection).
    public var wheelSlot = WheelSlot.none
    /// State most connections never use, out of line so that an idle connection does not
    /// carry it (nil until something is stored).
    private var cold: ColdState?

    final class ColdState {
        var request: UpgradeRequest?
        var closeTimer: Scheduled<Void>?
        var expiryTask: Scheduled<Void>?
        var resumeFloors: [String: StreamPosition] = [:]
    }

    private func coldState() -> ColdState {
        if let cold { return cold }
        let created = ColdState()
        cold = created
        return created
    }

    /// The upgrade request (handshake headers dropped), kept for re-running filters;
    /// forgotten once the client refreshes its credential in-band (the request no longer
    /// says who the connection is: a filter reload then closes it to reconnect).
    var request: UpgradeRequest? {
        get { cold?.request }
        set { if newValue != nil || cold != nil { coldState().request = newValue } }
    }
    /// Closes the socket when the peer does not answer our close frame in time.
    var closeTimer: Scheduled<Void>? {
        get { cold?.closeTimer }
        set { if newValue != nil || cold != nil { coldState().closeTimer = newValue } }
    }
    /// Closes the connection when the principal's credential expires.
    var expiryTask: Scheduled<Void>? {
        get { cold?.expiryTask }
        set { if newValue != nil || cold != nil { coldState().expiryTask = newValue } }
    }
    /// Topics resumed from the shared history store: live events up to this offset were
    /// in the replay (or precede it) and are skipped. Empty almost always.
    var resumeFloors: [String: StreamPosition] {
        get { cold?.resumeFloors ?? [:] }
        set { if !newValue.isEmpty || cold != nil { coldState().resumeFloors = newValue } }
    }
    /// The peer's address, for log lines (read from the channel, which keeps it).
    var remoteAddress: String? { context?.channel.remoteAddress?.ipAddress }

    public init(
        runtime: EndpointRuntime,
        choice: EndpointPipeline.EncoderChoice,
        variant: VariantID,
        compression: ConnectionCompression?,
        guards: [any ConnectionGuard],
        principal: Principal?,
        shard: LoopShard,
        logger: Logger,
        request: UpgradeRequest? = nil,
        attachedGuards: AttachedGuards? = nil,
        pipeline decided: EndpointPipeline? = nil,
        allowsDirectWrites: Bool = false
    ) {
        self.allowsDirectWrites = allowsDirectWrites
        self.runtime = runtime
        self.pipeline = decided ?? runtime.pipeline
        self.attachedGuards = attachedGuards
        self.choice = choice
        self.variant = variant
        self.compression = compression
        compression?.tally = (runtime.compression, choice.encoder.name)
        self.guards = guards
        self.shard = shard
        self.baseLogger = logger
        let pipeline = self.pipeline
        let decompression = compression.map {
            InboundDecompression(windowBits: $0.agreement.clientWindowBits, noContextTakeover: $0.agreement.clientNoContextTakeover, shard: shard)
        }
        self.parser = WebSocketFrameParser(maxFrameSize: Self.maxFrameSize(maxMessageSize: pipeline.maxMessageSize, compressed: compression != nil))
        self.inbound = WebSocketInboundStateMachine(maxMessageSize: pipeline.maxMessageSize, decompression: decompression)
        self.session = ClientSession(principal: principal)
        self.outbound = OutboundStateMachine(
            queue: OutboundQueue(
                maxMessages: pipeline.sendQueue.maxMessages,
                maxBytes: pipeline.sendQueue.maxBytes,
                policy: pipeline.sendQueue.policy
            )
        )
        let now = Self.now()
        self.heartbeat = HeartbeatStateMachine(
            interval: TimeAmount(pipeline.heartbeatInterval).nanoseconds,
            timeout: TimeAmount(pipeline.heartbeatTimeout).nanoseconds,
            now: now
        )
        self.messageRate = pipeline.maxMessageRate.map { TokenBucket(rate: $0, burst: $0 * 2, now: now) }
        self.request = request
    }

    /// The largest frame payload taken: a frame past it is refused (1009) as soon as its
    /// header arrives, not buffered first. A compressed frame of incompressible data is a
    /// little larger than its message (deflate's stored blocks: 5 bytes per 64 KiB); the
    /// inflated size has its own limit. At least 125 (every control frame fits).
    static func maxFrameSize(maxMessageSize limit: Int, compressed: Bool) -> Int {
        let limit = min(max(0, limit), 1 << 40)
        return max(125, compressed ? limit + limit / 1024 + 64 : limit)
    }

    /// The logger with this connection's endpoint and remote address.
    var logger: Logger {
        var logger = baseLogger
        logger[metadataKey: "endpoint"] = .string(pipeline.path)
        if let remoteAddress { logger[metadataKey: "remote"] = .string(remoteAddress) }
        return logger
    }

    static func now() -> Int64 {
        Int64(NIODeadline.now().uptimeNanoseconds)
    }

    // MARK: lifecycle

    public func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if allowsDirectWrites { directSocket = DirectSocket.of(context.channel) }
        registered = true
        runtime.connections.add(1, ordering: .relaxed)
        runtime.accepted.add(1, ordering: .relaxed)
        runtime.open.add(OpenConnection(channel: context.channel, request: request))
        perform(session.start(pipeline: pipeline, nowMilliseconds: UnixTime.nowMilliseconds()))
        scheduleHeartbeat(at: heartbeat.tick(now: Self.now()).nextTick)
        closeIfStale()
    }

    /// The filters of an upgrade run off the loop; a drain or a reload may have taken its
    /// snapshot of the open connections meanwhile, and would never reach this one. Checked
    /// after joining the registry (its lock orders the two): the gateway drains, the
    /// endpoint was removed or replaced, or its pipeline is no longer the one that admitted
    /// the request — close with 1001 so that the client reconnects to what is in force.
    private func closeIfStale() {
        guard let table, registered, inbound.isOpen, let reason = table.staleness(of: runtime, admittedBy: pipeline) else { return }
        failConnection(code: 1001, reason: reason + "; reconnect_after_ms=0", countAsCause: false)
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        tearDown()
    }

    public func channelInactive(context: ChannelHandlerContext) {
        tearDown()
        context.fireChannelInactive()
    }

    private func tearDown() {
        guard registered else { return }
        registered = false
        runtime.connections.add(-1, ordering: .relaxed)
        if let channel = context?.channel { runtime.open.remove(channel) }
        _ = inbound.startClose()
        inbound.closed()
        shard.queuedFrames -= outbound.queuedCount
        outbound.removeAll()
        shard.timers.cancel(self)
        for task in [closeTimer, expiryTask] { task?.cancel() }
        closeTimer = nil
        expiryTask = nil
        let patterns = session.end()
        // Unsubscribe on the next tick: this may run inside the shard's fan-out loop.
        if !patterns.isEmpty {
            let shard = self.shard
            let handler = NIOLoopBound(self, eventLoop: shard.eventLoop)
            shard.eventLoop.execute {
                for pattern in patterns { shard.unsubscribe(pattern, handler.value) }
            }
        }
        context = nil
        directSocket = nil
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            // The gateway's drain closes its connections one by one over the drain window.
            if !runtime.drainIsPaced.load(ordering: .relaxed) {
                failConnection(code: 1001, reason: "server shutting down", countAsCause: false)
            }
            return
        }
        if let command = event as? ConnectionCommand {
            obey(command)
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

    public func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    /// The parser cannot read past its failure, so the peer's close frame would never
    /// arrive: close the socket as soon as our close frame is out.
    private func frameRefused(_ failure: WebSocketFrameParser.Failure) {
        switch failure {
        case .frameTooLarge:
            runtime.refusals.record(.messageTooBig)
            failConnection(code: 1009, reason: "message too big", closeSocketAfterSending: true)
        case .fragmentedControlFrame, .controlFrameTooLong:
            runtime.refusals.record(.protocolError)
            failConnection(code: 1002, reason: "protocol error", closeSocketAfterSending: true)
        }
    }

    // MARK: inbound

    public func read(context: ChannelHandlerContext) {
        // Backpressure: a client whose answers cannot be written is not read from. During
        // the close handshake the peer's close frame is still read.
        if outbound.isWritable || !inbound.isOpen {
            context.read()
        } else {
            readPending = true
        }
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        parser.append(unwrapInboundIn(data))
        // A read nested in the handling of a frame (NIO reads what the socket still holds
        // when a write fails) only adds its bytes: the loop below takes them after the
        // current frame, so frames are handled one after another, never inside each other.
        guard !inReadLoop else { return }
        inReadLoop = true
        defer { inReadLoop = false }
        // Each step is one short call into the parser: what a frame leads to (writes, a
        // close, a nested read) finds the parser between two calls.
        while registered, let next = parser.next() {
            switch next {
            case .success(let frame): received(frame)
            case .failure(let failure): frameRefused(failure)
            }
        }
        if registered { parser.finishRead() } else { parser.discardAll() }
    }

    private func received(_ frame: WebSocketInboundStateMachine.Frame) {
        let now = Self.now()
        if heartbeat.heard(now: now) {
            // The answer to a ping: the next one is due an interval from now.
            scheduleHeartbeat(at: heartbeat.tick(now: now).nextTick)
        }
        // Every frame but a close counts toward the endpoint's message rate, fragments and
        // control frames included: an endless run of empty continuation frames is a flood too.
        if frame.opcode != ServerFrame.Opcode.close.rawValue, inbound.isOpen, messageRate != nil, messageRate?.take(now: now) == false {
            runtime.refusals.record(.messageRate)
            failConnection(code: 1008, reason: "message rate exceeded")
            return
        }
        let action = inbound.received(frame)
        switch action {
        case .none:
            // Control frames count toward the message rate too (a pong or close flood).
            if frame.opcode == ServerFrame.Opcode.pong.rawValue { _ = admitMessage(now: now, control: true) }
        case .message(let text, let payload):
            guard admitMessage(now: now, control: false) else { return }
            handleMessage(text: text, payload: payload)
        case .ping(let payload):
            guard admitMessage(now: now, control: true) else { return }
            sendOwn(ServerFrame.make(opcode: .pong, payload: payload))
        case .peerClosed(let code, let reason, let violation):
            if violation { runtime.refusals.record(.protocolError) }
            closeAfterPeer(code: code, reason: reason, violation: violation)
        case .closeHandshakeDone:
            context?.close(promise: nil)
        case .fail(let code, let reason):
            runtime.refusals.record(code == 1009 ? .messageTooBig : .protocolError)
            failConnection(code: code, reason: reason)
        }
    }

    /// The filters' guards (a `rate_limit` filter counts messages, pings and pongs).
    /// `false`: the message is dropped (and maybe the connection closed).
    private func admitMessage(now: Int64, control: Bool) -> Bool {
        for guardian in guards {
            switch guardian.messageReceived(now: now) {
            case .accept: continue
            case .reject(let code, let message):
                if !control { reply(.error(code: code, message: message)) }
                return false
            case .close(let code, let reason):
                failConnection(code: code, reason: reason)
                return false
            }
        }
        return true
    }

    private func handleMessage(text: Bool, payload: ByteBuffer) {
        switch pipeline.mode {
        case .echo:
            sendOwn(dataFrame(opcode: text ? .text : .binary, payload: payload))
        case .pubsub:
            switch choice.encoder.decode(payload, maxDepth: pipeline.maxMessageDepth) {
            case .success(let message):
                perform(session.received(message, pipeline: pipeline))
            case .failure(let error):
                runtime.refusals.record(.badMessage)
                reply(.error(code: error.code, message: ClientSession.excerpt(error.message, limit: 200)))
            }
        }
    }

    /// Performs the session's actions in order.
    func perform(_ actions: [ClientSession.Action]) {
        for action in actions {
            switch action {
            case .reply(let message):
                if case .error(let code, _) = message, let refusal = Refusal(errorCode: code) { runtime.refusals.record(refusal) }
                reply(message)
            case .forbidden(let message):
                runtime.forbiddenSubscriptions.add(1, ordering: .relaxed)
                reply(message)
            case .subscribe(let pattern):
                _ = shard.subscribe(pattern, self)
            case .unsubscribe(let pattern):
                shard.unsubscribe(pattern, self)
            case .replayRetained(let patterns):
                shard.replayRetained(patterns, to: self)
            case .join(let pattern, let text, let options):
                join(pattern, reply: text, options: options, allowLoopBehind: true)
            case .verifyRefresh(let token):
                startRefresh(token)
            case .armExpiry(let milliseconds):
                armExpiry(milliseconds: milliseconds)
            }
        }
    }

    /// A client's subscribe: the replay is looked up, the subscription added, the reply
    /// and the replayed events sent, all in this loop tick, so that every event after the
    /// replay arrives live and none twice. A `since` ahead of this loop (the client saw the
    /// event on a faster loop) is looked up again after the loop's queued deliveries.
    private func join(_ pattern: TopicPattern, reply text: String, options: SubscribeOptions, allowLoopBehind: Bool) {
        let replay = shard.replay(for: pattern, options: options, allowLoopBehind: allowLoopBehind)
        if replay.needsFetch, let since = options.since, let store = shard.sharedHistoryStore, let context {
            fetchAndJoin(pattern, reply: text, since: since, store: store, on: context.eventLoop)
            return
        }
        if replay.loopIsBehind, let context {
            let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
            context.eventLoop.execute {
                let handler = handler.value
                guard handler.registered, handler.inbound.isOpen, handler.session.subscriptions.contains(pattern) else { return }
                handler.join(pattern, reply: text, options: options, allowLoopBehind: false)
            }
            return
        }
        // Not added: a later subscribe to the same pattern (after an unsubscribe) already
        // joined while this one waited for the loop, and got the reply and the replay.
        guard shard.subscribe(pattern, self) else { return }
        reply(.subscribed(text, replay.history))
        shard.send(replay.events, to: self)
    }

    /// A resume this loop's memory cannot serve: read the shared store (Redis) off the
    /// loop, then merge its page with what the loop kept meanwhile, subscribe, reply and
    /// replay in one tick; live events the replay already holds are skipped by the floor.
    private func fetchAndJoin(_ pattern: TopicPattern, reply text: String, since: StreamPosition, store: any SharedHistoryStore, on loop: any EventLoop) {
        let handler = NIOLoopBound(self, eventLoop: loop)
        let topic = pattern.text
        let limit = shard.historySize(of: topic)
        loop.makeFutureWithTask { try await store.events(of: topic, after: since.offset, limit: limit) }.whenComplete { result in
            let handler = handler.value
            guard handler.registered, handler.inbound.isOpen, handler.session.subscriptions.contains(pattern) else { return }
            let (replay, floor) = handler.shard.resume(topic, since: since, page: try? result.get())
            guard handler.shard.subscribe(pattern, handler) else { return }
            handler.reply(.subscribed(text, replay.history))
            handler.shard.send(replay.events, to: handler)
            // After the replay, which the floor would otherwise filter.
            if let floor, let epoch = replay.history?.position?.epoch { handler.resumeFloors[topic] = StreamPosition(epoch: epoch, offset: floor) }
        }
    }

    // MARK: commands from the gateway (drain, reload)

    private func obey(_ command: ConnectionCommand) {
        guard registered, inbound.isOpen else {
            // Too late for the new filters' guards: release them now, not never.
            if case .refiltered(_, .admit(_, let newGuards)) = command { for guardian in newGuards { guardian.connectionClosed() } }
            return
        }
        switch command {
        case .close(let code, let reason):
            failConnection(code: code, reason: reason, countAsCause: false)
        case .refiltered(_, .refuse(_, let reason, _)):
            failConnection(code: 1008, reason: "refused after a configuration reload: " + reason, countAsCause: false)
        case .refiltered(_, .admit(_, let newGuards)) where request == nil:
            // The client refreshed its token in-band while the reload re-checked the one it
            // connected with: that decision is about a credential no longer in use.
            for guardian in newGuards { guardian.connectionClosed() }
            failConnection(code: 1001, reason: "endpoint filters changed by a configuration reload; reconnect_after_ms=0", countAsCause: false)
        case .refiltered(let pipeline, .admit(let principal, let newGuards)):
            self.pipeline = pipeline
            if let attachedGuards {
                attachedGuards.replace(with: newGuards)
            } else {
                for guardian in guards { guardian.connectionClosed() }
            }
            guards = newGuards
            perform(session.adopt(principal, pipeline: pipeline, nowMilliseconds: UnixTime.nowMilliseconds()))
        }
    }

    // MARK: credential expiry and refresh

    private func armExpiry(milliseconds: Int64?) {
        expiryTask?.cancel()
        expiryTask = nil
        // `ClientSession` bounds the delay to a century, far from TimeAmount's overflow.
        guard let milliseconds, let context else { return }
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        expiryTask = context.eventLoop.scheduleTask(in: .milliseconds(milliseconds)) {
            handler.value.failConnection(code: 1008, reason: "token expired")
        }
    }

    /// Asks the endpoint's filters to verify a new credential, off the event loop, and
    /// hands the answer to the session back on it.
    private func startRefresh(_ token: String) {
        guard let context else { return }
        let filters = pipeline.filters
        let current = session.principal
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        context.eventLoop.makeFutureWithTask { () async -> FilterDecision? in
            for filter in filters {
                if let decision = await filter.refresh(credential: token, current: current) { return decision }
            }
            return nil
        }.whenSuccess { decision in
            let handler = handler.value
            guard handler.registered, handler.inbound.isOpen else { return }
            if case .admit(let principal?) = decision, principal != current, handler.request != nil, let channel = handler.context?.channel {
                handler.request = nil
                handler.runtime.open.add(OpenConnection(channel: channel, request: nil))
            }
            let pipeline = handler.pipeline
            handler.perform(handler.session.refreshFinished(decision, pipeline: pipeline, nowMilliseconds: UnixTime.nowMilliseconds()))
        }
    }

    // MARK: heartbeat

    private func scheduleHeartbeat(at deadline: Int64) {
        guard deadline != Int64.max, registered else { return }
        shard.timers.schedule(self, at: deadline)
    }

    public func wheelDeadlinePassed() {
        heartbeatFired()
    }

    private func heartbeatFired() {
        guard registered, let context else { return }
        let now = Self.now()
        // Reading stops while the socket is full, so a slow reader's pongs wait unread; the
        // bytes NIO still holds for it shrinking since the last tick prove it alive.
        if !outbound.isWritable, let buffered = try? context.channel.syncOptions?.getOption(.bufferedWritableBytes) {
            if buffered < bufferedAtLastTick { heartbeat.heard(now: now) }
            bufferedAtLastTick = buffered
        } else {
            bufferedAtLastTick = Int.max
        }
        let (action, next) = heartbeat.tick(now: now)
        switch action {
        case .none:
            break
        case .sendPing:
            sendOwn(ServerFrame.make(opcode: .ping, payload: ByteBuffer()))
        case .closeDeadPeer:
            logger.debug("no answer to ping; dropping connection")
            runtime.closedForCause.add(1, ordering: .relaxed)
            runtime.refusals.record(.deadPeer)
            context.close(promise: nil)
            return
        }
        scheduleHeartbeat(at: next)
    }
}
