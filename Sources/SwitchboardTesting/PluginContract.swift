import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SwitchboardCore
import SwitchboardKernel

/// The plugin contract kit: what every source, filter and encoder must do, checked the same
/// way for each. A plugin's test target runs it against the real plugin (and its real
/// backend); a violation throws a ``ContractViolation`` that names the step.
///
/// ```swift
/// @Test func passesTheSourceContract() async throws {
///     let redis = try await TestRedisServer()
///     defer { redis.stop() }
///     try await SourceContract(
///         build: { context in try await RedisSource.build(config: config, context: context) },
///         trigger: { round, _ in _ = try await redis.run("PUBLISH", "jobs", "{\"n\":\(round)}") },
///         backend: .init(stop: { redis.stop() }, start: { try await redis.start() })
///     ).verify()
/// }
/// ```
public struct ContractViolation: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

// MARK: sources

/// Any source: starts, emits into a real kernel (its events reach a subscriber), reports its
/// health, survives its backend going away and coming back (through the kernel's
/// supervisor, which restarts it with backoff), and stops on cancellation with its task
/// ended and, when the backend can say, no connection left behind.
public struct SourceContract: Sendable {
    /// The source's backend, for the outage step.
    public struct Backend: Sendable {
        public var stop: @Sendable () async throws -> Void
        public var start: @Sendable () async throws -> Void
        /// How many connections the backend holds from this process right now (Redis
        /// `CLIENT LIST`, `pg_stat_activity`); nil when it cannot say.
        public var connections: (@Sendable () async throws -> Int)?

        public init(
            stop: @escaping @Sendable () async throws -> Void, start: @escaping @Sendable () async throws -> Void,
            connections: (@Sendable () async throws -> Int)? = nil
        ) {
            self.stop = stop
            self.start = start
            self.connections = connections
        }
    }

    public var build: @Sendable (any SourceContext) async throws -> any EventSource
    /// Makes the backend produce at least one event (`round` counts from 1); `routes` are
    /// the HTTP routes the source registered (a webhook's).
    public var trigger: @Sendable (_ round: Int, _ routes: [HTTPRoute]) async throws -> Void
    public var backend: Backend?
    /// Whether an event is the one a round's trigger produced (default: any new event), so a
    /// source that replays old events does not pass a round.
    public var matches: @Sendable (_ event: Event, _ round: Int) -> Bool
    /// The bound of every wait.
    public var timeout: Duration

    public init(
        build: @escaping @Sendable (any SourceContext) async throws -> any EventSource,
        trigger: @escaping @Sendable (_ round: Int, _ routes: [HTTPRoute]) async throws -> Void,
        matches: @escaping @Sendable (_ event: Event, _ round: Int) -> Bool = { _, _ in true },
        backend: Backend? = nil,
        timeout: Duration = .seconds(20)
    ) {
        self.build = build
        self.trigger = trigger
        self.matches = matches
        self.backend = backend
        self.timeout = timeout
    }

    /// A `matches` for triggers that put the round number in the payload: `{"round": N}`.
    public static let roundInData: @Sendable (Event, Int) -> Bool = { event, round in event.data["round"] == .int(Int64(round)) }

    /// Runs every step; returns the events the kernel delivered. Whatever happens, the
    /// source's task has ended and the test kernel is shut down when it returns.
    @discardableResult
    public func verify() async throws -> [Event] {
        let harness = try await ContractKernel()
        let supervisor = SourceSupervisor(logger: Logger(label: "contract"), backoff: Backoff(base: .milliseconds(50), maximum: .milliseconds(500)))
        supervisor.register(name: "contract", plugin: "contract")
        let context = ContractSourceContext(harness: harness, supervisor: supervisor)
        let running: Task<Void, Never>
        let source: any EventSource
        do {
            source = try await build(context)
            running = Task { await supervisor.supervise(name: "contract", source: source) }
        } catch {
            await harness.shutdown()
            throw error
        }
        do {
            let events = try await steps(harness: harness, supervisor: supervisor, context: context, source: source, running: running)
            await harness.shutdown()
            return events
        } catch {
            running.cancel()
            _ = await running.value
            await harness.shutdown()
            throw error
        }
    }

