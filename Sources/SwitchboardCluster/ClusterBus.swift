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
public final class ClusterBus: Sendable {
    let configuration: ClusterConfiguration
    let instance: String
    let kernel: Kernel
    private let logger: Logger
    private let publisher = NIOLockedValueBox(PublisherState())
    /// Commands with replies (history reads), apart from the publisher's stream of PUBLISHes.
    private let reader = NIOLockedValueBox<RedisConnection?>(nil)
    let historyFailures = NIOLockedValueBox(0)
    /// Whether this instance's bus subscription is up: events of history topics come back
    /// to it through the bus, so without it they are delivered here directly.
    let subscribed = NIOLockedValueBox(false)
    let sent = NIOLockedValueBox(0)
    let unsent = NIOLockedValueBox(0)
    let received = NIOLockedValueBox(0)

    private struct PublisherState {
        var connection: RedisConnection?
        var connecting = false
        var lastAttempt: NIODeadline?
    }

    public init(configuration: ClusterConfiguration, kernel: Kernel, logger: Logger) {
        self.configuration = configuration
        self.instance = UUID().uuidString
        self.kernel = kernel
        var logger = logger
        logger[metadataKey: "cluster"] = .string(configuration.channel)
        self.logger = logger
    }

    // MARK: outgoing

    /// Hands a locally emitted event to the cluster. Returns `true` when the bus delivers it
    /// here as well: events of topics with history go through Redis, which gives them their
    /// position, and come back to every instance (this one included) in one order.
    public func route(_ event: Event, retain: Bool) -> Bool {
        if kernel.historyIsShared, let limits = kernel.historyLimits(of: event.topic) {
            guard subscribed.withLockedValue({ $0 }) else {
                // Our own copy would not come back: deliver here (live, no position) and let
                // the others have it as a plain bus event if the publisher still reaches Redis.
                forward(event, retain: retain)
                return false
            }
            return publishWithHistory(event, retain: retain, size: limits.size, ttlNanoseconds: limits.ttlNanoseconds)
        }
        forward(event, retain: retain)
        return false
    }

    /// Numbers, keeps and publishes an event of a history topic in one Redis script:
    /// `INCR` of the topic's offset, `XADD` to its stream (`MAXLEN ~ size`, id `<offset>-1`),
    /// `PUBLISH` with the position. Every instance, this one too, delivers it from the bus.
    /// `false` (deliver it here yourself, live and without a position) when Redis is not
    /// reachable.
    func publishWithHistory(_ event: Event, retain: Bool, size: Int, ttlNanoseconds: Int64) -> Bool {
        guard let connection = activePublisher() else { return false }
        let object = Self.encode(event, retain: retain, origin: instance, history: true)
        var payload = ByteBuffer()
        JSONWriter.write(object, into: &payload)
        let keys = historyKeys(event.topic)
        let arguments: [RESPArgument] = [
            "EVAL", .string(Self.publishScript), "3", .string(keys.epoch), .string(keys.offset), .string(keys.stream),
            .string(configuration.channel), .bytes(Array(payload.readableBytesView)), .string(String(max(1, size))),
            .string(Kernel.randomEpoch()), .string(String(ttlNanoseconds / 1_000_000)),
        ]
        let kernel = self.kernel
        let logger = self.logger
        let failures = historyFailures
        connection.send(arguments, timeout: .seconds(2)) { reply in
            guard case .integer? = reply else {
                // Not numbered (Redis went away mid-way, or refused): deliver it here, live. If
                // Redis ran the script and then died before answering, the bus copy may arrive
                // too: at most one duplicate, only in that failure.
                failures.withLockedValue { $0 += 1 }
                logger.warning("history: Redis did not number an event; delivered here without a position", metadata: ["topic": "\(event.topic)", "reply": "\(reply.map { "\($0)" } ?? "none")"])
                kernel.publish(event, retain: retain)
                return
            }
        }
        sent.withLockedValue { $0 += 1 }
        return true
    }

