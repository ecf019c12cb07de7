import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import NIOWebSocket
import JSONPlugin
import SwitchboardConfig
import SwitchboardCore
import SwitchboardKernel
import SwitchboardServer
import SwitchboardTesting
import Synchronization
import Testing

extension WebSocketFrame {
    /// The frame as a client sends it; `data` is taken as it is (masked by the test).
    var wireBytes: ByteBuffer {
        clientFrameBytes(
            opcode: UInt8(webSocketOpcode: opcode), fin: fin, rsv1: rsv1, rsv2: rsv2, rsv3: rsv3,
            maskKey: maskKey.map { Array($0) }, payload: data
        )
    }
}

extension EmbeddedChannel {
    /// A client frame arrives as bytes, as from a socket (the handler parses frames itself).
    @discardableResult
    func writeInbound(_ frame: WebSocketFrame) throws -> BufferState {
        try writeInbound(frame.wireBytes)
    }
}

/// Stands in for the socket at the head of the pipeline, the way NIO's socket channel
/// behaves: a write that takes the pending bytes past the high-water mark makes the channel
/// unwritable and fires `channelWritabilityChanged` *synchronously, inside the write*; a
/// flush that empties the buffer (when the peer reads) fires it again inside the flush.
final class SocketSimulator: ChannelDuplexHandler {
    typealias InboundIn = NIOAny
    typealias OutboundIn = ByteBuffer

    var highWater: Int
    /// Whether a flush empties the buffer (the peer reads).
    var peerReads: Bool
    /// With a value, a flush only gets this many bytes out (a partial write), and the
    /// channel becomes writable again only below half the high-water mark, as NIO does.
    var bytesPerFlush: Int?
    /// Close the channel from inside the n-th write (a write error mid-write).
    var failOnWrite: Int?
    /// Delivered as a client frame from inside the failing write, before the close: NIO
    /// reads what the socket still holds when a write fails (BaseSocketChannel.flushNow).
    var readOnFailure: WebSocketFrame?
    private(set) var pending = 0
    private(set) var writes = 0
    private(set) var reads = 0
    private(set) var written = ByteBuffer()

    init(highWater: Int = 64 * 1024, peerReads: Bool = true) {
        self.highWater = highWater
        self.peerReads = peerReads
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        var buffer = unwrapOutboundIn(data)
        writes += 1
        if let failOnWrite, writes >= failOnWrite {
            promise?.fail(ChannelError.ioOnClosedChannel)
            if let frame = readOnFailure {
                readOnFailure = nil
                context.fireChannelRead(NIOAny(frame.wireBytes))
            }
            context.close(promise: nil)
            return
        }
        pending += buffer.readableBytes
        written.writeBuffer(&buffer)
        promise?.succeed(())
        if pending > highWater, let channel = context.channel as? EmbeddedChannel, channel.isWritable {
            channel.isWritable = false
            context.fireChannelWritabilityChanged()
        }
    }

    func flush(context: ChannelHandlerContext) {
        guard peerReads else { return }
        if let bytesPerFlush {
            pending = max(0, pending - bytesPerFlush)
            if pending < highWater / 2, let channel = context.channel as? EmbeddedChannel, !channel.isWritable {
                channel.isWritable = true
                context.fireChannelWritabilityChanged()
            }
            return
        }
        drain(context: context)
    }

    func read(context: ChannelHandlerContext) {
        reads += 1
    }

    /// The peer read everything: the buffer empties and the channel is writable again.
    func drain(context: ChannelHandlerContext) {
        pending = 0
        if let channel = context.channel as? EmbeddedChannel, !channel.isWritable {
            channel.isWritable = true
            context.fireChannelWritabilityChanged()
        }
    }

