import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import SwitchboardCore

/// A command failed: an error reply from Redis, or the connection is gone.
public enum RedisError: Error, Sendable, Equatable, CustomStringConvertible {
    case server(String)
    case connectionClosed
    case protocolError(String)
    case timeout

    public var description: String {
        switch self {
        case .server(let message): return "Redis error: \(message)"
        case .connectionClosed: return "connection to Redis closed"
        case .protocolError(let message): return "Redis protocol error: \(message)"
        case .timeout: return "Redis did not answer in time"
        }
    }
}

/// One connection to Redis on SwiftNIO: pipelined request/response, and pub/sub pushes.
///
/// Commands may be sent from any task; replies are matched in order. Values that answer
/// no command — RESP3 pushes, and everything after a RESP2 `SUBSCRIBE` — go to `onPush`,
/// called on the connection's event loop.
public final class RedisConnection: Sendable {
    public let channel: any Channel
    public let url: RedisURL

    private init(channel: any Channel, url: RedisURL) {
        self.channel = channel
        self.url = url
    }

    /// Connects, authenticates (`HELLO`/`AUTH`) and selects the database.
    public static func connect(
        to url: RedisURL,
        protocolVersion: Int = 2,
        connectTimeout: TimeAmount = .seconds(5),
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        onPush: @escaping @Sendable (RESPValue) -> Void = { _ in }
    ) async throws -> RedisConnection {
        var sslContext: NIOSSLContext?
        if url.tls {
            var configuration = TLSConfiguration.makeClientConfiguration()
            if let caFile = url.caFile { configuration.trustRoots = .file(caFile) }
            sslContext = try NIOSSLContext(configuration: configuration)
        }
        let channel = try await ClientBootstrap(group: eventLoopGroup)
            .connectTimeout(connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let sslContext {
                        let hostname = url.host.first?.isNumber == true || url.host.contains(":") ? nil : url.host
                        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: sslContext, serverHostname: hostname))
                    }
                    try channel.pipeline.syncOperations.addHandler(RedisChannelHandler(onPush: onPush))
                }
            }
            .connect(host: url.host, port: url.port)
            .get()
        let connection = RedisConnection(channel: channel, url: url)
        do {
            if protocolVersion == 3 {
                var hello: [RESPArgument] = ["HELLO", "3"]
                if let password = url.password { hello += ["AUTH", .string(url.user ?? "default"), .string(password)] }
                _ = try await connection.send(hello, timeout: connectTimeout)
            } else if let password = url.password {
                let auth: [RESPArgument] = url.user.map { ["AUTH", .string($0), .string(password)] } ?? ["AUTH", .string(password)]
                _ = try await connection.send(auth, timeout: connectTimeout)
            }
            if url.database != 0 {
                _ = try await connection.send(["SELECT", .string(String(url.database))], timeout: connectTimeout)
            }
        } catch {
            connection.close()
            throw error
        }
        return connection
    }

    /// Sends one command and waits for its reply; an error reply throws ``RedisError/server(_:)``.
    @discardableResult
    public func send(_ arguments: [RESPArgument], timeout: TimeAmount? = nil) async throws -> RESPValue {
        guard let reply = try await sendPipelined([arguments], timeout: timeout).first else { throw RedisError.connectionClosed }
        return reply
    }

    /// Sends several commands in one write and waits for all replies, in order. Error
    /// replies are returned as ``RESPValue/error(_:)`` values, not thrown.
    public func sendPipelined(_ commands: [[RESPArgument]], timeout: TimeAmount? = nil) async throws -> [RESPValue] {
        let channel = self.channel
        var buffer = channel.allocator.buffer(capacity: 64 * commands.count)
        for command in commands { RESPCommand.write(command, into: &buffer) }
        let promises = (0..<commands.count).map { _ in channel.eventLoop.makePromise(of: RESPValue.self) }
        // A Redis that does not answer in time is stuck: the connection is closed and every
        // waiting command fails with `.timeout`.
        let deadline = timeout.map { channel.eventLoop.scheduleTask(in: $0) { channel.pipeline.fireUserInboundEventTriggered(RedisTimedOut()) } }
        // On a channel that has already closed (a TLS handshake that failed right after the
        // TCP connect, say), the write never reaches the handler that fails waiting replies:
        // fail them here. A reply that already completed ignores the second completion.
        let written = channel.eventLoop.makePromise(of: Void.self)
        written.futureResult.whenFailure { _ in
            for promise in promises { promise.fail(RedisError.connectionClosed) }
        }
        channel.writeAndFlush(RedisOutbound(bytes: buffer, replies: promises), promise: written)
        defer { deadline?.cancel() }
        var replies: [RESPValue] = []
        for promise in promises {
            let reply = try await promise.futureResult.get()
            if commands.count == 1, case .error(let message) = reply { throw RedisError.server(message) }
            replies.append(reply)
        }
        return replies
    }

    /// Sends a command and ignores its reply (kept in order with the others; an error reply
    /// is dropped). For high-rate writes such as PUBLISH on the cluster bus.
    public func sendIgnoringReply(_ arguments: [RESPArgument]) {
        var buffer = channel.allocator.buffer(capacity: 64)
        RESPCommand.write(arguments, into: &buffer)
        let promise = channel.eventLoop.makePromise(of: RESPValue.self)
        promise.futureResult.whenComplete { _ in }
        channel.writeAndFlush(RedisOutbound(bytes: buffer, replies: [promise]), promise: nil)
    }

    /// Sends a command without waiting; `completion` gets its reply (nil when the connection
    /// failed first), on the connection's event loop. Commands stay in order with the others.
    public func send(_ arguments: [RESPArgument], timeout: TimeAmount, completion: @escaping @Sendable (RESPValue?) -> Void) {
        var buffer = channel.allocator.buffer(capacity: 64)
        RESPCommand.write(arguments, into: &buffer)
        let channel = self.channel
        let promise = channel.eventLoop.makePromise(of: RESPValue.self)
        // A Redis that does not answer in time is stuck: the connection is closed and every
        // waiting command fails.
        let deadline = channel.eventLoop.scheduleTask(in: timeout) { channel.pipeline.fireUserInboundEventTriggered(RedisTimedOut()) }
        promise.futureResult.whenComplete { result in
            deadline.cancel()
            completion(try? result.get())
        }
        let written = channel.eventLoop.makePromise(of: Void.self)
        written.futureResult.whenFailure { _ in promise.fail(RedisError.connectionClosed) }
        channel.writeAndFlush(RedisOutbound(bytes: buffer, replies: [promise]), promise: written)
    }

    /// Sends a command whose answers arrive as pushes (SUBSCRIBE, PSUBSCRIBE, and PING
    /// while subscribed); from then on unmatched replies go to `onPush`.
    public func sendWithoutReply(_ arguments: [RESPArgument]) {
        var buffer = channel.allocator.buffer(capacity: 64)
        RESPCommand.write(arguments, into: &buffer)
        channel.writeAndFlush(RedisOutbound(bytes: buffer, replies: []), promise: nil)
    }

    public func close() {
        channel.close(promise: nil)
    }

    /// Completes when the connection closes, for whatever reason.
    public var closeFuture: EventLoopFuture<Void> { channel.closeFuture }
}