    /// KEYS: epoch, offset, stream. ARGV: channel, the event's JSON object, size, a new
    /// epoch (used when Redis has none: its history was lost or never existed), TTL in ms.
    static let publishScript = """
        local epoch = redis.call('GET', KEYS[1])
        if not epoch then epoch = ARGV[4]; redis.call('SET', KEYS[1], epoch) end
        local offset = redis.call('INCR', KEYS[2])
        local last = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)[1]
        if last then
            local newest = tonumber(string.match(last[1], '^(%d+)-'))
            -- The offset key was lost while the stream survived: continue after the stream.
            if newest and offset <= newest then offset = newest + 1; redis.call('SET', KEYS[2], offset) end
        end
        local message = '{"position":{"epoch":' .. cjson.encode(epoch) .. ',"offset":' .. offset .. '},' .. string.sub(ARGV[2], 2)
        redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], offset .. '-1', 'e', message)
        if tonumber(ARGV[5]) > 0 then redis.call('PEXPIRE', KEYS[3], ARGV[5]) end
        redis.call('PUBLISH', ARGV[1], message)
        return offset
        """

    /// The Redis keys of a topic's history, under the cluster channel's name.
    func historyKeys(_ topic: String) -> (epoch: String, offset: String, stream: String) {
        ("\(configuration.channel):epoch", "\(configuration.channel):offset:\(topic)", "\(configuration.channel):history:\(topic)")
    }

    /// Hands a locally emitted event to the other instances.
    func forward(_ event: Event, retain: Bool) {
        var payload = ByteBuffer()
        JSONWriter.write(Self.encode(event, retain: retain, origin: instance), into: &payload)
        let bytes = Array(payload.readableBytesView)
        guard let connection = activePublisher() else { return }
        connection.sendIgnoringReply(["PUBLISH", .string(configuration.channel), .bytes(bytes)])
        sent.withLockedValue { $0 += 1 }
    }

    /// The publishing connection while it is up; otherwise counts the event as unsent and
    /// starts a reconnect.
    private func activePublisher() -> RedisConnection? {
        let connection: RedisConnection? = publisher.withLockedValue { state in
            if let connection = state.connection, connection.channel.isActive { return connection }
            state.connection = nil
            return nil
        }
        if connection == nil {
            unsent.withLockedValue { $0 += 1 }
            connectPublisher()
        }
        return connection
    }

