import Logging
import NIOCore
import SwitchboardConfig
import SwitchboardCore
import SwitchboardKernel
import Synchronization

/// The outbound half: every frame the connection sends — deliveries, replies, pongs,
/// pings, echoes — goes through ``OutboundStateMachine`` and so through the bounded send
/// queue; only the close frame, one per connection, is written past it.
extension WebSocketConnectionHandler {
    // MARK: Subscriber

    public func enqueue(_ frame: ByteBuffer, of event: PreparedEvent) -> Bool {
        if !resumeFloors.isEmpty, let position = event.event.position, let floor = resumeFloors[event.event.topic] {
            // Already replayed from the shared store (or older than its page).
            if position.epoch == floor.epoch && position.offset <= floor.offset { return true }
            resumeFloors[event.event.topic] = nil
        }
        return enqueueFrame(frame, event: event)
    }

    /// Dedicated compression keeps a per-connection context (RFC 7692 context takeover):
    /// a frame is compressed only when it is certain to reach the socket — right away, or
    /// when it leaves the send queue — never before it is queued, since the slow-consumer
    /// policy may drop queued frames and the client's window would no longer match ours.
    func compressedForDedicated(_ frame: ByteBuffer) -> ByteBuffer {
        guard let compression, compression.isDedicated, let opcode = ServerFrame.opcode(of: frame),
            opcode == .text || opcode == .binary,
            let payload = ServerFrame.payload(of: frame), let compressed = compression.compress(payload)
        else { return frame }
        return ServerFrame.make(opcode: opcode, payload: compressed, rsv1: true)
    }

    @discardableResult
    public func flush() -> Bool {
        guard registered, let output = context else { return false }
        let gathered = outbound.takeGathered()
        // The state machine's access has ended: NIO may call back into us from here on.
        if let gathered {
            send(gathered, via: output)
        } else if directSocket?.nioNeedsFlush ?? true {
            output.flush()
        }
        return true
    }

    /// Hands bytes to the socket: straight to the kernel while NIO holds nothing for it
    /// (``DirectSocket``), through the pipeline otherwise and for whatever the kernel did
    /// not take. Flushes unless `flush` is false (the caller flushes after a batch).
    func send(_ first: ByteBuffer, _ second: ByteBuffer? = nil, via output: ChannelHandlerContext, flush: Bool = true) {
        var first = first
        var second = second
        if var socket = directSocket {
            let rest = socket.write(first, second, channel: output.channel)
            directSocket = socket
            guard let rest else {
                shard.directWrites += 1
                return
            }
            // Part of it went straight to the kernel (the rest follows through NIO).
            if rest.0.readableBytes + (rest.1?.readableBytes ?? 0) < first.readableBytes + (second?.readableBytes ?? 0) {
                shard.directWrites += 1
            }
            (first, second) = rest
        }
        shard.pipelineWrites += 1
        if flush && second == nil {
            // One pipeline call for the write and its flush, not two.
            output.writeAndFlush(NIOAny(first), promise: nil)
            return
        }
        output.write(NIOAny(first), promise: nil)
        if let second { output.write(NIOAny(second), promise: nil) }
        if flush { output.flush() }
    }

    // MARK: frames of the connection's own

    /// Offers one frame (of `event`, for deliveries) and performs what the state machine says.
    func enqueueFrame(_ frame: ByteBuffer, event: PreparedEvent? = nil) -> Bool {
        guard registered, let output = context else { return false }
        let frame = outbound.takesDirectly ? compressedForDedicated(frame) : frame
        let queuedBefore = outbound.queuedCount
        let (outcome, writes) = outbound.offer(frame, event: event)
        shard.queuedFrames += outbound.queuedCount - queuedBefore
        write(writes, to: output)
        switch outcome {
        case .accepted:
            return true
        case .acceptedAfterDropping(let count):
            shard.recordDrops(count)
            runtime.dropped.add(count, ordering: .relaxed)
            if !loggedDrops {
                loggedDrops = true
                runtime.refusals.record(.slowConsumerDrops)
                logger.debug(
                    pipeline.sendQueue.policy == .conflate
                        ? "slow consumer: the send queue is full, keeping the newest event per topic"
                        : "slow consumer: the send queue is full, dropping the oldest frames",
                    metadata: ["dropped": "\(count)"]
                )
            }
            return true
        case .overflow:
            runtime.refusals.record(.slowConsumerDisconnect)
            failConnection(code: 1008, reason: Self.overflowReason(lastSent: outbound.lastSent))
            return false
        case .closed:
            return false
        }
    }

    /// Hands a full outbox or a large frame to the socket and flushes at once: without the
    /// flush, NIO would hold the bytes until the flush round, so a burst of one loop tick
    /// could pass the high-water mark and queue (or, under `disconnect`, close) even a
    /// client that reads as fast as it can. 64 KiB per write keeps the syscalls few.
    private func write(_ writes: OutboundStateMachine.Writes, to output: ChannelHandlerContext) {
        switch writes {
        case .none:
            return
        case .one(let buffer):
            send(buffer, via: output)
        case .two(let first, let second):
            send(first, second, via: output)
        }
    }

    /// A control frame or echo of this connection's own, sent with the next flush round.
    func sendOwn(_ frame: ByteBuffer) {
        if enqueueFrame(frame) { shard.needsFlush(self) }
    }