struct RedisTimedOut {}

struct RedisOutbound {
    let bytes: ByteBuffer
    let replies: [EventLoopPromise<RESPValue>]
}

/// Parses replies and matches them to waiting commands in order.
final class RedisChannelHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = RedisOutbound
    typealias OutboundOut = ByteBuffer

    private let parser = RESPParser()
    private var cumulation: ByteBuffer?
    private var waiting: CircularBuffer<EventLoopPromise<RESPValue>> = []
    private let onPush: @Sendable (RESPValue) -> Void

    init(onPush: @escaping @Sendable (RESPValue) -> Void) {
        self.onPush = onPush
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let outbound = unwrapOutboundIn(data)
        guard context.channel.isActive else {
            for reply in outbound.replies { reply.fail(RedisError.connectionClosed) }
            promise?.fail(RedisError.connectionClosed)
            return
        }
        waiting.append(contentsOf: outbound.replies)
        context.write(wrapOutboundOut(outbound.bytes), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if var buffer = cumulation {
            buffer.writeBuffer(&incoming)
            cumulation = buffer
        } else {
            cumulation = incoming
        }
        guard var buffer = cumulation else { return }
        cumulation = nil
        do {
            while let value = try parser.parse(&buffer) {
                if case .push = value {
                    onPush(value)
                } else if let promise = waiting.popFirst() {
                    promise.succeed(value)
                } else {
                    onPush(value)
                }
            }
        } catch {
            failAll(RedisError.protocolError(error.description))
            context.close(promise: nil)
            return
        }
        if buffer.readableBytes > 0 {
            buffer.discardReadBytes()
            cumulation = buffer
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is RedisTimedOut {
            failAll(RedisError.timeout)
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(RedisError.connectionClosed)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failAll(RedisError.connectionClosed)
        context.close(promise: nil)
    }

    private func failAll(_ error: RedisError) {
        while let promise = waiting.popFirst() { promise.fail(error) }
    }
}
