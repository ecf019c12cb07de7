// Allocation budgets, checked the way SwiftNIO pins its own: the process counts every heap
// allocation (CMallocCounter replaces malloc & co.), and each scenario runs at two sizes
// so that what one more recipient costs is measured apart from fixed costs. No timing.
//
//   .build/release/AllocationBudget          # prints one JSON line per scenario; exits 1 over budget
//
// 1. fan-out core: 1 event → N subscribers on one loop, the kernel's part (router, prepared
//    frame, per-loop delivery and flush round): zero allocations per recipient.
// 2. connection delivery: the same through real WebSocket connection handlers (outbox,
//    send queue, flush to the channel): zero allocations per recipient.
// 3. a connection's read → subscribe → deliver → unsubscribe cycle: at most the budget.
// 4. gathered delivery: rounds of 16 events through the same handlers; each connection's
//    frames of a round are copied into one outbox: at most 3 allocations per recipient
//    per round (the buffer's object and bytes, one growth), however many frames it gathers.
// 5. the flush round's latency observer, read from its lock and called as every flush round
//    does: zero allocations (a closure kept as the lock's value gained a thunk per read).
import CMallocCounter
import Foundation
import JSONPlugin
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import NIOWebSocket
import SwitchboardCore
import SwitchboardKernel
import SwitchboardServer
import SwitchboardTesting

/// Allocations made by `body`.
func allocations(_ body: () throws -> Void) rethrows -> Int {
    let before = switchboard_allocations()
    try body()
    return Int(switchboard_allocations() - before)
}

/// A subscriber that does what the kernel asks and allocates nothing itself.
final class NullSubscriber: Subscriber, @unchecked Sendable {
    let variant: VariantID
    var lastDeliverySequence: UInt64 = 0
    var isPendingFlush = false
    var frames = 0
    init(variant: VariantID) { self.variant = variant }
    func enqueue(_ frame: ByteBuffer, of event: PreparedEvent) -> Bool {
        frames += 1
        return true
    }
    func flush() -> Bool { true }
}

/// The socket's place at the head of the pipeline: takes every write and drops it.
final class DiscardingSocket: ChannelOutboundHandler {
    typealias OutboundIn = ByteBuffer
    var bytes = 0
    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        bytes += unwrapOutboundIn(data).readableBytes
        promise?.succeed(())
    }
    func flush(context: ChannelHandlerContext) {}
}

struct Failure: Error, CustomStringConvertible {
    let description: String
}

let payload = JSONValue.string(String(repeating: "x", count: 150))
func event(_ sequence: Int, topic: String = "metrics") -> Event {
    Event(topic: topic, type: "tick", data: ["seq": .int(Int64(sequence)), "payload": payload], timestamp: 1_700_000_000)
}

/// Allocations for `events` events to `subscribers` kernel subscribers, after a warm-up.
func fanOutCore(subscribers count: Int, events: Int) throws -> Int {
    let loop = EmbeddedEventLoop()
    let table = VariantTable(encoders: [JSONEventEncoder()])
    guard let variant = table.variant(forEncoder: "json") else { throw Failure(description: "no json variant") }
    let kernel = Kernel(eventLoopGroup: loop, variants: table)
    guard let shard = kernel.shard(for: loop), let topic = TopicPattern("metrics") else { throw Failure(description: "no shard") }
    let sinks = (0..<count).map { _ in NullSubscriber(variant: variant) }
    for sink in sinks { _ = shard.subscribe(topic, sink) }
    for sequence in 0..<20 { kernel.publish(event(sequence)) }
    loop.run()
    let counted = allocations {
        for sequence in 0..<events {
            kernel.publish(event(sequence))
            loop.run()
        }
    }
    guard sinks.allSatisfy({ $0.frames == 20 + events }) else { throw Failure(description: "fan-out core lost deliveries") }
    return counted
}

/// `count` WebSocket connection handlers on embedded channels of one loop, subscribed to
/// `metrics` by default.
struct Connections {
    let loop = EmbeddedEventLoop()
    let kernel: Kernel
    let channels: [EmbeddedChannel]
    let sockets: [DiscardingSocket]