    private func steps(
        harness: ContractKernel, supervisor: SourceSupervisor, context: ContractSourceContext, source: any EventSource, running: Task<Void, Never>
    ) async throws -> [Event] {
        try await wait("the source reports connected", until: { supervisor.health("contract") == .connected })
        try await deliver(round: 1, harness: harness, context: context)

        if let backend {
            try await backend.stop()
            if source.reportsOwnHealth {
                try await wait("the source reports the outage", until: {
                    if case .retrying = supervisor.health("contract") { return true }
                    return false
                })
                if case .retrying(let error) = supervisor.health("contract") {
                    guard !error.isEmpty, !error.contains("Generic description") else {
                        throw ContractViolation("the outage is reported without a readable reason: '\(error)'")
                    }
                }
            }
            try await backend.start()
            try await wait("the source reconnects after its backend returned", until: { supervisor.health("contract") == .connected })
            try await deliver(round: 2, harness: harness, context: context)
        }

        running.cancel()
        try await wait("run() returns after cancellation", until: { supervisor.health("contract") == .stopped })
        _ = await running.value
        if let connections = backend?.connections {
            try await wait("the source's backend connection is closed after it stopped", until: {
                (try? await connections()) == 0
            })
        }
        return harness.events
    }

    private func deliver(round: Int, harness: ContractKernel, context: ContractSourceContext) async throws {
        let before = await harness.frameCount()
        let eventsBefore = harness.events.count
        // Some backends (pub/sub) drop what is sent before the subscription is in place:
        // trigger again until the round's event reached the subscriber.
        let deadline = ContinuousClock.now + timeout
        while await harness.frameCount() == before || !harness.events.dropFirst(eventsBefore).contains(where: { matches($0, round) }) {
            guard ContinuousClock.now < deadline else {
                throw ContractViolation("round \(round): the round's event did not reach the kernel's subscriber within \(timeout)")
            }
            try await trigger(round, context.routes)
            try await Task.sleep(for: .milliseconds(200))
        }
    }

    private func wait(_ what: String, until condition: @Sendable () async throws -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while try await !condition() {
            guard ContinuousClock.now < deadline else { throw ContractViolation("timed out after \(timeout): \(what)") }
            try await Task.sleep(for: .milliseconds(20))
        }
    }
}

extension SourceSupervisor {
    fileprivate func health(_ name: String) -> SourceHealth? {
        statuses().first { $0.name == name }?.health
    }
}

/// A real kernel on one event loop with one subscriber to every topic.
final class ContractKernel: Sendable {
    let group: MultiThreadedEventLoopGroup
    let kernel: Kernel
    private let subscriber: CapturingSubscriber
    private let published = NIOLockedValueBox<[Event]>([])

    init() async throws {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        kernel = Kernel(eventLoopGroup: group, variants: VariantTable(encoders: [ContractEncoder()]))
        let subscriber = CapturingSubscriber(variant: VariantID(index: 0))
        self.subscriber = subscriber
        guard let shard = kernel.shards.first else { throw ContractViolation("the test kernel has no shard") }
        let joined = try await shard.eventLoop.submit { shard.subscribe(.everything, subscriber) }.get()
        guard joined else { throw ContractViolation("the test subscriber could not join") }
    }

    /// Frames delivered to the subscriber so far.
    func frameCount() async -> Int {
        guard let shard = kernel.shards.first else { return 0 }
        let subscriber = self.subscriber
        return (try? await shard.eventLoop.submit { subscriber.frames.count }.get()) ?? 0
    }

    var events: [Event] { published.withLockedValue { $0 } }
    func record(_ event: Event) { published.withLockedValue { $0.append(event) } }

    func shutdown() async {
        try? await group.shutdownGracefully()
    }
}

/// What the kernel gives a source, as the gateway does: events go to the kernel, health to
/// the supervisor.
final class ContractSourceContext: SourceContext {
    let sourceName = "contract"
    let logger = Logger(label: "contract.source")
    let harness: ContractKernel
    let supervisor: SourceSupervisor
    private let registered = NIOLockedValueBox<[HTTPRoute]>([])