    /// Every complete server frame written so far: (opcode, payload).
    func frames() -> [(opcode: UInt8, payload: ByteBuffer)] {
        var buffer = written
        var frames: [(UInt8, ByteBuffer)] = []
        while let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self),
            let second = buffer.getInteger(at: buffer.readerIndex + 1, as: UInt8.self)
        {
            var header = 2
            var length = Int(second & 0x7F)
            if length == 126 {
                guard let extended = buffer.getInteger(at: buffer.readerIndex + 2, as: UInt16.self) else { break }
                length = Int(extended)
                header = 4
            } else if length == 127 {
                guard let extended = buffer.getInteger(at: buffer.readerIndex + 2, as: UInt64.self) else { break }
                length = Int(extended)
                header = 10
            }
            guard buffer.readableBytes >= header + length, let payload = buffer.getSlice(at: buffer.readerIndex + header, length: length) else { break }
            frames.append((first & 0x0F, payload))
            buffer.moveReaderIndex(forwardBy: header + length)
        }
        return frames
    }
}

/// A connection handler on an embedded channel with a real kernel on the same loop.
struct ConnectionHarness {
    let loop = EmbeddedEventLoop()
    let channel: EmbeddedChannel
    let kernel: Kernel
    let socket: SocketSimulator
    let runtime: EndpointRuntime

    init(
        sendQueue: (maxMessages: Int, maxBytes: Int, policy: SlowConsumerPolicy) = (1024, 4 << 20, .dropOldest),
        maxMessageRate: Double? = nil,
        subscribe: [String] = ["metrics"],
        socket: SocketSimulator = SocketSimulator(),
        dedicatedDeflate: Bool = false,
        guards: [any ConnectionGuard] = []
    ) throws {
        let json = JSONEventEncoder()
        let table = VariantTable(encoders: [json])
        kernel = Kernel(eventLoopGroup: loop, variants: table)
        let variant = try #require(table.variant(forEncoder: "json"))
        let queue = SendQueueLimits(maxMessages: sendQueue.maxMessages, maxBytes: sendQueue.maxBytes, policy: sendQueue.policy)
        let pipeline = EndpointPipeline(
            path: "/ws", encoders: [.init(encoder: json, variant: variant)], topics: [TopicPattern.everything],
            defaultSubscriptions: subscribe.compactMap { TopicPattern($0) }, filters: [],
            heartbeatInterval: .seconds(0), heartbeatTimeout: .seconds(10),
            maxMessageSize: 65536, maxSubscriptions: 128, maxMessageRate: maxMessageRate,
            sendQueue: queue, mode: .pubsub, closeTimeout: .seconds(2)
        )
        runtime = EndpointRuntime(pipeline: pipeline)
        self.socket = socket
        channel = EmbeddedChannel(loop: loop)
        let shard = try #require(kernel.shard(for: loop))
        try channel.pipeline.syncOperations.addHandler(socket)
        var compression: ConnectionCompression?
        if dedicatedDeflate {
            let policy = PerMessageDeflate.Policy(mode: .dedicated, serverWindowBits: 15, clientWindowBits: 15)
            let agreement = try #require(PerMessageDeflate.negotiate(offers: PerMessageDeflate.parseOffers(["permessage-deflate"]), policy: policy))
            compression = ConnectionCompression(agreement: agreement, settings: DeflateSettings(windowBits: 15, level: 6, memLevel: 8), minSize: 0, shard: shard)
        }
        try channel.pipeline.syncOperations.addHandler(
            WebSocketConnectionHandler(
                runtime: runtime, choice: .init(encoder: json, variant: variant), variant: variant, compression: compression,
                guards: guards, principal: nil, shard: shard, logger: Logger(label: "test")
            )
        )
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
    }

    func publish(_ count: Int, size: Int, topic: String = "metrics") {
        let padding = String(repeating: "x", count: size)
        for index in 0..<count {
            kernel.publish(Event(topic: topic, type: "t", data: ["n": .int(Int64(index)), "pad": .string(padding)]))
        }
        loop.run()
    }

    func send(_ text: String) throws {
        let frame = WebSocketFrame(fin: true, opcode: .text, maskKey: [1, 2, 3, 4], data: maskedBuffer(text, key: [1, 2, 3, 4]))
        try channel.writeInbound(frame)
    }

