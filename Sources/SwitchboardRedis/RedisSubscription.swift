import SwitchboardCore
import NIOConcurrencyHelpers
import NIOCore

/// A pub/sub session on its own connection: SUBSCRIBE/PSUBSCRIBE, messages handed to a
/// callback (on the connection's event loop), and a PING watchdog. Used by the `redis`
/// source and the cluster bus.
public final class RedisSubscription: Sendable {
    public let connection: RedisConnection
    private let lastHeard: NIOLockedValueBox<NIODeadline>

    private init(connection: RedisConnection, lastHeard: NIOLockedValueBox<NIODeadline>) {
        self.connection = connection
        self.lastHeard = lastHeard
    }

    /// Connects, subscribes to `channels` and `patterns`, and returns once Redis confirmed
    /// every one of them (within `timeout`). `onMessage` gets the channel a message was
    /// published on (for patterns, the matching channel) and its payload.
    public static func open(
        to url: RedisURL,
        channels: [String],
        patterns: [String] = [],
        protocolVersion: Int = 2,
        timeout: Duration = .seconds(5),
        onMessage: @escaping @Sendable (_ channel: String, _ payload: [UInt8]) -> Void
    ) async throws -> RedisSubscription {
        let expected = channels.count + patterns.count
        let confirmed = NIOLockedValueBox(0)
        let lastHeard = NIOLockedValueBox(NIODeadline.now())
        let connection = try await RedisConnection.connect(
            to: url,
            protocolVersion: protocolVersion,
            connectTimeout: TimeAmount(timeout)
        ) { value in
            lastHeard.withLockedValue { $0 = .now() }
            guard let items = value.elements, let kind = items.first?.string?.lowercased() else { return }
            switch kind {
            case "message":
                guard items.count == 3, let channel = items[1].string, let payload = items[2].bytes else { return }
                onMessage(channel, payload)
            case "pmessage":
                guard items.count == 4, let channel = items[2].string, let payload = items[3].bytes else { return }
                onMessage(channel, payload)
            case "subscribe", "psubscribe":
                confirmed.withLockedValue { $0 += 1 }
            default:
                break  // pong, unsubscribe confirmations
            }
        }
        try await withTaskCancellationHandler {
            if !channels.isEmpty { connection.sendWithoutReply(["SUBSCRIBE"] + channels.map { .string($0) }) }
            if !patterns.isEmpty { connection.sendWithoutReply(["PSUBSCRIBE"] + patterns.map { .string($0) }) }
            let deadline = ContinuousClock.now + timeout
            while confirmed.withLockedValue({ $0 }) < expected {
                guard connection.channel.isActive else { throw RedisError.connectionClosed }
                guard ContinuousClock.now < deadline else {
                    connection.close()
                    throw RedisError.timeout
                }
                try await Task.sleep(for: .milliseconds(10))
            }
        } onCancel: {
            connection.close()
        }
        return RedisSubscription(connection: connection, lastHeard: lastHeard)
    }

    /// PINGs every `pingInterval` and returns — always by throwing, and always with the
    /// connection closed — when the connection drops, stays silent for two intervals
    /// (`.timeout`), or the task is cancelled.
    public func watch(pingInterval: Duration) async throws {
        let connection = self.connection
        let lastHeard = self.lastHeard
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try? await connection.closeFuture.get()
                throw RedisError.connectionClosed
            }
            group.addTask {
                let silence = TimeAmount(pingInterval * 2)
                while true {
                    try await Task.sleep(for: pingInterval)
                    if NIODeadline.now() - lastHeard.withLockedValue({ $0 }) > silence { throw RedisError.timeout }
                    connection.sendWithoutReply(["PING"])
                }
            }
            // Closing ends the close-future child too; the group waits for both.
            defer {
                connection.close()
                group.cancelAll()
            }
            try await group.next()
        }
    }
}