    init(harness: ContractKernel, supervisor: SourceSupervisor) {
        self.harness = harness
        self.supervisor = supervisor
    }

    func emit(_ event: Event) {
        harness.record(event)
        harness.kernel.publish(event)
    }
    func registerRoute(_ route: HTTPRoute) { registered.withLockedValue { $0.append(route) } }
    var routes: [HTTPRoute] { registered.withLockedValue { $0 } }
    func statsSnapshot() async -> JSONValue { ["uptime_seconds": 1] }
    func reportHealth(_ health: SourceHealth) { supervisor.update(name: sourceName, health: health) }
}

/// The test kernel's encoder: the event's JSON envelope.
struct ContractEncoder: EventEncoder {
    var name: String { "contract" }
    var subprotocol: String { "contract" }
    var frameKind: FrameKind { .text }
    func encode(_ event: Event, into buffer: inout ByteBuffer) {
        JSONWriter.write(["type": .string(event.type), "topic": .string(event.topic), "data": event.data], into: &buffer)
    }
    func encode(_ reply: ServerReply, timestamp: Int64, into buffer: inout ByteBuffer) {
        JSONWriter.write(reply.envelope(timestamp: timestamp), into: &buffer)
    }
    func decode(_ payload: ByteBuffer) -> Result<ClientMessage, ClientMessageError> {
        .failure(ClientMessageError(code: "unsupported", message: "the contract encoder decodes nothing"))
    }
}

// MARK: filters

/// Any filter: admits a request it should admit, denies one it should deny with an HTTP
/// error status, and answers every hostile request in the kit's table (and its `recheck`,
/// `attach`, `refresh` and subscription checks) without trapping or hanging; a guard it
/// attaches is released.
public struct FilterContract: Sendable {
    public var filter: any Filter
    /// A request the filter admits.
    public var admitted: UpgradeRequest
    /// A request the filter refuses, and the status it should refuse with (nil: any 4xx).
    public var denied: UpgradeRequest?
    public var deniedStatus: Int?

    public init(filter: any Filter, admitted: UpgradeRequest, denied: UpgradeRequest? = nil, deniedStatus: Int? = nil) {
        self.filter = filter
        self.admitted = admitted
        self.denied = denied
        self.deniedStatus = deniedStatus
    }

    public func verify() async throws {
        guard case .admit(let principal) = await filter.admit(admitted, principal: nil) else {
            throw ContractViolation("the filter refused the request it should admit")
        }
        switch filter.attach(admitted, principal: principal) {
        case .guarded(let guardian): guardian.connectionClosed()
        case .none: break
        case .deny(let status, let reason, _):
            throw ContractViolation("the filter admitted, then refused at attach with \(status) \(reason)")
        }
        if let denied {
            guard case .deny(let status, let reason, _) = await filter.admit(denied, principal: nil) else {
                throw ContractViolation("the filter admitted the request it should deny")
            }
            guard (400..<600).contains(status), !reason.isEmpty else {
                throw ContractViolation("a denial must carry an HTTP error status and a reason, got \(status) '\(reason)'")
            }
            if let deniedStatus, status != deniedStatus {
                throw ContractViolation("expected status \(deniedStatus), got \(status) (\(reason))")
            }
        }
        for (index, request) in Self.hostileRequests(like: admitted).enumerated() {
            for recheck in [false, true] {
                let decision = recheck ? await filter.recheck(request, principal: nil) : await filter.admit(request, principal: nil)
                switch decision {
                case .deny(let status, _, _):
                    guard (400..<600).contains(status) else { throw ContractViolation("hostile request \(index): status \(status)") }
                case .admit(let principal):
                    if case .guarded(let guardian) = filter.attach(request, principal: principal) { guardian.connectionClosed() }
                }
            }
            _ = filter.allowSubscription(to: request.path, principal: nil)
        }
        for credential in ["", "x", String(repeating: "a", count: 70_000), "a.b.c", "..", "\u{0}\u{FFFD}", "Bearer ", "eyJ.eyJ.", "%ff%00"] {
            _ = await filter.refresh(credential: credential, current: nil)
        }
    }