    func maskedBytes(_ buffer: ByteBuffer, key: WebSocketMaskingKey) -> ByteBuffer {
        var buffer = buffer
        buffer.webSocketMask(key)
        return buffer
    }

    func maskedBuffer(_ text: String, key: WebSocketMaskingKey) -> ByteBuffer {
        var buffer = ByteBuffer(string: text)
        buffer.webSocketMask(key)
        return buffer
    }

    /// The `n` values of the event frames written, in order (inflated with context takeover
    /// when `inflater` is given, as a dedicated-mode client would).
    func deliveredNumbers(inflater: Inflater? = nil) -> [Int64] {
        socket.frames().compactMap { frame -> Int64? in
            var payload = frame.payload
            if let inflater {
                guard let inflated = try? inflater.inflate(payload, limit: 1 << 20, resetAfter: false) else { return -1 }
                payload = inflated
            }
            guard frame.opcode == 1, let value = try? JSONParser.parse(payload.readableBytesView) else { return nil }
            guard value["type"]?.stringValue == "t", case .int(let n)? = value["data"]?["n"] else { return nil }
            return n
        }
    }

    func closeCodes() -> [UInt16] {
        socket.frames().filter { $0.opcode == 8 }.compactMap { $0.payload.getInteger(at: $0.payload.readerIndex, as: UInt16.self) }
    }
}

@Suite(.serialized) struct ConnectionHandlerTests {
    /// The sequence that aborted the gateway: a client that stops reading and ~2,700 events
    /// of 1 KB. Each write past the high-water mark fires `channelWritabilityChanged`
    /// inside the write; with the old handler that re-entered the outbound state while it
    /// was being mutated ("Simultaneous accesses … Fatal access conflict").
    @Test func clientThatStopsReadingSurvivesTheHighWaterMark() throws {
        let harness = try ConnectionHarness(socket: SocketSimulator(highWater: 64 * 1024, peerReads: false))
        harness.publish(2_700, size: 1_000)
        #expect(harness.channel.isActive)
        #expect(!harness.channel.isWritable)
        // drop_oldest kept the newest 1,024 frames (or fewer if the bytes bound hit first).
        #expect(harness.kernel.counters.dropped.load(ordering: .relaxed) > 0)
        // The peer reads again: the queue drains, in order, ending with the newest event.
        harness.socket.peerReads = true
        harness.socket.drain(context: try harness.channel.pipeline.syncOperations.context(handler: harness.socket))
        harness.loop.run()
        let delivered = harness.deliveredNumbers()
        #expect(delivered.last == 2_699)
        #expect(delivered == delivered.sorted())
        _ = try harness.channel.finish(acceptAlreadyClosed: true)
    }

    /// A reading client and a batch of 20 KB events: large frames bypass the outbox and are
    /// written from inside the offer; each can cross the high-water mark.
    @Test func largeFramesAcrossTheHighWaterMarkWithAReadingClient() throws {
        let harness = try ConnectionHarness(socket: SocketSimulator(highWater: 64 * 1024, peerReads: true))
        harness.publish(10, size: 20_000)
        harness.publish(1, size: 70_000)
        #expect(harness.deliveredNumbers() == Array(0..<10) + [0])
        #expect(harness.channel.isActive)
        _ = try harness.channel.finish(acceptAlreadyClosed: true)
    }

    @Test func disconnectPolicyClosesWith1008() throws {
        let harness = try ConnectionHarness(sendQueue: (16, 1 << 20, .disconnect), socket: SocketSimulator(highWater: 16 * 1024, peerReads: false))
        harness.publish(200, size: 1_000)
        #expect(harness.closeCodes() == [1008])
        #expect(harness.runtime.refusals.count(.slowConsumerDisconnect) == 1)
        _ = try harness.channel.finish(acceptAlreadyClosed: true)
    }

