#if os(Linux)
import Glibc
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import NIOPosix
import SwitchboardServer
import Testing

/// The server side of a real loopback connection, writing the way the connection handler
/// does: straight to the socket while NIO holds nothing for it, the rest through NIO.
private final class DirectWriter: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    var socket: DirectSocket?
    var context: ChannelHandlerContext?
    var direct = 0
    var throughNIO = 0
    let active: EventLoopPromise<Void>

    init(active: EventLoopPromise<Void>) { self.active = active }

    func channelActive(context: ChannelHandlerContext) {
        self.context = context
        socket = DirectSocket.of(context.channel)
        active.succeed(())
        context.fireChannelActive()
    }

    /// One chunk, the way `WebSocketConnectionHandler.send` does it. `true`: went direct.
    @discardableResult
    func send(_ chunk: ByteBuffer) -> Bool {
        guard let context else { return false }
        var rest: (ByteBuffer, ByteBuffer?)? = (chunk, nil)
        if var socket {
            rest = socket.write(chunk, nil, channel: context.channel)
            self.socket = socket
        }
        guard let (first, _) = rest else {
            direct += 1
            return true
        }
        throughNIO += 1
        context.writeAndFlush(NIOAny(first), promise: nil)
        return false
    }
}

/// Reads what the server sends; reading starts only when asked.
private final class Collector: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    let received = NIOLockedValueBox(ByteBuffer())
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        received.withLockedValue { $0.writeBuffer(&bytes) }
    }
}

@Suite("Direct socket writes")
struct DirectSocketTests {
    /// A connected pair on loopback: the server's writer and the client channel, which does
    /// not read until `autoRead` is turned on.
    private func connectedPair(group: MultiThreadedEventLoopGroup, clientGroup: MultiThreadedEventLoopGroup? = nil) async throws -> (DirectWriter, any Channel, any Channel, Collector) {
        let accepted = group.next().makePromise(of: DirectWriter.self)
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.so_sndbuf), value: 16384)  // fills up soon
            .childChannelInitializer { channel in
                let writer = DirectWriter(active: channel.eventLoop.makePromise())
                writer.active.futureResult.whenSuccess { accepted.succeed(writer) }
                return channel.pipeline.addHandler(writer)
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let collector = Collector()
        let client = try await ClientBootstrap(group: clientGroup ?? group)
            .channelOption(.autoRead, value: false)
            .channelOption(.socketOption(.so_rcvbuf), value: 4096)
            .channelInitializer { $0.pipeline.addHandler(collector) }
            .connect(to: try #require(server.localAddress)).get()
        let writer = try await accepted.futureResult.get()
        return (writer, server, client, collector)
    }

    private func closeAll(_ channels: [any Channel], _ groups: [MultiThreadedEventLoopGroup]) async throws {
        for channel in channels { try await channel.close() }
        for group in groups { try await group.shutdownGracefully() }
    }

    private func chunk(_ index: Int, size: Int) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeRepeatingByte(UInt8(truncatingIfNeeded: index &* 31 &+ 7), count: size)
        return buffer
    }

    @Test("the socket of an accepted channel is found and verified; an embedded channel has none")
    func findsTheSocket() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let (writer, server, client, _) = try await connectedPair(group: group)
        let context = try #require(writer.context)
        let found = try await context.eventLoop.submit { writer.socket?.descriptor }.get()
        #expect(found != nil)
        #expect((found ?? -1) >= 0)
        let embedded = EmbeddedChannel()
        _ = try? await embedded.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).get()
        #expect(DirectSocket.of(embedded) == nil)
        try await closeAll([client, server], [group])
    }

    @Test("a reader that stops: what the kernel refuses goes through NIO, later writes wait behind it even when the kernel has room again, every byte arrives in order, and direct writes resume once NIO is empty")
    func keepsOrderPastTheKernelBuffer() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let clientGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let (writer, server, client, collector) = try await connectedPair(group: group, clientGroup: clientGroup)
        let loop = try #require(writer.context).eventLoop
        let chunks = 300
        let size = 4096
        // 1.2 MB to a client that reads nothing: far past its receive and our send buffer.
        let (direct, throughNIO) = try await loop.submit { () -> (Int, Int) in
            for index in 0..<chunks { writer.send(chunk(index, size: size)) }
            return (writer.direct, writer.throughNIO)
        }.get()
        #expect(direct > 0, "the first chunks should go straight to the kernel")
        #expect(throughNIO > 0, "a full socket should hand the rest to NIO")
        #expect(direct + throughNIO == chunks)
        // The server's loop is held while the client reads what the kernel has: the kernel
        // then has room, NIO still holds the rest (it cannot flush on a held loop), and
        // the next chunks must queue behind NIO's, not jump ahead of them.
        let markers = 10
        let lateWrites = loop.submit { () -> Int in
            let deadline = ContinuousClock.now + .seconds(10)
            while collector.received.withLockedValue({ $0.readableBytes }) < 8192 && ContinuousClock.now < deadline { usleep(1000) }
            usleep(20_000)
            return (chunks..<chunks + markers).filter { writer.send(chunk($0, size: size)) }.count
        }
        try await client.setOption(.autoRead, value: true).get()
        client.read()
        #expect(try await lateWrites.get() == 0, "written directly while NIO held earlier bytes")
        let total = (chunks + markers) * size
        let deadline = ContinuousClock.now + .seconds(20)
        while collector.received.withLockedValue({ $0.readableBytes }) < total && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        let received = collector.received.withLockedValue { $0 }
        #expect(received.readableBytes == total)
        var expected = ByteBuffer()
        for index in 0..<chunks + markers { expected.writeImmutableBuffer(chunk(index, size: size)) }
        #expect(received == expected, "bytes out of order or missing")
        // NIO has written everything it held: the next write goes direct again.
        let wentDirect = try await loop.submit { writer.send(chunk(0, size: 16)) }.get()
        #expect(wentDirect)
        try await closeAll([client, server], [group, clientGroup])
    }

    @Test("a peer that reset the connection: the write is handed to NIO, which reports the error and closes the channel; no direct write after the close")
    func peerReset() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let (writer, server, client, _) = try await connectedPair(group: group)
        let context = try #require(writer.context)
        let loop = context.eventLoop
        let serverChannel = context.channel
        // Closing with unread bytes makes the client's kernel answer with a reset.
        #expect(try await loop.submit { writer.send(chunk(0, size: 512)) }.get())
        try await Task.sleep(for: .milliseconds(50))
        try await client.close()
        // Until the reset arrives, writes may still be taken; afterwards they are handed over.
        var handedOver = false
        for _ in 0..<200 where !handedOver {
            handedOver = try await loop.submit { !writer.send(chunk(1, size: 1024)) }.get()
            try await Task.sleep(for: .milliseconds(5))
        }
        #expect(handedOver)
        try await serverChannel.closeFuture.get()  // NIO saw the error and closed the channel
        #expect(try await loop.submit { writer.send(chunk(2, size: 10)) }.get() == false, "no direct write after the close")
        try await closeAll([server], [group])
    }
}
#endif
