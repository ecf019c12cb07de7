import JSONPlugin
import NIOCore
import NIOPosix
import SwitchboardCore
import SwitchboardKernel
import SwitchboardServer
import Synchronization
import Testing

/// One box per socket undoes the connection limit, the handshake timer and the shard
/// arrival exactly once, and what arrives after the close is undone at once.
@Suite struct SocketLifetimeTests {
    /// One loop and its kernel shard.
    static func shard() throws -> (MultiThreadedEventLoopGroup, any EventLoop, LoopShard) {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let kernel = Kernel(eventLoopGroup: group, variants: VariantTable(encoders: [JSONEventEncoder()]))
        return (group, loop, try #require(kernel.shard(for: loop)))
    }

    @Test func closeUndoesLimitTimerAndArrivalOnce() async throws {
        let (group, loop, shard) = try Self.shard()
        let limiter = ConnectionLimiter(maxConnections: 10, maxConnectionsPerIP: 1)
        #expect(limiter.admit("10.0.0.1") == .admitted)
        #expect(limiter.admit("10.0.0.1") == .tooManyFromAddress)
        let fired = Atomic<Int>(0)
        let lifetime = SocketLifetime(limiter: limiter, address: "10.0.0.1")
        lifetime.startHandshakeTimer(loop.scheduleTask(in: .milliseconds(100)) { fired.add(1, ordering: .relaxed) })
        lifetime.holdArrival(shard.expectSubscriber())
        #expect(shard.arrivingSubscriberCount == 1)

        lifetime.socketClosed()
        #expect(limiter.openConnections == 0)
        #expect(shard.arrivingSubscriberCount == 0)
        #expect(limiter.admit("10.0.0.1") == .admitted, "the address's slot came back")

        // After the close: a reservation made late (a filter answering after the client
        // left) is released at once, a late timer never fires, and nothing is undone twice.
        lifetime.holdArrival(shard.expectSubscriber())
        #expect(shard.arrivingSubscriberCount == 0)
        lifetime.startHandshakeTimer(loop.scheduleTask(in: .milliseconds(50)) { fired.add(1, ordering: .relaxed) })
        lifetime.socketClosed()
        lifetime.releaseArrival()
        #expect(limiter.openConnections == 1, "the second admission is still open")
        #expect(shard.arrivingSubscriberCount == 0)
        try await Task.sleep(for: .milliseconds(250))
        #expect(fired.load(ordering: .relaxed) == 0, "both handshake timers were cancelled")
        try await group.shutdownGracefully()
    }

    @Test func upgradeReleasesArrivalAndCancelsTimerBeforeTheClose() async throws {
        let (group, loop, shard) = try Self.shard()
        let limiter = ConnectionLimiter(maxConnections: 10, maxConnectionsPerIP: 0)
        _ = limiter.admit(nil)
        let fired = Atomic<Int>(0)
        let lifetime = SocketLifetime(limiter: limiter, address: nil)
        lifetime.startHandshakeTimer(loop.scheduleTask(in: .milliseconds(50)) { fired.add(1, ordering: .relaxed) })
        lifetime.holdArrival(shard.expectSubscriber())
        lifetime.cancelHandshakeTimer()
        lifetime.releaseArrival()
        #expect(shard.arrivingSubscriberCount == 0)
        #expect(limiter.openConnections == 1, "the socket is still open")
        try await Task.sleep(for: .milliseconds(150))
        #expect(fired.load(ordering: .relaxed) == 0)
        // A released reservation is not released again by the close.
        let other = shard.expectSubscriber()
        lifetime.socketClosed()
        #expect(shard.arrivingSubscriberCount == 1, "only the other connection's reservation is left")
        other.release()
        #expect(limiter.openConnections == 0)
        try await group.shutdownGracefully()
    }
}