    /// (Re)connects the publishing connection in the background, at most once a second.
    public func connectPublisher() {
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

    static func encode(_ event: Event, retain: Bool, origin: String, history: Bool = false) -> JSONValue {
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
        // Numbered by Redis on its way: every instance delivers it, the sender too.
        if history { object["h"] = .bool(true) }
        return .object(object)
    }

    /// The event and its retain flag, or `nil` for our own (unless numbered by Redis, which
    /// every instance delivers from the bus) or malformed messages.
    static func decode(_ payload: [UInt8], ignoringOrigin own: String) -> (Event, Bool)? {
        guard case .object(let object)? = try? JSONParser.parse(payload),
            let origin = object["origin"]?.stringValue,
            let topic = object["topic"]?.stringValue, let type = object["type"]?.stringValue,
            let data = object["data"]
        else { return nil }
        let position = object["position"].flatMap(StreamPosition.init(json:))
        let numbered = object["h"] == .bool(true) && position != nil
        guard origin != own || numbered else { return nil }
        let shape = object["shape"]?.stringValue.flatMap(EventShape.init(rawValue:)) ?? .envelope
        let event = Event(
            topic: topic, type: type, data: data, id: object["id"]?.stringValue, timestamp: object["timestamp"]?.intValue, shape: shape,
            position: numbered ? position : nil
        )
        return (event, object["retain"] == .bool(true))
    }

    // MARK: incoming

    /// The subscription to the cluster channel, run by the supervisor like a source
    /// (named `cluster-bus` in `/readyz`); `report` is the supervisor's health update.
    public func subscriber(report: @escaping @Sendable (SourceHealth) -> Void) -> any EventSource {
        BusSubscriber(bus: self, report: report)
    }

    fileprivate func deliver(_ payload: [UInt8]) {
        guard let (event, retain) = Self.decode(payload, ignoringOrigin: instance) else { return }
        received.withLockedValue { $0 += 1 }
        kernel.publish(event, retain: retain)
    }

    /// The bus's counters, for `/stats` and `/metrics`.
    public var counts: (sent: Int, unsent: Int, received: Int, historyFailures: Int) {
        (sent.withLockedValue { $0 }, unsent.withLockedValue { $0 }, received.withLockedValue { $0 }, historyFailures.withLockedValue { $0 })
    }

    /// Which bus this is, for `/stats`.
    public var identity: [(key: String, value: JSONValue)] {
        [("channel", .string(configuration.channel)), ("instance", .string(instance)), ("redis", .string(configuration.redis.description))]
    }

    public var stats: JSONValue {
        [
            "channel": .string(configuration.channel),
            "instance": .string(instance),
            "redis": .string(configuration.redis.description),
            "sent": .int(Int64(sent.withLockedValue { $0 })),
            "unsent": .int(Int64(unsent.withLockedValue { $0 })),
            "received": .int(Int64(received.withLockedValue { $0 })),
            "history_failures": .int(Int64(historyFailures.withLockedValue { $0 })),
        ]
    }

    /// Reads (or, when Redis has none, sets) the history epoch and hands it to the kernel,
    /// so that replies carry Redis's epoch before the first event arrives.
    func adoptEpoch(using connection: RedisConnection) async throws {
        guard kernel.historyIsShared else { return }
        let key = historyKeys("").epoch
        _ = try await connection.send(["SET", .string(key), .string(Kernel.randomEpoch()), "NX"], timeout: .seconds(2))
        if case .bulkString(let bytes) = try await connection.send(["GET", .string(key)], timeout: .seconds(2)) {
            kernel.adoptEpoch(String(decoding: bytes, as: UTF8.self))
        }
    }
}

extension ClusterBus: SharedHistoryStore {
    /// `XRANGE <channel>:history:<topic> (<offset>-1 + COUNT limit`, with the epoch and
    /// the topic's newest offset, in one round trip on the reading connection.
    public func events(of topic: String, after offset: Int64, limit: Int) async throws -> SharedHistoryPage {
        let connection = try await readerConnection()
        let keys = historyKeys(topic)
        let replies: [RESPValue]
        do {
            replies = try await connection.sendPipelined(
                [
                    ["GET", .string(keys.epoch)], ["GET", .string(keys.offset)],
                    // MAXLEN ~ keeps a little more than `size`: ask for all of it.
                    ["XRANGE", .string(keys.stream), .string("(\(offset)-1"), "+", "COUNT", .string(String(max(1, limit) * 2 + 100))],
                ],
                timeout: .seconds(2)
            )
        } catch {
            reader.withLockedValue { $0 = nil }
            throw error
        }
        guard replies.count == 3, case .bulkString(let epochBytes) = replies[0] else { throw RedisError.connectionClosed }
        let epoch = String(decoding: epochBytes, as: UTF8.self)
        var latest: Int64 = 0
        if case .bulkString(let bytes) = replies[1] { latest = Int64(String(decoding: bytes, as: UTF8.self)) ?? 0 }
        var events: [Event] = []
        if case .array(let entries) = replies[2] {
            for entry in entries {
                guard case .array(let parts) = entry, parts.count == 2, case .array(let fields) = parts[1], fields.count >= 2,
                    case .bulkString(let payload) = fields[1], let (event, _) = Self.decode(payload, ignoringOrigin: ""),
                    event.position?.epoch == epoch
                else { continue }
                events.append(event)
            }
        }
        // Redis expires a whole stream after `ttl` without events; single events older than
        // `ttl` are not replayed (a resume needing one answers recovered: false).
        if let ttl = kernel.historyLimits(of: topic)?.ttlNanoseconds, ttl > 0 {
            let oldest = UnixTime.nowSeconds() - ttl / 1_000_000_000
            events.removeAll { $0.timestamp < oldest }
        }
        return SharedHistoryPage(epoch: epoch, latest: latest, events: events)
    }

    private func readerConnection() async throws -> RedisConnection {
        if let connection = reader.withLockedValue({ $0 }), connection.channel.isActive { return connection }
        let connection = try await RedisConnection.connect(to: configuration.redis)
        reader.withLockedValue { $0 = connection }
        return connection
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
        // The history epoch first: nothing is open yet if it fails.
        if bus.kernel.historyIsShared {
            let commands = try await RedisConnection.connect(to: bus.configuration.redis)
            defer { commands.close() }
            try await bus.adoptEpoch(using: commands)
        }
        let subscription = try await RedisSubscription.open(to: bus.configuration.redis, channels: [bus.configuration.channel]) { _, payload in
            bus.deliver(payload)
        }
        bus.subscribed.withLockedValue { $0 = true }
        defer { bus.subscribed.withLockedValue { $0 = false } }
        report(.connected)
        bus.connectPublisher()
        try await subscription.watch(pingInterval: .seconds(5))
    }
}

extension ClusterBus {
    /// `source` run only while this instance holds its lease (a `run: once` source);
    /// `report` receives its health, `standby` while another instance holds the lease.
    public func leased(_ source: any EventSource, name: String, report: @escaping @Sendable (SourceHealth) -> Void) -> any EventSource {
        LeasedSource(name: name, inner: source, bus: self, report: report)
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