    /// A write error in the middle of a write closes the channel from inside the write:
    /// `channelInactive` tears the handler down while it is delivering.
    @Test func writeErrorInTheMiddleOfAWrite() throws {
        let socket = SocketSimulator(highWater: 1 << 20, peerReads: true)
        socket.failOnWrite = 3
        let harness = try ConnectionHarness(socket: socket)
        harness.publish(50, size: 5_000)
        #expect(!harness.channel.isActive)
        #expect(harness.runtime.connections.load(ordering: .relaxed) == 0)
        _ = try? harness.channel.finish(acceptAlreadyClosed: true)
    }

    /// 3,000 pings from a client that never reads: pongs go through the bounded queue, and
    /// reading stops while the socket is unwritable.
    @Test func pingBurstFromAClientThatNeverReadsStaysBounded() throws {
        let harness = try ConnectionHarness(sendQueue: (64, 1 << 20, .dropOldest), socket: SocketSimulator(highWater: 8 * 1024, peerReads: false))
        for _ in 0..<3_000 {
            try harness.channel.writeInbound(WebSocketFrame(fin: true, opcode: .ping, maskKey: [1, 2, 3, 4], data: ByteBuffer(string: "0123456789")))
            try harness.send(#"{"type":"ping"}"#)
        }
        harness.loop.run()
        #expect(harness.channel.isActive)
        // What reached the "socket" is bounded by the high-water mark plus one flush round.
        #expect(harness.socket.pending < 8 * 1024 + OutboundStateMachine.outboxLimit + 1024)
        // The channel asked to read while unwritable: the handler held the read back.
        let readsBefore = harness.socket.reads
        harness.channel.read()
        #expect(harness.socket.reads == readsBefore)
        _ = try harness.channel.finish(acceptAlreadyClosed: true)
    }

    @Test func readingResumesWhenTheSocketDrains() throws {
        let socket = SocketSimulator(highWater: 4 * 1024, peerReads: false)
        let harness = try ConnectionHarness(socket: socket)
        harness.publish(20, size: 1_000)
        #expect(!harness.channel.isWritable)
        let before = socket.reads
        harness.channel.read()
        #expect(socket.reads == before)
        socket.drain(context: try harness.channel.pipeline.syncOperations.context(handler: socket))
        #expect(socket.reads == before + 1)
        _ = try harness.channel.finish(acceptAlreadyClosed: true)
    }

    @Test func messageRateCountsControlFrames() throws {
        let harness = try ConnectionHarness(maxMessageRate: 10)
        for _ in 0..<100 {
            try harness.channel.writeInbound(WebSocketFrame(fin: true, opcode: .ping, maskKey: [1, 2, 3, 4], data: ByteBuffer()))
        }
        harness.loop.run()
        #expect(harness.closeCodes() == [1008])
        #expect(harness.runtime.refusals.count(.messageRate) == 1)
        _ = try harness.channel.finish(acceptAlreadyClosed: true)
    }

    /// Dedicated compression (context takeover) under drop_oldest: frames are compressed
    /// when they leave, never before they are queued, so a dropped frame cannot leave the
    /// client's window out of step with ours (every frame after a drop would be garbage).
    @Test func dedicatedCompressionSurvivesDropOldest() throws {
        let socket = SocketSimulator(highWater: 256, peerReads: false)
        let harness = try ConnectionHarness(sendQueue: (8, 1 << 20, .dropOldest), socket: socket, dedicatedDeflate: true)
        // Rounds with a flush between them (compressed frames are tiny: they would all fit
        // in one outbox otherwise).
        for _ in 0..<20 { harness.publish(10, size: 500) }
        #expect(harness.kernel.counters.dropped.load(ordering: .relaxed) > 0)
        socket.peerReads = true
        socket.drain(context: try harness.channel.pipeline.syncOperations.context(handler: socket))
        harness.loop.run()
        let inflater = try #require(Inflater(windowBits: 15))
        let delivered = harness.deliveredNumbers(inflater: inflater)
        #expect(!delivered.contains(-1), "a frame failed to inflate: the windows went out of step")
        #expect(delivered.last == 9)
        #expect(delivered.count < 200)
        _ = try harness.channel.finish(acceptAlreadyClosed: true)
    }

    /// An endless run of empty continuation frames is a flood like any other.
    @Test func emptyContinuationFramesCountTowardTheRate() throws {
        let harness = try ConnectionHarness(maxMessageRate: 10)
        try harness.channel.writeInbound(WebSocketFrame(fin: false, opcode: .text, maskKey: [1, 2, 3, 4], data: ByteBuffer()))
        for _ in 0..<100 {
            try harness.channel.writeInbound(WebSocketFrame(fin: false, opcode: .continuation, maskKey: [1, 2, 3, 4], data: ByteBuffer()))
        }
        harness.loop.run()
        #expect(harness.closeCodes() == [1008])
        _ = try harness.channel.finish(acceptAlreadyClosed: true)
    }

    /// A write fails while the socket still holds a client message: NIO reads it inside the
    /// failing write, so the client's subscribe runs while the shard is delivering.
    @Test func clientMessageReadInsideAFailingWrite() throws {
        let socket = SocketSimulator(highWater: 1 << 20, peerReads: true)
        socket.failOnWrite = 2
        var subscribe = ByteBuffer(string: #"{"type":"subscribe","data":"other"}"#)
        subscribe.webSocketMask([1, 2, 3, 4])
        socket.readOnFailure = WebSocketFrame(fin: true, opcode: .text, maskKey: [1, 2, 3, 4], data: subscribe)
        let harness = try ConnectionHarness(socket: socket)
        harness.publish(20, size: 5_000)
        #expect(!harness.channel.isActive)
        _ = try? harness.channel.finish(acceptAlreadyClosed: true)
    }

    /// Partial writes: each flush gets only part of the buffer out and writability returns
    /// only below the low-water mark; a reading client still gets everything, in order.
    @Test func partialWritesKeepOrderAndLoseNothing() throws {
        let socket = SocketSimulator(highWater: 16 * 1024, peerReads: true)
        socket.bytesPerFlush = 3_000
        let harness = try ConnectionHarness(sendQueue: (4096, 16 << 20, .dropOldest), socket: socket)
        for round in 0..<20 {
            harness.publish(50, size: 1_000)
            _ = round
        }
        // Keep flushing until the queue has drained (each flush moves 3,000 bytes).
        let context = try harness.channel.pipeline.syncOperations.context(handler: socket)
        for _ in 0..<2_000 where !harness.channel.isWritable || socket.pending > 0 {
            context.flush()
            socket.drain(context: context)
            harness.loop.run()
        }
        let delivered = harness.deliveredNumbers()
        #expect(delivered.count == 1_000)
        #expect(delivered == (0..<20).flatMap { _ in (0..<50).map(Int64.init) })
        #expect(harness.kernel.counters.dropped.load(ordering: .relaxed) == 0)
        _ = try harness.channel.finish(acceptAlreadyClosed: true)
    }

    /// Both sides close at once: our close (rate exceeded) crosses the peer's close frame.
    /// One close frame from us, and the socket closes when the peer's arrives.
    @Test func closeRaceBothSidesCloseAtOnce() throws {
        let harness = try ConnectionHarness(maxMessageRate: 1)
        for _ in 0..<5 { try harness.send(#"{"type":"ping"}"#) }  // past the burst of 2: we close
        var payload = ByteBuffer()
        payload.writeInteger(UInt16(1000))
        try harness.channel.writeInbound(WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: [1, 2, 3, 4], data: harness.maskedBytes(payload, key: [1, 2, 3, 4])))
        harness.loop.run()
        #expect(harness.closeCodes() == [1008])
        #expect(!harness.channel.isActive)
        _ = try? harness.channel.finish(acceptAlreadyClosed: true)
    }

    /// The peer closes while frames wait in the queue for a full socket: gathered frames
    /// leave before our close answer, queued ones are dropped, and there is one close.
    @Test func peerClosesDuringABackedUpDrain() throws {
        let socket = SocketSimulator(highWater: 4 * 1024, peerReads: false)
        let harness = try ConnectionHarness(socket: socket)
        harness.publish(200, size: 1_000)
        #expect(!harness.channel.isWritable)
        var payload = ByteBuffer()
        payload.writeInteger(UInt16(1001))
        try harness.channel.writeInbound(WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: [1, 2, 3, 4], data: harness.maskedBytes(payload, key: [1, 2, 3, 4])))
        socket.peerReads = true
        socket.drain(context: try harness.channel.pipeline.syncOperations.context(handler: socket))
        harness.loop.run()
        #expect(harness.closeCodes() == [1001])
        let frames = socket.frames()
        #expect(frames.last?.opcode == 8)
        let delivered = harness.deliveredNumbers()
        #expect(delivered == delivered.sorted())
        #expect(delivered.count < 200)
        _ = try? harness.channel.finish(acceptAlreadyClosed: true)
    }

    /// A filter's guard (the `rate_limit` filter's message rate) sees pings and pongs too,
    /// not only data messages; a `close` verdict on a ping closes the connection.
    @Test func filterGuardsCountControlFrames() throws {
        final class CountingGuard: ConnectionGuard, @unchecked Sendable {
            var seen = 0
            func messageReceived(now: Int64) -> MessageVerdict {
                seen += 1
                return seen > 5 ? .close(code: 1008, reason: "rate limited") : .accept
            }
            func connectionClosed() {}
        }
        let counting = CountingGuard()
        let harness = try ConnectionHarness(guards: [counting])
        for _ in 0..<3 {
            try harness.channel.writeInbound(WebSocketFrame(fin: true, opcode: .ping, maskKey: [1, 2, 3, 4], data: ByteBuffer()))
            try harness.channel.writeInbound(WebSocketFrame(fin: true, opcode: .pong, maskKey: [1, 2, 3, 4], data: ByteBuffer()))
        }
        harness.loop.run()
        #expect(counting.seen == 6)
        #expect(harness.closeCodes() == [1008])
        _ = try? harness.channel.finish(acceptAlreadyClosed: true)
    }

    @Test func tenThousandSubscribesOnOneConnection() throws {
        let harness = try ConnectionHarness(socket: SocketSimulator(highWater: 64 * 1024, peerReads: false))
        for index in 0..<10_000 {
            try harness.send(#"{"type":"subscribe","data":"topic-\#(index % 300)"}"#)
        }
        harness.loop.run()
        #expect(harness.channel.isActive)
        _ = try harness.channel.finish(acceptAlreadyClosed: true)
    }
}


@Suite struct MemoryTrimmerTests {
    /// Trims once a wave of at least `threshold` sockets has closed since the peak, not on
    /// small dips, and measures the next wave from where the last trim left off.
    @Test func trimsAfterAWaveOfClientsLeaves() {
        let loop = EmbeddedEventLoop()
        let open = NIOLockedValueBox(0)
        let trims = NIOLockedValueBox(0)
        let trimmer = MemoryTrimmer(on: loop, interval: .seconds(2), threshold: 500, openSockets: { open.withLockedValue { $0 } }) {
            trims.withLockedValue { $0 += 1 }
        }
        func tick(_ sockets: Int) {
            open.withLockedValue { $0 = sockets }
            loop.advanceTime(by: .seconds(2))
        }
        tick(1_900)
        tick(1_500)  // a dip of 400: no trim
        #expect(trims.withLockedValue { $0 } == 0)
        tick(0)
        #expect(trims.withLockedValue { $0 } == 1)
        tick(0)
        tick(300)
        tick(0)  // 300 left since the last trim: below the threshold
        #expect(trims.withLockedValue { $0 } == 1)
        trimmer.cancel()
    }
}