    func reply(_ message: ServerReply) {
        let encoder = choice.encoder
        var payload = ByteBuffer()
        encoder.encode(message, timestamp: UnixTime.nowSeconds(), into: &payload)
        sendOwn(dataFrame(opcode: encoder.frameKind == .text ? .text : .binary, payload: payload))
    }

    /// A data frame built for this connection only. In shared mode it is compressed here
    /// (the loop's shared compressor, when large enough); in dedicated mode on its way out.
    func dataFrame(opcode: ServerFrame.Opcode, payload: ByteBuffer) -> ByteBuffer {
        if let compression, !compression.isDedicated, let compressed = compression.compress(payload) {
            return ServerFrame.make(opcode: opcode, payload: compressed, rsv1: true)
        }
        return ServerFrame.make(opcode: opcode, payload: payload)
    }

    // MARK: writability

    public func channelWritabilityChanged(context: ChannelHandlerContext) {
        let writable = context.channel.isWritable
        // The peer reads what we send: it is alive even if its pongs wait unread.
        if writable { heartbeat.heard(now: Self.now()) }  // the tick already due reschedules
        if outbound.writabilityChanged(to: writable), registered {
            drain(context)
        }
        if writable && readPending {
            readPending = false
            context.read()
        }
        context.fireChannelWritabilityChanged()
    }

    /// Writes the outbox and then queued frames while the socket takes them. Each step is
    /// one short call into the state machine; a write that makes the socket unwritable
    /// again is recorded by a nested `channelWritabilityChanged`, which ends the loop.
    private func drain(_ output: ChannelHandlerContext) {
        if let gathered = outbound.takeGathered() {
            send(gathered, via: output, flush: false)
        }
        while let frame = outbound.nextQueued() {
            shard.queuedFrames -= 1
            send(compressedForDedicated(frame), via: output, flush: false)
        }
        if directSocket?.nioNeedsFlush ?? true { output.flush() }
    }

    // MARK: closing

    /// The close reason of a slow consumer: what happened and, when the connection had
    /// events with positions, the last one that reached the socket (`topic@epoch:offset`),
    /// so the client can resume with `since`. At most 123 bytes (RFC 6455 §5.5).
    static func overflowReason(lastSent: (topic: String, position: StreamPosition)?) -> String {
        let base = "send queue overflow: client reads too slowly"
        guard let (topic, position) = lastSent else { return base }
        let withTopic = "\(base); last sent \(topic)@\(position)"
        if withTopic.utf8.count <= 123 { return withTopic }
        let withoutTopic = "\(base); last sent @\(position)"
        return withoutTopic.utf8.count <= 123 ? withoutTopic : base
    }

    /// Sends a close frame, stops taking data, and closes the socket once the peer answers
    /// or the close timeout passes (at once after sending when `closeSocketAfterSending`).
    func failConnection(code: UInt16, reason: String, countAsCause: Bool = true, closeSocketAfterSending: Bool = false) {
        guard registered, let context, inbound.startClose() else { return }
        if countAsCause { runtime.closedForCause.add(1, ordering: .relaxed) }
        logger.debug("closing connection", metadata: ["code": "\(code)", "reason": "\(reason)"])
        // Frames already gathered were accepted for this connection: they leave before the
        // close. Queued ones are dropped: the peer is not reading them.
        shard.queuedFrames -= outbound.queuedCount
        let gathered = outbound.close()
        directSocket?.handedToNIO()
        if let gathered { context.write(NIOAny(gathered), promise: nil) }
        let frame = ServerFrame.close(code: code, reason: reason)
        let channel = context.channel
        // Armed before the write: a failing write may tear the connection down at once, and
        // a peer that does not read never lets the close frame out.
        closeTimer = context.eventLoop.scheduleTask(in: TimeAmount(pipeline.closeTimeout)) {
            channel.close(promise: nil)
        }
        // The peer's close frame must be read, even if reading was held back.
        if readPending {
            readPending = false
            context.read()
        }
        if closeSocketAfterSending {
            let promise = context.eventLoop.makePromise(of: Void.self)
            promise.futureResult.whenComplete { _ in channel.close(promise: nil) }
            context.writeAndFlush(NIOAny(frame), promise: promise)
            return
        }
        context.writeAndFlush(NIOAny(frame), promise: nil)
    }

    /// Answers the peer's close frame and closes the socket once the answer is out.
    func closeAfterPeer(code: UInt16, reason: String, violation: Bool) {
        guard registered, let context else { return }
        if violation { runtime.closedForCause.add(1, ordering: .relaxed) }
        shard.queuedFrames -= outbound.queuedCount
        let gathered = outbound.close()
        directSocket?.handedToNIO()
        if let gathered { context.write(NIOAny(gathered), promise: nil) }
        let channel = context.channel
        // A peer that does not read our answer is not waited for beyond the close timeout.
        closeTimer = context.eventLoop.scheduleTask(in: TimeAmount(pipeline.closeTimeout)) {
            channel.close(promise: nil)
        }
        let promise = context.eventLoop.makePromise(of: Void.self)
        promise.futureResult.whenComplete { _ in channel.close(promise: nil) }
        context.writeAndFlush(NIOAny(ServerFrame.close(code: code, reason: reason)), promise: promise)
    }
}