    /// Requests a client can send: empty, huge, repeated, binary-looking and oddly encoded
    /// headers and queries, with and without a peer address.
    public static func hostileRequests(like base: UpgradeRequest) -> [UpgradeRequest] {
        let long = String(repeating: "A", count: 64 * 1024)
        let odd = ["", " ", "\u{0}", "\u{FFFD}\u{FFFD}", "%00%ff", "Bearer", "Bearer ", "Bearer \(long)", "null", "[]", "{}", "*", "../..", "😀", "\r\n"]
        let names = ["Authorization", "X-API-Key", "Origin", "Sec-WebSocket-Protocol", "Cookie", "X-Forwarded-For", "Host"]
        var requests: [UpgradeRequest] = [
            UpgradeRequest(path: base.path, query: [], headers: [], remoteAddress: nil),
            UpgradeRequest(path: "", query: [], headers: [], remoteAddress: ""),
            UpgradeRequest(path: base.path, query: [], headers: base.headers, remoteAddress: "not an address"),
            UpgradeRequest(path: base.path, query: [], headers: base.headers, remoteAddress: "::ffff:999.1.1.1"),
            UpgradeRequest(path: base.path, query: [], headers: Array(repeating: (name: "Authorization", value: "Bearer x"), count: 200), remoteAddress: "127.0.0.1"),
        ]
        for value in odd {
            requests.append(UpgradeRequest(path: base.path, query: [], headers: names.map { (name: $0, value: value) }, remoteAddress: "127.0.0.1"))
            requests.append(UpgradeRequest(path: base.path, query: ["token", "api_key", "key", "access_token", "topic"].map { (name: $0, value: value) }, headers: [], remoteAddress: "127.0.0.1"))
        }
        // Each from an address of its own, so a per-address limit does not answer them all
        // alike, and the filter's own parsing of each is exercised.
        return requests.enumerated().map { index, request in
            var request = request
            if request.remoteAddress == "127.0.0.1" { request.remoteAddress = "10.77.\(index / 250).\(index % 250 + 1)" }
            return request
        }
    }
}

// MARK: encoders

/// Any encoder: every event shape and every reply reads back (through `parse`, the
/// format's reader) as the documented envelope, every client message written in the format
/// (`write`) decodes to what it says, and the client message decoder never traps on random
/// or mutated bytes (seeded; the seed is printed and `SWITCHBOARD_TEST_SEED` replays it).
public struct EncoderContract: Sendable {
    public var encoder: any EventEncoder
    /// Reads one encoded payload back as a JSON value (JSON parser, MessagePack reader).
    public var parse: @Sendable (ByteBuffer) throws -> JSONValue
    /// Writes a JSON value in the encoder's format, as a client would send it.
    public var write: @Sendable (JSONValue) -> ByteBuffer
    /// Random payloads fed to the decoder.
    public var randomInputs: Int

    public init(
        encoder: any EventEncoder, parse: @escaping @Sendable (ByteBuffer) throws -> JSONValue, write: @escaping @Sendable (JSONValue) -> ByteBuffer,
        randomInputs: Int = 20_000
    ) {
        self.encoder = encoder
        self.parse = parse
        self.write = write
        self.randomInputs = randomInputs
    }

    /// For an encoder whose wire format is JSON: read back with `JSONParser`, client
    /// messages written with `JSONWriter`.
    public static func json(_ encoder: any EventEncoder, randomInputs: Int = 20_000) -> EncoderContract {
        EncoderContract(
            encoder: encoder,
            parse: { buffer in try JSONParser.parse(buffer.readableBytesView) },
            write: { value in
                var buffer = ByteBuffer()
                JSONWriter.write(value, into: &buffer)
                return buffer
            },
            randomInputs: randomInputs
        )
    }

    static let data: [JSONValue] = [
        .null, .bool(true), .int(0), .int(.min), .int(.max), .double(-1.5), .string(""), .string("é \u{0} \"q\" 😀"),
        .array([]), .array([.int(1), .string("a"), .null]), .object(JSONObject()),
        ["n": .int(1), "nested": ["deep": [.bool(false)]], "type": "own"],
    ]

