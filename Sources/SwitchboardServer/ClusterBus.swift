import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import SwitchboardConfig
import SwitchboardCore
import SwitchboardKernel
import SwitchboardRedis

/// Several gateway instances sharing one Redis: every event a source emits on any instance
/// is delivered locally at once and PUBLISHed on the cluster channel, tagged with the
/// instance id; every instance subscribes to the channel and delivers the events of the
/// *other* instances. Each event thus reaches each client once, and nothing received from
/// the bus is published again, so there are no loops.
///
/// While Redis is unreachable, events still reach the local clients; other instances miss
/// them (counted in `/stats` as `cluster.unsent`). Pub/sub has no replay.
final class ClusterBus: Sendable {
    let configuration: ClusterConfiguration
    let instance: String
    private let kernel: Kernel
    private let logger: Logger
    private let publisher = NIOLockedValueBox(PublisherState())
    let sent = NIOLockedValueBox(0)
    let unsent = NIOLockedValueBox(0)
    let received = NIOLockedValueBox(0)

    private struct PublisherState {
        var connection: RedisConnection?
        var connecting = false
        var lastAttempt: NIODeadline?
    }

    init(configuration: ClusterConfiguration, kernel: Kernel, logger: Logger) {
        self.configuration = configuration
        self.instance = UUID().uuidString
        self.kernel = kernel
        var logger = logger
        logger[metadataKey: "cluster"] = .string(configuration.channel)
        self.logger = logger
    }

    // MARK: outgoing

    /// Hands a locally emitted event to the other instances.
    func forward(_ event: Event, retain: Bool) {
        var payload = ByteBuffer()
        JSONWriter.write(Self.encode(event, retain: retain, origin: instance), into: &payload)
        let bytes = Array(payload.readableBytesView)
        let connection: RedisConnection? = publisher.withLockedValue { state in
            if let connection = state.connection, connection.channel.isActive { return connection }
            state.connection = nil
            return nil
        }
        guard let connection else {
            unsent.withLockedValue { $0 += 1 }
            connectPublisher()
            return
        }
        connection.sendIgnoringReply(["PUBLISH", .string(configuration.channel), .bytes(bytes)])
        sent.withLockedValue { $0 += 1 }
    }

    /// (Re)connects the publishing connection in the background, at most once a second.
    func connectPublisher() {
        let go: Bool = publisher.withLockedValue { state in
            let now = NIODeadline.now()
            if state.connecting { return false }
            if let last = state.lastAttempt, now - last < .seconds(1) { return false }
            state.connecting = true
            state.lastAttempt = now
            return true
        }
        guard go else { return }
        let url = configuration.redis
        Task {
            let connection = try? await RedisConnection.connect(to: url)
            self.publisher.withLockedValue { state in
                state.connecting = false
                state.connection = connection
            }
        }
    }

    static func encode(_ event: Event, retain: Bool, origin: String) -> JSONValue {
        var object = JSONObject([
            ("origin", .string(origin)),
            ("topic", .string(event.topic)),
            ("type", .string(event.type)),
            ("timestamp", .int(event.timestamp)),
            ("data", event.data),
        ])
        if let id = event.id { object["id"] = .string(id) }
        if event.shape != .envelope { object["shape"] = .string(event.shape.rawValue) }
        if retain { object["retain"] = .bool(true) }
        return .object(object)
    }

    /// The event and its retain flag, or `nil` for our own or malformed messages.
    static func decode(_ payload: [UInt8], ignoringOrigin own: String) -> (Event, Bool)? {
        guard case .object(let object)? = try? JSONParser.parse(payload),
            let origin = object["origin"]?.stringValue, origin != own,
            let topic = object["topic"]?.stringValue, let type = object["type"]?.stringValue,
            let data = object["data"]
        else { return nil }
        let shape = object["shape"]?.stringValue.flatMap(EventShape.init(rawValue:)) ?? .envelope
        let event = Event(topic: topic, type: type, data: data, id: object["id"]?.stringValue, timestamp: object["timestamp"]?.intValue, shape: shape)
        return (event, object["retain"] == .bool(true))
    }

    // MARK: incoming

    /// The subscription to the cluster channel, run by the supervisor like a source
    /// (named `cluster-bus` in `/readyz`); `report` is the supervisor's health update.
    func subscriber(report: @escaping @Sendable (SourceHealth) -> Void) -> any EventSource {
        BusSubscriber(bus: self, report: report)
    }

    fileprivate func deliver(_ payload: [UInt8]) {
        guard let (event, retain) = Self.decode(payload, ignoringOrigin: instance) else { return }
        received.withLockedValue { $0 += 1 }
        kernel.publish(event, retain: retain)
    }

    var stats: JSONValue {
        [
            "channel": .string(configuration.channel),
            "instance": .string(instance),
            "redis": .string(configuration.redis.description),
            "sent": .int(Int64(sent.withLockedValue { $0 })),
            "unsent": .int(Int64(unsent.withLockedValue { $0 })),
            "received": .int(Int64(received.withLockedValue { $0 })),
        ]
    }
}

/// Subscribes to the cluster channel; throws when the connection drops so the supervisor
/// reconnects with backoff.
private struct BusSubscriber: EventSource {
    let bus: ClusterBus
    let report: @Sendable (SourceHealth) -> Void
    var reportsOwnHealth: Bool { true }

    func run() async throws {
        let bus = self.bus
        let subscription = try await RedisSubscription.open(to: bus.configuration.redis, channels: [bus.configuration.channel]) { _, payload in
            bus.deliver(payload)
        }
        report(.connected)
        bus.connectPublisher()
        try await subscription.watch(pingInterval: .seconds(5))
    }
}

/// Runs a `run: once` source only while this instance holds its lease in Redis
/// (`SET key instance NX PX ttl`, renewed every third of the TTL by a compare-and-extend
/// script). Losing the lease — or Redis — stops the source; another instance takes over
/// when the lease expires.
struct LeasedSource: EventSource {
    let name: String
    let inner: any EventSource
    let bus: ClusterBus
    let report: @Sendable (SourceHealth) -> Void
    var reportsOwnHealth: Bool { true }

    static let renewScript = """
        if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end
        """

    func run() async throws {
        let ttl = bus.configuration.leaseTTL.nanoseconds / 1_000_000
        let key = "switchboard:lease:\(name)"
        let connection = try await RedisConnection.connect(to: bus.configuration.redis)
        defer { connection.close() }
        while !Task.isCancelled {
            let acquired = try await connection.send(["SET", .string(key), .string(bus.instance), "NX", "PX", .string(String(ttl))])
            guard acquired == .simpleString("OK") else {
                report(.standby)
                try await Task.sleep(for: .milliseconds(ttl / 3))
                continue
            }
            report(.connected)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await inner.run() }
                group.addTask {
                    while true {
                        try await Task.sleep(for: .milliseconds(ttl / 3))
                        let renewed = try await connection.send(["EVAL", .string(Self.renewScript), "1", .string(key), .string(bus.instance), .string(String(ttl))])
                        if renewed != .integer(1) { return }  // lost the lease: stop the source
                    }
                }
                defer { group.cancelAll() }
                try await group.next()
            }
        }
    }
}