    init(count: Int) throws {
        let json = JSONEventEncoder()
        let table = VariantTable(encoders: [json])
        guard let variant = table.variant(forEncoder: "json"), let metrics = TopicPattern("metrics") else { throw Failure(description: "setup") }
        kernel = Kernel(eventLoopGroup: loop, variants: table)
        guard let shard = kernel.shard(for: loop) else { throw Failure(description: "no shard") }
        let pipeline = EndpointPipeline(
            path: "/ws", encoders: [.init(encoder: json, variant: variant)], topics: [TopicPattern.everything],
            defaultSubscriptions: [metrics], filters: [],
            heartbeatInterval: .seconds(0), heartbeatTimeout: .seconds(10),
            maxMessageSize: 65536, maxSubscriptions: 128, maxMessageRate: nil,
            sendQueue: SendQueueLimits(maxMessages: 1024, maxBytes: 4 << 20, policy: .dropOldest), mode: .pubsub, closeTimeout: .seconds(2)
        )
        let runtime = EndpointRuntime(pipeline: pipeline)
        var channels: [EmbeddedChannel] = []
        var sockets: [DiscardingSocket] = []
        for _ in 0..<count {
            let channel = EmbeddedChannel(loop: loop)
            let socket = DiscardingSocket()
            try channel.pipeline.syncOperations.addHandler(socket)
            try channel.pipeline.syncOperations.addHandler(
                WebSocketConnectionHandler(
                    runtime: runtime, choice: .init(encoder: json, variant: variant), variant: variant, compression: nil,
                    guards: [], principal: nil, shard: shard, logger: Logger(label: "budget")
                )
            )
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
            channels.append(channel)
            sockets.append(socket)
        }
        self.channels = channels
        self.sockets = sockets
        loop.run()
    }

    /// A client's masked text frame as it arrives from the socket.
    static func wire(_ text: String) -> ByteBuffer {
        var data = ByteBuffer(string: text)
        let key: WebSocketMaskingKey = [1, 2, 3, 4]
        data.webSocketMask(key)
        return clientFrameBytes(opcode: 0x1, maskKey: Array(key), payload: data)
    }

    /// Delivers `bytes` (built beforehand, so that building them is not counted).
    func send(_ bytes: ByteBuffer, on channel: EmbeddedChannel) throws {
        try channel.writeInbound(bytes)
        loop.run()
    }
}

/// Allocations for `events` events delivered through `count` connections, after a warm-up.
func connectionDelivery(connections count: Int, events: Int) throws -> Int {
    let connections = try Connections(count: count)
    for sequence in 0..<20 {
        connections.kernel.publish(event(sequence))
        connections.loop.run()
    }
    let before = connections.sockets.map(\.bytes)
    let counted = allocations {
        for sequence in 0..<events {
            connections.kernel.publish(event(sequence))
            connections.loop.run()
        }
    }
    guard zip(connections.sockets, before).allSatisfy({ $0.bytes > $1 }) else { throw Failure(description: "a connection got nothing") }
    return counted
}

/// Allocations for `rounds` flush rounds of `perRound` events each through `count`
/// connections: the frames of a round are gathered into one buffer per connection.
func gatheredDelivery(connections count: Int, rounds: Int, perRound: Int) throws -> Int {
    let connections = try Connections(count: count)
    func round(_ first: Int) {
        // One loop run: every delivery of the round, then the one flush round after them.
        for sequence in first..<first + perRound { connections.kernel.publish(event(sequence)) }
        connections.loop.run()
    }
    for index in 0..<5 { round(index * perRound) }
    let before = connections.sockets.map(\.bytes)
    let counted = allocations {
        for index in 0..<rounds { round(index * perRound) }
    }
    guard zip(connections.sockets, before).allSatisfy({ $0.bytes > $1 }) else { throw Failure(description: "a connection got nothing") }
    return counted
}