    public func verify() throws {
        let position = StreamPosition(epoch: "e1", offset: 42)
        for data in Self.data {
            for shape in [EventShape.envelope, .flat] {
                for (id, at) in [(nil, nil), ("1-0", position)] as [(String?, StreamPosition?)] {
                    let event = Event(topic: "topic:x", type: "t", data: data, id: id, timestamp: 1_700_000_000, shape: shape, position: at)
                    var buffer = ByteBuffer()
                    encoder.encode(event, into: &buffer)
                    let read = try parse(buffer)
                    try check(read, against: event)
                }
            }
        }
        let replies: [ServerReply] = [
            .pong, .subscribed("a"), .subscribed("a", SubscriptionHistory(position: position, recovered: true, replayed: 3)),
            .unsubscribed("a"), .error(code: "bad_message", message: "x"), .refreshed(expiresAt: 5), .refreshed(expiresAt: nil),
        ]
        for reply in replies {
            var buffer = ByteBuffer()
            encoder.encode(reply, timestamp: 7, into: &buffer)
            let read = try parse(buffer)
            guard read == reply.envelope(timestamp: 7) else {
                throw ContractViolation("reply \(reply) reads back as \(read), expected \(reply.envelope(timestamp: 7))")
            }
        }
        let messages: [(JSONValue, ClientMessage)] = [
            (["type": "subscribe", "data": "topic:x"], .subscribe("topic:x")),
            (["type": "subscribe", "data": "news", "last": 3], .subscribe("news", SubscribeOptions(last: 3))),
            (["type": "subscribe", "data": "news", "since": position.jsonValue], .subscribe("news", SubscribeOptions(since: position))),
            (["type": "unsubscribe", "data": "topic:x"], .unsubscribe("topic:x")),
            (["type": "ping"], .ping),
        ]
        for (json, expected) in messages {
            guard case .success(let decoded) = encoder.decode(write(json)), decoded == expected else {
                throw ContractViolation("client message \(json) did not decode as \(expected): \(encoder.decode(write(json)))")
            }
        }
        var random = SeededRandom.forTest("EncoderContract(\(encoder.name)).neverTrapsOnRandomBytes")
        let valid = messages.map { write($0.0) }
        for round in 0..<randomInputs {
            var bytes: [UInt8]
            if round % 2 == 0, let base = valid.randomElement(using: &random) {
                bytes = Array(base.readableBytesView)
                for _ in 0...Int.random(in: 0...3, using: &random) where !bytes.isEmpty {
                    let index = Int.random(in: 0..<bytes.count, using: &random)
                    switch Int.random(in: 0...2, using: &random) {
                    case 0: bytes[index] = UInt8.random(in: 0...255, using: &random)
                    case 1: bytes.removeSubrange(index...)
                    default: bytes.insert(UInt8.random(in: 0...255, using: &random), at: index)
                    }
                }
            } else {
                bytes = (0..<Int.random(in: 0...64, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
            }
            var buffer = ByteBuffer()
            buffer.writeBytes(bytes)
            if case .failure(let error) = encoder.decode(buffer, maxDepth: 16), error.code.isEmpty {
                throw ContractViolation("a decoding error without a code for bytes \(bytes)")
            }
        }
    }

    private func check(_ read: JSONValue, against event: Event) throws {
        let expected = event.shape == .flat ? event.flatValue : event.envelopeValue()
        guard Self.sameFields(read, expected) else {
            throw ContractViolation("\(event.shape) event reads back as \(read), expected \(expected)")
        }
    }

    /// Equal objects whatever the order of their fields.
    static func sameFields(_ a: JSONValue, _ b: JSONValue) -> Bool {
        switch (a, b) {
        case (.object(let x), .object(let y)):
            guard x.entries.count == y.entries.count else { return false }
            return x.entries.allSatisfy { entry in y[entry.key].map { sameFields(entry.value, $0) } ?? false }
        case (.array(let x), .array(let y)):
            return x.count == y.count && zip(x, y).allSatisfy { sameFields($0, $1) }
        case (.int(let x), .double(let y)), (.double(let y), .int(let x)):
            return Double(x) == y
        default:
            return a == b
        }
    }
}