/// Allocations per read → subscribe → deliver → unsubscribe cycle of one connection.
func subscribeCycle(cycles: Int) throws -> Double {
    let connections = try Connections(count: 1)
    guard let channel = connections.channels.first else { throw Failure(description: "no channel") }
    let subscribe = Connections.wire(#"{"type":"subscribe","data":"orders"}"#)
    let unsubscribe = Connections.wire(#"{"type":"unsubscribe","data":"orders"}"#)
    func cycle(_ index: Int) throws {
        try connections.send(subscribe, on: channel)
        connections.kernel.publish(event(index, topic: "orders"))
        connections.loop.run()
        try connections.send(unsubscribe, on: channel)
    }
    for index in 0..<10 { try cycle(index) }
    let counted = try allocations {
        for index in 0..<cycles { try cycle(index) }
    }
    return Double(counted) / Double(cycles)
}

/// What one more recipient costs, from runs at two sizes.
func perRecipient(small: Int, large: Int, events: Int, _ run: (Int, Int) throws -> Int) throws -> (perRecipient: Double, perEvent: Double) {
    let a = try run(small, events)
    let b = try run(large, events)
    return (Double(b - a) / Double((large - small) * events), Double(a) / Double(events))
}

// Budgets. Per recipient: zero (fractions of an allocation per recipient would be a
// regression that grows with the audience). Per event and per cycle: today's count with a
// little headroom; lower them when a change makes them cheaper.
let perEventBudget = 24.0
let cycleBudget = 80.0

var failures: [String] = []
let core = try perRecipient(small: 1_000, large: 2_000, events: 50, fanOutCore)
print(#"{"scenario":"fan-out core","allocations_per_recipient":\#(core.perRecipient),"allocations_per_event":\#(core.perEvent)}"#)
if core.perRecipient > 0.001 { failures.append("fan-out core: \(core.perRecipient) allocations per recipient (budget 0)") }
if core.perEvent > perEventBudget { failures.append("fan-out core: \(core.perEvent) allocations per event (budget \(perEventBudget))") }

let delivery = try perRecipient(small: 100, large: 200, events: 50, connectionDelivery)
print(#"{"scenario":"connection delivery","allocations_per_recipient":\#(delivery.perRecipient),"allocations_per_event":\#(delivery.perEvent)}"#)
if delivery.perRecipient > 0.001 { failures.append("connection delivery: \(delivery.perRecipient) allocations per recipient (budget 0)") }

// A round of 16 frames costs each connection its own outbox (the first frame's shared
// buffer cannot take the others: its object and its bytes) and at most one growth of it;
// never a copy per frame (a copy per append made it 30).
let gatheredRound = 16
let gathered = try perRecipient(small: 100, large: 200, events: 20) { try gatheredDelivery(connections: $0, rounds: $1, perRound: gatheredRound) }
print(#"{"scenario":"gathered delivery (16 frames per round)","allocations_per_recipient_per_round":\#(gathered.perRecipient),"allocations_per_round":\#(gathered.perEvent)}"#)
if gathered.perRecipient > 3.001 { failures.append("gathered delivery: \(gathered.perRecipient) allocations per recipient per round of \(gatheredRound) frames (budget 3)") }

let cycle = try subscribeCycle(cycles: 200)
print(#"{"scenario":"subscribe cycle","allocations_per_cycle":\#(cycle),"budget":\#(cycleBudget)}"#)
if cycle > cycleBudget { failures.append("subscribe cycle: \(cycle) allocations per cycle (budget \(cycleBudget))") }

// Read and called as LoopShard.flushPending does, once per round.
let counters = KernelCounters()
var observed: Int64 = 0
counters.publishToWrite.withLockedValue { $0 = LatencyObserver { _ in } }
let observerAllocations = allocations {
    for round in 0..<10_000 {
        if let observer = counters.publishToWrite.withLockedValue({ $0 }) { observer.observe(Int64(round)) }
        observed &+= 1
    }
}
print(#"{"scenario":"flush-round latency observer","allocations_per_round":\#(Double(observerAllocations) / 10_000),"rounds":\#(observed)}"#)
if observerAllocations > 0 { failures.append("flush-round latency observer: \(observerAllocations) allocations in 10,000 rounds (budget 0)") }

if !failures.isEmpty {
    FileHandle.standardError.write(Data(("allocation budget exceeded:\n" + failures.joined(separator: "\n") + "\n").utf8))
    exit(1)
}
